"""Moderation actions over real websockets, PostgreSQL and the REST API: each action's
effect, its permission check, its live events and its audit entry."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from persistence import audit as audit_db
from persistence.database import Database
from server.api_moderation import audit_retention
from tests.conftest import RunningServer
from tests.helpers import GatewayClient, bearer, register
from tests.mod_helpers import Crew, join, make_crew, rest


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def crew(live_server: RunningServer, http: aiohttp.ClientSession) -> Crew:
    return await make_crew(http, live_server.url, live_server.ws_url, members=3)


async def audit(client: GatewayClient, community_id: int, **filters: Any) -> list[dict[str, Any]]:
    data = await client.ok("fetch_audit_log", community_id=community_id, **filters)
    return list(data["entries"])


async def post(crew: Crew, who: GatewayClient, content: str) -> dict[str, Any]:
    return dict((await who.ok("send_message", channel_id=crew.general,
                              content=content))["message"])


# ------------------------------------------------------------------------- timeouts


async def ready_timeout(http: aiohttp.ClientSession, ws_url: str, token: str,
                        community_id: int) -> int | None:
    """``timed_out_until`` of the community in a fresh session's ``ready``."""
    client = await GatewayClient.connect(http, ws_url)
    ready = await client.identify(token)
    await client.close()
    [snapshot] = [c for c in ready["communities"] if c["community"]["id"] == community_id]
    until: int | None = snapshot.get("timed_out_until")
    return until


