"""The domain-event outbox: events written with the change, read by named subscribers.

Writers call :func:`append_txn` with the connection of the transaction that makes the
change, so the event commits or rolls back with it. The insert also calls
``pg_notify('hearth_outbox')``, which PostgreSQL delivers only at commit: a listener
(:class:`OutboxNotifier`) wakes the consumers at once, and a periodic poll covers a
lost notification (a listener reconnecting).

A :class:`Consumer` runs one named subscriber. Each round opens one transaction, locks
the subscriber's row (two processes running the same subscriber take turns), reads the
events after its position, calls the handler for each with that same connection, and
advances the position before committing. The handler's own writes and the position
commit together: a batch that fails or a process killed mid-way rolls both back and the
batch is handled again. Delivery is at least once; handling (what the handler writes to
PostgreSQL) happens once. Work after the commit (publishing to users) is at least once.

Ordering and visibility: events are read in (transaction id, row id) order and only
from transactions older than the oldest one still running, so no event can later
appear *behind* a position already passed (see ``0008_outbox.sql``). A long writing
transaction delays delivery by its duration; it never loses an event. The horizon is the
cluster's (transaction ids are), so a long transaction that has written anything, in any
database of the same PostgreSQL, delays delivery; read-only ones have no id and do not.

A handler that keeps failing on one event: after ``isolate_after`` failures of a batch
the consumer handles its events one by one, and after ``dead_letter_after`` failures of
one event that event is set aside in ``outbox_dead_letters`` with its error, and the
subscriber moves on.

Retention (:func:`purge`): events older than N days that every subscriber has consumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg
import msgspec

from persistence.database import Database, DatabaseUnavailable
from protocol.domain_events import (
    DomainEvent,
    MessageSent,
    community_of,
    decode_event,
    event_type,
)
from protocol.models import Message

log = logging.getLogger(__name__)


class FailureLog(Protocol):
    """How the background loops here report a failure (the core's
    ``rooms.realtime.outages.ThrottledLog``): returns what store is out when the failure
    is an outage (logged once per interval, no traceback), None for anything else
    (logged with its traceback). Outages are waited out: they count toward nothing."""

    def failure(self, exc: BaseException, doing: str) -> str | None: ...


class _Tracebacks:
    """Without a :class:`FailureLog`: every failure with its traceback, none an outage."""

    def failure(self, exc: BaseException, doing: str) -> str | None:
        log.error("%s failed", doing, exc_info=exc)
        return None


_TRACEBACKS = _Tracebacks()

NOTIFY_CHANNEL = "hearth_outbox"
_encoder = msgspec.json.Encoder()


async def append_txn(conn: asyncpg.Connection, events: Sequence[DomainEvent]) -> None:
    """Write ``events`` in the caller's transaction (one round trip, any count).

    Call it only inside a transaction: on a bare connection the events would commit
    on their own, before or without the change they describe."""
    if not events:
        return
    await conn.execute(
        """
        WITH ins AS (
            INSERT INTO outbox_events (type, community_id, payload)
            SELECT * FROM unnest($1::text[], $2::bigint[], $3::jsonb[])
            RETURNING 1)
        SELECT pg_notify($4, count(*)::text) FROM ins
        """,
        [event_type(e) for e in events], [community_of(e) for e in events],
        [_encoder.encode(e).decode() for e in events], NOTIFY_CHANNEL)


@dataclass(frozen=True)
class Delivered:
    """One event as a subscriber receives it: its stable id and the decoded event."""

    event_id: str
    """``"<xid>:<id>"``: unique and stable across redeliveries (for idempotency keys)."""
    event: DomainEvent
    created_at_ms: int


Handler = Callable[[asyncpg.Connection, Delivered], Awaitable[None]]
"""Handle one event inside the subscriber's transaction (write with ``conn`` only)."""
BatchHandler = Callable[[asyncpg.Connection, list[Delivered]], Awaitable[None]]
"""Handle a whole batch inside the subscriber's transaction, after ``Handler`` ran for
each event: a subscriber that writes for every event does it in one statement."""
AfterCommit = Callable[[list[Delivered]], Awaitable[None]]
"""Work after a batch committed (publishing); at least once, never before the commit."""


