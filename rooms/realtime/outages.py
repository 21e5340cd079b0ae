"""Outages of PostgreSQL and Redis: telling them from bugs, answering them, logging them once.

While a store the server depends on is unreachable, every request that needs it fails the
same way, hundreds of times a second, and stops failing when the store is back. So:

* :func:`outage_of` says whether an exception means "the database (or Redis) cannot be
  reached right now" rather than "this code or this request is wrong";
* :func:`unavailable` is what the client is told then: ``unavailable`` with a jittered
  ``retry_after_ms`` (a retry with the same nonce is safe), never ``internal``;
* :class:`ThrottledLog` writes one line per cause per interval with a count of what it
  folded in, instead of a traceback per refused request or per background tick.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from persistence.database import DatabaseUnavailable
from protocol.codes import ErrorCode
from rooms.errors import RequestError

Store = Literal["database", "redis"]

RETRY_AFTER_MS = (500, 1500)
"""The range of ``retry_after_ms`` told to clients during an outage (uniform: spreads
the retries). A PostgreSQL restart or a Redis reconnect takes seconds; a retry about
every second costs little and gets through soon after the store is back."""

_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseUnavailable,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08: the connection broke
    asyncpg.exceptions.AdminShutdownError,  # 57P01: fast or immediate shutdown
    asyncpg.exceptions.CrashShutdownError,  # 57P02: a backend crashed, all restart
    asyncpg.exceptions.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.exceptions.TooManyConnectionsError,  # 53300
)
_REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError)


def _closed_connection(exc: BaseException) -> bool:
    """asyncpg's "connection is closed" (a query on a connection found dead, or leaving
    a transaction whose connection died meanwhile): an ``InterfaceError``, the same
    class as its misuse errors, so told apart by its message."""
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


def _bus_errors() -> tuple[type[BaseException], ...]:
    """The Redis bus's "Redis is not taking publishes" errors (imported late: a process
    without Redis never loads the bus module)."""
    from rooms.realtime.redis_bus_errors import BusOverloaded, BusUnavailable, PublishTimeout

    return (BusOverloaded, BusUnavailable, PublishTimeout)


def outage_of(exc: BaseException) -> Store | None:
    """``"database"`` or ``"redis"`` when ``exc`` (or what it was raised from) means that
    store cannot be reached for now; None for anything else, which is a bug or a bad
    request and keeps its traceback. Only explicit causes (``raise ... from``) are
    followed: an error raised while *handling* an outage is not an outage."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, _DATABASE_ERRORS) or _closed_connection(seen):
            return "database"
        if isinstance(seen, _REDIS_ERRORS) or isinstance(seen, _bus_errors()):
            return "redis"
        seen = seen.__cause__
    return None


_WHAT = {"database": "the database", "redis": "Redis"}


def unavailable(store: Store, doing: str = "") -> RequestError:
    """The ``unavailable`` error for clients, with a jittered ``retry_after_ms``."""
    what = f"{doing}: " if doing else ""
    return RequestError(ErrorCode.UNAVAILABLE,
                        f"{what}{_WHAT[store]} is unavailable for the moment; retry",
                        retry_after_ms=random.randint(*RETRY_AFTER_MS))


class _Cause:
    __slots__ = ("count", "first_at", "logged_at", "suppressed")

    def __init__(self, now: float) -> None:
        self.first_at = now
        self.logged_at = now
        self.count = 1
        self.suppressed = 0