async def test_timeout_blocks_sends_reactions_threads_until_lifted(
        crew: Crew, live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    mod, member = crew.mod.ws, crew.member.ws
    assert await ready_timeout(http, live_server.ws_url, crew.member.token,
                               crew.community_id) is None
    message = await post(crew, crew.mods[1].ws, "hello")
    data = await mod.ok("timeout_member", community_id=crew.community_id,
                        user_id=crew.member.id, duration_s=600, reason="cool off")
    assert data["audit_id"]
    event = await member.event("member_sanctioned")
    assert event["sanction"]["kind"] == "timeout"
    assert event["sanction"]["reason"] == "cool off"
    assert event["sanction"]["audit_id"] == data["audit_id"]
    reply = await member.request("send_message", channel_id=crew.general, content="no")
    assert reply["op"] == "error" and reply["code"] == "timed_out", reply
    assert 590_000 < reply["retry_after_ms"] <= 600_000
    # A session opened now knows it from ready (a client closes its composer at once).
    until = await ready_timeout(http, live_server.ws_url, crew.member.token,
                                crew.community_id)
    assert until is not None and 590_000 < until - time.time() * 1000 <= 600_000
    reply = await member.request("add_reaction", channel_id=crew.general,
                                 message_id=message["id"], emoji="👍")
    assert reply["code"] == "timed_out"
    reply = await member.request("create_thread", channel_id=crew.general, name="t")
    assert reply["code"] == "timed_out"
    # Another member is unaffected.
    await post(crew, crew.members[1].ws, "still fine")
    [entry] = await audit(mod, crew.community_id, action="member.timeout")
    assert entry["actor_id"] == crew.mod.id and entry["target_id"] == crew.member.id
    assert entry["target_type"] == "user" and entry["reason"] == "cool off"
    assert entry["after"]["duration_s"] == 600
    await mod.ok("remove_timeout", community_id=crew.community_id, user_id=crew.member.id,
                 reason="ok now")
    lifted = await member.event("member_sanctioned")
    assert lifted["lifted"] is True
    assert await ready_timeout(http, live_server.ws_url, crew.member.token,
                               crew.community_id) is None
    await post(crew, member, "back")
    assert [e["action"] for e in await audit(mod, crew.community_id, target_id=crew.member.id)] \
        == ["member.untimeout", "member.timeout"]


async def test_who_may_sanction_whom(crew: Crew, http: aiohttp.ClientSession,
                                     live_server: RunningServer) -> None:
    cid = crew.community_id
    member, mod, admin = crew.member.ws, crew.mod.ws, crew.admin.ws
    # A member has no moderation rights.
    for op, fields in (("timeout_member", {"duration_s": 60}), ("kick_member", {}),
                       ("warn_member", {"reason": "x"}), ("ban_member", {})):
        reply = await member.request(op, community_id=cid, user_id=crew.members[1].id, **fields)
        assert reply["code"] == "forbidden", (op, reply)
    # A moderator cannot time out an admin, a peer, or the owner, nor ban (admins only).
    for target in (crew.admin.id, crew.mods[1].id, crew.owner.id):
        reply = await mod.request("timeout_member", community_id=cid, user_id=target,
                                  duration_s=60)
        assert reply["code"] == "forbidden", reply
    reply = await mod.request("ban_member", community_id=cid, user_id=crew.member.id)
    assert reply["code"] == "forbidden"
    # Nobody sanctions themselves; an admin can act on a moderator.
    reply = await admin.request("kick_member", community_id=cid, user_id=crew.admin.id)
    assert reply["code"] == "invalid_argument"
    await admin.ok("timeout_member", community_id=cid, user_id=crew.mod.id, duration_s=60)
    # A community you are not in does not exist for you.
    stranger = await register(http, live_server.url)
    client = await GatewayClient.identified(http, live_server.ws_url, stranger["access_token"])
    reply = await client.request("timeout_member", community_id=cid, user_id=crew.member.id,
                                 duration_s=60)
    assert reply["code"] == "not_found"
    reply = await client.request("fetch_audit_log", community_id=cid)
    assert reply["code"] == "not_found"
    reply = await member.request("fetch_audit_log", community_id=cid)
    assert reply["code"] == "forbidden"
    # A denied action leaves no audit entry.
    actions = [e["action"] for e in await audit(admin, cid) if e["action"] != "member.role"]
    assert actions == ["member.timeout"]


async def test_a_custom_role_can_sanction_only_below_it(crew: Crew) -> None:
    """A member holding a custom "helper" role with TIMEOUT_MEMBERS times out plain
    members, not moderators (fixed role first) nor a helper of the same position."""
    from rooms.realtime.permissions import Permission

    cid, admin = crew.community_id, crew.admin.ws
    helper, plain, peer = crew.members[0], crew.members[1], crew.members[2]
    role = (await admin.ok("create_role", community_id=cid, name="helper", position=10,
                           permissions=int(Permission.TIMEOUT_MEMBERS)))["role"]
    for person in (helper, peer):
        await admin.ok("set_member_roles", community_id=cid, user_id=person.id,
                       role_ids=[role["id"]])
    await helper.ws.ok("timeout_member", community_id=cid, user_id=plain.id, duration_s=60)
    for target in (crew.mod.id, peer.id):
        reply = await helper.ws.request("timeout_member", community_id=cid, user_id=target,
                                        duration_s=60)
        assert reply["code"] == "forbidden", reply
    reply = await helper.ws.request("kick_member", community_id=cid, user_id=plain.id)
    assert reply["code"] == "forbidden"  # the role grants timeouts only
    reply = await plain.ws.request("remove_timeout", community_id=cid, user_id=plain.id)
    assert reply["code"] == "forbidden"


# ----------------------------------------------------------------------- kick and ban


async def test_kick_removes_the_community_from_the_members_view_live(
        crew: Crew, http: aiohttp.ClientSession, live_server: RunningServer) -> None:
    cid, target = crew.community_id, crew.member
    await crew.mod.ws.ok("kick_member", community_id=cid, user_id=target.id, reason="rude")
    gone = await target.ws.event("community_unavailable")
    assert gone["community_id"] == cid
    assert gone["sanction"]["kind"] == "kick" and gone["sanction"]["reason"] == "rude"
    left = await crew.members[1].ws.event("member_leave")
    assert left["user_id"] == target.id
    reply = await target.ws.request("send_message", channel_id=crew.general, content="hi")
    assert reply["code"] == "not_found"
    # Messages posted after the kick do not reach the kicked session.
    await post(crew, crew.members[1].ws, "after the kick")
    await target.ws.no_event("message_create")
    [entry] = await audit(crew.admin.ws, cid, action="member.kick")
    assert entry["before"] == {"role": "member"} and entry["reason"] == "rude"
    # A kick is not a ban: the invite works again.
    assert (await join(http, live_server.url, crew.invite, target.token)).status == 200


async def test_ban_with_purge_deletes_for_every_viewer_and_keeps_them_out(
        crew: Crew, http: aiohttp.ClientSession, live_server: RunningServer) -> None:
    cid, target, viewer = crew.community_id, crew.member, crew.members[1].ws
    posted = [await post(crew, target.ws, f"spam {i}") for i in range(3)]
    for _ in posted:
        await viewer.event("message_create")
    data = await crew.admin.ws.ok("ban_member", community_id=cid, user_id=target.id,
                                  purge_hours=1, duration_s=3600, reason="spam")
    assert data["count"] == 3
    bulk = await viewer.event("message_delete_bulk")
    assert bulk["channel_id"] == crew.general
    assert sorted(bulk["message_ids"]) == sorted(m["id"] for m in posted)
    gone = await target.ws.event("community_unavailable")
    assert gone["sanction"]["kind"] == "ban" and gone["sanction"]["expires_at"]
    history = await viewer.ok("fetch_history", channel_id=crew.general)
    assert not any(m["author"]["id"] == target.id for m in history["messages"])
    reply = await join(http, live_server.url, crew.invite, target.token)
    assert reply.status == 403
    await crew.admin.ws.ok("unban_member", community_id=cid, user_id=target.id, reason="ok")
    assert (await join(http, live_server.url, crew.invite, target.token)).status == 200
    actions = [e["action"] for e in await audit(crew.admin.ws, cid, target_id=target.id)]
    assert actions == ["member.unban", "member.ban"]
    # Unbanning someone who is not banned changes nothing and audits nothing.
    data = await crew.admin.ws.ok("unban_member", community_id=cid, user_id=target.id)
    assert data["audit_id"] is None


async def test_preemptive_ban_of_a_non_member(crew: Crew, http: aiohttp.ClientSession,
                                              live_server: RunningServer) -> None:
    outsider = await register(http, live_server.url)
    await crew.admin.ws.ok("ban_member", community_id=crew.community_id,
                           user_id=outsider["user"]["id"], reason="known raider")
    reply = await join(http, live_server.url, crew.invite, outsider["access_token"])
    assert reply.status == 403


# --------------------------------------------------------------------------- deletes


async def test_moderator_delete_reaches_viewers_and_is_audited(crew: Crew) -> None:
    author, viewer = crew.member.ws, crew.members[1].ws
    message = await post(crew, author, "bad")
    await viewer.event("message_create")
    reply = await viewer.request("delete_message", channel_id=crew.general,
                                 message_id=message["id"])
    assert reply["code"] == "forbidden"
    await crew.mod.ws.ok("delete_message", channel_id=crew.general, message_id=message["id"],
                         reason="off topic")
    for client in (author, viewer):
        event = await client.event("message_delete")
        assert event["message_id"] == message["id"]
    [entry] = await audit(crew.mod.ws, crew.community_id, action="message.delete")
    assert entry["target_id"] == message["id"] and entry["reason"] == "off topic"
    assert entry["before"]["author_id"] == crew.member.id
    # Deleting your own message is not a moderation action: not audited.
    own = await post(crew, author, "mine")
    await author.ok("delete_message", channel_id=crew.general, message_id=own["id"])
    assert len(await audit(crew.mod.ws, crew.community_id, action="message.delete")) == 1


async def test_purge_last_n_and_by_user(crew: Crew) -> None:
    viewer = crew.members[1].ws
    mine = [await post(crew, crew.member.ws, f"m{i}") for i in range(4)]
    theirs = [await post(crew, viewer, f"v{i}") for i in range(2)]
    data = await crew.mod.ws.ok("purge_messages", community_id=crew.community_id,
                                channel_id=crew.general, count=3, reason="cleanup")
    assert data["count"] == 3
    bulk = await crew.admin.ws.event("message_delete_bulk")
    assert sorted(bulk["message_ids"]) == sorted([mine[3]["id"], *(m["id"] for m in theirs)])
    data = await crew.mod.ws.ok("purge_messages", community_id=crew.community_id,
                                user_id=crew.member.id, hours=1)
    assert data["count"] == 3
    history = await viewer.ok("fetch_history", channel_id=crew.general)
    assert [m["content"] for m in history["messages"]] == []
    reply = await crew.mod.ws.request("purge_messages", community_id=crew.community_id,
                                      count=3)
    assert reply["code"] == "invalid_argument"
    reply = await crew.member.ws.request("purge_messages", community_id=crew.community_id,
                                         channel_id=crew.general, count=3)
    assert reply["code"] == "forbidden"
    entries = await audit(crew.mod.ws, crew.community_id, action="message.purge")
    assert [e["after"]["count"] for e in entries] == [3, 3]


# --------------------------------------------------------------- warn, slow mode, lock


async def test_warn_reaches_the_member(crew: Crew) -> None:
    reply = await crew.mod.ws.request("warn_member", community_id=crew.community_id,
                                      user_id=crew.member.id, reason="  ")
    assert reply["code"] == "invalid_argument"  # a warning needs a reason
    await crew.mod.ws.ok("warn_member", community_id=crew.community_id,
                         user_id=crew.member.id, reason="keep it civil")
    event = await crew.member.ws.event("member_sanctioned")
    assert event["sanction"] == {"community_id": crew.community_id, "kind": "warn",
                                 "reason": "keep it civil", "expires_at": None,
                                 "audit_id": event["sanction"]["audit_id"]}
    await post(crew, crew.member.ws, "sorry")  # a warning does not silence


async def test_slow_mode_per_member_with_retry_after_and_bypass(crew: Crew) -> None:
    member, mod = crew.member.ws, crew.mod.ws
    data = await mod.ok("set_slowmode", channel_id=crew.general, seconds=5, reason="busy")
    assert data["channel"]["slowmode_s"] == 5
    update = await member.event("channel_update")
    assert update["channel"]["slowmode_s"] == 5
    await post(crew, member, "one")
    reply = await member.request("send_message", channel_id=crew.general, content="two")
    assert reply["code"] == "slowmode", reply
    assert 3_000 < reply["retry_after_ms"] <= 5_000
    await post(crew, crew.members[1].ws, "another member has their own interval")
    for i in range(3):  # moderators bypass slow mode
        await post(crew, mod, f"mod {i}")
    reply = await member.request("set_slowmode", channel_id=crew.general, seconds=0)
    assert reply["code"] == "forbidden"
    await mod.ok("set_slowmode", channel_id=crew.general, seconds=0)
    await member.event("channel_update")
    await post(crew, member, "free again")
    [entry, _] = await audit(mod, crew.community_id, action="channel.slowmode")
    assert entry["before"] == {"slowmode_s": 5} and entry["after"] == {"slowmode_s": 0}


async def test_locked_channel_only_staff_post(crew: Crew) -> None:
    member, mod = crew.member.ws, crew.mod.ws
    await mod.ok("set_channel_locked", channel_id=crew.general, locked=True, reason="raid")
    assert (await member.event("channel_update"))["channel"]["locked"] is True
    reply = await member.request("send_message", channel_id=crew.general, content="x")
    assert reply["code"] == "channel_locked"
    await post(crew, mod, "announcement while locked")
    await mod.ok("set_channel_locked", channel_id=crew.general, locked=False)
    await member.event("channel_update")
    await post(crew, member, "unlocked")
    assert len(await audit(mod, crew.community_id, action="channel.lock")) == 2


async def test_lockdown_pauses_joins_and_new_members_then_lifts(
        crew: Crew, http: aiohttp.ClientSession, live_server: RunningServer) -> None:
    cid = crew.community_id
    await crew.mod.ws.ok("set_lockdown", community_id=cid, enabled=True, member_age_s=3600,
                         account_age_s=0, reason="raid")
    event = await crew.member.ws.event("community_moderation_update")
    assert event == {"t": "community_moderation_update", "community_id": cid,
                     "lockdown": True, "member_age_s": 3600, "account_age_s": 0}
    reply = await crew.member.ws.request("send_message", channel_id=crew.general, content="x")
    assert reply["code"] == "lockdown"
    await post(crew, crew.mod.ws, "staff may post")
    newcomer = await register(http, live_server.url)
    async with http.post(f"{live_server.url}/api/v1/invites/{crew.invite}/join",
                         headers=bearer(newcomer["access_token"])) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "lockdown"
    await crew.mod.ws.ok("set_lockdown", community_id=cid, enabled=False)
    await crew.member.ws.event("community_moderation_update")
    await post(crew, crew.member.ws, "lifted")
    assert (await join(http, live_server.url, crew.invite, newcomer["access_token"])).status \
        == 200
    entries = await audit(crew.mod.ws, cid, action="community.lockdown")
    assert [e["after"]["lockdown"] for e in entries] == [False, True]


async def test_lockdown_state_is_loaded_at_identify(crew: Crew, http: aiohttp.ClientSession,
                                                    live_server: RunningServer) -> None:
    await crew.mod.ws.ok("set_lockdown", community_id=crew.community_id, enabled=True,
                         member_age_s=3600)
    fresh = await GatewayClient.identified(http, live_server.ws_url, crew.member.token)
    reply = await fresh.request("send_message", channel_id=crew.general, content="x")
    assert reply["code"] == "lockdown"
    # ...and shown in the snapshots (ready, and REST which builds community_available's).
    [snapshot] = [c for c in fresh.ready["communities"]
                  if c["community"]["id"] == crew.community_id]
    assert snapshot["lockdown"] is True and snapshot["lockdown_member_age_s"] == 3600
    async with http.get(f"{live_server.url}/api/v1/communities",
                        headers=bearer(crew.member.token)) as r:
        listed = [c for c in (await r.json())["communities"]
                  if c["community"]["id"] == crew.community_id]
    assert listed[0]["lockdown"] is True and listed[0]["lockdown_account_age_s"] == 86_400


async def test_timeout_is_loaded_at_identify(crew: Crew, http: aiohttp.ClientSession,
                                             live_server: RunningServer) -> None:
    await crew.mod.ws.ok("timeout_member", community_id=crew.community_id,
                         user_id=crew.member.id, duration_s=60)
    fresh = await GatewayClient.identified(http, live_server.ws_url, crew.member.token)
    reply = await fresh.request("send_message", channel_id=crew.general, content="x")
    assert reply["code"] == "timed_out"


# ------------------------------------------------------------------------- audit log


async def test_audit_log_filters_paging_csv_and_rest(
        crew: Crew, http: aiohttp.ClientSession, live_server: RunningServer) -> None:
    cid, mod, admin = crew.community_id, crew.mod.ws, crew.admin.ws
    # Setting up the crew (role changes) is audited too: start after it.
    setup = await audit(admin, cid)
    assert {e["action"] for e in setup} == {"member.role"}
    t0 = setup[0]["created_at"] + 1
    await mod.ok("warn_member", community_id=cid, user_id=crew.member.id, reason="=cmd|x")
    await mod.ok("timeout_member", community_id=cid, user_id=crew.member.id, duration_s=30)
    await admin.ok("timeout_member", community_id=cid, user_id=crew.members[1].id,
                   duration_s=30)
    await admin.ok("set_slowmode", channel_id=crew.general, seconds=2)
    everything = await audit(admin, cid, since=t0)
    assert [e["action"] for e in everything] == [
        "channel.slowmode", "member.timeout", "member.timeout", "member.warn"]
    assert await audit(admin, cid) == everything + setup
    assert [e["actor_id"] for e in await audit(admin, cid, actor_id=crew.mod.id)] == \
        [crew.mod.id, crew.mod.id]
    assert len(await audit(admin, cid, action="member.", since=t0)) == 3
    assert len(await audit(admin, cid, action="member.")) == 3 + len(setup)
    assert len(await audit(admin, cid, target_type="channel")) == 1
    assert [e["action"] for e in await audit(admin, cid, target_id=crew.members[1].id,
                                             target_type="user", since=t0)] == \
        ["member.timeout"]
    page = await admin.ok("fetch_audit_log", community_id=cid, since=t0, limit=3)
    assert page["has_more"] is True and len(page["entries"]) == 3
    rest_page = await admin.ok("fetch_audit_log", community_id=cid, since=t0,
                               before_id=page["entries"][-1]["id"])
    assert [e["action"] for e in rest_page["entries"]] == ["member.warn"]
    assert rest_page["has_more"] is False
    future = everything[0]["created_at"] + 60_000
    assert await audit(admin, cid, since=future) == []
    assert len(await audit(admin, cid, since=t0, until=future)) == 4
    assert len(await audit(admin, cid, since=t0, until=2**53 - 1)) == 4  # far future: no bound
    # REST: same page, and the CSV export (streamed), for VIEW_AUDIT_LOG only.
    base = f"{live_server.url}/api/v1/communities/{cid}"
    async with http.get(f"{base}/audit-log?action=member.timeout",
                        headers=bearer(crew.admin.token)) as reply:
        assert reply.status == 200
        assert len((await reply.json())["entries"]) == 2
    async with http.get(f"{base}/audit-log.csv?since={t0}",
                        headers=bearer(crew.admin.token)) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(await reply.text())))
    assert rows[0][:5] == ["id", "created_at", "community_id", "actor_id", "action"]
    assert [r[4] for r in rows[1:]] == [e["action"] for e in everything]
    warn = rows[-1]
    assert warn[7] == "'=cmd|x"  # a formula in a reason is defused
    async with http.get(f"{base}/audit-log.csv", headers=bearer(crew.admin.token)) as reply:
        assert len(list(csv.reader(io.StringIO(await reply.text())))) == 1 + 4 + len(setup)
    async with http.get(f"{base}/audit-log.csv", headers=bearer(crew.member.token)) as reply:
        assert reply.status == 403
    async with http.get(f"{base}/audit-log.csv") as reply:
        assert reply.status == 401


