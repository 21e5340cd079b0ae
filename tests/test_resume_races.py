"""No gap at attach, and resume that succeeds once on any node.

Two gateway "nodes" here are two applications in this test's event loop sharing one
PostgreSQL and one real Redis (``redis_server``). The windows are held open on purpose:

* between reading a session's snapshot and attaching it to the hub (the opener's
  snapshot read is wrapped so that the other party sends right after it), and
* between attaching and Redis confirming the subscription (a :class:`LateSubscriptions`
  bus that applies subscriptions only when the test says so),

with a message in a channel the node does not carry yet (a DM) and nothing sent after
it, so nothing but the fix can bring it. And a client bouncing between nodes, with and
without the old node hearing at once that its copy was taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rooms.realtime.redis_bus import RedisBus
from rooms.realtime.sessions import Session
from server.app import SERVICES, Services
from tests.conftest import RunningServer, app_server
from tests.helpers import GatewayClient, bearer, register
from tests.redis_fixture import RedisServer


class LateSubscriptions(RedisBus):
    """A Redis bus whose subscriptions, while held, take effect only on :meth:`release`:
    the window between a session attaching and Redis confirming its topics, held open."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.holding = False
        self.held: list[str] = []
        self.released = asyncio.Event()
        self.released.set()

    def hold(self) -> None:
        self.holding = True
        self.released.clear()

    def release(self) -> None:
        self.holding = False
        held, self.held = self.held, []
        for topic in held:
            super().subscribe(topic)
        self.released.set()

    def subscribe(self, topic: str) -> None:
        if self.holding:
            self.held.append(topic)
            return
        super().subscribe(topic)

    async def sync_subscriptions(self, timeout: float | None = None) -> None:
        await self.released.wait()
        await super().sync_subscriptions(timeout)


class DeafToTakeovers(RedisBus):
    """A Redis bus that does not pass on process-internal notices (``x.*`` topics) while
    ``deaf``: the node holding a stale copy has not heard yet that it was taken over."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.deaf = False

    def _deliver(self, raw_topic: bytes, payload: bytes) -> None:
        if self.deaf and raw_topic.startswith(b"x."):
            return
        super()._deliver(raw_topic, payload)


class AfterSnapshot:
    """Wraps the opener's snapshot read: once ``user_id``'s snapshot is read (identify,
    or resume on a node that did not hold the session), ``then`` runs before the session
    can attach."""

    def __init__(self, services: Services, user_id: int,
                 then: Callable[[], Awaitable[None]]) -> None:
        self.opener = services.opener
        self.load_view = self.opener._load_view
        self.user_id, self.then = user_id, then

    async def __call__(self, session: Session) -> Any:
        loaded = await self.load_view(session)
        if session.user.id == self.user_id:
            await self.then()
        return loaded

    def __enter__(self) -> AfterSnapshot:
        self.opener._load_view = self  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.opener._load_view = self.load_view  # type: ignore[method-assign]


class GatedWrites:
    """Wraps a node's session-mirror writes: each waits until ``opened`` is set."""

    def __init__(self, services: Services) -> None:
        assert services.mirror is not None
        self.mirror = services.mirror
        self.store = self.mirror._store
        self.opened = asyncio.Event()

    async def __call__(self, taken: Any) -> list[bool] | None:
        await self.opened.wait()
        return await self.store(taken)

    def __enter__(self) -> GatedWrites:
        self.mirror._store = self  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.mirror._store = self.store  # type: ignore[method-assign]
        self.opened.set()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def services(node: RunningServer) -> Services:
    app = node.app
    assert isinstance(app, web.Application)
    return app[SERVICES]


@contextlib.asynccontextmanager
async def two_nodes(database_url: str, redis: RedisServer, bus_a: RedisBus | None = None,
                    bus_b: RedisBus | None = None) -> AsyncIterator[
                        tuple[RunningServer, RunningServer]]:
    async with app_server(database_url, bus=bus_a, redis_url=redis.url,
                          media_workers=0) as a, \
            app_server(database_url, bus=bus_b, redis_url=redis.url, media_workers=0) as b:
        yield a, b


async def dm_between(http: aiohttp.ClientSession, node: RunningServer,
                     sender: dict[str, Any], receiver: dict[str, Any]) -> int:
    async with http.post(f"{node.url}/api/v1/dms", headers=bearer(sender["access_token"]),
                         json={"user_ids": [receiver["user"]["id"]]}) as reply:
        assert reply.status == 201
        return int((await reply.json())["channel"]["id"])


