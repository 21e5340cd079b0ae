"""Accounts and credentials over real HTTP against a real PostgreSQL.

Each test builds a small aiohttp app with only the auth routes and the CORS middleware,
so failures here point at server/auth.py, server/api_auth.py, server/cors.py or
persistence/accounts.py rather than at the rest of the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from argon2 import PasswordHasher
from pytest_aiohttp import AiohttpClient

from persistence import accounts
from persistence.database import Database
from server.api_auth import add_auth_routes
from server.auth import Authenticator, SlidingWindow, signing_key
from server.cors import cors_middleware, origin_allowed

SECRET = "test-secret-0123456789abcdef"
PASSWORD = "correct horse battery"
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
ALLOWED_ORIGIN = "https://app.example"

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[tuple[Client, Authenticator]]]


@pytest.fixture
def make_client(aiohttp_client: AiohttpClient, db: Database) -> MakeClient:
    """Build an app around an Authenticator configured by the test's keyword arguments."""

    async def make(origins: list[str] | None = None,
                   **kwargs: Any) -> tuple[Client, Authenticator]:
        auth = Authenticator(db, SECRET, password_hasher=FAST_HASHER, **kwargs)
        app = web.Application(middlewares=[cors_middleware(origins or [ALLOWED_ORIGIN])])
        add_auth_routes(app, auth)
        return await aiohttp_client(app), auth

    return make


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(client: Client, username: str, password: str = PASSWORD) -> dict[str, Any]:
    reply = await client.post("/api/v1/auth/register",
                              json={"username": username, "password": password})
    body = await reply.json()
    assert reply.status == 201, body
    return dict(body)


async def login(client: Client, username: str, password: str = PASSWORD) -> Any:
    return await client.post("/api/v1/auth/login",
                             json={"username": username, "password": password})


async def me_status(client: Client, token: str) -> int:
    reply = await client.get("/api/v1/users/@me", headers=bearer(token))
    return reply.status


# ----------------------------------------------------------------- register / login


async def test_register_login_and_me(make_client: MakeClient) -> None:
    client, _ = await make_client()
    reply = await client.post("/api/v1/auth/register", json={
        "username": "Ada.L", "password": PASSWORD, "display_name": "Ada Lovelace"})
    assert reply.status == 201
    body = await reply.json()
    assert body["user"]["username"] == "Ada.L"
    assert body["user"]["display_name"] == "Ada Lovelace"
    assert body["user"]["bot"] is False
    assert body["expires_in"] == 900
    assert body["refresh_token"].startswith("hr.")

    me = await client.get("/api/v1/users/@me", headers=bearer(body["access_token"]))
    assert me.status == 200
    assert (await me.json())["user"] == body["user"]

    again = await login(client, "ada.l")  # usernames are case-insensitive
    assert again.status == 200
    pair = await again.json()
    assert pair["user"]["id"] == body["user"]["id"]
    assert pair["refresh_token"] != body["refresh_token"]
    assert await me_status(client, pair["access_token"]) == 200


async def test_register_validation_and_taken_username(make_client: MakeClient) -> None:
    client, _ = await make_client()
    await register(client, "grace")
    taken = await client.post("/api/v1/auth/register",
                              json={"username": "GRACE", "password": PASSWORD})
    assert taken.status == 409
    assert (await taken.json())["error"]["code"] == "username_taken"

    for bad in ({"username": "ab", "password": PASSWORD},
                {"username": "has space", "password": PASSWORD},
                {"username": "x" * 33, "password": PASSWORD},
                {"username": "okname", "password": "short"},
                {"username": "okname", "password": "p" * 257},
                {"username": "okname"},
                {"username": 5, "password": PASSWORD}):
        reply = await client.post("/api/v1/auth/register", json=bad)
        assert reply.status == 400, bad
        assert (await reply.json())["error"]["code"] == "invalid_request"
    garbage = await client.post("/api/v1/auth/register", data=b"{not json",
                                headers={"Content-Type": "application/json"})
    assert garbage.status == 400
    assert (await garbage.json())["error"]["code"] == "invalid_request"


