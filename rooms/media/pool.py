"""Gateway-side client of the media workers: spawn, connect, place rooms, call them.

Why here and not in the gateway: the gateway only needs "put this room somewhere and
give me an SDP answer"; process management, framing, request ids, timeouts and
placement are one concern. This module does not import aiortc, so the gateway process
stays light.

Placement: a room lives on exactly one worker for its whole life (its participants must
share one forwarder). The first ``open_room`` picks the least loaded worker (lowest
outbound-tracks / capacity from ``GetStats``) and records room -> worker socket in a
:class:`PlacementStore`: an in-process dict by default, or Redis (``voice:room:<id>``,
``SET NX``) so every gateway process of a node reaches the same worker. Multi-node: the
Redis map is shared, but a socket path is only reachable on its own node; a gateway on
another node whose map points at a socket it cannot reach gets ``worker_gone`` (the
documented limit: a room's participants must reach the node hosting it).

Errors: every failure is a :class:`MediaRequestError` with a code from
:data:`protocol.media_ipc.ErrorCodeName` (``capacity`` when admission refuses,
``timeout`` when a worker does not answer within ``request_timeout``, ``worker_gone``
when its connection dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

import msgspec

from protocol import media_ipc as ipc

log = logging.getLogger("hearth.media.pool")

EVENT_QUEUE = 1024
"""Bound of the :meth:`MediaPool.events` queue; the oldest event is dropped when full."""


class MediaRequestError(Exception):
    """A media request failed; ``code`` is an :data:`ipc.ErrorCodeName`."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


EventCallback = Callable[[str, ipc.WorkerEvent], None]
"""``callback(worker_socket_path, event)``; runs on the event loop, must not block."""


class WorkerConnection:
    """One IPC connection to a worker: request ids, replies, events, timeouts."""

    def __init__(
        self,
        path: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: EventCallback,
        request_timeout: float,
    ) -> None:
        self.path = path
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self.request_timeout = request_timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[ipc.MediaOk]] = {}
        self.orphan_errors: list[ipc.MediaError] = []
        """Errors without a request id (e.g. a frame the worker could not read); last 16."""
        self._task = asyncio.create_task(self._read_loop())

    @classmethod
    async def open(
        cls, path: str, on_event: EventCallback, request_timeout: float = 15.0
    ) -> WorkerConnection:
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(path, reader, writer, on_event, request_timeout)

    @property
    def connected(self) -> bool:
        return not self._task.done()

    async def call(self, request: ipc.WorkerRequest) -> ipc.MediaResult | None:
        """Send ``request`` (its ``id`` is replaced) and wait for the reply."""
        if not self.connected:
            raise MediaRequestError("worker_gone", self.path)
        rid = next(self._ids)
        request = msgspec.structs.replace(request, id=rid)
        fut: asyncio.Future[ipc.MediaOk] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._writer.write(ipc.encode_frame(request))
            async with asyncio.timeout(self.request_timeout):
                ok = await fut
        except TimeoutError:
            raise MediaRequestError(
                "timeout", f"{type(request).__name__} to {self.path}") from None
        finally:
            self._pending.pop(rid, None)
        return ok.result

    async def send_raw(self, data: bytes) -> None:
        """Write raw bytes (tests of the worker's bad-frame handling)."""
        self._writer.write(data)
        await self._writer.drain()

    async def _read_loop(self) -> None:
        try:
            while True:
                header = await self._reader.readexactly(ipc.LENGTH_PREFIX.size)
                (length,) = ipc.LENGTH_PREFIX.unpack(header)
                if length > ipc.MAX_FRAME_BYTES:
                    log.error("worker %s sent a %d-byte frame; dropping link", self.path, length)
                    return
                body = await self._reader.readexactly(length)
                try:
                    frame = ipc.decode_worker_frame(body)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    log.exception("undecodable frame from worker %s", self.path)
                    continue
                self._dispatch(frame)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(MediaRequestError("worker_gone", self.path))
            self._writer.close()

    def _dispatch(self, frame: ipc.WorkerFrame) -> None:
        if isinstance(frame, ipc.MediaOk | ipc.MediaError):
            fut = self._pending.get(frame.id) if frame.id is not None else None
            if fut is None:
                if isinstance(frame, ipc.MediaError):
                    self.orphan_errors = [*self.orphan_errors[-15:], frame]
                return
            if fut.done():
                return
            if isinstance(frame, ipc.MediaOk):
                fut.set_result(frame)
            else:
                fut.set_exception(MediaRequestError(frame.code, frame.message))
            return
        self._on_event(self.path, frame)

    async def close(self) -> None:
        self._writer.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


class PlacementStore(Protocol):
    """Where each open room lives (room id -> worker socket path)."""

    async def get(self, room_id: str) -> str | None: ...

    async def claim(self, room_id: str, path: str) -> str:
        """Record ``path`` unless the room is already placed; returns the winner."""

    async def release(self, room_id: str) -> None: ...


