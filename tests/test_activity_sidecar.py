"""The activity sidecar mounted in the default ``hearth serve`` (in-process): outbox in,
``activity_recorded`` out, and its gateway request ``fetch_activity``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

import sidecars.activity
from persistence.database import Database
from persistence.migrate import migrate
from protocol.sidecar import ActivityKind
from sidecars.activity import store
from sidecars.activity.events import Activity
from tests.conftest import RunningServer
from tests.helpers import GatewayClient, bearer, register


async def test_activity_over_the_gateway(live_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        me = await register(http, live_server.url)
        outsider = await register(http, live_server.url)
        async with http.post(f"{live_server.url}/api/v1/communities", json={"name": "a"},
                             headers=bearer(me["access_token"])) as reply:
            created = await reply.json()
            assert reply.status == 201, created
        cid = created["community"]["id"]
        channel_id = created["channels"][0]["id"]
        client = await GatewayClient.identified(http, live_server.ws_url, me["access_token"])
        for i in range(3):
            await client.ok("send_message", channel_id=channel_id, content=f"m{i}",
                            nonce=f"n{i}")
        totals = []
        for _ in range(3):
            got = await client.event("activity_recorded", timeout=20, kind="message",
                                     community_id=cid)
            totals.append(got["total"])
        assert totals == [1, 2, 3]  # each event's own total, batched or not
        got = await client.ok("fetch_activity", community_id=cid, limit=2)
        assert got["type"] == "activity"
        assert [i["kind"] for i in got["items"]] == ["message", "message"]
        assert got["totals"]["message"] == 3 and got["totals"]["joined"] == 1
        other = await GatewayClient.identified(http, live_server.ws_url,
                                               outsider["access_token"])
        refused = await other.request("fetch_activity", community_id=cid,
                                      user_id=me["user"]["id"])
        assert refused["op"] == "error" and refused["code"] == "not_found", refused
        refused = await client.request("fetch_activity", community_id=cid, limit=0)
        assert refused["op"] == "error", refused
        await other.close()
        await client.close()


async def test_only_staff_or_a_key_read_another_members_activity(
        live_server: RunningServer) -> None:
    """Activity names messages (ids, times, totals) in channels a reader may not see: a
    member reads their own, staff and a ``members:read`` key anyone's; another member is
    refused over REST and the gateway. A key's read is audited without a live
    moderator-feed event (a publish, which members see, still has one)."""
    base = live_server.url
    async with aiohttp.ClientSession() as http:
        people = {n: await register(http, base)
                  for n in ("owner", "moderator", "member", "member2", "outsider")}
        ids = {n: p["user"]["id"] for n, p in people.items()}

        def tok(who: str) -> dict[str, str]:
            return bearer(people[who]["access_token"])

        async with http.post(f"{base}/api/v1/communities", json={"name": "a"},
                             headers=tok("owner")) as reply:
            created = await reply.json()
            assert reply.status == 201, created
        cid = created["community"]["id"]
        async with http.post(f"{base}/api/v1/communities/{cid}/invites", json={},
                             headers=tok("owner")) as reply:
            code = (await reply.json())["code"]
        for who in ("moderator", "member", "member2"):
            async with http.post(f"{base}/api/v1/invites/{code}/join",
                                 headers=tok(who)) as reply:
                assert reply.status in (200, 201), await reply.text()
        async with http.patch(f"{base}/api/v1/communities/{cid}/members/{ids['moderator']}",
                              json={"role": "moderator"}, headers=tok("owner")) as reply:
            assert reply.status == 200, await reply.text()

        async def read(who: str, whose: str, key: str | None = None) -> tuple[int, Any]:
            headers = bearer(key) if key else tok(who)
            async with http.get(f"{base}/api/v1/communities/{cid}/members/{ids[whose]}"
                                "/activity", headers=headers) as reply:
                return reply.status, await reply.json()

        # The joins reach the activity tables through the outbox subscriber, after
        # their commit: wait until staff can read each join before checking who may.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        for whose in ("member", "member2"):
            while (await read("owner", whose))[1].get("totals", {}).get("joined") != 1:
                assert loop.time() < deadline, f"{whose}'s join never recorded"
                await asyncio.sleep(0.05)
        for who, whose, want in (("member", "member", 200), ("member", "member2", 403),
                                 ("member", "owner", 403), ("moderator", "member", 200),
                                 ("owner", "member2", 200), ("outsider", "member", 404)):
            status, body = await read(who, whose)
            assert status == want, (who, whose, body)
            if want == 403:
                assert body["error"]["code"] == "forbidden", body
            if want == 200:
                assert body["totals"]["joined"] == 1, body
        member = await GatewayClient.identified(http, live_server.ws_url,
                                                people["member"]["access_token"])
        refused = await member.request("fetch_activity", community_id=cid,
                                       user_id=ids["member2"])
        assert refused["op"] == "error" and refused["code"] == "forbidden", refused
        assert (await member.ok("fetch_activity", community_id=cid))["totals"]["joined"] == 1
        moderator = await GatewayClient.identified(http, live_server.ws_url,
                                                   people["moderator"]["access_token"])
        got = await moderator.ok("fetch_activity", community_id=cid, user_id=ids["member"])
        assert got["totals"]["joined"] == 1

        async with http.post(f"{base}/api/v1/communities/{cid}/service-keys",
                             json={"name": "stats", "scopes": ["members:read",
                                                               "events:publish"]},
                             headers=tok("owner")) as reply:
            key = await reply.json()
            assert reply.status == 201, key
        owner = await GatewayClient.identified(http, live_server.ws_url,
                                               people["owner"]["access_token"])
        await owner.ok("subscribe_mod_feed", community_id=cid)
        status, body = await read("owner", "member2", key["secret"])
        assert status == 200, body
        async with http.post(f"{base}/api/v1/service/communities/{cid}/events",
                             headers=bearer(key["secret"]),
                             json={"user_id": ids["member"], "event": {
                                 "t": "activity_recorded", "community_id": cid,
                                 "kind": "live", "total": 1, "at": 1_700_000_000_000}}
                             ) as reply:
            assert reply.status == 204, await reply.text()
        # the feed carries the publish, and nothing of the read before it
        while (entry := (await owner.event("mod_action", timeout=10))["entry"])[
                "action"] == "service_key.create":
            pass
        assert entry["action"] == "service.publish", entry
        conn = await asyncpg.connect(live_server.database_url)
        try:
            reads = await conn.fetchval("SELECT count(*) FROM audit_log WHERE"
                                        " community_id = $1 AND action = 'activity.read'", cid)
        finally:
            await conn.close()
        assert reads == 1
        for client in (member, moderator, owner):
            await client.close()


async def test_a_batch_is_recorded_in_one_statement_with_each_items_own_total(
        database_url: str) -> None:
    """The recorder writes a whole outbox batch at once; each item still gets the total
    as it stood after it (what ``activity_recorded`` tells the member), members and
    kinds apart."""
    db = Database()
    await db.open(database_url)
    try:
        await migrate(db.pool, {"activity": Path(sidecars.activity.__file__).parent
                                / "migrations"})
        message, joined = ActivityKind.MESSAGE, ActivityKind.JOINED
        items = [("e1", Activity(1, 7, message, 100, None), 1),
                 ("e2", Activity(1, 8, message, 101, None), 2),
                 ("e3", Activity(1, 7, message, 102, None), 3),
                 ("e4", Activity(1, 7, joined, None, None), 4),
                 ("e5", Activity(1, 7, message, 103, None), 5)]
        async with db.transaction("t") as conn:
            assert await store.record_batch_txn(conn, items) == [1, 1, 2, 1, 3]
        async with db.transaction("t") as conn:
            assert await store.record_batch_txn(conn, items[:2]) == [4, 2]
            assert await store.totals(conn, 1, 7) == {"message": 4, "joined": 1}
            assert [e.event_id for e in await store.recent(conn, 1, 7, 10)] == [
                "e1", "e5", "e4", "e3", "e1"]
    finally:
        await db.close()
