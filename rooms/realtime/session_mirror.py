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

What is stored: each event body once per flush (``hearth:e:...``, shared by all its
recipients, kept twice the resume window); per session a list of entries, each an
8-byte sequence number and the key of its body (``hearth:s:<id>:f``, trimmed to the
replay size), and a hash (``hearth:s:<id>:m``) with the user, encoding, newest sequence
number, owning process, and a cursor per channel (the newest message seq delivered) so
the resuming process can also fetch from PostgreSQL the messages published while
nobody held the session. One Lua call stores up to 256 sessions.

Ownership is an *epoch* in the hash: a session opens at epoch 1, and every claim (a
resume on a process that does not hold it) increments it atomically with reading the
session, so exactly one claimer gets each epoch. A copy writes only while the hash
still has its epoch (and names its process; the Lua checks both), so a superseded copy
can never write again. The holder of a superseded copy learns it three ways: at once,
from the notice the claimer publishes on the old owner's process topic
(:func:`takeover_topic`); before it would use the copy for a resume
(:meth:`SessionMirror.owns`, checked by the opener); and, as a last resort, when a
write is refused.

A new session is written once before its ``ready`` goes out
(:meth:`SessionMirror.written`), so it is resumable elsewhere from its first frame.
Session keys expire ``resume_window_ms`` after the last write; live sessions are
refreshed by the gateway sweeper so a quiet session stays resumable.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Iterable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from rooms.realtime.outages import ThrottledLog
from rooms.realtime.redis_client import blocking_client
from rooms.realtime.sessions import Session

log = logging.getLogger(__name__)

_SEQ = struct.Struct("!Q")
SESSIONS_PER_CALL = 256
"""Sessions stored by one Lua call (bounds the size of one Redis command)."""

# KEYS: meta, list for each session. ARGV: owner, ttl_ms, max_entries, then per session:
# epoch, seq, user, encoding, n_cursor_pairs, cursor pairs..., n_entries, entries...
# Returns one 0/1 per session: 0 when another process or a later claim owns it now.
_APPEND = """
local owner, ttl, maxn = ARGV[1], ARGV[2], tonumber(ARGV[3])
local i = 4
local result = {}
for s = 1, #KEYS / 2 do
  local meta, list = KEYS[2 * s - 1], KEYS[2 * s]
  local epoch = ARGV[i]
  i = i + 1
  local seq, user, enc, ncur = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local cur = i + 4
  local nent = tonumber(ARGV[cur + 2 * ncur])
  local ent = cur + 2 * ncur + 1
  i = ent + nent
  local held = redis.call('HMGET', meta, 'owner', 'epoch')
  if (held[1] and held[1] ~= owner) or (held[2] and held[2] ~= epoch) then
    result[s] = 0
  else
    redis.call('HSET', meta, 'owner', owner, 'epoch', epoch, 'seq', seq, 'user', user,
               'enc', enc)
    for c = 0, ncur - 1 do
      redis.call('HSET', meta, ARGV[cur + 2 * c], ARGV[cur + 2 * c + 1])
    end
    if nent > 0 then
      redis.call('RPUSH', list, unpack(ARGV, ent, ent + nent - 1))
      redis.call('LTRIM', list, -maxn, -1)
    end
    redis.call('PEXPIRE', list, ttl)
    redis.call('PEXPIRE', meta, ttl)
    result[s] = 1
  end
end
return result
"""

# KEYS: meta, list. ARGV: owner, ttl_ms, user, encoding. Returns nil when there is no
# such session of that user, 0 when it has another encoding (neither is claimed), else
# {new epoch, previous owner, meta as a flat list, list entries}.
_CLAIM = """
local meta, list = KEYS[1], KEYS[2]
local found = redis.call('HMGET', meta, 'user', 'enc')
if found[1] ~= ARGV[3] then return false end
if found[2] ~= ARGV[4] then return 0 end
local previous = redis.call('HGET', meta, 'owner') or ''
local epoch = redis.call('HINCRBY', meta, 'epoch', 1)
redis.call('HSET', meta, 'owner', ARGV[1])
redis.call('PEXPIRE', meta, ARGV[2])
return {epoch, previous, redis.call('HGETALL', meta), redis.call('LRANGE', list, 0, -1)}
"""

# KEYS: meta, list. ARGV: owner, epoch. Deletes both unless another process or a later
# claim owns the session now (a copy whose takeover notice was lost must not delete the
# new owner's keys). Returns 1 when deleted, 0 when left to its owner.
_FORGET = """
local held = redis.call('HMGET', KEYS[1], 'owner', 'epoch')
if (held[1] and held[1] ~= ARGV[1]) or (held[2] and held[2] ~= ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""

_TOUCH = """
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return #KEYS
"""
TOUCH_KEYS_PER_CALL = 2048
RETRY_UNSTORED_S = 1.0
"""How soon frames a failed write left are written again (with or without new ones)."""
WRITTEN_TIMEOUT_S = 2.0
"""Longest an identify waits for its session's first write to Redis."""


