"""WAV recording of a room's mix (48 kHz, mono, signed 16-bit).

Why WAV: it needs no encoder on the media worker (the mix is already PCM), any tool
reads it, and the standard library writes it. It is large (about 346 MB per hour), which
is acceptable for live-session recordings kept under the data directory.

Why this shape: :meth:`WavRecorder.write` is called by the mixer on the event loop every
20 ms and must return at once. PCM is buffered and written about once a second in a
thread (``asyncio.to_thread``), one write at a time, so disk latency never stalls the
loop. The header is rewritten after each write, so the file on disk is a valid WAV up to
the last flush even if the process dies.

Why append: a room is reopened (its media worker restarted, or it was closed and
opened again) during one live session, and the session has one recording path. If
that path already holds a WAV of this format, the recorder continues after its audio
(header sizes rewritten) instead of truncating it, and reports the total duration. A
file there that is not such a WAV is renamed aside (``<path>.<n>.bak``), never
overwritten. The writer is a few lines of RIFF here rather than :mod:`wave`, which can
only create files. The buffer is bounded
(``max_pending_s``): if the disk cannot keep up the newest audio is dropped and counted
rather than memory growing. A disk error stops the recording, is logged and reported in
the result; the room goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import struct
from dataclasses import dataclass
from typing import BinaryIO

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
SAMPLE_WIDTH = 2  # bytes, s16
CHANNELS = 1
BYTES_PER_SECOND = SAMPLE_RATE * SAMPLE_WIDTH * CHANNELS
_BLOCK_ALIGN = SAMPLE_WIDTH * CHANNELS
_WAVE_FORMAT_PCM = 1
_CHUNK = struct.Struct("<4sI")
_FMT = struct.Struct("<HHIIHH")
_HEADER_BYTES = 12 + _CHUNK.size + _FMT.size + _CHUNK.size  # 44: RIFF, fmt, data


class _NotOurWav(ValueError):
    """The existing file is not a PCM WAV of this format with its audio at the end."""


def _header(data_bytes: int) -> bytes:
    """The canonical 44-byte header of a 48 kHz mono s16 file with ``data_bytes``."""
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + _CHUNK.pack(b"fmt ", _FMT.size)
            + _FMT.pack(_WAVE_FORMAT_PCM, CHANNELS, SAMPLE_RATE, BYTES_PER_SECOND,
                        _BLOCK_ALIGN, SAMPLE_WIDTH * 8)
            + _CHUNK.pack(b"data", data_bytes))


def _find_audio(f: BinaryIO, size: int) -> tuple[int, int]:
    """(offset of the data chunk's size field, bytes of audio) of an existing file.

    The audio must be the last chunk in the RIFF header (true of every file this
    module and :mod:`wave` write); bytes past it are audio whose header a crash left
    unpatched, so the audio runs to the end of the file, in whole samples."""
    f.seek(0)
    riff = f.read(12)
    if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:] != b"WAVE":
        raise _NotOurWav("not a RIFF/WAVE file")
    pos, fmt_ok = 12, False
    while pos + _CHUNK.size <= size:
        f.seek(pos)
        chunk_id, chunk_len = _CHUNK.unpack(f.read(_CHUNK.size))
        body = pos + _CHUNK.size
        if chunk_id == b"fmt ":
            if chunk_len < _FMT.size:
                raise _NotOurWav("short fmt chunk")
            fields = _FMT.unpack(f.read(_FMT.size))
            fmt_ok = fields == (_WAVE_FORMAT_PCM, CHANNELS, SAMPLE_RATE, BYTES_PER_SECOND,
                                _BLOCK_ALIGN, SAMPLE_WIDTH * 8)
            if not fmt_ok:
                raise _NotOurWav(f"another format: {fields}")
        elif chunk_id == b"data":
            if not fmt_ok:
                raise _NotOurWav("data before fmt")
            riff_end = 8 + struct.unpack("<I", riff[4:8])[0]
            if body + chunk_len < min(size, riff_end):  # per the RIFF header, the
                raise _NotOurWav("chunks after the audio")  # file goes on after it
            audio = size - body
            return pos + 4, audio - audio % _BLOCK_ALIGN
        pos = body + chunk_len + (chunk_len & 1)
    raise _NotOurWav("no data chunk")


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
        self._file: BinaryIO | None = None
        self._size_field = 0
        """Offset of the data chunk's size field in the open file."""
        self._existing_bytes = 0
        """Audio the file already held when this recorder opened it (appended to)."""
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
        """Seconds of audio in the recording so far: what the file held when it was
        opened, plus what was written or buffered since (minus drops)."""
        return (self._existing_bytes + self._written_bytes + self._pending) / BYTES_PER_SECOND

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

    def _open_blocking(self) -> BinaryIO:
        """Open the file, continuing an existing recording of this format (module
        docstring). Runs in a thread."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size > 0:
            f: BinaryIO = open(self.path, "r+b")
            try:
                self._size_field, self._existing_bytes = _find_audio(f, st.st_size)
            except (_NotOurWav, struct.error) as exc:
                f.close()
                aside = self._aside_path()
                log.warning("recording %s: existing file is not a continuable WAV (%s); "
                            "moved to %s", self.path, exc, aside)
                os.rename(self.path, aside)
            else:
                f.truncate(self._size_field + 4 + self._existing_bytes)
                log.info("recording %s: continuing after %.1f s already recorded",
                         self.path, self._existing_bytes / BYTES_PER_SECOND)
                return f
        # Non-regular files (a device) are written as they are.
        f = open(self.path, "wb")
        f.write(_header(0))
        self._size_field, self._existing_bytes = _HEADER_BYTES - 4, 0
        return f

    def _aside_path(self) -> str:
        n = 1
        while os.path.exists(f"{self.path}.{n}.bak"):
            n += 1
        return f"{self.path}.{n}.bak"

    def _write_blocking(self, data: bytes) -> None:
        """Runs in a thread. Opening lazily here keeps even the open off the loop.
        Appends the audio, then patches both size fields, so the file is a valid WAV
        after every write."""
        if self._file is None:
            self._file = self._open_blocking()
        f = self._file
        audio = self._existing_bytes + self._written_bytes
        f.seek(self._size_field + 4 + audio)
        if data:
            f.write(data)
        audio += len(data)
        f.seek(4)
        f.write(struct.pack("<I", self._size_field + audio - 4))  # RIFF size: file - 8
        f.seek(self._size_field)
        f.write(struct.pack("<I", audio))
        f.flush()

    async def _flush(self) -> None:
        """Write what is buffered, repeatedly while more arrives, one thread at a time
        (the file object and its offsets are not safe for concurrent use)."""
        try:
            while self._chunks and self._error is None:
                data = self._take()
                try:
                    await asyncio.to_thread(self._write_blocking, data)
                except OSError as exc:
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
            except OSError as exc:
                self._fail(exc)
        f, self._file = self._file, None
        if f is not None:
            try:
                await asyncio.to_thread(f.close)
            except OSError as exc:
                if self._error is None:
                    self._fail(exc)
        self._result = RecordingResult(
            path=self.path,
            duration_s=(self._existing_bytes + self._written_bytes) / BYTES_PER_SECOND,
            dropped_s=self._dropped_bytes / BYTES_PER_SECOND,
            error=self._error,
        )
        return self._result
