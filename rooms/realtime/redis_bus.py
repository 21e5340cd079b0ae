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

Modules
    This module holds :class:`RedisBus` (the API, the routing table, cluster topology)
    and :class:`Shard` (one primary). The parts, each a module because it is a concern
    of its own: ``redis_bus_publisher`` (the queue and pipelined publishing of one
    primary), ``redis_bus_subscriber`` (the pub/sub connection of one primary: apply,
    confirm, read, reconnect and resubscribe), ``redis_bus_routing`` (the URL list and
    the cluster slot map), ``redis_bus_connections`` (raw connections, back-off, which
    redis-py errors mean what) and ``redis_bus_errors`` (what callers catch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from redis.crc import key_slot
from redis.exceptions import RedisError

from rooms.realtime.bus import Bus
from rooms.realtime.redis_bus_connections import connection_kwargs
from rooms.realtime.redis_bus_errors import (
    BusClosed,
    BusOverloaded,
    BusUnavailable,
    PublishTimeout,
)
from rooms.realtime.redis_bus_publisher import Entry, PublishCall, Publisher
from rooms.realtime.redis_bus_routing import (
    fetch_cluster_slots,
    is_cluster,
    redact_url,
    split_urls,
)
from rooms.realtime.redis_bus_subscriber import Subscriber

log = logging.getLogger(__name__)

Mode = Literal["auto", "plain", "sharded"]


# ------------------------------------------------------------------------------ shard


class Shard:
    """One Redis primary: a publisher task with its queue, a pub/sub connection with the
    topics routed here, and the tasks serving them."""

    def __init__(self, bus: RedisBus, name: str, kwargs: dict[str, Any]) -> None:
        self.name = name
        self.kwargs = kwargs
        self.publisher = Publisher(bus, name, kwargs)
        self.subscriber = Subscriber(bus, name, kwargs)
        self._tasks: list[asyncio.Task[None]] = []

    async def connect_initial(self) -> None:
        """Both connections, now (``start`` fails fast if this raises)."""
        await self.publisher.connect_initial()
        await self.subscriber.connect_initial()

    def start_tasks(self) -> None:
        self._tasks = [
            asyncio.create_task(self.publisher.run(), name=f"redis-bus-pub {self.name}"),
            asyncio.create_task(self.subscriber.run(), name=f"redis-bus-sub {self.name}"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.publisher.stop()
        await self.subscriber.stop()

    async def ping(self) -> None:
        """Raises unless the publisher connection and the pub/sub connection answer."""
        await self.publisher.ping()
        await self.subscriber.barrier()


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
        self._shards: dict[str, Shard] = {}
        self._retiring: list[Shard] = []
        self._ring: list[Shard] = []
        self._slot_owner: list[str] = []
        self._topic_shard: dict[str, Shard] = {}
        self._seed_kwargs: list[dict[str, Any]] = []
        self._pending = 0
        self._drained: asyncio.Event | None = None
        self._busy: asyncio.Event | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self._redirected: list[Entry] = []
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
            self._seed_kwargs = [connection_kwargs(u, self.connect_timeout, "hearth-bus")
                                 for u in self.urls]
            await self._choose_mode()
            if self.sharded:
                owners, nodes = await self._fetch_cluster_slots()
                self._slot_owner = owners
                for name, kwargs in nodes.items():
                    self._shards[name] = Shard(self, name, kwargs)
            else:
                for i, kwargs in enumerate(self._seed_kwargs):
                    shard = Shard(self, f"{i}:{redact_url(self.urls[i])}", kwargs)
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
            shard.subscriber.want(topic)
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
            leftovers += shard.publisher.take_queue()
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
            self._redirected += shard.publisher.take_queue()
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

    def _enqueue(self, items: Iterable[tuple[str, bytes]], count: int) -> PublishCall:
        if not self._started or self._closed:
            raise BusClosed("the Redis bus is not running")
        if self._pending + count > self.max_pending_publishes:
            self._settled(sum(s.publisher.purge_done() for s in self._shards.values()))
            if self._pending + count > self.max_pending_publishes:
                self.publish_rejected += count
                raise BusOverloaded(
                    f"Redis bus outgoing queue full ({self._pending} pending, "
                    f"max_pending_publishes={self.max_pending_publishes}); is Redis down?")
        loop = asyncio.get_running_loop()
        timeout = self.publish_timeout
        call = PublishCall(loop.create_future(), count,
                           loop.time() + timeout if timeout is not None else math.inf)
        if len(self._shards) == 1 and not self.sharded:
            shard = self._ring[0]
            shard.publisher.queue.extend((topic, payload, call) for topic, payload in items)
            shard.publisher.wake()
        else:
            touched: set[Shard] = set()
            for topic, payload in items:
                shard = self._route(topic)
                shard.publisher.queue.append((topic, payload, call))
                touched.add(shard)
            for shard in touched:
                shard.publisher.wake()
        self._pending += count
        if self._drained is not None and self._busy is not None:
            self._drained.clear()
            self._busy.set()
        return call

    async def _wait(self, call: PublishCall) -> None:
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
            dropped = sum(s.publisher.expire(now) for s in list(self._shards.values()))
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
            shard.subscriber.want(topic)

    def unsubscribe(self, topic: str) -> None:
        if topic not in self._desired:
            return
        self._desired.discard(topic)
        shard = self._topic_shard.pop(topic, None)
        if shard is not None:
            shard.subscriber.drop(topic)

    async def sync_subscriptions(self, timeout: float | None = None) -> None:
        """Wait until Redis has confirmed every subscribe/unsubscribe requested so far
        (raises ``TimeoutError`` after ``timeout``, default ``io_timeout``)."""
        if not self._started or self._closed:
            raise BusClosed("the Redis bus is not running")
        waiters = [s.subscriber.barrier() for s in list(self._shards.values())]
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

    def _route(self, topic: str) -> Shard:
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

    # ------------------------------------------------------------- cluster topology

    async def _choose_mode(self) -> None:
        if self.mode == "plain":
            return
        cluster = await is_cluster(self._seed_kwargs, self.connect_timeout)
        if self.mode == "sharded" and not cluster:
            raise ValueError("mode='sharded' needs a Redis Cluster, and "
                             f"{redact_url(self.urls[0])} is not one")
        if cluster:
            self.sharded = True
            self.publish_prefix = b"*3\r\n$8\r\nSPUBLISH\r\n"
            self.subscribe_command = "SSUBSCRIBE"
            self.unsubscribe_command = "SUNSUBSCRIBE"

    async def _fetch_cluster_slots(self) -> tuple[list[str], dict[str, dict[str, Any]]]:
        """(owner name per slot, connection kwargs per primary) from the first node that
        answers ``CLUSTER SLOTS`` (known primaries first, then the seeds)."""
        candidates = [s.kwargs for s in self._shards.values()] + self._seed_kwargs
        return await fetch_cluster_slots(candidates, self.connect_timeout)

    def request_topology_refresh(self, resync: bool = False) -> None:
        if resync:
            self._resync_needed = True
        if self._topology_wake is not None and self.sharded:
            self._topology_wake.set()

    def redirect(self, entries: list[Entry]) -> None:
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
                shard = Shard(self, name, kwargs)
                self._shards[name] = shard
                shard.start_tasks()
        self._slot_owner = owners
        retired = [s for name, s in self._shards.items() if name not in nodes]
        for shard in retired:
            log.info("redis bus: %s is no longer a cluster primary", shard.name)
            del self._shards[shard.name]
            self._retiring.append(shard)  # close() stops it if this task is cancelled
        moved: set[Shard] = set()
        for topic, shard in list(self._topic_shard.items()):
            target = self._route(topic)
            if target is not shard:
                shard.subscriber.drop(topic)
                target.subscriber.want(topic)
                self._topic_shard[topic] = target
                moved.add(target)
        for shard in retired:
            await shard.stop()
            self._retiring.remove(shard)
            self._redirected = shard.publisher.take_queue() + self._redirected
        entries, self._redirected = self._redirected, []
        self._reroute(entries)
        if moved or resync:
            targets = list(self._shards.values()) if resync else list(moved)
            waiters = [s.subscriber.barrier() for s in targets]
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

    def _reroute(self, entries: list[Entry]) -> None:
        groups: dict[Shard, list[Entry]] = {}
        for entry in entries:
            if entry[2].future.done():
                self._settled(1)
                continue
            groups.setdefault(self._route(entry[0]), []).append(entry)
        for shard, group in groups.items():
            shard.publisher.queue.extendleft(reversed(group))
            shard.publisher.wake()
