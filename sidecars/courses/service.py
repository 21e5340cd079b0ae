"""The courses sidecar's core rules with I/O: who sees what, the enrolment state machine
applied to rows, learner statements, completion, and the work done after a commit
(gateway events, discussion-channel membership). Authoring lives in ``authoring.py``,
learning (progress, quizzes, assignments) in ``learning.py``."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import asyncpg
import msgspec

from protocol.codes import ErrorCode
from protocol.domain_events import LearnerStatement, StatementResult
from protocol.sidecar import (
    CourseChange,
    CourseChanged,
    CourseCompleted,
    EnrolmentState,
    EnrolmentUpdated,
    LessonUnlocked,
    SidecarEvent,
    UnlockReason,
)
from sidecars.api import Host, MemberInfo, Permission, SidecarError
from sidecars.courses import certificates, rules, store
from sidecars.courses.rules import AccessKind, Trigger
from sidecars.courses.wire import (
    CourseReply,
    Enrolment,
    LessonOutline,
    ModuleOutline,
)

log = logging.getLogger(__name__)
E = EnrolmentState

VERB_OF_STATE = {E.PENDING_PAYMENT: "registered", E.ACTIVE: "enrolled", E.PAUSED: "suspended",
                 E.COMPLETED: "completed", E.EXPIRED: "expired", E.REVOKED: "revoked"}
"""The statement written when an enrolment enters each state (``resumed`` for paused ->
active)."""


Structure = tuple[list[asyncpg.Record], list[asyncpg.Record]]
"""A course's module rows and lesson rows, in course order."""
STRUCTURE_CACHE = 256
"""Courses whose structure a process keeps (oldest dropped first)."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class After:
    """What a change does once its transaction committed: events to learners and
    staff, discussion-channel membership. Collected inside, run by :meth:`flush`."""

    to_users: list[tuple[int, SidecarEvent]] = field(default_factory=list)
    channel: list[tuple[int, int, bool]] = field(default_factory=list)
    """(channel id, user id, listed)."""
    to_staff: list[tuple[int, SidecarEvent]] = field(default_factory=list)
    """(community id, event) for the members with MANAGE_COURSES."""


@dataclass(frozen=True)
class Moved:
    row: asyncpg.Record
    before: EnrolmentState | None


class CourseService:
    """Shared by the authoring, learning and HTTP modules."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._structures: dict[tuple[int, object], Structure] = {}

    # ----------------------------------------------------------------- who may do what

    async def member(self, community_id: int, user_id: int) -> MemberInfo:
        """The caller as a member; not a member: ``not_found`` (the community and its
        courses are not disclosed)."""
        member = await self.host.member(community_id, user_id)
        if member is None:
            raise SidecarError(ErrorCode.NOT_FOUND, "unknown community")
        return member

    @staticmethod
    def is_staff(member: MemberInfo) -> bool:
        return member.has(Permission.MANAGE_COURSES)

    async def staff(self, community_id: int, user_id: int) -> MemberInfo:
        member = await self.member(community_id, user_id)
        if not self.is_staff(member):
            raise SidecarError(ErrorCode.FORBIDDEN, "this needs MANAGE_COURSES")
        return member

    async def visible_course(self, conn: asyncpg.Connection, community_id: int,
                             course_id: int, staff: bool,
                             for_update: bool = False) -> asyncpg.Record:
        """A course the caller may see: staff every one, others published and archived
        ones (a draft is ``not_found``)."""
        row = await store.course(conn, community_id, course_id, for_update)
        if row is None or (row["status"] == "draft" and not staff):
            raise SidecarError(ErrorCode.NOT_FOUND, "unknown course")
        return row

    # ----------------------------------------------------------------------- outline

    async def structure(self, conn: asyncpg.Connection,
                        course_row: asyncpg.Record) -> Structure:
        """A course's modules and lessons (outline columns), cached per process by the
        course's ``updated_at`` (every authoring change bumps it), so reading an
        outline costs no structure query while the course is unchanged."""
        key = (course_row["id"], course_row["updated_at"])
        found = self._structures.get(key)
        if found is None:
            found = (await store.modules(conn, course_row["id"]),
                     await store.lessons(conn, course_row["id"]))
            if len(self._structures) >= STRUCTURE_CACHE:
                self._structures.pop(next(iter(self._structures)))
            self._structures[key] = found
        return found

    async def outline(self, conn: asyncpg.Connection, course_row: asyncpg.Record,
                      user_id: int) -> tuple[rules.Outline, asyncpg.Record | None,
                                             list[store.Progress], rules.Computed]:
        module_rows, lesson_rows = await self.structure(conn, course_row)
        outline = store.outline_of(module_rows, lesson_rows, course_row["lessons_in_order"])
        enrol, progress = await store.enrolment_with_progress(conn, course_row["id"], user_id)
        computed = self.compute(course_row, outline, enrol, store.states_of(progress))
        return outline, enrol, progress, computed

    @staticmethod
    def compute(course_row: asyncpg.Record, outline: rules.Outline,
                enrol: asyncpg.Record | None,
                progress: dict[int, rules.LessonState]) -> rules.Computed:
        return rules.compute(
            outline, enrolment=E(enrol["state"]) if enrol is not None else None,
            activated_ms=store.ms(enrol["activated_at"]) if enrol is not None else None,
            released=bool(enrol is not None and enrol["released"]), progress=progress,
            now_ms=now_ms(), completion_percent=course_row["completion_percent"])

    async def course_reply(self, community_id: int, course_id: int,
                           user_id: int) -> CourseReply:
        """The course with the caller's lock state of every lesson (staff see every
        lesson available: they author them)."""
        async def load() -> tuple[asyncpg.Record | None, asyncpg.Record | None,
                                  list[store.Progress], Structure | None]:
            async with self.host.connection() as conn:
                row = await store.course(conn, community_id, course_id)
                if row is None:
                    return None, None, [], None
                enrol, progress = await store.enrolment_with_progress(conn, course_id,
                                                                      user_id)
                return row, enrol, progress, await self.structure(conn, row)

        # the membership check and the reads run side by side (two round trips, not 4+)
        member, (row, enrol, progress, structure) = await asyncio.gather(
            self.member(community_id, user_id), load())
        staff = self.is_staff(member)
        if row is None or structure is None or (row["status"] == "draft" and not staff):
            raise SidecarError(ErrorCode.NOT_FOUND, "unknown course")
        module_rows, lesson_rows = structure
        outline = store.outline_of(module_rows, lesson_rows, row["lessons_in_order"])
        computed = self.compute(row, outline, enrol, store.states_of(progress))
        by_lesson = {p.lesson_id: p for p in progress}
        activated = store.ms(enrol["activated_at"]) if enrol is not None else None
        modules: list[ModuleOutline] = []
        lessons_of: dict[int, list[LessonOutline]] = {m["id"]: [] for m in module_rows}
        for r in lesson_rows:
            p = by_lesson.get(r["id"])
            state = computed.states[r["id"]]
            if staff and state is rules.LessonState.LOCKED:
                state = rules.LessonState.AVAILABLE
            watched = 0
            if p is not None and r["duration_s"] > 0:
                watched = min(100, p.watched_s * 100 // r["duration_s"])
            lessons_of[r["module_id"]].append(LessonOutline(
                id=r["id"], title=r["title"], kind=r["kind"], required=r["required"],
                preview=r["preview"], duration_s=r["duration_s"], state=state,
                watched_percent=watched, time_spent_s=p.time_spent_s if p else 0))
        for m, rule in zip(module_rows, outline.modules, strict=True):
            opens = rules.module_unlock_ms(rule, activated) if activated is not None else None
            modules.append(ModuleOutline(
                id=m["id"], title=m["title"], drip=rule.drip,
                open=staff or m["id"] in computed.open_modules, opens_at=opens,
                lessons=lessons_of[m["id"]]))
        return CourseReply(course=store.course_of(row),
                           enrolment=store.enrolment_of(enrol) if enrol is not None else None,
                           modules=modules, progress_percent=computed.progress_percent)

    # -------------------------------------------------------------------- statements

    async def statement(self, conn: asyncpg.Connection, course_row: asyncpg.Record,
                        user_id: int, verb: str, object_type: str, object_id: int | str,
                        result: StatementResult | None = None) -> None:
        """Record a learner action for the xAPI export and, in the same transaction,
        as a ``learner_statement`` domain event for analytics and gamification."""
        encoded = msgspec.json.encode(result).decode() if result is not None else None
        at = await conn.fetchval(
            "INSERT INTO course_statements (course_id, community_id, user_id, verb,"
            " object_type, object_id, result) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)"
            " RETURNING at", course_row["id"], course_row["community_id"], user_id, verb,
            object_type, str(object_id), encoded)
        await self.host.append_events(conn, [LearnerStatement(
            community_id=course_row["community_id"], user_id=user_id, verb=verb,
            object_type=object_type, object_id=str(object_id), course_id=course_row["id"],
            result=result, at=store.ms0(at))])

    # -------------------------------------------------------------------- enrolments

    async def move(self, conn: asyncpg.Connection, course_row: asyncpg.Record,
                   enrol: asyncpg.Record | None, user_id: int, trigger: Trigger,
                   reason: str | None, after: After) -> Moved:
        """Apply ``trigger`` to the enrolment (made when None) under the rules of
        :data:`rules.TRANSITIONS`; ``conflict`` when it does not apply. Activation
        stamps the time drip counts from and schedules timed modules; every move
        writes its statement and queues the learner's event and the discussion
        channel's change."""
        before = E(enrol["state"]) if enrol is not None else None
        new = rules.transition(before, trigger)
        if new is None:
            state = before.value if before is not None else "not enrolled"
            raise SidecarError(ErrorCode.CONFLICT,
                               f"an enrolment that is {state} cannot take {trigger.value}")
        fresh = new is E.ACTIVE and before in (None, E.PENDING_PAYMENT, E.EXPIRED, E.REVOKED)
        if enrol is None:
            enrol = await conn.fetchrow(
                "INSERT INTO enrolments (course_id, community_id, user_id, state, reason)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING *", course_row["id"],
                course_row["community_id"], user_id, new.value, reason)
        assert enrol is not None
        enrol = await conn.fetchrow(
            "UPDATE enrolments SET state = $2, reason = $3, updated_at = now(),"
            " activated_at = CASE WHEN $4 THEN now() ELSE activated_at END,"
            " expires_at = CASE WHEN $4 AND $5::int IS NOT NULL"
            "   THEN now() + $5::int * interval '1 day'"
            "   WHEN $4 THEN NULL ELSE expires_at END,"
            " completed_at = CASE WHEN $2 = 'completed' THEN now() ELSE completed_at END"
            " WHERE id = $1 RETURNING *", enrol["id"], new.value, reason, fresh,
            course_row["access_days"])
        assert enrol is not None
        if fresh:
            await schedule_drip(conn, course_row["id"], enrol["id"])
        verb = "resumed" if before is E.PAUSED and new is E.ACTIVE else VERB_OF_STATE[new]
        await self.statement(conn, course_row, user_id, verb, "course", course_row["id"],
                             StatementResult(response=reason) if reason else None)
        after.to_users.append((user_id, EnrolmentUpdated(
            community_id=course_row["community_id"], course_id=course_row["id"],
            enrolment_id=enrol["id"], state=new, reason=reason,
            progress_percent=enrol["progress_percent"], at=store.ms0(enrol["updated_at"]))))
        channel = course_row["discussion_channel_id"]
        if channel is not None and rules.opens_content(before) != rules.opens_content(new):
            after.channel.append((channel, user_id, rules.opens_content(new)))
        return Moved(enrol, before)

    async def prerequisites_missing(self, conn: asyncpg.Connection,
                                    course_row: asyncpg.Record, user_id: int) -> list[int]:
        """Prerequisite courses the member has not completed."""
        wanted = list(course_row["prerequisite_ids"])
        if not wanted:
            return []
        done = {r["course_id"] for r in await conn.fetch(
            "SELECT course_id FROM enrolments WHERE user_id = $1 AND course_id = ANY($2)"
            " AND state = 'completed'", user_id, wanted)}
        return [c for c in wanted if c not in done]

    async def enrol(self, community_id: int, course_id: int, user_id: int) -> Enrolment:
        """Enrol yourself: the course must be published, its prerequisites completed
        (``prerequisite_not_met``) and its access rule must let you in (``forbidden``
        naming the rule); a purchase course waits in ``pending_payment``. Enrolling
        again is answered with the enrolment as it is."""
        member = await self.member(community_id, user_id)
        after = After()
        async with self.host.transaction("courses.enrol") as conn:
            row = await self.visible_course(conn, community_id, course_id,
                                            self.is_staff(member))
            enrol = await store.enrolment(conn, course_id, user_id, for_update=True)
            state = E(enrol["state"]) if enrol is not None else None
            if enrol is not None and state not in (E.EXPIRED, E.REVOKED):
                return store.enrolment_of(enrol)
            if state is E.REVOKED:
                raise SidecarError(ErrorCode.FORBIDDEN,
                                   "your enrolment was revoked; staff may grant it again")
            if row["status"] != "published":
                raise SidecarError(ErrorCode.CONFLICT, f"the course is {row['status']}")
            missing = await self.prerequisites_missing(conn, row, user_id)
            if missing:
                raise SidecarError(ErrorCode.PREREQUISITE_NOT_MET,
                                   "complete the prerequisite course(s) first: "
                                   + ", ".join(str(c) for c in missing))
            kind = AccessKind(row["access_kind"])
            if kind is AccessKind.PURCHASE:
                trigger = Trigger.ENROL_PURCHASE
            else:
                facts = await store.member_facts(conn, community_id, user_id)
                if not rules.access_holds(kind, row["access_value"], facts):
                    raise SidecarError(ErrorCode.FORBIDDEN, _refusal(kind, row["access_value"]))
                trigger = Trigger.ENROL_FREE
            moved = await self.move(conn, row, enrol, user_id, trigger, None, after)
        await self.flush(after)
        return store.enrolment_of(moved.row)

    async def flush(self, after: After) -> None:
        """Publish and sync after the commit. Failures are logged, not raised: the
        change is committed and the learner's next read shows it."""
        try:
            for user_id, event in after.to_users:
                await self.host.publish_to_user(user_id, event)
            for channel_id, user_id, listed in after.channel:
                await self.host.set_channel_member(channel_id, user_id, listed)
            for community_id, event in after.to_staff:
                staff = await self.host.members_with(community_id, Permission.MANAGE_COURSES)
                await asyncio.gather(*(self.host.publish_to_user(u, event) for u in staff))
        except Exception:
            log.exception("courses: publishing after a commit failed")

    def course_changed(self, row: asyncpg.Record, change: CourseChange, by: int | None,
                       after: After) -> None:
        after.to_staff.append((row["community_id"], CourseChanged(
            community_id=row["community_id"], course_id=row["id"], change=change,
            status=row["status"], title=row["title"], by=by, at=now_ms())))

    # -------------------------------------------------------------------- completion

    async def lesson_done(self, conn: asyncpg.Connection, course_row: asyncpg.Record,
                          enrol: asyncpg.Record, lesson_id: int, state: rules.LessonState,
                          after: After) -> tuple[rules.Computed, asyncpg.Record,
                                                 str | None]:
        """Record a lesson's new state, then what follows from it: modules opened by
        ``after_previous`` drip (``lesson_unlocked``), the progress percentage, and the
        course's completion (``course_completed``, a certificate when the course
        issues one). Returns the new computation, the enrolment and the serial."""
        module_rows = await store.modules(conn, course_row["id"])
        lesson_rows = await store.lessons(conn, course_row["id"])
        outline = store.outline_of(module_rows, lesson_rows, course_row["lessons_in_order"])
        old = store.states_of(await store.progress(conn, enrol["id"]))
        before = self.compute(course_row, outline, enrol, old)
        await store.set_lesson_state(conn, enrol["id"], lesson_id, state)
        new_states = store.states_of(await store.progress(conn, enrol["id"]))
        computed = self.compute(course_row, outline, enrol, new_states)
        enrol = store.must(await conn.fetchrow(
            "UPDATE enrolments SET progress_percent = $2, updated_at = now() WHERE id = $1"
            " RETURNING *", enrol["id"], computed.progress_percent))
        opened = computed.open_modules - before.open_modules
        locked = rules.LessonState.LOCKED
        for module_id in sorted(opened):
            ids = [rule.id for rule in outline.lessons if rule.module_id == module_id]
            after.to_users.append((enrol["user_id"], LessonUnlocked(
                community_id=course_row["community_id"], course_id=course_row["id"],
                module_id=module_id, lesson_ids=ids[:1000],
                reason=UnlockReason.PREVIOUS_COMPLETED, at=now_ms())))
        # lessons in order: the next lessons of modules already open
        unlocked = [rule.id for rule in outline.lessons if rule.module_id not in opened
                    and before.states.get(rule.id) is locked
                    and computed.states.get(rule.id) is not locked]
        if unlocked:
            after.to_users.append((enrol["user_id"], LessonUnlocked(
                community_id=course_row["community_id"], course_id=course_row["id"],
                lesson_ids=unlocked[:1000], reason=UnlockReason.PREREQUISITE,
                at=now_ms())))
        serial = None
        if computed.complete and E(enrol["state"]) is E.ACTIVE:
            moved = await self.move(conn, course_row, enrol, enrol["user_id"],
                                    Trigger.COMPLETE, None, after)
            enrol = moved.row
            if course_row["certificate"]:
                serial = await certificates.issue(conn, course_row, enrol["user_id"])
                await self.statement(conn, course_row, enrol["user_id"], "earned",
                                     "certificate", serial)
            after.to_users.append((enrol["user_id"], CourseCompleted(
                community_id=course_row["community_id"], course_id=course_row["id"],
                certificate_serial=serial, at=now_ms())))
        return computed, enrol, serial

    # ----------------------------------------------------------------- prerequisites

    async def course_prerequisite(self, community_id: int, user_id: int,
                                  ref: str) -> str | None:
        """The ``course`` prerequisite check the core asks (a live session's
        ``prerequisite_course``, a course id): None once the member completed that
        course of the same community; else the reason they see."""
        course_id = int(ref)
        if not 1 <= course_id < 2**53:
            return f"unknown course {ref}"
        async with self.host.connection() as conn:
            row = await store.course(conn, community_id, course_id)
            if row is None:
                return f"the prerequisite course {course_id} does not exist"
            enrol = await store.enrolment(conn, course_id, user_id)
        if enrol is not None and enrol["state"] == E.COMPLETED.value:
            return None
        return f"complete the course \u201c{row['title']}\u201d (id {course_id}) first"


def _refusal(kind: AccessKind, value: int) -> str:
    return {
        AccessKind.TIER: f"this course needs membership tier {value}",
        AccessKind.DAYS_AFTER_JOIN: f"this course opens {value} days after joining",
        AccessKind.LEVEL: f"this course needs level {value}; staff grant it",
        AccessKind.MANUAL: "this course is granted by staff",
    }.get(kind, "you may not enrol in this course")


async def schedule_drip(conn: asyncpg.Connection, course_id: int,
                        enrolment_id: int | None) -> None:
    """(Re)write the drip schedule of timed modules for one enrolment, or for every
    running enrolment of the course (a module added or its drip changed). A time
    already past is marked notified (the module is simply open); a changed time is
    notified again when reached."""
    await conn.execute(
        "INSERT INTO module_unlocks (enrolment_id, module_id, unlock_at, notified_at)"
        " SELECT e.id, m.id, t.at, CASE WHEN t.at <= now() THEN now() END"
        " FROM enrolments e JOIN course_modules m ON m.course_id = e.course_id"
        " CROSS JOIN LATERAL (SELECT CASE m.drip_kind"
        "   WHEN 'after_days' THEN e.activated_at + m.drip_days * interval '1 day'"
        "   ELSE m.drip_at END AS at) t"
        " WHERE e.course_id = $1 AND ($2::bigint IS NULL OR e.id = $2)"
        " AND e.state IN ('active', 'paused') AND e.activated_at IS NOT NULL"
        " AND m.drip_kind IN ('after_days', 'at_date') AND t.at IS NOT NULL"
        " ON CONFLICT (enrolment_id, module_id) DO UPDATE SET unlock_at = EXCLUDED.unlock_at,"
        " notified_at = CASE WHEN module_unlocks.unlock_at = EXCLUDED.unlock_at"
        "   THEN module_unlocks.notified_at ELSE EXCLUDED.notified_at END",
        course_id, enrolment_id)
    await conn.execute(
        "DELETE FROM module_unlocks u USING course_modules m WHERE m.id = u.module_id"
        " AND m.course_id = $1 AND m.drip_kind NOT IN ('after_days', 'at_date')", course_id)
