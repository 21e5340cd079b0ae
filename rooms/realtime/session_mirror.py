"""Resume on any node: what PostgreSQL cannot replay is mirrored to Redis, write-ahead.

A client whose gateway process died (even ``kill -9``) reconnects to any process on any
node and ``resume``s: that process rebuilds exactly what the client missed, in order,
from two sources, and its Redis cost grows with the sessions, not with the deliveries:

* **Message creates are not mirrored.** Each carries its channel's gap-free seq and is
  in PostgreSQL, so the resuming process fetches them again
  (:class:`rooms.realtime.gap_repair.MissedMessages`) after the client's position in
  each channel. A create goes to the socket at once, or, while mirrored entries of the
  session wait for their write, behind them (written out with them, not stored).
* **Every other dispatch is mirrored write-ahead** (edits, deletes, reactions, channel,
  community and user events: a small share of the traffic): appended to the session's
  pending entries, stored by the next flush, and only then written to the socket. An
  entry records its session seq, the channel it belongs to (0 if none) and that
  channel's position when it was delivered (the newest create before it), so that a
  resume can put the fetched creates back where they were.
* **Cursors per interval.** Per channel, the newest create delivered (a *cursor*) is
  written with any flush that happens anyway, and otherwise by the gateway sweeper's
  periodic :meth:`SessionMirror.refresh` (only sessions that changed). So a session
  that only receives creates costs one bounded write per interval. The stored cursors
  and session seq may be stale; they are always written together, so the stored seq
  says at which point of the session the cursors held, which tells a resume how far
  the client may be behind them.

Cost is kept off the per-recipient path: once per event-loop pass one pipelined
round-trip stores every dirty session (``RPUSH`` + ``LTRIM`` to the replay size, a hash
of metadata, TTL refreshes), then the entries go out to the sockets.

What is stored: each event body once per flush (``hearth:e:...``, shared by all its
recipients, kept twice the resume window); per session a list of entries
(``hearth:s2:<id>:f``, trimmed to the replay size), each the 24-byte header
:data:`ENTRY` (seq, channel, position) and the key of its body; and a hash
(``hearth:s2:<id>:m``) with the user, encoding, session seq, the seq of the newest
entry trimmed away (``floor``: a client behind it cannot resume), owning process,
ownership epoch and a cursor per channel (``c<channel id>``). One Lua call stores up to
256 sessions.

Ownership is an *epoch* in the hash: a session opens at epoch 1, and every claim (a
resume on a process that does not hold it) increments it atomically with reading the
session, so exactly one claimer gets each epoch. A copy writes only while the hash
still has its epoch (and names its process; the Lua checks both), so a superseded copy
can never write again. The holder of a superseded copy learns it three ways: at once,
from the notice the claimer publishes on the old owner's process topic
(:func:`takeover_topic`); before it would use the copy for a resume
(:meth:`SessionMirror.owns`, checked by the opener); and, as a last resort, when a
write is refused.

A resume elsewhere renumbers what it replays (rooms/realtime/ready.py), so its first
write *replaces* the list (:attr:`Session.rewrite_mirror`) with the replayed entries
under their new numbers before the replay goes out: a second failover right after
finds the session as the client knows it.

A new session is written once before its ``ready`` goes out
(:meth:`SessionMirror.written`), so it is resumable elsewhere from its first frame.
Session keys expire ``resume_window_ms`` after the last write; live sessions are
refreshed by the gateway sweeper so a quiet session stays resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Iterable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from rooms.realtime.outages import ThrottledLog
from rooms.realtime.redis_client import blocking_client
from rooms.realtime.sessions import NOT_STORED, Entry, Session

log = logging.getLogger(__name__)

_FLOOR = struct.Struct("!Q")
ENTRY = struct.Struct("!QQQ")
"""An entry's header in the session's Redis list: session seq, channel id (0 if none),
the channel's position when it was delivered; the body's key follows."""
SESSIONS_PER_CALL = 256
"""Sessions stored by one Lua call (bounds the size of one Redis command)."""

# KEYS: meta, list for each session. ARGV: owner, ttl_ms, max_entries, then per session:
# epoch, seq, user, encoding, rewrite (1: replace the list), n_cursor_pairs,
# cursor pairs..., n_entries, entries... Entries trimmed away leave the newest one's
# header in 'floor'. Returns one 0/1 per session: 0 when another process or a later
# claim owns it now.
_APPEND = """
local owner, ttl, maxn = ARGV[1], ARGV[2], tonumber(ARGV[3])
local i = 4
local result = {}
for s = 1, #KEYS / 2 do
  local meta, list = KEYS[2 * s - 1], KEYS[2 * s]
  local epoch, seq, user, enc = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local rewrite, ncur = ARGV[i + 4], tonumber(ARGV[i + 5])
  local cur = i + 6
  local nent = tonumber(ARGV[cur + 2 * ncur])
  local ent = cur + 2 * ncur + 1
  i = ent + nent
  local held = redis.call('HMGET', meta, 'owner', 'epoch')
  if (held[1] and held[1] ~= owner) or (held[2] and held[2] ~= epoch) then
    result[s] = 0
  else
    redis.call('HSET', meta, 'owner', owner, 'epoch', epoch, 'seq', seq, 'user', user,
               'enc', enc)
    if rewrite == '1' then
      redis.call('DEL', list)
      redis.call('HDEL', meta, 'floor')
    end
    for c = 0, ncur - 1 do
      redis.call('HSET', meta, ARGV[cur + 2 * c], ARGV[cur + 2 * c + 1])
    end
    if nent > 0 then
      local len = redis.call('RPUSH', list, unpack(ARGV, ent, ent + nent - 1))
      if len > maxn then
        local dropped = redis.call('LINDEX', list, len - maxn - 1)
        redis.call('HSET', meta, 'floor', string.sub(dropped, 1, 8))
        redis.call('LTRIM', list, -maxn, -1)
      end
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
    # "s2": the entry layout of this version. A session mirrored by an older process
    # (8-byte entries, every create stored) is simply not found: identify again.
    return f"hearth:s2:{session_id}:f", f"hearth:s2:{session_id}:m"


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


