"""Presence across processes and nodes, in Redis (``HEARTH_REDIS_URL``).

Implements :class:`rooms.realtime.presence.PresenceStore`; see :mod:`rooms.realtime.presence` for
the
model. Every transition runs inside a Lua script, so it is atomic however many
processes race; times come from Redis (``TIME``), so nodes' clocks do not matter.

Keys (``P`` = ``hearth:{p.<installation>}:``; the hash tag keeps them in one slot, so
the scripts also run on a Redis Cluster)::

    P leases       zset   process id -> lease deadline (ms, Redis time)
    P i:<proc>     set    users with a connected session on that process
    P ui:<user>    hash   process id -> connected sessions there (empty: disconnected)
    P u:<user>     hash   st (chosen status), vis (what others see), seen (last-seen ms)
    P uc:<user>    set    the user's communities
    P c:<cid>      set    members visible online: SCARD is the online count, O(1)
    P pend:<cid>   hash   user -> "status:last_seen", changes waiting for the batch
    P due          zset   community -> when its batch is due (ms)

``u:`` and ``uc:`` of a disconnected user expire after 30 days (``KEEP_OFFLINE_MS``);
the rest disappears by itself when empty. Per write, a user costs O(their communities).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from protocol.models import Presence, PresenceStatus
from rooms.realtime.presence import (
    KEEP_OFFLINE_MS,
    MAX_BATCH,
    LeaseLost,
    PresenceBatch,
    PresenceStore,
    UserSync,
)
from rooms.realtime.redis_client import blocking_client

log = logging.getLogger(__name__)

SYNC_CHUNK = 500
"""Users per script call (a long script would stall Redis for everyone)."""
REAP_CHUNK = 500
"""Users of a dead process handled per script call."""

# Every script: KEYS[1] = leases, KEYS[2] = due; ARGV[1] = key prefix, ARGV[2] = batch
# window (ms), ARGV[3] = how long an offline user's hash is kept (ms); then its own.
_PRELUDE = """
local P = ARGV[1]
local WINDOW = tonumber(ARGV[2])
local KEEP = tonumber(ARGV[3])
local LEASES = KEYS[1]
local DUE = KEYS[2]
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function announce(cid, uid, value)
  redis.call('HSET', P .. 'pend:' .. cid, uid, value)
  redis.call('ZADD', DUE, 'NX', NOW + WINDOW, cid)
end

local function visible(uid)
  if redis.call('EXISTS', P .. 'ui:' .. uid) == 0 then return 'offline' end
  local st = redis.call('HGET', P .. 'u:' .. uid, 'st')
  if not st then return 'online' end
  if st == 'invisible' or st == 'offline' then return 'offline' end
  return st
end

-- Recompute what others see of a user; on a change, update the online set of each of
-- their communities and queue the change for its next batch.
local function refresh(uid)
  local ukey = P .. 'u:' .. uid
  local uckey = P .. 'uc:' .. uid
  local old = redis.call('HGET', ukey, 'vis') or 'offline'
  local new = visible(uid)
  local changed = 0
  if old ~= new then
    changed = 1
    local value = new .. ':'
    if new == 'offline' then
      redis.call('HSET', ukey, 'vis', new, 'seen', NOW)
      value = 'offline:' .. NOW
    else
      redis.call('HSET', ukey, 'vis', new)
    end
    for _, cid in ipairs(redis.call('SMEMBERS', uckey)) do
      if new == 'offline' then
        redis.call('SREM', P .. 'c:' .. cid, uid)
      else
        redis.call('SADD', P .. 'c:' .. cid, uid)
      end
      announce(cid, uid, value)
    end
  end
  if redis.call('EXISTS', P .. 'ui:' .. uid) == 0 then
    redis.call('PEXPIRE', ukey, KEEP)
    redis.call('PEXPIRE', uckey, KEEP)
  else
    redis.call('PERSIST', ukey)
    redis.call('PERSIST', uckey)
  end
  return changed
