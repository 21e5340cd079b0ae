"""Hostile input against a real server on real PostgreSQL: nothing reaches a 500.

Driven by the OpenAPI document, so a new route is covered the day it is added: for
every operation, every field of its body (in any depth), every path parameter and every
query parameter gets integers past every column range, NUL and lone surrogates; then
oversized headers and bodies, wrong content types, bodies that are not objects, unknown
paths and methods, and websocket frames at and one byte past the documented limit.
Every reply must be a documented status with the documented error body whose code has
exactly that status, and the server must log no error and no traceback.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import msgspec
import pytest
from yarl import URL

from protocol.codes import ErrorCode
from server.rest.errors import HTTP_STATUS
from tests.conftest import RunningServer, app_server
from tests.helpers import GatewayClient, register
from tests.schema_samples import Samples

BAD_PATH_VALUES = ("%00", "a%00b", "%ED%A0%80", "%FF", "9223372036854775808",
                   "99999999999999999999999999", "-1", "0", "1e3", "abc")
BAD_QUERY_VALUES = ("%00", "%ED%A0%80", "%FF", "99999999999999999999999999",
                    "-99999999999999999999999999", "9223372036854775808")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class World(Samples):
    """Things that exist, so hostile values meet handlers past their lookups."""

    def __init__(self, base: str, token: str, service_key: str, ids: dict[str, int | str],
                 document: dict[str, Any]) -> None:
        super().__init__(document["components"]["schemas"])
        self.base = base
        self.token = token
        self.service_key = service_key
        self.ids = ids
        self.document = document

    def auth(self, op: dict[str, Any]) -> dict[str, str]:
        """The credential the operation documents: a service key where only that is
        taken (so hostile values get past authentication), else the owner's token."""
        takes_user = not op["security"] or any("bearer" in c for c in op["security"])
        return {"Authorization": f"Bearer {self.token if takes_user else self.service_key}"}


@pytest.fixture
async def live_server(database_url: str) -> AsyncIterator[RunningServer]:
    """Hearth in this test's loop, load-test provisioning on so that route is reached."""
    async with app_server(database_url, loadtest_provisioning=True) as server:
        yield server


@pytest.fixture
async def world(live_server: RunningServer, http: aiohttp.ClientSession) -> World:
    base = live_server.url
    api = base + "/api/v1"
    owner, member = await register(http, base), await register(http, base)
    headers = {"Authorization": f"Bearer {owner['access_token']}"}

    async def post(path: str, body: dict[str, Any], token_headers: dict[str, str] = headers,
                   ) -> Any:
        async with http.post(api + path, json=body, headers=token_headers) as reply:
            assert reply.status in (200, 201), await reply.text()
            return await reply.json()

    created = await post("/communities", {"name": "hostile"})
    cid = created["community"]["id"]
    code = (await post(f"/communities/{cid}/invites", {}))["code"]
    await post(f"/invites/{code}/join", {},
               {"Authorization": f"Bearer {member['access_token']}"})
    role = (await post(f"/communities/{cid}/roles", {"name": "r"}))["role"]
    rule = (await post(f"/communities/{cid}/automod/rules", {
        "name": "k", "actions": ["flag"],
        "trigger": {"type": "keyword", "keywords": ["zz"]}}))["rule"]
    live = (await post(f"/communities/{cid}/live-sessions",
                       {"title": "t", "starts_at": 4_102_444_800_000}))["session"]
    key = await post(f"/communities/{cid}/service-keys",
                     {"name": "hostile", "scopes": ["tiers:read", "tiers:write", "members:read",
                                                    "courses:read", "courses:write",
                                                    "events:publish"]})
    course = (await post(f"/communities/{cid}/courses", {"title": "c"}))["course"]
    module = (await post(f"/communities/{cid}/courses/{course['id']}/modules",
                         {"title": "m"}))["module"]
    lesson = (await post(f"/communities/{cid}/courses/{course['id']}/lessons",
                         {"module_id": module["id"], "title": "l", "kind": "text"}))["lesson"]
    async with http.get(api + "/openapi.json") as reply:
        document = await reply.json()
    ids: dict[str, int | str] = {
        "community_id": cid, "channel_id": created["channels"][0]["id"],
        "user_id": member["user"]["id"], "role_id": role["id"], "target_id": role["id"],
        "rule_id": rule["id"], "session_id": live["id"], "kind": "role", "code": code,
        "course_id": course["id"], "module_id": module["id"], "lesson_id": lesson["id"],
        "attempt_id": 1, "submission_id": 1, "serial": "AAAA-AAAA-AAAA-AAAA"}
    return World(base, owner["access_token"], key["secret"], ids, document)


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, "\n".join(f"{r.name}: {r.getMessage()}" for r in bad)


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            yield method.upper(), path, op


