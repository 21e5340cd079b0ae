"""The Redis session mirror against a real Redis: ownership decides who may delete."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from protocol.codec import JSON
from protocol.models import User
from rooms.realtime.session_mirror import ENTRY, SessionMirror, _keys
from rooms.realtime.sessions import Session
from tests.redis_fixture import RedisServer

ALICE = User(id=1, username="alice", display_name="Alice")


async def test_a_superseded_copy_cannot_forget_the_new_owners_session(redis_url: str) -> None:
    """Process A's copy was claimed by B and A never heard (the notice was lost); the
    client then closes A's old socket normally: B's keys must survive."""
    a = SessionMirror(redis_url, owner="node-a", ttl_ms=60_000, max_frames=100)
    b = SessionMirror(redis_url, owner="node-b", ttl_ms=60_000, max_frames=100)
    check = aioredis.Redis.from_url(redis_url)
    try:
        session = Session(ALICE, JSON, 100)
        await a.written(session)
        frames_key, meta_key = _keys(session.session_id)
        assert await check.exists(meta_key) == 1
        claimed = await b.claim(session.session_id, ALICE.id, JSON.encoding.value)
        assert not isinstance(claimed, str) and claimed.epoch == session.epoch + 1
        assert not session.is_superseded  # A does not know
        assert await a.forget(session.session_id, session.epoch) is False
        assert await check.hget(meta_key, "owner") == b"node-b"
        # The owner may.
        assert await b.forget(session.session_id, claimed.epoch) is True
        assert await check.exists(meta_key, frames_key) == 0
    finally:
        await check.aclose()
        await a.close()
        await b.close()


async def test_the_owner_forgets_its_own_session(redis_url: str) -> None:
    a = SessionMirror(redis_url, owner="node-a", ttl_ms=60_000, max_frames=100)
    check = aioredis.Redis.from_url(redis_url)
    try:
        session = Session(ALICE, JSON, 100)
        await a.written(session)
        _, meta_key = _keys(session.session_id)
        assert await check.exists(meta_key) == 1
        assert await a.forget(session.session_id, session.epoch) is True
        assert await check.exists(meta_key) == 0
    finally:
        await check.aclose()
        await a.close()


class Frames:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write(self, frame: bytes) -> None:
        self.frames.append(frame)

    def fail(self, code: object, reason: str) -> None:
        raise AssertionError(f"unexpected close {code}")

    def congested(self) -> bool:
        return False


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_what_a_failed_write_left_is_written_later(redis_server: RedisServer) -> None:
    """Mirrored events delivered while Redis is away still go out, once; they reach the
    mirror with the next write (scheduled even if nothing else is delivered), so a
    resume elsewhere gets them, each with its channel and position."""
    a = SessionMirror(redis_server.url, owner="node-a", ttl_ms=60_000, max_frames=100)
    b = SessionMirror(redis_server.url, owner="node-b", ttl_ms=60_000, max_frames=100)
    try:
        session = Session(ALICE, JSON, 100)
        sink = Frames()
        session.sink = sink
        session.mirror = a
        await a.written(session)
        session.deliver(b'{"t":"message_create","n":0}', 7, 5)  # not mirrored: out at once
        assert len(sink.frames) == 1
        redis_server.stop()
        session.deliver(b'{"t":"x","n":1}', 7)
        session.deliver(b'{"t":"x","n":2}', 7)
        await a.written(session)
        assert a.failures >= 1
        assert len(sink.frames) == 3  # availability first
        redis_server.start()

        async def stored() -> bool:
            with contextlib.suppress(Exception):
                return await b._redis.llen(_keys(session.session_id)[0]) == 2
            return False

        await until(stored)
        claimed = await b.claim(session.session_id, ALICE.id, JSON.encoding.value)
        assert not isinstance(claimed, str)
        assert [(e.seq, e.channel_id, e.position) for e in claimed.entries] == \
            [(2, 7, 5), (3, 7, 5)]
        assert claimed.cursors == {7: 5}
        assert claimed.seq == 3
        assert len(sink.frames) == 3  # not written out twice
    finally:
        await a.close()
        await b.close()


async def _commands(r: aioredis.Redis) -> int:
    """Commands this Redis has executed (INFO and CONFIG, the test's own, left out)."""
    stats = await r.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items()
               if k not in ("cmdstat_info", "cmdstat_config"))


def _create(channel_id: int, seq: int) -> bytes:
    return f'{{"t":"message_create","c":{channel_id},"s":{seq}}}'.encode()


