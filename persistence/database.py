"""The PostgreSQL connection pool and the one way to open a transaction.

Repositories (the other modules of this package) are plain async functions that take
an ``asyncpg`` connection, named ``*_txn`` when they must run inside a transaction the
caller opened, so that several of them can share one transaction. :class:`Database`
owns the pool; nothing else in Hearth creates connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

Connection = asyncpg.Connection  # re-exported so callers need not import asyncpg

_CONNECT_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError)


class DatabaseUnavailable(ConnectionError):
    """No connection to PostgreSQL could be had (refused, no socket, timed out): the
    server is down or restarting. Raised instead of the bare ``OSError`` that asyncpg
    lets through from connecting, so callers can tell it from other OS errors."""


def _as_connection(conn: PoolConnectionProxy | asyncpg.Connection) -> asyncpg.Connection:
    """The pool hands out a proxy that forwards every ``Connection`` method (and refuses
    use after release); repositories are typed against ``Connection`` and get the proxy."""
    return cast(asyncpg.Connection, conn)


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """Returned to the pool: roll back a transaction left open, nothing else.

    asyncpg's default reset sends ``RESET ALL; UNLISTEN *; CLOSE ALL;
    pg_advisory_unlock_all()`` on every release: a round trip that was 11 % of the
    gateway's CPU during a join storm. Hearth never sets session state, listens,
    keeps cursors or takes session-level advisory locks, so there is nothing to undo."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class Database:
    """An asyncpg pool plus named transactions (names show up in logs and metrics)."""

    PROBE_TIMEOUT_S = 1.0
    """Longest :meth:`ping` waits for PostgreSQL (inside the readiness check's 2 s)."""

    def __init__(self, pool: asyncpg.Pool | None = None) -> None:
        self._pool = pool
        self._dsn: str | None = None
        self._probe: asyncpg.Connection | None = None
        self._probe_lock = asyncio.Lock()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the database is not open yet")
        return self._pool

    def pool_or_none(self) -> asyncpg.Pool | None:
        return self._pool

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 2, max_size: int = 20) -> Database:
        db = cls()
        await db.open(dsn, min_size=min_size, max_size=max_size)
        return db

    async def open(self, dsn: str, *, min_size: int = 2, max_size: int = 20) -> None:
        """Open the pool. Services are built with an unopened Database and share it."""
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, command_timeout=30,
            # Statement cache stays on: every query here is a fixed string.
            reset=_reset_connection,
        )
        assert pool is not None
        self._pool = pool
        self._dsn = dsn

    async def close(self) -> None:
        await self._drop_probe()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @contextlib.asynccontextmanager
    async def _acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; a failure to connect is :class:`DatabaseUnavailable`."""
        pool = self.pool
        try:
            proxy = await pool.acquire()
        except _CONNECT_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: "
                                      f"{type(exc).__name__}: {exc}") from exc
        try:
            yield _as_connection(proxy)
        finally:
            await pool.release(proxy)

    @contextlib.asynccontextmanager
    async def transaction(self, name: str) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside a transaction; commits on exit, rolls back on error."""
        async with self._acquire() as conn, conn.transaction():
            try:
                yield conn
            except Exception:
                log.debug("transaction %s rolled back", name)
                raise

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection for reads that need no transaction."""
        async with self._acquire() as conn:
            yield conn

    async def ping(self) -> bool:
        """Is PostgreSQL answering? For readiness, on a dedicated connection of its own:
        through the pool it waited behind every queued request, so a resume storm that
        saturates the pool (seconds of queue) made the node report "database down"
        while the database was fine, and flap. The probe connection is opened lazily,
        kept, and reopened after a failure; the whole ping is bounded by
        :data:`PROBE_TIMEOUT_S`. A Database built on a bare pool (no DSN) probes
        through the pool."""
        if self._pool is None:
            return False
        try:
            async with asyncio.timeout(self.PROBE_TIMEOUT_S):
                if self._dsn is None:
                    async with self.pool.acquire() as pooled:
                        return bool(await pooled.fetchval("SELECT 1") == 1)
                async with self._probe_lock:
                    if self._probe is None or self._probe.is_closed():
                        self._probe = await asyncpg.connect(self._dsn)
                    value: Any = await self._probe.fetchval("SELECT 1")
                    return bool(value == 1)
        except Exception:
            await self._drop_probe()
            return False

    async def _drop_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.terminate()  # no round trip: it may be the thing that is stuck