async def test_rest_actions_share_the_checks(crew: Crew, http: aiohttp.ClientSession,
                                            live_server: RunningServer) -> None:
    status, body = await rest(http, live_server.url, crew.member.token, "kick_member",
                              community_id=crew.community_id, user_id=crew.members[1].id)
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body = await rest(http, live_server.url, crew.mod.token, "timeout_member",
                              community_id=crew.community_id, user_id=crew.member.id,
                              duration_s=10**9)
    assert status == 400 and body["error"]["code"] == "invalid_request"  # past the schema's 28 d
    status, body = await rest(http, live_server.url, crew.mod.token, "no_such_op")
    assert status == 404
    status, body = await rest(http, live_server.url, crew.mod.token, "timeout_member",
                              community_id=crew.community_id, user_id=crew.member.id,
                              duration_s=60, reason="via REST")
    assert status == 200 and body["type"] == "mod_action" and body["audit_id"]
    event = await crew.member.ws.event("member_sanctioned")
    assert event["sanction"]["reason"] == "via REST"


async def test_audit_retention_deletes_only_old_entries(db: Database) -> None:
    async with db.transaction("seed") as conn:
        owner = await conn.fetchval(
            "INSERT INTO users (username, display_name) VALUES ('o', 'o') RETURNING id")
        cid = await conn.fetchval(
            "INSERT INTO communities (name, owner_id) VALUES ('c', $1) RETURNING id", owner)
        ids = [await audit_db.record(conn, community_id=cid, actor_id=owner,
                                     action="member.warn", target_type="user",
                                     target_id=owner, reason=str(i), before=None,
                                     after={"i": i}) for i in range(5)]
        await conn.execute("UPDATE audit_log SET created_at = now() - interval '100 days'"
                           " WHERE id = ANY($1::bigint[])", ids[:3])
    async with db.connection() as conn:
        purged = await audit_db.purge_older_than(
            conn, dt.datetime.now(dt.UTC) - dt.timedelta(days=30), batch=2)
        left = await audit_db.query(conn, audit_db.AuditFilter(community_id=cid), limit=10)
    assert purged == 3
    assert [e.id for e in left] == ids[:2:-1]
    assert left[0].after == {"i": 4}


