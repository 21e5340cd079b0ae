"""The Redis bus: fan-out between gateway processes and nodes (``HEARTH_REDIS_URL``).

Implements :class:`rooms.realtime.bus.Bus` on Redis pub/sub with redis-py's asyncio client
(hiredis parser). Everything here is a wake-up, not the record: PostgreSQL is the record
and per-channel sequence numbers let a receiver see a gap and catch up.

Connections
    Per Redis primary ("shard") the bus keeps exactly two connections: one that publishes
    and one dedicated pub/sub connection. A topic lives on exactly one shard, so a
    process receives one copy of a message per topic however many local sessions want
    it. Both connections speak RESP2 with ``decode_responses=False``: topics are decoded
    to ``str``, payloads stay ``bytes``.

Publishing (pipelined)
    :meth:`RedisBus.publish` and :meth:`RedisBus.publish_many` append to a bounded
    outgoing queue (``max_pending_publishes`` messages in total, queued plus in flight)
    and wait. One publisher task per shard takes everything queued (up to
    ``max_batch``) and sends it as one pipeline: one ``PUBLISH`` per message, no
    ``MULTI``. (These are the bytes redis-py's ``pipeline(transaction=False)`` sends,
    packed here because redis-py's generic packing and reply parsing cost about five
    times more.) New publishes accumulate meanwhile for the next round-trip: natural
    batching, order preserved per shard, hence per topic. A publish returns only once
    Redis replied to its pipeline, so a caller that got no exception knows the event left
    the process. A full queue raises :class:`BusOverloaded` at once; a publish not
    accepted within ``publish_timeout`` raises :class:`PublishTimeout` and is withdrawn
    (not sent later, unless it was already on the wire); a reply error (ACL, ...) raises
    :class:`PublishFailed`; :meth:`RedisBus.close` fails what it could not send with
    :class:`BusClosed`.

Subscribing
    :meth:`RedisBus.subscribe` / :meth:`RedisBus.unsubscribe` are synchronous: they
    record the desired set, and the shard's pub/sub task applies the difference with
    batched ``SUBSCRIBE`` / ``UNSUBSCRIBE`` commands (one write). A listener task reads
    the connection and calls the handler with ``(topic, payload)``; it never awaits the
    handler and survives a handler that raises. A message for a topic the process no
    longer wants (unsubscribed locally, Redis not yet told) is not handed on, so
    ``unsubscribe`` takes effect at once for the handler; ``subscribe`` takes effect
    when Redis has processed it. :meth:`RedisBus.sync_subscriptions` waits for that: a
    ``PING`` through the pub/sub connection after the commands.

Several plain primaries
    Pass several URLs (a list, or one string with commas): each topic goes to primary
    ``crc32(topic) % n``, with its own publisher and pub/sub connection. Every process
    must list the same primaries in the same order; changing the list is a restart of
    every process (no rebalancing).

Redis Cluster (sharded pub/sub)
    ``mode="sharded"``, or ``mode="auto"`` (the default) when a seed answers ``INFO
    cluster`` with ``cluster_enabled:1``. The URLs are then seed nodes. The bus reads
    ``CLUSTER SLOTS``, keeps one publisher and one pub/sub connection per primary and
    uses ``SPUBLISH`` / ``SSUBSCRIBE`` / ``SUNSUBSCRIBE`` (Redis >= 7.0) routed by hash
    slot (one ``SSUBSCRIBE`` per slot, all in one write). The routing is done here
    rather than with redis-py's asyncio ``ClusterPubSub``, which subscribes one channel
    per round-trip and polls the nodes round-robin for messages. A ``MOVED`` / ``ASK`` /
    ``CLUSTERDOWN`` / ``TRYAGAIN`` reply to a publish, a server-initiated
    ``sunsubscribe`` (slot migrated) or a primary that stays unreachable triggers a
    topology refresh; queued publishes and subscriptions move to the new owner and
    ``on_reconnect`` fires once the moved subscriptions are confirmed. Replicas are not
    used (pub/sub goes to primaries).

Failures (lossy by design, self-healing)
    When a connection drops (Redis restart, network) its task reconnects with capped
    exponential back-off and jitter (``backoff_base`` doubling up to ``backoff_max``).
    The pub/sub task then subscribes the full desired set again, waits for Redis to
    confirm it, and calls ``on_reconnect()`` once: the hub catches up from PostgreSQL by
    sequence number, since messages published while the subscriber was away are gone
    (that is Redis pub/sub). Publishes made meanwhile wait in the bounded queue and go
    out after the reconnect, or fail with :class:`PublishTimeout`; none vanishes
    without its caller knowing. An idle pub/sub connection is checked with a ``PING``
    every ``health_check_interval`` seconds and replaced when the reply takes longer
    than ``io_timeout`` (a hung Redis); a pipeline waits at most ``io_timeout``.

Limitations
    * At-least-once around a failure: a pipeline that was on the wire when its
      connection failed (or timed out) is sent again after reconnecting, so a message
      can, in that window only, reach a subscriber twice. Receivers drop sequence
      numbers they have already seen.
    * ``publish_many`` is not atomic: when it raises, some of its messages may have
      been published. Order is kept per topic, not across topics on different shards.
    * A slow subscriber is disconnected by Redis when its pub/sub output buffer passes
      ``client-output-buffer-limit pubsub`` (32 MB by default); the bus reconnects and
      announces it like any other loss.
    * Both connections speak RESP2, and the bus sets its own timeouts, keep-alive and
      (no) retries whatever the URL's query string says.

Metrics
    Attributes ``published`` (messages Redis accepted), ``received`` (handed to the
    handler), ``reconnects`` (publisher or pub/sub connections re-established after a
    loss), ``publish_batches`` (pipelines), ``last_roundtrip_s`` (the last pipeline),
    plus ``publish_errors``, ``publish_rejected`` (``BusOverloaded``),
    ``topology_refreshes`` and the properties ``pending_publishes`` (queue depth) and
    ``subscriptions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import re
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rooms.realtime.bus import Bus

log = logging.getLogger(__name__)

Mode = Literal["auto", "plain", "sharded"]

_CLUSTER_SLOTS = 16384
_SUBSCRIBE_CHUNK = 1000
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, TimeoutError, OSError,
)
_CONNECTION_OR_REPLY_ERRORS: tuple[type[BaseException], ...] = (*_CONNECTION_ERRORS, ResponseError)
_REDIRECTS: tuple[type[BaseException], ...] = (AskError, ClusterDownError, TryAgainError)
"""Replies that mean "this primary does not own the slot (now)": AskError covers MOVED."""


# ------------------------------------------------------------------------------ errors


class BusError(Exception):
    """Base class of the Redis bus's errors."""


