"""Functional tests of the gateway: a real server, real PostgreSQL, real websockets."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer
from tests.helpers import GatewayClient, bearer, register


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def two_members(http: aiohttp.ClientSession, server: RunningServer) -> tuple[
        GatewayClient, GatewayClient, dict[str, Any], dict[str, Any]]:
    a = await register(http, server.url)
    b = await register(http, server.url)
    ca = await GatewayClient.identified(http, server.ws_url, a["access_token"])
    cb = await GatewayClient.identified(http, server.ws_url, b["access_token"])
    return ca, cb, a, b


async def test_ready_carries_the_starter_community(live_server: RunningServer,
                                                  http: aiohttp.ClientSession) -> None:
    a = await register(http, live_server.url)
    client = await GatewayClient.connect(http, live_server.ws_url)
    assert client.hello["heartbeat_interval_ms"] > 0
    assert client.hello["limits"]["max_frame_bytes"] > 0
    ready = await client.identify(a["access_token"])
    assert ready["user"]["username"] == a["user"]["username"]
    names = {c["name"] for s in ready["communities"] for c in s["channels"]}
    assert {"general", "introductions"} <= names
    assert ready["session_id"]


async def test_message_reaches_other_member_in_order_once(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    ca, cb, _, _ = await two_members(http, live_server)
    general = ca.channel_named("general")["id"]
    sent = []
    for i in range(5):
        data = await ca.ok("send_message", channel_id=general, content=f"m{i}", nonce=f"n{i}")
        sent.append(data["message"])
    seqs = [m["seq"] for m in sent]
    assert seqs == list(range(seqs[0], seqs[0] + 5))  # gap-free per channel
    got = [await cb.event("message_create") for _ in range(5)]
    assert [g["message"]["content"] for g in got] == [f"m{i}" for i in range(5)]
    assert [g["message"]["seq"] for g in got] == seqs
    await cb.no_event("message_create")


async def test_same_nonce_never_creates_two_messages(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    ca, cb, _, _ = await two_members(http, live_server)
    general = ca.channel_named("general")["id"]
    first = await ca.ok("send_message", channel_id=general, content="once", nonce="retry-1")
    again = await ca.ok("send_message", channel_id=general, content="once", nonce="retry-1")
    assert first["message"]["id"] == again["message"]["id"]
    await cb.event("message_create")
    await cb.no_event("message_create")
    history = await cb.ok("fetch_history", channel_id=general)
    assert [m["content"] for m in history["messages"]].count("once") == 1


async def test_edit_delete_and_permissions(live_server: RunningServer,
                                          http: aiohttp.ClientSession) -> None:
    ca, cb, _, _ = await two_members(http, live_server)
    general = ca.channel_named("general")["id"]
    msg = (await ca.ok("send_message", channel_id=general, content="draft"))["message"]
    edited = await ca.ok("edit_message", channel_id=general, message_id=msg["id"],
                         content="final")
    assert edited["message"]["content"] == "final" and edited["message"]["edited_at"]
    assert (await cb.event("message_update"))["message"]["content"] == "final"
    refused = await cb.request("edit_message", channel_id=general, message_id=msg["id"],
                               content="hijack")
    assert refused["op"] == "error" and refused["code"] == "forbidden"
    refused = await cb.request("delete_message", channel_id=general, message_id=msg["id"])
    assert refused["code"] == "forbidden"
    await ca.ok("delete_message", channel_id=general, message_id=msg["id"])
    deleted = await cb.event("message_delete")
    assert deleted["message_id"] == msg["id"]
    history = await cb.ok("fetch_history", channel_id=general)
    assert msg["id"] not in [m["id"] for m in history["messages"]]


async def test_reactions_typing_and_read_state(live_server: RunningServer,
                                              http: aiohttp.ClientSession) -> None:
    ca, cb, a, _ = await two_members(http, live_server)
    general = ca.channel_named("general")["id"]
    msg = (await ca.ok("send_message", channel_id=general,
                       content=f"hey <@{cb.ready['user']['id']}>"))["message"]
    assert msg["mention_user_ids"] == [cb.ready["user"]["id"]]
    await cb.ok("add_reaction", channel_id=general, message_id=msg["id"], emoji="👍")
    added = await ca.event("reaction_add")
    assert added["count"] == 1 and added["emoji"] == "👍"
    await cb.ok("add_reaction", channel_id=general, message_id=msg["id"], emoji="👍")  # no-op
    await ca.no_event("reaction_add")
    who = await ca.ok("fetch_reactions", channel_id=general, message_id=msg["id"], emoji="👍")
    assert [u["id"] for u in who["users"]] == [cb.ready["user"]["id"]]
    await cb.ok("remove_reaction", channel_id=general, message_id=msg["id"], emoji="👍")
    assert (await ca.event("reaction_remove"))["count"] == 0

    await ca.ok("typing", channel_id=general)
    typing = await cb.event("typing_start")
    assert typing["user"]["id"] == ca.ready["user"]["id"]

    # B was mentioned: a fresh session shows one unread mention; mark_read clears it.
    fresh = await GatewayClient.identified(http, live_server.ws_url,
                                           (await _login(http, live_server, cb)))
    state = {r["channel_id"]: r for r in fresh.ready["read_states"]}[general]
    assert state["mention_count"] == 1 and state["unread_count"] >= 1
    data = await fresh.ok("mark_read", channel_id=general, seq=msg["seq"])
    assert data["read_state"]["mention_count"] == 0
    assert data["read_state"]["unread_count"] == 0
    other_session = await cb.event("read_state_update")
    assert other_session["read_state"]["last_read_seq"] == msg["seq"]
    del a


async def _login(http: aiohttp.ClientSession, server: RunningServer,
                 client: GatewayClient) -> str:
    async with http.post(f"{server.url}/api/v1/auth/login", json={
            "username": client.ready["user"]["username"],
            "password": "correct horse battery"}) as reply:
        assert reply.status == 200
        return str((await reply.json())["access_token"])


async def test_history_paging(live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    ca, _, _, _ = await two_members(http, live_server)
    channel = ca.channel_named("introductions")["id"]
    seqs = [(await ca.ok("send_message", channel_id=channel, content=str(i)))["message"]["seq"]
            for i in range(12)]
    newest = await ca.ok("fetch_history", channel_id=channel, limit=5)
    assert [m["seq"] for m in newest["messages"]] == seqs[-5:] and newest["has_more"]
    older = await ca.ok("fetch_history", channel_id=channel, limit=5, before=seqs[-5])
    assert [m["seq"] for m in older["messages"]] == seqs[-10:-5]
    after = await ca.ok("fetch_history", channel_id=channel, limit=3, after=seqs[0])
    assert [m["seq"] for m in after["messages"]] == seqs[1:4]
    around = await ca.ok("fetch_history", channel_id=channel, limit=4, around=seqs[6])
    assert seqs[6] in [m["seq"] for m in around["messages"]]
    too_many = await ca.request("fetch_history", channel_id=channel, limit=101)
    assert too_many["code"] == "invalid_argument"


async def test_threads(live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    ca, cb, _, _ = await two_members(http, live_server)
    general = ca.channel_named("general")["id"]
    root = (await ca.ok("send_message", channel_id=general, content="topic"))["message"]
    thread = (await ca.ok("create_thread", channel_id=general, name="details",
                          message_id=root["id"]))["channel"]
    assert thread["kind"] == "thread" and thread["parent_id"] == general
    seen = await cb.event("channel_create")
    assert seen["channel"]["id"] == thread["id"]
    reply = await cb.ok("send_message", channel_id=thread["id"], content="in thread")
    assert reply["message"]["seq"] == 1
    assert (await ca.event("message_create", timeout=5))["message"]["channel_id"] in (
        general, thread["id"])
    refused = await cb.request("set_thread_archived", thread_id=thread["id"], archived=True)
    assert refused["code"] == "forbidden"
    await ca.ok("set_thread_archived", thread_id=thread["id"], archived=True)
    await cb.event("channel_update")
    closed = await cb.request("send_message", channel_id=thread["id"], content="late")
    assert closed["code"] == "thread_archived"


async def test_direct_messages(live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    ca, cb, a, b = await two_members(http, live_server)
    c = await register(http, live_server.url)
    cc = await GatewayClient.identified(http, live_server.ws_url, c["access_token"])
    async with http.post(f"{live_server.url}/api/v1/dms", headers=bearer(a["access_token"]),
                         json={"user_ids": [b["user"]["id"]]}) as reply:
        assert reply.status == 201
        dm = (await reply.json())["channel"]
    assert (await cb.event("channel_create"))["channel"]["id"] == dm["id"]
    await ca.event("channel_create")
    await ca.ok("send_message", channel_id=dm["id"], content="psst")
    assert (await cb.event("message_create"))["message"]["content"] == "psst"
    refused = await cc.request("fetch_history", channel_id=dm["id"])
    assert refused["code"] == "not_found"
    await cc.no_event("message_create", wait=0.2)


async def test_resume_replays_exactly_what_was_missed(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    ca, cb, _, b = await two_members(http, live_server)
    general = ca.channel_named("general")["id"]
    await ca.ok("send_message", channel_id=general, content="before")
    await cb.event("message_create")
    session_id, seq = cb.ready["session_id"], cb.last_seq
    cb.ws._response.connection.transport.abort()  # type: ignore[union-attr]  # drop, no close
    for i in range(3):
        await ca.ok("send_message", channel_id=general, content=f"missed {i}")
    again = await GatewayClient.connect(http, live_server.ws_url)
    again.last_seq = seq
    await again.send({"op": "resume", "token": b["access_token"], "session_id": session_id,
                      "seq": seq})
    resumed = await again.recv()
    assert resumed["op"] == "resumed" and resumed["session_id"] == session_id
    # Exactly the dispatches after ``seq``, numbered on from it (recv checks that): the
    # three messages, in order, plus whatever event about people the server had sent the
    # dropped socket after the client's last read (a presence batch, on a busy machine).
    replayed = [(await again.recv())["d"] for _ in range(resumed["replayed"])]
    assert again.last_seq == seq + resumed["replayed"]
    assert [d["message"]["content"] for d in replayed if d["t"] == "message_create"] == [
        "missed 0", "missed 1", "missed 2"]
    assert not [d for d in replayed if d["t"] != "message_create"
                and d["t"].startswith(("message_", "reaction_"))], replayed
    await ca.ok("send_message", channel_id=general, content="live")
    assert (await again.event("message_create"))["message"]["content"] == "live"


async def test_resume_unknown_session_is_invalid(live_server: RunningServer,
                                                 http: aiohttp.ClientSession) -> None:
    a = await register(http, live_server.url)
    client = await GatewayClient.connect(http, live_server.ws_url)
    await client.send({"op": "resume", "token": a["access_token"], "session_id": "nope",
                       "seq": 0})
    assert (await client.recv())["op"] == "invalid_session"
    assert await client.closed() == 4006


async def test_bad_input_gets_documented_errors(live_server: RunningServer,
                                               http: aiohttp.ClientSession) -> None:
    ca, cb, _, _ = await two_members(http, live_server)
    general = ca.channel_named("general")["id"]
    await ca.send("{not json")
    err = await ca.recv()
    assert err["op"] == "error" and err["code"] == "invalid_frame"
    await ca.send({"op": "send_message", "id": 7, "channel_id": "x"})
    err = await ca.recv()
    assert err == {**err, "op": "error", "code": "invalid_frame", "id": 7}
    long = await ca.request("send_message", channel_id=general, content="x" * 4001)
    assert long["code"] == "content_too_long"
    empty = await ca.request("send_message", channel_id=general, content="   ")
    assert empty["code"] == "empty_message"
    # The connection still works, and other users are unaffected.
    await ca.ok("send_message", channel_id=general, content="still fine")
    assert (await cb.event("message_create"))["message"]["content"] == "still fine"
    # An oversized frame closes with 1009 before it is decoded.
    limit = ca.hello["limits"]["max_frame_bytes"]
    await ca.send(json.dumps({"op": "heartbeat", "pad": "x" * limit}))
    assert await ca.closed() == 1009
    await cb.ok("send_message", channel_id=general, content="b is fine")


async def test_authentication_failure_and_origin(live_server: RunningServer,
                                                 http: aiohttp.ClientSession) -> None:
    client = await GatewayClient.connect(http, live_server.ws_url)
    await client.send({"op": "identify", "token": "forged"})
    assert await client.closed() == 4004
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(live_server.ws_url, headers={"Origin": "https://evil.example"})
    assert refused.value.status == 403
    ok = await http.ws_connect(live_server.ws_url,
                               headers={"Origin": live_server.url})
    assert (json.loads((await ok.receive()).data))["op"] == "hello"
    await ok.close()


async def test_request_before_identify_and_heartbeat(live_server: RunningServer,
                                                     http: aiohttp.ClientSession) -> None:
    client = await GatewayClient.connect(http, live_server.ws_url)
    await client.send({"op": "heartbeat", "seq": None})
    assert (await client.recv())["op"] == "heartbeat_ack"
    await client.send({"op": "send_message", "id": 1, "channel_id": 1, "content": "x"})
    err = await client.recv()
    assert err["code"] == "not_ready" and err["id"] == 1


async def test_msgpack_encoding_end_to_end(live_server: RunningServer,
                                           http: aiohttp.ClientSession) -> None:
    import msgspec

    a = await register(http, live_server.url)
    b = await register(http, live_server.url)
    ws = await http.ws_connect(live_server.ws_url + "?encoding=msgpack")
    hello = msgspec.msgpack.decode((await ws.receive()).data)
    assert hello["op"] == "hello"
    await ws.send_bytes(msgspec.msgpack.encode({"op": "identify", "token": a["access_token"]}))
    ready = msgspec.msgpack.decode((await ws.receive()).data)
    general = next(c["id"] for s in ready["communities"] for c in s["channels"]
                   if c["name"] == "general")
    json_client = await GatewayClient.identified(http, live_server.ws_url, b["access_token"])
    await json_client.ok("send_message", channel_id=general, content="to both encodings")
    frame = msgspec.msgpack.decode((await ws.receive()).data)
    assert frame["op"] == "dispatch" and frame["s"] == 1
    assert frame["d"]["message"]["content"] == "to both encodings"
    await ws.close()


async def test_slow_consumer_is_cut_off_and_others_carry_on(
        database_url: str, http: aiohttp.ClientSession) -> None:
    """A client that stops reading is closed (4008) once its buffer passes the limit;
    a reading client in the same channel keeps receiving everything."""
    from aiohttp import web

    from server.app import SERVICES, build_app
    from server.config import load_config
    from tests.conftest import TEST_SECRET, free_port

    config = load_config(overrides={
        "database_url": database_url, "secret": TEST_SECRET, "argon2_time_cost": 1,
        "argon2_memory_kib": 8192, "limits": {"max_outbound_bytes": 64 * 1024,
                                              "requests_per_window": 10_000,
                                              "user_messages_per_window": 10_000}}, environ={})
    app = build_app(config)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/gateway"
    try:
        a, b, c = [await register(http, base) for _ in range(3)]
        sender = await GatewayClient.identified(http, ws_url, a["access_token"])
        reader = await GatewayClient.identified(http, ws_url, b["access_token"])
        # The slow one: a raw socket whose receive buffer we never drain.
        slow = await GatewayClient.identified(http, ws_url, c["access_token"])
        connection = slow.ws._response.connection
        assert connection is not None and connection.transport is not None
        slow_transport = connection.transport
        slow_transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow_transport.pause_reading()
        general = sender.channel_named("general")["id"]
        payload = "x" * 3900
        gateway = app[SERVICES].gateway
        # Kernel socket buffers absorb a few MiB first; keep sending until the server's
        # own buffer for the slow client passes the limit (bounded: 3,000 messages).
        sent = 0
        while gateway.stats["slow_consumers"] == 0 and sent < 3000:
            await sender.ok("send_message", channel_id=general, content=f"{sent} {payload}")
            got = await reader.event("message_create")
            assert got["message"]["content"].startswith(f"{sent} ")
            sent += 1
        assert gateway.stats["slow_consumers"] == 1, sent
        slow_user = c["user"]["id"]

        def slow_still_connected() -> bool:
            return any(conn.session is not None and conn.session.user.id == slow_user
                       for conn in gateway.connections)

        for _ in range(50):  # the close handshake gets ws timeout (2 s), then an abort
            if not slow_still_connected():
                break
            await asyncio.sleep(0.1)
        assert not slow_still_connected()
        # The reader is unaffected and the session of the slow one stays resumable.
        await sender.ok("send_message", channel_id=general, content="after")
        assert (await reader.event("message_create"))["message"]["content"] == "after"
    finally:
        await runner.cleanup()


async def test_nul_is_refused_and_does_not_sink_a_batch(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    ca, cb, _, _ = await two_members(http, live_server)
    general = ca.channel_named("general")["id"]
    bad = await ca.request("send_message", channel_id=general, content="a\x00b")
    assert bad["code"] == "invalid_argument"
    bad = await ca.request("add_reaction", channel_id=general, message_id=1, emoji="\x00")
    assert bad["code"] in ("invalid_argument", "not_found")
    fine = await ca.ok("send_message", channel_id=general, content="fine")
    assert (await cb.event("message_create"))["message"]["id"] == fine["message"]["id"]


async def test_identical_history_reads_share_one_query(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    from protocol.chat import FetchHistory, HistoryResult
    from server.app import SERVICES

    ca, _, _, _ = await two_members(http, live_server)
    general = ca.channel_named("general")["id"]
    for i in range(3):
        await ca.ok("send_message", channel_id=general, content=f"h{i}")
    services = live_server.app[SERVICES]
    session = services.registry.get(ca.ready["session_id"])
    assert session is not None
    request = FetchHistory(id=1, channel_id=general, limit=10)
    pages = await asyncio.gather(*[services.chat.fetch_history(session, request)
                                   for _ in range(8)])
    assert services.chat.history_coalesced == 7
    assert all(p == pages[0] for p in pages)
    assert isinstance(pages[0], HistoryResult)
    assert [m.content for m in pages[0].messages] == ["h0", "h1", "h2"]


async def test_new_connections_beyond_the_admission_rate_are_told_to_retry(
        database_url: str, http: aiohttp.ClientSession) -> None:
    from aiohttp import web

    from server.app import SERVICES, build_app
    from server.config import load_config
    from tests.conftest import TEST_SECRET, free_port

    config = load_config(overrides={"database_url": database_url, "secret": TEST_SECRET,
                                    "admission_per_s": 3}, environ={})
    runner = web.AppRunner(build_app(config), handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = f"ws://127.0.0.1:{port}/gateway"
        admitted = [await http.ws_connect(url) for _ in range(3)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url)
        assert refused.value.status == 503
        assert 1 <= int(refused.value.headers["Retry-After"]) <= 5  # type: ignore[index]
        # the refusal is the documented REST error body (a plain GET reads it)
        async with http.get(f"http://127.0.0.1:{port}/gateway") as reply:
            assert reply.status == 503
            assert (await reply.json())["error"]["code"] == "unavailable"
            assert 1 <= int(reply.headers["Retry-After"]) <= 5
        # a wrong encoding is a documented code too, whatever the admission state
        async with http.get(f"http://127.0.0.1:{port}/gateway?encoding=xml") as reply:
            assert reply.status == 400
            assert (await reply.json())["error"]["code"] == "invalid_argument"
        services = runner.app[SERVICES]
        services.gateway.draining = True
        try:
            async with http.get(f"http://127.0.0.1:{port}/gateway") as reply:
                assert reply.status == 503
                assert (await reply.json())["error"]["code"] == "unavailable"
                assert reply.headers["Retry-After"] == "1"
        finally:
            services.gateway.draining = False
        await asyncio.sleep(0.5)  # the bucket refills at 3/s
        late = await http.ws_connect(url)
        for ws in [*admitted, late]:
            await ws.close()
    finally:
        await runner.cleanup()


async def test_user_rate_limit_spans_connections(
        database_url: str, http: aiohttp.ClientSession) -> None:
    from aiohttp import web

    from server.app import build_app
    from server.config import load_config
    from tests.conftest import TEST_SECRET, free_port

    config = load_config(overrides={
        "database_url": database_url, "secret": TEST_SECRET, "argon2_time_cost": 1,
        "argon2_memory_kib": 8192, "limits": {"user_messages_per_window": 3}}, environ={})
    runner = web.AppRunner(build_app(config), handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        base, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/gateway"
        me = await register(http, base)
        first = await GatewayClient.identified(http, ws_url, me["access_token"])
        second = await GatewayClient.identified(http, ws_url, me["access_token"])
        general = first.channel_named("general")["id"]
        replies = []
        for i in range(4):
            client = first if i % 2 else second
            replies.append(await client.request("send_message", channel_id=general,
                                                content=f"{i}"))
        assert [r["op"] for r in replies] == ["ok", "ok", "ok", "error"]
        assert replies[3]["code"] == "rate_limited" and replies[3]["retry_after_ms"] > 0
    finally:
        await runner.cleanup()
