"""Gateway-side client of the media workers: spawn, connect, place rooms, call them.

Why here and not in the gateway: the gateway only needs "put this room somewhere and
give me an SDP answer"; process management, framing, request ids, timeouts and
placement are one concern. This module does not import aiortc, so the gateway process
stays light.

Who owns the workers: a single ``hearth serve`` process spawns its own
(:meth:`MediaPool.start`); under ``hearth serve --workers N`` the supervisor spawns the
node's workers once and every gateway process :meth:`MediaPool.connect` s to all of
them, so a room is reachable from every process of the node.

Placement: a room lives on exactly one worker for its whole life (its participants must
share one forwarder). The first ``open_room`` picks the least loaded worker of this
node (lowest outbound-tracks / capacity from ``GetStats``) and records
``<instance>@<address>`` in a :class:`PlacementStore`: an in-process dict for one
process, Redis (``voice:room:<id>``, ``SET NX``) when processes or nodes share rooms.
``address`` is the worker's advertised TCP ``host:port`` when it listens on TCP
(``media_listen``), else ``unix://<hostname><socket path>``. A pool reaches a room's
worker through a connection it already has to that instance, else by connecting
lazily to the address (TCP: authenticated with the shared key). A placement is
*stale* (the worker died) when the address refuses connections or now answers with
another instance; a stale placement is replaced (compare-and-delete, so a newer
placement made by someone else is never removed) and the room placed again. A worker
that cannot be reached for another reason (a unix socket of another host, a timeout,
a failed authentication) is an ``unreachable`` error naming the reason: the room is
never silently split over two workers.

Worker death: when a connection closes unexpectedly the pool forgets the rooms it had
placed on that instance, releases their placements unless the same instance answers
again (only the link broke), and calls the :meth:`MediaPool.on_worker_gone` callbacks
with those rooms (the voice service takes their participants out).

Errors: every failure is a :class:`MediaRequestError` with a code from
:data:`protocol.media_ipc.ErrorCodeName` (``capacity`` when admission refuses,
``timeout`` when a worker does not answer within ``request_timeout``, ``worker_gone``
when its connection dropped, ``unreachable``, ``unauthorized``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

import msgspec

from protocol import media_ipc as ipc

log = logging.getLogger("hearth.media.pool")

EVENT_QUEUE = 1024
"""Bound of the :meth:`MediaPool.events` queue; the oldest event is dropped when full."""
CONNECT_TIMEOUT_S = 5.0
"""Connecting to a worker, hello and authentication included."""
RECONNECT_BACKOFF_S = 1.0
"""A worker address that just failed is not tried again before this."""
KEY_ENV = "HEARTH_MEDIA_KEY"
"""How a spawned worker receives the IPC key (hex; see ``rooms/media/worker.py``)."""
UNIX_PREFIX = "unix://"


class MediaRequestError(Exception):
    """A media request failed; ``code`` is an :data:`ipc.ErrorCodeName`."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


EventCallback = Callable[[str, ipc.WorkerEvent], None]
"""``callback(worker_address, event)``; runs on the event loop, must not block."""
GoneCallback = Callable[[str, list[str]], None]
"""``callback(worker_address, room_ids)``: that worker's connection closed; the rooms
this pool had placed there are gone. Runs on the event loop, must not block."""


def worker_command(
    socket_path: str | None, *, parent_pid: int | None = None,
    capacity_tracks: int | None = None, max_slots: int | None = None,
    ice: str = "default", listen: str | None = None, advertise: str | None = None,
    private_candidates: bool = True,
) -> list[str]:
    """The command line of one media worker process (pool and supervisor)."""
    args = [sys.executable, "-m", "rooms.media.worker", "--ice", ice]
    if socket_path is not None:
        args += ["--socket", socket_path]
    if parent_pid is not None:
        args += ["--parent-pid", str(parent_pid)]
    if capacity_tracks is not None:
        args += ["--capacity-tracks", str(capacity_tracks)]
    if max_slots is not None:
        args += ["--max-slots", str(max_slots)]
    if listen is not None:
        args += ["--listen", listen]
    if advertise is not None:
        args += ["--advertise", advertise]
    if not private_candidates:
        args.append("--no-private-candidates")
    return args


