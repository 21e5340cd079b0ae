"""The subscribing half of one Redis primary: its pub/sub connection, listener and resync.

Part of the Redis bus (:mod:`rooms.realtime.redis_bus`, whose docstring describes the
subscription rules and what a reconnect announces). Each primary gets one
:class:`Subscriber` with a dedicated pub/sub connection. ``want`` / ``drop`` only record
the desired set; the connection's writer applies the difference in batched
(S)SUBSCRIBE / (S)UNSUBSCRIBE commands and confirms with a ``PING`` marker, and its
reader hands messages to the bus. When the connection fails the task reconnects with
capped back-off, subscribes the whole desired set again and, once Redis confirmed it,
asks the bus to announce the reconnect (the subscriber missed what was published
meanwhile). Idle connections are health-checked the same way.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from rooms.realtime.redis_bus_connections import (
    CONNECTION_ERRORS,
    REDIRECTS,
    backoff_delay,
    disconnect,
    open_connection,
)
from rooms.realtime.redis_bus_routing import group_topics

if TYPE_CHECKING:
    from rooms.realtime.redis_bus import RedisBus

log = logging.getLogger(__name__)


class Subscriber:
    """The pub/sub connection of one primary (``name``) and the topics routed to it."""

    def __init__(self, bus: RedisBus, name: str, kwargs: dict[str, Any]) -> None:
        self.bus = bus
        self.name = name
        self._kwargs = dict(kwargs, client_name="hearth-bus-sub")
        self.desired: set[str] = set()
        self._applied: set[str] = set()
        self._dirty: set[str] = set()
        self._unsub_acks: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._barriers: list[asyncio.Future[None]] = []
        self._markers: dict[bytes, asyncio.Future[None]] = {}
        self._marker_ids = itertools.count()
        self._last_rx = 0.0
        self._first: AbstractConnection | None = None

    async def connect_initial(self) -> None:
        """The connection, now (``start`` fails fast if this raises)."""
        self._first = await open_connection(self._kwargs, self.bus.connect_timeout)

    async def stop(self) -> None:
        """After the task ended: close the first connection if the task never took it,
        and cancel the barriers nobody will resolve."""
        if self._first is not None:
            await disconnect(self._first)
        self._first = None
        for waiter in self._barriers:
            waiter.cancel()
        self._barriers.clear()

    def want(self, topic: str) -> None:
        self.desired.add(topic)
        self._dirty.add(topic)
        self._wake.set()

    def drop(self, topic: str) -> None:
        self.desired.discard(topic)
        self._dirty.add(topic)
        self._wake.set()

    def barrier(self) -> asyncio.Future[None]:
        """Resolved once every subscription change requested so far is confirmed."""
        self._barriers = [w for w in self._barriers if not w.done()]
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers.append(waiter)
        self._wake.set()
        return waiter

    async def run(self) -> None:
        """The pub/sub task: serve the connection, reconnect when it fails."""
        bus = self.bus
        conn, self._first = self._first, None
        reconnected = False
        failures = 0
        while True:
            if conn is None:
                try:
                    conn = await open_connection(self._kwargs, bus.connect_timeout)
                except CONNECTION_ERRORS as exc:
                    failures += 1
                    if failures == 1:
                        log.warning("redis bus %s: pub/sub connect failed (%s: %s); retrying",
                                    self.name, type(exc).__name__, exc)
                    if bus.sharded and failures % 2 == 0:
                        bus.request_topology_refresh()
                    await asyncio.sleep(backoff_delay(failures, bus.backoff_base,
                                                      bus.backoff_max))
                    continue
            failures = 0
            try:
                await self._serve(conn, reconnected)
            except CONNECTION_ERRORS as exc:
                log.warning("redis bus %s: pub/sub connection lost (%s: %s); reconnecting",
                            self.name, type(exc).__name__, exc)
            except Exception:
                log.exception("redis bus %s: pub/sub connection failed; reconnecting",
                              self.name)
            finally:
                await disconnect(conn)
            conn = None
            reconnected = True
            await asyncio.sleep(backoff_delay(0, bus.backoff_base, bus.backoff_max))

    async def _serve(self, conn: AbstractConnection, reconnected: bool) -> None:
        """Read and write one pub/sub connection until it fails (then raise)."""
        self._applied = set()
        self._dirty = set(self.desired)
        self._unsub_acks = {}
        self._markers = {}
        self._last_rx = asyncio.get_running_loop().time()
        reader = asyncio.create_task(self._read_loop(conn), name=f"redis-bus-read {self.name}")
        writer = asyncio.create_task(self._sync_loop(conn, reconnected),
                                     name=f"redis-bus-sync {self.name}")
        try:
            done, _ = await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            writer.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc
        raise RedisConnectionError("pub/sub loop ended")

    async def _read_loop(self, conn: AbstractConnection) -> None:
        bus = self.bus
        loop = asyncio.get_running_loop()
        while True:
            try:
                reply = await conn.read_response()
            except REDIRECTS as exc:  # SSUBSCRIBE on a primary that lost the slot
                log.info("redis bus %s: %s; refreshing the cluster topology", self.name, exc)
                bus.request_topology_refresh(resync=True)
                continue
            except ResponseError as exc:
                log.warning("redis bus %s: error reply on the pub/sub connection: %s",
                            self.name, exc)
                continue
            self._last_rx = loop.time()
            if isinstance(reply, list) and len(reply) >= 2:
                kind = reply[0]
                if kind == b"message" or kind == b"smessage":
                    bus._deliver(reply[1], reply[2])
                elif kind == b"pong":
                    self._on_pong(reply[1])
                elif kind == b"unsubscribe" or kind == b"sunsubscribe":
                    self._on_unsubscribed(reply[1])
            elif isinstance(reply, bytes):  # PING reply outside subscribed mode
                self._on_pong(reply)

    def _on_pong(self, marker: Any) -> None:
        waiter = self._markers.pop(marker, None) if isinstance(marker, bytes) else None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_unsubscribed(self, raw: Any) -> None:
        if not isinstance(raw, bytes):
            return
        topic = raw.decode("utf-8", "replace")
        pending = self._unsub_acks.get(topic, 0)
        if pending:
            if pending == 1:
                del self._unsub_acks[topic]
            else:
                self._unsub_acks[topic] = pending - 1
            return
        # Server-initiated (cluster: the slot moved away): forget it and re-route.
        if topic in self._applied:
            log.info("redis bus %s: Redis unsubscribed %s (slot moved?)", self.name, topic)
            self._applied.discard(topic)
            self._dirty.add(topic)
            self.bus.request_topology_refresh(resync=True)

    async def _sync_loop(self, conn: AbstractConnection, reconnected: bool) -> None:
        bus = self.bus
        loop = asyncio.get_running_loop()
        announce = reconnected
        while True:
            self._wake.clear()
            await self._apply(conn)
            waiters, self._barriers = self._barriers, []
            if waiters or announce:
                try:
                    await self._confirm(conn)
                except BaseException:
                    self._barriers[:0] = [w for w in waiters if not w.done()]
                    raise
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                if announce:
                    announce = False
                    bus.reconnects += 1
                    log.warning("redis bus %s: pub/sub reconnected, %d topic(s) resubscribed",
                                self.name, len(self._applied))
                    bus._announce_reconnect()
                continue
            try:
                async with asyncio.timeout(bus.health_check_interval):
                    await self._wake.wait()
            except TimeoutError:
                if loop.time() - self._last_rx >= bus.health_check_interval:
                    await self._confirm(conn)

    async def _apply(self, conn: AbstractConnection) -> None:
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        add = [t for t in dirty if t in self.desired and t not in self._applied]
        remove = [t for t in dirty if t not in self.desired and t in self._applied]
        bus = self.bus
        commands = [(bus.subscribe_command, *group) for group in group_topics(add, bus.sharded)]
        commands += [(bus.unsubscribe_command, *group)
                     for group in group_topics(remove, bus.sharded)]
        if not commands:
            return
        try:
            await self._send(conn, commands)
        except BaseException:
            self._dirty |= dirty
            raise
        self._applied.update(add)
        self._applied.difference_update(remove)
        for topic in remove:
            self._unsub_acks[topic] = self._unsub_acks.get(topic, 0) + 1

    async def _send(self, conn: AbstractConnection, commands: list[tuple[Any, ...]]) -> None:
        if not conn.is_connected:  # never let redis-py reconnect this one behind our back
            raise RedisConnectionError("pub/sub connection closed")
        packed = conn.pack_commands(commands)
        async with asyncio.timeout(self.bus.io_timeout):
            await conn.send_packed_command(packed, check_health=False)

    async def _confirm(self, conn: AbstractConnection) -> None:
        """PING through the pub/sub connection and wait for its reply: everything sent
        before it has been processed by Redis, and the connection is alive."""
        marker = b"hearth-bus-%d" % next(self._marker_ids)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._markers[marker] = waiter
        try:
            await self._send(conn, [("PING", marker)])
            async with asyncio.timeout(self.bus.io_timeout):
                await waiter
        finally:
            self._markers.pop(marker, None)

