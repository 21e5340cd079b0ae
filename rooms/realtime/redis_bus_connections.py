"""Raw Redis connections as the bus's parts use them, and the back-off between attempts.

The bus (:mod:`rooms.realtime.redis_bus`) drives redis-py's asyncio ``Connection``
directly instead of a client with a pool: every connection is opened, timed and retried
here, by the bus's own rules (RESP2, payloads as ``bytes``, no hidden retries, one
timeout per operation). The publisher, the pub/sub subscriber and the cluster topology
code all open connections the same way, so that one way lives here; so do the redis-py
error classes that tell "the connection failed" from "the primary does not own the
slot".
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, TimeoutError, OSError,
)
CONNECTION_OR_REPLY_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, ResponseError)
REDIRECTS: tuple[type[BaseException], ...] = (AskError, ClusterDownError, TryAgainError)
"""Replies that mean "this primary does not own the slot (now)": AskError covers MOVED."""


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Capped exponential back-off with jitter ("equal jitter": half fixed, half random)."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 30))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def connection_kwargs(url: str, connect_timeout: float, name: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(parse_url(url))
    kwargs.update(
        protocol=2,                 # pub/sub frames are plain arrays
        decode_responses=False,     # payloads stay bytes
        socket_timeout=None,        # timeouts are applied here, per operation
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),  # no hidden retries: the bus decides
        health_check_interval=0,
        client_name=name,
    )
    if kwargs.get("connection_class") is not UnixDomainSocketConnection:
        kwargs["socket_keepalive"] = True
    return kwargs


def new_connection(kwargs: dict[str, Any]) -> AbstractConnection:
    options = dict(kwargs)
    cls: type[AbstractConnection] = options.pop("connection_class", Connection)
    return cls(**options)


async def disconnect(conn: AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.disconnect(nowait=True)


async def open_connection(kwargs: dict[str, Any], connect_timeout: float) -> AbstractConnection:
    """A connected connection, or the error (nothing left open)."""
    conn = new_connection(kwargs)
    try:
        async with asyncio.timeout(connect_timeout):
            await conn.connect()  # type: ignore[no-untyped-call]
    except BaseException:
        await disconnect(conn)
        raise
    return conn


async def command(kwargs: dict[str, Any], connect_timeout: float, *args: Any) -> Any:
    """One command on a connection of its own, closed afterwards (the cluster probes)."""
    conn = new_connection(kwargs)
    try:
        async with asyncio.timeout(connect_timeout):
            await conn.connect()  # type: ignore[no-untyped-call]
            await conn.send_command(*args)
            return await conn.read_response()
    finally:
        await disconnect(conn)