WORKER_ENV_NAMES = frozenset({
    "PATH", "PYTHONPATH", "PYTHONHOME", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
    "PYTHONHASHSEED", "PYTHONFAULTHANDLER", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "HOME",
    "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
})
"""Variables a worker inherits from its parent: what the interpreter, its libraries
(PyAV's shared libraries, temp files, locale) need to run. Everything else is dropped."""
WORKER_ENV_PREFIXES = ("LC_",)
"""Locale categories (``LC_ALL``, ``LC_CTYPE``, ...) are inherited too."""


def worker_env(key: bytes | None) -> dict[str, str]:
    """The environment of a spawned worker: an allow-list of ours plus the key.

    Why an allow-list: a worker terminates WebRTC from the internet and parses its
    SDP, RTP and DTLS; it reads nothing from the environment but :data:`KEY_ENV`
    (everything else comes on its command line). The gateway's environment holds
    ``HEARTH_SECRET`` (session signing) and ``HEARTH_DATABASE_URL`` (with its
    password), which a compromised worker must not be able to read from
    ``/proc/self/environ``. The key travels here, not on the command line, which
    every local user can read.
    """
    env = {name: value for name, value in os.environ.items()
           if name in WORKER_ENV_NAMES or name.startswith(WORKER_ENV_PREFIXES)}
    if key is not None:
        env[KEY_ENV] = key.hex()
    return env


def listen_for(listen: str | None, index: int) -> str | None:
    """Worker ``index``'s TCP listen address from ``media_listen`` (``host:port``):
    consecutive ports from ``port``, or any free port for each when it is 0."""
    if listen is None:
        return None
    host, port = ipc.split_host_port(listen)
    return ipc.join_host_port(host, port + index if port else 0)


