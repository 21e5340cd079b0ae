"""Real aiortc client peers for the media tests: a sine-tone microphone and listeners
that decode what they receive and tell which tone frequencies they hear (numpy FFT).

Why real peers: the SFU's correctness is about real RTP/SRTP/ICE/Opus behaviour; a fake
would not catch an aiortc internal that changed or a pts the decoder rejects.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import math
import time

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

RATE = 48_000
FRAME = 960


class ToneTrack(MediaStreamTrack):
    """A microphone that plays a continuous sine at ``freq`` Hz, paced in real time."""

    kind = "audio"

    def __init__(self, freq: float, amplitude: float = 0.3) -> None:
        super().__init__()
        self.freq = freq
        self.amplitude = amplitude
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        target = self._start + self._n / RATE
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        t = (np.arange(FRAME) + self._n) / RATE
        samples = (np.sin(2 * math.pi * self.freq * t) * self.amplitude * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._n
        frame.time_base = fractions.Fraction(1, RATE)
        self._n += FRAME
        return frame


class SlotListener:
    """Decodes one received track and keeps the last ``window_s`` seconds with arrival
    times, so a test can ask "which tone did this slot carry in the last second"."""

    def __init__(self, track: MediaStreamTrack, window_s: float = 3.0) -> None:
        self.track = track
        self.frames: collections.deque[tuple[float, np.ndarray]] = collections.deque(
            maxlen=int(window_s * RATE / FRAME)
        )
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                assert isinstance(frame, av.AudioFrame)  # an audio track's frames
                arr = frame.to_ndarray()
                if frame.format.is_planar:
                    mono = arr[0]
                else:
                    mono = arr.reshape(-1)[:: len(frame.layout.channels)]
                self.frames.append((time.monotonic(), mono.astype(np.float64)))
        except (MediaStreamError, asyncio.CancelledError):
            return

    def recent(self, seconds: float) -> np.ndarray:
        """Samples received in the last ``seconds`` (empty if the slot was silent)."""
        cutoff = time.monotonic() - seconds
        parts = [s for t, s in self.frames if t >= cutoff]
        return np.concatenate(parts) if parts else np.zeros(0)


def tones_in(samples: np.ndarray, candidates: list[float], rel: float = 0.1) -> set[float]:
    """Which candidate frequencies carry at least ``rel`` of the strongest candidate's
    energy AND stand clearly above silence (decoded silence/comfort noise is ~0)."""
    if len(samples) < RATE // 4:
        return set()
    windowed = samples * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(windowed))
    freqs = np.fft.rfftfreq(len(samples), 1 / RATE)
    energy = {}
    for f in candidates:
        band = (freqs > f - 8) & (freqs < f + 8)
        energy[f] = float(spectrum[band].max())
    strongest = max(energy.values())
    # A 0.3-amplitude tone over 0.25 s gives peaks of ~1e5..1e6; silence gives ~0.
    floor = 1e4
    return {f for f, e in energy.items() if e >= max(floor, rel * strongest)}


def dominant_frequency(samples: np.ndarray) -> float:
    """Frequency (Hz) of the strongest FFT bin (DC excluded)."""
    windowed = samples * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(windowed))
    spectrum[0] = 0
    freqs = np.fft.rfftfreq(len(samples), 1 / RATE)
    return float(freqs[int(np.argmax(spectrum))])


class ClientPeer:
    """A voice client as the spec describes it: one sendrecv m-line (the mic) then
    ``slots`` recvonly m-lines; the offer is made by the client."""

    def __init__(self, freq: float | None, slots: int) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = ToneTrack(freq) if freq is not None else None
        self.freq = freq
        self.pc.addTransceiver(self.mic if self.mic is not None else "audio",
                               direction="sendrecv")
        for _ in range(slots):
            self.pc.addTransceiver("audio", direction="recvonly")
        self.listeners: list[SlotListener] = []

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))
        for t in self.pc.getTransceivers()[1:]:
            self.listeners.append(SlotListener(t.receiver.track))

    def heard(self, seconds: float, candidates: list[float]) -> set[float]:
        """Tones heard on any slot in the last ``seconds``."""
        found: set[float] = set()
        for slot in self.listeners:
            found |= tones_in(slot.recent(seconds), candidates)
        return found

    async def close(self) -> None:
        for slot in self.listeners:
            slot.task.cancel()
        await self.pc.close()