async def expect_error(reply: aiohttp.ClientResponse, op: dict[str, Any] | None,
                       what: str, statuses: tuple[int, ...] = ()) -> str:
    """The reply is a documented error: JSON body, a known code with exactly this status."""
    text = await reply.text()
    assert reply.status < 500, (what, reply.status, text)
    assert reply.status >= 400, (what, reply.status, text)
    assert reply.content_type == "application/json", (what, reply.status, text)
    body = json.loads(text)
    code = ErrorCode(body["error"]["code"])
    assert isinstance(body["error"]["message"], str)
    assert HTTP_STATUS[code] == reply.status, (what, code, reply.status)
    if op is not None:
        assert str(reply.status) in op["responses"] or reply.status == 405, (what, text)
    if statuses:
        assert reply.status in statuses, (what, reply.status, text)
    return code.value


def fill(path: str, ids: dict[str, int | str], override: dict[str, str] | None = None) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", str((override or {}).get(name, value)))
    for name, value in (override or {}).items():
        path = path.replace("{" + name + "}", value)
    return path


async def test_hostile_bodies_on_every_operation(world: World,
                                                 http: aiohttp.ClientSession) -> None:
    sent = 0
    for method, path, op in operations(world.document):
        body = op.get("requestBody")
        if body is None:
            continue
        headers = {**world.auth(op), "Content-Type": "application/json"}
        schema = body["content"]["application/json"]["schema"]
        url = URL(world.base + fill(path, world.ids))
        for where, bad in world.mutations(schema, world.sample(schema)):
            raw = json.dumps(bad).encode()  # lone surrogates go as \\ud800 escapes
            async with http.request(method, url, data=raw, headers=headers) as reply:
                code = await expect_error(reply, op, f"{method} {path} body{where}", (400,))
                # the schema's refusal, or the text check's (protocol/text.py)
                assert code in ("invalid_request", "invalid_argument"), (method, path, where)
            sent += 1
        for raw in (b"[]", b'"x"', b"1", b"null", b"{", b"[" * 100_000, b"\xff\xfe",
                    b'{"a": "\\ud800"}'):
            async with http.request(method, url, data=raw, headers=headers) as reply:
                await expect_error(reply, op, f"{method} {path} {raw[:10]!r}", (400,))
        for content_type in ("text/plain", "application/x-www-form-urlencoded",
                             "multipart/form-data; boundary=x", "application/xml"):
            async with http.request(method, url, data=b'{"a": 1}',
                                    headers={**headers, "Content-Type": content_type}) as reply:
                code = await expect_error(reply, op, f"{method} {path} {content_type}", (415,))
                assert code == "unsupported_media_type"
    assert sent > 300  # every body field of every operation, several values each


async def test_hostile_path_and_query_parameters(world: World,
                                                 http: aiohttp.ClientSession) -> None:
    for method, path, op in operations(world.document):
        headers = world.auth(op)
        params = op.get("parameters", [])
        for param in (p for p in params if p["in"] == "path"):
            for bad in BAD_PATH_VALUES:
                url = URL(world.base + fill(path, world.ids, {param["name"]: bad}),
                          encoded=True)
                async with http.request(method, url, headers=headers, json={}) as reply:
                    await expect_error(reply, op, f"{method} {path} {param['name']}={bad}",
                                       (400, 404))
        url_path = fill(path, world.ids)
        names = [p["name"] for p in params if p["in"] == "query"] + ["unknown"]
        text_params = {"unknown"} | {p["name"] for p in params if p["in"] == "query"
                                     and world.resolve(p["schema"]).get("type") == "string"}
        for name in names:
            for bad in BAD_QUERY_VALUES:
                url = URL(f"{world.base}{url_path}?{name}={bad}", encoded=True)
                async with http.request(method, url, headers=headers, json={}) as reply:
                    what = f"{method} {path} ?{name}={bad}"
                    if name in text_params and bad != "%00":
                        # Text is only refused for NUL: invalid UTF-8 in a query arrives
                        # replaced (U+FFFD), and an unknown parameter is ignored, so
                        # the request goes on to whatever it meets next.
                        if reply.status >= 400:
                            await expect_error(reply, op, what)
                        continue
                    await expect_error(reply, op, what, (400,))
            url = URL(f"{world.base}{url_path}?{name}%00=1", encoded=True)
            async with http.request(method, url, headers=headers, json={}) as reply:
                await expect_error(reply, op, f"{method} {path} NUL in a name", (400,))