async def test_wrong_password_and_unknown_user_are_indistinguishable(
        make_client: MakeClient) -> None:
    client, auth = await make_client()
    owner = await register(client, "linus")
    await auth.create_bot(_user(owner), "somebot")

    replies = [await login(client, "linus", "wrong password!"),
               await login(client, "nobody-here", "wrong password!"),
               await login(client, "somebot", "wrong password!")]  # bots have no password
    statuses = {r.status for r in replies}
    bodies = {await r.read() for r in replies}
    assert statuses == {401}
    assert len(bodies) == 1
    assert b'"invalid_credentials"' in bodies.pop()


async def test_unknown_user_costs_an_argon2_verification(db: Database) -> None:
    """The dummy verify makes an unknown name take as long as a wrong password."""
    slow = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=1)
    auth = Authenticator(db, SECRET, password_hasher=slow, account_failure_limit=100)
    await auth.register("timing", PASSWORD)
    await _expect_invalid(auth.login("nobody", "warm up the dummy hash"))

    async def elapsed(username: str) -> float:
        start = time.perf_counter()
        await _expect_invalid(auth.login(username, "not the password"))
        return time.perf_counter() - start

    known = min([await elapsed("timing") for _ in range(3)])
    unknown = min([await elapsed("nobody") for _ in range(3)])
    assert unknown > known * 0.5, (known, unknown)
    assert unknown < known * 2.0, (known, unknown)


async def _expect_invalid(call: Awaitable[Any]) -> None:
    from server.auth import InvalidCredentials

    with pytest.raises(InvalidCredentials):
        await call


def _user(reply: dict[str, Any]) -> Any:
    from protocol.models import User

    return User(**reply["user"])


# ------------------------------------------------------------------------ throttling


async def test_throttle_per_account(make_client: MakeClient) -> None:
    client, _ = await make_client()
    await register(client, "victim")
    await register(client, "bystander")
    for _ in range(5):
        assert (await login(client, "victim", "wrong password!")).status == 401
    blocked = await login(client, "VICTIM")  # even the right password, any case
    assert blocked.status == 429
    assert (await blocked.json())["error"]["code"] == "too_many_attempts"
    assert 1 <= int(blocked.headers["Retry-After"]) <= 900
    # Another account from the same address is unaffected.
    assert (await login(client, "bystander")).status == 200


async def test_successful_login_resets_account_failures(make_client: MakeClient) -> None:
    client, _ = await make_client()
    await register(client, "forgetful")
    for _ in range(4):
        assert (await login(client, "forgetful", "wrong password!")).status == 401
    assert (await login(client, "forgetful")).status == 200
    for _ in range(4):
        assert (await login(client, "forgetful", "wrong password!")).status == 401
    assert (await login(client, "forgetful")).status == 200


async def test_throttle_per_address(make_client: MakeClient) -> None:
    client, _ = await make_client(address_attempt_limit=4, account_failure_limit=100)
    await register(client, "realuser")
    for i in range(4):
        assert (await login(client, f"guess{i}", "wrong password!")).status == 401
    blocked = await login(client, "realuser")
    assert blocked.status == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert (await blocked.json())["error"]["code"] == "too_many_attempts"


def test_sliding_window_frees_up_as_events_age() -> None:
    now = [1000.0]
    window = SlidingWindow(3, 60.0, clock=lambda: now[0])
    for step in range(3):
        assert window.retry_after("k") == 0.0
        window.add("k")
        now[0] += 10.0 if step < 2 else 0.0
    assert window.retry_after("k") == pytest.approx(60.0 - 20.0)
    assert window.retry_after("other") == 0.0
    now[0] += 40.0  # the first event (t=1000) leaves the window
    assert window.retry_after("k") == 0.0
    window.add("k")
    assert window.retry_after("k") > 0.0