class ThrottledLog:
    """At most one log line per cause per ``interval_s``, with a count.

    The first occurrence of a cause is logged at once. Later ones within ``interval_s``
    of the last line are only counted; the first one after it is logged with "N more
    like this in the last S s". :meth:`resolved` ends the cause with one line saying how
    long it lasted and how often it happened (nothing if it was never logged).

    A cause is a short, stable string chosen by the caller (``"database"``,
    ``"redis"``, ``"publish"``, an exception's type name): never anything per request,
    so the table stays small (it is bounded by ``max_causes`` regardless).
    """

    def __init__(self, logger: logging.Logger, *, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, max_causes: int = 256) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._max_causes = max_causes
        self._causes: dict[str, _Cause] = {}

    def log(self, level: int, cause: str, msg: str, *args: object,
            exc_info: BaseException | None = None,
            extra: Mapping[str, Any] | None = None) -> bool:
        """Log ``msg % args`` unless ``cause`` was logged less than ``interval_s`` ago;
        True when a line was written. ``exc_info`` adds the traceback to the line."""
        now = self._clock()
        state = self._causes.get(cause)
        if state is None:
            if len(self._causes) >= self._max_causes:
                self._causes.clear()
            self._causes[cause] = _Cause(now)
            self.logger.log(level, msg, *args, exc_info=exc_info, extra=extra)
            return True
        state.count += 1
        if now - state.logged_at < self.interval_s:
            state.suppressed += 1
            return False
        folded, state.suppressed = state.suppressed, 0
        window = now - state.logged_at
        state.logged_at = now
        if folded:
            self.logger.log(level, msg + " (%d more like this in the last %.0f s)",
                            *args, folded, window, exc_info=exc_info, extra=extra)
        else:
            self.logger.log(level, msg, *args, exc_info=exc_info, extra=extra)
        return True

    def warning(self, cause: str, msg: str, *args: object,
                exc_info: BaseException | None = None,
                extra: Mapping[str, Any] | None = None) -> bool:
        return self.log(logging.WARNING, cause, msg, *args, exc_info=exc_info, extra=extra)

    def error(self, cause: str, msg: str, *args: object,
              exc_info: BaseException | None = None,
              extra: Mapping[str, Any] | None = None) -> bool:
        return self.log(logging.ERROR, cause, msg, *args, exc_info=exc_info, extra=extra)

    def resolved(self, cause: str, msg: str = "%s: recovered") -> None:
        """``cause`` is over: one line with its duration and count (cheap when it is not
        active: one dictionary lookup, so call it on every success)."""
        if not self._causes:
            return
        state = self._causes.pop(cause, None)
        if state is None:
            return
        self.logger.warning(msg + " after %.1f s (%d occurrence%s)", cause,
                            self._clock() - state.first_at, state.count,
                            "" if state.count == 1 else "s")

    def active(self) -> list[str]:
        """The causes seen and not resolved (for tests and diagnostics)."""
        return list(self._causes)

    def failure(self, exc: BaseException, doing: str, *,
                extra: Mapping[str, Any] | None = None) -> Store | None:
        """Log a failure of ``doing``: an outage as one warning per store and interval
        without traceback; anything else as an error with its traceback, throttled per
        (``doing``, exception type). Returns the store that is out, if it is one."""
        store = outage_of(exc)
        if store is not None:
            self.warning(store, "%s failed: %s is unavailable (%s: %s)", doing,
                         _WHAT[store], type(exc).__name__, exc, extra=extra)
        else:
            self.error(f"{doing}:{type(exc).__name__}", "%s failed", doing, exc_info=exc,
                       extra=extra)
        return store


class CircuitBreaker:
    """After a failure, skip the store for a pause: callers that may go on without it
    (rate limits and slow mode fail open) do so at once instead of each waiting out its
    own timeout against a Redis that hangs. The first call after the pause tries again;
    the pause doubles (from ``pause_s`` up to ``max_pause_s``) while tries keep failing,
    and :meth:`reset` on a success ends it."""

    def __init__(self, pause_s: float = 1.0, max_pause_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pause_s = pause_s
        self.max_pause_s = max_pause_s
        self._clock = clock
        self._until = 0.0
        self._failures = 0
        self.skipped = 0

    def is_open(self) -> bool:
        """True while calls should skip the store."""
        if self._until and self._clock() < self._until:
            self.skipped += 1
            return True
        return False

    def trip(self) -> None:
        """A call failed: skip the store for the next pause."""
        self._failures += 1
        pause = min(self.max_pause_s, self.pause_s * 2 ** min(self._failures - 1, 16))
        self._until = self._clock() + pause

    def reset(self) -> None:
        """A call succeeded."""
        if self._failures:
            self._failures = 0
            self._until = 0.0