async def register_subscriber(conn: asyncpg.Connection, name: str) -> None:
    """Create the subscriber's position if it has none (it starts at the oldest event
    kept). Registering makes retention wait for it."""
    await conn.execute("INSERT INTO outbox_subscribers (name) VALUES ($1) "
                       "ON CONFLICT (name) DO NOTHING", name)


async def handle_batch(db: Database, name: str, handler: Handler | None, *,
                       limit: int = 100,
                       batch_handler: BatchHandler | None = None) -> list[Delivered]:
    """One round for subscriber ``name`` (see the module docstring); returns what was
    handled (and committed)."""
    async with db.transaction(f"outbox.{name}") as conn:
        row = await conn.fetchrow(
            "SELECT last_xid::text AS xid, last_id FROM outbox_subscribers "
            "WHERE name = $1 FOR UPDATE", name)
        if row is None:
            raise LookupError(f"outbox subscriber {name!r} is not registered")
        rows = await conn.fetch(
            """
            SELECT xid::text AS xid, id, payload::text AS payload,
                   (extract(epoch FROM created_at) * 1000)::bigint AS at
              FROM outbox_events
             WHERE (xid, id) > ($1::text::xid8, $2)
               AND xid < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY xid, id
             LIMIT $3
            """, row["xid"], row["last_id"], limit)
        if not rows:
            return []
        delivered: list[Delivered] = []
        for r in rows:
            event = decode_event(r["payload"])
            if event is None:  # written by a newer version: not ours to read
                continue
            item = Delivered(f"{r['xid']}:{r['id']}", event, r["at"])
            if handler is not None:
                await handler(conn, item)
            delivered.append(item)
        if batch_handler is not None and delivered:
            await batch_handler(conn, delivered)
        last = rows[-1]
        await conn.execute(
            "UPDATE outbox_subscribers SET last_xid = $2::text::xid8, last_id = $3, "
            "handled = handled + $4, updated_at = now() WHERE name = $1",
            name, last["xid"], last["id"], len(delivered))
        return delivered


async def dead_letter(db: Database, name: str, error: str, attempts: int) -> str | None:
    """Set aside the first event after the subscriber's position (the one that keeps
    failing) and move past it; returns its id (None if there was none to set aside)."""
    async with db.transaction(f"outbox.{name}.dead_letter") as conn:
        row = await conn.fetchrow(
            "SELECT last_xid::text AS xid, last_id FROM outbox_subscribers "
            "WHERE name = $1 FOR UPDATE", name)
        if row is None:
            return None
        event = await conn.fetchrow(
            """
            SELECT xid::text AS xid, id, type, payload::text AS payload FROM outbox_events
             WHERE (xid, id) > ($1::text::xid8, $2)
               AND xid < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY xid, id LIMIT 1
            """, row["xid"], row["last_id"])
        if event is None:
            return None
        event_id = f"{event['xid']}:{event['id']}"
        await conn.execute(
            "INSERT INTO outbox_dead_letters (subscriber, event_id, type, payload, error,"
            " attempts) VALUES ($1, $2, $3, $4::jsonb, $5, $6)"
            " ON CONFLICT (subscriber, event_id) DO NOTHING",
            name, event_id, event["type"], event["payload"], error[:4000], attempts)
        await conn.execute(
            "UPDATE outbox_subscribers SET last_xid = $2::text::xid8, last_id = $3, "
            "updated_at = now() WHERE name = $1", name, event["xid"], event["id"])
        return event_id


