"""The bus may lose or repeat messages; members still see every message once, in order.

The buses here are small subclasses of the in-process bus that drop or duplicate chosen
publishes, standing in for Redis pub/sub losing messages during a reconnect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rooms.realtime.bus import InProcessBus
from server.app import SERVICES
from tests.conftest import app_server
from tests.helpers import GatewayClient, register


class FaultyBus(InProcessBus):
    """Drops or repeats the channel publishes that ``fault(n)`` names (n counts from 1)."""

    def __init__(self, fault: Callable[[int], str | None]) -> None:
        super().__init__()
        self.fault = fault
        self.channel_publishes = 0

    async def publish(self, topic: str, payload: bytes) -> None:
        if topic.startswith("ch."):
            self.channel_publishes += 1
            what = self.fault(self.channel_publishes)
            if what == "drop":
                return
            if what == "repeat":
                await super().publish(topic, payload)
        await super().publish(topic, payload)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_lost_messages_are_caught_up_from_postgres_in_order(
        database_url: str, http: aiohttp.ClientSession) -> None:
    bus = FaultyBus(lambda n: "drop" if n in (2, 3, 7) else None)
    async with app_server(database_url, bus=bus) as server:
        app = server.app
        assert isinstance(app, web.Application)
        a, b = await register(http, server.url), await register(http, server.url)
        sender = await GatewayClient.identified(http, server.ws_url, a["access_token"])
        reader = await GatewayClient.identified(http, server.ws_url, b["access_token"])
        general = sender.channel_named("general")["id"]
        for i in range(1, 9):
            await sender.ok("send_message", channel_id=general, content=f"m{i}")
        got = [(await reader.event("message_create"))["message"] for _ in range(8)]
        assert [m["content"] for m in got] == [f"m{i}" for i in range(1, 9)]
        assert [m["seq"] for m in got] == list(range(got[0]["seq"], got[0]["seq"] + 8))
        await reader.no_event("message_create")
        assert app[SERVICES].hub.gaps_repaired == 3


async def test_repeated_messages_are_delivered_once(
        database_url: str, http: aiohttp.ClientSession) -> None:
    bus = FaultyBus(lambda n: "repeat" if n % 2 else None)
    async with app_server(database_url, bus=bus) as server:
        app = server.app
        assert isinstance(app, web.Application)
        a, b = await register(http, server.url), await register(http, server.url)
        sender = await GatewayClient.identified(http, server.ws_url, a["access_token"])
        reader = await GatewayClient.identified(http, server.ws_url, b["access_token"])
        general = sender.channel_named("general")["id"]
        for i in range(6):
            await sender.ok("send_message", channel_id=general, content=f"m{i}")
        got = [(await reader.event("message_create"))["message"]["content"] for _ in range(6)]
        assert got == [f"m{i}" for i in range(6)]
        await reader.no_event("message_create")
        assert app[SERVICES].hub.duplicates_dropped == 3


async def test_catch_up_after_reconnect(database_url: str, http: aiohttp.ClientSession) -> None:
    """Messages lost while the bus was down, with nothing after them to reveal the gap,
    arrive when the hub is told the bus reconnected."""
    lost = {"on": False}
    bus = FaultyBus(lambda n: "drop" if lost["on"] else None)
    async with app_server(database_url, bus=bus) as server:
        app = server.app
        assert isinstance(app, web.Application)
        a, b = await register(http, server.url), await register(http, server.url)
        sender = await GatewayClient.identified(http, server.ws_url, a["access_token"])
        reader = await GatewayClient.identified(http, server.ws_url, b["access_token"])
        general = sender.channel_named("general")["id"]
        await sender.ok("send_message", channel_id=general, content="before")
        assert (await reader.event("message_create"))["message"]["content"] == "before"
        lost["on"] = True
        await sender.ok("send_message", channel_id=general, content="during 1")
        await sender.ok("send_message", channel_id=general, content="during 2")
        await reader.no_event("message_create")
        lost["on"] = False
        await app[SERVICES].on_bus_reconnect()
        got = [(await reader.event("message_create"))["message"]["content"] for _ in range(2)]
        assert got == ["during 1", "during 2"]


class _LoadThenRace:
    """Wraps the opener's snapshot read: once ``user_id``'s snapshot is read, a message
    is sent and delivered to ``reader`` before that session can attach."""

    def __init__(self, load_view: Any, user_id: int, sender: GatewayClient,
                 reader: GatewayClient, channel_id: int) -> None:
        self.load_view, self.user_id = load_view, user_id
        self.sender, self.reader, self.channel_id = sender, reader, channel_id

    async def __call__(self, session: Any) -> Any:
        loaded = await self.load_view(session)
        if session.user.id == self.user_id:
            await self.sender.ok("send_message", channel_id=self.channel_id, content="during")
            await self.reader.event("message_create")  # the hub has delivered it here
        return loaded


async def test_a_message_delivered_while_a_session_opens_still_reaches_it(
        database_url: str, http: aiohttp.ClientSession) -> None:
    """The race a failover run exposed: a member's snapshot is read, then a message is
    delivered here to the channel's other subscribers, then the new session attaches.
    That message must still reach it (caught up from PostgreSQL, before anything newer)."""
    async with app_server(database_url, bus=InProcessBus()) as server:
        app = server.app
        assert isinstance(app, web.Application)
        a, b, c = [await register(http, server.url) for _ in range(3)]
        sender = await GatewayClient.identified(http, server.ws_url, a["access_token"])
        reader = await GatewayClient.identified(http, server.ws_url, b["access_token"])
        general = sender.channel_named("general")["id"]
        opener = app[SERVICES].opener
        load_view = opener._load_view
        opener._load_view = _LoadThenRace(  # type: ignore[method-assign]
            load_view, c["user"]["id"], sender, reader, general)
        late = await GatewayClient.identified(http, server.ws_url, c["access_token"])
        opener._load_view = load_view  # type: ignore[method-assign]
        snapshot_seq = late.channel_named("general")["last_seq"]
        await sender.ok("send_message", channel_id=general, content="after")
        got = [(await late.event("message_create"))["message"] for _ in range(2)]
        assert [m["content"] for m in got] == ["during", "after"]
        assert [m["seq"] for m in got] == [snapshot_seq + 1, snapshot_seq + 2]
        await late.no_event("message_create")
