"""Resume on any node: sessions mirrored to Redis, write-ahead.

With Redis configured, every dispatch a session produces is copied to Redis *before* it
is written to the socket. So whatever a client has seen is in Redis, and if its gateway
process dies (even ``kill -9``), the client can reconnect to any process on any node and
``resume``: that process loads the session's frames and replays exactly what the client
missed, numbered as before.

Cost is kept off the per-recipient path: deliveries only append to the session's
pending list and mark it dirty; once per event-loop pass one pipelined round-trip
stores every dirty session's new frames (``RPUSH`` + ``LTRIM`` to the replay size, a
hash of metadata, TTL refreshes), then the frames go out to the sockets. Delivery is
delayed by that one round-trip (well under a millisecond on a LAN).

What is stored per session (``hearth:s:<id>:f``, a list; ``hearth:s:<id>:m``, a hash):
the frames, each prefixed with its 8-byte sequence number; the user, encoding and
newest sequence number; the owning process; and a cursor per channel (the newest
message seq delivered), so the resuming process can also fetch from PostgreSQL the
messages published while nobody held the session. Ownership: the process holding a
session writes only while the hash still names it (a Lua script checks it), so after a
resume elsewhere the old copy stops writing and is dropped.

Keys expire ``resume_window_ms`` after the last write; live sessions are refreshed by
the gateway sweeper so a quiet session stays resumable.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Iterable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from rooms.sessions import Session

log = logging.getLogger(__name__)

_SEQ = struct.Struct("!Q")

# KEYS: frames, meta. ARGV: owner, ttl_ms, max_frames, seq, user, encoding, n_cursor_pairs,
# cursor pairs..., frames...
_APPEND = """
local owner = redis.call('HGET', KEYS[2], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
local ncur = tonumber(ARGV[7])
local fields = {'owner', ARGV[1], 'seq', ARGV[4], 'user', ARGV[5], 'enc', ARGV[6]}
for i = 1, ncur * 2 do fields[#fields + 1] = ARGV[7 + i] end
redis.call('HSET', KEYS[2], unpack(fields))
local first = 8 + ncur * 2
if #ARGV >= first then
  redis.call('RPUSH', KEYS[1], unpack(ARGV, first))
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""


def _keys(session_id: str) -> tuple[str, str]:
    return f"hearth:s:{session_id}:f", f"hearth:s:{session_id}:m"


class MirroredSession(msgspec.Struct, frozen=True):
    """A session as loaded from Redis by the process that resumes it."""

    user_id: int
    encoding: str
    seq: int
    frames: list[tuple[int, bytes]]
    cursors: dict[int, int]


class SessionMirror:
    """Write-ahead copy of sessions in Redis. See the module docstring."""

    def __init__(self, url: str, *, owner: str, ttl_ms: int, max_frames: int) -> None:
        self._redis: aioredis.Redis = aioredis.Redis.from_url(url, decode_responses=False)
        self.owner = owner
        self.ttl_ms = ttl_ms
        self.max_frames = max_frames
        self._append = self._redis.register_script(_APPEND)
        self._dirty: dict[Session, None] = {}
        self._flushing = False
        self._task: asyncio.Task[None] | None = None
        self.flushes = 0
        self.failures = 0
        self.lost_ownership = 0

    async def close(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self._redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    # ------------------------------------------------------------------------- writing

    def mark_dirty(self, session: Session) -> None:
        """Called by :meth:`Session.deliver`; the flush happens on the next loop pass."""
        self._dirty[session] = None
        if not self._flushing:
            self._flushing = True
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._dirty:
                batch, self._dirty = list(self._dirty), {}
                taken = [(s, s.take_unmirrored(), s.take_cursor_changes()) for s in batch]
                results = await self._store(taken)
                for (session, frames, _), owned in zip(taken, results, strict=True):
                    if not owned:
                        self.lost_ownership += 1
                        session.superseded()
                        continue
                    session.write_out(frames)
        finally:
            self._flushing = False

    async def _store(self, taken: list[tuple[Session, list[tuple[int, bytes]],
                                             dict[int, int]]]) -> list[bool]:
        pipe = self._redis.pipeline(transaction=False)
        for session, frames, cursors in taken:
            frames_key, meta_key = _keys(session.session_id)
            pairs: list[Any] = []
            for channel_id, seq in cursors.items():
                pairs += [f"c{channel_id}", seq]
            args: list[Any] = [self.owner, self.ttl_ms, self.max_frames, session.seq,
                               session.user.id, session.codec.encoding.value, len(cursors),
                               *pairs, *(_SEQ.pack(seq) + frame for seq, frame in frames)]
            await self._append(keys=[frames_key, meta_key], args=args, client=pipe)
        try:
            replies = await pipe.execute()
        except Exception:
            # Availability first: the frames still go out; this session just may not be
            # resumable elsewhere until the next successful write.
            self.failures += 1
            log.exception("mirroring %d sessions to Redis failed", len(taken))
            return [True] * len(taken)
        self.flushes += 1
        return [bool(r) for r in replies]

    async def touch(self, sessions: Iterable[Session]) -> None:
        """Keep live sessions' keys from expiring (called every few seconds)."""
        pipe = self._redis.pipeline(transaction=False)
        count = 0
        for session in sessions:
            for key in _keys(session.session_id):
                pipe.pexpire(key, self.ttl_ms)
            count += 1
        if count:
            try:
                await pipe.execute()
            except Exception:
                log.warning("refreshing %d mirrored sessions failed", count, exc_info=True)

    async def forget(self, session_id: str) -> None:
        try:
            await self._redis.delete(*_keys(session_id))
        except Exception:
            log.warning("could not delete mirrored session %s", session_id, exc_info=True)

    # ------------------------------------------------------------------------- reading

    async def claim(self, session_id: str) -> MirroredSession | None:
        """Load a session and make this process its owner (the old one stops writing)."""
        frames_key, meta_key = _keys(session_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(meta_key)
        pipe.lrange(frames_key, 0, -1)
        pipe.hset(meta_key, "owner", self.owner)
        pipe.pexpire(meta_key, self.ttl_ms)
        meta, raw_frames, _, _ = await pipe.execute()
        if not meta or b"user" not in meta:
            await self._redis.delete(meta_key)
            return None
        frames = [(_SEQ.unpack_from(f)[0], f[_SEQ.size:]) for f in raw_frames]
        cursors = {int(k[1:]): int(v) for k, v in meta.items() if k.startswith(b"c")}
        return MirroredSession(user_id=int(meta[b"user"]), encoding=meta[b"enc"].decode(),
                               seq=int(meta[b"seq"]), frames=frames, cursors=cursors)
