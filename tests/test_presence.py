"""Presence: online / idle / dnd / offline with last-seen, across processes and nodes.

Two levels, no mocks:

- the stores themselves (``MemoryPresenceStore`` and ``RedisPresenceStore`` against the
  real Redis of the ``redis_url`` fixture, two stores standing for two processes);
- the protocol, as clients see it: real server processes sharing one PostgreSQL and one
  Redis, raw websocket clients, ``presence_update`` events and ``fetch_members``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from protocol.models import PresenceStatus
from rooms.realtime.presence import (
    MAX_BATCH,
    LeaseLost,
    MemoryPresenceStore,
    PresenceStore,
    UserSync,
)
from rooms.realtime.redis_presence import RedisPresenceStore
from tests.conftest import (
    RunningServer,
    server_nodes,
    start_server_process,
    stop_server_process,
)
from tests.helpers import GatewayClient, bearer, register

ONLINE, IDLE, DND = PresenceStatus.ONLINE, PresenceStatus.IDLE, PresenceStatus.DND
INVISIBLE, OFFLINE = PresenceStatus.INVISIBLE, PresenceStatus.OFFLINE

TEST_TTL_S = 3.0
"""The lease TTL the multi-node tests run with (``HEARTH_PRESENCE_TTL_S``)."""


def offline_bound_s(ttl_s: float, batch_s: float = 1.5) -> float:
    """The documented bound (rooms/realtime/presence.py): lease + reap period + batch + tick."""
    return ttl_s + min(1.0, ttl_s / 3) + batch_s + min(0.25, batch_s / 6)


# ----------------------------------------------------------------------------- stores


StoreFactory = Callable[[float], Awaitable[list[RedisPresenceStore]]]


@pytest.fixture
async def redis_stores(redis_url: str) -> AsyncIterator[StoreFactory]:
    """Makes two Redis stores (lease TTL given) in one fresh namespace: two processes of
    one installation."""
    namespace = uuid.uuid4().hex[:12]
    made: list[RedisPresenceStore] = []

    async def make(ttl_s: float) -> list[RedisPresenceStore]:
        stores = [RedisPresenceStore(redis_url, ttl_s=ttl_s, batch_s=0.2) for _ in range(2)]
        for store in stores:
            await store.start(namespace)
        made.extend(stores)
        return stores

    yield make
    for store in made:
        await store.close()


def _sync(user_id: int, sessions: int, communities: set[int] | None = None) -> UserSync:
    return UserSync(user_id=user_id, sessions=sessions,
                    communities=frozenset(communities) if communities is not None else None)


async def _due(store: PresenceStore, timeout: float = 3.0) -> dict[int, dict[int, Any]]:
    """Wait for the next batches: community -> {user id: presence, -1: online count}."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batches = await store.take_due(limit=100)
        if batches:
            return {b.community_id: {**{p.user_id: p for p in b.presences},
                                     -1: b.online_count} for b in batches}
        await asyncio.sleep(0.05)
    raise TimeoutError("no batch due")