end
"""

# ARGV[4] = process id; then per user: id, sessions here, n communities (-1: unchanged),
# the community ids. Returns -1 when the process's lease has lapsed, else the changes.
_SYNC = _PRELUDE + """
local proc = ARGV[4]
local deadline = redis.call('ZSCORE', LEASES, proc)
if not deadline or tonumber(deadline) < NOW then return -1 end
local changes = 0
local i = 5
while i <= #ARGV do
  local uid = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  local ncomm = tonumber(ARGV[i + 2])
  i = i + 3
  if n > 0 then
    redis.call('HSET', P .. 'ui:' .. uid, proc, n)
    redis.call('SADD', P .. 'i:' .. proc, uid)
  else
    redis.call('HDEL', P .. 'ui:' .. uid, proc)
    redis.call('SREM', P .. 'i:' .. proc, uid)
  end
  if ncomm >= 0 then
    local uckey = P .. 'uc:' .. uid
    local vis = redis.call('HGET', P .. 'u:' .. uid, 'vis') or 'offline'
    local wanted = {}
    for j = i, i + ncomm - 1 do wanted[ARGV[j]] = true end
    for _, cid in ipairs(redis.call('SMEMBERS', uckey)) do
      if wanted[cid] then
        wanted[cid] = nil
      else
        redis.call('SREM', uckey, cid)
        if vis ~= 'offline' then
          redis.call('SREM', P .. 'c:' .. cid, uid)
          announce(cid, uid, 'offline:' .. NOW)
        end
      end
    end
    for j = i, i + ncomm - 1 do
      local cid = ARGV[j]
      if wanted[cid] then
        wanted[cid] = nil
        redis.call('SADD', uckey, cid)
        if vis ~= 'offline' then
          redis.call('SADD', P .. 'c:' .. cid, uid)
          announce(cid, uid, vis .. ':')
        end
      end
    end
    i = i + ncomm
  end
  changes = changes + refresh(uid)
end
return changes
"""

# ARGV[4] = process id, ARGV[5] = lease TTL (ms), ARGV[6] = "renew" or "join".
# Returns 0 when a renewal finds the lease lapsed.
_LEASE = _PRELUDE + """
local proc = ARGV[4]
if ARGV[6] == 'renew' then
  local deadline = redis.call('ZSCORE', LEASES, proc)
  if not deadline or tonumber(deadline) < NOW then return 0 end
end
redis.call('ZADD', LEASES, NOW + tonumber(ARGV[5]), proc)
return 1
"""

# ARGV[4] = chunk size, ARGV[5] = a process id to withdraw ('' = the first dead one).
# Returns how many users were handled plus one, or 0 when there was nothing to do.
_REAP = _PRELUDE + """
local proc = ARGV[5]
if proc == '' then
  local dead = redis.call('ZRANGEBYSCORE', LEASES, '-inf', '(' .. NOW, 'LIMIT', 0, 1)
  if #dead == 0 then return 0 end
  proc = dead[1]
end
local ikey = P .. 'i:' .. proc
local users = redis.call('SPOP', ikey, tonumber(ARGV[4]))
for _, uid in ipairs(users) do
  redis.call('HDEL', P .. 'ui:' .. uid, proc)
  refresh(uid)
end
if redis.call('EXISTS', ikey) == 0 then
  redis.call('ZREM', LEASES, proc)
  if ARGV[5] ~= '' and #users == 0 then return 0 end
