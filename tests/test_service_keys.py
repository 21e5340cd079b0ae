"""Service principals over REST on a real server and PostgreSQL: keys shown once and
stored hashed, only owners and admins manage them, a key with the wrong scope, of
another community, expired or revoked is refused, the rate limit, and every use
audited; a billing-style tier change needs no rank and reaches the member live."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import RunningServer
from tests.helpers import GatewayClient, bearer, register


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _json(http: aiohttp.ClientSession, method: str, url: str,
                headers: dict[str, str] | None = None, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, headers=headers, **kw) as reply:
        body = await reply.json()
        return reply.status, body


async def _community(http: aiohttp.ClientSession, base: str,
                     admins: tuple[str, ...] = ("admin",)) -> dict[str, Any]:
    """An owner, an admin (or the ``admins`` named), a member and an outsider around one
    community."""
    people = {n: await register(http, base) for n in ("owner", *admins, "member", "outsider")}
    token = people["owner"]["access_token"]
    status, created = await _json(http, "POST", f"{base}/api/v1/communities",
                                  bearer(token), json={"name": "keys"})
    assert status == 201, created
    cid = created["community"]["id"]
    status, invite = await _json(http, "POST", f"{base}/api/v1/communities/{cid}/invites",
                                 bearer(token), json={})
    assert status == 201, invite
    for name in (*admins, "member"):
        async with http.post(f"{base}/api/v1/invites/{invite['code']}/join",
                             headers=bearer(people[name]["access_token"])) as reply:
            assert reply.status in (200, 201), await reply.text()
    for name in admins:
        uid = people[name]["user"]["id"]
        status, body = await _json(http, "PATCH",
                                   f"{base}/api/v1/communities/{cid}/members/{uid}",
                                   bearer(token), json={"role": "admin"})
        assert status == 200, body
    return {"cid": cid, "people": people, "general": created["channels"][0]["id"]}


def _tok(c: dict[str, Any], who: str) -> dict[str, str]:
    return bearer(c["people"][who]["access_token"])


async def test_keys_managed_by_owner_and_admin_only(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    base = live_server.url
    c = await _community(http, base)
    keys = f"{base}/api/v1/communities/{c['cid']}/service-keys"
    body = {"name": "billing", "scopes": ["tiers:write"], "expires_in_s": 3600}
    assert (await _json(http, "POST", keys, _tok(c, "member"), json=body))[0] == 403
    assert (await _json(http, "POST", keys, _tok(c, "outsider"), json=body))[0] == 404
    assert (await _json(http, "POST", keys, None, json=body))[0] == 401
    status, created = await _json(http, "POST", keys, _tok(c, "admin"), json=body)
    assert status == 201, created
    secret = created["secret"]
    assert secret.startswith("hsk_") and len(secret) > 40
    assert created["key"]["scopes"] == ["tiers:write"]
    assert created["key"]["expires_at"] is not None
    status, listed = await _json(http, "GET", keys, _tok(c, "owner"))
    assert status == 200
    assert [k["id"] for k in listed["keys"]] == [created["key"]["id"]]
    assert secret not in str(listed)  # shown once
    assert (await _json(http, "GET", keys, _tok(c, "member")))[0] == 403
    # stored hashed
    app_db = live_server.database_url
    conn = await asyncpg.connect(app_db)
    try:
        stored = await conn.fetchval("SELECT key_hash FROM service_keys WHERE id = $1",
                                     created["key"]["id"])
        assert bytes(stored) == hashlib.sha256(secret.encode()).digest()
        actions = [r["action"] for r in await conn.fetch(
            "SELECT action FROM audit_log WHERE community_id = $1 ORDER BY id", c["cid"])]
        assert "service_key.create" in actions
    finally:
        await conn.close()
    # hostile bodies get the documented error
    for bad in ({"name": "x", "scopes": ["root"]}, {"name": "", "scopes": ["tiers:write"]},
                {"name": "x", "scopes": []}, {"name": "x\u0000", "scopes": ["tiers:read"]},
                {"name": "x", "scopes": ["tiers:read"], "expires_in_s": 2**63}):
        status, err = await _json(http, "POST", keys, _tok(c, "owner"), json=bad)
        assert status == 400, (bad, err)
        assert set(err["error"]) == {"code", "message"}
    status, err = await _json(http, "DELETE", f"{keys}/{2**60}", _tok(c, "owner"))
    assert status == 404 and err["error"]["code"] == "not_found"


async def test_a_principal_sets_a_tier_without_outranking_and_is_audited(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    base = live_server.url
    c = await _community(http, base)
    keys = f"{base}/api/v1/communities/{c['cid']}/service-keys"
    _, writer = await _json(http, "POST", keys, _tok(c, "owner"),
                            json={"name": "billing", "scopes": ["tiers:write"]})
    _, reader = await _json(http, "POST", keys, _tok(c, "owner"),
                            json={"name": "courses", "scopes": ["tiers:read", "courses:read"]})
    admin_id = c["people"]["admin"]["user"]["id"]
    member_id = c["people"]["member"]["user"]["id"]
    tier_url = f"{base}/api/v1/service/communities/{c['cid']}/members/{{}}/tier"
    member_session = await GatewayClient.identified(
        http, live_server.ws_url, c["people"]["member"]["access_token"])

    # an admin outranks nobody here: the key changes even an admin's tier
    status, body = await _json(http, "PUT", tier_url.format(admin_id),
                               bearer(writer["secret"]), json={"tier": 2, "reason": "paid"})
    assert status == 200, body
    assert body["member"]["tier"] == 2
    status, body = await _json(http, "PUT", tier_url.format(member_id),
                               bearer(writer["secret"]), json={"tier": 3})
    assert status == 200 and body["member"]["tier"] == 3, body
    await member_session.event("permissions_update", timeout=10)  # live re-resolution

    # refusals: wrong scope, no key, a user token, garbage, unknown member, bad body
    status, err = await _json(http, "PUT", tier_url.format(member_id),
                              bearer(reader["secret"]), json={"tier": 1})
    assert (status, err["error"]["code"]) == (403, "forbidden")
    assert (await _json(http, "PUT", tier_url.format(member_id), None,
                        json={"tier": 1}))[0] == 401
    assert (await _json(http, "PUT", tier_url.format(member_id), _tok(c, "owner"),
                        json={"tier": 1}))[0] == 401
    assert (await _json(http, "PUT", tier_url.format(member_id), bearer("hsk_nope"),
                        json={"tier": 1}))[0] == 401
    outsider_id = c["people"]["outsider"]["user"]["id"]
    assert (await _json(http, "PUT", tier_url.format(outsider_id), bearer(writer["secret"]),
                        json={"tier": 1}))[0] == 404
    for bad in ({"tier": -1}, {"tier": 2**40}, {}, {"tier": 1, "extra": 1}):
        status, err = await _json(http, "PUT", tier_url.format(member_id),
                                  bearer(writer["secret"]), json=bad)
        assert status == 400, (bad, err)

    # a key of another community is refused there
    other = await _community(http, base)
    status, err = await _json(
        http, "PUT", f"{base}/api/v1/service/communities/{other['cid']}/members/"
        f"{other['people']['member']['user']['id']}/tier", bearer(writer["secret"]),
        json={"tier": 1})
    assert status == 403, err

    conn = await asyncpg.connect(live_server.database_url)
    try:
        rows = await conn.fetch(
            "SELECT actor_id, reason, before::text, after::text FROM audit_log"
            " WHERE community_id = $1 AND action = 'member.tier' ORDER BY id", c["cid"])
        assert len(rows) == 2  # the refused attempts changed nothing
        assert all(r["actor_id"] is None for r in rows)
        assert rows[0]["reason"] == f"service key billing (#{writer['key']['id']}): paid"
        assert f'"service_key_id": {writer["key"]["id"]}' in rows[0]["after"]
        last_used = await conn.fetchval("SELECT last_used_at FROM service_keys WHERE id = $1",
                                        writer["key"]["id"])
        assert last_used is not None
        assert await conn.fetchval("SELECT last_used_at FROM service_keys WHERE id = $1",
                                   reader["key"]["id"]) is None
    finally:
        await conn.close()

    # revoked, then expired: refused
    status, revoked = await _json(http, "DELETE", f"{keys}/{writer['key']['id']}",
                                  _tok(c, "admin"))
    assert status == 200 and revoked["key"]["revoked_at"] is not None
    status, err = await _json(http, "PUT", tier_url.format(member_id),
                              bearer(writer["secret"]), json={"tier": 1})
    assert (status, err["error"]["code"]) == (401, "unauthorized")
    _, expiring = await _json(http, "POST", keys, _tok(c, "owner"),
                              json={"name": "trial", "scopes": ["tiers:write"],
                                    "expires_in_s": 60})
    assert (await _json(http, "PUT", tier_url.format(member_id), bearer(expiring["secret"]),
                        json={"tier": 1}))[0] == 200
    conn = await asyncpg.connect(live_server.database_url)
    try:
        await conn.execute("UPDATE service_keys SET expires_at = now() - interval '1 second'"
                           " WHERE id = $1", expiring["key"]["id"])
    finally:
        await conn.close()
    status, err = await _json(http, "PUT", tier_url.format(member_id),
                              bearer(expiring["secret"]), json={"tier": 1})
    assert status == 401 and "expired" in err["error"]["message"]
    await member_session.close()


async def test_a_key_never_outranks_its_creator(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    """An admin may not change the owner's or another admin's tier, so neither may a
    key they made; and a key stops working once its creator no longer manages the
    community (demoted or gone), as a revoked key does."""
    base = live_server.url
    c = await _community(http, base, admins=("admin", "admin2", "admin3"))
    cid = c["cid"]
    keys = f"{base}/api/v1/communities/{cid}/service-keys"
    made: dict[str, str] = {}
    for who in ("owner", "admin", "admin3"):
        status, created = await _json(http, "POST", keys, _tok(c, who),
                                      json={"name": f"by-{who}", "scopes": ["tiers:write"]})
        assert status == 201, created
        made[who] = created["secret"]
    ids = {n: p["user"]["id"] for n, p in c["people"].items()}
    tier_url = f"{base}/api/v1/service/communities/{cid}/members/{{}}/tier"

    async def set_tier(key: str, target: str, tier: int) -> tuple[int, Any]:
        return await _json(http, "PUT", tier_url.format(ids[target]), bearer(made[key]),
                           json={"tier": tier})

    for target in ("owner", "admin2", "admin"):  # the owner, another admin, the creator
        status, err = await set_tier("admin", target, 1)
        assert (status, err["error"]["code"]) == (403, "forbidden"), (target, err)
    status, body = await set_tier("admin", "member", 1)
    assert status == 200 and body["member"]["tier"] == 1, body
    for target, tier in (("owner", 2), ("admin2", 2), ("member", 3)):
        status, body = await set_tier("owner", target, tier)
        assert status == 200 and body["member"]["tier"] == tier, (target, body)

    # the creator demoted: their key is refused like a revoked one
    status, body = await _json(http, "PATCH", f"{base}/api/v1/communities/{cid}/members/"
                               f"{ids['admin']}", _tok(c, "owner"), json={"role": "member"})
    assert status == 200, body
    status, err = await set_tier("admin", "member", 2)
    assert (status, err["error"]["code"]) == (401, "unauthorized"), err
    # the creator gone (kicked): the same
    assert (await set_tier("admin3", "member", 2))[0] == 200
    status, body = await _json(http, "POST", f"{base}/api/v1/moderation/kick_member",
                               _tok(c, "owner"), json={"community_id": cid,
                                                       "user_id": ids["admin3"]})
    assert status == 200, body
    status, err = await set_tier("admin3", "member", 1)
    assert (status, err["error"]["code"]) == (401, "unauthorized"), err

    conn = await asyncpg.connect(live_server.database_url)
    try:  # the refused attempts changed and audited nothing
        tiers = {r["user_id"]: r["tier"] for r in await conn.fetch(
            "SELECT user_id, tier FROM community_members WHERE community_id = $1", cid)}
        audited = await conn.fetchval("SELECT count(*) FROM audit_log WHERE community_id = $1"
                                      " AND action = 'member.tier'", cid)
    finally:
        await conn.close()
    assert (tiers[ids["owner"]], tiers[ids["admin2"]], tiers[ids["member"]]) == (2, 2, 2)
    assert audited == 5


async def test_a_key_is_rate_limited(live_server: RunningServer,
                                     http: aiohttp.ClientSession) -> None:
    base = live_server.url
    c = await _community(http, base)
    _, key = await _json(http, "POST", f"{base}/api/v1/communities/{c['cid']}/service-keys",
                         _tok(c, "owner"), json={"name": "reader", "scopes": ["members:read"]})
    url = (f"{base}/api/v1/communities/{c['cid']}/members/"
           f"{c['people']['member']['user']['id']}/activity")
    async def read() -> int:
        async with http.get(url, headers=bearer(key["secret"])) as reply:
            if reply.status == 429:
                assert int(reply.headers["Retry-After"]) >= 1
                assert (await reply.json())["error"]["code"] == "rate_limited"
            return reply.status

    # 120 at once are allowed, then 10 per second: 250 at once cannot all pass
    statuses = await asyncio.gather(*(read() for _ in range(250)))
    assert set(statuses) == {200, 429}
    assert 120 <= statuses.count(200) < 250
    conn = await asyncpg.connect(live_server.database_url)
    try:  # every read with the key is in the audit log
        audited = await conn.fetchval("SELECT count(*) FROM audit_log WHERE community_id = $1"
                                      " AND action = 'activity.read'", c["cid"])
    finally:
        await conn.close()
    assert audited == statuses.count(200)


async def test_a_principal_publishes_typed_events_to_a_member_or_the_community(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    base = live_server.url
    c = await _community(http, base)
    cid = c["cid"]
    keys = f"{base}/api/v1/communities/{cid}/service-keys"
    _, publisher = await _json(http, "POST", keys, _tok(c, "owner"),
                               json={"name": "notifier", "scopes": ["events:publish"]})
    _, other = await _json(http, "POST", keys, _tok(c, "owner"),
                           json={"name": "tiers", "scopes": ["tiers:write"]})
    member = await GatewayClient.identified(http, live_server.ws_url,
                                            c["people"]["member"]["access_token"])
    admin = await GatewayClient.identified(http, live_server.ws_url,
                                           c["people"]["admin"]["access_token"])
    url = f"{base}/api/v1/service/communities/{cid}/events"
    event = {"t": "activity_recorded", "community_id": cid, "kind": "live", "total": 4,
             "at": 1_700_000_000_000}
    member_id = c["people"]["member"]["user"]["id"]
    async with http.post(url, headers=bearer(publisher["secret"]),
                         json={"user_id": member_id, "event": event}) as reply:
        assert reply.status == 204, await reply.text()
    got = await member.event("activity_recorded", timeout=10)
    assert (got["kind"], got["total"]) == ("live", 4)
    await admin.no_event("activity_recorded")  # to that member only
    async with http.post(url, headers=bearer(publisher["secret"]),
                         json={"event": event | {"total": 5}}) as reply:
        assert reply.status == 204
    for session in (member, admin):  # to every connected member
        assert (await session.event("activity_recorded", timeout=10))["total"] == 5
    refusals = [
        (other["secret"], {"event": event}, 403),  # no events:publish
        (publisher["secret"], {"event": event | {"community_id": cid + 1}}, 400),
        (publisher["secret"], {"event": event,
                               "user_id": c["people"]["outsider"]["user"]["id"]}, 404),
        (publisher["secret"], {"event": {"t": "message_create", "message": {}}}, 400),
        (publisher["secret"], {"event": event | {"total": -1}}, 400),
    ]
    for secret, body, status in refusals:
        async with http.post(url, headers=bearer(secret), json=body) as reply:
            assert reply.status == status, (body, await reply.text())
            assert set((await reply.json())["error"]) == {"code", "message"}
    conn = await asyncpg.connect(live_server.database_url)
    try:
        audited = await conn.fetchval("SELECT count(*) FROM audit_log WHERE community_id = $1"
                                      " AND action = 'service.publish'", cid)
    finally:
        await conn.close()
    assert audited == 2
    await member.close()
    await admin.close()