async def test_retention_task_applies_the_configured_policy(db: Database) -> None:
    """The app's background task (server/api_moderation.py: audit_retention) deletes
    entries past HEARTH_AUDIT_RETENTION_DAYS and ban rows that have ended."""
    async with db.transaction("seed") as conn:
        owner = await conn.fetchval(
            "INSERT INTO users (username, display_name) VALUES ('o', 'o') RETURNING id")
        cid = await conn.fetchval(
            "INSERT INTO communities (name, owner_id) VALUES ('c', $1) RETURNING id", owner)
        old, new = [await audit_db.record(conn, community_id=cid, actor_id=owner,
                                          action="member.ban", target_type="user",
                                          target_id=owner, reason=None, before=None,
                                          after=None) for _ in range(2)]
        await conn.execute("UPDATE audit_log SET created_at = now() - interval '8 days'"
                           " WHERE id = $1", old)
        await conn.execute(
            "INSERT INTO community_bans (community_id, user_id, audit_id, expires_at)"
            " VALUES ($1, $2, $3, now() - interval '1 minute')", cid, owner, old)
    task = asyncio.ensure_future(audit_retention(db, days=7, every_s=3600))
    try:
        async with asyncio.timeout(10):
            while True:
                async with db.connection() as conn:
                    ids = await conn.fetch("SELECT id FROM audit_log ORDER BY id")
                    bans = await conn.fetchval("SELECT count(*) FROM community_bans")
                if [r["id"] for r in ids] == [new] and bans == 0:
                    break
                await asyncio.sleep(0.05)
    finally:
        task.cancel()