end
return #users + 1
"""

# ARGV[4] = user id, ARGV[5] = chosen status.
_SET_STATUS = _PRELUDE + """
redis.call('HSET', P .. 'u:' .. ARGV[4], 'st', ARGV[5])
return refresh(ARGV[4])
"""

# ARGV[4] = most communities, ARGV[5] = most users per batch. Returns a flat list:
# community id, online count, {user, "status:seen", ...} per community.
_TAKE_DUE = _PRELUDE + """
local due = redis.call('ZRANGEBYSCORE', DUE, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[4]))
local most = tonumber(ARGV[5]) * 2
local out = {}
for _, cid in ipairs(due) do
  local pkey = P .. 'pend:' .. cid
  local flat = redis.call('HGETALL', pkey)
  if #flat > most then
    local taken = {}
    local fields = {}
    for j = 1, most, 2 do
      fields[#fields + 1] = flat[j]
      taken[#taken + 1] = flat[j]
      taken[#taken + 1] = flat[j + 1]
    end
    redis.call('HDEL', pkey, unpack(fields))
    redis.call('ZADD', DUE, NOW + WINDOW, cid)
    flat = taken
  else
    redis.call('DEL', pkey)
    redis.call('ZREM', DUE, cid)
  end
  out[#out + 1] = cid
  out[#out + 1] = redis.call('SCARD', P .. 'c:' .. cid)
  out[#out + 1] = flat
end
return out
"""


def _presence(user_id: int, value: str) -> Presence:
    status, _, seen = value.partition(":")
    try:
        parsed = PresenceStatus(status)
    except ValueError:
        parsed = PresenceStatus.OFFLINE
    offline = parsed is PresenceStatus.OFFLINE
    return Presence(user_id=user_id, status=parsed,
                    last_seen=int(seen) if offline and seen else None)


class RedisPresenceStore(PresenceStore):
    """Presence shared through Redis. See the module docstring."""

    def __init__(self, url: str, *, ttl_s: float, batch_s: float) -> None:
        super().__init__(ttl_s=ttl_s, batch_s=batch_s)
        self._redis: aioredis.Redis = blocking_client(
            url, decode_responses=True, socket_timeout=5.0, socket_connect_timeout=3.0)
        self._sync = self._redis.register_script(_SYNC)
        self._lease = self._redis.register_script(_LEASE)
        self._reap = self._redis.register_script(_REAP)
        self._set_status = self._redis.register_script(_SET_STATUS)
        self._take_due = self._redis.register_script(_TAKE_DUE)
        self.prefix = ""
        self.process_id = ""

    # ------------------------------------------------------------------------ helpers

    def _keys(self) -> list[str]:
        return [self.prefix + "leases", self.prefix + "due"]

    def _args(self, *more: Any) -> list[Any]:
        return [self.prefix, int(self.batch_s * 1000), KEEP_OFFLINE_MS, *more]

    @staticmethod
    def _new_process_id() -> str:
        return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"

    # ---------------------------------------------------------------------- lifecycle

    async def start(self, namespace: str) -> None:
        self.prefix = f"hearth:{{p.{namespace}}}:"
        await self.rejoin()

    async def rejoin(self) -> None:
        self.process_id = self._new_process_id()
        await self._lease(keys=self._keys(), args=self._args(
            self.process_id, int(self.ttl_s * 1000), "join"))

    async def renew(self) -> None:
        renewed = await self._lease(keys=self._keys(), args=self._args(
            self.process_id, int(self.ttl_s * 1000), "renew"))
        if not renewed:
            raise LeaseLost(self.process_id)

    async def close(self) -> None:
        try:
            if self.prefix:
                while await self._reap(keys=self._keys(),
                                       args=self._args(REAP_CHUNK, self.process_id)):
                    pass
        finally:
            await self._redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    # ------------------------------------------------------------------------ writing

    async def sync(self, users: Sequence[UserSync]) -> None:
        if not users:
            return
        pipe = self._redis.pipeline(transaction=False)
        for start in range(0, len(users), SYNC_CHUNK):
            args: list[Any] = self._args(self.process_id)
            for entry in users[start:start + SYNC_CHUNK]:
                communities = entry.communities
                if communities is None:
                    args += [entry.user_id, entry.sessions, -1]
                else:
                    args += [entry.user_id, entry.sessions, len(communities),
                             *sorted(communities)]
            await self._sync(keys=self._keys(), args=args, client=pipe)
        replies = await pipe.execute()
        if any(r == -1 for r in replies):
            raise LeaseLost(self.process_id)

    async def reap(self) -> int:
        return int(await self._reap(keys=self._keys(), args=self._args(REAP_CHUNK, "")))

    async def set_status(self, user_id: int, status: PresenceStatus) -> None:
        await self._set_status(keys=self._keys(), args=self._args(user_id, status.value))

    # ------------------------------------------------------------------------ reading

    async def snapshot(self, user_id: int, community_ids: Sequence[int]) -> tuple[
            PresenceStatus, dict[int, int]]:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(f"{self.prefix}u:{user_id}", "st")
        for community_id in community_ids:
            pipe.scard(f"{self.prefix}c:{community_id}")
        chosen, *counts = await pipe.execute()
        try:
            status = PresenceStatus(chosen) if chosen else PresenceStatus.ONLINE
        except ValueError:
            status = PresenceStatus.ONLINE
        return status, {c: int(n) for c, n in zip(community_ids, counts, strict=True)}

    async def presences(self, user_ids: Sequence[int]) -> list[Presence]:
        if not user_ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.hmget(f"{self.prefix}u:{user_id}", "vis", "seen")
        rows = await pipe.execute()
        return [_presence(user_id, f"{vis or 'offline'}:{seen or ''}")
                for user_id, (vis, seen) in zip(user_ids, rows, strict=True)]

    async def online_counts(self, community_ids: Sequence[int]) -> dict[int, int]:
        if not community_ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for community_id in community_ids:
            pipe.scard(f"{self.prefix}c:{community_id}")
        counts = await pipe.execute()
        return {c: int(n) for c, n in zip(community_ids, counts, strict=True)}

    async def take_due(self, limit: int) -> list[PresenceBatch]:
        flat = await self._take_due(keys=self._keys(), args=self._args(limit, MAX_BATCH))
        batches: list[PresenceBatch] = []
        for i in range(0, len(flat), 3):
            community_id, count, pairs = int(flat[i]), int(flat[i + 1]), flat[i + 2]
            presences = [_presence(int(pairs[j]), pairs[j + 1])
                         for j in range(0, len(pairs), 2)]
            if presences:
                batches.append(PresenceBatch(community_id=community_id, presences=presences,
                                             online_count=count))
        return batches
