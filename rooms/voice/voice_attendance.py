"""Voice-room attendance as domain events (``voice_attended``) for the sidecars.

Voice presence is kept in Redis (``rooms/voice/voice_roster.py``), so there is no PostgreSQL
transaction to share: the voice service's join and leave hooks (synchronous, must not
block) queue a note, and :meth:`VoiceAttendanceRecorder.run` writes the queued notes to
the outbox in one transaction per batch. Bounded: past ``max_pending`` notes the oldest
are dropped (and counted); a process killed before a flush loses its last notes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from persistence import outbox
from persistence.database import Database
from protocol.domain_events import AttendanceChange, VoiceAttended
from rooms.realtime.outages import ThrottledLog

log = logging.getLogger(__name__)


class VoiceAttendanceRecorder:
    def __init__(self, db: Database, *, flush_every_s: float = 0.5,
                 max_pending: int = 50_000) -> None:
        self.db = db
        self.flush_every_s = flush_every_s
        self._notes: deque[tuple[int, int, AttendanceChange, int]] = deque(maxlen=max_pending)
        self._wake = asyncio.Event()
        self.dropped = 0
        self.written = 0
        self.lost = 0
        """Notes whose write failed (PostgreSQL out of reach, most likely)."""
        self._failures = ThrottledLog(log)

    def joined(self, channel_id: int, user_id: int, at: float) -> None:
        self._note(channel_id, user_id, AttendanceChange.JOINED, at)

    def left(self, channel_id: int, user_id: int, at: float) -> None:
        self._note(channel_id, user_id, AttendanceChange.LEFT, at)

    def _note(self, channel_id: int, user_id: int, change: AttendanceChange,
              at: float) -> None:
        if len(self._notes) == self._notes.maxlen:
            self.dropped += 1
        self._notes.append((channel_id, user_id, change, int(at * 1000)))
        self._wake.set()

    async def run(self) -> None:
        """Flush until cancelled; on cancel, flushes what is queued."""
        try:
            while True:
                await self._wake.wait()
                await asyncio.sleep(self.flush_every_s)  # gather a batch
                self._wake.clear()
                await self.flush()
        finally:
            if self._notes:
                await asyncio.shield(self.flush())

    async def flush(self) -> None:
        batch = list(self._notes)
        self._notes.clear()
        if not batch:
            return
        try:
            async with self.db.transaction("outbox.voice_attendance") as conn:
                rows = await conn.fetch(
                    "SELECT id, community_id FROM channels WHERE id = ANY($1::bigint[])",
                    list({b[0] for b in batch}))
                community = {r["id"]: r["community_id"] for r in rows}
                await outbox.append_txn(conn, [
                    VoiceAttended(channel_id=cid, community_id=community[cid], user_id=uid,
                                  change=change, at=at)
                    for cid, uid, change, at in batch if community.get(cid) is not None])
            self.written += len(batch)
        except Exception as exc:
            # lost either way; an outage is one line per interval, not a traceback each
            self.lost += len(batch)
            self._failures.failure(exc, "writing voice attendance events")
