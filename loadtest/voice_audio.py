"""Audio of the ``voice`` scenario: tone bursts that time mouth-to-ear through Opus.

Why tone bursts: the media path (aiortc encoder -> SFU -> aiortc decoder) re-packs
nothing we could tag, and Opus keeps no bytes we put in the samples; what survives a
lossy speech codec is *sound*. So each speaker's microphone plays low-level noise (so
that it is always "talking" for the server's speaker detection and never silent for
DTX) and, on a schedule, a loud 100 ms sine burst. Listeners watch the energy of every
decoded 20 ms frame; the frame where it first crosses a threshold is the burst's onset.

Timing: every process of the run shares CLOCK_MONOTONIC (one clock for the whole
machine, as in :mod:`loadtest.wire`). A speaker's frame ``k`` is due at
``epoch + k * 20 ms``; the speaker notes the instant its track actually hands the first
frame of each burst to the encoder (the "mouth"), the listener the instant its track
yields the first decoded frame over the threshold (the "ear"). Mouth-to-ear is their
difference, so it includes encoding, SRTP, the network, the SFU, aiortc's jitter buffer
(it holds 4 packets before it starts) and decoding. Resolution: one frame (20 ms) on
the listener side, since the listener can play nothing before the frame arrives.

Which burst: a listener does not know which speaker a receive slot carries (the SFU
maps speakers onto slots and may move them), so the burst itself says who sent it:
speaker ``i`` plays ``tone_hz(i, j % 2)`` for its burst ``j``; the listener finds the
dominant tone of the onset frame. Bursts of one speaker are ``BURST_PERIOD_S`` apart and
alternate between two tones, so a burst is identified without ambiguity as long as
mouth-to-ear stays under ``2 * BURST_PERIOD_S``; the coordinator matches each detection
to the latest burst of that speaker and parity sent before it.

This module is sans-I/O except :class:`ToneTrack` (an aiortc track that sleeps until
each frame is due): the detector is a plain function of frames and times.
"""

from __future__ import annotations

import asyncio
import bisect
import fractions
import math
import time
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
FRAMES_PER_S = SAMPLE_RATE // FRAME_SAMPLES
BURST_PERIOD_S = 1.0
"""A speaker's bursts are this far apart (the rate of latency samples per pair)."""
BURST_PERIOD_FRAMES = round(BURST_PERIOD_S / FRAME_S)
BURST_FRAMES = 5
"""100 ms of tone per burst."""
MAX_SPEAKERS = 16
"""Each speaker needs two distinct tones; 32 tones 200 Hz apart fit 400-6,600 Hz, well
inside what Opus keeps at aiortc's 96 kbit/s."""
TONE_BASE_HZ = 400.0
TONE_STEP_HZ = 200.0
TONE_AMPLITUDE = 12_000.0
"""About -8.7 dBFS peak: loud, never clipped by the encoder."""
NOISE_STD = 200.0
"""Background "speech" at about -44 dBov RMS: louder than the server's speaking
threshold (spec: 50 dBov) so speakers stay active, far below the burst."""
ONSET_RMS = 2_500.0
"""A decoded frame at or above this RMS (s16 units) is inside a burst. Noise is ~200,
a full burst frame ~8,500, a frame with 6 ms of burst (Opus delay) still ~4,000."""
RELEASE_RMS = 1_000.0
"""Below this the detector re-arms (hysteresis: one onset per burst)."""
MAX_DETECTIONS = 50_000
"""Per generator process: detections kept for matching (a bound on memory and on the
final report; 16 speakers x 1 per s x 3,600 s fits for ~1 listener, far more than a
run of N listeners x S speakers x duration needs up to this figure)."""
MAX_BACKLOG_S = 0.2
"""A speaker track this far behind its grid drops the missed frames (see recv)."""
MAX_BURSTS = 4_000
"""Per speaker track: bursts noted (one per second: an hour-long run fits)."""
NOISE_TABLE_FRAMES = 50
"""Precomputed noise frames, cycled: generating noise per frame would cost more CPU
than the rest of the track."""


def tone_hz(speaker: int, parity: int) -> float:
    """The tone of speaker ``speaker``'s bursts of parity ``parity`` (0 even, 1 odd)."""
    return TONE_BASE_HZ + TONE_STEP_HZ * (2 * speaker + parity)


def burst_offset_frames(speaker: int, speakers: int) -> int:
    """Speakers' bursts are spread over the period so that they do not all overlap (an
    SFU under test should see a realistic mix of loud and quiet speakers)."""
    return (speaker * BURST_PERIOD_FRAMES) // max(1, speakers)


@dataclass
class Detection:
    """One burst onset heard on one receive slot."""

    slot: int
    tone: int
    """Tone index ``2 * speaker + parity``."""
    t: float
    """Monotonic time at which the decoded frame was delivered."""


