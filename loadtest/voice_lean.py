"""Lean mode of the ``voice`` scenario: speakers send pre-encoded Opus, listeners
recognise packets by their bytes instead of decoding them.

Why: on a 2-core machine an aiortc listener costs its generator ~0.9 ms of CPU per
received 20 ms frame (jitter buffer, decoder thread, Opus decoding) and an aiortc
speaker one Opus encode per frame, so the generator -- not the server -- saturates
long before the issue's targets (90 received tracks in an all-talk room of 10; a stage
of 3 speakers and 40 listeners). The SFU forwards Opus payloads byte for byte in
forward mode, which makes a cheaper measurement possible:

* Speakers (:class:`OpusLoopTrack`) hand aiortc's sender already-encoded packets
  (``av.Packet``; aiortc packs them without encoding), taken from a loop of
  ``LOOP_FRAMES`` payloads encoded once per process from the very PCM a
  :class:`~loadtest.voice_audio.ToneTrack` plays (noise plus the tone bursts), so
  decoding listeners still hear bursts and time mouth-to-ear.
* Lean listeners tap each receive slot's RTP (:mod:`loadtest.voice_tap`) and look the
  payload up in a :class:`PayloadTable`: payload -> (speaker, loop index). Every process
  builds the same tables (libopus is deterministic, the noise seed is the speaker
  index), so nothing is exchanged. The loop index plus the arrival instant give the
  frame ``k`` on the run's shared grid (:func:`frame_of`), and ``k`` its due instant
  ``epoch + k * 20 ms``: TRANSIT = arrival at the listener's tap - due instant.

What transit is, and is not: it covers the speaker's hand-over lag (reported apart as
``generator.speaker_max_lag_ms``), aiortc's packetizing and SRTP, loopback UDP, the
server's SFU forwarding, and the listener's SRTP and RTP parsing. It does NOT include
a jitter buffer, decoding or playout, so it is not mouth-to-ear and is reported apart
(``voice.transit_ms``); mouth-to-ear stays measured by a few decoding listeners.
In mixed mode the server re-encodes the mix: those payloads are in no table and are
counted as ``unidentified`` (frames per second still count them).

The module is sans-I/O except :class:`OpusLoopTrack` (paced by its base class).
"""

from __future__ import annotations

import fractions
import math
from dataclasses import dataclass
from typing import Any

import av
from aiortc.codecs.opus import OpusEncoder

from loadtest.voice_audio import (
    BURST_PERIOD_FRAMES,
    FRAME_S,
    FRAME_SAMPLES,
    MAX_SPEAKERS,
    SAMPLE_RATE,
    GridTrack,
    ToneTrack,
)

LOOP_FRAMES = 2 * BURST_PERIOD_FRAMES
"""Payloads per speaker and loop: 2 s, the period of the content (bursts alternate
between two tones every 50 frames; the noise is a table of this many distinct frames,
so no two frames of a loop are alike and no payload repeats within it). A payload
names its frame modulo this, which is unambiguous while transit stays under
``LOOP_FRAMES * 20 ms`` (2 s)."""
WARMUP_FRAMES = 10
"""Frames encoded before each loop so the encoder state at the loop's first frame is
what it is in steady play (a seamless loop)."""
SEED_BASE = 0x5EED
"""Noise seed of speaker ``i`` is ``SEED_BASE + i``: the same in every process."""


def speaker_seed(speaker: int) -> int:
    return SEED_BASE + speaker


def encode_loop(speaker: int, speakers: int, bursts: bool) -> list[bytes]:
    """The ``LOOP_FRAMES`` Opus payloads of one speaker: entry ``i`` is frame ``k`` for
    every ``k % LOOP_FRAMES == i`` (with this speaker's bursts or noise only), encoded
    by aiortc's own encoder with its settings (48 kHz stereo, 96 kbit/s, voip)."""
    pcm = ToneTrack(speaker, speakers, 0.0, seed=speaker_seed(speaker),
                    noise_frames=LOOP_FRAMES)
    if bursts:
        pcm.schedule(-math.inf, math.inf)
    encoder = OpusEncoder()
    out: list[bytes] = []
    for k in range(LOOP_FRAMES - WARMUP_FRAMES, 2 * LOOP_FRAMES):
        payloads, _ = encoder.encode(pcm.frame(k, 0.0))
        if k >= LOOP_FRAMES:
            if len(payloads) != 1:
                raise RuntimeError(f"the Opus encoder gave {len(payloads)} packets for "
                                   "one 20 ms frame")
            out.append(payloads[0])
    return out