def drop(client: GatewayClient) -> None:
    """The connection dies without a close frame (the session stays resumable)."""
    client.ws._response.connection.transport.abort()  # type: ignore[union-attr]


async def resume_on(http: aiohttp.ClientSession, node: RunningServer,
                    account: dict[str, Any], old: GatewayClient) -> GatewayClient:
    client = await GatewayClient.connect(http, node.ws_url)
    client.continue_from(old)
    await client.send(old.resume_frame(account["access_token"]))
    resumed = await client.recv()
    assert resumed["op"] == "resumed", resumed
    return client


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------- no gap at attach


async def test_identify_gets_a_dm_sent_between_its_snapshot_and_attaching(
        database_url: str, redis_server: RedisServer, http: aiohttp.ClientSession) -> None:
    async with two_nodes(database_url, redis_server) as (a, b):
        alice, bob = await register(http, a.url), await register(http, a.url)
        dm = await dm_between(http, b, alice, bob)
        sender = await GatewayClient.identified(http, b.ws_url, alice["access_token"])

        async def send() -> None:
            await sender.ok("send_message", channel_id=dm, content="during")

        with AfterSnapshot(services(a), bob["user"]["id"], send):
            reader = await GatewayClient.identified(http, a.ws_url, bob["access_token"])
        got = (await reader.event("message_create"))["message"]
        assert got["content"] == "during" and got["channel_id"] == dm
        await reader.no_event("message_create")


async def test_identify_gets_a_dm_sent_before_its_subscription_is_live(
        database_url: str, redis_server: RedisServer, http: aiohttp.ClientSession) -> None:
    late = LateSubscriptions(redis_server.url)
    async with two_nodes(database_url, redis_server, bus_a=late) as (a, b):
        alice, bob = await register(http, a.url), await register(http, a.url)
        dm = await dm_between(http, b, alice, bob)
        sender = await GatewayClient.identified(http, b.ws_url, alice["access_token"])
        late.hold()
        reader = await GatewayClient.identified(http, a.ws_url, bob["access_token"])
        await sender.ok("send_message", channel_id=dm, content="during")
        late.release()
        got = (await reader.event("message_create"))["message"]
        assert got["content"] == "during" and got["channel_id"] == dm
        await reader.no_event("message_create")


async def test_resume_elsewhere_gets_a_dm_sent_between_its_snapshot_and_attaching(
        database_url: str, redis_server: RedisServer, http: aiohttp.ClientSession) -> None:
    async with two_nodes(database_url, redis_server) as (a, b):
        alice, bob = await register(http, a.url), await register(http, a.url)
        dm = await dm_between(http, a, alice, bob)
        sender = await GatewayClient.identified(http, a.ws_url, alice["access_token"])
        first = await GatewayClient.identified(http, a.ws_url, bob["access_token"])
        await sender.ok("send_message", channel_id=dm, content="before")
        assert (await first.event("message_create"))["message"]["content"] == "before"
        drop(first)

        async def send() -> None:
            await sender.ok("send_message", channel_id=dm, content="during")

        with AfterSnapshot(services(b), bob["user"]["id"], send):
            reader = await resume_on(http, b, bob, first)
        got = (await reader.event("message_create"))["message"]
        assert got["content"] == "during" and got["channel_id"] == dm
        await reader.no_event("message_create")


async def test_resume_elsewhere_gets_a_dm_sent_before_its_subscription_is_live(
        database_url: str, redis_server: RedisServer, http: aiohttp.ClientSession) -> None:
    late = LateSubscriptions(redis_server.url)
    async with two_nodes(database_url, redis_server, bus_b=late) as (a, b):
        alice, bob = await register(http, a.url), await register(http, a.url)
        dm = await dm_between(http, a, alice, bob)
        sender = await GatewayClient.identified(http, a.ws_url, alice["access_token"])
        first = await GatewayClient.identified(http, a.ws_url, bob["access_token"])
        drop(first)
        late.hold()
        reader = await resume_on(http, b, bob, first)
        await sender.ok("send_message", channel_id=dm, content="during")
        late.release()
        got = (await reader.event("message_create"))["message"]
        assert got["content"] == "during" and got["channel_id"] == dm
        await reader.no_event("message_create")


# ------------------------------------------------------- resume is idempotent across nodes