def mono_samples(frame: av.AudioFrame) -> np.ndarray:
    """The first channel of a decoded s16 frame as float64 (aiortc decodes Opus to
    packed stereo s16)."""
    raw: np.ndarray = frame.to_ndarray()
    channels = len(frame.layout.channels)
    mono: np.ndarray = raw[0] if frame.format.is_planar else raw.reshape(-1)[::channels]
    return mono.astype(np.float64)


class BurstDetector:
    """Onsets of bursts in one receive slot's decoded audio (energy with hysteresis),
    and which tone each burst is (largest windowed FFT magnitude among the tones)."""

    __slots__ = ("_armed", "_bins", "_window", "slot", "tones")

    def __init__(self, slot: int, tones: int) -> None:
        self.slot = slot
        self.tones = tones
        self._armed = True
        self._window: np.ndarray | None = None
        self._bins: np.ndarray | None = None

    def _classify(self, x: np.ndarray) -> int:
        n = len(x)
        if self._window is None or len(self._window) != n:
            self._window = np.hanning(n)
            hz = np.array([TONE_BASE_HZ + TONE_STEP_HZ * m for m in range(self.tones)])
            self._bins = np.rint(hz * n / SAMPLE_RATE).astype(np.int64)
        spectrum = np.abs(np.fft.rfft(x * self._window))
        assert self._bins is not None
        # A tone's energy leaks into the neighbouring bins: take each tone's 3-bin peak.
        around = np.maximum(np.maximum(spectrum[self._bins - 1], spectrum[self._bins]),
                            spectrum[np.minimum(self._bins + 1, len(spectrum) - 1)])
        return int(np.argmax(around))

    def feed(self, samples: np.ndarray, t: float) -> Detection | None:
        """One decoded frame (mono samples) delivered at ``t``: a detection if a burst
        starts in it."""
        if not len(samples):
            return None
        rms = math.sqrt(float(np.mean(samples * samples)))
        if self._armed and rms >= ONSET_RMS:
            self._armed = False
            return Detection(self.slot, self._classify(samples), t)
        if not self._armed and rms < RELEASE_RMS:
            self._armed = True
        return None


@dataclass
class SentBurst:
    """A burst as the speaker's track handed it to the encoder."""

    index: int
    """Burst number ``j`` since the epoch (parity ``j % 2``)."""
    t: float
    """Monotonic time at which its first frame left ``recv()``."""


@dataclass
class TrackStats:
    """What a speaker track counts (for the generator's "is it keeping up" figures)."""

    frames: int = 0
    """Frames due in the measured window (bursts scheduled)."""
    late_frames: int = 0
    """Frames handed over more than one frame after they were due."""
    max_lag_s: float = 0.0
    dropped_frames: int = 0
    """Frames skipped because the track was more than ``MAX_BACKLOG_S`` behind (the
    generator process could not keep up: its figures are not the server's)."""
    bursts: list[SentBurst] = field(default_factory=list)


class GridTrack(MediaStreamTrack):
    """A microphone paced on the run's shared frame grid (``epoch + k * 20 ms``) that
    plays noise and, between ``burst_start`` and ``burst_stop``, this speaker's tone
    bursts. Subclasses say what frame ``k`` is (:meth:`frame`): raw PCM for aiortc's
    encoder (:class:`ToneTrack`) or a pre-encoded Opus packet
    (:class:`loadtest.voice_lean.OpusLoopTrack`). The pacing, the lateness figures and
    the burst instants are the same for both, so their mouth-to-ear figures compare."""

    kind = "audio"

    def __init__(self, speaker: int, speakers: int, epoch: float) -> None:
        super().__init__()
        if not 0 <= speaker < MAX_SPEAKERS:
            raise ValueError(f"speaker index must be 0-{MAX_SPEAKERS - 1}")
        self.speaker = speaker
        self.epoch = epoch
        self.offset = burst_offset_frames(speaker, speakers)
        self.burst_start = math.inf
        self.burst_stop = -math.inf
        self.stats = TrackStats()
        self._next: int | None = None

    def schedule(self, start: float, stop: float) -> None:
        """Play bursts whose first frame is due in ``[start, stop)`` (monotonic)."""
        self.burst_start, self.burst_stop = start, stop

    async def recv(self) -> Any:
        """The next frame, when it is due on the shared grid (at once if late: a
        microphone's frames queue up while its reader is busy, up to ``MAX_BACKLOG_S``;
        beyond that they are dropped, as a sound card's buffer overruns)."""
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._next is None:  # start on the grid, at the next frame boundary
            self._next = max(0, math.ceil((now - self.epoch) / FRAME_S))
        k = self._next
        if now - (self.epoch + k * FRAME_S) > MAX_BACKLOG_S:
            # An overrun, as a sound card has when its reader stalls: the frames that
            # fell out of the buffer are gone (counted), the microphone goes on at "now".
            skip = math.floor((now - self.epoch) / FRAME_S) - k
            if self.burst_start <= self.epoch + k * FRAME_S < self.burst_stop:
                self.stats.dropped_frames += skip
            k += skip
        self._next = k + 1
        due = self.epoch + k * FRAME_S
        while due > now:  # never early: uvloop's timers round to the millisecond
            await asyncio.sleep(due - now)
            now = time.monotonic()
        return self.frame(k, now)

    def frame(self, k: int, now: float) -> Any:
        """Frame ``k`` of the grid handed over at ``now``."""
        raise NotImplementedError

    def burst_phase(self, k: int, now: float) -> tuple[int, int] | None:
        """Bookkeeping of frame ``k`` handed over at ``now`` (sans-I/O: the pacing is in
        :meth:`recv`): lateness while measured, and the burst it starts, if any. Returns
        (burst index ``j``, frame of the burst) when frame ``k`` is inside a scheduled
        burst, else None (noise)."""
        due = self.epoch + k * FRAME_S
        stats = self.stats
        if self.burst_start <= due < self.burst_stop:  # lateness counts while measured
            lag = now - due
            stats.frames += 1
            if lag > FRAME_S:
                stats.late_frames += 1
            stats.max_lag_s = max(stats.max_lag_s, lag)
        phase = (k - self.offset) % BURST_PERIOD_FRAMES
        j = (k - self.offset) // BURST_PERIOD_FRAMES
        burst_due = self.epoch + (k - phase) * FRAME_S
        if phase < BURST_FRAMES and self.burst_start <= burst_due < self.burst_stop:
            if phase == 0 and len(stats.bursts) < MAX_BURSTS:
                stats.bursts.append(SentBurst(index=j, t=now))
            return j, phase
        return None