async def test_automod_timeout_has_no_actor_and_spares_staff(
        crew: Crew, live_server: RunningServer) -> None:
    from rooms.errors import RequestError
    from server.app import SERVICES

    assert live_server.app is not None
    moderation = live_server.app[SERVICES].moderation
    audit_id = await moderation.timeout_member(community_id=crew.community_id,
                                               user_id=crew.member.id, duration_s=60,
                                               reason="automod rule 'caps'")
    event = await crew.member.ws.event("member_sanctioned")
    assert event["sanction"]["audit_id"] == audit_id
    [entry] = await audit(crew.admin.ws, crew.community_id, action="member.timeout")
    assert entry["actor_id"] is None and entry["reason"] == "automod rule 'caps'"
    with pytest.raises(RequestError):
        await moderation.timeout_member(community_id=crew.community_id, user_id=crew.mod.id,
                                        duration_s=60, reason="automod")
    await post(crew, crew.mod.ws, "staff unaffected")


def test_moderation_settings_are_read_and_checked() -> None:
    from server.config import ConfigError, load_config

    config = load_config(environ={"HEARTH_AUDIT_RETENTION_DAYS": "30",
                                  "HEARTH_RAID_JOINS": "50", "HEARTH_RAID_JOINS_WINDOW_S": "120"})
    assert (config.audit_retention_days, config.raid_joins, config.raid_joins_window_s) == \
        (30, 50, 120)
    assert load_config(environ={}).audit_retention_days == 365
    for key, value in (("HEARTH_AUDIT_RETENTION_DAYS", "-1"), ("HEARTH_RAID_MESSAGES", "-5"),
                       ("HEARTH_RAID_MESSAGES_WINDOW_S", "0")):
        with pytest.raises(ConfigError, match=key):
            load_config(environ={key: value})