async def held_back(db: Database, name: str) -> bool:
    """Are there events after the subscriber's position that the horizon still hides
    (an older transaction is open)? Then the consumer retries soon instead of waiting
    for the next notification or poll."""
    async with db.connection() as conn:
        return bool(await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM outbox_events e, outbox_subscribers s"
            " WHERE s.name = $1 AND (e.xid, e.id) > (s.last_xid, s.last_id))", name))


async def purge(conn: asyncpg.Connection, older_than_days: float) -> int:
    """Delete events older than ``older_than_days`` that every registered subscriber
    has consumed; returns how many."""
    status = await conn.execute(
        """
        DELETE FROM outbox_events e
         WHERE e.created_at < now() - make_interval(secs => $1)
           AND NOT EXISTS (SELECT 1 FROM outbox_subscribers s
                            WHERE (e.xid, e.id) > (s.last_xid, s.last_id))
        """, older_than_days * 86_400.0)
    return int(status.split()[-1])


async def positions(conn: asyncpg.Connection) -> dict[str, int]:
    """Events handled per subscriber (for tests and metrics)."""
    rows = await conn.fetch("SELECT name, handled FROM outbox_subscribers")
    return {r["name"]: r["handled"] for r in rows}


def _resolve(future: asyncio.Future[None], *_: object) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class OutboxNotifier:
    """Wakes this process's consumers when any process commits outbox events.

    Holds one pool connection with ``LISTEN``; if it fails the consumers still poll."""

    db: Database
    retry_s: float = 5.0
    failures: FailureLog = _TRACEBACKS
    _waiters: set[asyncio.Event] = field(default_factory=set)

    def waiter(self) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.add(event)
        return event

    def _wake(self, *_: object) -> None:
        for event in self._waiters:
            event.set()

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after a failure."""
        while True:
            try:
                async with self.db.connection() as conn:
                    lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

                    conn.add_termination_listener(functools.partial(_resolve, lost))
                    await conn.add_listener(NOTIFY_CHANNEL, self._wake)
                    try:
                        self._wake()  # whatever was committed while not listening
                        await lost  # until cancelled or the connection dies
                        raise DatabaseUnavailable("the listening connection was lost")
                    finally:
                        with contextlib.suppress(Exception):
                            await conn.remove_listener(NOTIFY_CHANNEL, self._wake)
                            await conn.execute(f"UNLISTEN {NOTIFY_CHANNEL}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures.failure(exc, "outbox listener (consumers poll until it is back)")
                await asyncio.sleep(self.retry_s)


@dataclass
class Consumer:
    """Runs one named subscriber until cancelled (see the module docstring)."""

    db: Database
    name: str
    handler: Handler | None
    after_commit: AfterCommit | None = None
    notifier: OutboxNotifier | None = None
    poll_s: float = 2.0
    batch: int = 100
    isolate_after: int = 3
    """Failures of a batch in a row after which its events are handled one at a time
    (to find the one that fails)..."""
    dead_letter_after: int = 3
    """...and failures of that one event in a row after which it is set aside
    (``outbox_dead_letters``)."""
    backoff_s: float = 0.5
    failure_log: FailureLog = _TRACEBACKS
    batch_handler: BatchHandler | None = None
    handled: int = 0
    failures: int = 0
    dead_lettered: int = 0

    async def _outage(self, exc: Exception, doing: str, backoff: float) -> bool:
        """Report ``exc``; if it is an outage, wait ``backoff`` and say so."""
        if self.failure_log.failure(exc, f"outbox subscriber {self.name}: {doing}") is None:
            return False
        await asyncio.sleep(backoff)
        return True

    async def run(self) -> None:
        backoff = self.backoff_s
        while True:
            try:
                async with self.db.transaction("outbox.register") as conn:
                    await register_subscriber(conn, self.name)
                break
            except Exception as exc:
                if not await self._outage(exc, "registering", backoff):
                    raise
                backoff = min(backoff * 2, 30.0)
        wake = self.notifier.waiter() if self.notifier is not None else asyncio.Event()
        backoff = self.backoff_s
        in_a_row = 0  # failures in a row
        single_left = 0  # events still to handle one at a time
        while True:
            wake.clear()
            limit = 1 if single_left else self.batch
            try:
                done = await handle_batch(self.db, self.name, self.handler, limit=limit,
                                          batch_handler=self.batch_handler)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # PostgreSQL out of reach: the same batch once it is back; no event is
                # to blame, so nothing counts toward setting one aside.
                if await self._outage(exc, "handling a batch", backoff):
                    backoff = min(backoff * 2, 30.0)
                    continue
                # The batch rolled back whole; the same events come again. After a few
                # failures they come one at a time, and the one that still fails is set
                # aside: one poison event must not stop the subscriber for good.
                self.failures += 1
                in_a_row += 1
                if not single_left and in_a_row >= self.isolate_after:
                    single_left, in_a_row = self.batch, 0
                    continue
                if single_left and in_a_row >= self.dead_letter_after:
                    try:
                        event_id = await dead_letter(self.db, self.name, repr(exc),
                                                     in_a_row)
                    except Exception as exc2:
                        if not await self._outage(exc2, "setting an event aside", backoff):
                            raise
                        continue  # the same event fails again once PostgreSQL is back
                    self.dead_lettered += event_id is not None
                    log.error("outbox subscriber %s: event %s set aside after %d failures",
                              self.name, event_id, in_a_row)
                    single_left, in_a_row, backoff = single_left - 1, 0, self.backoff_s
                    continue
                await asyncio.sleep(backoff)  # reported by _outage above
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = self.backoff_s
            if done:
                in_a_row = 0
                single_left = max(single_left - len(done), 0)
            if done:
                self.handled += len(done)
                if self.after_commit is not None:
                    try:
                        await self.after_commit(done)
                    except Exception:
                        log.exception("outbox subscriber %s: after-commit work failed",
                                      self.name)
                continue  # there may be more
            wait_s = self.poll_s
            try:
                if await held_back(self.db, self.name):
                    wait_s = min(self.poll_s, 0.1)
            except Exception as exc:
                if not await self._outage(exc, "checking for older transactions",
                                          self.backoff_s):
                    raise
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that arrives as the wake-up does, and this loop would then
            # outlive its shutdown.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await wake.wait()


async def retention_forever(db: Database, older_than_days: float,
                            every_s: float = 3600.0,
                            failures: FailureLog = _TRACEBACKS) -> None:
    """The periodic purge (run by every process; deleting twice deletes nothing)."""
    while True:
        try:
            async with db.transaction("outbox.purge") as conn:
                removed = await purge(conn, older_than_days)
            if removed:
                log.info("outbox retention removed %d events", removed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures.failure(exc, "outbox retention")
        await asyncio.sleep(every_s)


async def append_messages_txn(conn: asyncpg.Connection, messages: Sequence[Message]) -> None:
    """``message_sent`` for a group-committed batch, in the batch's transaction: one
    statement, which also fills in each channel's community (the hot path: one round
    trip more per batch, not per message)."""
    if not messages:
        return
    await conn.execute(
        """
        WITH ins AS (
            INSERT INTO outbox_events (type, community_id, payload)
            SELECT 'message_sent', c.community_id,
                   jsonb_set(d.payload::jsonb, '{community_id}',
                             coalesce(to_jsonb(c.community_id), 'null'::jsonb))
              FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS d(channel_id, payload, n)
              LEFT JOIN channels c ON c.id = d.channel_id
             ORDER BY d.n
            RETURNING 1)
        SELECT pg_notify($3, count(*)::text) FROM ins
        """,
        [m.channel_id for m in messages],
        [_encoder.encode(MessageSent(
            message_id=m.id, channel_id=m.channel_id, community_id=None,
            author_id=m.author.id, seq=m.seq, reply_to_id=m.reply_to_id,
            at=m.created_at)).decode() for m in messages],
        NOTIFY_CHANNEL)
