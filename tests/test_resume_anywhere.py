"""Resume anywhere after SIGKILL, with message creates replayed from PostgreSQL.

Real gateway processes on one PostgreSQL and one Redis. Only the non-create events a
session received are mirrored to Redis; the creates a client missed are fetched again
after the per-channel positions it sends with ``resume``. These tests kill the process
holding a session while its client has frames it has not processed, then check that
the client gets exactly what it missed, in order, once, with ``s`` that only grows,
and that a second failover right after works the same way.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from rooms.realtime.session_mirror import _keys
from tests.conftest import RunningServer, server_nodes
from tests.helpers import GatewayClient, bearer, register

Frame = dict[str, Any]
KEPT = frozenset({"message_create", "message_update", "reaction_add", "channel_create"})
"""What the checks compare (presence and typing are ephemeral, never promised)."""


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def kill(node: RunningServer) -> None:
    assert isinstance(node.process, subprocess.Popen)
    node.process.send_signal(signal.SIGKILL)
    node.process.wait()


async def collect(client: GatewayClient, last: Callable[[Frame], bool],
                  timeout: float = 15.0) -> list[Frame]:
    """Dispatches received until (and including) the first for which ``last`` holds."""
    got: list[Frame] = [f for f in client.backlog if f.get("op") == "dispatch"]
    client.backlog.clear()
    while not (got and last(got[-1])):
        frame = await client.recv(timeout)
        assert frame["op"] != "__closed__", frame
        if frame["op"] == "dispatch":
            got.append(frame)
    return got


def content_is(text: str) -> Callable[[Frame], bool]:
    def check(frame: Frame) -> bool:
        d = frame["d"]
        return bool(d["t"] == "message_create" and d["message"]["content"] == text)
    return check


def key(frame: Frame) -> tuple[Any, ...]:
    """What identifies an event for these checks."""
    d = frame["d"]
    t = d["t"]
    if t == "message_create":
        return (t, d["message"]["channel_id"], d["message"]["seq"])
    if t == "message_update":
        return (t, d["message"]["id"], d["message"]["content"])
    if t == "reaction_add":
        return (t, d["message_id"], d["emoji"], d["count"])
    return (t, d["channel"]["id"])


def channel_of(frame: Frame) -> int:
    d = frame["d"]
    if d["t"] in ("message_create", "message_update"):
        return int(d["message"]["channel_id"])
    if d["t"] == "reaction_add":
        return int(d["channel_id"])
    return 0  # a user-level event


def kept(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f["d"]["t"] in KEPT]


def processed(positions: dict[int, int], frames: list[Frame]) -> tuple[int, dict[int, int]]:
    """The (seq, positions) a client has after processing ``frames``."""
    positions = dict(positions)
    for frame in frames:
        d = frame["d"]
        if d["t"] == "message_create":
            message = d["message"]
            positions[message["channel_id"]] = max(positions.get(message["channel_id"], 0),
                                                   message["seq"])
        elif d["t"] in ("channel_create", "channel_update"):
            positions.setdefault(d["channel"]["id"], d["channel"]["last_seq"])
    return frames[-1]["s"], positions


async def resume_at(http: aiohttp.ClientSession, node: RunningServer, token: str,
                    ready: Frame, seq: int, positions: dict[int, int]) -> GatewayClient:
    client = await GatewayClient.connect(http, node.ws_url)
    client.ready, client.last_seq, client.positions = ready, seq, dict(positions)
    await client.send(client.resume_frame(token))
    resumed = await client.recv(timeout=15)
    assert resumed["op"] == "resumed", resumed
    return client


def assert_exactly(got: list[Frame], expected: list[Frame], before: list[Frame]) -> None:
    """``got`` holds exactly the events of ``expected``, once each; in each channel (and
    among the user-level events) in the original order; the non-create events in their
    original order; each event after the create of the message it refers to, and each
    message after the event that brought its channel."""
    got_keys, expected_keys = [key(f) for f in kept(got)], [key(f) for f in kept(expected)]
    assert len(got_keys) == len(set(got_keys)), f"duplicates in {got_keys}"
    assert sorted(got_keys) == sorted(expected_keys), (got_keys, expected_keys)
    for channel in {channel_of(f) for f in kept(expected)}:
        assert [key(f) for f in kept(got) if channel_of(f) == channel] == \
            [key(f) for f in kept(expected) if channel_of(f) == channel], channel
    assert [k for k in got_keys if k[0] != "message_create"] == \
        [k for k in expected_keys if k[0] != "message_create"]
    seen: set[int] = set()
    channels: set[int] = set()
    for frame in kept(before):
        d = frame["d"]
        if d["t"] == "message_create":
            seen.add(d["message"]["id"])
        if d["t"] == "channel_create":
            channels.add(d["channel"]["id"])
    for frame in kept(got):
        d = frame["d"]
        if d["t"] == "message_create":
            seen.add(d["message"]["id"])
            assert d["message"]["channel_id"] in channels or \
                d["message"]["channel_id"] not in {k[1] for k in expected_keys
                                                   if k[0] == "channel_create"}
        elif d["t"] == "channel_create":
            channels.add(d["channel"]["id"])
        else:
            message_id = d["message"]["id"] if d["t"] == "message_update" else d["message_id"]
            assert message_id in seen, f"{d['t']} before its message"


async def test_sigkill_then_resume_elsewhere_twice_gets_exactly_what_was_missed(
        database_url: str, redis_url: str, http: aiohttp.ClientSession) -> None:
    with server_nodes(database_url, 3, HEARTH_REDIS_URL=redis_url) as (a, b, c):
        alice, bob = await register(http, c.url), await register(http, c.url)
        sender = await GatewayClient.identified(http, c.ws_url, alice["access_token"])
        reader = await GatewayClient.identified(http, a.ws_url, bob["access_token"])
        token = bob["access_token"]
        general = sender.channel_named("general")["id"]

        async def send(channel_id: int, content: str) -> int:
            reply = await sender.ok("send_message", channel_id=channel_id, content=content)
            return int(reply["message"]["id"])

        async def edit(channel_id: int, message_id: int, content: str) -> None:
            await sender.ok("edit_message", channel_id=channel_id, message_id=message_id,
                            content=content)

        async def react(channel_id: int, message_id: int) -> None:
            await sender.ok("add_reaction", channel_id=channel_id, message_id=message_id,
                            emoji="👍")

        # On A: creates, edits, reactions and a user-level event (a new DM channel).
        m1 = await send(general, "m1")
        m2 = await send(general, "m2")
        await edit(general, m1, "m1 edited")
        await react(general, m2)
        async with http.post(f"{c.url}/api/v1/dms", headers=bearer(alice["access_token"]),
                             json={"user_ids": [bob["user"]["id"]]}) as reply:
            assert reply.status == 201
            dm = int((await reply.json())["channel"]["id"])
        await send(dm, "d1")
        m3 = await send(general, "m3")
        await edit(general, m3, "m3 edited")
        await react(general, m3)
        await send(general, "m4")
        on_a = await collect(reader, content_is("m4"))
        # The client processed up to the first edit; the rest is in its socket only.
        cut = next(i for i, f in enumerate(on_a) if f["d"]["t"] == "message_update") + 1
        seq, positions = processed(dict(reader.positions_at_ready), on_a[:cut])
        kill(a)
        await send(general, "m5")  # while no process holds the session
        await send(dm, "d2")

        async def fail_over(node: RunningServer, seq: int, positions: dict[int, int],
                            sentinel: str) -> tuple[GatewayClient, list[Frame]]:
            """Resume on ``node``; the frames up to a message sent after the resume."""
            client = await resume_at(http, node, token, reader.ready, seq, positions)
            await send(general, sentinel)
            frames = await collect(client, content_is(sentinel))
            assert frames[0]["s"] > seq  # numbered after everything the client has
            return client, frames

        def creates(frames: list[Frame], *contents: str) -> list[Frame]:
            return [f for f in frames if f["d"]["t"] == "message_create"
                    and f["d"]["message"]["content"] in contents]

        # First failover: on B.
        reader_b, on_b = await fail_over(b, seq, positions, "sentinel 1")
        assert_exactly(on_b[:-1], on_a[cut:] + creates(on_b, "m5", "d2"), on_a[:cut])
        # Live on B, then B dies while the client is partway through B's frames.
        m5 = creates(on_b, "m5")[0]["d"]["message"]["id"]
        await edit(general, m5, "m5 edited")
        await react(general, m5)
        await send(dm, "d3")
        on_b += await collect(reader_b, content_is("d3"))
        cut_b = next(i for i, f in enumerate(on_b) if f["d"]["t"] == "message_update") + 1
        seq_b, positions_b = processed(positions, on_b[:cut_b])
        kill(b)
        await send(general, "m6")

        # Second failover right after: on C, with the numbers B gave.
        reader_c, on_c = await fail_over(c, seq_b, positions_b, "sentinel 2")
        assert_exactly(on_c[:-1], on_b[cut_b:] + creates(on_c, "m6"), on_a[:cut] + on_b[:cut_b])
        # And it is live on C.
        await react(general, m1)
        live = await collect(reader_c, lambda f: f["d"]["t"] == "reaction_add")
        assert key(live[-1]) == ("reaction_add", m1, "👍", 1)


async def test_positions_ahead_of_the_mirrors_cursors_bring_no_duplicates(
        database_url: str, redis_url: str, http: aiohttp.ClientSession) -> None:
    """A session that only received creates has cursors in Redis that are behind the
    client (they are written per interval, not per create). Resumed elsewhere with its
    positions, the client gets the messages after them, none twice."""
    with server_nodes(database_url, 2, HEARTH_REDIS_URL=redis_url) as (a, b):
        alice, bob = await register(http, b.url), await register(http, b.url)
        sender = await GatewayClient.identified(http, b.ws_url, alice["access_token"])
        reader = await GatewayClient.identified(http, a.ws_url, bob["access_token"])
        general = sender.channel_named("general")["id"]
        at_ready = reader.channel_named("general")["last_seq"]
        for i in range(6):
            await sender.ok("send_message", channel_id=general, content=f"m{i}")
        got = await collect(reader, content_is("m5"))
        seq, positions = processed(reader.positions_at_ready, got)
        assert positions[general] == at_ready + 6
        kill(a)
        # The mirror's cursor for the channel is as identify wrote it: the interval
        # write (every 20 s) is made to have not happened, whatever the timing.
        check = aioredis.Redis.from_url(redis_url)
        try:
            meta = _keys(reader.ready["session_id"])[1]
            assert int(await check.hget(meta, f"c{general}") or 0) <= positions[general]
            await check.hset(meta, f"c{general}", at_ready)
        finally:
            await check.aclose()
        await sender.ok("send_message", channel_id=general, content="after")
        again = await resume_at(http, b, bob["access_token"], reader.ready, seq, positions)
        await sender.ok("send_message", channel_id=general, content="sentinel")
        after = await collect(again, content_is("sentinel"))
        assert [f["d"]["message"]["content"] for f in kept(after)] == ["after", "sentinel"]
        assert [f["d"]["message"]["seq"] for f in kept(after)] == \
            [at_ready + 7, at_ready + 8]


async def test_without_positions_nothing_is_missed_and_repeats_are_droppable(
        database_url: str, redis_url: str, http: aiohttp.ClientSession) -> None:
    """An older client sends no positions. Its mirror cursor was written (with an edit)
    after creates the client never processed; the resume starts below it by as many
    dispatches as the client is behind the write, so nothing is missed: at most
    messages it has come again, which it drops by (channel, seq)."""
    with server_nodes(database_url, 2, HEARTH_REDIS_URL=redis_url) as (a, b):
        alice, carol = await register(http, b.url), await register(http, b.url)
        sender = await GatewayClient.identified(http, b.ws_url, alice["access_token"])
        reader = await GatewayClient.identified(http, a.ws_url, carol["access_token"])
        general = sender.channel_named("general")["id"]
        ids = [int((await sender.ok("send_message", channel_id=general,
                                    content=f"m{i}"))["message"]["id"]) for i in range(6)]
        await sender.ok("edit_message", channel_id=general, message_id=ids[5],
                        content="m5 edited")
        got = await collect(reader, lambda f: f["d"]["t"] == "message_update")
        cut = next(i for i, f in enumerate(got) if content_is("m2")(f)) + 1
        seq, positions = processed(reader.positions_at_ready, got[:cut])
        kill(a)
        check = aioredis.Redis.from_url(redis_url)
        try:  # the edit's write stored a cursor past what the client processed
            meta = _keys(reader.ready["session_id"])[1]
            assert int(await check.hget(meta, f"c{general}") or 0) > positions[general]
        finally:
            await check.aclose()
        await sender.ok("send_message", channel_id=general, content="after")
        again = await GatewayClient.connect(http, b.ws_url)
        again.ready, again.last_seq = reader.ready, seq
        await again.send({"op": "resume", "token": carol["access_token"],
                          "session_id": reader.ready["session_id"], "seq": seq})
        assert (await again.recv(timeout=15))["op"] == "resumed"
        await sender.ok("send_message", channel_id=general, content="sentinel")
        after = kept(await collect(again, content_is("sentinel")))
        fresh = [f for f in after if f["d"]["t"] != "message_create"
                 or f["d"]["message"]["seq"] > positions[general]]
        assert len(after) - len(fresh) <= len(got[cut:]) + 1  # only repeats were dropped
        assert [key(f) for f in fresh] == [key(f) for f in kept(got[cut:])] + [
            key(f) for f in after if content_is("after")(f) or content_is("sentinel")(f)]
