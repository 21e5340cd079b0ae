"""Server-side audio mix for large voice rooms and recordings.

Why this exists: the SFU forwards every speaker to every listener without decoding, which
costs one outbound track per (speaker, listener) pair. Once a room has many listeners
(more than ``mix_listeners_above``) that product becomes the worker's bottleneck, so
listeners get ONE track carrying a server mix instead: the speakers' Opus packets are
decoded here, summed, clipped and encoded to Opus once per 20 ms tick; the same encoded
packet is handed to every listener's pass-through track (``add_output``). The PCM of each
tick is also offered to ``add_pcm_output`` consumers, which is how recordings are made
(:mod:`rooms.media.recorder`).

Contract with the rest of the media worker (kept free of aiortc internals on purpose):

* ``feed(participant_id, payload, rtp_timestamp)`` takes raw Opus RTP payloads as the
  receiver tap delivers them (any order, duplicates possible).
* Each speaker has a small bounded reorder buffer keyed by RTP timestamp and its own Opus
  decoder (mono, 48 kHz, s16). Playout of a speaker starts ``playout_delay_frames`` ticks
  after its first packet (reorder window); from then on one frame's worth of RTP time is
  consumed per tick. A missing packet contributes silence (no packet-loss concealment);
  a packet arriving after its turn is dropped and counted.
* The clocked loop runs every 20 ms against ``loop.time()`` deadlines (no drift from
  sleep overshoot). If the loop falls more than :data:`MAX_LAG_S` behind it skips the
  missed ticks instead of bursting, keeping the output timeline aligned with wall time.
* Output is mono Opus at 48 kHz. RTP always signals ``opus/48000/2`` (RFC 7587) but the
  stream itself may be mono; Chromium and aiortc's decoder (configured stereo) play a
  mono stream on both channels. Mono halves the encode work and the mix is mono anyway
  (speakers' microphones are mono). pts are in 48 kHz units: ``tick_index * 960``, so
  they rise monotonically and jump forward over idle/skipped ticks (as DTX would).
* When no speaker has contributed audio for :attr:`AudioMixer.silence_hangover_ticks`
  ticks the encoder is not run and no packets are produced (the room is silent; this
  keeps idle rooms nearly free). PCM consumers still get silence every tick, so a
  recording's length equals the wall-clock time it covered.

Everything is bounded: speakers per mixer, frames per speaker buffer, payload size.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import av.error
import numpy as np
import numpy.typing as npt
from av.audio.codeccontext import AudioCodecContext

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
"""Opus in WebRTC always runs at 48 kHz; everything here (PCM, pts) uses that clock."""
FRAME_SAMPLES = 960
"""Samples per 20 ms tick: the frame size browsers and aiortc send by default."""
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
MAX_OPUS_PAYLOAD = 1500
"""Larger payloads cannot come from one RTP packet on a normal MTU; they are rejected."""
MAX_DECODED_SAMPLES = 5_760
"""120 ms, the longest duration one Opus packet may carry (RFC 6716)."""
MAX_LAG_S = 0.2
"""If the loop is later than this, missed ticks are skipped rather than run in a burst."""
LATE_HORIZON = 10 * SAMPLE_RATE
"""RTP time (10 s) behind the playout point within which a packet counts as late rather
than as a sign that the sender's timeline jumped backwards."""
_TS_MOD = 1 << 32

PayloadOutput = Callable[[bytes, int], None]
"""``push(opus_payload, pts)`` with pts in 48 kHz units, e.g. ``EncodedAudioTrack.push``."""
PcmOutput = Callable[[bytes], None]
"""``cb(pcm)`` with 48 kHz mono signed 16-bit little-endian samples, one tick or more."""

_Pcm = npt.NDArray[np.int16]


def _ts_diff(a: int, b: int) -> int:
    """Signed distance a - b between two 32-bit RTP timestamps (serial arithmetic), so
    ordering survives the wrap at 2**32."""
    d = (a - b) % _TS_MOD
    return d - _TS_MOD if d >= _TS_MOD // 2 else d


def _new_decoder() -> AudioCodecContext:
    """A mono s16 Opus decoder: libopus down-mixes stereo streams itself, so every
    speaker arrives in the one format the mix needs."""
    dec = av.CodecContext.create("libopus", "r")
    dec.sample_rate = SAMPLE_RATE
    dec.layout = "mono"
    dec.format = "s16"
    return dec


