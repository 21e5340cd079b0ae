"""The session gate in the gateway (server/session_gate.py): a resume whose client left
while it waited claims nothing, and a newcomer finding the queue over its limit is
asked to come back (``reconnect`` with ``retry_after_ms``, close 1013) without any
work done for it. Two nodes in this test's loop share PostgreSQL and a real Redis; the
gate's slots are held by the test itself, so nothing depends on timing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from protocol.codec import codec_for
from rooms.realtime.ready import ABANDONED
from rooms.realtime.session_mirror import SessionMirror
from rooms.realtime.sessions import Session
from server.gateway import Gateway
from tests.conftest import RunningServer, app_server
from tests.helpers import GatewayClient, register
from tests.redis_fixture import RedisServer
from tests.test_resume_races import drop, services, until


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@contextlib.asynccontextmanager
async def two_nodes(database_url: str, redis: RedisServer, **overrides: object) -> \
        AsyncIterator[tuple[RunningServer, RunningServer]]:
    async with app_server(database_url, redis_url=redis.url, media_workers=0) as a, \
            app_server(database_url, redis_url=redis.url, media_workers=0,
                       **overrides) as b:
        yield a, b


@contextlib.asynccontextmanager
async def gate_held(gateway: Gateway) -> AsyncIterator[None]:
    """Every slot of the node's gate taken by the test until the block ends."""
    gate = gateway.session_gate
    free = asyncio.Event()
    entered = 0

    async def hold() -> None:
        nonlocal entered
        async with gate.slot():
            entered += 1
            await free.wait()

    holders = [asyncio.create_task(hold()) for _ in range(gate.limit)]
    await until(lambda: entered == gate.limit)
    try:
        yield
    finally:
        free.set()
        await asyncio.gather(*holders)


def mirror_of(node: RunningServer) -> SessionMirror:
    mirror = services(node).mirror
    assert mirror is not None
    return mirror


async def detached_on(http: aiohttp.ClientSession, node: RunningServer) -> \
        tuple[dict[str, Any], GatewayClient, Session]:
    """A new account's session on ``node``, its connection dropped: the node keeps a
    detached, resumable copy."""
    account = await register(http, node.url)
    client = await GatewayClient.identified(http, node.ws_url, account["access_token"])
    session_id = client.ready["session_id"]
    drop(client)
    copy = services(node).registry.get(session_id)
    await until(lambda: copy is not None and copy.sink is None)
    assert copy is not None
    return account, client, copy


async def close_all(*clients: GatewayClient) -> None:
    """Release every client's connection (dropped ones too), so none is left for the
    garbage collector to warn about in a later test."""
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()


async def test_a_resume_abandoned_while_queued_claims_nothing(
        database_url: str, redis_server: RedisServer, http: aiohttp.ClientSession) -> None:
    """Bob's session lives on A. A resume for it queues on B behind a full gate and its
    client gives up: when its turn comes, B does no work for it. A still owns the
    session (no claim, no takeover) and Bob's next resume on A is served from A's copy."""
    async with two_nodes(database_url, redis_server, session_start_concurrency=1) as (a, b):
        bob, first, copy = await detached_on(http, a)
        session_id = copy.session_id
        gateway_b = services(b).gateway
        async with gate_held(gateway_b):
            late = await GatewayClient.connect(http, b.ws_url)
            late.continue_from(first)
            await late.send(late.resume_frame(bob["access_token"]))
            await until(lambda: gateway_b.session_gate.waiting == 1)
            drop(late)  # the client's timeout: it goes away while queued
            await until(lambda: all(c.abandoned() for c in gateway_b.connections))
        await until(lambda: gateway_b.stats["starts_abandoned"] == 1)
        assert gateway_b.stats["resume_attempts"] == 0  # not even authenticated
        assert services(b).registry.get(session_id) is None
        assert await mirror_of(a).owns(copy) is True  # not claimed by B
        assert not copy.is_superseded
        again = await GatewayClient.connect(http, a.ws_url)
        again.continue_from(first)
        await again.send(again.resume_frame(bob["access_token"]))
        assert (await again.recv())["op"] == "resumed"
        assert services(a).registry.get(session_id) is copy  # A's own copy, resumed
        await close_all(first, late, again)


