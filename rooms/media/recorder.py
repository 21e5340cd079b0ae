"""WAV recording of a room's mix (48 kHz, mono, signed 16-bit).

Why WAV: it needs no encoder on the media worker (the mix is already PCM), any tool
reads it, and the standard library writes it. It is large (about 346 MB per hour), which
is acceptable for live-session recordings kept under the data directory.

Why this shape: :meth:`WavRecorder.write` is called by the mixer on the event loop every
20 ms and must return at once. PCM is buffered and written about once a second in a
thread (``asyncio.to_thread``), one write at a time, so disk latency never stalls the
loop. Python's ``wave`` module rewrites the header after each write, so the file on disk
is a valid WAV up to the last flush even if the process dies. The buffer is bounded
(``max_pending_s``): if the disk cannot keep up the newest audio is dropped and counted
rather than memory growing. A disk error stops the recording, is logged and reported in
the result; the room goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import wave
from dataclasses import dataclass

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
SAMPLE_WIDTH = 2  # bytes, s16
CHANNELS = 1
BYTES_PER_SECOND = SAMPLE_RATE * SAMPLE_WIDTH * CHANNELS


@dataclass(frozen=True)
class RecordingResult:
    """What ``CloseRoom`` reports: where the file is and how much audio it holds."""

    path: str
    duration_s: float
    dropped_s: float = 0.0
    """Audio discarded because the disk fell more than ``max_pending_s`` behind."""
    error: str | None = None
    """First disk error; when set, the file holds only what was written before it."""


class WavRecorder:
    """Incremental WAV writer fed from the event loop; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str], *, flush_s: float = 1.0,
                 max_pending_s: float = 10.0) -> None:
        """``flush_s`` is how much audio accumulates before a background write;
        ``max_pending_s`` bounds memory when writes are slower than real time."""
        if flush_s <= 0 or max_pending_s < flush_s:
            raise ValueError("need 0 < flush_s <= max_pending_s")
        self.path = os.fspath(path)
        self._flush_bytes = int(flush_s * SAMPLE_RATE) * SAMPLE_WIDTH
        self._max_pending = int(max_pending_s * SAMPLE_RATE) * SAMPLE_WIDTH
        self._chunks: list[bytes] = []
        self._pending = 0
        self._written_bytes = 0
        self._dropped_bytes = 0
        self._wav: wave.Wave_write | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._error: str | None = None
        self._closed = False
        self._result: RecordingResult | None = None

    @property
    def error(self) -> str | None:
        """The disk error that stopped the recording, if any."""
        return self._error

    @property
    def duration_s(self) -> float:
        """Seconds of audio accepted so far (written or buffered, minus drops)."""
        return (self._written_bytes + self._pending) / BYTES_PER_SECOND

    def write(self, pcm: bytes) -> None:
        """Queue PCM (48 kHz mono s16 LE). Returns immediately; never raises for disk
        trouble. Signature matches :data:`rooms.media.mixer.PcmOutput`."""
        if self._closed or self._error is not None or not pcm:
            return
        if len(pcm) % SAMPLE_WIDTH:
            raise ValueError("PCM must be whole 16-bit samples")
        if self._pending + len(pcm) > self._max_pending:
            self._dropped_bytes += len(pcm)
            if self._dropped_bytes == len(pcm):
                log.warning("recording %s: disk behind by %d bytes; dropping audio",
                            self.path, self._pending)
            return
        self._chunks.append(pcm)
        self._pending += len(pcm)
        if self._pending >= self._flush_bytes and self._flush_task is None:
            self._flush_task = asyncio.get_running_loop().create_task(self._flush())

    def _take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data

    def _write_blocking(self, data: bytes) -> None:
        """Runs in a thread. Opening lazily here keeps even the open off the loop."""
        if self._wav is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            wav = wave.open(self.path, "wb")
            wav.setnchannels(CHANNELS)
            wav.setsampwidth(SAMPLE_WIDTH)
            wav.setframerate(SAMPLE_RATE)
            self._wav = wav
        if data:
            self._wav.writeframes(data)

    async def _flush(self) -> None:
        """Write what is buffered, repeatedly while more arrives, one thread at a time
        (``wave`` objects are not safe for concurrent use)."""
        try:
            while self._chunks and self._error is None:
                data = self._take()
                try:
                    await asyncio.to_thread(self._write_blocking, data)
                except (OSError, wave.Error) as exc:
                    self._fail(exc)
                    return
                self._pending -= len(data)
                self._written_bytes += len(data)
                if self._pending < self._flush_bytes and not self._closed:
                    return
        finally:
            self._flush_task = None

    def _fail(self, exc: Exception) -> None:
        self._error = f"{type(exc).__name__}: {exc}"
        log.error("recording %s failed, stopping it: %s", self.path, self._error)
        self._chunks.clear()
        self._pending = 0

    async def close(self) -> RecordingResult:
        """Flush the rest, finalize the header and report. Idempotent: a second call
        returns the same result."""
        if self._result is not None:
            return self._result
        self._closed = True
        while self._flush_task is not None:
            await asyncio.shield(self._flush_task)
        if self._error is None:
            data = self._take()
            self._pending = 0
            try:
                await asyncio.to_thread(self._write_blocking, data)
                self._written_bytes += len(data)
            except (OSError, wave.Error) as exc:
                self._fail(exc)
        wav, self._wav = self._wav, None
        if wav is not None:
            try:
                await asyncio.to_thread(wav.close)
            except (OSError, wave.Error) as exc:
                if self._error is None:
                    self._fail(exc)
        self._result = RecordingResult(
            path=self.path,
            duration_s=self._written_bytes / BYTES_PER_SECOND,
            dropped_s=self._dropped_bytes / BYTES_PER_SECOND,
            error=self._error,
        )
        return self._result
