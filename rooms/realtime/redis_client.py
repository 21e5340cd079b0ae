"""One way to build the plain Redis clients (session mirror, rate limiter, presence...).

redis-py's asyncio ``ConnectionPool`` raises ``MaxConnectionsError`` as soon as more
commands are in flight than it has connections (100 by default) instead of waiting. In a
resume storm every concurrent ``claim``, ``forget`` and rate-limit check holds one, and a
claim that failed *after* taking ownership lost the session (seen in the 10,000-client
failover run). A blocking pool makes the extra callers wait for a free connection, up to
``timeout_s``, so a burst queues instead of failing.
"""

from __future__ import annotations

import re

import redis.asyncio as aioredis

DEFAULT_MAX_CONNECTIONS = 64
"""Per client and process: enough to keep Redis busy; more only adds context switches."""
DEFAULT_TIMEOUT_S = 10.0
"""Longest wait for a free pooled connection before the command fails."""
FAIL_OPEN_TIMEOUT_S = 1.0
"""Socket timeouts of the clients whose checks fail open in the send path (rate limits,
slow mode): a hung Redis must not hold a send longer than this."""


def blocking_client(url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                    timeout_s: float = DEFAULT_TIMEOUT_S, decode_responses: bool = False,
                    socket_timeout: float | None = None,
                    socket_connect_timeout: float | None = None) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout_s,
        decode_responses=decode_responses, socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout)
    client: aioredis.Redis = aioredis.Redis.from_pool(pool)  # aclose() closes the pool
    return client


class RedisClients:
    """Where every plain Redis client of a process comes from (``HEARTH_REDIS_URL``).

    The setting may list several primaries (comma-separated) for the bus, which hashes
    topics across them (``rooms/realtime/redis_bus.py``); everything else (session mirror, rate
    limits, presence, slow mode, raid counters, voice roster, media placement) keeps its
    keys on the first one, so every process agrees where a key lives."""

    def __init__(self, redis_url: str) -> None:
        # The same rule as the bus's (``rooms.realtime.redis_bus_routing.split_urls``):
        # commas or spaces.
        self.urls = [u for u in re.split(r"[,\s]+", redis_url) if u]
        if not self.urls:
            raise ValueError("empty Redis URL")
        self.url = self.urls[0]
        """The primary that holds the keys of everything but the bus."""

    def client(self, *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
               decode_responses: bool = False) -> aioredis.Redis:
        """A new client of the primary with its own blocking pool (:func:`blocking_client`)."""
        return blocking_client(self.url, max_connections=max_connections,
                               decode_responses=decode_responses)


def redis_clients(redis_url: str | None) -> RedisClients | None:
    """The factory for a configured ``redis_url``; None: this process runs without Redis."""
    return RedisClients(redis_url) if redis_url and redis_url.strip(", \t\n") else None
