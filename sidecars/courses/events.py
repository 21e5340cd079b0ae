"""Outbox subscriber ``courses.access``: membership changes pause and resume
enrolments live (docs/courses.md).

* ``member_tier_changed`` -> an active enrolment whose tier rule no longer holds is
  paused (reason ``tier``); a paused one whose rule holds again resumes.
* ``member_left`` (left, kicked, banned) -> active enrolments are paused (``left``);
  ``member_joined`` again -> they resume where the rule holds.
* ``member_role_changed`` / ``member_roles_changed`` -> re-checked the same way.
* ``live_attended`` (left) -> live-session lessons of that session are completed for
  the learner once the attendance share is reached.

Changes are written in the subscriber's transaction (position and rows commit
together: handled once); the learners' events go out after the commit."""

from __future__ import annotations

import asyncpg

from protocol.domain_events import (
    AttendanceChange,
    LiveAttended,
    MemberJoined,
    MemberLeft,
    MemberRoleChanged,
    MemberRolesChanged,
    MemberTierChanged,
)
from protocol.sidecar import EnrolmentState
from sidecars.api import Delivered, Host, Subscriber
from sidecars.courses import rules, store
from sidecars.courses.learning import attended_percent
from sidecars.courses.rules import AccessKind, LessonState, Trigger
from sidecars.courses.service import After, CourseService

SUBSCRIBER = "courses.access"
MEMBERSHIP = (MemberTierChanged, MemberLeft, MemberJoined, MemberRoleChanged,
              MemberRolesChanged)
RESUMABLE = frozenset({"tier", "left"})
"""Pause reasons this subscriber lifts again (a staff pause would not be)."""


class AccessSync:
    def __init__(self, host: Host, courses: CourseService) -> None:
        self.host = host
        self.courses = courses
        self._after: dict[str, After] = {}

    def subscriber(self) -> Subscriber:
        return Subscriber(SUBSCRIBER, self.handle, self.after_commit)

    async def handle(self, conn: asyncpg.Connection, item: Delivered) -> None:
        event = item.event
        after = After()
        if isinstance(event, MEMBERSHIP):
            await self.recheck(conn, event.community_id, event.user_id, after,
                               "left" if isinstance(event, MemberLeft) else "tier")
        elif isinstance(event, LiveAttended) and event.change is AttendanceChange.LEFT:
            await self.live_lessons(conn, event, after)
        if after.to_users or after.channel:
            self._after[item.event_id] = after

    async def after_commit(self, batch: list[Delivered]) -> None:
        for item in batch:
            after = self._after.pop(item.event_id, None)
            if after is not None:
                await self.courses.flush(after)

    async def recheck(self, conn: asyncpg.Connection, community_id: int, user_id: int,
                      after: After, reason: str) -> None:
        """Pause or resume each of the member's running enrolments in the community
        by whether its access rule still holds."""
        rows = await conn.fetch(
            "SELECT e.* FROM enrolments e WHERE e.community_id = $1 AND e.user_id = $2"
            " AND e.state IN ('active', 'paused') FOR UPDATE", community_id, user_id)
        if not rows:
            return
        facts = await store.member_facts(conn, community_id, user_id)
        for enrol in rows:
            course_row = store.must(await conn.fetchrow(
                "SELECT * FROM courses WHERE id = $1", enrol["course_id"]))
            holds = rules.keeps_access(AccessKind(course_row["access_kind"]),
                                       course_row["access_value"], facts)
            state = EnrolmentState(enrol["state"])
            if state is EnrolmentState.ACTIVE and not holds:
                await self.courses.move(conn, course_row, enrol, user_id,
                                        Trigger.ACCESS_LOST,
                                        "left" if not facts.member else reason, after)
            elif state is EnrolmentState.PAUSED and holds and enrol["reason"] in RESUMABLE:
                await self.courses.move(conn, course_row, enrol, user_id,
                                        Trigger.ACCESS_REGAINED, "access regained", after)

    async def live_lessons(self, conn: asyncpg.Connection, event: LiveAttended,
                           after: After) -> None:
        rows = await conn.fetch(
            "SELECT l.id AS lesson_id, l.live_min_percent, e.id AS enrolment_id"
            " FROM course_lessons l JOIN courses c ON c.id = l.course_id"
            " JOIN enrolments e ON e.course_id = c.id AND e.user_id = $2"
            " WHERE l.kind = 'live_session' AND l.live_session_id = $1"
            " AND c.community_id = $3 AND e.state = 'active'",
            event.live_session_id, event.user_id, event.community_id)
        if not rows:
            return
        share = await attended_percent(conn, event.live_session_id, event.user_id)
        for r in rows:
            if share < r["live_min_percent"]:
                continue
            enrol = store.must(await conn.fetchrow(
                "SELECT * FROM enrolments WHERE id = $1 FOR UPDATE", r["enrolment_id"]))
            course_row = store.must(await conn.fetchrow(
                "SELECT * FROM courses WHERE id = $1", enrol["course_id"]))
            _, _, _, computed = await self.courses.outline(conn, course_row, event.user_id)
            if computed.states.get(r["lesson_id"]) in (LessonState.LOCKED, *rules.DONE):
                continue
            await self.courses.lesson_done(conn, course_row, enrol, r["lesson_id"],
                                           LessonState.COMPLETED, after)
