"""Group commit: many messages per PostgreSQL transaction, acknowledged after commit.

Senders ``await writer.submit(message)``; one committer task takes everything queued,
inserts it in a single transaction (``persistence.messages.insert_batch_txn``) and, once
committed, publishes the events in sequence order and resolves every sender's future.
Batching is *natural*: while one commit is in flight the next batch accumulates, so an
idle server commits each message at once and a busy one commits hundreds per round
trip. An optional ``window_ms`` waits a little for more before committing.

Why one committer: per-channel order. Seqs are assigned in the transaction; publishing
batch after batch, in commit order, keeps every channel's events in seq order on the bus.

Pipelined: publishing a committed batch (encoding, fan-out to the local sessions, the
bus) is CPU work on this loop, the next insert is mostly waiting for PostgreSQL; so one
publisher task publishes what is committed, in commit order, while the committer inserts
the next batch. Whatever was committed while a publish was in flight goes out in the next
one (natural batching again). Serially, the commit rate topped out near 4,700
messages/s with the server 30 % idle.

Acknowledged after the commit *and* the publish, or ``ack_after_s`` (0.5 s) after the
commit, whichever comes first: the commit is the durability point and receivers catch up
by seq from PostgreSQL, so a sender need not wait out a Redis outage (the bus holds a
publish up to 5 s before giving up on it), only a bounded moment.

The early ack must not let what refers to a message overtake it: a sender acknowledged
by the timer may edit, react to or delete the message while its ``message_create`` still
waits behind a slow publish, and a receiver would then get an update for a message it
does not have (or see a deleted message reappear). So :meth:`GroupCommitWriter.after_creates`
waits, for one channel, until every ``message_create`` committed in it so far has been
handed to the bus (or its publish failed); the hub calls it before publishing any other
event to a channel topic (``Hub.before_publish``), and the bus keeps per-topic order
from there. A channel with nothing waiting costs one dict lookup.

Bounded: at most ``max_pending`` messages wait (to be committed or published); beyond
that ``submit`` fails fast with ``rate_limited`` instead of growing memory.

Outages: when PostgreSQL cannot be reached the batch's senders get ``unavailable`` (with
``retry_after_ms``) and the log one line per interval with a count, not a traceback per
message (``rooms/realtime/outages.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from persistence.database import Database
from persistence.messages import NewMessage, Stored, insert_batch_txn
from persistence.outbox import append_messages_txn
from protocol.codes import ErrorCode
from protocol.models import Message
from rooms.errors import RequestError
from rooms.realtime.outages import ThrottledLog, outage_of, unavailable

log = logging.getLogger(__name__)

OnCommitted = Callable[[list[Message]], Awaitable[None]]
_Item = tuple[NewMessage, asyncio.Future[Message]]


class GroupCommitWriter:
    """See the module docstring. Run :meth:`run` in a task owned by the app."""

    def __init__(self, db: Database, on_committed: OnCommitted, *, window_ms: float = 0.0,
                 max_batch: int = 1000, max_pending: int = 20_000, retries: int = 3,
                 ack_after_s: float | None = 0.5) -> None:
        self._db = db
        self._on_committed = on_committed
        self._window = window_ms / 1000.0
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._retries = retries
        self._ack_after = ack_after_s
        self._pending: list[_Item] = []
        self._wakeup = asyncio.Event()
        self._closed = False
        self._committed: list[tuple[list[_Item], list[Stored]]] = []
        """Committed, not yet published, in commit order."""
        self._unpublished = 0
        self._publish_wake = asyncio.Event()
        self._batches_committed = 0
        self._batches_published = 0
        """Batches are published strictly in commit order: a count says how far."""
        self._channel_batch: dict[int, int] = {}
        """Channel id -> number of the newest committed batch that created a message in
        it, while that batch is not yet published."""
        self._publish_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._failures = ThrottledLog(log)
        self.batches = 0
        self.committed = 0
        self.last_batch_size = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def submit(self, message: NewMessage) -> Message:
        """Insert ``message``; returns it as committed (or the earlier one with its nonce)."""
        if self._closed:
            raise RequestError(ErrorCode.INTERNAL, "server shutting down")
        if len(self._pending) + self._unpublished >= self._max_pending:
            raise RequestError(ErrorCode.RATE_LIMITED, "server busy, retry", retry_after_ms=100)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending.append((message, future))
        self._wakeup.set()
        return await future

    async def run(self) -> None:
        """Commit batches until cancelled; on cancel, commits and publishes what is
        queued, then stops."""
        publisher = asyncio.get_running_loop().create_task(self._publish_forever(),
                                                           name="group-commit-publish")
        try:
            while True:
                await self._wakeup.wait()
                if self._window:
                    await asyncio.sleep(self._window)
                await self._commit_some()
        finally:
            self._closed = True
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)
            while self._pending:
                await asyncio.shield(self._commit_some())
            await asyncio.shield(self._publish_committed())

    async def _commit_some(self) -> None:
        batch = self._pending[: self._max_batch]
        self._pending = self._pending[self._max_batch:]
        if not self._pending:
            self._wakeup.clear()
        if not batch:
            return
        try:
            stored = await self._insert([m for m, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or outage_of(exc) is not None:
                # Alone, or PostgreSQL is away (one by one would fail the same way).
                self._fail(batch, exc)
                return
            # One bad message must not sink the others: commit them one by one, in
            # order, so only the culprit fails.
            log.warning("group commit of %d messages failed (%s); retrying singly",
                        len(batch), exc)
            for item in batch:
                await self._commit_batch([item])
            return
        self._finish(batch, stored)

    async def _commit_batch(self, batch: list[_Item]) -> None:
        try:
            stored = await self._insert([m for m, _ in batch])
        except Exception as exc:
            self._fail(batch, exc)
            return
        self._finish(batch, stored)

    def _fail(self, batch: list[_Item], exc: Exception) -> None:
        """Every sender in ``batch`` gets the error: ``unavailable`` while PostgreSQL is
        away, ``internal`` otherwise; one log line per cause and interval."""
        store = self._failures.failure(exc, f"storing {len(batch)} message(s)")
        if store is not None:
            error = unavailable(store, "could not store the message")
        else:
            error = RequestError(ErrorCode.INTERNAL, "could not store the message; retry")
        error.__cause__ = exc
        for _, future in batch:
            if not future.done():
                future.set_exception(error)

    def _finish(self, batch: list[_Item], stored: list[Stored]) -> None:
        """Queue the committed batch for the publisher; acknowledge it after
        ``ack_after_s`` if the publish has not done so by then."""
        self._failures.resolved("database")
        created = sum(1 for s in stored if s.created)
        self.batches += 1
        self.committed += created
        self.last_batch_size = created
        self._committed.append((batch, stored))
        self._batches_committed += 1
        for s in stored:
            if s.created:
                self._channel_batch[s.message.channel_id] = self._batches_committed
        self._unpublished += len(batch)
        self._publish_wake.set()
        if self._ack_after is not None:
            asyncio.get_running_loop().call_later(self._ack_after, self._acknowledge,
                                                  batch, stored)

    async def after_creates(self, channel_id: int) -> None:
        """Return once every ``message_create`` committed in ``channel_id`` so far has been
        published (or its publish failed); at once if none is waiting. Whatever is
        published to the channel's topic after this comes after those creates on the bus."""
        target = self._channel_batch.get(channel_id)
        if target is None:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._publish_waiters.append((target, future))
        await future

    def _published(self, taken: list[tuple[list[_Item], list[Stored]]]) -> None:
        """``taken`` (the oldest unpublished batches) is published: release the channels
        and the :meth:`after_creates` callers waiting for it."""
        self._batches_published += len(taken)
        done = self._batches_published
        for _, stored in taken:
            for s in stored:
                channel_id = s.message.channel_id
                if self._channel_batch.get(channel_id, done + 1) <= done:
                    del self._channel_batch[channel_id]
        waiting = []
        for target, future in self._publish_waiters:
            if target > done:
                waiting.append((target, future))
            elif not future.done():
                future.set_result(None)
        self._publish_waiters = waiting

    @staticmethod
    def _acknowledge(batch: list[_Item], stored: list[Stored]) -> None:
        for (_, future), result in zip(batch, stored, strict=True):
            if not future.done():
                future.set_result(result.message)

    async def _publish_forever(self) -> None:
        while True:
            await self._publish_wake.wait()
            self._publish_wake.clear()
            await self._publish_committed()

    async def _publish_committed(self) -> None:
        """Publish everything committed so far (one call, commit order = seq order per
        channel), then acknowledge it."""
        taken, self._committed = self._committed, []
        if not taken:
            return
        # Publish only what was created: a nonce retry returns the stored message.
        fresh = [s.message for _, stored in taken for s in stored if s.created]
        try:
            await self._on_committed(fresh)
        except asyncio.CancelledError:
            self._committed[:0] = taken  # published at shutdown (again: receivers dedupe)
            raise
        except Exception as exc:
            # Committed is committed: receivers catch up from PostgreSQL by seq.
            self._failures.failure(exc, f"publishing {len(fresh)} committed message(s)")
        else:
            self._failures.resolved("redis")
        self._published(taken)
        for batch, stored in taken:
            self._unpublished -= len(batch)
            self._acknowledge(batch, stored)

    async def _insert(self, messages: list[NewMessage]) -> list[Stored]:
        for attempt in range(self._retries + 1):
            try:
                async with self._db.transaction("insert_messages") as conn:
                    stored = await insert_batch_txn(conn, messages)
                    # message_sent for the sidecars, committed with the messages
                    await append_messages_txn(conn, [s.message for s in stored if s.created])
                    return stored
            except asyncpg.UniqueViolationError:
                # A concurrent writer (another process) stored one of these nonces
                # between our check and insert; the transaction rolled back whole, so
                # no seq was consumed. Retrying finds the stored message.
                if attempt == self._retries:
                    raise
        raise AssertionError("unreachable")
