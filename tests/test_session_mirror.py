"""The Redis session mirror against a real Redis: ownership decides who may delete."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from protocol.codec import JSON
from protocol.models import User
from rooms.realtime.session_mirror import SessionMirror, _keys
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