def _new_encoder(bitrate: int) -> AudioCodecContext:
    """The single Opus encoder of a mix. ``voip`` favours speech intelligibility."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = SAMPLE_RATE
    enc.layout = "mono"
    enc.format = "s16"
    enc.bit_rate = bitrate
    enc.time_base = TIME_BASE
    enc.options = {"application": "voip"}
    return enc


@dataclass
class MixerStats:
    """Counters for the worker's stats and for tests; every drop has a reason."""

    ticks: int = 0
    ticks_skipped: int = 0
    ticks_encoded: int = 0
    packets_fed: int = 0
    packets_mixed: int = 0
    packets_late: int = 0
    """Arrived after their playout time (or a duplicate of an already played packet)."""
    packets_duplicate: int = 0
    packets_out_of_window: int = 0
    """Further ahead than the reorder buffer's span, or more than ``LATE_HORIZON``
    behind, a playing speaker's playout point: strays, or the first packet of a sender
    whose timeline jumped (counted even when the next packet confirms the jump and this
    one is then mixed)."""
    packets_overflow: int = 0
    """Dropped because a speaker's reorder buffer was full (sender clock running fast)."""
    packets_invalid: int = 0
    packets_rejected_speakers: int = 0
    """From a speaker beyond ``max_speakers``."""
    frames_missing: int = 0
    """Speaker ticks filled with silence because the packet was not there in time."""
    decode_errors: int = 0
    speakers_evicted: int = 0
    """Idle speakers dropped to make room for a new one at ``max_speakers``."""
    resyncs: int = 0
    output_errors: int = 0
    tick_cost_s_total: float = 0.0
    tick_cost_s_max: float = 0.0

    @property
    def tick_cost_s_avg(self) -> float:
        """Mean CPU-ish (wall) time of one mix tick; the budget is far below 20 ms."""
        return self.tick_cost_s_total / self.ticks if self.ticks else 0.0


class _Speaker:
    """Reorder buffer + decoder state of one speaker."""

    __slots__ = ("buffer", "decoder", "idle_ticks", "jump_candidate", "next_ts", "pending",
                 "prime_left")

    def __init__(self) -> None:
        self.decoder = _new_decoder()
        self.buffer: dict[int, bytes] = {}
        self.next_ts: int | None = None  # None: priming (waiting out the reorder window)
        self.prime_left = 0
        self.pending: _Pcm = np.zeros(0, dtype=np.int16)  # decoded, not yet mixed
        self.idle_ticks = 0
        self.jump_candidate: tuple[int, bytes] | None = None

    def reset(self, playout_delay: int) -> None:
        """Back to priming: used after long silence or a timestamp jump."""
        self.buffer.clear()
        self.next_ts = None
        self.prime_left = playout_delay
        self.pending = np.zeros(0, dtype=np.int16)
        self.idle_ticks = 0
        self.jump_candidate = None

    def oldest_ts(self) -> int:
        """Earliest buffered RTP timestamp (buffer must be non-empty)."""
        it = iter(self.buffer)
        best = next(it)
        for ts in it:
            if _ts_diff(ts, best) < 0:
                best = ts
        return best