async def test_the_opener_stops_before_the_claim_and_before_the_view(
        database_url: str, redis_server: RedisServer, http: aiohttp.ClientSession) -> None:
    """``SessionOpener.resume`` checks ``abandoned`` before claiming (nothing changes in
    Redis) and again after the claim, before loading the view (nothing registered)."""
    async with two_nodes(database_url, redis_server) as (a, b):
        bob, first, copy = await detached_on(http, a)
        session_id = copy.session_id
        opener_b = services(b).opener
        user = await services(b).auth.authenticate(bob["access_token"])
        assert user is not None
        codec = codec_for("json")
        assert codec is not None
        loads: list[object] = []
        real_load = opener_b._load_view

        async def counted(session: object) -> object:
            loads.append(session)
            return await real_load(session)  # type: ignore[arg-type]

        opener_b._load_view = counted  # type: ignore[assignment, method-assign]
        result = await opener_b.resume(user, session_id, first.last_seq, codec,
                                       None, None, abandoned=lambda: True)  # type: ignore[arg-type]
        assert result == ABANDONED
        assert await mirror_of(a).owns(copy) is True
        checks = iter([False, True])  # gone after the claim
        result = await opener_b.resume(user, session_id, first.last_seq, codec,
                                       None, None,  # type: ignore[arg-type]
                                       abandoned=lambda: next(checks))
        assert result == ABANDONED
        assert loads == []  # no view loaded
        assert services(b).registry.get(session_id) is None
        await until(lambda: services(a).registry.get(session_id) is None)  # taken over
        # Claimed, not lost: the client's real resume (here, on A) gets it back.
        again = await GatewayClient.connect(http, a.ws_url)
        again.continue_from(first)
        await again.send(again.resume_frame(bob["access_token"]))
        assert (await again.recv())["op"] == "resumed"
        await close_all(first, again)


async def test_over_the_queue_limit_a_resume_is_told_to_come_back(
        database_url: str, redis_server: RedisServer, http: aiohttp.ClientSession) -> None:
    """With the gate full and its queue past ``session_start_max_queue_s``, a resume is
    answered ``reconnect`` (a backlog-sized ``retry_after_ms``) and close 1013, claims
    nothing, and a new connection gets HTTP 503 with Retry-After before the upgrade.
    Once the queue is worked off, the same resume succeeds."""
    async with two_nodes(database_url, redis_server, session_start_concurrency=1,
                         session_start_max_queue_s=0.0) as (a, b):
        bob, first, copy = await detached_on(http, a)
        carol = await register(http, a.url)
        gateway_b = services(b).gateway
        async with gate_held(gateway_b):
            late = await GatewayClient.connect(http, b.ws_url)  # admitted: no queue yet
            late.continue_from(first)
            queued = await GatewayClient.connect(http, b.ws_url)  # an identify that waits
            await queued.send({"op": "identify", "token": carol["access_token"]})
            await until(lambda: gateway_b.session_gate.waiting == 1)
            await late.send(late.resume_frame(bob["access_token"]))
            told = await late.recv()
            assert told["op"] == "reconnect", told
            assert 1000 <= told["retry_after_ms"] <= 30_000
            assert await late.closed() == 1013
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(b.ws_url)
            assert refused.value.status == 503
            assert refused.value.headers is not None
            assert int(refused.value.headers["Retry-After"]) >= 1
            assert await mirror_of(a).owns(copy) is True  # nothing claimed
        assert (await queued.recv())["op"] == "ready"  # the queued one was served
        assert gateway_b.stats["starts_refused"] == 2
        assert gateway_b.stats["resume_attempts"] == 0
        again = await GatewayClient.connect(http, b.ws_url)  # the retry, queue gone
        again.continue_from(first)
        await again.send(again.resume_frame(bob["access_token"]))
        assert (await again.recv())["op"] == "resumed"
        await close_all(first, late, queued, again)
