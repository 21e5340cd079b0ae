"""Mixer budget check: wall time of one 20 ms mix tick by number of speakers.

    .venv/bin/python -m tests.benchmarks.mixer [--ticks 1000] [--listeners 100]

Each speaker sends real Opus (libopus, 48 kbit/s, 20 ms) of a distinct tone plus noise,
so decoder and encoder do speech-like work rather than coding silence. Every tick is
driven through :meth:`rooms.media.mixer.AudioMixer.mix_once` (decode every speaker, sum,
clip, encode once, hand the packet to ``--listeners`` outputs). The tick must stay far
below 20 ms because it runs inline on the worker's event loop. Not a test: the numbers go
to docs/voice.md.
"""

from __future__ import annotations

import argparse
import collections
import functools
import statistics
import time

import av
import numpy as np

from rooms.media.mixer import FRAME_SAMPLES, SAMPLE_RATE, AudioMixer


def speech_like(seed: int, frames: int) -> list[bytes]:
    """Opus payloads of a tone with noise and a 4 Hz amplitude wobble (not silence, so
    the codec cannot coast)."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames * FRAME_SAMPLES) / SAMPLE_RATE
    sig = np.sin(2 * np.pi * (200 + 90 * seed) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    pcm = ((sig * 0.5 + rng.normal(0, 0.05, t.size)) * 12000).astype(np.int16)
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = SAMPLE_RATE
    enc.layout = "mono"
    enc.format = "s16"
    enc.bit_rate = 48_000
    out: list[bytes] = []
    for i in range(frames):
        frame = av.AudioFrame.from_ndarray(
            pcm[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES].reshape(1, -1),
            format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = i * FRAME_SAMPLES
        out += [bytes(p) for p in enc.encode(frame)]
    return out


def _push(q: collections.deque[tuple[bytes, int]], payload: bytes, pts: int) -> None:
    """Stand-in for a listener track's bounded queue (the real one also drops oldest)."""
    q.append((payload, pts))


def run(speakers: int, ticks: int, listeners: int) -> tuple[list[float], list[float]]:
    """Per-tick wall and thread-CPU times (s) of a mixer with ``speakers`` talking all
    the time. CPU time is reported too because on a shared machine wall time includes
    preemption by other processes."""
    streams = [speech_like(s, ticks) for s in range(speakers)]
    mixer = AudioMixer()
    queues = [collections.deque[tuple[bytes, int]](maxlen=50) for _ in range(listeners)]
    for q in queues:
        mixer.add_output(functools.partial(_push, q))
    wall: list[float] = []
    cpu: list[float] = []
    for i in range(ticks):
        for s, payloads in enumerate(streams):
            if i < len(payloads):
                mixer.feed(s, payloads[i], i * FRAME_SAMPLES)
        t0, c0 = time.perf_counter(), time.thread_time()
        mixer.mix_once()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - t0)
    return wall[20:], cpu[20:]  # skip the warm-up and the reorder window


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=1000)
    ap.add_argument("--listeners", type=int, default=100)
    args = ap.parse_args()
    print(f"ticks={args.ticks} listeners={args.listeners} (ms per 20 ms tick)")
    print("speakers | wall mean   p50    p99    max | cpu mean   p99 | cpu % of one core")
    for n in (0, 1, 2, 4, 8, 16):
        wall, cpu = (sorted(x) for x in run(n, args.ticks, args.listeners))
        w, c = statistics.fmean(wall), statistics.fmean(cpu)
        print(f"{n:8d} | {w * 1e3:9.3f} {wall[len(wall) // 2] * 1e3:6.3f} "
              f"{wall[int(len(wall) * 0.99)] * 1e3:6.3f} {wall[-1] * 1e3:6.3f} | "
              f"{c * 1e3:8.3f} {cpu[int(len(cpu) * 0.99)] * 1e3:5.3f} | {c / 0.02 * 100:5.1f}%")


if __name__ == "__main__":
    main()