class LocalPlacement:
    """In-process placement (one gateway process, or no Redis)."""

    def __init__(self) -> None:
        self._rooms: dict[str, str] = {}

    async def get(self, room_id: str) -> str | None:
        return self._rooms.get(room_id)

    async def claim(self, room_id: str, path: str) -> str:
        return self._rooms.setdefault(room_id, path)

    async def release(self, room_id: str) -> None:
        self._rooms.pop(room_id, None)


class RedisLike(Protocol):
    """The three commands :class:`RedisPlacement` needs (``redis.asyncio.Redis``)."""

    async def get(self, name: str) -> bytes | str | None: ...

    async def set(self, name: str, value: str, nx: bool = ...) -> bool | None: ...

    async def delete(self, *names: str) -> int: ...


class RedisPlacement:
    """Node-wide placement through Redis ``voice:room:<room_id>`` (SET NX)."""

    def __init__(self, redis: RedisLike, prefix: str = "voice:room:") -> None:
        self._redis = redis
        self._prefix = prefix

    async def get(self, room_id: str) -> str | None:
        value = await self._redis.get(self._prefix + room_id)
        return value.decode() if isinstance(value, bytes) else value

    async def claim(self, room_id: str, path: str) -> str:
        if await self._redis.set(self._prefix + room_id, path, nx=True):
            return path
        winner = await self.get(room_id)
        return winner if winner is not None else path

    async def release(self, room_id: str) -> None:
        await self._redis.delete(self._prefix + room_id)


