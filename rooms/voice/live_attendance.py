"""Attendance of live sessions: who was on a stage's voice room, and for how long.

The voice room's join/leave hooks (``rooms/voice/voice.py``: ``on_join`` / ``on_leave``,
given at construction) call :meth:`AttendanceLog.note_join` /
:meth:`AttendanceLog.note_leave`, which only enqueue (bounded; the hooks must not block
the media path). A writer task turns each batch into three statements (close,
complete, open stretches). Totals are the stretches clipped to the session's live
window, overlaps counted once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from persistence import live as live_db
from persistence.database import Database
from persistence.live import LiveRow
from protocol.live import AttendanceReport, Attendee

log = logging.getLogger(__name__)

ATTENDANCE_QUEUE_MAX = 50_000
"""Join/leave notes waiting for the writer. Beyond it notes are dropped (counted and
logged): the voice path never waits for PostgreSQL."""
ATTENDANCE_BATCH_MAX = 2_000
"""Most notes one write takes."""
_CHANNEL_CACHE_MAX = 10_000


def to_wall(at: dt.datetime | float) -> dt.datetime:
    """A hook's timestamp as an aware UTC datetime (a float is ``time.time()``)."""
    if isinstance(at, dt.datetime):
        return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(at, tz=dt.UTC)


def live_seconds(stretches: list[tuple[dt.datetime, dt.datetime | None]],
                 start: dt.datetime | None, end: dt.datetime) -> float:
    """Seconds covered by ``stretches`` inside [start, end], overlaps counted once."""
    if start is None or end <= start:
        return 0.0
    clipped = sorted((max(j, start), min(left or end, end)) for j, left in stretches)
    total = 0.0
    cur_s: dt.datetime | None = None
    cur_e: dt.datetime | None = None
    for s, e in clipped:
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_s is not None and cur_e is not None:
                total += (cur_e - cur_s).total_seconds()
            cur_s, cur_e = s, e
        elif e > cur_e:
            cur_e = e
    if cur_s is not None and cur_e is not None:
        total += (cur_e - cur_s).total_seconds()
    return total


class _Note:
    __slots__ = ("at", "channel_id", "joined", "user_id")

    def __init__(self, channel_id: int, user_id: int, at: dt.datetime, joined: bool) -> None:
        self.channel_id = channel_id
        self.user_id = user_id
        self.at = at
        self.joined = joined


class AttendanceLog:
    """Queues the voice rooms' join/leave notes and writes them in batches."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._notes: asyncio.Queue[_Note] = asyncio.Queue(ATTENDANCE_QUEUE_MAX)
        self._write_lock = asyncio.Lock()
        self._stage_of: dict[int, int | None] = {}
        """channel id -> session id (None: not a stage), filled as hooks arrive."""
        self.notes_dropped = 0
        self.notes_written = 0
        self.attendance_batches = 0

    def stage_created(self, channel_id: int, session_id: int) -> None:
        """A new session's stage: its notes need no lookup."""
        self._stage_of[channel_id] = session_id

    def note_join(self, channel_id: int, user_id: int, at: dt.datetime | float) -> None:
        """Voice hook: ``user_id`` joined ``channel_id``'s voice room at ``at``.
        Never blocks; non-stage channels are ignored by the writer."""
        self._note(_Note(channel_id, user_id, to_wall(at), True))

    def note_leave(self, channel_id: int, user_id: int, at: dt.datetime | float) -> None:
        """Voice hook: ``user_id`` left ``channel_id``'s voice room at ``at``."""
        self._note(_Note(channel_id, user_id, to_wall(at), False))

    def _note(self, note: _Note) -> None:
        if self._stage_of.get(note.channel_id, 0) is None:
            return  # known not to be a stage
        try:
            self._notes.put_nowait(note)
        except asyncio.QueueFull:
            self.notes_dropped += 1
            if self.notes_dropped % 1000 == 1:
                log.error("attendance queue full: %d join/leave notes dropped",
                          self.notes_dropped)

    async def flush(self) -> None:
        """Write every queued note now (the report and ``end`` call this first)."""
        async with self._write_lock:
            while not self._notes.empty():
                batch: list[_Note] = []
                while len(batch) < ATTENDANCE_BATCH_MAX and not self._notes.empty():
                    batch.append(self._notes.get_nowait())
                await self._write(batch)

    async def _write(self, batch: list[_Note]) -> None:
        """One batch in one transaction: in-batch join/leave pairs become complete
        stretches; a leave without a join in the batch closes the open stretch."""
        unknown = list({n.channel_id for n in batch if n.channel_id not in self._stage_of})
        async with self.db.transaction("live.attendance") as conn:
            if unknown:
                found = await live_db.sessions_of_channels(conn, unknown)
                if len(self._stage_of) > _CHANNEL_CACHE_MAX:
                    self._stage_of.clear()
                for channel_id in unknown:
                    self._stage_of[channel_id] = found.get(channel_id)
            pending: dict[tuple[int, int], dt.datetime] = {}
            completed: list[tuple[int, int, dt.datetime, dt.datetime]] = []
            closed: list[tuple[int, int, dt.datetime]] = []
            for note in batch:
                sid = self._stage_of.get(note.channel_id)
                if sid is None:
                    continue
                key = (sid, note.user_id)
                if note.joined:
                    pending.setdefault(key, note.at)
                elif key in pending:
                    completed.append((sid, note.user_id, pending.pop(key), note.at))
                else:
                    closed.append((sid, note.user_id, note.at))
            opened = [(sid, uid, at) for (sid, uid), at in pending.items()]
            await live_db.write_attendance(conn, opened=opened, completed=completed,
                                           closed=closed)
        self.notes_written += len(batch)
        self.attendance_batches += 1

    async def run(self) -> None:
        """The writer: each batch as it comes. Cancel to stop; what is still queued
        is written before it returns."""
        try:
            while True:
                first = await self._notes.get()
                async with self._write_lock:
                    batch = [first]
                    while len(batch) < ATTENDANCE_BATCH_MAX and not self._notes.empty():
                        batch.append(self._notes.get_nowait())
                    try:
                        await self._write(batch)
                    except Exception:
                        log.exception("attendance batch of %d notes lost", len(batch))
        finally:
            try:
                await self.flush()
            except Exception:
                log.exception("attendance not written at shutdown")

    async def report(self, row: LiveRow) -> AttendanceReport:
        """Who attended ``row``'s session: everything queued is written first."""
        session_id = row.id
        await self.flush()
        async with self.db.connection() as conn:
            stretches = await live_db.attendance(conn, session_id)
            registered = await live_db.registered_ids(conn, session_id)
            now = await live_db.db_now(conn)
        end = row.ended_at or now
        reg = set(registered)
        attendees: list[Attendee] = []
        attended: list[int] = []
        for uid in sorted(set(stretches) | reg):
            own = stretches.get(uid, [])
            total = live_seconds(own, row.started_at, end)
            if total > 0:
                attended.append(uid)
            attendees.append(Attendee(
                user_id=uid, intervals=[live_db.wire_interval(j, left) for j, left in own],
                total_s=round(total, 3), registered=uid in reg))
        return AttendanceReport(session_id=session_id, attendees=attendees,
                                registered=registered, attended=attended,
                                missed=[u for u in registered if u not in set(attended)])
