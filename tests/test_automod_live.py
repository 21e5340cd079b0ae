"""Automod against a real server: rules saved over REST, messages over websockets,
real PostgreSQL; the cross-node test adds a second server process and real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import RunningServer, start_server_process, stop_server_process
from tests.helpers import GatewayClient, bearer, register


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Community:
    """An owner (admin of everything) and a plain member, in a fresh community."""

    def __init__(self, owner: dict[str, Any], member: dict[str, Any], community_id: int,
                 general: int) -> None:
        self.owner = owner
        self.member = member
        self.id = community_id
        self.general = general


async def make_community(http: aiohttp.ClientSession, base: str) -> Community:
    owner, member = await register(http, base), await register(http, base)
    async with http.post(f"{base}/api/v1/communities", json={"name": "automod"},
                         headers=bearer(owner["access_token"])) as reply:
        assert reply.status == 201
        created = await reply.json()
    community_id = created["community"]["id"]
    general = next(c["id"] for c in created["channels"] if c["name"] == "general")
    async with http.post(f"{base}/api/v1/communities/{community_id}/invites", json={},
                         headers=bearer(owner["access_token"])) as reply:
        code = (await reply.json())["code"]
    async with http.post(f"{base}/api/v1/invites/{code}/join",
                         headers=bearer(member["access_token"])) as reply:
        assert reply.status == 200
    return Community(owner, member, community_id, general)


async def rest(http: aiohttp.ClientSession, method: str, url: str, token: str,
               body: Any = None) -> tuple[int, Any]:
    async with http.request(method, url, json=body, headers=bearer(token)) as reply:
        return reply.status, (await reply.json() if reply.status != 204 else None)


def keyword_rule(*words: str, **extra: Any) -> dict[str, Any]:
    return {"name": "no bad words", "trigger": {"type": "keyword", "keywords": list(words)},
            "actions": ["block"], **extra}


async def test_a_rule_saved_over_rest_blocks_and_changes_apply_at_once(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    base = live_server.url
    c = await make_community(http, base)
    rules_url = f"{base}/api/v1/communities/{c.id}/automod/rules"
    owner, member = c.owner["access_token"], c.member["access_token"]
    client = await GatewayClient.identified(http, live_server.ws_url, member)
    # The cache is warm (no rules) before the first rule exists.
    first = await client.ok("send_message", channel_id=c.general, content="hello")

    status, created = await rest(http, "POST", rules_url, owner, keyword_rule("forbidden*"))
    assert status == 201, created
    rule = created["rule"]
    assert rule["trigger"] == {"type": "keyword", "keywords": ["forbidden*"], "allow": []}

    refused = await client.request("send_message", channel_id=c.general,
                                   content="some FORBIDDENstuff here")
    assert refused["op"] == "error"
    assert refused["code"] == "automod_blocked"
    assert "no bad words" in refused["message"]
    # The edit path is checked too, and the message stays as it was.
    refused = await client.request("edit_message", channel_id=c.general,
                                   message_id=first["message"]["id"], content="forbidden")
    assert refused["code"] == "automod_blocked"
    history = await client.ok("fetch_history", channel_id=c.general)
    assert [m["content"] for m in history["messages"]] == ["hello"]

    # The owner is exempt (exempt_moderators defaults to true).
    admin = await GatewayClient.identified(http, live_server.ws_url, owner)
    await admin.ok("send_message", channel_id=c.general, content="forbidden fruit")

    # Change the rule: the old word passes, the new one is blocked, no restart.
    status, updated = await rest(http, "PUT", f"{rules_url}/{rule['id']}", owner,
                                 keyword_rule("other"))
    assert status == 200, updated
    await client.ok("send_message", channel_id=c.general, content="forbiddenstuff")
    refused = await client.request("send_message", channel_id=c.general, content="an other")
    assert refused["code"] == "automod_blocked"
    # Disabled, then deleted.
    status, _ = await rest(http, "PUT", f"{rules_url}/{rule['id']}", owner,
                           keyword_rule("other", enabled=False))
    assert status == 200
    await client.ok("send_message", channel_id=c.general, content="an other one")
    status, _ = await rest(http, "DELETE", f"{rules_url}/{rule['id']}", owner)
    assert status == 204
    status, listed = await rest(http, "GET", rules_url, owner)
    assert (status, listed) == (200, {"rules": []})

    # Every change is in the audit log, with before and after.
    conn = await asyncpg.connect(live_server.database_url)
    try:
        rows = await conn.fetch(
            "SELECT action, actor_id, target_id, before IS NULL AS no_before,"
            " after IS NULL AS no_after FROM audit_log WHERE community_id = $1 ORDER BY id",
            c.id)
    finally:
        await conn.close()
    assert [(r["action"], r["no_before"], r["no_after"]) for r in rows] == [
        ("automod.rule.create", True, False), ("automod.rule.update", False, False),
        ("automod.rule.update", False, False), ("automod.rule.delete", False, True)]
    assert {r["actor_id"] for r in rows} == {c.owner["user"]["id"]}
    assert {r["target_id"] for r in rows} == {rule["id"]}
    await client.close()
    await admin.close()


async def test_rules_need_manage_automod_and_bad_rules_are_refused(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    base = live_server.url
    c = await make_community(http, base)
    rules_url = f"{base}/api/v1/communities/{c.id}/automod/rules"
    owner, member = c.owner["access_token"], c.member["access_token"]
    status, body = await rest(http, "POST", rules_url, member, keyword_rule("x"))
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await rest(http, "GET", rules_url, member)
    assert status == 403
    stranger = await register(http, base)
    status, body = await rest(http, "GET", rules_url, stranger["access_token"])
    assert (status, body["error"]["code"]) == (404, "not_found")

    catastrophic = {"name": "re", "actions": ["block"],
                    "trigger": {"type": "regex", "patterns": ["(a+)+$"]}}
    status, body = await rest(http, "POST", rules_url, owner, catastrophic)
    assert status == 400
    assert body["error"]["code"] == "invalid_argument"
    assert "nested unbounded quantifiers" in body["error"]["message"]
    status, body = await rest(http, "POST", rules_url, owner,
                              {"name": "x", "actions": ["explode"],
                               "trigger": {"type": "caps"}})
    assert (status, body["error"]["code"]) == (400, "invalid_request")  # fails the schema
    other = await make_community(http, base)
    status, body = await rest(http, "POST", rules_url, owner,
                              keyword_rule("x", channel_id=other.general))
    assert status == 400 and "not in this community" in body["error"]["message"]
    status, listed = await rest(http, "GET", rules_url, owner)
    assert listed == {"rules": []}       # nothing refused was stored


async def test_the_lists_of_a_community_share_one_size_limit(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    base = live_server.url
    c = await make_community(http, base)
    rules_url = f"{base}/api/v1/communities/{c.id}/automod/rules"
    owner = c.owner["access_token"]
    big = [f"{i:04d}" + "x" * 16 for i in range(450)]                  # 9,000 characters
    status, body = await rest(http, "POST", rules_url, owner, keyword_rule(*big))
    assert status == 201, body
    rule_id = body["rule"]["id"]
    more = {"name": "re", "actions": ["flag"],
            "trigger": {"type": "regex", "patterns": ["y" * 250] * 9}}  # 2,250 more
    status, body = await rest(http, "POST", rules_url, owner, more)
    assert (status, body["error"]["code"]) == (400, "invalid_argument")
    assert "11250 characters; at most 10000" in body["error"]["message"]
    # Replacing the big rule by a smaller one frees the room (its own size is not counted
    # twice).
    status, body = await rest(http, "PUT", f"{rules_url}/{rule_id}", owner,
                              keyword_rule(*big[:300]))
    assert status == 200, body
    status, body = await rest(http, "POST", rules_url, owner, more)
    assert status == 201, body


async def test_spam_rules_over_the_gateway(live_server: RunningServer,
                                           http: aiohttp.ClientSession) -> None:
    base = live_server.url
    c = await make_community(http, base)
    rules_url = f"{base}/api/v1/communities/{c.id}/automod/rules"
    owner = c.owner["access_token"]
    for rule in (
        {"name": "slow down", "actions": ["block"],
         "trigger": {"type": "rate", "max_messages": 3, "window_s": 30}},
        {"name": "no invites", "actions": ["block"], "trigger": {"type": "link_spam"}},
        {"name": "mentions", "actions": ["block"],
         "trigger": {"type": "mention_spam", "max_mentions": 2}},
    ):
        status, body = await rest(http, "POST", rules_url, owner, rule)
        assert status == 201, body
    client = await GatewayClient.identified(http, live_server.ws_url, c.member["access_token"])
    refused = await client.request("send_message", channel_id=c.general,
                                   content="join us at discord.gg/xyz")
    assert "no invites" in refused["message"]
    refused = await client.request("send_message", channel_id=c.general,
                                   content="<@1> <@2> <@3>")
    assert "mentions" in refused["message"]
    # Those two attempts count towards the rate: one more passes, the next is refused.
    await client.ok("send_message", channel_id=c.general, content="one")
    refused = await client.request("send_message", channel_id=c.general, content="two")
    assert refused["code"] == "automod_blocked" and "slow down" in refused["message"]
    await client.close()


async def test_flag_alert_and_timeout_reach_the_moderators(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    base = live_server.url
    c = await make_community(http, base)
    rules_url = f"{base}/api/v1/communities/{c.id}/automod/rules"
    owner = c.owner["access_token"]
    status, body = await rest(http, "POST", rules_url, owner, {
        "name": "suspicious", "actions": ["flag", "alert"],
        "trigger": {"type": "keyword", "keywords": ["*crypto*"], "allow": ["cryptography"]}})
    assert status == 201, body
    status, body = await rest(http, "POST", rules_url, owner, {
        "name": "shouting", "actions": ["block", "timeout"], "timeout_s": 120,
        "trigger": {"type": "caps", "max_percent": 80, "min_letters": 8}})
    assert status == 201, body
    moderator = await GatewayClient.identified(http, live_server.ws_url, owner)
    await moderator.ok("subscribe_mod_feed", community_id=c.id)
    client = await GatewayClient.identified(http, live_server.ws_url, c.member["access_token"])

    await client.ok("send_message", channel_id=c.general, content="cryptography is fun")
    await moderator.no_event("automod_alert")
    sent = await client.ok("send_message", channel_id=c.general, content="free CryptoCoins!")
    message_id = sent["message"]["id"]          # flagged messages are accepted
    alert = await moderator.event("automod_alert")
    assert (alert["rule"], alert["message_id"], alert["user_id"]) == (
        "suspicious", message_id, c.member["user"]["id"])
    assert sorted(alert["actions"]) == ["alert", "flag"]
    item = (await moderator.event("review_item"))["item"]
    assert (item["message_id"], item["flag_count"]) == (message_id, 1)
    assert "automod:suspicious" in item["sources"]
    queue = await moderator.ok("fetch_review_queue", community_id=c.id)
    assert [i["message_id"] for i in queue["items"]] == [message_id]
    # A second hit within 10 s is flagged but not alerted again.
    again = await client.ok("send_message", channel_id=c.general, content="more crypto")
    item = (await moderator.event("review_item"))["item"]
    assert item["message_id"] == again["message"]["id"]
    await moderator.no_event("automod_alert")

    # Block + timeout: the shout is refused and the member cannot post at all afterwards.
    refused = await client.request("send_message", channel_id=c.general,
                                   content="EVERYONE LISTEN TO ME")
    assert refused["code"] == "automod_blocked" and "shouting" in refused["message"]
    later = await client.request("send_message", channel_id=c.general, content="sorry")
    assert later["code"] == "timed_out"
    history = await moderator.ok("fetch_history", channel_id=c.general)
    assert "EVERYONE LISTEN TO ME" not in [m["content"] for m in history["messages"]]
    await client.close()
    await moderator.close()


async def test_custom_role_exemptions_follow_role_changes_live(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    base = live_server.url
    c = await make_community(http, base)
    owner = c.owner["access_token"]
    member_id = c.member["user"]["id"]
    status, body = await rest(http, "POST", f"{base}/api/v1/communities/{c.id}/roles", owner,
                              {"name": "trusted"})
    assert status == 201, body
    trusted = body["role"]["id"]
    status, body = await rest(http, "POST", f"{base}/api/v1/communities/{c.id}/roles", owner,
                              {"name": "helper", "permissions": 1 << 10})  # MANAGE_MESSAGES
    assert status == 201, body
    helper = body["role"]["id"]
    status, body = await rest(http, "POST", f"{base}/api/v1/communities/{c.id}/automod/rules",
                              owner, keyword_rule("spam", exempt_role_ids=[trusted]))
    assert status == 201, body
    client = await GatewayClient.identified(http, live_server.ws_url, c.member["access_token"])
    roles_url = f"{base}/api/v1/communities/{c.id}/members/{member_id}/roles"

    async def send_spam() -> str:
        reply = await client.request("send_message", channel_id=c.general, content="spam")
        return str(reply.get("code", reply["op"]))

    assert await send_spam() == "automod_blocked"
    for role_ids, expected in (([trusted], "ok"), ([], "automod_blocked"),
                               ([helper], "ok")):    # a custom role carrying MANAGE_MESSAGES
        status, body = await rest(http, "PUT", roles_url, owner, {"role_ids": role_ids})
        assert status == 200, body
        for _ in range(40):  # the session's view follows the control event (< 2 s)
            if (got := await send_spam()) == expected:
                break
            await asyncio.sleep(0.05)
        assert got == expected, (role_ids, got)
    await client.close()


async def test_a_lost_invalidation_is_repaired_by_the_cache_expiry(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    """A rule written while this node missed the bus notice (simulated by writing the
    row directly) applies once the cached set expires; no message waits for the
    re-read (the expired set serves while it runs)."""
    from server.app import SERVICES

    service = live_server.app[SERVICES].automod
    now = [1000.0]
    service.clock = lambda: now[0]
    c = await make_community(http, live_server.url)
    client = await GatewayClient.identified(http, live_server.ws_url, c.member["access_token"])
    await client.ok("send_message", channel_id=c.general, content="spam 1")   # cached: none
    conn = await asyncpg.connect(live_server.database_url)
    try:
        await conn.execute(
            "INSERT INTO automod_rules (community_id, name, kind, config, actions)"
            " VALUES ($1, 'late', 'keyword', $2::jsonb, '{block}')",
            c.id, '{"type": "keyword", "keywords": ["spam"]}')
    finally:
        await conn.close()
    await client.ok("send_message", channel_id=c.general, content="spam 2")   # still cached
    loads = service.loads
    now[0] += 61                                                           # expired
    await client.ok("send_message", channel_id=c.general, content="spam 3")   # stale served
    for _ in range(50):
        if service.loads > loads:
            break
        await asyncio.sleep(0.02)
    refused = await client.request("send_message", channel_id=c.general, content="spam 4")
    assert refused["code"] == "automod_blocked" and "late" in refused["message"]
    await client.close()


async def test_a_rule_saved_on_one_node_applies_on_another(
        database_url: str, redis_url: str, http: aiohttp.ClientSession) -> None:
    node_a = start_server_process(database_url, HEARTH_REDIS_URL=redis_url)
    node_b = start_server_process(database_url, HEARTH_REDIS_URL=redis_url)
    try:
        c = await make_community(http, node_a.url)
        client = await GatewayClient.identified(http, node_b.ws_url, c.member["access_token"])
        await client.ok("send_message", channel_id=c.general, content="spam before")  # warm
        status, _ = await rest(http, "POST",
                               f"{node_a.url}/api/v1/communities/{c.id}/automod/rules",
                               c.owner["access_token"], keyword_rule("spam"))
        assert status == 201
        loop = asyncio.get_running_loop()
        saved = loop.time()
        for attempt in range(40):
            reply = await client.request("send_message", channel_id=c.general,
                                         content=f"spam {attempt}")
            if reply["op"] == "error":
                assert reply["code"] == "automod_blocked"
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("node B never applied the rule saved on node A")
        assert loop.time() - saved < 1.5   # the bus, not the 60 s cache expiry
        await client.close()
    finally:
        stop_server_process(node_a)
        stop_server_process(node_b)
