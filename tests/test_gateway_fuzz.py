"""Random and hostile frames against a real gateway: every one gets a documented error
frame or close code, and the server keeps serving everyone else.

The sans-I/O decoder and session are fuzzed exhaustively with hypothesis in
``test_protocol_fuzz.py``; this test checks the same promise end to end, through the
socket, the gateway adapter and the domain, with seeded randomness (the seed is printed
in the test header).
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from protocol.codes import CloseCode, ErrorCode
from protocol.frames import REQUEST_TYPES
from tests.conftest import RunningServer
from tests.helpers import GatewayClient, register

OPS = [t.__struct_config__.tag for t in REQUEST_TYPES] + ["identify", "resume", "heartbeat"]
ERROR_CODES = {c.value for c in ErrorCode}
CLOSE_CODES = {int(c) for c in CloseCode}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(9 if depth < 2 else 6)
    if choice == 0:
        return rng.randint(-(2**63), 2**63)
    if choice == 1:
        return rng.choice([0, 1, -1, 2**53, 2**64, 1.5, float("1e308")])
    if choice == 2:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(12)))
    if choice == 3:
        return rng.choice([None, True, False, ""])
    if choice == 4:
        return rng.choice(OPS)
    if choice == 5:
        return rng.randint(1, 50)
    if choice == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["id", "op", "channel_id", "content", "seq", "emoji", "x"]):
            _value(rng, depth + 1) for _ in range(rng.randrange(5))}


def _frame(rng: random.Random) -> str | bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    if kind == 1:
        return json.dumps(_value(rng))
    fields = {k: _value(rng) for k in rng.sample(
        ["id", "channel_id", "message_id", "content", "seq", "emoji", "limit", "before",
         "name", "thread_id", "archived", "nonce", "token", "session_id"], rng.randrange(6))}
    if kind == 2:
        fields["id"] = rng.randint(0, 1000)
    return json.dumps({"op": rng.choice(OPS), **fields})


async def test_random_frames_get_documented_answers(
        live_server: RunningServer, http: aiohttp.ClientSession, rng: random.Random) -> None:
    a = await register(http, live_server.url)
    b = await register(http, live_server.url)
    bystander = await GatewayClient.identified(http, live_server.ws_url, b["access_token"])
    general = bystander.channel_named("general")["id"]
    answered = closed = 0
    client = await GatewayClient.identified(http, live_server.ws_url, a["access_token"])
    for _ in range(400):
        frame = _frame(rng)
        await client.send(frame)
        reply = await client.recv(timeout=5)
        while reply["op"] == "dispatch":  # events from our own successful requests
            reply = await client.recv(timeout=5)
        if reply["op"] == "__closed__":
            assert reply["code"] in CLOSE_CODES, (frame, reply)
            closed += 1
            client = await GatewayClient.identified(http, live_server.ws_url, a["access_token"])
            continue
        assert reply["op"] in ("ok", "error", "heartbeat_ack", "ready"), (frame, reply)
        if reply["op"] == "error":
            assert reply["code"] in ERROR_CODES, (frame, reply)
        answered += 1
    assert answered > 300
    # The bystander never noticed: its connection works and it got only real messages.
    await bystander.ok("send_message", channel_id=general, content="still here")
    got = await bystander.event("message_create")
    assert got["message"]["content"] == "still here" or got["message"]["author"]["id"] == \
        a["user"]["id"]
    async with http.get(f"{live_server.url}/readyz") as ready:
        assert ready.status == 200
    del closed
