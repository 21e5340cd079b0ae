"""The Redis bus against real Redis servers (no fakes).

Two ``RedisBus`` instances in one test stand for two gateway processes: each has its own
connections, exactly as two processes would. The shared session Redis (``redis_url``) is
used with unique topic names; tests that stop Redis or need several servers start their
own (``redis_server``, ``make_redis_server``, ``redis_cluster``).

The throughput report (``test_publish_throughput_report``) prints its numbers (10,000
publishes per method in the normal run); the figures for docs/BENCHMARKS.md come from::

    HEARTH_BENCH_PUBLISHES=100000 .venv/bin/pytest tests/test_redis_bus.py -k throughput
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from rooms.realtime.redis_bus import RedisBus
from rooms.realtime.redis_bus_connections import backoff_delay
from rooms.realtime.redis_bus_errors import (
    BusClosed,
    BusOverloaded,
    BusUnavailable,
    PublishTimeout,
)
from rooms.realtime.redis_bus_routing import redact_url, split_urls
from tests.redis_fixture import RedisCluster, RedisServer, free_port

MakeBus = Callable[..., Awaitable[RedisBus]]
_ROOT = Path(__file__).resolve().parents[1]


class Inbox:
    """A bus handler that records (topic, payload) and lets a test wait for a condition."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()

    def __call__(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))
        self._changed.set()

    def payloads(self, topic: str) -> list[bytes]:
        return [p for t, p in self.messages if t == topic]

    async def wait(self, condition: Callable[[], bool], timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


async def eventually(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110  (polls counters no event announces)
            await asyncio.sleep(0.01)


def topic_name(kind: str = "ch") -> str:
    return f"{kind}.{uuid.uuid4().int % 10**12}"


@pytest.fixture
async def make_bus() -> AsyncIterator[MakeBus]:
    """Start buses ("processes"); every one is closed at the end of the test."""
    buses: list[RedisBus] = []

    async def make(url: str, **options: Any) -> RedisBus:
        bus = RedisBus(url, **options)
        buses.append(bus)
        await bus.start()
        return bus

    try:
        yield make
    finally:
        for bus in buses:
            await bus.close()


async def numsub(url: str, topic: str) -> int:
    client = Redis.from_url(url)
    try:
        reply = await client.pubsub_numsub(topic)
        return int(reply[0][1])
    finally:
        await client.aclose()


# ------------------------------------------------------------------------- delivery


async def test_publish_reaches_other_process_once_and_in_order(redis_url: str,
                                                               make_bus: MakeBus) -> None:
    a = await make_bus(redis_url)
    b = await make_bus(redis_url)
    inbox = Inbox()
    b.set_handler(inbox)
    topic = topic_name()
    b.subscribe(topic)
    await b.sync_subscriptions()

    for i in range(20):
        await a.publish(topic, b"single-%d" % i)
    await a.publish_many([(topic, b"%d" % i) for i in range(1000)])

    expected = [b"single-%d" % i for i in range(20)] + [b"%d" % i for i in range(1000)]
    await inbox.wait(lambda: len(inbox.messages) >= len(expected))
    await asyncio.sleep(0.1)  # anything extra (a duplicate) would arrive by now
    assert inbox.payloads(topic) == expected
    assert len(inbox.messages) == len(expected)
    assert a.published == len(expected) and b.received == len(expected)
    assert a.publish_batches >= 2 and a.last_roundtrip_s > 0
    assert a.pending_publishes == 0


async def test_payload_is_bytes_and_topic_is_str(redis_url: str, make_bus: MakeBus) -> None:
    a = await make_bus(redis_url)
    inbox = Inbox()
    a.set_handler(inbox)  # "this one too": a process receives its own publishes
    topic = topic_name("u")
    a.subscribe(topic)
    await a.sync_subscriptions()
    payload = bytes(range(256)) + b"\x00\xff\r\n"
    await a.publish(topic, payload)
    await inbox.wait(lambda: len(inbox.messages) == 1)
    received_topic, received_payload = inbox.messages[0]
    assert type(received_topic) is str and received_topic == topic
    assert type(received_payload) is bytes and received_payload == payload


async def test_concurrent_publishes_share_pipelines(redis_url: str, make_bus: MakeBus) -> None:
    a = await make_bus(redis_url)
    b = await make_bus(redis_url)
    inbox = Inbox()
    b.set_handler(inbox)
    topic = topic_name()
    b.subscribe(topic)
    await b.sync_subscriptions()
    batches = a.publish_batches
    await asyncio.gather(*(a.publish(topic, b"%d" % i) for i in range(2000)))
    assert a.publish_batches - batches < 100  # 2,000 publishes, far fewer round-trips
    await inbox.wait(lambda: len(inbox.messages) == 2000)
    # tasks started in order enqueue in order: the order survives the batching
    assert inbox.payloads(topic) == [b"%d" % i for i in range(2000)]


async def test_unsubscribe_stops_delivery(redis_url: str, make_bus: MakeBus) -> None:
    a = await make_bus(redis_url)
    b = await make_bus(redis_url)
    inbox = Inbox()
    b.set_handler(inbox)
    gone, kept = topic_name(), topic_name()
    b.subscribe(gone)
    b.subscribe(kept)
    await b.sync_subscriptions()
    assert await numsub(redis_url, gone) == 1

    await a.publish(gone, b"before")
    await inbox.wait(lambda: (gone, b"before") in inbox.messages)

    b.unsubscribe(gone)
    # At once for the handler, even before Redis has heard of it:
    await a.publish(gone, b"racing")
    await a.publish(kept, b"marker-1")
    await inbox.wait(lambda: (kept, b"marker-1") in inbox.messages)
    await b.sync_subscriptions()
    assert await numsub(redis_url, gone) == 0

    await a.publish(gone, b"after")
    await a.publish(kept, b"marker-2")  # same connection, so it arrives after "after"
    await inbox.wait(lambda: (kept, b"marker-2") in inbox.messages)
    assert inbox.payloads(gone) == [b"before"]

    b.subscribe(gone)  # and back
    await b.sync_subscriptions()
    await a.publish(gone, b"again")
    await inbox.wait(lambda: (gone, b"again") in inbox.messages)
    assert inbox.payloads(gone) == [b"before", b"again"]


async def test_one_copy_per_process_whatever_the_local_interest(redis_url: str,
                                                                make_bus: MakeBus) -> None:
    a = await make_bus(redis_url)
    b = await make_bus(redis_url)
    c = await make_bus(redis_url)
    inbox_b, inbox_c = Inbox(), Inbox()
    b.set_handler(inbox_b)
    c.set_handler(inbox_c)
    topic = topic_name("c")
    for _ in range(5):  # five local sessions want it: still one subscription
        b.subscribe(topic)
    c.subscribe(topic)
    await b.sync_subscriptions()
    await c.sync_subscriptions()
    assert await numsub(redis_url, topic) == 2  # one connection per process
    assert b.subscriptions == 1

    await a.publish(topic, b"once")
    await a.publish(topic, b"twice")
    await inbox_b.wait(lambda: len(inbox_b.messages) >= 2)
    await inbox_c.wait(lambda: len(inbox_c.messages) >= 2)
    await asyncio.sleep(0.1)
    assert inbox_b.payloads(topic) == [b"once", b"twice"]
    assert inbox_c.payloads(topic) == [b"once", b"twice"]


async def test_many_subscriptions_are_batched(redis_url: str, make_bus: MakeBus) -> None:
    a = await make_bus(redis_url)
    b = await make_bus(redis_url)
    inbox = Inbox()
    b.set_handler(inbox)
    prefix = f"ch.{uuid.uuid4().hex[:8]}."
    topics = [f"{prefix}{i}" for i in range(5000)]
    started = time.perf_counter()
    for topic in topics:
        b.subscribe(topic)
    await b.sync_subscriptions()
    elapsed = time.perf_counter() - started
    client = Redis.from_url(redis_url)
    try:
        channels = await client.pubsub_channels(f"{prefix}*")
    finally:
        await client.aclose()
    assert len(channels) == 5000
    assert elapsed < 5
    await a.publish_many([(topic, topic.encode()) for topic in topics])
    await inbox.wait(lambda: len(inbox.messages) == 5000)
    assert all(t.encode() == p for t, p in inbox.messages)
    for topic in topics:
        b.unsubscribe(topic)
    await b.sync_subscriptions()
    client = Redis.from_url(redis_url)
    try:
        assert await client.pubsub_channels(f"{prefix}*") == []
    finally:
        await client.aclose()


async def test_handler_errors_do_not_stop_the_listener(redis_url: str,
                                                       make_bus: MakeBus) -> None:
    a = await make_bus(redis_url)
    inbox = Inbox()

    def handler(topic: str, payload: bytes) -> None:
        inbox(topic, payload)
        if payload == b"boom":
            raise RuntimeError("handler bug")

    a.set_handler(handler)
    topic = topic_name()
    a.subscribe(topic)
    await a.sync_subscriptions()
    await a.publish_many([(topic, b"boom"), (topic, b"fine")])
    await inbox.wait(lambda: len(inbox.messages) == 2)
    assert await a.ping()


async def test_subscriptions_made_before_start(redis_url: str, make_bus: MakeBus) -> None:
    a = await make_bus(redis_url)
    topic = topic_name()
    b = RedisBus(redis_url)
    inbox = Inbox()
    b.set_handler(inbox)
    b.subscribe(topic)
    try:
        await b.start()  # returns with the subscription confirmed
        await a.publish(topic, b"hi")
        await inbox.wait(lambda: len(inbox.messages) == 1)
    finally:
        await b.close()


# --------------------------------------------------------------------- several primaries


async def test_topics_hash_across_two_primaries(make_redis_server: Callable[..., RedisServer],
                                                make_bus: MakeBus) -> None:
    servers = [make_redis_server(), make_redis_server()]
    urls = [s.url for s in servers]
    a = await make_bus(urls)
    b = await make_bus(",".join(urls))  # the HEARTH_REDIS_URL spelling
    inbox = Inbox()
    b.set_handler(inbox)
    topics = [topic_name() for _ in range(40)]
    for topic in topics:
        b.subscribe(topic)
    await b.sync_subscriptions()

    for index, server in enumerate(servers):
        client = Redis.from_url(server.url)
        try:
            channels = {c.decode() if isinstance(c, bytes) else c
                        for c in await client.pubsub_channels()}
        finally:
            await client.aclose()
        expected = {t for t in topics if zlib.crc32(t.encode()) % 2 == index}
        assert channels == expected
        assert expected  # 40 random topics land on both primaries

    await a.publish_many([(t, b"%s/%d" % (t.encode(), i)) for i in range(25) for t in topics])
    await inbox.wait(lambda: len(inbox.messages) == 25 * len(topics))
    await asyncio.sleep(0.1)
    assert len(inbox.messages) == 25 * len(topics)
    for topic in topics:
        assert inbox.payloads(topic) == [b"%s/%d" % (topic.encode(), i) for i in range(25)]
    assert await a.ping() and await b.ping()


# ------------------------------------------------------------------------------ failures


async def test_start_fails_fast_when_redis_is_unreachable() -> None:
    bus = RedisBus(f"redis://:secret@127.0.0.1:{free_port()}/0", connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(BusUnavailable) as caught:
        await bus.start()
    assert time.monotonic() - started < 3
    assert "HEARTH_REDIS_URL" in str(caught.value)
    assert "secret" not in str(caught.value)
    await bus.close()
    with pytest.raises(BusClosed):
        await bus.publish("ch.1", b"x")


async def test_close_leaves_no_tasks_behind(redis_url: str) -> None:
    before = asyncio.all_tasks()
    bus = RedisBus(redis_url)
    await bus.start()
    bus.subscribe(topic_name())
    await bus.sync_subscriptions()
    await bus.publish(topic_name(), b"x")
    assert len(asyncio.all_tasks() - before) > 0
    await bus.close()
    assert asyncio.all_tasks() - before == set()
    assert not await bus.ping()
    with pytest.raises(BusClosed):
        await bus.publish("ch.1", b"x")


async def test_restart_redis_under_publish_load(redis_server: RedisServer,
                                                make_bus: MakeBus) -> None:
    """Kill -9 Redis under a steady publish load, restart it on the same port: both
    buses reconnect by themselves, the subscriber resubscribes and announces it, every
    publish ends (accepted or an exception, none hangs), publishes made after the
    resubscription all arrive, and what arrives arrives in order."""
    loop = asyncio.get_running_loop()
    reconnected_at: list[float] = []
    a = await make_bus(redis_server.url, backoff_max=0.5)
    b = await make_bus(redis_server.url, backoff_max=0.5,
                       on_reconnect=lambda: reconnected_at.append(loop.time()))
    inbox = Inbox()
    b.set_handler(inbox)
    topic = topic_name()
    b.subscribe(topic)
    await b.sync_subscriptions()

    outcome: dict[int, str] = {}
    started_at: dict[int, float] = {}
    stop = asyncio.Event()

    async def publish(seq: int) -> None:
        started_at[seq] = loop.time()
        try:
            await a.publish(topic, b"%d" % seq)
            outcome[seq] = "ok"
        except (PublishTimeout, BusOverloaded) as exc:
            outcome[seq] = type(exc).__name__

    async def load() -> None:  # a publish every 2 ms, whatever happens to Redis
        publishes: list[asyncio.Task[None]] = []
        seq = 0
        while not stop.is_set():
            publishes.append(asyncio.create_task(publish(seq)))
            seq += 1
            await asyncio.sleep(0.002)
        async with asyncio.timeout(10):  # every publish ends: none hangs
            await asyncio.gather(*publishes)

    def received() -> list[int]:
        return [int(p) for p in inbox.payloads(topic)]

    load_task = asyncio.create_task(load())
    try:
        await inbox.wait(lambda: len(inbox.messages) >= 100)
        before_kill = dict(outcome)
        await asyncio.to_thread(redis_server.stop, True)  # SIGKILL
        await asyncio.sleep(0.3)
        assert not await a.ping() and not await b.ping()
        await asyncio.sleep(0.7)
        await asyncio.to_thread(redis_server.start)
        await eventually(lambda: bool(reconnected_at), timeout=10)
        resubscribed = reconnected_at[0]
        await eventually(lambda: sum(1 for s in received()
                                     if started_at[s] > resubscribed) >= 200, timeout=10)
    finally:
        stop.set()
        await load_task

    got = received()
    late = [s for s, t in started_at.items() if t > resubscribed]
    # acknowledged before the kill: delivered (the subscriber was connected)
    assert {s for s, r in before_kill.items() if r == "ok"} <= set(got)
    # everything published after the resubscription was accepted and arrived
    assert all(outcome[s] == "ok" for s in late)
    await inbox.wait(lambda: set(late) <= set(received()))
    # in order (a retried pipeline may repeat a message: first occurrences stay sorted)
    first_seen = list(dict.fromkeys(received()))
    assert first_seen == sorted(first_seen)
    assert len(reconnected_at) >= 1 and a.reconnects >= 1 and b.reconnects >= 1
    assert await a.ping() and await b.ping()
    outage = [s for s, t in started_at.items() if s not in before_kill and t <= resubscribed]
    print(f"\nrestart: {len(outcome)} publishes, {len(outage)} during the outage "
          f"({sum(outcome[s] == 'ok' for s in outage)} accepted after the reconnect, "
          f"{sum(outcome[s] != 'ok' for s in outage)} raised, "
          f"{sum(s in set(got) for s in outage)} of them delivered); "
          f"{len(got) - len(set(got))} duplicate(s); on_reconnect x{len(reconnected_at)}")


async def test_publish_during_long_outage_raises_and_is_withdrawn(
        redis_server: RedisServer, make_bus: MakeBus) -> None:
    reconnects: list[int] = []
    a = await make_bus(redis_server.url, publish_timeout=0.5, backoff_max=0.2)
    b = await make_bus(redis_server.url, backoff_max=0.2,
                       on_reconnect=lambda: reconnects.append(1))
    inbox = Inbox()
    b.set_handler(inbox)
    topic = topic_name()
    b.subscribe(topic)
    await b.sync_subscriptions()

    await asyncio.to_thread(redis_server.stop)
    started = time.monotonic()
    with pytest.raises(PublishTimeout):
        await a.publish(topic, b"refused")
    assert 0.4 < time.monotonic() - started < 2
    assert a.pending_publishes == 0 or all(  # withdrawn: nothing left to send later
        e[2].future.done() for s in a._shards.values() for e in s.publisher.queue)
    assert not await a.ping()

    await asyncio.to_thread(redis_server.start)
    await eventually(lambda: bool(reconnects))
    await a.publish(topic, b"after")
    await inbox.wait(lambda: (topic, b"after") in inbox.messages)
    await asyncio.sleep(0.1)
    assert inbox.payloads(topic) == [b"after"]  # the refused publish never went out
    assert a.pending_publishes == 0
    assert len(reconnects) == 1  # once per resubscription


async def test_killed_pubsub_connection_resubscribes_and_announces(
        redis_server: RedisServer, make_bus: MakeBus) -> None:
    reconnects: list[int] = []
    a = await make_bus(redis_server.url)
    b = await make_bus(redis_server.url, on_reconnect=lambda: reconnects.append(1))
    inbox = Inbox()
    b.set_handler(inbox)
    topics = [topic_name() for _ in range(3)]
    for topic in topics:
        b.subscribe(topic)
    await b.sync_subscriptions()
    killed = await asyncio.to_thread(redis_server.cli, "CLIENT", "KILL", "TYPE", "pubsub")
    assert killed.strip() == "1"  # b's (a subscribes to nothing: not in pub/sub mode)
    await eventually(lambda: bool(reconnects))
    assert await numsub(redis_server.url, topics[0]) == 1
    await a.publish_many([(t, b"back") for t in topics])
    await inbox.wait(lambda: len(inbox.messages) == 3)
    assert reconnects == [1] and b.reconnects == 1


async def test_a_hung_redis_is_detected_and_survived(redis_server: RedisServer,
                                                     make_bus: MakeBus) -> None:
    """SIGSTOP: connections stay open but nothing answers. The idle pub/sub connection's
    PING goes unanswered, publishes time out; after SIGCONT both recover."""
    reconnects: list[int] = []
    options: dict[str, Any] = dict(health_check_interval=0.3, io_timeout=0.5,
                                   connect_timeout=0.5, backoff_max=0.3)
    a = await make_bus(redis_server.url, publish_timeout=1.0, **options)
    b = await make_bus(redis_server.url, on_reconnect=lambda: reconnects.append(1), **options)
    inbox = Inbox()
    b.set_handler(inbox)
    topic = topic_name()
    b.subscribe(topic)
    await b.sync_subscriptions()

    redis_server.pause()
    try:
        with pytest.raises(PublishTimeout):
            await a.publish(topic, b"stuck")
        assert not await b.ping()
        await asyncio.sleep(1.0)  # long enough for b's health check to give up
    finally:
        redis_server.resume()
    await eventually(lambda: bool(reconnects))
    await a.publish(topic, b"unstuck")
    await inbox.wait(lambda: (topic, b"unstuck") in inbox.messages)
    assert await a.ping() and await b.ping()


async def test_password_in_the_url(make_redis_server: Callable[..., RedisServer],
                                   make_bus: MakeBus) -> None:
    server = make_redis_server("--requirepass", "s3cret")
    url = server.url.replace("redis://", "redis://:s3cret@")
    a = await make_bus(url)
    inbox = Inbox()
    a.set_handler(inbox)
    topic = topic_name()
    a.subscribe(topic)
    await a.sync_subscriptions()
    await a.publish(topic, b"authenticated")
    await inbox.wait(lambda: len(inbox.messages) == 1)
    wrong = RedisBus(server.url.replace("redis://", "redis://:wrong@"))
    with pytest.raises(BusUnavailable, match="HEARTH_REDIS_URL") as caught:
        await wrong.start()
    assert "wrong" not in str(caught.value)


async def test_publishes_wait_for_redis_within_a_bounded_queue(
        redis_server: RedisServer, make_bus: MakeBus) -> None:
    reconnects: list[int] = []
    a = await make_bus(redis_server.url, max_pending_publishes=10, publish_timeout=10,
                       backoff_max=0.2)
    b = await make_bus(redis_server.url, backoff_max=0.2,
                       on_reconnect=lambda: reconnects.append(1))
    inbox = Inbox()
    b.set_handler(inbox)
    topic = topic_name()
    b.subscribe(topic)
    await b.sync_subscriptions()

    await asyncio.to_thread(redis_server.stop)
    waiting = [asyncio.create_task(a.publish(topic, b"%d" % i)) for i in range(10)]
    await asyncio.sleep(0.2)
    assert a.pending_publishes == 10 and not any(t.done() for t in waiting)
    with pytest.raises(BusOverloaded):
        await a.publish(topic, b"one too many")
    with pytest.raises(BusOverloaded):
        await a.publish_many([(topic, b"x")])
    assert a.publish_rejected == 2

    # Make sure the subscriber is back before the queued publishes can go out.
    b_back = asyncio.create_task(eventually(lambda: bool(reconnects)))
    await asyncio.to_thread(redis_server.start)
    await b_back
    await asyncio.gather(*waiting)  # all accepted after the reconnect
    assert a.pending_publishes == 0 and a.reconnects >= 1
    await a.publish(topic, b"sentinel")
    await inbox.wait(lambda: (topic, b"sentinel") in inbox.messages)
    # queued during the outage and sent after it, in order (whether the subscriber was
    # back in time for them is Redis's business: it may have missed some)
    got = inbox.payloads(topic)
    assert got[-1] == b"sentinel"
    assert [int(p) for p in got[:-1]] == sorted(int(p) for p in got[:-1])


async def test_close_fails_what_cannot_be_sent(redis_server: RedisServer) -> None:
    bus = RedisBus(redis_server.url, publish_timeout=30, close_timeout=0.2)
    await bus.start()
    await asyncio.to_thread(redis_server.stop)
    pending = asyncio.create_task(bus.publish("ch.1", b"x"))
    await asyncio.sleep(0.1)
    await bus.close()
    with pytest.raises(BusClosed):
        await pending


# ------------------------------------------------------------------------ Redis Cluster


async def test_sharded_pubsub_on_a_redis_cluster(redis_cluster: RedisCluster,
                                                 make_bus: MakeBus) -> None:
    loop = asyncio.get_running_loop()
    b_reconnected: list[float] = []
    a = await make_bus(redis_cluster.urls[0])  # one seed is enough
    b = await make_bus(redis_cluster.url, on_reconnect=lambda: b_reconnected.append(loop.time()))
    assert a.sharded and b.sharded and len(b._shards) == 3
    inbox = Inbox()
    b.set_handler(inbox)
    topics = [topic_name() for _ in range(30)]
    for topic in topics:
        b.subscribe(topic)
    await b.sync_subscriptions()

    async def shard_channels(node: RedisServer) -> set[str]:
        client = Redis.from_url(node.url)
        try:
            return {c.decode() for c in await client.execute_command("PUBSUB", "SHARDCHANNELS")}
        finally:
            await client.aclose()

    def owner(topic: str) -> RedisServer:
        return redis_cluster.owner_of(key_slot(topic.encode()))

    for node in redis_cluster.nodes:
        assert await shard_channels(node) == {t for t in topics if owner(t) is node}

    await a.publish_many([(t, b"%d" % i) for i in range(10) for t in topics])
    await inbox.wait(lambda: len(inbox.messages) == 300)
    for topic in topics:
        assert inbox.payloads(topic) == [b"%d" % i for i in range(10)]
    assert await a.ping() and await b.ping()

    # Reshard: move one topic's slot to another primary. Redis unsubscribes b from it;
    # b follows the slot and announces the resubscription; a's next SPUBLISH gets MOVED
    # and is re-routed.
    moving = topics[0]
    source = owner(moving)
    target = next(n for n in redis_cluster.nodes if n is not source)
    await asyncio.to_thread(redis_cluster.move_slot, key_slot(moving.encode()), source, target)
    await eventually(lambda: bool(b_reconnected))
    assert moving in await shard_channels(target)
    assert moving not in await shard_channels(source)
    await a.publish(moving, b"after the move")
    await inbox.wait(lambda: (moving, b"after the move") in inbox.messages)
    assert a.topology_refreshes >= 1 and b.topology_refreshes >= 1
    # the other topics still flow
    await a.publish_many([(t, b"late") for t in topics[1:]])
    await inbox.wait(lambda: sum(p == b"late" for _, p in inbox.messages) == len(topics) - 1)


async def test_sharded_mode_needs_a_cluster(redis_url: str) -> None:
    bus = RedisBus(redis_url, mode="sharded")
    with pytest.raises(BusUnavailable, match="Redis Cluster"):
        await bus.start()
    await bus.close()


# ------------------------------------------------------------------------------ helpers


def test_helpers() -> None:
    assert split_urls("redis://a:1, redis://b:2") == ["redis://a:1", "redis://b:2"]
    assert split_urls(["redis://a:1"]) == ["redis://a:1"]
    with pytest.raises(ValueError):
        split_urls(" ")
    assert redact_url("redis://user:pw@host:1/0") == "redis://user:***@host:1/0"
    assert redact_url("redis://host:1/0") == "redis://host:1/0"
    delays = [backoff_delay(n, 0.1, 2.0) for n in range(12)]
    assert all(0.05 <= d <= 2.0 for d in delays) and max(delays[8:]) >= 1.0
    with pytest.raises(ValueError):
        RedisBus("redis://x", mode="nonsense")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- throughput


_SUBSCRIBER = """
import asyncio, sys, time
from rooms.realtime.redis_bus import RedisBus

async def main(url: str, topic: str, count: int) -> None:
    bus = RedisBus(url)
    seen = 0
    done = asyncio.Event()

    def handler(topic: str, payload: bytes) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    bus.set_handler(handler)
    bus.subscribe(topic)
    await bus.start()
    print("ready", flush=True)
    await done.wait()
    print("done", time.time(), flush=True)
    await bus.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


@pytest.mark.slow
async def test_publish_throughput_report(redis_url: str, make_bus: MakeBus,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Measured, not asserted: publishes per second for N small payloads, pipelined by
    the bus versus redis-py, with a subscribing process (another OS process, its own
    RedisBus) counting them. "accepted": until the last publish returned; "delivered":
    until the subscriber had them all."""
    count = int(os.environ.get("HEARTH_BENCH_PUBLISHES", "10000"))
    payload = b"E" + b'{"t":"message_create","d":{"id":1}}'  # 36 bytes, a small event
    a = await make_bus(redis_url, max_pending_publishes=count + 10, publish_timeout=120)
    root = _ROOT
    rows: list[tuple[str, float, float, str]] = []

    async def measure(name: str, run: Callable[[str], Awaitable[None]], batches: bool) -> None:
        topic = topic_name()
        subscriber = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SUBSCRIBER, redis_url, topic, str(count), cwd=root,
            stdout=asyncio.subprocess.PIPE)
        assert subscriber.stdout is not None
        try:
            async with asyncio.timeout(30):
                assert (await subscriber.stdout.readline()).strip() == b"ready"
            before = a.publish_batches
            started = time.time()
            await run(topic)
            accepted = time.time() - started
            async with asyncio.timeout(120):
                line = (await subscriber.stdout.readline()).split()
            assert line[0] == b"done", line
            delivered = float(line[1]) - started
            await subscriber.wait()
        finally:
            if subscriber.returncode is None:
                subscriber.kill()
                await subscriber.wait()
        note = f"{count / max(1, a.publish_batches - before):,.0f} per pipeline" if batches else ""
        rows.append((name, accepted, delivered, note))

    async def bus_publish_many(topic: str) -> None:
        await a.publish_many([(topic, payload)] * count)

    async def bus_sessions(topic: str) -> None:  # 1,000 "sessions" publishing one by one
        async def session() -> None:
            for _ in range(count // 1000):
                await a.publish(topic, payload)
        await asyncio.gather(*(session() for _ in range(1000)))

    async def bus_concurrent(topic: str) -> None:  # includes creating one task per publish
        await asyncio.gather(*(a.publish(topic, payload) for _ in range(count)))

    async def bus_sequential(topic: str) -> None:
        for _ in range(count):
            await a.publish(topic, payload)

    async def redis_py_pipeline(topic: str) -> None:  # for reference: redis-py's own packing
        client = Redis.from_url(redis_url, protocol=2)
        try:
            for _ in range(count // 1000):
                async with client.pipeline(transaction=False) as pipe:
                    for _ in range(1000):
                        pipe.publish(topic, payload)
                    await pipe.execute()
        finally:
            await client.aclose()

    async def unpipelined(topic: str) -> None:
        client = Redis.from_url(redis_url, protocol=2)
        try:
            for _ in range(count):
                await client.publish(topic, payload)
        finally:
            await client.aclose()

    await measure("RedisBus.publish_many, one call", bus_publish_many, True)
    await measure("RedisBus.publish, 1,000 concurrent publishers", bus_sessions, True)
    await measure(f"RedisBus.publish, {count:,} tasks at once", bus_concurrent, True)
    await measure("RedisBus.publish, one at a time", bus_sequential, True)
    await measure("redis-py pipeline(transaction=False) x1,000", redis_py_pipeline, False)
    await measure("redis-py publish, one at a time (unpipelined)", unpipelined, False)

    with capsys.disabled():
        print(f"\n\nRedis bus publish throughput: {count:,} payloads of {len(payload)} bytes "
              f"to one topic; Redis {redact_url(redis_url)}; a subscribing process counts "
              f"them; Python {sys.version.split()[0]}, asyncio loop, {os.cpu_count()} CPUs")
        print(f"{'method':<48} {'accepted/s':>11} {'delivered/s':>12}  batching")
        for name, accepted, delivered, note in rows:
            print(f"{name:<48} {count / accepted:>11,.0f} {count / delivered:>12,.0f}  {note}")