class BusUnavailable(BusError):
    """Redis could not be reached (at start) or is not what the configuration says."""


class BusOverloaded(BusError):
    """The outgoing queue is full (``max_pending_publishes``); nothing was queued."""


class PublishTimeout(BusError, TimeoutError):
    """Redis did not accept the publish within ``publish_timeout``; it was withdrawn
    unless already on the wire (then it may or may not have been delivered)."""


class PublishFailed(BusError):
    """Redis refused the publish (for example an ACL error)."""


class BusClosed(BusError):
    """The bus is not started, or was closed before the publish went out."""


# ----------------------------------------------------------------------------- helpers


def split_urls(value: str | Sequence[str]) -> list[str]:
    """``"redis://a:6379, redis://b:6379"`` (or a list) -> one URL per primary/seed."""
    parts = re.split(r"[,\s]+", value) if isinstance(value, str) else list(value)
    urls = [part.strip() for part in parts if part.strip()]
    if not urls:
        raise ValueError("no Redis URL given (HEARTH_REDIS_URL)")
    return urls


def redact_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query,
                       parts.fragment))


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Capped exponential back-off with jitter ("equal jitter": half fixed, half random)."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 30))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _connection_kwargs(url: str, connect_timeout: float, name: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(parse_url(url))
    kwargs.update(
        protocol=2,                 # pub/sub frames are plain arrays
        decode_responses=False,     # payloads stay bytes
        socket_timeout=None,        # timeouts are applied here, per operation
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),  # no hidden retries: this module decides
        health_check_interval=0,
        client_name=name,
    )
    if kwargs.get("connection_class") is not UnixDomainSocketConnection:
        kwargs["socket_keepalive"] = True
    return kwargs