class WorkerConnection:
    """One IPC connection to a worker: handshake, request ids, replies, events,
    timeouts. ``path`` is the address it was opened with (unix path or host:port)."""

    def __init__(
        self,
        path: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: EventCallback,
        request_timeout: float,
        hello: ipc.WorkerHello | None = None,
    ) -> None:
        self.path = path
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self.request_timeout = request_timeout
        self.instance = hello.instance if hello is not None else ""
        self.advertise = hello.advertise if hello is not None else None
        self.on_close: Callable[[WorkerConnection], None] | None = None
        """Called once when the link ends by itself (not by :meth:`close`)."""
        self._closing = False
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[ipc.MediaOk]] = {}
        self.orphan_errors: list[ipc.MediaError] = []
        """Errors without a request id (e.g. a frame the worker could not read); last 16."""
        self._task = asyncio.create_task(self._read_loop())

    @classmethod
    async def open(
        cls, path: str, on_event: EventCallback, request_timeout: float = 15.0,
        key: bytes | None = None, connect_timeout: float = CONNECT_TIMEOUT_S,
    ) -> WorkerConnection:
        """Connect (unix socket for a path starting with ``/``, else TCP host:port),
        read the worker's hello and, with a key, authenticate both ways.

        A worker that asks for a key we lack, or that does not authenticate when we
        hold one, is refused (``unauthorized``): over TCP we never trust an unproven
        peer, in either direction."""
        async with asyncio.timeout(connect_timeout):
            if path.startswith("/"):
                reader, writer = await asyncio.open_unix_connection(path)
            else:
                host, port = ipc.split_host_port(path)
                reader, writer = await asyncio.open_connection(host, port)
            try:
                hello = await _read_frame(reader, ipc.MAX_PREAUTH_FRAME_BYTES)
                if not isinstance(hello, ipc.WorkerHello):
                    raise MediaRequestError("bad_frame", f"{path} did not say hello")
                if hello.auth_required and key is None:
                    raise MediaRequestError("unauthorized",
                                            f"the worker at {path} requires the IPC key")
                if key is not None:
                    if not hello.auth_required:
                        raise MediaRequestError(
                            "unauthorized", f"the worker at {path} does not authenticate")
                    client_nonce = secrets.token_bytes(ipc.NONCE_BYTES)
                    writer.write(ipc.encode_frame(ipc.Authenticate(
                        id=1, client_nonce=client_nonce,
                        mac=ipc.client_mac(key, hello.nonce, client_nonce))))
                    reply = await _read_frame(reader, ipc.MAX_PREAUTH_FRAME_BYTES)
                    if not (isinstance(reply, ipc.MediaOk)
                            and isinstance(reply.result, ipc.Authenticated)
                            and secrets.compare_digest(
                                reply.result.mac,
                                ipc.worker_mac(key, hello.nonce, client_nonce))):
                        raise MediaRequestError(
                            "unauthorized", f"the worker at {path} refused our key or "
                            "could not prove it holds it")
            except BaseException:
                writer.close()
                raise
        return cls(path, reader, writer, on_event, request_timeout, hello)

    @property
    def connected(self) -> bool:
        return not self._task.done()

    @property
    def placement_value(self) -> str:
        """What the placement store records for a room on this worker."""
        if self.advertise is not None:
            return f"{self.instance}@{self.advertise}"
        return f"{self.instance}@{UNIX_PREFIX}{socket.gethostname()}{self.path}"

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
            if not self._closing and self.on_close is not None:
                try:
                    self.on_close(self)
                except Exception:
                    log.exception("worker close callback failed")

    def _dispatch(self, frame: ipc.WorkerFrame) -> None:
        if isinstance(frame, ipc.WorkerHello):
            return
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
        self._closing = True
        self._writer.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> ipc.WorkerFrame:
    """One frame during the handshake (bounded by ``limit``)."""
    header = await reader.readexactly(ipc.LENGTH_PREFIX.size)
    (length,) = ipc.LENGTH_PREFIX.unpack(header)
    if length > limit:
        raise MediaRequestError("bad_frame", f"{length}-byte handshake frame")
    try:
        return ipc.decode_worker_frame(await reader.readexactly(length))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MediaRequestError("bad_frame", str(exc)) from None


class PlacementStore(Protocol):
    """Where each open room lives (room id -> ``<instance>@<address>``)."""

    async def get(self, room_id: str) -> str | None: ...

    async def claim(self, room_id: str, value: str) -> str:
        """Record ``value`` unless the room is already placed; returns the winner."""

    async def release(self, room_id: str, value: str | None = None) -> None:
        """Forget the room's placement; with ``value``, only if it is still that one
        (a placement someone made since is kept)."""


class LocalPlacement:
    """In-process placement (one gateway process, or no Redis)."""

    def __init__(self) -> None:
        self._rooms: dict[str, str] = {}

    async def get(self, room_id: str) -> str | None:
        return self._rooms.get(room_id)

    async def claim(self, room_id: str, value: str) -> str:
        return self._rooms.setdefault(room_id, value)

    async def release(self, room_id: str, value: str | None = None) -> None:
        if value is None or self._rooms.get(room_id) == value:
            self._rooms.pop(room_id, None)


class RedisLike(Protocol):
    """The commands :class:`RedisPlacement` needs (``redis.asyncio.Redis``)."""

    async def get(self, name: str) -> bytes | str | None: ...

    async def set(self, name: str, value: str, nx: bool = ...) -> bool | None: ...

    async def delete(self, *names: str) -> int: ...

    async def eval(self, script: str, numkeys: int, *keys_and_args: str) -> object: ...