def test_sliding_window_memory_is_bounded() -> None:
    now = [0.0]
    window = SlidingWindow(5, 60.0, max_keys=100, clock=lambda: now[0])
    for i in range(1000):
        now[0] += 0.001
        window.add(f"addr{i}")
    assert len(window._events) <= 100
    assert window.retry_after("addr999") == 0.0 and "addr999" in window._events


# ---------------------------------------------------------------- refresh / logout


async def test_refresh_rotates(make_client: MakeClient) -> None:
    client, _ = await make_client()
    first = await register(client, "rotator")
    reply = await client.post("/api/v1/auth/refresh",
                              json={"refresh_token": first["refresh_token"]})
    assert reply.status == 200
    second = await reply.json()
    assert second["user"]["id"] == first["user"]["id"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["refresh_token"].startswith("hr.")
    assert await me_status(client, second["access_token"]) == 200
    third = await client.post("/api/v1/auth/refresh",
                              json={"refresh_token": second["refresh_token"]})
    assert third.status == 200


async def test_refresh_reuse_revokes_the_family(make_client: MakeClient, db: Database) -> None:
    client, _ = await make_client()
    first = await register(client, "stolen")
    other = await (await login(client, "stolen")).json()  # another device: another family
    rotated = await (await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()

    reuse = await client.post("/api/v1/auth/refresh",
                              json={"refresh_token": first["refresh_token"]})
    assert reuse.status == 401
    assert (await reuse.json())["error"]["code"] == "invalid_token"
    newest = await client.post("/api/v1/auth/refresh",
                               json={"refresh_token": rotated["refresh_token"]})
    assert newest.status == 401  # the thief's (or victim's) newest token died too
    async with db.connection() as conn:
        live = await conn.fetchval(
            "SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL")
    assert live == 1  # only the other device's family survives
    other_device = await client.post("/api/v1/auth/refresh",
                                     json={"refresh_token": other["refresh_token"]})
    assert other_device.status == 200


async def test_concurrent_presentations_of_one_token(make_client: MakeClient,
                                                     db: Database) -> None:
    """Simultaneous uses serialize: one rotates, the others are reuse and kill them all."""
    client, auth = await make_client()
    pair = await register(client, "racer")

    async def hold(ready: asyncio.Event) -> None:
        async with db.connection():
            await ready.wait()

    warm = asyncio.Event()  # open pool connections first, so the refreshes truly overlap
    holders = [asyncio.create_task(hold(warm)) for _ in range(3)]
    await asyncio.sleep(0.2)
    warm.set()
    await asyncio.gather(*holders)
    results = await asyncio.gather(*(auth.refresh(pair["refresh_token"]) for _ in range(3)),
                                   return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1, results
    late = await client.post("/api/v1/auth/refresh",
                             json={"refresh_token": winners[0].refresh_token})
    assert late.status == 401


async def test_refresh_rejects_unknown_and_expired(make_client: MakeClient,
                                                   db: Database) -> None:
    client, _ = await make_client()
    for token in ("hr.never-issued", "not-a-token", ""):
        reply = await client.post("/api/v1/auth/refresh", json={"refresh_token": token})
        assert reply.status == 401, token
    pair = await register(client, "expiring")
    async with db.connection() as conn:
        await conn.execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 s'")
    expired = await client.post("/api/v1/auth/refresh",
                                json={"refresh_token": pair["refresh_token"]})
    assert expired.status == 401


async def test_logout_revokes_the_family(make_client: MakeClient) -> None:
    client, _ = await make_client()
    first = await register(client, "leaver")
    rotated = await (await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()
    reply = await client.post("/api/v1/auth/logout",
                              json={"refresh_token": rotated["refresh_token"]})
    assert reply.status == 204
    after = await client.post("/api/v1/auth/refresh",
                              json={"refresh_token": rotated["refresh_token"]})
    assert after.status == 401
    unknown = await client.post("/api/v1/auth/logout", json={"refresh_token": "hr.nope"})
    assert unknown.status == 204  # idempotent
    bad = await client.post("/api/v1/auth/logout", json={})
    assert bad.status == 400


# ------------------------------------------------------------------------------ bots


async def test_bot_creation_and_bot_token(make_client: MakeClient) -> None:
    client, auth = await make_client()
    owner = await register(client, "botmaker")
    anonymous = await client.post("/api/v1/bots", json={"username": "helper"})
    assert anonymous.status == 401
    assert (await anonymous.json())["error"]["code"] == "unauthorized"

    reply = await client.post("/api/v1/bots", headers=bearer(owner["access_token"]),
                              json={"username": "helper", "display_name": "Helper Bot"})
    assert reply.status == 201
    created = await reply.json()
    assert created["user"]["bot"] is True
    assert created["user"]["display_name"] == "Helper Bot"
    token = created["token"]
    assert token.startswith("hb.")

    me = await client.get("/api/v1/users/@me", headers=bearer(token))
    assert me.status == 200
    assert (await me.json())["user"] == created["user"]

    by_bot = await client.post("/api/v1/bots", headers=bearer(token),
                               json={"username": "helper2"})
    assert by_bot.status == 403
    taken = await client.post("/api/v1/bots", headers=bearer(owner["access_token"]),
                              json={"username": "HELPER"})
    assert taken.status == 409

    token_id = int(token.split(".")[1])
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert await auth.authenticate(tampered) is None
    assert await auth.authenticate(f"hb.{token_id + 1}.{token.split('.', 2)[2]}") is None
    assert await auth.revoke_bot_token(token_id) is True
    assert await me_status(client, token) == 401  # at once on the revoking node


async def test_bot_revocation_reaches_other_nodes_within_cache_ttl(db: Database) -> None:
    node_a = Authenticator(db, SECRET, password_hasher=FAST_HASHER, bot_token_cache_ttl_s=0.3)
    node_b = Authenticator(db, SECRET, password_hasher=FAST_HASHER)
    owner = (await node_b.register("nodeowner", PASSWORD)).user
    token = (await node_b.create_bot(owner, "nodebot")).token
    assert await node_a.authenticate(token) is not None  # cached on node A now
    assert await node_b.revoke_bot_token(int(token.split(".")[1])) is True
    assert await node_b.authenticate(token) is None
    await asyncio.sleep(0.35)
    assert await node_a.authenticate(token) is None


# ----------------------------------------------------------------------- access JWTs


async def test_expired_forged_and_malformed_jwts_are_rejected(make_client: MakeClient) -> None:
    client, _ = await make_client()
    user = await register(client, "jwtuser")
    sub = str(user["user"]["id"])
    now = int(time.time())
    key = signing_key(SECRET)
    good = {"sub": sub, "typ": "access", "iat": now, "exp": now + 60, "jti": "x"}
    assert await me_status(client, jwt.encode(good, key, algorithm="HS256")) == 200

    rejected = {
        "expired": jwt.encode({**good, "iat": now - 1000, "exp": now - 10}, key,
                              algorithm="HS256"),
        "forged": jwt.encode(good, signing_key("another-secret-0123456789"),
                             algorithm="HS256"),
        "wrong typ": jwt.encode({**good, "typ": "refresh"}, key, algorithm="HS256"),
        "no exp": jwt.encode({k: v for k, v in good.items() if k != "exp"}, key,
                             algorithm="HS256"),
        "unknown user": jwt.encode({**good, "sub": "999999"}, key, algorithm="HS256"),
        "bad sub": jwt.encode({**good, "sub": "abc"}, key, algorithm="HS256"),
        "alg none": jwt.encode(good, "", algorithm="none"),
        "garbage": "not.a.jwt",
    }
    for name, token in rejected.items():
        reply = await client.get("/api/v1/users/@me", headers=bearer(token))
        assert reply.status == 401, name
        assert (await reply.json())["error"]["code"] == "unauthorized", name
    assert (await client.get("/api/v1/users/@me")).status == 401
    assert (await client.get("/api/v1/users/@me",
                             headers={"Authorization": f"Basic {sub}"})).status == 401


# ------------------------------------------------------------------------------ CORS


async def test_cors_preflight_and_responses(make_client: MakeClient) -> None:
    client, _ = await make_client()
    preflight_headers = {"Access-Control-Request-Method": "POST",
                         "Access-Control-Request-Headers": "authorization, content-type"}
    ok = await client.options("/api/v1/auth/login",
                              headers={"Origin": ALLOWED_ORIGIN, **preflight_headers})
    assert ok.status == 204
    assert ok.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Authorization" in ok.headers["Access-Control-Allow-Headers"]
    assert "Content-Type" in ok.headers["Access-Control-Allow-Headers"]
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in ok.headers

    denied = await client.options("/api/v1/auth/login",
                                  headers={"Origin": "https://evil.example", **preflight_headers})
    assert denied.status == 403
    assert "Access-Control-Allow-Origin" not in denied.headers

    # Actual requests: allowed origins see replies (errors too), others get no header.
    error = await client.get("/api/v1/users/@me", headers={"Origin": ALLOWED_ORIGIN})
    assert error.status == 401
    assert error.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    created = await client.post("/api/v1/auth/register", headers={"Origin": ALLOWED_ORIGIN},
                                json={"username": "corsuser", "password": PASSWORD})
    assert created.status == 201
    assert created.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Origin" in created.headers["Vary"]
    foreign = await client.post("/api/v1/auth/login", headers={"Origin": "https://evil.example"},
                                json={"username": "corsuser", "password": PASSWORD})
    assert "Access-Control-Allow-Origin" not in foreign.headers


async def test_cors_wildcard(make_client: MakeClient) -> None:
    client, _ = await make_client(origins=["*"])
    reply = await client.options("/api/v1/auth/login", headers={
        "Origin": "https://anywhere.example", "Access-Control-Request-Method": "POST"})
    assert reply.status == 204
    assert reply.headers["Access-Control-Allow-Origin"] == "*"


def _request(origin: str | None, host: str = "chat.example:8080") -> web.Request:
    headers = {"Host": host}
    if origin is not None:
        headers["Origin"] = origin
    return make_mocked_request("GET", "/gateway", headers=headers)


def test_origin_allowed_rules() -> None:
    listed = ["https://app.example", "http://localhost:5173/"]
    assert origin_allowed(_request(None), listed)  # non-browser client
    assert origin_allowed(_request("http://chat.example:8080"), listed)  # same origin
    assert origin_allowed(_request("https://CHAT.example:8080"), listed)  # scheme via proxy
    assert origin_allowed(_request("https://chat.example", host="chat.example:443"), [])
    assert origin_allowed(_request("https://app.example"), listed)
    assert origin_allowed(_request("https://app.example:443"), listed)  # default port
    assert origin_allowed(_request("http://localhost:5173"), listed)
    assert not origin_allowed(_request("http://localhost:5174"), listed)
    assert not origin_allowed(_request("https://evil.example"), listed)
    assert not origin_allowed(_request("https://chat.example.evil.example"), listed)
    assert not origin_allowed(_request("http://chat.example:9090"), listed)
    assert not origin_allowed(_request("null"), listed)
    assert origin_allowed(_request("https://evil.example"), ["*"])


# ---------------------------------------------------------------------- provisioning


async def test_provisioning_disabled_is_404(make_client: MakeClient) -> None:
    client, _ = await make_client()
    reply = await client.post("/api/v1/loadtest/provision", json={"users": 4, "room_size": 2})
    assert reply.status == 404
    assert (await reply.json())["error"]["code"] == "not_found"


async def test_provisioning_creates_private_rooms(make_client: MakeClient,
                                                  db: Database) -> None:
    client, _ = await make_client(loadtest_provisioning=True)
    reply = await client.post("/api/v1/loadtest/provision",
                              json={"users": 10, "room_size": 4, "prefix": "lt_"})
    assert reply.status == 201
    body = await reply.json()
    users = body["users"]
    assert [u["username"] for u in users] == [f"lt_{i}" for i in range(10)]
    ids = [u["id"] for u in users]
    assert [len(c["member_ids"]) for c in body["channels"]] == [4, 4, 2]
    assert [m for c in body["channels"] for m in c["member_ids"]] == ids

    me = await client.get("/api/v1/users/@me", headers=bearer(users[7]["token"]))
    assert (await me.json())["user"] == {"id": ids[7], "username": "lt_7",
                                         "display_name": "lt_7", "bot": True}

    community_id = body["community_id"]
    async with db.connection() as conn:
        roles = {r["user_id"]: r["role"] for r in await conn.fetch(
            "SELECT user_id, role FROM community_members WHERE community_id = $1",
            community_id)}
        assert roles == {uid: ("owner" if uid == ids[0] else "member") for uid in ids}
        assert await conn.fetchval("SELECT owner_id FROM communities WHERE id = $1",
                                   community_id) == ids[0]
        channels = await conn.fetch(
            "SELECT id, kind, private, community_id FROM channels ORDER BY position")
        assert [c["id"] for c in channels] == [c["id"] for c in body["channels"]]
        assert all(c["kind"] == "text" and c["private"] and c["community_id"] == community_id
                   for c in channels)
        for channel in body["channels"]:
            members = await conn.fetch(
                "SELECT user_id FROM channel_members WHERE channel_id = $1 ORDER BY user_id",
                channel["id"])
            assert [m["user_id"] for m in members] == sorted(channel["member_ids"])

    again = await client.post("/api/v1/loadtest/provision",
                              json={"users": 3, "room_size": 2, "prefix": "LT_"})
    assert again.status == 409  # names clash case-insensitively; nothing half-made
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM users") == 10
        assert await conn.fetchval("SELECT count(*) FROM communities") == 1
    for bad in ({"users": 0, "room_size": 1}, {"users": 5, "room_size": 0},
                {"users": 5, "room_size": 6}, {"users": 5, "room_size": 2, "prefix": "a b"},
                {"users": "5", "room_size": 2}):
        assert (await client.post("/api/v1/loadtest/provision", json=bad)).status == 400, bad


async def test_provisioning_2000_users(make_client: MakeClient, db: Database) -> None:
    client, auth = await make_client(loadtest_provisioning=True)
    start = time.perf_counter()
    reply = await client.post("/api/v1/loadtest/provision",
                              json={"users": 2000, "room_size": 50})
    elapsed = time.perf_counter() - start
    assert reply.status == 201
    body = await reply.json()
    assert len(body["users"]) == 2000
    assert len({u["token"] for u in body["users"]}) == 2000
    assert len(body["channels"]) == 40
    assert elapsed < 20, elapsed
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM users WHERE is_bot") == 2000
        assert await conn.fetchval("SELECT count(*) FROM bot_tokens") == 2000
        assert await conn.fetchval("SELECT count(*) FROM community_members") == 2000
        assert await conn.fetchval("SELECT count(*) FROM channel_members") == 2000
        assert await conn.fetchval(
            "SELECT count(DISTINCT channel_id) FROM channel_members") == 40
    last = body["users"][-1]
    user = await auth.authenticate(last["token"])
    assert user is not None and user.id == last["id"]


@pytest.mark.slow
async def test_bulk_create_100k_users_under_a_minute(db: Database) -> None:
    start = time.perf_counter()
    async with db.transaction("test.bulk") as conn:
        created = await accounts.bulk_create_bot_users_txn(conn, "bulk", 100_000)
        community_id, rooms = await accounts.provision_rooms_txn(
            conn, community_name="bulk", user_ids=[u for u, _, _ in created], room_size=100)
    elapsed = time.perf_counter() - start
    assert len(created) == 100_000 and len(rooms) == 1000 and community_id > 0
    assert elapsed < 30, f"100k users took {elapsed:.1f}s"
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM bot_tokens") == 100_000
