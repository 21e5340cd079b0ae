"""Per-user rate limits that hold across connections, processes and nodes.

The gateway already limits each connection (``protocol/session.py``); a member with
ten connections on five nodes must still not post ten times the rate. This limiter
keys on the user and uses GCRA (the "generic cell rate algorithm": one timestamp per
key, the theoretical arrival time), which allows a burst of ``burst`` and then one
event per ``interval``. In-process for one process; in Redis (one Lua call, Redis's own
clock) when processes share Redis.
"""

from __future__ import annotations

import abc
import logging
import math
import time

import redis.asyncio as aioredis

from rooms.realtime.outages import CircuitBreaker
from rooms.realtime.redis_client import FAIL_OPEN_TIMEOUT_S, RedisClients, blocking_client

log = logging.getLogger(__name__)

_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local excess = tat - now - (burst - 1) * interval
if excess > 0 then return math.ceil(excess) end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return 0
"""


class RateLimiter(abc.ABC):
    """``burst`` events at once, then one per ``interval_ms``, per key."""

    def __init__(self, burst: int, interval_ms: float) -> None:
        self.burst = max(burst, 1)
        self.interval_ms = interval_ms

    @abc.abstractmethod
    async def check(self, key: str) -> int | None:
        """None if allowed (and counted); else milliseconds to wait."""

    async def close(self) -> None:
        return None


class LocalRateLimiter(RateLimiter):
    def __init__(self, burst: int, interval_ms: float, max_keys: int = 200_000) -> None:
        super().__init__(burst, interval_ms)
        self._tat: dict[str, float] = {}
        self._max_keys = max_keys

    async def check(self, key: str) -> int | None:
        now = time.monotonic() * 1000.0
        tat = max(self._tat.get(key, now), now)
        excess = tat - now - (self.burst - 1) * self.interval_ms
        if excess > 0:
            return max(math.ceil(excess), 1)
        if len(self._tat) >= self._max_keys:
            # Bounded memory: forget keys whose allowance is full again.
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        self._tat[key] = tat + self.interval_ms
        return None


class RedisRateLimiter(RateLimiter):
    def __init__(self, url: str, burst: int, interval_ms: float) -> None:
        super().__init__(burst, interval_ms)
        self._redis: aioredis.Redis = blocking_client(
            url, socket_timeout=FAIL_OPEN_TIMEOUT_S, socket_connect_timeout=FAIL_OPEN_TIMEOUT_S)
        self._script = self._redis.register_script(_GCRA)
        self._breaker = CircuitBreaker()
        self.failures = 0

    async def check(self, key: str) -> int | None:
        """Fails open: with Redis unreachable, members may post (the per-connection
        limit still holds) rather than nobody being able to; after a failure, without
        asking Redis for a moment (1 s, doubling while it keeps failing, at most 10 s:
        :class:`rooms.realtime.outages.CircuitBreaker`)."""
        if self._breaker.is_open():
            return None
        try:
            wait = await self._script(keys=[f"hearth:rl:{key}"],
                                      args=[self.interval_ms, self.burst])
        except Exception as exc:
            self._breaker.trip()
            self.failures += 1
            if self.failures % 100 == 1:
                log.warning("rate limiter unavailable, allowing: %s", exc)
            return None
        self._breaker.reset()
        return max(int(wait), 1) if int(wait) else None

    async def close(self) -> None:
        await self._redis.aclose()


def make_limiter(redis: RedisClients | None, burst: int, window_ms: float) -> RateLimiter:
    """``burst`` events per ``window_ms`` per key: shared through Redis when the process
    has it, else for this process alone."""
    interval_ms = window_ms / max(burst, 1)
    if redis is None:
        return LocalRateLimiter(burst, interval_ms)
    return RedisRateLimiter(redis.url, burst, interval_ms)