async def _check_store_rules(store: PresenceStore, other: PresenceStore | None) -> None:
    """The rules every store follows; ``other``: a second process, if the store has any."""
    await store.sync([_sync(1, 1, {10, 20}), _sync(2, 2, {10})])
    assert await store.online_counts([10, 20, 30]) == {10: 2, 20: 1, 30: 0}
    batches = await _due(store)
    assert batches[10][1].status is ONLINE and batches[10][2].status is ONLINE
    assert batches[10][-1] == 2 and batches[20][-1] == 1
    # Two sessions (on two processes, or here): closing one is not going offline.
    if other is not None:
        await other.sync([_sync(1, 1, {10, 20})])
        await store.sync([_sync(1, 0)])
    else:
        await store.sync([_sync(1, 2)])
        await store.sync([_sync(1, 1)])
    assert (await store.presences([1]))[0].status is ONLINE
    # Chosen status, seen by everyone, kept between sessions.
    await store.set_status(1, DND)
    assert (await store.presences([1]))[0].status is DND
    assert (await store.snapshot(1, [10]))[0] is DND
    await store.set_status(1, INVISIBLE)
    seen = await store.presences([1])
    assert seen[0].status is OFFLINE and seen[0].last_seen is not None
    assert await store.online_counts([10, 20]) == {10: 1, 20: 0}
    # Coalescing: many changes, one batch per community, the user once, latest status.
    for status in [ONLINE, IDLE, DND, ONLINE, IDLE] * 10:
        await store.set_status(2, status)
    batches = await _due(store)
    assert set(batches[10]) == {1, 2, -1}
    assert batches[10][2].status is IDLE and batches[10][1].status is OFFLINE
    # Last session gone: offline with last-seen; the count drops.
    before = int(time.time() * 1000) - 1000
    await store.sync([_sync(2, 0)])
    (presence,) = await store.presences([2])
    assert presence.status is OFFLINE and presence.last_seen and presence.last_seen >= before
    assert await store.online_counts([10]) == {10: 0}
    # Community joins and leaves while online.
    await store.set_status(1, ONLINE)
    assert await store.online_counts([10, 20, 30]) == {10: 1, 20: 1, 30: 0}
    await (other or store).sync([_sync(1, 1, {20, 30})])
    assert await store.online_counts([10, 20, 30]) == {10: 0, 20: 1, 30: 1}
    # Never seen: offline, no last-seen.
    assert (await store.presences([999]))[0].last_seen is None


async def test_memory_store_rules() -> None:
    store = MemoryPresenceStore(ttl_s=45, batch_s=0.2)
    await _check_store_rules(store, None)


async def test_redis_store_rules(redis_stores: StoreFactory) -> None:
    a, b = await redis_stores(30.0)
    await _check_store_rules(a, b)


async def test_redis_dead_process_is_reaped_and_a_lapsed_one_rejoins(
        redis_stores: StoreFactory) -> None:
    a, b = await redis_stores(1.0)
    await a.sync([_sync(1, 1, {10}), _sync(2, 1, {10})])
    await b.sync([_sync(2, 1, {10})])  # user 2 also connected through b
    await _due(b)
    # a stops renewing (as if killed): after its TTL, b reaps it.
    started = time.monotonic()
    while not await b.reap():
        await b.renew()
        await asyncio.sleep(0.1)
        assert time.monotonic() - started < 3
    assert time.monotonic() - started >= 0.3  # not before the lease ran out
    while await b.reap():
        pass
    one, two = await b.presences([1, 2])
    assert one.status is OFFLINE and one.last_seen is not None
    assert two.status is ONLINE  # still connected through b
    assert await b.online_counts([10]) == {10: 1}
    batch = await _due(b)
    assert batch[10][1].status is OFFLINE and 2 not in batch[10]
    # a comes back: its lease is gone, so it registers anew and writes everything again.
    with pytest.raises(LeaseLost):
        await a.renew()
    await a.rejoin()
    await a.sync([_sync(1, 1, {10})])
    assert (await b.presences([1]))[0].status is ONLINE


async def test_redis_batches_are_capped(redis_stores: StoreFactory) -> None:
    a, _ = await redis_stores(30.0)
    users = [_sync(u, 1, {10}) for u in range(1, MAX_BATCH + 251)]
    await a.sync(users)
    first = await _due(a)
    assert len(first[10]) - 1 == MAX_BATCH and first[10][-1] == MAX_BATCH + 250
    second = await _due(a)
    assert len(second[10]) - 1 == 250
    assert set(first[10]) & set(second[10]) == {-1}


async def test_redis_namespaces_do_not_mix(redis_url: str) -> None:
    stores = [RedisPresenceStore(redis_url, ttl_s=5, batch_s=0.2) for _ in range(2)]
    await stores[0].start(uuid.uuid4().hex[:12])
    await stores[1].start(uuid.uuid4().hex[:12])
    try:
        await stores[0].sync([_sync(1, 1, {10})])
        assert await stores[1].online_counts([10]) == {10: 0}
        assert (await stores[1].presences([1]))[0].status is OFFLINE
    finally:
        for store in stores:
            await store.close()