async def test_message_creates_cost_redis_nothing_but_the_interval_write(
        redis_server: RedisServer) -> None:
    """N sessions each receiving M message creates: no Redis command until the
    periodic refresh, whose cost (one Lua call for all N, the same commands inside it)
    does not depend on M; the creates went to the sockets at once. An edit is still
    mirrored write-ahead."""
    sessions_n = 30
    mirror = SessionMirror(redis_server.url, owner="node-a", ttl_ms=60_000, max_frames=100)
    check = aioredis.Redis.from_url(redis_server.url)
    try:
        sessions, sinks = [], []
        for _ in range(sessions_n):
            session, sink = Session(ALICE, JSON, 10_000), Frames()
            session.sink, session.mirror = sink, mirror
            session.set_cursor(7, 0)
            sessions.append(session)
            sinks.append(sink)
        for session in sessions:
            await mirror.written(session)
        seq = 0
        costs: list[tuple[int, int]] = []
        for creates in (20, 400):
            before, calls_before = await _commands(check), mirror.script_calls
            first = seq + 1
            for seq in range(first, first + creates):
                body = _create(7, seq)
                for session in sessions:
                    session.deliver(body, 7, seq)
            assert all(len(sink.frames) == seq for sink in sinks)  # out at once
            await asyncio.sleep(0)  # a flush, had one been scheduled, would run now
            assert await _commands(check) == before
            assert mirror.script_calls == calls_before
            await mirror.refresh(sessions)  # the interval write
            costs.append((mirror.script_calls - calls_before,
                          await _commands(check) - before))
            frames_key, meta_key = _keys(sessions[0].session_id)
            assert await check.hmget(meta_key, ["seq", "c7"]) == \
                [str(seq).encode(), str(seq).encode()]
            assert await check.llen(frames_key) == 0  # creates are not stored
        assert costs[0] == costs[1]  # 20 times the creates, the same cost
        assert costs[0][0] == 1  # one Lua call stores all 30 sessions
        assert costs[0][1] <= 1 + 6 * sessions_n  # the call and its commands per session
        calls_before = mirror.script_calls
        await mirror.refresh(sessions)  # nothing moved: only TTLs, no store
        assert mirror.script_calls == calls_before

        # An edit is mirrored write-ahead: not on the socket before it is in Redis.
        edit = b'{"t":"message_update","n":1}'
        sessions[0].deliver(edit, 7)
        assert len(sinks[0].frames) == seq
        await mirror.written(sessions[0])
        assert len(sinks[0].frames) == seq + 1
        [entry] = await check.lrange(_keys(sessions[0].session_id)[0], 0, -1)
        assert isinstance(entry, bytes)
        assert ENTRY.unpack_from(entry) == (seq + 1, 7, seq)
    finally:
        await check.aclose()
        await mirror.close()


async def test_a_create_waits_behind_a_pending_mirrored_entry(redis_url: str) -> None:
    """The socket order never changes: a create delivered while an edit waits for its
    write goes out after it (not stored), even while that write is in flight."""
    mirror = SessionMirror(redis_url, owner="node-a", ttl_ms=60_000, max_frames=100)
    try:
        session, sink = Session(ALICE, JSON, 100), Frames()
        session.sink, session.mirror = sink, mirror
        await mirror.written(session)
        session.deliver(b'{"t":"reaction_add","n":1}', 7)
        session.deliver(_create(7, 1), 7, 1)
        await asyncio.sleep(0)  # the flush has taken the reaction; its write is in flight
        session.deliver(_create(7, 2), 7, 2)
        assert sink.frames == []
        await mirror.written(session)
        await until(lambda: _true(len(sink.frames) == 3))
        assert [json.loads(f)["s"] for f in sink.frames] == [1, 2, 3]
        assert [json.loads(f)["d"]["t"] for f in sink.frames] == \
            ["reaction_add", "message_create", "message_create"]
        claimed = await mirror.claim(session.session_id, ALICE.id, JSON.encoding.value)
        assert not isinstance(claimed, str)
        assert [(e.seq, e.channel_id, e.position) for e in claimed.entries] == [(1, 7, 0)]
    finally:
        await mirror.close()


async def _true(value: bool) -> bool:
    return value


async def test_entries_trimmed_away_leave_a_floor(redis_url: str) -> None:
    """A client behind an entry the list no longer holds cannot be resumed: the claim
    says how far back the list reaches although creates leave gaps in its seqs."""
    mirror = SessionMirror(redis_url, owner="node-a", ttl_ms=60_000, max_frames=3)
    try:
        session, sink = Session(ALICE, JSON, 100), Frames()
        session.sink, session.mirror = sink, mirror
        await mirror.written(session)
        for n in range(1, 6):
            session.deliver(_create(7, n), 7, n)  # seqs 1, 3, 5, 7, 9
            session.deliver(b'{"t":"message_update","n":%d}' % n, 7)  # seqs 2, 4, ...
            await mirror.written(session)
        claimed = await mirror.claim(session.session_id, ALICE.id, JSON.encoding.value)
        assert not isinstance(claimed, str)
        assert [e.seq for e in claimed.entries] == [6, 8, 10]
        assert [e.position for e in claimed.entries] == [3, 4, 5]
        assert claimed.floor == 4
    finally:
        await mirror.close()