class MediaPool:
    """The gateway's handle on its media workers."""

    def __init__(
        self,
        connections: list[WorkerConnection],
        processes: list[asyncio.subprocess.Process] | None = None,
        placement_store: PlacementStore | None = None,
    ) -> None:
        self.workers: dict[str, WorkerConnection] = {c.path: c for c in connections}
        self._processes = processes or []
        self.placement_store: PlacementStore = placement_store or LocalPlacement()
        self._callbacks: list[EventCallback] = []
        self._queues: list[asyncio.Queue[tuple[str, ipc.WorkerEvent]]] = []
        self.events_dropped = 0
        self._opened: set[str] = set()
        for c in connections:
            c._on_event = self._emit

    # -- construction ---------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        n_workers: int,
        socket_dir: str | os.PathLike[str],
        capacity_tracks: int | None = None,
        max_slots: int | None = None,
        ice: str = "default",
        placement_store: PlacementStore | None = None,
        ready_timeout: float = 30.0,
        request_timeout: float = 15.0,
    ) -> MediaPool:
        """Spawn ``n_workers`` worker processes (sockets in ``socket_dir``) and connect.

        Workers get ``--parent-pid`` so they exit when this process dies.
        """
        if n_workers < 1:
            raise ValueError("n_workers must be >= 1")
        await asyncio.to_thread(os.makedirs, socket_dir, exist_ok=True)
        processes: list[asyncio.subprocess.Process] = []
        paths: list[str] = []
        try:
            for i in range(n_workers):
                path = str(Path(socket_dir) / f"media-{os.getpid()}-{i}.sock")
                if len(os.fsencode(path)) > 100:  # sun_path is 108 bytes on Linux
                    raise ValueError(f"socket path too long for AF_UNIX: {path}")
                args = [sys.executable, "-m", "rooms.media.worker", "--socket", path,
                        "--parent-pid", str(os.getpid()), "--ice", ice]
                if capacity_tracks is not None:
                    args += ["--capacity-tracks", str(capacity_tracks)]
                if max_slots is not None:
                    args += ["--max-slots", str(max_slots)]
                processes.append(await asyncio.create_subprocess_exec(*args))
                paths.append(path)
            connections = [
                await _connect_when_ready(p, proc, ready_timeout, request_timeout)
                for p, proc in zip(paths, processes, strict=True)
            ]
        except BaseException:
            for proc in processes:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            raise
        return cls(connections, processes, placement_store)

    @classmethod
    async def connect(
        cls,
        paths: list[str],
        placement_store: PlacementStore | None = None,
        request_timeout: float = 15.0,
    ) -> MediaPool:
        """Use workers started by someone else (e.g. the ``hearth serve`` supervisor)."""
        pool = cls([], None, placement_store)
        for path in paths:
            conn = await WorkerConnection.open(path, pool._emit, request_timeout)
            pool.workers[path] = conn
        return pool

    async def close(self) -> None:
        """Disconnect; terminate spawned workers (SIGTERM, then SIGKILL after 5 s)."""
        for conn in self.workers.values():
            await conn.close()
        for proc in self._processes:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    async with asyncio.timeout(5):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    # -- events -----------------------------------------------------------------------

    def on_event(self, callback: EventCallback) -> None:
        """Call ``callback(worker_path, event)`` for every Speaking/ParticipantState."""
        self._callbacks.append(callback)

    async def events(self) -> AsyncIterator[tuple[str, ipc.WorkerEvent]]:
        """Iterate events (bounded queue of :data:`EVENT_QUEUE`; oldest dropped)."""
        queue: asyncio.Queue[tuple[str, ipc.WorkerEvent]] = asyncio.Queue(EVENT_QUEUE)
        self._queues.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.remove(queue)

    def _emit(self, path: str, event: ipc.WorkerEvent) -> None:
        for cb in self._callbacks:
            try:
                cb(path, event)
            except Exception:
                log.exception("media event callback failed")
        for q in self._queues:
            if q.full():
                q.get_nowait()
                self.events_dropped += 1
            q.put_nowait((path, event))

    # -- placement --------------------------------------------------------------------

    async def placement(self, room_id: str) -> WorkerConnection:
        """The room's worker if placed, else the least loaded one (and record it)."""
        placed = await self.placement_store.get(room_id)
        if placed is not None:
            conn = self.workers.get(placed)
            if conn is None or not conn.connected:
                raise MediaRequestError("worker_gone", f"room {room_id} is on {placed}")
            return conn
        best: tuple[float, str] | None = None
        for path, conn in self.workers.items():
            if not conn.connected:
                continue
            try:
                stats = await conn.call(ipc.GetStats(id=0))
            except MediaRequestError:
                continue
            assert isinstance(stats, ipc.WorkerStats)
            load = stats.outbound_tracks / max(1, stats.capacity_tracks)
            if best is None or load < best[0]:
                best = (load, path)
        if best is None:
            raise MediaRequestError("worker_gone", "no media worker is reachable")
        if best[0] >= 1.0:
            raise MediaRequestError("capacity", "every media worker is full")
        winner = await self.placement_store.claim(room_id, best[1])
        conn = self.workers.get(winner)
        if conn is None:
            raise MediaRequestError("worker_gone", f"room {room_id} is on {winner}")
        return conn

    # -- requests ---------------------------------------------------------------------

    async def open_room(
        self, room_id: str, mix_listeners_above: int | None = None,
        record_path: str | None = None,
    ) -> ipc.RoomOpened:
        conn = await self.placement(room_id)
        result = await conn.call(ipc.OpenRoom(
            id=0, room_id=room_id, mix_listeners_above=mix_listeners_above,
            record_path=record_path))
        assert isinstance(result, ipc.RoomOpened)
        self._opened.add(room_id)
        return result

    async def join(
        self, room_id: str, participant_id: int, offer_sdp: str,
        can_speak: bool = True, deafened: bool = False,
    ) -> ipc.Answer:
        """Join (opening the room first if this pool has not); ``capacity`` if refused."""
        if room_id not in self._opened:
            await self.open_room(room_id)
        conn = await self.placement(room_id)
        result = await conn.call(ipc.Join(
            id=0, room_id=room_id, participant_id=participant_id, offer_sdp=offer_sdp,
            can_speak=can_speak, deafened=deafened))
        assert isinstance(result, ipc.Answer)
        return result

    async def add_candidate(
        self, room_id: str, participant_id: int, candidate: str,
        sdp_mid: str | None = None, sdp_mline_index: int | None = None,
    ) -> None:
        conn = await self.placement(room_id)
        await conn.call(ipc.AddCandidate(
            id=0, room_id=room_id, participant_id=participant_id, candidate=candidate,
            sdp_mid=sdp_mid, sdp_mline_index=sdp_mline_index))

    async def set_participant(
        self, room_id: str, participant_id: int, can_speak: bool, deafened: bool
    ) -> None:
        conn = await self.placement(room_id)
        await conn.call(ipc.SetParticipant(
            id=0, room_id=room_id, participant_id=participant_id, can_speak=can_speak,
            deafened=deafened))

    async def leave(self, room_id: str, participant_id: int) -> None:
        conn = await self.placement(room_id)
        await conn.call(ipc.Leave(id=0, room_id=room_id, participant_id=participant_id))

    async def close_room(self, room_id: str) -> ipc.RoomClosed:
        """Close the room on its worker and forget its placement."""
        conn = await self.placement(room_id)
        try:
            result = await conn.call(ipc.CloseRoom(id=0, room_id=room_id))
        finally:
            self._opened.discard(room_id)
            await self.placement_store.release(room_id)
        assert isinstance(result, ipc.RoomClosed)
        return result

    async def stats(self) -> dict[str, ipc.WorkerStats]:
        """GetStats of every reachable worker, by socket path."""
        out: dict[str, ipc.WorkerStats] = {}
        for path, conn in self.workers.items():
            with contextlib.suppress(MediaRequestError):
                result = await conn.call(ipc.GetStats(id=0))
                assert isinstance(result, ipc.WorkerStats)
                out[path] = result
        return out


async def _connect_when_ready(
    path: str, proc: asyncio.subprocess.Process, timeout: float, request_timeout: float
) -> WorkerConnection:
    """Poll until the worker's socket accepts (worker start imports aiortc: ~1-2 s)."""
    def ignore(_path: str, _event: ipc.WorkerEvent) -> None:
        return None

    async with asyncio.timeout(timeout):
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"media worker for {path} exited with {proc.returncode}")
            try:
                return await WorkerConnection.open(path, ignore, request_timeout)
            except (FileNotFoundError, ConnectionRefusedError):
                await asyncio.sleep(0.05)