async def test_unknown_paths_methods_and_tokens(world: World,
                                                http: aiohttp.ClientSession) -> None:
    api = world.base + "/api/v1"
    async with http.get(api + "/no/such/thing") as reply:
        assert await expect_error(reply, None, "unknown path", (404,)) == "not_found"
    async with http.get(world.base + "/nothing-here") as reply:
        assert await expect_error(reply, None, "unknown page", (404,)) == "not_found"
    async with http.delete(api + "/communities") as reply:
        assert await expect_error(reply, None, "wrong method", (405,)) == "method_not_allowed"
        assert "GET" in reply.headers["Allow"]
    for token in ("x" * 8_000, "hb.99999999999999999999999.x",
                  "hb.-1.x", "\u00e9t\u00e9", "eyJ.eyJ.sig"):
        async with http.get(api + "/users/@me",
                            headers={"Authorization": f"Bearer {token}".encode(
                                "utf-8", "surrogateescape").decode("latin-1")}) as reply:
            assert await expect_error(reply, None, f"token {token[:12]!r}",
                                      (401,)) == "unauthorized"


async def test_oversized_bodies_and_headers(world: World, http: aiohttp.ClientSession,
                                            live_server: RunningServer) -> None:
    api = world.base + "/api/v1"
    headers = {"Authorization": f"Bearer {world.token}", "Content-Type": "application/json"}
    big = io.BytesIO(b'{"name": "' + b"x" * (1024 * 1024) + b'"}')
    async with http.post(api + "/communities", data=big, headers=headers) as reply:
        assert await expect_error(reply, None, "1 MiB body", (413,)) == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 32_768

    async with http.post(api + "/communities", data=chunks(), headers=headers) as reply:
        assert await expect_error(reply, None, "chunked body", (413,)) == "payload_too_large"
    # Under the limit but far past any field: refused by the schema, not by the size.
    long = io.BytesIO(b'{"name": "' + b"x" * 500_000 + b'"}')
    async with http.post(api + "/communities", data=long, headers=headers) as reply:
        await expect_error(reply, None, "long name", (400,))
    # A header past aiohttp's 8,190-byte line limit is refused by its HTTP parser before
    # any middleware: 400 text/plain (docs/rest.md says so), logged without a traceback.
    async with http.get(api + "/users/@me",
                        headers={**headers, "X-Big": "a" * 9_000}) as reply:
        assert reply.status == 400
        assert reply.content_type == "text/plain"
    async with http.get(api + "/users/@me",
                        headers={**headers, **{f"X-H{i}": "1" for i in range(200)}}) as reply:
        assert reply.status == 400
    async with http.get(api + "/users/@me",
                        headers={**headers, "X-Fine": "a" * 8_000}) as reply:
        assert reply.status == 200  # under the limit: served
    async with http.get(api + "/communities/" + "9" * 9_000, headers=headers) as reply:
        assert reply.status == 400  # a request line past the limit: the parser again
        assert reply.content_type == "text/plain"


async def test_frames_at_and_past_the_documented_limit(live_server: RunningServer,
                                                       http: aiohttp.ClientSession) -> None:
    client = await GatewayClient.connect(http, live_server.ws_url)
    limit = client.hello["limits"]["max_frame_bytes"]
    head, tail = '{"op": "heartbeat", "seq": null, "pad": "', '"}'

    def frame(size: int) -> str:
        text = head + "x" * (size - len(head) - len(tail)) + tail
        assert len(text.encode()) == size
        return text

    await client.send(frame(limit))  # exactly the documented maximum: accepted
    assert (await client.recv())["op"] == "heartbeat_ack"
    await client.send(frame(limit + 1))  # one byte past it: closed with 1009
    assert await client.closed() == 1009


async def test_binary_frames_at_and_past_the_documented_limit(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    ws = await http.ws_connect(live_server.ws_url + "?encoding=msgpack")
    hello = msgspec.msgpack.decode((await ws.receive()).data)
    limit = hello["limits"]["max_frame_bytes"]

    def frame(size: int) -> bytes:
        for pad in range(size - 40, size):  # msgpack's length prefix grows with the pad
            data = msgspec.msgpack.encode({"op": "heartbeat", "seq": None, "pad": "x" * pad})
            if len(data) == size:
                return data
        raise AssertionError(size)

    await ws.send_bytes(frame(limit))
    assert msgspec.msgpack.decode((await ws.receive()).data)["op"] == "heartbeat_ack"
    await ws.send_bytes(frame(limit + 1))
    closing = await ws.receive()
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 1009
