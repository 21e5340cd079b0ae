"""The Redis session mirror against a real Redis: ownership decides who may delete."""

from __future__ import annotations

import redis.asyncio as aioredis

from protocol.codec import JSON
from protocol.models import User
from rooms.realtime.session_mirror import SessionMirror, _keys
from rooms.realtime.sessions import Session

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