# --------------------------------------------------------------------------- protocol


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def node_env(redis_url: str) -> dict[str, str]:
    """One gateway process (``HEARTH_WORKERS=1``: no supervisor, so the process the test
    kills is the gateway itself) with the short test lease."""
    return {"HEARTH_REDIS_URL": redis_url, "HEARTH_WORKERS": "1",
            "HEARTH_PRESENCE_TTL_S": str(TEST_TTL_S)}


def start_node(database_url: str, redis_url: str) -> RunningServer:
    return start_server_process(database_url, **node_env(redis_url))


@pytest.fixture
def two_nodes(database_url: str, redis_url: str) -> Iterator[list[RunningServer]]:
    with server_nodes(database_url, 2, **node_env(redis_url)) as nodes:
        yield nodes


def _starter(client: GatewayClient) -> dict[str, Any]:
    snapshot = client.ready["communities"][0]
    assert snapshot["community"]["name"] == "Hearth"
    return dict(snapshot)


class PresenceWatch:
    """What one client learns from a community's ``presence_update`` events."""

    def __init__(self, client: GatewayClient, community_id: int) -> None:
        self.client = client
        self.community_id = community_id
        self.presence: dict[int, dict[str, Any]] = {}
        self.online_count: int | None = None
        self.batches: list[dict[str, Any]] = []

    def status(self, user_id: int) -> str | None:
        return self.presence.get(user_id, {}).get("status")

    async def next(self, timeout: float) -> dict[str, Any]:
        event = await self.client.event("presence_update", timeout=timeout,
                                        community_id=self.community_id)
        self.batches.append(event)
        for presence in event["presences"]:
            self.presence[presence["user_id"]] = presence
        self.online_count = event["online_count"]
        return event

    async def until(self, done: Callable[[], bool], timeout: float = 8.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            await self.next(max(deadline - loop.time(), 0.01))

    async def quiet(self, seconds: float) -> None:
        """Read updates until none came for ``seconds``."""
        with contextlib.suppress(TimeoutError):
            while True:
                await self.next(seconds)


async def _member_presence(client: GatewayClient, community_id: int,
                           user_id: int) -> tuple[dict[str, Any], int]:
    """``user_id``'s presence through ``fetch_members`` (paging until found), and the
    community's online count."""
    after = 0
    while True:
        page = await client.ok("fetch_members", community_id=community_id, after=after,
                               limit=100)
        assert len(page["members"]) == len(page["presences"]) <= 100
        for member, presence in zip(page["members"], page["presences"], strict=True):
            assert member["user"]["id"] == presence["user_id"]
            if presence["user_id"] == user_id:
                return dict(presence), int(page["online_count"])
        assert page["has_more"], f"user {user_id} is not a member"
        after = page["members"][-1]["user"]["id"]


async def test_presence_across_nodes(two_nodes: list[RunningServer],
                                     http: aiohttp.ClientSession) -> None:
    """Online on node A shows on node B; dnd shows dnd; a disconnect shows offline with
    last-seen; the chosen status is kept; invisible looks offline."""
    a, b = two_nodes
    watcher_account = await register(http, b.url)
    subject_account = await register(http, a.url)
    subject_id = subject_account["user"]["id"]
    watcher = await GatewayClient.identified(http, b.ws_url, watcher_account["access_token"])
    community = _starter(watcher)["community"]["id"]
    assert _starter(watcher)["online_count"] == 1  # the watcher
    assert watcher.ready["status"] == "online"
    watch = PresenceWatch(watcher, community)

    subject = await GatewayClient.identified(http, a.ws_url, subject_account["access_token"])
    assert _starter(subject)["online_count"] == 2  # the watcher and the subject
    await watch.until(lambda: watch.status(subject_id) == "online")
    assert watch.presence[subject_id] == {"user_id": subject_id, "status": "online",
                                          "last_seen": None}
    assert watch.online_count == 2
    assert await _member_presence(watcher, community, subject_id) == (
        watch.presence[subject_id], 2)

    await subject.ok("set_presence", status="dnd")
    await watch.until(lambda: watch.status(subject_id) == "dnd")
    assert watch.presence[subject_id]["last_seen"] is None and watch.online_count == 2
    assert (await _member_presence(watcher, community, subject_id))[0]["status"] == "dnd"

    before = int(time.time() * 1000) - 2000
    await subject.close()  # a normal close: the session ends
    await watch.until(lambda: watch.status(subject_id) == "offline")
    gone = watch.presence[subject_id]
    assert before <= gone["last_seen"] <= int(time.time() * 1000) + 2000
    assert watch.online_count == 1
    assert await _member_presence(watcher, community, subject_id) == (gone, 1)

    # Back, on node B: the chosen status (dnd) is remembered; invisible looks offline.
    again = await GatewayClient.identified(http, b.ws_url, subject_account["access_token"])
    assert again.ready["status"] == "dnd"
    await watch.until(lambda: watch.status(subject_id) == "dnd")
    await again.ok("set_presence", status="invisible")
    await watch.until(lambda: watch.status(subject_id) == "offline")
    assert watch.presence[subject_id]["last_seen"] is not None and watch.online_count == 1
    assert (await _member_presence(watcher, community, subject_id))[1] == 1
    await again.ok("set_presence", status="online")
    await watch.until(lambda: watch.status(subject_id) == "online")

    # Only members may list a community's members.
    refused = await watcher.request("fetch_members", community_id=community + 1000)
    assert refused["op"] == "error" and refused["code"] == "not_found"


async def test_a_killed_node_marks_its_users_offline_within_the_bound(
        database_url: str, redis_url: str, http: aiohttp.ClientSession) -> None:
    node_a = start_node(database_url, redis_url)
    node_b = start_node(database_url, redis_url)
    try:
        watcher_account = await register(http, node_b.url)
        subjects = [await register(http, node_a.url) for _ in range(3)]
        ids = [s["user"]["id"] for s in subjects]
        watcher = await GatewayClient.identified(http, node_b.ws_url,
                                                 watcher_account["access_token"])
        community = _starter(watcher)["community"]["id"]
        watch = PresenceWatch(watcher, community)
        clients = [await GatewayClient.identified(http, node_a.ws_url, s["access_token"])
                   for s in subjects]
        assert _starter(clients[-1])["online_count"] == 4
        await watch.until(lambda: all(watch.status(u) == "online" for u in ids))

        assert isinstance(node_a.process, subprocess.Popen)
        node_a.process.send_signal(signal.SIGKILL)  # no goodbye, no lease released
        killed_at = time.monotonic()
        await asyncio.to_thread(node_a.process.wait)
        bound = offline_bound_s(TEST_TTL_S)
        await watch.until(lambda: all(watch.status(u) == "offline" for u in ids),
                          timeout=bound + 5)
        elapsed = time.monotonic() - killed_at
        # Within the documented bound (plus a little for the test's own delivery path),
        # and not before the lease could have run out.
        assert elapsed <= bound + 1.0, (elapsed, bound)
        assert elapsed >= TEST_TTL_S - TEST_TTL_S / 3 - 0.5, elapsed
        assert all(watch.presence[u]["last_seen"] for u in ids)
        assert watch.online_count == 1
        for user_id in ids:
            listed, online = await _member_presence(watcher, community, user_id)
            assert listed["status"] == "offline" and online == 1
    finally:
        stop_server_process(node_a)
        stop_server_process(node_b)


async def test_quick_status_changes_are_coalesced_into_few_batches(
        two_nodes: list[RunningServer], http: aiohttp.ClientSession) -> None:
    a, b = two_nodes
    watcher_account = await register(http, b.url)
    subject_account = await register(http, a.url)
    subject_id = subject_account["user"]["id"]
    watcher = await GatewayClient.identified(http, b.ws_url, watcher_account["access_token"])
    subject = await GatewayClient.identified(http, a.ws_url, subject_account["access_token"])
    watch = PresenceWatch(watcher, _starter(watcher)["community"]["id"])
    await watch.until(lambda: watch.status(subject_id) == "online")
    await watch.quiet(2.0)  # let any batch in flight go by
    watch.batches.clear()

    statuses = ["dnd", "idle", "online", "dnd", "idle"] * 10
    started = time.monotonic()
    for status in statuses:
        await subject.ok("set_presence", status=status)
    changing_s = time.monotonic() - started
    await watch.quiet(3.0)
    # 50 changes in changing_s seconds: about one batch per 1.5 s window, not 50 events.
    assert 1 <= len(watch.batches) <= 2 + int(changing_s / 1.5), (
        len(watch.batches), changing_s)
    for batch in watch.batches:
        assert [p["user_id"] for p in batch["presences"]].count(subject_id) <= 1
    assert watch.status(subject_id) == "idle"


async def test_online_counts_follow_connections_and_community_joins(
        two_nodes: list[RunningServer], http: aiohttp.ClientSession) -> None:
    a, b = two_nodes
    accounts = [await register(http, node.url) for node in (a, b, a, b)]
    clients: list[GatewayClient] = []
    for i, account in enumerate(accounts):
        node = (a, b)[i % 2]
        client = await GatewayClient.identified(http, node.ws_url, account["access_token"])
        # Each identify counts everyone connected so far, itself included, on either node.
        assert _starter(client)["online_count"] == i + 1
        clients.append(client)
    community = _starter(clients[0])["community"]["id"]
    assert (await clients[0].ok("fetch_members", community_id=community))["online_count"] == 4

    watch = PresenceWatch(clients[0], community)
    await clients[1].close()
    await clients[2].close()
    await watch.until(lambda: watch.online_count == 2)
    assert (await clients[3].ok("fetch_members", community_id=community))["online_count"] == 2

    # A new community: its creator counts as online in it, and so does a member who joins
    # (picked up at the next heartbeat: TTL / 3 = 1 s here).
    creator = clients[0]
    async with http.post(f"{a.url}/api/v1/communities", json={"name": "Side room"},
                         headers=bearer(accounts[0]["access_token"])) as reply:
        assert reply.status == 201
        side = (await reply.json())["community"]["id"]
    await creator.event("community_available")
    side_watch = PresenceWatch(creator, side)
    await side_watch.until(lambda: side_watch.online_count == 1)
    assert side_watch.status(accounts[0]["user"]["id"]) == "online"
    async with http.post(f"{a.url}/api/v1/communities/{side}/invites", json={},
                         headers=bearer(accounts[0]["access_token"])) as reply:
        code = (await reply.json())["code"]
    async with http.post(f"{b.url}/api/v1/invites/{code}/join",
                         headers=bearer(accounts[3]["access_token"])) as reply:
        assert reply.status == 200
    joiner = accounts[3]["user"]["id"]
    await side_watch.until(lambda: side_watch.status(joiner) == "online")
    assert side_watch.online_count == 2
    page = await clients[3].ok("fetch_members", community_id=side)
    assert page["online_count"] == 2 and len(page["members"]) == 2
    assert not page["has_more"]


async def test_member_list_pages_and_presence_in_a_single_process(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    """No Redis: presence lives in process memory, behind the same interface."""
    accounts = [await register(http, live_server.url) for _ in range(5)]
    watcher = await GatewayClient.identified(http, live_server.ws_url,
                                             accounts[0]["access_token"])
    online = await GatewayClient.identified(http, live_server.ws_url,
                                            accounts[1]["access_token"])
    community = _starter(watcher)["community"]["id"]
    assert _starter(online)["online_count"] == 2
    seen: list[int] = []
    after = 0
    while True:
        page = await watcher.ok("fetch_members", community_id=community, after=after, limit=2)
        assert len(page["members"]) <= 2 and page["online_count"] == 2
        seen += [m["user"]["id"] for m in page["members"]]
        if not page["has_more"]:
            break
        after = seen[-1]
    assert {a["user"]["id"] for a in accounts} <= set(seen) and seen == sorted(seen)
    page = await watcher.ok("fetch_members", community_id=community)
    statuses = {p["user_id"]: p["status"] for p in page["presences"]}
    assert statuses[accounts[1]["user"]["id"]] == "online"
    assert statuses[accounts[2]["user"]["id"]] == "offline"
    too_many = await watcher.request("fetch_members", community_id=community, limit=101)
    assert too_many["op"] == "error" and too_many["code"] == "invalid_frame"

    watch = PresenceWatch(watcher, community)
    await online.ok("set_presence", status="idle")
    await watch.until(lambda: watch.status(accounts[1]["user"]["id"]) == "idle")
    await online.close()
    await watch.until(lambda: watch.status(accounts[1]["user"]["id"]) == "offline")
    assert watch.online_count == 1


async def test_typing_crosses_nodes_expires_by_itself_and_is_never_stored(
        two_nodes: list[RunningServer], http: aiohttp.ClientSession) -> None:
    a, b = two_nodes
    typist_account = await register(http, a.url)
    reader_account = await register(http, b.url)
    typist = await GatewayClient.identified(http, a.ws_url, typist_account["access_token"])
    reader = await GatewayClient.identified(http, b.ws_url, reader_account["access_token"])
    ttl_ms = reader.hello["limits"]["typing_ttl_ms"]
    assert ttl_ms == 10_000
    general = reader.channel_named("general")["id"]
    before = await reader.ok("fetch_history", channel_id=general)
    sent_at = int(time.time() * 1000)
    await typist.ok("typing", channel_id=general)
    typing = await reader.event("typing_start", channel_id=general)
    assert typing["user"]["id"] == typist_account["user"]["id"]
    assert abs(typing["expires_at"] - (sent_at + ttl_ms)) < 2_000
    # Nothing was stored: history is unchanged, and a fresh session learns nothing of it.
    assert await reader.ok("fetch_history", channel_id=general) == before
    fresh = await GatewayClient.identified(http, a.ws_url, reader_account["access_token"])
    await fresh.no_event("typing_start", wait=0.5)


@pytest.fixture
def small_presence_server(database_url: str) -> Iterator[RunningServer]:
    """Communities above two members count as large; one presence subscription each."""
    server = start_server_process(database_url, HEARTH_WORKERS="1",
                                  HEARTH_LIMIT_PRESENCE_AUTO_MAX_MEMBERS="2",
                                  HEARTH_LIMIT_MAX_PRESENCE_SUBSCRIPTIONS="1")
    try:
        yield server
    finally:
        stop_server_process(server)


async def test_large_communities_send_presence_only_to_subscribed_sessions(
        small_presence_server: RunningServer, http: aiohttp.ClientSession) -> None:
    server = small_presence_server
    accounts = [await register(http, server.url) for _ in range(3)]
    watcher = await GatewayClient.identified(http, server.ws_url, accounts[0]["access_token"])
    actor = await GatewayClient.identified(http, server.ws_url, accounts[1]["access_token"])
    starter = _starter(watcher)
    community = starter["community"]["id"]
    assert starter["member_count"] > 2  # large under this server's limit
    actor_id = accounts[1]["user"]["id"]
    watch = PresenceWatch(watcher, community)

    # Large: a status change does not reach an unsubscribed session.
    await actor.ok("set_presence", status="idle")
    with pytest.raises(TimeoutError):
        await watch.next(timeout=3.0)
    presence, _ = await _member_presence(watcher, community, actor_id)
    assert presence["status"] == "idle"  # ... though fetch_members has it

    await watcher.ok("subscribe_presence", community_id=community)
    await actor.ok("set_presence", status="dnd")
    await watch.until(lambda: watch.status(actor_id) == "dnd")

    # A community the watcher owns, joined live while small: presence comes unasked;
    # opting out and back in counts against the one subscription already taken.
    created = await http.post(f"{server.url}/api/v1/communities", json={"name": "Cohort"},
                              headers=bearer(accounts[0]["access_token"]))
    assert created.status == 201
    cohort = (await created.json())["community"]["id"]
    await watcher.event("community_available", timeout=5.0)
    await watcher.ok("subscribe_presence", community_id=cohort, subscribed=False)
    refused = await watcher.request("subscribe_presence", community_id=cohort)
    assert refused["op"] == "error" and refused["code"] == "limit_exceeded"
    await watcher.ok("subscribe_presence", community_id=community, subscribed=False)
    await watcher.ok("subscribe_presence", community_id=cohort)

    outsider = await watcher.request("subscribe_presence", community_id=cohort + 1000)
    assert outsider["op"] == "error" and outsider["code"] == "not_found"
    # Unsubscribed from the large one again: quiet.
    await actor.ok("set_presence", status="online")
    with pytest.raises(TimeoutError):
        await watch.next(timeout=3.0)
    await watcher.close()
    await actor.close()