async def test_a_session_is_resumable_elsewhere_from_ready_on(
        database_url: str, redis_server: RedisServer, http: aiohttp.ClientSession) -> None:
    """``ready`` is sent once the session is in Redis: a client that dies right after
    it resumes on another node instead of being told the session is unknown."""
    async with two_nodes(database_url, redis_server) as (a, b):
        bob = await register(http, a.url)
        with GatedWrites(services(a)) as gate:
            client = await GatewayClient.connect(http, a.ws_url)
            await client.send({"op": "identify", "token": bob["access_token"]})
            with pytest.raises(TimeoutError):  # not before the session is written
                await client.recv(timeout=0.5)
            gate.opened.set()
            client.ready = await client.recv()
            assert client.ready["op"] == "ready"
            drop(client)
        await resume_on(http, b, bob, client)


async def test_a_node_learns_at_once_that_its_copy_was_taken_over(
        database_url: str, redis_server: RedisServer, http: aiohttp.ClientSession) -> None:
    """The client resumes on another node: the node it left drops its copy without
    waiting for a dispatch to that copy (a detached copy gets none while nothing is
    said in its channels) to be refused by the mirror."""
    async with two_nodes(database_url, redis_server) as (a, b):
        bob = await register(http, a.url)
        first = await GatewayClient.identified(http, a.ws_url, bob["access_token"])
        session_id = first.ready["session_id"]
        drop(first)
        await until(lambda: (s := services(a).registry.get(session_id)) is not None
                    and s.sink is None)
        await resume_on(http, b, bob, first)
        await until(lambda: services(a).registry.get(session_id) is None)


async def test_bouncing_between_nodes_never_loses_the_session(
        database_url: str, redis_server: RedisServer, http: aiohttp.ClientSession) -> None:
    """A -> B -> A -> B ..., each time before the node being returned to has heard that
    its copy was taken over: first with nothing delivered meanwhile (its stale copy does
    not even know it is stale), then with a message each hop (its copy learnt it when a
    mirror write was refused, and may not be swept yet). Every resume succeeds, the
    session stays open, and every message arrives once, in order (``GatewayClient``
    checks that ``s`` has no gap)."""
    deaf_a, deaf_b = DeafToTakeovers(redis_server.url), DeafToTakeovers(redis_server.url)
    async with two_nodes(database_url, redis_server, bus_a=deaf_a, bus_b=deaf_b) as (a, b):
        alice, bob = await register(http, a.url), await register(http, a.url)
        sender = await GatewayClient.identified(http, a.ws_url, alice["access_token"])
        general = sender.channel_named("general")["id"]
        client = await GatewayClient.identified(http, a.ws_url, bob["access_token"])
        session_id = client.ready["session_id"]
        deaf_a.deaf = deaf_b.deaf = True
        sent: list[int] = []
        got: list[int] = []
        here = a
        for with_message in (False, True):
            for there in (b, a, b, a):
                if with_message:
                    reply = await sender.ok("send_message", channel_id=general,
                                            content=f"hop {len(sent)}")
                    sent.append(reply["message"]["seq"])
                    got.append((await client.event("message_create"))["message"]["seq"])
                drop(client)
                # The node being left notices the drop; its copy stays, detached.
                await until(lambda node=here: (  # type: ignore[misc]
                    (s := services(node).registry.get(session_id)) is not None
                    and s.sink is None))
                client = await resume_on(http, there, bob, client)
                here = there
        reply = await sender.ok("send_message", channel_id=general, content="last")
        sent.append(reply["message"]["seq"])
        got.append((await client.event("message_create"))["message"]["seq"])
        assert got == sent
        await client.no_event("message_create", wait=0.5)
        # Still the same session, still open: a request is answered.
        await client.ok("send_message", channel_id=general, content="still here")
        assert (await client.event("message_create"))["message"]["content"] == "still here"


async def test_a_resume_with_another_users_token_takes_nothing_over(
        database_url: str, redis_server: RedisServer, http: aiohttp.ClientSession) -> None:
    """A session id is not enough: a resume by another user on another node is refused
    without claiming the session, so its holder carries on."""
    async with two_nodes(database_url, redis_server) as (a, b):
        alice, bob, eve = [await register(http, a.url) for _ in range(3)]
        sender = await GatewayClient.identified(http, a.ws_url, alice["access_token"])
        general = sender.channel_named("general")["id"]
        holder = await GatewayClient.identified(http, a.ws_url, bob["access_token"])
        intruder = await GatewayClient.connect(http, b.ws_url)
        await intruder.send({"op": "resume", "token": eve["access_token"],
                             "session_id": holder.ready["session_id"], "seq": 0})
        assert (await intruder.recv())["op"] == "invalid_session"
        await sender.ok("send_message", channel_id=general, content="still yours")
        got = (await holder.event("message_create"))["message"]
        assert got["content"] == "still yours"
        await holder.no_event("message_create")
