"""WavRecorder: the mixer's PCM written to a real WAV file, off the event loop."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from rooms.media.mixer import FRAME_SAMPLES, AudioMixer
from rooms.media.recorder import WavRecorder
from tests.media_audio import RATE, encode, tone, tone_levels


def read_wav(path: str) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(path, "rb") as w:
        return w.getparams(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def flushed_frames(path: str) -> int:
    """Frames a reader sees in the file right now (0 if not there yet)."""
    return read_wav(path)[0].nframes if Path(path).exists() else 0


async def test_recording_of_a_two_speaker_mix(tmp_path: Path) -> None:
    frames = 100  # 2 s fed per speaker
    a, b = encode(tone(440, frames)), encode(tone(660, frames))
    mixer = AudioMixer()
    rec = WavRecorder(tmp_path / "rec" / "session.wav")  # directory created on demand
    mixer.add_pcm_output(rec.write)
    ticks = frames + mixer.playout_delay_frames
    for i in range(ticks):
        if i < frames:
            mixer.feed(1, a[i], i * FRAME_SAMPLES)
            mixer.feed(2, b[i], 77 + i * FRAME_SAMPLES)
        mixer.mix_once()
        await asyncio.sleep(0)  # let background flushes run, as the real loop would
    result = await rec.close()
    await mixer.stop()

    assert result.path == str(tmp_path / "rec" / "session.wav")
    assert result.error is None and result.dropped_s == 0
    params, pcm = read_wav(result.path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, RATE)
    assert params.nframes == len(pcm) == ticks * FRAME_SAMPLES
    assert result.duration_s == pytest.approx(params.nframes / RATE)
    # The mix covers the fed audio plus the reorder window at the start.
    assert abs(result.duration_s - frames * 0.02) <= (mixer.playout_delay_frames + 1) * 0.02
    levels = tone_levels(pcm[10 * FRAME_SAMPLES:], [440, 660, 880])
    assert levels[440] > 0.3 and levels[660] > 0.3 and levels[880] < 0.02, levels
    assert await rec.close() is result  # idempotent


async def test_file_is_valid_while_recording(tmp_path: Path) -> None:
    """Flushes happen about every second in a thread and leave a readable WAV behind, so
    a crash loses at most the unflushed second."""
    path = str(tmp_path / "live.wav")
    rec = WavRecorder(path, flush_s=0.5)
    chunk = tone(440, 1).tobytes()
    for _ in range(40):  # 0.8 s
        rec.write(chunk)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if flushed_frames(path) > 0:
            break
    params, pcm = read_wav(path)
    assert params.nframes == len(pcm) >= 25 * FRAME_SAMPLES
    rec.write(chunk)
    result = await rec.close()
    assert result.duration_s == pytest.approx(41 * 0.02)


async def test_pending_audio_is_bounded(tmp_path: Path) -> None:
    """Writes that outpace the disk (here: nothing yields to the flush) are capped at
    max_pending_s; the excess is dropped and reported."""
    rec = WavRecorder(tmp_path / "b.wav", flush_s=0.5, max_pending_s=1.0)
    chunk = bytes(2 * FRAME_SAMPLES)
    for _ in range(150):  # 3 s without yielding
        rec.write(chunk)
    assert rec.duration_s == pytest.approx(1.0)
    result = await rec.close()
    assert result.duration_s == pytest.approx(1.0)
    assert result.dropped_s == pytest.approx(2.0)
    with pytest.raises(ValueError):
        WavRecorder(tmp_path / "c.wav", flush_s=2, max_pending_s=1)
    with pytest.raises(ValueError):
        WavRecorder(tmp_path / "d.wav").write(b"\x00")  # half a sample


@pytest.mark.parametrize("where", ["not_a_dir", "disk_full"])
async def test_disk_error_is_reported_and_the_mix_goes_on(tmp_path: Path, where: str) -> None:
    if where == "not_a_dir":
        blocker = tmp_path / "file"
        blocker.write_text("x")
        path = str(blocker / "rec.wav")  # parent is a regular file
    else:
        path = "/dev/full"  # every write fails with ENOSPC
    a = encode(tone(440, 80))
    mixer = AudioMixer()
    rec = WavRecorder(path, flush_s=0.2)
    mixer.add_pcm_output(rec.write)
    got: list[int] = []
    mixer.add_output(lambda payload, pts: got.append(pts))
    for i in range(80):
        mixer.feed(1, a[i], i * FRAME_SAMPLES)
        mixer.mix_once()
        await asyncio.sleep(0.001)
    assert rec.error is not None
    result = await rec.close()
    assert result.error == rec.error and result.duration_s == 0.0
    assert len(got) == 80 - mixer.playout_delay_frames  # listeners unaffected
    assert mixer.stats.output_errors == 0
    await mixer.stop()


async def test_realtime_recording_length_matches_wall_time(tmp_path: Path) -> None:
    """With the clocked loop, the WAV's length is the time the mixer ran (silence
    included), so recording_s in RoomClosed matches the session."""
    loop = asyncio.get_running_loop()
    mixer = AudioMixer()
    rec = WavRecorder(tmp_path / "rt.wav", flush_s=0.2)
    mixer.add_pcm_output(rec.write)
    t0 = loop.time()
    mixer.start()
    await asyncio.sleep(0.6)
    await mixer.stop()
    elapsed = loop.time() - t0
    result = await rec.close()
    assert abs(result.duration_s - elapsed) <= 3 * 0.02, (result.duration_s, elapsed)
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def _record(path: Path, pcm: bytes) -> float:
    rec = WavRecorder(path, flush_s=0.5)
    for i in range(0, len(pcm), 2 * FRAME_SAMPLES):
        rec.write(pcm[i:i + 2 * FRAME_SAMPLES])
        await asyncio.sleep(0)
    result = await rec.close()
    assert result.error is None
    return result.duration_s


async def test_reopening_continues_the_recording(tmp_path: Path) -> None:
    """A room reopened in the same session (worker restart, close and reopen) records
    to the same path: the second recorder appends, so one session keeps one file."""
    path = tmp_path / "session.wav"
    first = (np.arange(RATE) % 300).astype("<i2").tobytes()  # 1 s
    second = (-(np.arange(RATE // 2) % 200)).astype("<i2").tobytes()  # 0.5 s
    assert await _record(path, first) == pytest.approx(1.0)
    assert await _record(path, second) == pytest.approx(1.5)  # the total
    params, pcm = read_wav(str(path))
    assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, RATE)
    assert pcm.tobytes() == first + second


async def test_a_file_cut_short_by_a_crash_is_continued(tmp_path: Path) -> None:
    # The last flush wrote audio but the process died before the header was patched.
    path = tmp_path / "crashed.wav"
    first = (np.arange(RATE // 2) % 50).astype("<i2").tobytes()
    await _record(path, first)
    path.write_bytes(path.read_bytes() + b"\x01\x00\x02\x00\x03")  # 2.5 samples
    second = bytes(2 * FRAME_SAMPLES)
    assert await _record(path, second) == pytest.approx((len(first) + 4 + len(second))
                                                        / (2 * RATE))
    _, pcm = read_wav(str(path))
    assert pcm.tobytes() == first + b"\x01\x00\x02\x00" + second


@pytest.mark.parametrize("existing", [b"not a wav at all", "8khz"])
async def test_a_file_of_another_kind_is_moved_aside_not_overwritten(
    tmp_path: Path, existing: bytes | str
) -> None:
    path = tmp_path / "session.wav"
    if existing == "8khz":
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(bytes(1600))
    else:
        assert isinstance(existing, bytes)
        path.write_bytes(existing)
    before = path.read_bytes()
    assert await _record(path, bytes(2 * RATE)) == pytest.approx(1.0)
    assert (tmp_path / "session.wav.1.bak").read_bytes() == before
    assert read_wav(str(path))[0].nframes == RATE
