"""Enforcement across nodes: two real server processes sharing PostgreSQL and Redis.

A ban issued on node A removes the community from the member's session on node B
within a second (and B refuses their sends there); a timeout issued on A blocks the
member's very next send on B; slow mode holds across nodes; a delete reaches viewers on
both nodes; the moderator feed on B sees A's actions and reports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.conftest import (
    RunningServer,
    server_nodes,
)
from tests.helpers import GatewayClient
from tests.mod_helpers import Crew, make_crew


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def two_nodes(database_url: str, redis_url: str) -> Iterator[tuple[RunningServer, RunningServer]]:
    with server_nodes(database_url, 2, HEARTH_REDIS_URL=redis_url) as (a, b):
        yield a, b


@pytest.fixture
async def crew_on_a(two_nodes: tuple[RunningServer, RunningServer],
                    http: aiohttp.ClientSession) -> Crew:
    a, _ = two_nodes
    return await make_crew(http, a.url, a.ws_url, members=2, mods=1)


async def on_b(http: aiohttp.ClientSession, b: RunningServer, token: str) -> GatewayClient:
    return await GatewayClient.identified(http, b.ws_url, token)


async def test_ban_on_a_removes_the_session_on_b_within_a_second(
        two_nodes: tuple[RunningServer, RunningServer], crew_on_a: Crew,
        http: aiohttp.ClientSession) -> None:
    _, b = two_nodes
    crew = crew_on_a
    target_b = await on_b(http, b, crew.member.token)
    viewer_b = await on_b(http, b, crew.members[1].token)
    assert any(c["community"]["id"] == crew.community_id
               for c in target_b.ready["communities"])
    started = time.monotonic()
    waiting = asyncio.ensure_future(target_b.event("community_unavailable", timeout=5))
    await crew.admin.ws.ok("ban_member", community_id=crew.community_id,
                           user_id=crew.member.id, reason="raid")
    gone = await waiting
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"ban reached node B after {elapsed:.3f} s"
    assert gone["community_id"] == crew.community_id
    assert gone["sanction"]["kind"] == "ban" and gone["sanction"]["reason"] == "raid"
    reply = await target_b.request("send_message", channel_id=crew.general, content="still?")
    assert reply["code"] == "not_found"
    assert (await viewer_b.event("member_leave"))["user_id"] == crew.member.id
    # The banned member's session on A lost it too.
    assert (await crew.member.ws.event("community_unavailable"))["community_id"] == \
        crew.community_id


async def test_timeout_on_a_blocks_the_next_send_on_b(
        two_nodes: tuple[RunningServer, RunningServer], crew_on_a: Crew,
        http: aiohttp.ClientSession) -> None:
    _, b = two_nodes
    crew = crew_on_a
    target_b = await on_b(http, b, crew.member.token)
    await target_b.ok("send_message", channel_id=crew.general, content="before")
    await crew.mod.ws.ok("timeout_member", community_id=crew.community_id,
                         user_id=crew.member.id, duration_s=120, reason="cool down")
    # No waiting for the event: the very next send on B is refused.
    reply = await target_b.request("send_message", channel_id=crew.general, content="after")
    assert reply["op"] == "error" and reply["code"] == "timed_out", reply
    assert reply["retry_after_ms"] > 100_000
    event = await target_b.event("member_sanctioned")
    assert event["sanction"]["kind"] == "timeout"
    await crew.mod.ws.ok("remove_timeout", community_id=crew.community_id,
                         user_id=crew.member.id)
    await target_b.event("member_sanctioned", lifted=True)
    await target_b.ok("send_message", channel_id=crew.general, content="free")


async def test_slow_mode_holds_across_nodes_and_deletes_reach_both(
        two_nodes: tuple[RunningServer, RunningServer], crew_on_a: Crew,
        http: aiohttp.ClientSession) -> None:
    _, b = two_nodes
    crew = crew_on_a
    member_b = await on_b(http, b, crew.member.token)
    mod_b = await on_b(http, b, crew.mod.token)
    await mod_b.ok("subscribe_mod_feed", community_id=crew.community_id)
    await crew.mod.ws.ok("set_slowmode", channel_id=crew.general, seconds=30)
    await member_b.event("channel_update")
    await crew.member.ws.event("channel_update")
    sent = (await crew.member.ws.ok("send_message", channel_id=crew.general,
                                    content="on A"))["message"]
    reply = await member_b.request("send_message", channel_id=crew.general, content="on B")
    assert reply["code"] == "slowmode" and 20_000 < reply["retry_after_ms"] <= 30_000
    action = await mod_b.event("mod_action")
    assert action["entry"]["action"] == "channel.slowmode"
    await crew.mod.ws.ok("delete_message", channel_id=crew.general, message_id=sent["id"],
                         reason="test")
    for viewer in (member_b, crew.members[1].ws):
        assert (await viewer.event("message_delete"))["message_id"] == sent["id"]
    assert (await mod_b.event("mod_action"))["entry"]["action"] == "message.delete"
    # A report made on A reaches the moderator feed on B.
    other = (await crew.members[1].ws.ok("send_message", channel_id=crew.general,
                                         content="hmm"))["message"]
    await crew.member.ws.ok("report_message", channel_id=crew.general,
                            message_id=other["id"], reason="spam")
    item = (await mod_b.event("review_item"))["item"]
    assert item["message_id"] == other["id"] and item["report_count"] == 1
    # Acting on it on A shows it resolved on B at once.
    await crew.mod.ws.ok("delete_message", channel_id=crew.general, message_id=other["id"],
                         reason="spam", item_id=item["id"])
    resolved = (await mod_b.event("review_item"))["item"]
    assert resolved["id"] == item["id"] and resolved["status"] == "resolved"
    assert resolved["decision"] == "message.delete"