@dataclass(frozen=True)
class SpeakerLoops:
    """One speaker's two loops: with bursts (played while bursts are scheduled) and
    noise only (before and after)."""

    bursts: list[bytes]
    noise: list[bytes]


def build_loops(speakers: int) -> list[SpeakerLoops]:
    """Every speaker's loops (about 50 ms of encoding per speaker, once per process)."""
    if not 1 <= speakers <= MAX_SPEAKERS:
        raise ValueError(f"speakers must be 1-{MAX_SPEAKERS}")
    return [SpeakerLoops(encode_loop(s, speakers, True), encode_loop(s, speakers, False))
            for s in range(speakers)]


class PayloadTable:
    """Payload bytes -> (speaker, loop index). A payload that two entries share (two
    silent frames could encode alike) is ambiguous and identifies nothing; how many
    were dropped is ``ambiguous``."""

    __slots__ = ("_by_payload", "ambiguous")

    def __init__(self, loops: list[SpeakerLoops]) -> None:
        seen: dict[bytes, int | None] = {}
        for speaker, loop in enumerate(loops):
            for table in (loop.bursts, loop.noise):
                for index, payload in enumerate(table):
                    code = speaker * LOOP_FRAMES + index
                    if seen.get(payload, code) != code:
                        seen[payload] = None
                    else:
                        seen[payload] = code
        self.ambiguous = sum(1 for code in seen.values() if code is None)
        self._by_payload = {p: code for p, code in seen.items() if code is not None}

    def __len__(self) -> int:
        return len(self._by_payload)

    def identify(self, payload: bytes) -> tuple[int, int] | None:
        """(speaker, loop index) of a payload sent by an :class:`OpusLoopTrack`, or
        None (a re-encoded mix, or anything else)."""
        code = self._by_payload.get(payload)
        return None if code is None else divmod(code, LOOP_FRAMES)


EARLY_SLACK_S = 0.005
"""A frame is taken as due up to this long after its arrival. Speakers never hand a
frame over before it is due (:meth:`GridTrack.recv`), so this only absorbs float
rounding; without it a packet at exactly its due instant could be read as one loop
(2 s) old."""


def frame_of(index: int, arrival: float, epoch: float) -> int:
    """The grid frame ``k`` (``k % LOOP_FRAMES == index``) most recently due at or
    before ``arrival`` (+ ``EARLY_SLACK_S``): a packet is never received before it is
    due, and transit is assumed under one loop (2 s), so this is the frame that was
    sent."""
    latest = math.floor((arrival + EARLY_SLACK_S - epoch) / FRAME_S)
    return latest - ((latest - index) % LOOP_FRAMES)


def transit_s(index: int, arrival: float, epoch: float) -> float:
    """Due instant of the identified frame -> its arrival (see the module doc)."""
    return arrival - (epoch + frame_of(index, arrival, epoch) * FRAME_S)


class OpusLoopTrack(GridTrack):
    """A speaker microphone that yields pre-encoded Opus packets from its loops, paced
    and book-kept exactly as a :class:`ToneTrack` (same grid, same burst instants), at
    the cost of a dict lookup per frame instead of an Opus encode."""

    def __init__(self, speaker: int, speakers: int, epoch: float, loops: SpeakerLoops) -> None:
        super().__init__(speaker, speakers, epoch)
        self.loops = loops
        self._time_base = fractions.Fraction(1, SAMPLE_RATE)

    def frame(self, k: int, now: float) -> av.Packet[Any]:
        """Packet ``k`` of the grid handed over at ``now``; notes the burst it starts."""
        table = self.loops.bursts if self.burst_phase(k, now) is not None else \
            self.loops.noise
        packet = av.Packet(table[k % LOOP_FRAMES])
        packet.pts = k * FRAME_SAMPLES
        packet.time_base = self._time_base
        return packet
