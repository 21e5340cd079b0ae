"""The drip task: unlocks timed modules when their time comes and tells each learner
(``lesson_unlocked``), and expires enrolments whose access period ended.

Idempotent across restarts and across every process that mounts the sidecar: due rows
of ``module_unlocks`` are claimed with ``FOR UPDATE SKIP LOCKED`` and stamped
``notified_at`` in the same statement, so each unlock is announced by exactly one
process; a process that dies between its commit and its publishes loses those
announcements (the outline, read on reconnect, shows the lesson open regardless)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from protocol.sidecar import LessonUnlocked, UnlockReason
from sidecars.api import Host
from sidecars.courses import store
from sidecars.courses.rules import Trigger
from sidecars.courses.service import After, CourseService

log = logging.getLogger(__name__)

CLAIM_BATCH = 5000
PUBLISH_CHUNK = 500


class Drip:
    def __init__(self, host: Host, courses: CourseService, every_s: float = 1.0) -> None:
        self.host = host
        self.courses = courses
        self.every_s = every_s
        self.unlocked = 0

    async def run(self) -> None:
        """Forever: claim and announce due unlocks, expire ended enrolments; then wait
        ``every_s`` (a 1 s period keeps an unlock within ~1-2 s of its time)."""
        while True:
            try:
                while await self.tick() >= CLAIM_BATCH:
                    pass
                await self.expire()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a PostgreSQL outage: try again next period
                log.warning("courses drip: %s", exc)
            await asyncio.sleep(self.every_s)

    async def tick(self) -> int:
        """Claim up to :data:`CLAIM_BATCH` due unlocks and announce them; returns how
        many were claimed."""
        async with self.host.transaction("courses.drip") as conn:
            rows = await conn.fetch(
                "WITH due AS (SELECT u.enrolment_id, u.module_id FROM module_unlocks u"
                " WHERE u.notified_at IS NULL AND u.unlock_at <= now()"
                " ORDER BY u.unlock_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
                " UPDATE module_unlocks u SET notified_at = now() FROM due"
                " WHERE u.enrolment_id = due.enrolment_id AND u.module_id = due.module_id"
                " RETURNING u.enrolment_id, u.module_id", CLAIM_BATCH)
            if not rows:
                return 0
            detail = await conn.fetch(
                "SELECT e.id, e.user_id, e.state, e.course_id, e.community_id"
                " FROM enrolments e WHERE e.id = ANY($1)",
                list({r["enrolment_id"] for r in rows}))
            modules = list({r["module_id"] for r in rows})
            lesson_rows = await conn.fetch(
                "SELECT id, module_id FROM course_lessons WHERE module_id = ANY($1)"
                " ORDER BY position, id", modules)
            now = await store.now_ms(conn)
        enrolments = {r["id"]: r for r in detail}
        lessons: dict[int, list[int]] = defaultdict(list)
        for r in lesson_rows:
            lessons[r["module_id"]].append(r["id"])
        events = []
        for r in rows:
            e = enrolments.get(r["enrolment_id"])
            if e is None or e["state"] not in ("active", "completed"):
                continue  # paused: the outline shows it once resumed
            events.append((e["user_id"], LessonUnlocked(
                community_id=e["community_id"], course_id=e["course_id"],
                module_id=r["module_id"], lesson_ids=lessons[r["module_id"]][:1000],
                reason=UnlockReason.DRIP, at=now)))
        for i in range(0, len(events), PUBLISH_CHUNK):
            await asyncio.gather(*(self.host.publish_to_user(u, ev)
                                   for u, ev in events[i:i + PUBLISH_CHUNK]))
        self.unlocked += len(events)
        return len(rows)

    async def expire(self) -> None:
        """Enrolments past ``expires_at`` (active or paused) become expired."""
        after = After()
        async with self.host.transaction("courses.expire") as conn:
            due = await conn.fetch(
                "SELECT * FROM enrolments WHERE expires_at <= now()"
                " AND state IN ('active', 'paused') LIMIT 1000 FOR UPDATE SKIP LOCKED")
            for enrol in due:
                course_row = store.must(await conn.fetchrow(
                    "SELECT * FROM courses WHERE id = $1", enrol["course_id"]))
                await self.courses.move(conn, course_row, enrol, enrol["user_id"],
                                        Trigger.EXPIRE, "access period ended", after)
        await self.courses.flush(after)
