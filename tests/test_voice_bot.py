"""bots/voice_bot.py's own parts, without a server: the measurement the browser voice
tests rely on (a wrong scale or a leaky band would make them pass or fail for the wrong
reason), and its microphone track through a real aiortc-to-aiortc Opus call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection

from bots.voice_bot import (
    RATE,
    Listener,
    LoopTrack,
    band_rms,
    dominant_frequency,
    load_audio,
    tone,
    write_wav,
)


def test_band_rms_reads_a_tone_at_its_rms_and_nothing_elsewhere() -> None:
    pcm = tone(1000, 1.0, amplitude=0.5).astype(np.float32) / np.float32(32768)
    assert band_rms(pcm, 1000) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert band_rms(pcm, 660) < 1e-3
    assert dominant_frequency(pcm) == pytest.approx(1000, abs=1)
    mixed = pcm + tone(660, 1.0, amplitude=0.1).astype(np.float32) / np.float32(32768)
    assert band_rms(mixed, 660) == pytest.approx(0.1 / np.sqrt(2), rel=0.05)
    assert dominant_frequency(np.zeros(RATE, dtype=np.float32)) is None
    assert band_rms(pcm[:100], 1000) == 0.0  # too short to measure


def test_wav_round_trip(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    path = tmp_path / "t.wav"
    samples = tone(440, 0.5)
    write_wav(path, samples)
    loaded = load_audio(path)
    assert len(loaded) == len(samples)
    assert np.array_equal(loaded, samples)


@pytest.mark.slow
async def test_loop_track_is_heard_through_a_real_opus_call_and_mute_silences_it() -> None:
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    mic = LoopTrack(tone(1000, 1.0))
    sender.addTransceiver(mic, direction="sendonly")
    listener = Listener(0, history_s=3.0)
    reader: list[asyncio.Task[None]] = []

    @receiver.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        async def read() -> None:
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                listener.add(frame)

        reader.append(asyncio.create_task(read()))

    try:
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)

        async def level_reaches(check: Callable[[float], bool], timeout: float = 10.0) -> float:
            deadline = time.monotonic() + timeout
            level = band_rms(listener.last(1.0), 1000)
            while time.monotonic() < deadline:
                level = band_rms(listener.last(1.0), 1000)
                if check(level):
                    return level
                await asyncio.sleep(0.1)
            raise AssertionError(f"level stuck at {level}")

        # Amplitude 0.3 is 0.21 RMS; aiortc's encoder upmixes mono to stereo at -3 dB
        # (libswresample's centre mix level), so 0.15 arrives.
        heard = await level_reaches(lambda v: v > 0.12)
        assert heard < 0.22
        assert band_rms(listener.last(1.0), 660) < 0.01
        # Paced in real time: ~50 frames a second, not as fast as the sender pulls.
        before, t0 = listener.frames, time.monotonic()
        await asyncio.sleep(1.0)
        rate = (listener.frames - before) / (time.monotonic() - t0)
        assert 35 < rate < 65, rate
        mic.muted = True
        await level_reaches(lambda v: v < 0.005)
    finally:
        await sender.close()
        await receiver.close()
        for task in reader:
            task.cancel()


def test_the_bot_takes_the_address_hearth_serve_prints() -> None:
    from bots.voice_bot import gateway_url

    assert gateway_url("http://127.0.0.1:8080/") == "ws://127.0.0.1:8080/gateway"
    assert gateway_url("https://chat.example.org") == "wss://chat.example.org/gateway"
    assert gateway_url("ws://127.0.0.1:8080/gateway") == "ws://127.0.0.1:8080/gateway"
