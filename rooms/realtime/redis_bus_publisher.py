"""The publishing half of one Redis primary: a bounded queue, one task, pipelined writes.

Part of the Redis bus (:mod:`rooms.realtime.redis_bus`, whose docstring describes the
publishing rules: queue bound, time-out, withdrawal, at-least-once around a failure).
Each primary gets one :class:`Publisher`; its task takes everything queued and sends it
as one pipeline on its own connection, so publishes never wait behind subscription
traffic, and a lost connection is reopened with capped back-off while the queue waits.
The wire format is packed here rather than by redis-py, whose generic packing and reply
parsing cost about five times more.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
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
from rooms.realtime.redis_bus_errors import PublishFailed

if TYPE_CHECKING:
    from rooms.realtime.redis_bus import RedisBus

log = logging.getLogger(__name__)


class PublishCall:
    """One publish / publish_many call: resolved when all its messages are accepted."""

    __slots__ = ("deadline", "future", "remaining")

    def __init__(self, future: asyncio.Future[None], remaining: int, deadline: float) -> None:
        self.future = future
        self.remaining = remaining
        self.deadline = deadline

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


Entry = tuple[str, bytes, PublishCall]
"""One queued message: (topic, payload, the call waiting for it)."""


class Publisher:
    """The publisher of one primary (``name``): its queue, its task and its connection."""

    def __init__(self, bus: RedisBus, name: str, kwargs: dict[str, Any]) -> None:
        self.bus = bus
        self.name = name
        self._kwargs = dict(kwargs, client_name="hearth-bus-pub")
        self.queue: deque[Entry] = deque()
        self._wake = asyncio.Event()
        self._ping_waiters: list[asyncio.Future[None]] = []
        self.inflight: list[Entry] = []
        self._failures = 0
        self._first: AbstractConnection | None = None

    async def connect_initial(self) -> None:
        """The connection, now (``start`` fails fast if this raises)."""
        self._first = await open_connection(self._kwargs, self.bus.connect_timeout)

    async def stop(self) -> None:
        """After the task ended: close the first connection if the task never took it,
        and cancel the pings nobody will answer."""
        if self._first is not None:
            await disconnect(self._first)
        self._first = None
        for waiter in self._ping_waiters:
            waiter.cancel()
        self._ping_waiters.clear()

    async def ping(self) -> None:
        """Raises unless the publisher connection answers."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ping_waiters = [w for w in self._ping_waiters if not w.done()]
        self._ping_waiters.append(waiter)
        self._wake.set()
        await waiter

    def wake(self) -> None:
        self._wake.set()

    def take_queue(self) -> list[Entry]:
        entries = list(self.queue)
        self.queue.clear()
        return entries

    def purge_done(self) -> int:
        """Drop queued entries whose caller gave up; returns how many."""
        before = len(self.queue)
        self.queue = deque(e for e in self.queue if not e[2].future.done())
        return before - len(self.queue)

    def expire(self, now: float) -> int:
        """Fail the calls whose deadline passed (in flight or at the head of the queue,
        which is in deadline order) and drop finished calls from the head; returns how
        many queued entries were dropped."""
        for _, _, call in self.inflight:
            if call.deadline <= now:
                call.fail(self.bus.timeout_error())
        dropped = 0
        queue = self.queue
        while queue:
            call = queue[0][2]
            if not call.future.done():
                if call.deadline > now:
                    break
                call.fail(self.bus.timeout_error())
            queue.popleft()
            dropped += 1
        return dropped

    def _take_batch(self) -> list[Entry]:
        batch: list[Entry] = []
        skipped = 0
        queue = self.queue
        limit = self.bus.max_batch
        while queue and len(batch) < limit:
            entry = queue.popleft()
            if entry[2].future.done():
                skipped += 1
            else:
                batch.append(entry)
        if skipped:
            self.bus._settled(skipped)
        return batch

    async def run(self) -> None:
        """The publisher task: one pipeline per round, until cancelled."""
        conn, self._first = self._first, None
        try:
            while True:
                conn = await self._publish_round(conn)
        finally:
            if conn is not None:
                await disconnect(conn)

    async def _publish_round(self, conn: AbstractConnection | None) -> AbstractConnection | None:
        """Wait for work, send one pipeline, settle it; returns the connection to use next
        (None after a failure)."""
        bus = self.bus
        if not self.queue and not self._ping_waiters:
            self._wake.clear()
            await self._wake.wait()
            return conn
        if conn is None:
            try:
                conn = await open_connection(self._kwargs, bus.connect_timeout)
            except CONNECTION_ERRORS as exc:
                self._publish_failed(exc)
                await asyncio.sleep(backoff_delay(self._failures - 1, bus.backoff_base,
                                                  bus.backoff_max))
                return None
        batch = self._take_batch()
        pings, self._ping_waiters = self._ping_waiters, []
        if not batch and not pings:
            return conn
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.inflight = batch
        try:
            async with asyncio.timeout(bus.io_timeout):
                results = await self._pipeline(conn, batch, bool(pings))
        except CONNECTION_ERRORS as exc:
            self.queue.extendleft(reversed(batch))
            await disconnect(conn)
            self._publish_failed(exc, pings)
            await asyncio.sleep(backoff_delay(self._failures - 1, bus.backoff_base,
                                              bus.backoff_max))
            return None
        except asyncio.CancelledError:
            self.queue.extendleft(reversed(batch))
            raise
        except Exception as exc:  # a bug or an unexpected reply: fail, never hang
            log.exception("redis bus %s: publish pipeline failed", self.name)
            await disconnect(conn)
            for _, _, call in batch:
                call.fail(PublishFailed(f"{type(exc).__name__}: {exc}"))
            for waiter in pings:
                if not waiter.done():
                    waiter.set_exception(exc)
            bus.publish_errors += len(batch)
            bus._settled(len(batch))
            await asyncio.sleep(bus.backoff_base)
            return None
        finally:
            self.inflight = []
        if batch:
            bus.last_roundtrip_s = loop.time() - started
            bus.publish_batches += 1
        if self._failures:
            log.warning("redis bus %s: publishing again after %d failed attempt(s)",
                        self.name, self._failures)
            self._failures = 0
            bus.reconnects += 1
        for waiter in pings:
            if not waiter.done():
                waiter.set_result(None)
        self._complete(batch, results)
        return conn

    def _publish_failed(self, exc: BaseException,
                        pings: list[asyncio.Future[None]] | None = None) -> None:
        self._failures += 1
        if self._failures == 1:
            log.warning("redis bus %s: publish failed (%s: %s); %d queued, retrying",
                        self.name, type(exc).__name__, exc, len(self.queue))
        for waiter in (pings or []) + self._ping_waiters:
            if not waiter.done():
                waiter.set_exception(RedisConnectionError(f"publisher: {exc}"))
        self._ping_waiters = []
        if self.bus.sharded and self._failures % 2 == 0:
            self.bus.request_topology_refresh()

    async def _pipeline(self, conn: AbstractConnection, batch: list[Entry],
                        ping: bool) -> list[Any]:
        """One write with a (S)PUBLISH per entry (and a PING), then every reply: the
        wire format of redis-py's ``pipeline(transaction=False)``, packed here because
        redis-py's generic per-command packing and reply parsing cost ~5x more."""
        if not conn.is_connected:
            raise RedisConnectionError("publisher connection closed")
        prefix = self.bus.publish_prefix
        parts: list[bytes] = []
        for topic, payload, _ in batch:
            name = topic.encode()
            parts.append(b"%s$%d\r\n%s\r\n$%d\r\n" % (prefix, len(name), name, len(payload)))
            parts.append(payload)
            parts.append(b"\r\n")
        if ping:
            parts.append(b"*1\r\n$4\r\nPING\r\n")
        await conn.send_packed_command(parts, check_health=False)
        results: list[Any] = []
        for _ in batch:
            try:
                results.append(await conn.read_response())
            except ResponseError as exc:
                results.append(exc)
        if ping:
            await conn.read_response()
        return results

    def _complete(self, batch: list[Entry], results: list[Any]) -> None:
        bus = self.bus
        redirected: list[Entry] = []
        for entry, result in zip(batch, results, strict=True):
            call = entry[2]
            if isinstance(result, Exception):
                if bus.sharded and isinstance(result, REDIRECTS):
                    redirected.append(entry)
                    continue
                bus.publish_errors += 1
                call.fail(PublishFailed(f"Redis refused: {result}"))
                continue
            bus.published += 1
            call.remaining -= 1
            if call.remaining == 0 and not call.future.done():
                call.future.set_result(None)
        bus._settled(len(batch) - len(redirected))
        if redirected:
            bus.redirect(redirected)