_RELEASE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisPlacement:
    """Shared placement through Redis ``voice:room:<room_id>`` (SET NX; release is a
    compare-and-delete script, so a process that saw a worker die never removes the
    placement another process has just made on a live worker)."""

    def __init__(self, redis: RedisLike, prefix: str = "voice:room:") -> None:
        self._redis = redis
        self._prefix = prefix

    async def get(self, room_id: str) -> str | None:
        value = await self._redis.get(self._prefix + room_id)
        return value.decode() if isinstance(value, bytes) else value

    async def claim(self, room_id: str, value: str) -> str:
        if await self._redis.set(self._prefix + room_id, value, nx=True):
            return value
        winner = await self.get(room_id)
        return winner if winner is not None else value

    async def release(self, room_id: str, value: str | None = None) -> None:
        if value is None:
            await self._redis.delete(self._prefix + room_id)
        else:
            await self._redis.eval(_RELEASE_IF, 1, self._prefix + room_id, value)


class MediaPool:
    """The gateway's handle on the media workers (this node's, and others' on demand)."""

    def __init__(
        self,
        connections: list[WorkerConnection],
        processes: list[asyncio.subprocess.Process] | None = None,
        placement_store: PlacementStore | None = None,
        *,
        addresses: list[str] | None = None,
        key: bytes | None = None,
        request_timeout: float = 15.0,
    ) -> None:
        self.addresses: list[str] = list(
            addresses if addresses is not None else [c.path for c in connections])
        """This node's workers: where new rooms are placed."""
        self.workers: dict[str, WorkerConnection] = {}
        """address -> connection (this node's workers and remote ones reached lazily)."""
        self._processes = processes or []
        self.placement_store: PlacementStore = placement_store or LocalPlacement()
        self.key = key
        self.request_timeout = request_timeout
        self._callbacks: list[EventCallback] = []
        self._gone_callbacks: list[GoneCallback] = []
        self._queues: list[asyncio.Queue[tuple[str, ipc.WorkerEvent]]] = []
        self.events_dropped = 0
        self._rooms: dict[str, str] = {}
        """room id -> placement value, for rooms this pool placed or reached."""
        self._connect_locks: dict[str, asyncio.Lock] = {}
        self._failed_at: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._spawn_args: dict[str, tuple[list[str], dict[str, str]]] = {}
        """address -> how to start its worker again (workers this pool spawned)."""
        for c in connections:
            self._adopt(c)

    def _adopt(self, conn: WorkerConnection) -> None:
        conn._on_event = self._emit
        conn.on_close = self._connection_closed
        self.workers[conn.path] = conn

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
        key: bytes | None = None,
        listen: str | None = None,
        advertise: str | None = None,
        private_candidates: bool = True,
    ) -> MediaPool:
        """Spawn ``n_workers`` worker processes (sockets in ``socket_dir``) and connect.

        Workers get ``--parent-pid`` so they exit when this process dies. With
        ``listen`` (``host:port``; needs ``key``) they also serve other nodes on TCP.
        """
        if n_workers < 1:
            raise ValueError("n_workers must be >= 1")
        if listen is not None and key is None:
            raise ValueError("listening on TCP needs the IPC key")
        await asyncio.to_thread(os.makedirs, socket_dir, exist_ok=True)
        processes: list[asyncio.subprocess.Process] = []
        paths: list[str] = []
        try:
            for i in range(n_workers):
                path = str(Path(socket_dir) / f"media-{os.getpid()}-{i}.sock")
                if len(os.fsencode(path)) > 100:  # sun_path is 108 bytes on Linux
                    raise ValueError(f"socket path too long for AF_UNIX: {path}")
                args = worker_command(path, parent_pid=os.getpid(),
                                      capacity_tracks=capacity_tracks, max_slots=max_slots,
                                      ice=ice, listen=listen_for(listen, i),
                                      advertise=advertise,
                                      private_candidates=private_candidates)
                processes.append(await asyncio.create_subprocess_exec(
                    *args, env=worker_env(key)))
                paths.append(path)
            connections = [
                await _connect_when_ready(p, proc, ready_timeout, request_timeout, key)
                for p, proc in zip(paths, processes, strict=True)
            ]
        except BaseException:
            for proc in processes:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            raise
        pool = cls(connections, processes, placement_store, key=key,
                   request_timeout=request_timeout)
        for i, path in enumerate(paths):
            pool._spawn_args[path] = (
                worker_command(path, parent_pid=os.getpid(), capacity_tracks=capacity_tracks,
                               max_slots=max_slots, ice=ice, listen=listen_for(listen, i),
                               advertise=advertise, private_candidates=private_candidates),
                worker_env(key))
        return pool

    @classmethod
    async def connect(
        cls,
        paths: list[str],
        placement_store: PlacementStore | None = None,
        request_timeout: float = 15.0,
        key: bytes | None = None,
    ) -> MediaPool:
        """Use workers started by someone else (the ``hearth serve`` supervisor). A
        worker not answering yet (starting, restarting) is connected to lazily."""
        pool = cls([], None, placement_store, addresses=paths, key=key,
                   request_timeout=request_timeout)
        for path in paths:
            try:
                await pool._connection(path)
            except (OSError, TimeoutError, MediaRequestError) as exc:
                log.warning("media worker %s not reachable yet: %s", path, exc)
        return pool

    async def close(self) -> None:
        """Disconnect; terminate spawned workers (SIGTERM, then SIGKILL after 5 s)."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self.workers.values()):
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

    # -- connections ----------------------------------------------------------------

    async def _connection(self, address: str) -> WorkerConnection:
        """The live connection to ``address``, opened now if needed (one attempt at a
        time per address). Raises OSError/TimeoutError/MediaRequestError."""
        conn = self.workers.get(address)
        if conn is not None and conn.connected:
            return conn
        lock = self._connect_locks.setdefault(address, asyncio.Lock())
        async with lock:
            conn = self.workers.get(address)
            if conn is not None and conn.connected:
                return conn
            conn = await WorkerConnection.open(address, self._emit, self.request_timeout,
                                               self.key)
            if self._closing:
                await conn.close()
                raise MediaRequestError("worker_gone", "the pool is closing")
            self._adopt(conn)
            return conn

    async def _local_connections(self) -> list[WorkerConnection]:
        """Live connections to this node's workers (a failed one is retried after
        :data:`RECONNECT_BACKOFF_S`, so a dead worker does not slow every join)."""
        now = asyncio.get_running_loop().time()
        out: list[WorkerConnection] = []
        for address in self.addresses:
            conn = self.workers.get(address)
            if conn is not None and conn.connected:
                out.append(conn)
                continue
            if now - self._failed_at.get(address, -1e9) < RECONNECT_BACKOFF_S:
                continue
            try:
                out.append(await self._connection(address))
            except (OSError, TimeoutError, MediaRequestError) as exc:
                self._failed_at[address] = now
                log.warning("media worker %s not reachable: %s", address, exc)
        return out

    async def _resolve(self, value: str) -> WorkerConnection | None:
        """The connection to the worker a placement names; None when that worker is
        dead (its address refuses connections or answers as another instance).
        ``unreachable`` when it cannot be told (another host's unix socket, timeout,
        authentication)."""
        instance, _, address = value.partition("@")
        for conn in self.workers.values():
            if conn.connected and conn.instance == instance:
                return conn
        if address.startswith(UNIX_PREFIX):
            host, slash, path = address.removeprefix(UNIX_PREFIX).partition("/")
            if host != socket.gethostname():
                raise MediaRequestError(
                    "unreachable", f"the room's media worker is on node {host!r} and "
                    "listens on a unix socket only (set media_listen on every node)")
            address = slash + path
        try:
            conn = await self._connection(address)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        except (OSError, TimeoutError, ValueError) as exc:
            raise MediaRequestError(
                "unreachable", f"the room's media worker at {address} cannot be reached: "
                f"{exc or type(exc).__name__}") from exc
        except MediaRequestError as exc:
            raise MediaRequestError(
                "unreachable", f"the room's media worker at {address}: {exc}") from exc
        return conn if conn.instance == instance else None

    def _connection_closed(self, conn: WorkerConnection) -> None:
        """A worker link ended by itself: forget its rooms now, then find out whether
        the worker died (release the placements) or only the link broke."""
        if self._closing:
            return
        if self.workers.get(conn.path) is conn:
            del self.workers[conn.path]
        rooms = {r: v for r, v in self._rooms.items()
                 if v.partition("@")[0] == conn.instance}
        for room_id in rooms:
            del self._rooms[room_id]
        log.warning("media worker %s (%s) is gone; %d rooms affected", conn.path,
                    conn.instance, len(rooms))
        task = asyncio.get_running_loop().create_task(self._worker_gone(conn, rooms))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _worker_gone(self, conn: WorkerConnection, rooms: dict[str, str]) -> None:
        alive = False
        await self._respawn(conn.path)
        with contextlib.suppress(OSError, TimeoutError, MediaRequestError):
            again = await self._connection(conn.path)
            alive = again.instance == conn.instance
        if not alive:
            for room_id, value in rooms.items():
                try:
                    await self.placement_store.release(room_id, value)
                except Exception as exc:
                    log.warning("placement of room %s not released: %s", room_id, exc)
        for cb in self._gone_callbacks:
            try:
                cb(conn.path, list(rooms))
            except Exception:
                log.exception("worker gone callback failed")

    async def _respawn(self, address: str) -> None:
        """Start a worker this pool spawned again once its process has exited (the
        supervisor does this for ``--workers N``; here for a single process). The new
        one is reached lazily, on the next placement."""
        spawn = self._spawn_args.get(address)
        if spawn is None:
            return
        index = self.addresses.index(address)
        proc = self._processes[index]
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            return  # alive: only the link broke
        log.warning("media worker %s (pid %d) exited with %s; starting it again", address,
                    proc.pid, proc.returncode)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)
        args, env = spawn
        self._processes[index] = await asyncio.create_subprocess_exec(*args, env=env)

    # -- events -----------------------------------------------------------------------

    def on_event(self, callback: EventCallback) -> None:
        """Call ``callback(worker_path, event)`` for every Speaking/ParticipantState."""
        self._callbacks.append(callback)

    def on_worker_gone(self, callback: GoneCallback) -> None:
        """Call ``callback(worker_address, room_ids)`` when a worker's link ends."""
        self._gone_callbacks.append(callback)

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

    async def placement(self, room_id: str, create: bool = True) -> WorkerConnection:
        """The room's worker if placed, else (``create``) the least loaded worker of
        this node, recorded. Without ``create`` an unplaced room is ``unknown_room``."""
        for _ in range(4):
            placed = await self.placement_store.get(room_id)
            if placed is not None:
                conn = await self._resolve(placed)
                if conn is not None:
                    self._rooms[room_id] = placed
                    return conn
                log.warning("room %s was on a dead media worker (%s); placing it again",
                            room_id, placed)
                await self.placement_store.release(room_id, placed)
                self._rooms.pop(room_id, None)
                if not create:
                    break
                continue
            if not create:
                break
            conn = await self._least_loaded()
            value = conn.placement_value
            if await self.placement_store.claim(room_id, value) == value:
                self._rooms[room_id] = value
                return conn
        if not create:
            raise MediaRequestError("unknown_room", f"room {room_id} is not open")
        raise MediaRequestError("worker_gone", f"room {room_id}: placement kept changing")

    async def _least_loaded(self) -> WorkerConnection:
        best: tuple[float, WorkerConnection] | None = None
        for conn in await self._local_connections():
            try:
                stats = await conn.call(ipc.GetStats(id=0))
            except MediaRequestError:
                continue
            assert isinstance(stats, ipc.WorkerStats)
            load = stats.outbound_tracks / max(1, stats.capacity_tracks)
            if best is None or load < best[0]:
                best = (load, conn)
        if best is None:
            raise MediaRequestError("worker_gone", "no media worker is reachable")
        if best[0] >= 1.0:
            raise MediaRequestError("capacity", "every media worker is full")
        return best[1]

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
        return result

    async def join(
        self, room_id: str, participant_id: int, offer_sdp: str,
        can_speak: bool = True, deafened: bool = False,
    ) -> ipc.Answer:
        """Join, opening the room first when its worker does not have it (never
        opened, or closed by another process meanwhile); ``capacity`` if refused."""
        request = ipc.Join(id=0, room_id=room_id, participant_id=participant_id,
                           offer_sdp=offer_sdp, can_speak=can_speak, deafened=deafened)
        try:
            conn = await self.placement(room_id, create=False)
            result = await conn.call(request)
        except MediaRequestError as exc:
            if exc.code != "unknown_room":
                raise
            await self.open_room(room_id)
            conn = await self.placement(room_id, create=False)
            result = await conn.call(request)
        assert isinstance(result, ipc.Answer)
        return result

    async def add_candidate(
        self, room_id: str, participant_id: int, candidate: str,
        sdp_mid: str | None = None, sdp_mline_index: int | None = None,
    ) -> None:
        conn = await self.placement(room_id, create=False)
        await conn.call(ipc.AddCandidate(
            id=0, room_id=room_id, participant_id=participant_id, candidate=candidate,
            sdp_mid=sdp_mid, sdp_mline_index=sdp_mline_index))

    async def set_participant(
        self, room_id: str, participant_id: int, can_speak: bool, deafened: bool
    ) -> None:
        conn = await self.placement(room_id, create=False)
        await conn.call(ipc.SetParticipant(
            id=0, room_id=room_id, participant_id=participant_id, can_speak=can_speak,
            deafened=deafened))

    async def leave(self, room_id: str, participant_id: int) -> None:
        conn = await self.placement(room_id, create=False)
        await conn.call(ipc.Leave(id=0, room_id=room_id, participant_id=participant_id))

    async def close_room(self, room_id: str) -> ipc.RoomClosed:
        """Close the room on its worker and forget its placement (a room that is not
        placed anywhere is already closed)."""
        try:
            conn = await self.placement(room_id, create=False)
        except MediaRequestError as exc:
            if exc.code == "unknown_room":
                return ipc.RoomClosed()
            raise
        value = self._rooms.get(room_id)
        try:
            result = await conn.call(ipc.CloseRoom(id=0, room_id=room_id))
        except MediaRequestError as exc:
            if exc.code != "unknown_room":
                raise
            result = ipc.RoomClosed()
        finally:
            self._rooms.pop(room_id, None)
            await self.placement_store.release(room_id, value)
        assert isinstance(result, ipc.RoomClosed)
        return result

    async def stats(self) -> dict[str, ipc.WorkerStats]:
        """GetStats of every reachable worker of this node, by address."""
        out: dict[str, ipc.WorkerStats] = {}
        for conn in await self._local_connections():
            with contextlib.suppress(MediaRequestError):
                result = await conn.call(ipc.GetStats(id=0))
                assert isinstance(result, ipc.WorkerStats)
                out[conn.path] = result
        return out


async def _connect_when_ready(
    path: str, proc: asyncio.subprocess.Process, timeout: float, request_timeout: float,
    key: bytes | None = None,
) -> WorkerConnection:
    """Poll until the worker's socket accepts (worker start imports aiortc: ~1-2 s)."""
    def ignore(_path: str, _event: ipc.WorkerEvent) -> None:
        return None

    async with asyncio.timeout(timeout):
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"media worker for {path} exited with {proc.returncode}")
            try:
                return await WorkerConnection.open(path, ignore, request_timeout, key)
            except (FileNotFoundError, ConnectionRefusedError):
                await asyncio.sleep(0.05)