def _new_connection(kwargs: dict[str, Any]) -> AbstractConnection:
    options = dict(kwargs)
    cls: type[AbstractConnection] = options.pop("connection_class", Connection)
    return cls(**options)


async def _disconnect(conn: AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.disconnect(nowait=True)


class _Call:
    """One publish / publish_many call: resolved when all its messages are accepted."""

    __slots__ = ("deadline", "future", "remaining")

    def __init__(self, future: asyncio.Future[None], remaining: int, deadline: float) -> None:
        self.future = future
        self.remaining = remaining
        self.deadline = deadline

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


_Entry = tuple[str, bytes, _Call]


# ------------------------------------------------------------------------------ shard


class _Shard:
    """One Redis primary: a publisher task with its queue, a pub/sub connection with the
    topics routed here, and the tasks serving them."""

    def __init__(self, bus: RedisBus, name: str, kwargs: dict[str, Any]) -> None:
        self.bus = bus
        self.name = name
        self.kwargs = kwargs
        self._pub_kwargs = dict(kwargs, client_name="hearth-bus-pub")
        self._sub_kwargs = dict(kwargs, client_name="hearth-bus-sub")
        # publishing
        self.queue: deque[_Entry] = deque()
        self.pub_wake = asyncio.Event()
        self._ping_waiters: list[asyncio.Future[None]] = []
        self.inflight: list[_Entry] = []
        self._pub_failures = 0
        self._first_pub: AbstractConnection | None = None
        # subscribing
        self.desired: set[str] = set()
        self._applied: set[str] = set()
        self._dirty: set[str] = set()
        self._unsub_acks: dict[str, int] = {}
        self.sub_wake = asyncio.Event()
        self._barriers: list[asyncio.Future[None]] = []
        self._markers: dict[bytes, asyncio.Future[None]] = {}
        self._marker_ids = itertools.count()
        self._last_rx = 0.0
        self._first_sub: AbstractConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ---------------------------------------------------------------------- lifecycle

    async def connect_initial(self) -> None:
        """Both connections, now (``start`` fails fast if this raises)."""
        self._first_pub = await self._open(self._pub_kwargs)
        self._first_sub = await self._open(self._sub_kwargs)

    def start_tasks(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run_publisher(), name=f"redis-bus-pub {self.name}"),
            asyncio.create_task(self._run_pubsub(), name=f"redis-bus-sub {self.name}"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for conn in (self._first_pub, self._first_sub):
            if conn is not None:
                await _disconnect(conn)
        self._first_pub = self._first_sub = None
        for waiter in self._barriers + self._ping_waiters:
            waiter.cancel()
        self._barriers.clear()
        self._ping_waiters.clear()

    async def ping(self) -> None:
        """Raises unless the publisher connection and the pub/sub connection answer."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ping_waiters = [w for w in self._ping_waiters if not w.done()]
        self._ping_waiters.append(waiter)
        self.pub_wake.set()
        await waiter
        await self.barrier()

    async def _open(self, kwargs: dict[str, Any]) -> AbstractConnection:
        conn = _new_connection(kwargs)
        try:
            async with asyncio.timeout(self.bus.connect_timeout):
                await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await _disconnect(conn)
            raise
        return conn

    # ----------------------------------------------------------------------- publishing

    def wake_publisher(self) -> None:
        self.pub_wake.set()

    def take_queue(self) -> list[_Entry]:
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

    def _take_batch(self) -> list[_Entry]:
        batch: list[_Entry] = []
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

    async def _run_publisher(self) -> None:
        conn, self._first_pub = self._first_pub, None
        try:
            while True:
                conn = await self._publish_round(conn)
        finally:
            if conn is not None:
                await _disconnect(conn)

    async def _publish_round(self, conn: AbstractConnection | None) -> AbstractConnection | None:
        """Wait for work, send one pipeline, settle it; returns the connection to use next
        (None after a failure)."""
        bus = self.bus
        if not self.queue and not self._ping_waiters:
            self.pub_wake.clear()
            await self.pub_wake.wait()
            return conn
        if conn is None:
            try:
                conn = await self._open(self._pub_kwargs)
            except _CONNECTION_ERRORS as exc:
                self._publish_failed(exc)
                await asyncio.sleep(backoff_delay(self._pub_failures - 1, bus.backoff_base,
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
        except _CONNECTION_ERRORS as exc:
            self.queue.extendleft(reversed(batch))
            await _disconnect(conn)
            self._publish_failed(exc, pings)
            await asyncio.sleep(backoff_delay(self._pub_failures - 1, bus.backoff_base,
                                              bus.backoff_max))
            return None
        except asyncio.CancelledError:
            self.queue.extendleft(reversed(batch))
            raise
        except Exception as exc:  # a bug or an unexpected reply: fail, never hang
            log.exception("redis bus %s: publish pipeline failed", self.name)
            await _disconnect(conn)
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
        if self._pub_failures:
            log.warning("redis bus %s: publishing again after %d failed attempt(s)",
                        self.name, self._pub_failures)
            self._pub_failures = 0
            bus.reconnects += 1
        for waiter in pings:
            if not waiter.done():
                waiter.set_result(None)
        self._complete(batch, results)
        return conn

    def _publish_failed(self, exc: BaseException,
                        pings: list[asyncio.Future[None]] | None = None) -> None:
        self._pub_failures += 1
        if self._pub_failures == 1:
            log.warning("redis bus %s: publish failed (%s: %s); %d queued, retrying",
                        self.name, type(exc).__name__, exc, len(self.queue))
        for waiter in (pings or []) + self._ping_waiters:
            if not waiter.done():
                waiter.set_exception(RedisConnectionError(f"publisher: {exc}"))
        self._ping_waiters = []
        if self.bus.sharded and self._pub_failures % 2 == 0:
            self.bus.request_topology_refresh()

    async def _pipeline(self, conn: AbstractConnection, batch: list[_Entry],
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

    def _complete(self, batch: list[_Entry], results: list[Any]) -> None:
        bus = self.bus
        redirected: list[_Entry] = []
        for entry, result in zip(batch, results, strict=True):
            call = entry[2]
            if isinstance(result, Exception):
                if bus.sharded and isinstance(result, _REDIRECTS):
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

    # ---------------------------------------------------------------------- subscribing

    def want(self, topic: str) -> None:
        self.desired.add(topic)
        self._dirty.add(topic)
        self.sub_wake.set()

    def drop(self, topic: str) -> None:
        self.desired.discard(topic)
        self._dirty.add(topic)
        self.sub_wake.set()

    def barrier(self) -> asyncio.Future[None]:
        """Resolved once every subscription change requested so far is confirmed."""
        self._barriers = [w for w in self._barriers if not w.done()]
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers.append(waiter)
        self.sub_wake.set()
        return waiter

    async def _run_pubsub(self) -> None:
        bus = self.bus
        conn, self._first_sub = self._first_sub, None
        reconnected = False
        failures = 0
        while True:
            if conn is None:
                try:
                    conn = await self._open(self._sub_kwargs)
                except _CONNECTION_ERRORS as exc:
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
            except _CONNECTION_ERRORS as exc:
                log.warning("redis bus %s: pub/sub connection lost (%s: %s); reconnecting",
                            self.name, type(exc).__name__, exc)
            except Exception:
                log.exception("redis bus %s: pub/sub connection failed; reconnecting",
                              self.name)
            finally:
                await _disconnect(conn)
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
            except _REDIRECTS as exc:  # SSUBSCRIBE on a primary that lost the slot
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
            self.sub_wake.clear()
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
                    await self.sub_wake.wait()
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
        commands = [(bus.subscribe_command, *group) for group in bus.group_topics(add)]
        commands += [(bus.unsubscribe_command, *group) for group in bus.group_topics(remove)]
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


# -------------------------------------------------------------------------------- bus


class RedisBus(Bus):
    """The bus over Redis pub/sub; see the module docstring.

    ``url``: one Redis URL, several (a list or a comma-separated string: plain primaries
    to hash topics across, or seed nodes of a Redis Cluster). ``on_reconnect`` is called
    (synchronously, on the event loop) once after each resubscription that followed a
    lost pub/sub connection or a cluster slot move: the time to catch up from the
    record.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        on_reconnect: Callable[[], None] | None = None,
        max_pending_publishes: int = 100_000,
        publish_timeout: float | None = 5.0,
        mode: Mode = "auto",
        max_batch: int = 1000,
        connect_timeout: float = 3.0,
        io_timeout: float = 5.0,
        health_check_interval: float = 5.0,
        backoff_base: float = 0.1,
        backoff_max: float = 2.0,
        close_timeout: float = 2.0,
        ping_timeout: float = 2.0,
    ) -> None:
        super().__init__()
        if mode not in ("auto", "plain", "sharded"):
            raise ValueError(f"mode must be 'auto', 'plain' or 'sharded', not {mode!r}")
        if max_pending_publishes < 1 or max_batch < 1:
            raise ValueError("max_pending_publishes and max_batch must be positive")
        self.urls = split_urls(url)
        self.on_reconnect = on_reconnect
        self.max_pending_publishes = max_pending_publishes
        self.publish_timeout = publish_timeout
        self.mode: Mode = mode
        self.max_batch = max_batch
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.health_check_interval = health_check_interval
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.close_timeout = close_timeout
        self.ping_timeout = ping_timeout
        # counters (metrics)
        self.published = 0
        self.received = 0
        self.reconnects = 0
        self.publish_batches = 0
        self.last_roundtrip_s = 0.0
        self.publish_errors = 0
        self.publish_rejected = 0
        self.topology_refreshes = 0
        # state
        self.sharded = False
        self.publish_prefix = b"*3\r\n$7\r\nPUBLISH\r\n"
        self.subscribe_command = "SUBSCRIBE"
        self.unsubscribe_command = "UNSUBSCRIBE"
        self._desired: set[str] = set()
        self._shards: dict[str, _Shard] = {}
        self._retiring: list[_Shard] = []
        self._ring: list[_Shard] = []
        self._slot_owner: list[str] = []
        self._topic_shard: dict[str, _Shard] = {}
        self._seed_kwargs: list[dict[str, Any]] = []
        self._pending = 0
        self._drained: asyncio.Event | None = None
        self._busy: asyncio.Event | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self._redirected: list[_Entry] = []
        self._topology_wake: asyncio.Event | None = None
        self._resync_needed = False
        self._topology_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    # -------------------------------------------------------------------- properties

    @property
    def pending_publishes(self) -> int:
        """Messages queued or in flight (the outgoing queue depth)."""
        return self._pending

    @property
    def subscriptions(self) -> int:
        """Topics this process wants."""
        return len(self._desired)

    # --------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("RedisBus.start() called twice")
        self._started = True
        self._drained = asyncio.Event()
        self._drained.set()
        self._busy = asyncio.Event()
        self._topology_wake = asyncio.Event()
        where = ", ".join(redact_url(u) for u in self.urls)
        try:
            self._seed_kwargs = [_connection_kwargs(u, self.connect_timeout, "hearth-bus")
                                 for u in self.urls]
            await self._choose_mode()
            if self.sharded:
                owners, nodes = await self._fetch_cluster_slots()
                self._slot_owner = owners
                for name, kwargs in nodes.items():
                    self._shards[name] = _Shard(self, name, kwargs)
            else:
                for i, kwargs in enumerate(self._seed_kwargs):
                    shard = _Shard(self, f"{i}:{redact_url(self.urls[i])}", kwargs)
                    self._shards[shard.name] = shard
                    self._ring.append(shard)
            await asyncio.gather(*(s.connect_initial() for s in self._shards.values()))
        except BaseException as exc:
            await self._stop_shards()
            self._closed = True
            if isinstance(exc, RedisError | OSError | TimeoutError | ValueError):
                raise BusUnavailable(
                    f"cannot use the Redis bus at {where} (HEARTH_REDIS_URL): "
                    f"{type(exc).__name__}: {exc}") from exc
            raise
        for topic in self._desired:
            shard = self._route(topic)
            self._topic_shard[topic] = shard
            shard.want(topic)
        for shard in self._shards.values():
            shard.start_tasks()
        if self.sharded:
            self._topology_task = asyncio.create_task(self._run_topology(),
                                                      name="redis-bus-topology")
        if self.publish_timeout is not None:
            self._expiry_task = asyncio.create_task(self._run_expiry(),
                                                    name="redis-bus-expiry")
        log.info("redis bus started: %s mode, %d primar%s", "sharded" if self.sharded else
                 "plain", len(self._shards), "y" if len(self._shards) == 1 else "ies")
        if self._desired:
            await self.sync_subscriptions()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pending and self._drained is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.close_timeout):
                    await self._drained.wait()
        for task in (self._topology_task, self._expiry_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._topology_task = self._expiry_task = None
        await self._stop_shards()
        leftovers = self._redirected
        self._redirected = []
        for shard in self._shards.values():
            leftovers += shard.take_queue()
        for _, _, call in leftovers:
            call.fail(BusClosed("the Redis bus closed before this publish went out"))
        self._settled(self._pending)
        self._shards.clear()
        self._ring.clear()
        self._topic_shard.clear()

    async def _stop_shards(self) -> None:
        shards = [*self._shards.values(), *self._retiring]
        await asyncio.gather(*(s.stop() for s in shards), return_exceptions=True)
        for shard in self._retiring:
            self._redirected += shard.take_queue()
        self._retiring.clear()

    async def ping(self) -> bool:
        """True when every primary's publisher and pub/sub connections answer within
        ``ping_timeout``."""
        if not self._started or self._closed or not self._shards:
            return False
        try:
            async with asyncio.timeout(self.ping_timeout):
                for shard in list(self._shards.values()):
                    await shard.ping()
        except (RedisError, OSError, TimeoutError):
            return False
        return True

    # -------------------------------------------------------------------- publishing

    async def publish(self, topic: str, payload: bytes) -> None:
        await self._wait(self._enqueue(((topic, payload),), 1))

    async def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        """Publish several messages; per-topic order is kept. Not atomic: if it raises,
        some of the messages may have been published."""
        if items:
            await self._wait(self._enqueue(items, len(items)))

    def _enqueue(self, items: Iterable[tuple[str, bytes]], count: int) -> _Call:
        if not self._started or self._closed:
            raise BusClosed("the Redis bus is not running")
        if self._pending + count > self.max_pending_publishes:
            self._settled(sum(s.purge_done() for s in self._shards.values()))
            if self._pending + count > self.max_pending_publishes:
                self.publish_rejected += count
                raise BusOverloaded(
                    f"Redis bus outgoing queue full ({self._pending} pending, "
                    f"max_pending_publishes={self.max_pending_publishes}); is Redis down?")
        loop = asyncio.get_running_loop()
        timeout = self.publish_timeout
        call = _Call(loop.create_future(), count,
                     loop.time() + timeout if timeout is not None else math.inf)
        if len(self._shards) == 1 and not self.sharded:
            shard = self._ring[0]
            shard.queue.extend((topic, payload, call) for topic, payload in items)
            shard.wake_publisher()
        else:
            touched: set[_Shard] = set()
            for topic, payload in items:
                shard = self._route(topic)
                shard.queue.append((topic, payload, call))
                touched.add(shard)
            for shard in touched:
                shard.wake_publisher()
        self._pending += count
        if self._drained is not None and self._busy is not None:
            self._drained.clear()
            self._busy.set()
        return call

    async def _wait(self, call: _Call) -> None:
        # No timer per call: the expiry task fails calls past their deadline (cheaper
        # than asyncio.timeout for every publish). A cancelled caller cancels the future,
        # and the publisher skips what nobody waits for.
        await call.future

    def timeout_error(self) -> PublishTimeout:
        return PublishTimeout(f"Redis did not accept the publish within "
                              f"{self.publish_timeout} s ({self._pending} pending)")

    async def _run_expiry(self) -> None:
        """While publishes are pending, fail those past ``publish_timeout`` (checked every
        ``publish_timeout / 10``, at most every 0.1 s)."""
        assert self._busy is not None and self.publish_timeout is not None
        loop = asyncio.get_running_loop()
        tick = min(0.1, self.publish_timeout / 10)
        while True:
            await self._busy.wait()
            await asyncio.sleep(tick)
            now = loop.time()
            dropped = sum(s.expire(now) for s in list(self._shards.values()))
            for _, _, call in self._redirected:
                if call.deadline <= now:
                    call.fail(self.timeout_error())
            self._settled(dropped)

    def _settled(self, count: int) -> None:
        self._pending -= count
        if self._pending <= 0:
            self._pending = 0
            if self._drained is not None and self._busy is not None:
                self._drained.set()
                self._busy.clear()

    # ------------------------------------------------------------------- subscribing

    def subscribe(self, topic: str) -> None:
        if topic in self._desired:
            return
        self._desired.add(topic)
        if self._started and not self._closed:
            shard = self._route(topic)
            self._topic_shard[topic] = shard
            shard.want(topic)

    def unsubscribe(self, topic: str) -> None:
        if topic not in self._desired:
            return
        self._desired.discard(topic)
        shard = self._topic_shard.pop(topic, None)
        if shard is not None:
            shard.drop(topic)

    async def sync_subscriptions(self, timeout: float | None = None) -> None:
        """Wait until Redis has confirmed every subscribe/unsubscribe requested so far
        (raises ``TimeoutError`` after ``timeout``, default ``io_timeout``)."""
        if not self._started or self._closed:
            raise BusClosed("the Redis bus is not running")
        waiters = [s.barrier() for s in list(self._shards.values())]
        try:
            async with asyncio.timeout(self.io_timeout if timeout is None else timeout):
                await asyncio.gather(*waiters)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _deliver(self, raw_topic: bytes, payload: bytes) -> None:
        topic = raw_topic.decode("utf-8", "replace")
        if topic not in self._desired:
            return
        self.received += 1
        handler = self._handler
        if handler is None:
            return
        try:
            handler(topic, payload)
        except Exception:
            log.exception("bus handler failed for %s", topic)

    def _announce_reconnect(self) -> None:
        if self.on_reconnect is None or self._closed:
            return
        try:
            self.on_reconnect()
        except Exception:
            log.exception("on_reconnect callback failed")

    # ---------------------------------------------------------------------- routing

    def _route(self, topic: str) -> _Shard:
        if self.sharded:
            owner = self._slot_owner[key_slot(topic.encode())]
            shard = self._shards.get(owner)
            if shard is not None:
                return shard
            self.request_topology_refresh()
            return next(iter(self._shards.values()))  # will answer MOVED/CLUSTERDOWN
        ring = self._ring
        if len(ring) == 1:
            return ring[0]
        return ring[zlib.crc32(topic.encode()) % len(ring)]

    def group_topics(self, topics: list[str]) -> list[list[str]]:
        """Topics in groups that one (S)SUBSCRIBE may carry: one hash slot per group in
        sharded mode (else CROSSSLOT), chunks of ``_SUBSCRIBE_CHUNK`` otherwise."""
        if not topics:
            return []
        if self.sharded:
            by_slot: dict[int, list[str]] = {}
            for topic in topics:
                by_slot.setdefault(key_slot(topic.encode()), []).append(topic)
            return list(by_slot.values())
        return [topics[i:i + _SUBSCRIBE_CHUNK] for i in range(0, len(topics), _SUBSCRIBE_CHUNK)]

    # ------------------------------------------------------------- cluster topology

    async def _choose_mode(self) -> None:
        if self.mode == "plain":
            return
        info: Any = None
        error: BaseException | None = None
        for kwargs in self._seed_kwargs:  # the first seed that answers decides
            try:
                info = await self._command(kwargs, "INFO", "cluster")
                break
            except _CONNECTION_ERRORS as exc:
                error = exc
        else:
            assert error is not None
            raise error
        cluster = isinstance(info, bytes) and b"cluster_enabled:1" in info
        if self.mode == "sharded" and not cluster:
            raise ValueError("mode='sharded' needs a Redis Cluster, and "
                             f"{redact_url(self.urls[0])} is not one")
        if cluster:
            self.sharded = True
            self.publish_prefix = b"*3\r\n$8\r\nSPUBLISH\r\n"
            self.subscribe_command = "SSUBSCRIBE"
            self.unsubscribe_command = "SUNSUBSCRIBE"

    async def _command(self, kwargs: dict[str, Any], *args: Any) -> Any:
        conn = _new_connection(kwargs)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await conn.connect()  # type: ignore[no-untyped-call]
                await conn.send_command(*args)
                return await conn.read_response()
        finally:
            await _disconnect(conn)

    async def _fetch_cluster_slots(self) -> tuple[list[str], dict[str, dict[str, Any]]]:
        """(owner name per slot, connection kwargs per primary) from the first node that
        answers ``CLUSTER SLOTS`` (known primaries first, then the seeds)."""
        candidates = [s.kwargs for s in self._shards.values()] + self._seed_kwargs
        error: BaseException | None = None
        for kwargs in candidates:
            try:
                reply = await self._command(kwargs, "CLUSTER", "SLOTS")
            except _CONNECTION_OR_REPLY_ERRORS as exc:
                error = exc
                continue
            owners = [""] * _CLUSTER_SLOTS
            nodes: dict[str, dict[str, Any]] = {}
            for start, end, primary, *_replicas in reply:
                host = primary[0].decode() if primary[0] not in (b"", b"?") else kwargs["host"]
                port = int(primary[1])
                name = f"{host}:{port}"
                if name not in nodes:
                    nodes[name] = dict(kwargs, host=host, port=port)
                owners[int(start):int(end) + 1] = [name] * (int(end) - int(start) + 1)
            if nodes:
                return owners, nodes
            error = RedisConnectionError("the cluster has no slots assigned")
        raise error if error is not None else RedisConnectionError("no cluster node")

    def request_topology_refresh(self, resync: bool = False) -> None:
        if resync:
            self._resync_needed = True
        if self._topology_wake is not None and self.sharded:
            self._topology_wake.set()

    def redirect(self, entries: list[_Entry]) -> None:
        """Publishes a primary refused (slot moved): re-routed after the next refresh."""
        self._redirected.extend(entries)
        self.request_topology_refresh()

    async def _run_topology(self) -> None:
        assert self._topology_wake is not None
        while True:
            await self._topology_wake.wait()
            self._topology_wake.clear()
            try:
                await self._refresh_topology()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("redis bus: cluster topology refresh failed: %s", exc)
                self._topology_wake.set()  # try again after the pause
            except Exception:
                log.exception("redis bus: cluster topology refresh failed")
                self._topology_wake.set()
            await asyncio.sleep(max(self.backoff_base, 0.05) * 2)

    async def _refresh_topology(self) -> None:
        owners, nodes = await self._fetch_cluster_slots()
        self.topology_refreshes += 1
        resync, self._resync_needed = self._resync_needed, False
        for name, kwargs in nodes.items():
            if name not in self._shards:
                log.info("redis bus: new cluster primary %s", name)
                shard = _Shard(self, name, kwargs)
                self._shards[name] = shard
                shard.start_tasks()
        self._slot_owner = owners
        retired = [s for name, s in self._shards.items() if name not in nodes]
        for shard in retired:
            log.info("redis bus: %s is no longer a cluster primary", shard.name)
            del self._shards[shard.name]
            self._retiring.append(shard)  # close() stops it if this task is cancelled
        moved: set[_Shard] = set()
        for topic, shard in list(self._topic_shard.items()):
            target = self._route(topic)
            if target is not shard:
                shard.drop(topic)
                target.want(topic)
                self._topic_shard[topic] = target
                moved.add(target)
        for shard in retired:
            await shard.stop()
            self._retiring.remove(shard)
            self._redirected = shard.take_queue() + self._redirected
        entries, self._redirected = self._redirected, []
        self._reroute(entries)
        if moved or resync:
            targets = list(self._shards.values()) if resync else list(moved)
            waiters = [s.barrier() for s in targets]
            try:
                async with asyncio.timeout(self.io_timeout):
                    await asyncio.gather(*waiters)
            except TimeoutError:
                log.warning("redis bus: moved subscriptions not confirmed in time; "
                            "the reconnect will announce them")
                return
            finally:
                for waiter in waiters:
                    waiter.cancel()
            self._announce_reconnect()

    def _reroute(self, entries: list[_Entry]) -> None:
        groups: dict[_Shard, list[_Entry]] = {}
        for entry in entries:
            if entry[2].future.done():
                self._settled(1)
                continue
            groups.setdefault(self._route(entry[0]), []).append(entry)
        for shard, group in groups.items():
            shard.queue.extendleft(reversed(group))
            shard.wake_publisher()