class MirroredEntry(msgspec.Struct, frozen=True, array_like=True):
    """One mirrored dispatch as loaded by a claim."""

    seq: int
    body: bytes
    channel_id: int
    """The channel it belongs to (0: a user- or community-level event)."""
    position: int
    """That channel's newest message seq delivered to the session before it."""


class MirroredSession(msgspec.Struct, frozen=True):
    """A session as loaded from Redis by the process that resumes it (``entries``:
    mirrored dispatches, oldest first; message creates are not among them)."""

    user_id: int
    encoding: str
    seq: int
    """The session's seq as of the last write (may be behind what the client got)."""
    entries: list[MirroredEntry]
    cursors: dict[int, int]
    cursors_at: int
    """The session seq at which ``cursors`` were taken: a client that has at least this
    seq has every create up to each cursor."""
    floor: int
    """The newest entry seq trimmed away (or whose body expired): a client behind it
    cannot be resumed."""
    epoch: int
    """The epoch this claim got: the new copy's (:attr:`Session.epoch`)."""
    previous_owner: str
    """The process that owned it before the claim ("" if unknown)."""


Taken = tuple[Session, list[Entry], dict[int, int]]
"""A session with the entries (only those to store) and cursor changes one write takes."""


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
        self._unstored: dict[str, Taken] = {}
        """Session id -> (the copy, entries and cursor changes a failed write left)."""
        self._retry_scheduled = False
        self._failure_log = ThrottledLog(log)
        self.flushes = 0
        self.failures = 0
        self.lost_ownership = 0
        self.script_calls = 0
        """Lua store calls made (each stores up to :data:`SESSIONS_PER_CALL` sessions)."""

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
        """Store the sessions' new entries and cursors (with whatever an earlier failed
        write left), then write the new entries, and the creates queued behind them,
        out. A session whose batch is only such creates is written out at once, without
        a Redis write. A failed write still writes them out (availability first) but
        keeps what it could not store for the next flush, one is scheduled: otherwise
        the mirror would lack them for good, and a resume elsewhere would miss them."""
        new: list[tuple[Session, list[Entry]]] = []
        taken: list[Taken] = []
        for session in batch:
            entries = session.take_unmirrored()
            stored = [e for e in entries if e[3] != NOT_STORED]
            left = self._unstored.pop(session.session_id, None)
            if left is not None and left[0] is not session:
                left = None
            if entries and not stored and left is None and not session.rewrite_mirror:
                session.write_out(entries)  # only creates that waited behind a write
                continue
            new.append((session, entries))
            cursors = session.take_cursor_changes()
            session.stored_seq = session.seq
            if left is not None:
                taken.append((session, left[1] + stored, {**left[2], **cursors}))
            else:
                taken.append((session, stored, cursors))
        if not taken:
            return
        results = await self._store(taken)
        if results is None:
            for session, entries, cursors in taken:
                self._unstored[session.session_id] = (
                    session, entries[-self.max_frames:], cursors)
            for session, entries in new:
                session.write_out(entries)
            if not self._retry_scheduled:
                self._retry_scheduled = True
                asyncio.get_running_loop().call_later(RETRY_UNSTORED_S, self._retry)
            return
        for (session, entries), owned in zip(new, results, strict=True):
            if not owned:
                self.lost_ownership += 1
                session.superseded()
                continue
            session.rewrite_mirror = False
            session.write_out(entries)

    def _retry(self) -> None:
        self._retry_scheduled = False
        for session, _, _ in list(self._unstored.values()):
            self.mark_dirty(session)

    async def _store(self, taken: list[Taken]) -> list[bool] | None:
        """One pipeline: each distinct event body once (shared by every recipient),
        then the sessions' entries (header + body key) in a few Lua calls. Whether each
        session is still owned here; None when Redis could not be written."""
        pipe = self._redis.pipeline(transaction=False)
        body_keys: dict[int, bytes] = {}
        prefix = f"hearth:e:{self.owner}:{self.flushes}:"
        for _, entries, _ in taken:
            for _, body, _, _ in entries:
                if id(body) not in body_keys:
                    key = f"{prefix}{len(body_keys)}".encode()
                    body_keys[id(body)] = key
                    pipe.set(key, body, px=2 * self.ttl_ms)
        for start in range(0, len(taken), SESSIONS_PER_CALL):
            keys: list[str] = []
            args: list[Any] = [self.owner, self.ttl_ms, self.max_frames]
            for session, entries, cursors in taken[start:start + SESSIONS_PER_CALL]:
                keys.extend(_keys(session.session_id)[::-1])
                args += [session.epoch, session.stored_seq,
                         session.user.id, session.codec.encoding.value,
                         1 if session.rewrite_mirror else 0, len(cursors)]
                for channel_id, seq in cursors.items():
                    args += [f"c{channel_id}", seq]
                args.append(len(entries))
                args += [ENTRY.pack(seq, channel_id, position) + body_keys[id(body)]
                         for seq, body, channel_id, position in entries]
            self.script_calls += 1
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

    async def refresh(self, sessions: Iterable[Session],
                      timeout: float = WRITTEN_TIMEOUT_S) -> None:
        """The periodic write (the gateway sweeper, every ``MIRROR_TOUCH_EVERY``
        sweeps): sessions whose seq or cursors moved since their last write (message
        creates only, or nothing else would have written them) get one write, through
        the flush so that writes of one session never race; the other live ones only
        have their keys' TTL refreshed. Bounded by the number of sessions, whatever
        the number of deliveries."""
        changed: list[Session] = []
        quiet: list[Session] = []
        for session in sessions:
            if session.is_superseded or session.mirror is not self:
                continue
            if session.changed_cursors or session.seq != session.stored_seq:
                changed.append(session)
            elif session.sink is not None:
                quiet.append(session)
        if changed:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            for session in changed:
                self.mark_dirty(session)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await waiter
        await self.touch(quiet)

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
        refs = [(ENTRY.unpack_from(e), e[ENTRY.size:]) for e in raw_entries]
        bodies = await self._redis.mget([key for _, key in refs]) if refs else []
        floor_raw = meta.get(b"floor")
        floor = _FLOOR.unpack(floor_raw)[0] if floor_raw and len(floor_raw) == 8 else 0
        entries: list[MirroredEntry] = []
        for (header, _), body in zip(refs, bodies, strict=True):
            if not isinstance(body, bytes):  # expired: only what follows can be replayed
                entries.clear()
                floor = max(floor, int(header[0]))
                continue
            entries.append(MirroredEntry(int(header[0]), body, int(header[1]), int(header[2])))
        cursors = {int(k[1:]): int(v) for k, v in meta.items()
                   if k.startswith(b"c") and k[1:].isdigit()}
        return MirroredSession(user_id=int(meta[b"user"]), encoding=meta[b"enc"].decode(),
                               seq=int(meta[b"seq"]), entries=entries, cursors=cursors,
                               cursors_at=int(meta[b"seq"]), floor=floor,
                               epoch=int(epoch), previous_owner=previous.decode())