def _keys(session_id: str) -> tuple[str, str]:
    return f"hearth:s:{session_id}:f", f"hearth:s:{session_id}:m"


def takeover_topic(owner: str) -> str:
    """The process-internal bus topic on which ``owner`` hears that a session it held
    was claimed elsewhere (payload: :func:`encode_takeover`)."""
    return f"x.sessions.{owner}"


def encode_takeover(session_id: str, epoch: int) -> bytes:
    return f"{epoch} {session_id}".encode()


def decode_takeover(payload: bytes) -> tuple[str, int] | None:
    """(session id, the epoch that claimed it), or None for a malformed notice."""
    try:
        epoch, session_id = payload.decode().split(" ", 1)
        return session_id, int(epoch)
    except ValueError:
        return None


class MirroredSession(msgspec.Struct, frozen=True):
    """A session as loaded from Redis by the process that resumes it (``frames``:
    (seq, event body) pairs, oldest first)."""

    user_id: int
    encoding: str
    seq: int
    frames: list[tuple[int, bytes]]
    cursors: dict[int, int]
    epoch: int
    """The epoch this claim got: the new copy's (:attr:`Session.epoch`)."""
    previous_owner: str
    """The process that owned it before the claim ("" if unknown)."""


class SessionMirror:
    """Write-ahead copy of sessions in Redis. See the module docstring."""

    def __init__(self, url: str, *, owner: str, ttl_ms: int, max_frames: int) -> None:
        self._redis: aioredis.Redis = blocking_client(url)
        self.owner = owner
        self.ttl_ms = ttl_ms
        self.max_frames = max_frames
        self._append = self._redis.register_script(_APPEND)
        self._claim = self._redis.register_script(_CLAIM)
        self._touch = self._redis.register_script(_TOUCH)
        self._forget = self._redis.register_script(_FORGET)
        self._dirty: dict[Session, None] = {}
        self._flushing = False
        self._task: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._unstored: dict[str, tuple[Session, list[tuple[int, bytes]], dict[int, int]]] = {}
        """Session id -> (the copy, frames and cursor changes a failed write left)."""
        self._retry_scheduled = False
        self._failure_log = ThrottledLog(log)
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

    async def written(self, session: Session, timeout: float = WRITTEN_TIMEOUT_S) -> None:
        """Wait until ``session`` as it is now is in Redis (or the write failed, or
        ``timeout`` passed: availability first). The opener waits for it before
        ``ready``, so a session is resumable on any node from its first frame on, like
        every dispatch after it (write-ahead)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.mark_dirty(session)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            log.warning("session %s not written to Redis within %.1f s; going on",
                        session.session_id, timeout)

    async def _flush(self) -> None:
        try:
            while self._dirty:
                batch, self._dirty = list(self._dirty), {}
                waiters, self._waiters = self._waiters, []
                try:
                    await self._flush_batch(batch)
                finally:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(None)
        finally:
            self._flushing = False

    async def _flush_batch(self, batch: list[Session]) -> None:
        """Store the sessions' new frames and cursors (with whatever an earlier failed
        write left), then write the new frames out. A failed write still writes them out
        (availability first) but keeps what it could not store for the next flush, one
        is scheduled: otherwise the mirror would lack them for good, and a resume
        elsewhere would miss them."""
        new = [(s, s.take_unmirrored(), s.take_cursor_changes()) for s in batch]
        taken = []
        for session, frames, cursors in new:
            left = self._unstored.pop(session.session_id, None)
            if left is not None and left[0] is session:
                taken.append((session, left[1] + frames, {**left[2], **cursors}))
            else:
                taken.append((session, frames, cursors))
        results = await self._store(taken)
        if results is None:
            for (session, frames, cursors) in taken:
                self._unstored[session.session_id] = (
                    session, frames[-self.max_frames:], cursors)
            for session, frames, _ in new:
                session.write_out(frames)
            if not self._retry_scheduled:
                self._retry_scheduled = True
                asyncio.get_running_loop().call_later(RETRY_UNSTORED_S, self._retry)
            return
        for (session, frames, _), owned in zip(new, results, strict=True):
            if not owned:
                self.lost_ownership += 1
                session.superseded()
                continue
            session.write_out(frames)

    def _retry(self) -> None:
        self._retry_scheduled = False
        for session, _, _ in list(self._unstored.values()):
            self.mark_dirty(session)

    async def _store(self, taken: list[tuple[Session, list[tuple[int, bytes]],
                                             dict[int, int]]]) -> list[bool] | None:
        """One pipeline: each distinct event body once (shared by every recipient),
        then the sessions' entries (seq + body key) in a few Lua calls. Whether each
        session is still owned here; None when Redis could not be written."""
        pipe = self._redis.pipeline(transaction=False)
        body_keys: dict[int, bytes] = {}
        prefix = f"hearth:e:{self.owner}:{self.flushes}:"
        for _, entries, _ in taken:
            for _, body in entries:
                if id(body) not in body_keys:
                    key = f"{prefix}{len(body_keys)}".encode()
                    body_keys[id(body)] = key
                    pipe.set(key, body, px=2 * self.ttl_ms)
        for start in range(0, len(taken), SESSIONS_PER_CALL):
            keys: list[str] = []
            args: list[Any] = [self.owner, self.ttl_ms, self.max_frames]
            for session, entries, cursors in taken[start:start + SESSIONS_PER_CALL]:
                keys.extend(_keys(session.session_id)[::-1])
                args += [session.epoch, session.seq, session.user.id,
                         session.codec.encoding.value, len(cursors)]
                for channel_id, seq in cursors.items():
                    args += [f"c{channel_id}", seq]
                args.append(len(entries))
                args += [_SEQ.pack(seq) + body_keys[id(body)] for seq, body in entries]
            await self._append(keys=keys, args=args, client=pipe)
        try:
            replies = await pipe.execute()
        except Exception as exc:
            await pipe.reset()  # type: ignore[no-untyped-call]  # a failed execute may keep its connection
            # Availability first: the events still go out; these sessions just may not
            # be resumable elsewhere until the next successful write.
            self.failures += 1
            self._failure_log.warning("redis", "mirroring %d sessions to Redis failed "
                                      "(%s: %s); kept for the next write", len(taken),
                                      type(exc).__name__, exc)
            return None
        self._failure_log.resolved("redis")
        self.flushes += 1
        owned: list[bool] = []
        for reply in replies[len(body_keys):]:
            owned.extend(bool(r) for r in reply)
        return owned

    async def touch(self, sessions: Iterable[Session]) -> None:
        """Keep live sessions' keys from expiring (called every few seconds).

        One script call per :data:`TOUCH_KEYS_PER_CALL` keys rather than one pipelined
        ``PEXPIRE`` per key: building a pipeline command costs the client ~10 µs of
        Python each, which at 20,000 sessions per process was a sixth of its CPU.
        """
        keys: list[str] = []
        for session in sessions:
            keys.extend(_keys(session.session_id))
        if not keys:
            return
        try:
            for start in range(0, len(keys), TOUCH_KEYS_PER_CALL):
                await self._touch(keys=keys[start:start + TOUCH_KEYS_PER_CALL],
                                  args=[self.ttl_ms])
        except Exception:
            log.warning("refreshing %d mirrored sessions failed", len(keys) // 2,
                        exc_info=True)

    async def forget(self, session_id: str, epoch: int) -> bool:
        """Delete the session's keys if this process still owns them at ``epoch``
        (checked and deleted atomically); whether they were deleted."""
        self._unstored.pop(session_id, None)
        frames_key, meta_key = _keys(session_id)
        try:
            return bool(await self._forget(keys=[meta_key, frames_key],
                                           args=[self.owner, epoch]))
        except Exception:
            log.warning("could not delete mirrored session %s", session_id, exc_info=True)
            return False

    # ------------------------------------------------------------------------- reading

    async def owns(self, session: Session) -> bool | None:
        """Is ``session`` (a copy held here) still the session's owner? Checked before a
        resume uses it. None when Redis cannot say (no such key: it expired, or was
        never written; or Redis is away): the caller keeps the copy it has."""
        try:
            owner, epoch = await self._redis.hmget(_keys(session.session_id)[1],
                                                   ["owner", "epoch"])
        except Exception as exc:
            log.warning("checking the owner of session %s failed (%s: %s)",
                        session.session_id, type(exc).__name__, exc)
            return None
        if owner is None and epoch is None:
            return None
        return owner in (None, self.owner.encode()) and int(epoch or 0) in (0, session.epoch)

    async def claim(self, session_id: str, user_id: int, encoding: str) -> \
            MirroredSession | str:
        """Load a session of ``user_id`` with ``encoding`` and make this process its
        owner under a new epoch (the old copy can no longer write); or why not (and
        nothing was claimed)."""
        frames_key, meta_key = _keys(session_id)
        reply = await self._claim(keys=[meta_key, frames_key],
                                  args=[self.owner, self.ttl_ms, user_id, encoding])
        if reply == 0:
            return "resume must use the session's encoding"
        if not reply:
            return "unknown or expired session"
        epoch, previous, flat_meta, raw_entries = reply
        meta: dict[bytes, bytes] = dict(zip(flat_meta[::2], flat_meta[1::2], strict=True))
        refs = [(_SEQ.unpack_from(e)[0], e[_SEQ.size:]) for e in raw_entries]
        bodies = await self._redis.mget([key for _, key in refs]) if refs else []
        frames: list[tuple[int, bytes]] = []
        for (seq, _), body in zip(refs, bodies, strict=True):
            if not isinstance(body, bytes):  # expired: only what follows can be replayed
                frames.clear()
                continue
            frames.append((int(seq), body))
        cursors = {int(k[1:]): int(v) for k, v in meta.items() if k.startswith(b"c")}
        return MirroredSession(user_id=int(meta[b"user"]), encoding=meta[b"enc"].decode(),
                               seq=int(meta[b"seq"]), frames=frames, cursors=cursors,
                               epoch=int(epoch), previous_owner=previous.decode())