class ToneTrack(GridTrack):
    """A :class:`GridTrack` yielding raw s16 frames (aiortc's sender encodes each one):
    what a real microphone does, at the cost of one Opus encode per frame."""

    def __init__(self, speaker: int, speakers: int, epoch: float, seed: int,
                 noise_frames: int = NOISE_TABLE_FRAMES) -> None:
        super().__init__(speaker, speakers, epoch)
        rng = np.random.default_rng(seed)
        self._noise = np.clip(rng.normal(0.0, NOISE_STD, (noise_frames, FRAME_SAMPLES)),
                              -32768, 32767).astype(np.int16)
        t = np.arange(FRAME_SAMPLES * BURST_FRAMES) / SAMPLE_RATE
        noise = self._noise[:BURST_FRAMES].reshape(-1).astype(np.float64)
        self._tones = [np.clip(TONE_AMPLITUDE * np.sin(2 * np.pi * tone_hz(speaker, p) * t)
                               + noise, -32768, 32767).astype(np.int16) for p in (0, 1)]
        self._time_base = fractions.Fraction(1, SAMPLE_RATE)

    def samples(self, k: int, burst: tuple[int, int] | None) -> np.ndarray:
        """The PCM of frame ``k`` (``burst`` as :meth:`GridTrack.burst_phase` says)."""
        if burst is not None:
            j, phase = burst
            tone: np.ndarray = self._tones[j % 2]
            return tone[phase * FRAME_SAMPLES:(phase + 1) * FRAME_SAMPLES]
        noise: np.ndarray = self._noise[k % len(self._noise)]
        return noise

    def frame(self, k: int, now: float) -> av.AudioFrame:
        """Frame ``k`` of the grid handed over at ``now``; notes the burst it starts."""
        samples = self.samples(k, self.burst_phase(k, now))
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = k * FRAME_SAMPLES
        frame.time_base = self._time_base
        return frame


@dataclass
class Matched:
    """The coordinator's matching of detections against sent bursts (see module doc)."""

    latencies_s: list[float] = field(default_factory=list)
    heard: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    unmatched: int = 0
    """Detections with no burst of that speaker and parity before them (noise, or a
    latency beyond ``2 * BURST_PERIOD_S``)."""


def match_detections(sent: dict[int, list[SentBurst]],
                     heard: list[tuple[int, float]],
                     max_latency_s: float = 2 * BURST_PERIOD_S) -> Matched:
    """Match one listener's detections on one speaker: ``sent`` maps parity -> that
    speaker's bursts of that parity in send order; ``heard`` is (parity, t) in arrival
    order. A detection is the latest burst of its parity sent before it (unambiguous
    while mouth-to-ear < ``max_latency_s``)."""
    out = Matched()
    seen: set[int] = set()
    last_index = -1
    for parity, t in heard:
        bursts = sent.get(parity, [])
        at = bisect.bisect_right(bursts, t, key=lambda b: b.t)
        best = bursts[at - 1] if at else None
        if best is None or t - best.t > max_latency_s:
            out.unmatched += 1
            continue
        if best.index in seen:
            out.duplicated += 1
            continue
        seen.add(best.index)
        if best.index < last_index:
            out.out_of_order += 1
        last_index = max(last_index, best.index)
        out.heard += 1
        out.latencies_s.append(t - best.t)
    return out
