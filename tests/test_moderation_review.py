"""Reports, the review queue, appeals, the live moderator feed and raid signals, over
real websockets and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from rooms.moderation.raid import LocalWindowCounter, RaidMonitor
from server.app import SERVICES, Services
from tests.conftest import RunningServer
from tests.helpers import GatewayClient, bearer, register
from tests.mod_helpers import Crew, join, make_crew


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def crew(live_server: RunningServer, http: aiohttp.ClientSession) -> Crew:
    return await make_crew(http, live_server.url, live_server.ws_url, members=4)


def services(server: RunningServer) -> Services:
    return server.app[SERVICES]


async def subscribed(crew: Crew) -> tuple[GatewayClient, GatewayClient]:
    a, b = crew.mods[0].ws, crew.mods[1].ws
    for client in (a, b):
        await client.ok("subscribe_mod_feed", community_id=crew.community_id)
    return a, b


async def test_reports_of_one_message_are_one_item_with_a_count(crew: Crew) -> None:
    a, b = await subscribed(crew)
    author = crew.members[0].ws
    message = (await author.ok("send_message", channel_id=crew.general,
                               content="buy cheap stuff"))["message"]
    reporters = crew.members[1:4]
    items = []
    for person in reporters:
        data = await person.ws.ok("report_message", channel_id=crew.general,
                                  message_id=message["id"], reason="spam")
        items.append(data["item"])
    assert len({i["id"] for i in items}) == 1
    # The reporter learns the report landed, not who else reported or who handles it.
    assert items[0]["report_count"] == 0 and items[0]["claimed_by"] is None
    # Reporting twice counts once (and is not an error).
    await reporters[0].ws.ok("report_message", channel_id=crew.general,
                             message_id=message["id"], reason="again")
    counts = [(await a.event("review_item"))["item"]["report_count"] for _ in reporters]
    assert counts == [1, 2, 3]
    await a.no_event("review_item")
    queue = await b.ok("fetch_review_queue", community_id=crew.community_id)
    [item] = queue["items"]
    assert item["report_count"] == 3 and item["message_id"] == message["id"]
    assert item["content"] == "buy cheap stuff" and item["status"] == "open"
    assert item["sources"] == ["report"] and item["first_reason"] == "spam"
    # Members cannot read the queue.
    reply = await author.request("fetch_review_queue", community_id=crew.community_id)
    assert reply["code"] == "forbidden"


async def test_automod_flags_and_reports_share_the_item(crew: Crew,
                                                        live_server: RunningServer) -> None:
    a, _ = await subscribed(crew)
    message = (await crew.member.ws.ok("send_message", channel_id=crew.general,
                                       content="http://bad.example"))["message"]
    moderation = services(live_server).moderation
    first = await moderation.flag(community_id=crew.community_id, channel_id=crew.general,
                                  message_id=message["id"], author_id=crew.member.id,
                                  content=message["content"], rule="links", reason="link")
    second = await moderation.flag(community_id=crew.community_id, channel_id=crew.general,
                                   message_id=message["id"], author_id=crew.member.id,
                                   content=message["content"], rule="caps", reason="caps")
    await crew.members[1].ws.ok("report_message", channel_id=crew.general,
                                message_id=message["id"], reason="phishing")
    assert first == second
    events = [(await a.event("review_item"))["item"] for _ in range(3)]
    last = events[-1]
    assert last["id"] == first and last["flag_count"] == 2 and last["report_count"] == 1
    assert last["sources"] == ["automod:links", "automod:caps", "report"]
    # A blocked message (never stored) still becomes an item, keeping its content.
    blocked = await moderation.flag(community_id=crew.community_id, channel_id=crew.general,
                                    message_id=None, author_id=crew.member.id,
                                    content="slur", rule="words", reason="blocked word")
    item = (await a.event("review_item"))["item"]
    assert item["id"] == blocked != first and item["content"] == "slur"
    await moderation.alert(community_id=crew.community_id, rule="words", summary="blocked",
                           user_id=crew.member.id, actions=["block", "alert"])
    alert = await a.event("automod_alert")
    assert alert["rule"] == "words" and alert["actions"] == ["block", "alert"]


async def test_report_rate_limit(crew: Crew, live_server: RunningServer) -> None:
    limit = services(live_server).config.limits.reports_per_window
    reporter = crew.members[1].ws
    author = crew.members[0].ws
    for i in range(limit):
        message = (await author.ok("send_message", channel_id=crew.general,
                                   content=f"m{i}"))["message"]
        await reporter.ok("report_message", channel_id=crew.general,
                          message_id=message["id"], reason="spam")
    reply = await reporter.request("report_message", channel_id=crew.general,
                                   message_id=message["id"], reason="one more")
    assert reply["code"] == "rate_limited" and reply["retry_after_ms"] > 0
    # Bad input is refused before it counts.
    reply = await crew.members[2].ws.request("report_message", channel_id=crew.general,
                                             message_id=message["id"], reason="   ")
    assert reply["code"] == "invalid_argument"
    reply = await crew.members[2].ws.request("report_message", channel_id=crew.general,
                                             message_id=10**9, reason="x")
    assert reply["code"] == "not_found"


async def test_claim_and_act_on_an_item_shows_it_resolved_to_every_moderator(
        crew: Crew) -> None:
    a, b = await subscribed(crew)
    target = crew.members[0]
    message = (await target.ws.ok("send_message", channel_id=crew.general,
                                  content="abuse"))["message"]
    item = (await crew.members[1].ws.ok("report_message", channel_id=crew.general,
                                        message_id=message["id"], reason="abuse"))["item"]
    await a.event("review_item")
    await b.event("review_item")
    claimed = (await a.ok("claim_review_item", item_id=item["id"]))["item"]
    assert claimed["status"] == "claimed" and claimed["claimed_by"] == crew.mods[0].id
    seen = (await b.event("review_item"))["item"]
    assert seen["status"] == "claimed" and seen["claimed_by"] == crew.mods[0].id
    reply = await b.request("claim_review_item", item_id=item["id"])
    assert reply["code"] == "conflict"
    # Acting on the item (a timeout with item_id) resolves it, for everyone at once.
    await a.ok("timeout_member", community_id=crew.community_id, user_id=target.id,
               duration_s=300, reason="abuse", item_id=item["id"])
    action = await b.event("mod_action")
    assert action["entry"]["action"] == "member.timeout"
    assert action["entry"]["actor_id"] == crew.mods[0].id
    resolved = (await b.event("review_item"))["item"]
    assert resolved["status"] == "resolved" and resolved["decision"] == "member.timeout"
    assert resolved["resolved_by"] == crew.mods[0].id
    reply = await b.request("resolve_review_item", item_id=item["id"])
    assert reply["code"] == "conflict"
    done = await b.ok("fetch_review_queue", community_id=crew.community_id, status="resolved")
    assert [i["id"] for i in done["items"]] == [item["id"]]
    assert (await b.ok("fetch_review_queue", community_id=crew.community_id))["items"] == []
    # A new report of the same message after resolution opens a new item.
    again = (await crew.members[2].ws.ok("report_message", channel_id=crew.general,
                                         message_id=message["id"], reason="still"))["item"]
    assert again["id"] != item["id"]


async def test_dismiss_and_delete_from_the_feed(crew: Crew) -> None:
    a, b = await subscribed(crew)
    first = (await crew.members[0].ws.ok("send_message", channel_id=crew.general,
                                         content="meh"))["message"]
    second = (await crew.members[0].ws.ok("send_message", channel_id=crew.general,
                                          content="awful"))["message"]
    user_item = (await crew.members[1].ws.ok("report_user", community_id=crew.community_id,
                                             user_id=crew.members[0].id,
                                             reason="harasses"))["item"]
    assert user_item["kind"] == "user"
    one = (await crew.members[1].ws.ok("report_message", channel_id=crew.general,
                                       message_id=first["id"], reason="meh"))["item"]
    two = (await crew.members[1].ws.ok("report_message", channel_id=crew.general,
                                       message_id=second["id"], reason="awful"))["item"]
    for _ in range(3):
        await b.event("review_item")
    dismissed = (await a.ok("resolve_review_item", item_id=one["id"], decision="dismissed",
                            reason="fine"))["item"]
    assert dismissed["decision"] == "dismissed"
    assert (await b.event("review_item"))["item"]["status"] == "resolved"
    assert (await b.event("mod_action"))["entry"]["action"] == "review.resolve"
    await a.ok("delete_message", channel_id=crew.general, message_id=second["id"],
               reason="awful", item_id=two["id"])
    assert (await b.event("mod_action"))["entry"]["action"] == "message.delete"
    resolved = (await b.event("review_item"))["item"]
    assert resolved["id"] == two["id"] and resolved["decision"] == "message.delete"
    assert (await crew.members[2].ws.event("message_delete"))["message_id"] == second["id"]


async def test_feed_needs_moderate_and_stops_when_it_is_lost(
        crew: Crew, http: aiohttp.ClientSession, live_server: RunningServer) -> None:
    reply = await crew.member.ws.request("subscribe_mod_feed", community_id=crew.community_id)
    assert reply["code"] == "forbidden"
    a, b = await subscribed(crew)
    # Demote moderator b: their feed stops at once.
    async with http.patch(
            f"{live_server.url}/api/v1/communities/{crew.community_id}/members/{crew.mods[1].id}",
            json={"role": "member"}, headers=bearer(crew.owner.token)) as r:
        assert r.status == 200
    await b.event("member_update")
    await crew.members[1].ws.ok("report_user", community_id=crew.community_id,
                                user_id=crew.members[0].id, reason="x")
    await a.event("review_item")
    await b.no_event("review_item")
    await a.ok("unsubscribe_mod_feed", community_id=crew.community_id)
    await crew.members[2].ws.ok("report_user", community_id=crew.community_id,
                                user_id=crew.members[0].id, reason="y")
    await a.no_event("review_item")


async def test_appeal_a_ban_over_rest_and_accept_it(crew: Crew, http: aiohttp.ClientSession,
                                                   live_server: RunningServer) -> None:
    a, _ = await subscribed(crew)
    cid, target = crew.community_id, crew.members[0]
    url = f"{live_server.url}/api/v1/communities/{cid}/appeals"
    async with http.post(url, json={"text": "nothing to appeal"},
                         headers=bearer(target.token)) as reply:
        assert reply.status == 404
    ban = await crew.admin.ws.ok("ban_member", community_id=cid, user_id=target.id,
                                 reason="spam")
    await target.ws.event("community_unavailable")
    async with http.post(url, json={"text": "I was hacked"},
                         headers=bearer(target.token)) as reply:
        assert reply.status == 201, await reply.text()
        appeal = (await reply.json())["appeal"]
    assert appeal["audit_id"] == ban["audit_id"] and appeal["action"] == "member.ban"
    async with http.post(url, json={"text": "please"}, headers=bearer(target.token)) as reply:
        assert reply.status == 409
        assert (await reply.json())["error"]["code"] == "already_exists"
    assert (await a.event("appeal_update"))["appeal"]["id"] == appeal["id"]
    # Moderators without BAN_MEMBERS cannot decide a ban appeal; admins can.
    refused = await a.request("resolve_appeal", appeal_id=appeal["id"], accept=True)
    assert refused["code"] == "forbidden"
    listed = await crew.admin.ws.ok("fetch_appeals", community_id=cid, status="open")
    assert [x["id"] for x in listed["appeals"]] == [appeal["id"]]
    decided = (await crew.admin.ws.ok("resolve_appeal", appeal_id=appeal["id"], accept=True,
                                      reason="believable"))["appeal"]
    assert decided["status"] == "accepted"
    assert (await target.ws.event("appeal_update"))["appeal"]["status"] == "accepted"
    assert (await join(http, live_server.url, crew.invite, target.token)).status == 200
    entries = (await crew.admin.ws.ok("fetch_audit_log", community_id=cid,
                                      target_id=target.id))["entries"]
    assert [e["action"] for e in entries] == ["member.unban", "member.ban"]
    assert entries[0]["reason"] == "appeal accepted: believable"
    refused = await crew.admin.ws.request("resolve_appeal", appeal_id=appeal["id"],
                                          accept=False)
    assert refused["code"] == "conflict"


async def test_appeal_a_timeout_over_the_gateway_and_reject_it(crew: Crew) -> None:
    cid, target = crew.community_id, crew.members[0]
    await crew.mod.ws.ok("timeout_member", community_id=cid, user_id=target.id,
                         duration_s=600, reason="spam")
    appeal = (await target.ws.ok("submit_appeal", community_id=cid, text="sorry"))["appeal"]
    assert appeal["action"] == "member.timeout"
    reply = await target.ws.request("submit_appeal", community_id=cid, text="sorry!")
    assert reply["code"] == "already_exists"
    decided = (await crew.mod.ws.ok("resolve_appeal", appeal_id=appeal["id"],
                                    accept=False, reason="no"))["appeal"]
    assert decided["status"] == "rejected"
    reply = await target.ws.request("send_message", channel_id=crew.general, content="x")
    assert reply["code"] == "timed_out"
    # A new timeout is a new action: it may be appealed again, and accepting lifts it.
    await crew.mod.ws.ok("timeout_member", community_id=cid, user_id=target.id,
                         duration_s=600, reason="again")
    second = (await target.ws.ok("submit_appeal", community_id=cid, text="ok"))["appeal"]
    await crew.mod.ws.ok("resolve_appeal", appeal_id=second["id"], accept=True)
    lifted = await target.ws.event("member_sanctioned", lifted=True)
    assert lifted["sanction"]["kind"] == "timeout"
    await target.ws.ok("send_message", channel_id=crew.general, content="thanks")


async def test_raid_signal_on_a_spike_of_joins(crew: Crew, http: aiohttp.ClientSession,
                                               live_server: RunningServer) -> None:
    a, b = await subscribed(crew)
    # A monitor of this test's own (low thresholds, flushed by hand rather than by the
    # app's once-a-second task); the join and send paths count into it from now on.
    app_services = services(live_server)
    raid = RaidMonitor(app_services.hub, LocalWindowCounter(), joins=3, joins_window_s=60,
                       messages=5, messages_window_s=60)
    app_services.raid = raid
    for _ in range(3):
        newcomer = await register(http, live_server.url)
        assert (await join(http, live_server.url, crew.invite,
                           newcomer["access_token"])).status == 200
    signals = await raid.flush()
    assert len(signals) == 1
    for client in (a, b):
        signal = await client.event("raid_signal")
        assert signal["kind"] == "joins" and signal["count"] == 3
        assert signal["threshold"] == 3 and signal["window_s"] == 60
    for i in range(6):
        await crew.members[i % 2].ws.ok("send_message", channel_id=crew.general,
                                        content=f"flood {i}")
    await raid.flush()
    assert (await a.event("raid_signal"))["kind"] == "messages"
    # Once per window: more joins in the same window signal nothing new.
    newcomer = await register(http, live_server.url)
    await join(http, live_server.url, crew.invite, newcomer["access_token"])
    assert await raid.flush() == []
