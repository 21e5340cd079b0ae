"""Real-codec audio helpers for the mixer/recorder tests: tones, Opus encode/decode with
PyAV (libopus), and an FFT tone detector. No mocks: the bytes fed to the mixer are what a
browser's Opus encoder would produce for these tones."""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt

RATE = 48_000
FRAME = 960


def tone(freq: float, frames: int, amp: float = 6000.0) -> npt.NDArray[np.int16]:
    """``frames`` 20 ms frames of a sine at ``freq`` Hz, 48 kHz mono s16."""
    t = np.arange(frames * FRAME) / RATE
    return (np.sin(2 * np.pi * freq * t) * amp).astype(np.int16)


def encode(pcm: npt.NDArray[np.int16]) -> list[bytes]:
    """Opus-encode mono PCM into one payload per 20 ms frame (like a browser sender)."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = RATE
    enc.layout = "mono"
    enc.format = "s16"
    enc.bit_rate = 48_000
    out: list[bytes] = []
    for i in range(len(pcm) // FRAME):
        frame = av.AudioFrame.from_ndarray(
            pcm[i * FRAME:(i + 1) * FRAME].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = i * FRAME
        out += [bytes(p) for p in enc.encode(frame)]
    return out


def decode(payloads: list[bytes]) -> npt.NDArray[np.int16]:
    """Decode Opus payloads (in order) to mono s16, as a listener would."""
    dec = av.CodecContext.create("libopus", "r")
    dec.sample_rate = RATE
    dec.layout = "mono"
    dec.format = "s16"
    chunks = [f.to_ndarray().reshape(-1) for p in payloads for f in dec.decode(av.Packet(p))]
    return np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)


def tone_levels(pcm: npt.NDArray[np.int16], freqs: list[float]) -> dict[float, float]:
    """Spectral magnitude at each frequency (±5 Hz) relative to the strongest bin, so
    the result does not depend on the codec's gain."""
    x = pcm.astype(np.float64) * np.hanning(len(pcm))
    spec = np.abs(np.fft.rfft(x))
    hz = np.fft.rfftfreq(len(pcm), 1 / RATE)
    peak = float(spec.max()) or 1.0
    return {f: float(spec[(hz > f - 5) & (hz < f + 5)].max()) / peak for f in freqs}