class AudioMixer:
    """Decode the speakers, mix, encode once per 20 ms; see the module docstring.

    Single-threaded: every method runs on the event loop that called :meth:`start`.
    """

    def __init__(
        self,
        *,
        max_speakers: int = 16,
        playout_delay_frames: int = 2,
        max_buffer_frames: int = 10,
        idle_reset_ticks: int = 50,
        silence_hangover_ticks: int = 10,
        bitrate: int = 48_000,
    ) -> None:
        """Limits (all enforced):

        * ``max_speakers`` — speakers with decoder state at once; packets of more are
          dropped (a stage allows 8 speakers, a voice room rarely has more talking).
        * ``playout_delay_frames`` — ticks a speaker's first packet waits, so packets
          reordered within that window are mixed in order (40 ms by default).
        * ``max_buffer_frames`` — reorder buffer per speaker (200 ms); a packet further
          ahead than that means the sender's timeline jumped and the speaker re-primes.
        * ``idle_reset_ticks`` — after this many ticks (1 s) without packets a speaker
          re-primes on its next packet (new talk spurt, fresh reorder window).
        * ``silence_hangover_ticks`` — silent ticks still encoded after the last audio,
          so the encoder's look-ahead is flushed and the talk spurt ends cleanly.
        """
        if max_speakers < 1 or max_buffer_frames < 1 or playout_delay_frames < 0:
            raise ValueError("mixer limits must be positive")
        if playout_delay_frames >= max_buffer_frames:
            raise ValueError("playout_delay_frames must be below max_buffer_frames")
        self.max_speakers = max_speakers
        self.playout_delay_frames = playout_delay_frames
        self.max_buffer_frames = max_buffer_frames
        self.idle_reset_ticks = idle_reset_ticks
        self.silence_hangover_ticks = silence_hangover_ticks
        self.stats = MixerStats()
        self._bitrate = bitrate
        self._encoder: AudioCodecContext | None = _new_encoder(bitrate)
        self._speakers: dict[int, _Speaker] = {}
        self._outputs: list[PayloadOutput] = []
        self._pcm_outputs: list[PcmOutput] = []
        self._failed_outputs: list[object] = []  # compared with ==: bound methods differ by id
        self._tick_index = 0
        self._enc_pts = 0
        self._last_out_pts: int | None = None
        self._silent_ticks = silence_hangover_ticks  # start idle: nothing to flush
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- wiring ---------------------------------------------------------------------

    def add_output(self, push: PayloadOutput) -> None:
        """Deliver every encoded mix packet to ``push(payload, pts)`` (a listener's
        pass-through track). Must not block: it runs inside the tick."""
        self._outputs.append(push)

    def remove_output(self, push: PayloadOutput) -> None:
        """Stop delivering to ``push``; unknown callbacks are ignored (idempotent leave)."""
        with contextlib.suppress(ValueError):
            self._outputs.remove(push)
        with contextlib.suppress(ValueError):
            self._failed_outputs.remove(push)

    def add_pcm_output(self, cb: PcmOutput) -> None:
        """Deliver the PCM of every tick (silence included) to ``cb``; used by the
        recorder, whose WAV length therefore equals the time the mixer ran."""
        self._pcm_outputs.append(cb)

    def remove_pcm_output(self, cb: PcmOutput) -> None:
        """Stop delivering PCM to ``cb``; unknown callbacks are ignored."""
        with contextlib.suppress(ValueError):
            self._pcm_outputs.remove(cb)
        with contextlib.suppress(ValueError):
            self._failed_outputs.remove(cb)

    @property
    def speakers(self) -> list[int]:
        """Participants that currently have decoder state here."""
        return list(self._speakers)

    def remove_speaker(self, participant_id: int) -> None:
        """Forget a speaker (left, muted, demoted): buffered audio is discarded at once,
        so a muted speaker is never heard after the mute."""
        self._speakers.pop(participant_id, None)

    def _evict_idle_speaker(self) -> bool:
        """Free the slot of a speaker that has been silent past ``idle_reset_ticks``
        (it re-primes anyway), so a participant that stopped talking without an explicit
        :meth:`remove_speaker` cannot hold a slot forever."""
        for pid, sp in self._speakers.items():
            if sp.next_ts is None and not sp.buffer:
                del self._speakers[pid]
                self.stats.speakers_evicted += 1
                return True
        return False

    # -- input ----------------------------------------------------------------------

    def feed(self, participant_id: int, payload: bytes, rtp_timestamp: int) -> None:
        """Accept one Opus RTP payload of a speaker. Never raises on bad input: invalid,
        late, duplicate or excess packets are dropped and counted."""
        if self._closed:
            return
        self.stats.packets_fed += 1
        if not payload or len(payload) > MAX_OPUS_PAYLOAD or not 0 <= rtp_timestamp < _TS_MOD:
            self.stats.packets_invalid += 1
            return
        sp = self._speakers.get(participant_id)
        if sp is None:
            if len(self._speakers) >= self.max_speakers and not self._evict_idle_speaker():
                self.stats.packets_rejected_speakers += 1
                return
            sp = _Speaker()
            sp.reset(self.playout_delay_frames)
            self._speakers[participant_id] = sp
        span = self.max_buffer_frames * FRAME_SAMPLES
        if sp.next_ts is not None:
            d = _ts_diff(rtp_timestamp, sp.next_ts)
            if d >= span or d <= -LATE_HORIZON:
                # Far outside the window: either one stray packet (ignore it) or the
                # sender's timeline jumped (restarted sender, new random timestamp
                # base). Two such packets that agree with each other mean a jump: start
                # over on the new timeline instead of dropping everything. The few
                # packets still buffered from before the jump are discarded. Packets
                # less than LATE_HORIZON behind are merely late (a burst after a network
                # stall): following them would add the stall to the latency for good.
                cand = sp.jump_candidate
                if (cand is None or cand[0] == rtp_timestamp
                        or abs(_ts_diff(rtp_timestamp, cand[0])) >= span):
                    sp.jump_candidate = (rtp_timestamp, payload)
                    self.stats.packets_out_of_window += 1
                    return
                self.stats.resyncs += 1
                sp.reset(self.playout_delay_frames)
                sp.buffer[cand[0]] = cand[1]
            elif d < 0:
                sp.jump_candidate = None
                self.stats.packets_late += 1
                return
            else:
                sp.jump_candidate = None
        elif sp.buffer and abs(_ts_diff(rtp_timestamp, sp.oldest_ts())) >= span:
            self.stats.resyncs += 1
            sp.reset(self.playout_delay_frames)
        if rtp_timestamp in sp.buffer:
            self.stats.packets_duplicate += 1
            return
        if len(sp.buffer) >= self.max_buffer_frames:
            # Only reachable with timestamps not on the 20 ms grid: keep the newest audio.
            self.stats.packets_overflow += 1
            oldest = sp.oldest_ts()
            if _ts_diff(rtp_timestamp, oldest) < 0:
                return
            del sp.buffer[oldest]
            if sp.next_ts is not None and _ts_diff(oldest, sp.next_ts) >= 0:
                sp.next_ts = (oldest + FRAME_SAMPLES) % _TS_MOD
        sp.buffer[rtp_timestamp] = payload

    # -- mixing ---------------------------------------------------------------------

    def _decode(self, sp: _Speaker, payload: bytes) -> _Pcm | None:
        """Decode one payload to mono s16; ``None`` (counted) on corrupt data so one bad
        packet costs that frame only."""
        try:
            frames = sp.decoder.decode(av.Packet(payload))
        except (av.error.FFmpegError, ValueError):
            self.stats.decode_errors += 1
            return None
        if not frames:
            return np.zeros(0, dtype=np.int16)
        chunks = [f.to_ndarray().reshape(-1).astype(np.int16, copy=False) for f in frames]
        pcm = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        return pcm[:MAX_DECODED_SAMPLES]

    def _speaker_frame(self, sp: _Speaker) -> _Pcm | None:
        """The speaker's next 960 samples, or ``None`` when it has nothing this tick."""
        if sp.next_ts is None:
            if not sp.buffer:
                return None
            if sp.prime_left > 0:
                sp.prime_left -= 1
                return None
            sp.next_ts = sp.oldest_ts()
        got_packet = False
        missing = False
        # Bounded: each iteration consumes a buffered packet or stops.
        while sp.pending.size < FRAME_SAMPLES:
            payload = sp.buffer.pop(sp.next_ts, None)
            if payload is None:
                missing = True
                break
            got_packet = True
            self.stats.packets_mixed += 1
            pcm = self._decode(sp, payload)
            if pcm is None or pcm.size == 0:
                pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
            sp.next_ts = (sp.next_ts + pcm.size) % _TS_MOD
            sp.pending = pcm if sp.pending.size == 0 else np.concatenate((sp.pending, pcm))
        if missing:
            # Silence for the rest of this frame; the RTP timeline moves on regardless,
            # so the packet, if it comes later, is dropped as late.
            self.stats.frames_missing += 1 if sp.buffer else 0
            gap = FRAME_SAMPLES - sp.pending.size
            sp.next_ts = (sp.next_ts + gap) % _TS_MOD
            if sp.pending.size:
                sp.pending = np.concatenate((sp.pending, np.zeros(gap, dtype=np.int16)))
        if got_packet or sp.pending.size >= FRAME_SAMPLES:
            sp.idle_ticks = 0
        else:
            sp.idle_ticks += 1
            if sp.idle_ticks >= self.idle_reset_ticks and not sp.buffer:
                sp.reset(self.playout_delay_frames)
            return None
        out = sp.pending[:FRAME_SAMPLES]
        sp.pending = sp.pending[FRAME_SAMPLES:]
        return out

    def mix_once(self) -> bool:
        """Run one 20 ms tick now: mix whatever each speaker has for it, deliver PCM,
        encode once and deliver the packet. Returns whether audio was encoded.

        Public so tests and benchmarks can drive ticks deterministically; the clocked
        loop calls it on its deadlines.
        """
        t0 = time.perf_counter()
        acc: npt.NDArray[np.int32] | None = None
        for sp in list(self._speakers.values()):
            frame = self._speaker_frame(sp)
            if frame is None:
                continue
            if acc is None:
                acc = frame.astype(np.int32)
            else:
                acc += frame
        if acc is None:
            mixed: _Pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
            self._silent_ticks += 1
        else:
            mixed = np.clip(acc, -32768, 32767).astype(np.int16)
            self._silent_ticks = 0
        tick = self._tick_index
        self._tick_index += 1
        if self._pcm_outputs:
            self._emit_pcm(mixed.tobytes())
        encoded = False
        if self._silent_ticks <= self.silence_hangover_ticks and self._encoder is not None:
            self._encode(mixed, tick)
            encoded = True
            self.stats.ticks_encoded += 1
        cost = time.perf_counter() - t0
        self.stats.ticks += 1
        self.stats.tick_cost_s_total += cost
        self.stats.tick_cost_s_max = max(self.stats.tick_cost_s_max, cost)
        return encoded

    def _encode(self, mixed: _Pcm, tick: int) -> None:
        """Encode the tick once and hand the same bytes to every output."""
        assert self._encoder is not None
        frame = av.AudioFrame.from_ndarray(mixed.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._enc_pts
        self._enc_pts += FRAME_SAMPLES
        try:
            packets = self._encoder.encode(frame)
        except (av.error.FFmpegError, ValueError):
            log.exception("opus encode failed; mixer encoder recreated")
            self._encoder = _new_encoder(self._bitrate)
            return
        for packet in packets:
            pts = tick * FRAME_SAMPLES
            if self._last_out_pts is not None and pts <= self._last_out_pts:
                pts = self._last_out_pts + FRAME_SAMPLES
            self._last_out_pts = pts
            data = bytes(packet)
            for push in list(self._outputs):
                try:
                    push(data, pts)
                except Exception:
                    self._output_failed(push)

    def _emit_pcm(self, pcm: bytes) -> None:
        for cb in list(self._pcm_outputs):
            try:
                cb(pcm)
            except Exception:
                self._output_failed(cb)

    def _output_failed(self, cb: object) -> None:
        """A consumer raised: count it, log the first failure per consumer only (it would
        otherwise log 50 times a second), and keep mixing for everyone else."""
        self.stats.output_errors += 1
        if cb not in self._failed_outputs:
            self._failed_outputs.append(cb)
            log.exception("mixer output %r failed; further failures only counted", cb)

    def _skip(self, n: int) -> None:
        """The loop fell behind by ``n`` ticks: move every timeline forward without
        mixing, so output stays aligned with wall time (PCM consumers get silence)."""
        self.stats.ticks_skipped += n
        self._tick_index += n
        self._silent_ticks += n
        for sp in self._speakers.values():
            if sp.next_ts is None:
                continue
            sp.next_ts = (sp.next_ts + n * FRAME_SAMPLES) % _TS_MOD
            sp.pending = np.zeros(0, dtype=np.int16)
            for ts in [t for t in sp.buffer if _ts_diff(t, sp.next_ts) < 0]:
                del sp.buffer[ts]
                self.stats.packets_late += 1
        if self._pcm_outputs:
            self._emit_pcm(bytes(2 * FRAME_SAMPLES * n))

    # -- clock ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the 20 ms loop on the running event loop (idempotent)."""
        if self._closed:
            raise RuntimeError("mixer is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mixer")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        base = loop.time()
        n = 0
        while True:
            deadline = base + n * FRAME_S
            now = loop.time()
            if now < deadline:
                await asyncio.sleep(deadline - now)
                continue
            behind = int((now - deadline) / FRAME_S)
            if now - deadline > MAX_LAG_S and behind > 0:
                self._skip(behind)
                n += behind
            try:
                self.mix_once()
            except Exception:
                # A bug in one tick must not silence the room for good.
                log.exception("mixer tick failed")
            n += 1
            if base + n * FRAME_S <= loop.time():
                # Catching up after a stall: let the packets that queued up meanwhile be
                # fed before the next tick, or they would all be late.
                await asyncio.sleep(0)

    async def stop(self) -> None:
        """Stop the loop and free codec state; no task is left behind. Idempotent."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._speakers.clear()
        self._outputs.clear()
        self._pcm_outputs.clear()
        self._encoder = None

    @property
    def running(self) -> bool:
        """Whether the clocked loop is active."""
        return self._task is not None and not self._task.done()
