"""One way to build the plain Redis clients (session mirror, rate limiter, presence).

redis-py's asyncio ``ConnectionPool`` raises ``MaxConnectionsError`` as soon as more
commands are in flight than it has connections (100 by default) instead of waiting. In a
resume storm every concurrent ``claim``, ``forget`` and rate-limit check holds one, and a
claim that failed *after* taking ownership lost the session (seen in the 10,000-client
failover run). A blocking pool makes the extra callers wait for a free connection, up to
``timeout_s``, so a burst queues instead of failing.
"""

from __future__ import annotations

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
