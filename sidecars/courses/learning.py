"""Learning: reading a lesson, completing it, progress heartbeats, quizzes (graded on
the server) and assignments (graded by staff)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from typing import Any

import asyncpg

from protocol.codes import ErrorCode
from protocol.domain_events import StatementResult
from protocol.sidecar import AssignmentGraded, EnrolmentState, QuizGraded
from sidecars.api import Host, SidecarError
from sidecars.courses import rules, store
from sidecars.courses.progress import ProgressWriter
from sidecars.courses.rules import LessonState
from sidecars.courses.service import After, CourseService, now_ms
from sidecars.courses.wire import (
    AssignmentSettings,
    AttemptResult,
    AttemptsReply,
    AttemptStarted,
    AttemptSummary,
    GradeSubmission,
    LessonReply,
    LessonStateReply,
    ProgressBody,
    QuestionResult,
    QuestionView,
    QuizSettings,
    Submission,
    SubmissionsReply,
    SubmitAssignment,
    SubmitAttempt,
)

GRACE_S = 5
"""A quiz submitted up to this long after its deadline is graded normally (network);
later it is recorded as late: score 0, failed, the attempt used."""
SELF_COMPLETED = frozenset({"video", "text", "audio", "file"})


class Learning:
    def __init__(self, host: Host, courses: CourseService, writer: ProgressWriter,
                 rng: random.Random | None = None) -> None:
        self.host = host
        self.courses = courses
        self.writer = writer
        self.rng = rng or random.SystemRandom()

    async def _open_lesson(self, conn: asyncpg.Connection, community_id: int,
                           course_id: int, lesson_id: int, user_id: int, *,
                           staff: bool, for_update: bool = False,
                           ) -> tuple[asyncpg.Record, asyncpg.Record, asyncpg.Record | None,
                                      LessonState]:
        """(course, lesson, enrolment, state) for a learner who may open the lesson:
        ``not_found`` for an unknown lesson, ``forbidden`` while it is locked (not
        enrolled and not a preview, paused, or not yet dripped)."""
        course_row = await self.courses.visible_course(conn, community_id, course_id, staff)
        lesson = await store.lesson(conn, course_id, lesson_id)
        if lesson is None:
            raise SidecarError(ErrorCode.NOT_FOUND, "unknown lesson")
        _, enrol, _, computed = await self.courses.outline(conn, course_row, user_id)
        if for_update and enrol is not None:
            enrol = await store.enrolment(conn, course_id, user_id, for_update=True)
        state = computed.states.get(lesson_id, LessonState.LOCKED)
        if state is LessonState.LOCKED and not staff:
            raise SidecarError(ErrorCode.FORBIDDEN, "this lesson is locked for you")
        return course_row, lesson, enrol, state

    async def _learner(self, conn: asyncpg.Connection, community_id: int, course_id: int,
                       lesson_id: int, user_id: int,
                       ) -> tuple[asyncpg.Record, asyncpg.Record, asyncpg.Record]:
        """As :meth:`_open_lesson`, for actions that need an enrolment opening content
        (active or completed): staff act as learners here too."""
        member = await self.courses.member(community_id, user_id)
        course_row, lesson, enrol, state = await self._open_lesson(
            conn, community_id, course_id, lesson_id, user_id,
            staff=self.courses.is_staff(member), for_update=True)
        if enrol is None or not rules.opens_content(EnrolmentState(enrol["state"])):
            raise SidecarError(ErrorCode.FORBIDDEN, "enrol in the course first")
        if state is LessonState.LOCKED:
            raise SidecarError(ErrorCode.FORBIDDEN, "this lesson is locked for you")
        return course_row, lesson, enrol

    # ------------------------------------------------------------------------ reading

    async def lesson(self, community_id: int, course_id: int, lesson_id: int,
                     user_id: int) -> LessonReply:
        member = await self.courses.member(community_id, user_id)
        staff = self.courses.is_staff(member)
        async with self.host.connection() as conn:
            _, lesson, _, state = await self._open_lesson(
                conn, community_id, course_id, lesson_id, user_id, staff=staff)
            questions = [store.question_of(q) for q in await store.questions(conn, lesson_id)]
        return LessonReply(lesson=store.lesson_of(lesson, len(questions)), state=state,
                           questions=questions if staff else None)

    # --------------------------------------------------------------------- completing

    async def complete(self, community_id: int, course_id: int, lesson_id: int,
                       user_id: int) -> LessonStateReply:
        """Mark a video, text, audio or file lesson done (a video only once the
        course's ``min_watch_percent`` of it was watched), or a live-session lesson
        once its attendance report shows ``live_min_percent`` of the session attended.
        Quizzes complete by passing, assignments by a passing grade."""
        await self.writer.flush_now()  # the learner's last heartbeats count
        after = After()
        async with self.host.transaction("courses.complete") as conn:
            course_row, lesson, enrol = await self._learner(conn, community_id, course_id,
                                                            lesson_id, user_id)
            kind = lesson["kind"]
            so_far = await conn.fetchrow(
                "SELECT watched_s, time_spent_s FROM lesson_progress WHERE enrolment_id = $1"
                " AND lesson_id = $2", enrol["id"], lesson_id)
            watched, spent = (so_far["watched_s"], so_far["time_spent_s"]) if so_far else (0, 0)
            if kind == "video" and course_row["min_watch_percent"] and lesson["duration_s"]:
                share = watched * 100 // lesson["duration_s"]
                if share < course_row["min_watch_percent"]:
                    raise SidecarError(ErrorCode.CONFLICT,
                                       f"watched {share}% of "
                                       f"{course_row['min_watch_percent']}% required")
            elif kind == "live_session":
                share = await attended_percent(conn, lesson["live_session_id"], user_id)
                if share < lesson["live_min_percent"]:
                    raise SidecarError(ErrorCode.CONFLICT,
                                       f"attended {share}% of the live session; "
                                       f"{lesson['live_min_percent']}% is needed")
            elif kind not in SELF_COMPLETED:
                raise SidecarError(ErrorCode.CONFLICT,
                                   f"a {kind} lesson completes by being "
                                   + ("passed" if kind == "quiz" else "graded"))
            await self.courses.statement(conn, course_row, user_id, "completed", "lesson",
                                         lesson_id, StatementResult(completion=True,
                                                                    duration_s=spent))
            computed, enrol, serial = await self.courses.lesson_done(
                conn, course_row, enrol, lesson_id, LessonState.COMPLETED, after)
        await self.courses.flush(after)
        return LessonStateReply(lesson_id=lesson_id, state=LessonState.COMPLETED,
                                progress_percent=computed.progress_percent,
                                course_completed=enrol["state"] == "completed",
                                certificate_serial=serial)

    async def heartbeat(self, community_id: int, course_id: int, user_id: int,
                        body: ProgressBody) -> int:
        """Queue the beats for the batch writer and wait until they are committed
        (nothing acknowledged is lost). Every lesson must be open to the learner."""
        async def load() -> tuple[asyncpg.Record | None, rules.Computed]:
            async with self.host.connection() as conn:
                course_row = await self.courses.visible_course(conn, community_id,
                                                               course_id, False)
                _, enrol, _, computed = await self.courses.outline(conn, course_row,
                                                                   user_id)
                return enrol, computed

        # the membership check beside the reads: a beat costs two round trips
        _, (enrol, computed) = await asyncio.gather(
            self.courses.member(community_id, user_id), load())
        if enrol is None or not rules.opens_content(EnrolmentState(enrol["state"])):
            raise SidecarError(ErrorCode.FORBIDDEN, "enrol in the course first")
        for item in body.items:
            if computed.states.get(item.lesson_id, LessonState.LOCKED) is LessonState.LOCKED:
                raise SidecarError(ErrorCode.FORBIDDEN,
                                   f"lesson {item.lesson_id} is not open to you")
        await self.writer.write(enrol["id"], body.items)
        return len(body.items)

    # ------------------------------------------------------------------------ quizzes

    async def start_attempt(self, community_id: int, course_id: int, lesson_id: int,
                            user_id: int) -> AttemptStarted:
        """Draw the attempt's questions (pool, shuffles) and store what was shown;
        the reply carries prompts and choices only. ``limit_exceeded`` past the
        attempt limit; one open attempt at a time (a new one abandons it)."""
        async with self.host.transaction("courses.attempt") as conn:
            _, lesson, enrol = await self._learner(conn, community_id, course_id, lesson_id,
                                                   user_id)
            settings = _quiz(lesson)
            used = await conn.fetchval(
                "SELECT count(*) FROM quiz_attempts WHERE lesson_id = $1"
                " AND enrolment_id = $2", lesson_id, enrol["id"])
            if settings.max_attempts is not None and used >= settings.max_attempts:
                raise SidecarError(ErrorCode.LIMIT_EXCEEDED,
                                   f"all {settings.max_attempts} attempts are used")
            rows = await store.questions(conn, lesson_id)
            if not rows:
                raise SidecarError(ErrorCode.CONFLICT, "this quiz has no questions yet")
            questions = [store.question_rule(r) for r in rows]
            ids, orders = rules.draw(questions, pool_size=settings.pool_size,
                                     shuffle_questions=settings.shuffle_questions,
                                     shuffle_answers=settings.shuffle_answers, rng=self.rng)
            row = store.must(await conn.fetchrow(
                "INSERT INTO quiz_attempts (lesson_id, enrolment_id, user_id, deadline,"
                " question_ids, choice_orders) VALUES ($1, $2, $3,"
                " now() + $4::int * interval '1 second', $5, $6::jsonb) RETURNING *",
                lesson_id, enrol["id"], user_id, settings.time_limit_s, ids,
                json.dumps(orders)))
        by_id = {q.id: q for q in questions}
        shown = [QuestionView(id=i, kind=by_id[i].kind, prompt=_prompt(rows, i),
                              choices=[by_id[i].choices[k] for k in order],
                              points=by_id[i].points) for i, order in zip(ids, orders,
                                                                           strict=True)]
        left = None if settings.max_attempts is None else settings.max_attempts - used - 1
        return AttemptStarted(attempt_id=row["id"], started_at=store.ms0(row["started_at"]),
                              deadline=store.ms(row["deadline"]), questions=shown,
                              attempts_left=left)

    async def submit_attempt(self, community_id: int, course_id: int, lesson_id: int,
                             attempt_id: int, user_id: int,
                             body: SubmitAttempt) -> AttemptResult:
        """Grade on the server against what the attempt showed. Late (past deadline +
        :data:`GRACE_S`): score 0, failed. Submitting twice: ``conflict``."""
        after = After()
        async with self.host.transaction("courses.submit") as conn:
            course_row, lesson, enrol = await self._learner(conn, community_id, course_id,
                                                            lesson_id, user_id)
            settings = _quiz(lesson)
            attempt = await conn.fetchrow(
                "SELECT *, now() AS now FROM quiz_attempts WHERE id = $1 AND lesson_id = $2"
                " AND enrolment_id = $3 FOR UPDATE", attempt_id, lesson_id, enrol["id"])
            if attempt is None:
                raise SidecarError(ErrorCode.NOT_FOUND, "unknown attempt")
            if attempt["submitted_at"] is not None:
                raise SidecarError(ErrorCode.CONFLICT, "this attempt was submitted")
            rows = {r["id"]: r for r in await store.questions(conn, lesson_id)}
            ids = [i for i in attempt["question_ids"] if i in rows]
            orders_by = dict(zip(attempt["question_ids"], json.loads(attempt["choice_orders"]),
                                 strict=True))
            questions = [store.question_rule(rows[i]) for i in ids]
            orders = [orders_by[i] for i in ids]
            answers: dict[int, list[int] | str] = {
                a.question_id: (a.text if a.text is not None else list(a.choices))
                for a in body.answers}
            late = attempt["deadline"] is not None and attempt["now"] > (
                attempt["deadline"] + dt.timedelta(seconds=GRACE_S))
            score, total, right = rules.grade(questions, orders, answers)
            if late:
                score, right = 0, dict.fromkeys(right, False)
            passed = not late and rules.passes(score, total, settings.pass_percent)
            await conn.execute(
                "UPDATE quiz_attempts SET submitted_at = now(), score = $2, max_score = $3,"
                " passed = $4, late = $5, answers = $6::jsonb WHERE id = $1", attempt_id,
                score, total, passed, late, json.dumps({str(k): v for k, v in answers.items()}))
            used = await conn.fetchval(
                "SELECT count(*) FROM quiz_attempts WHERE lesson_id = $1"
                " AND enrolment_id = $2", lesson_id, enrol["id"])
            await self.courses.statement(
                conn, course_row, user_id, "passed" if passed else "failed", "quiz",
                lesson_id, StatementResult(score=score, max_score=total, success=passed,
                                           completion=passed,
                                           response="late" if late else None))
            await self.courses.lesson_done(conn, course_row, enrol, lesson_id,
                                           LessonState.PASSED if passed else LessonState.FAILED,
                                           after)
            submitted = await conn.fetchval("SELECT now()")
        left = None if settings.max_attempts is None else max(0, settings.max_attempts - used)
        after.to_users.insert(0, (user_id, QuizGraded(
            community_id=community_id, course_id=course_id, lesson_id=lesson_id,
            attempt_id=attempt_id, score=score, max_score=total, passed=passed,
            attempts_left=left, at=store.ms0(submitted))))
        await self.courses.flush(after)
        results = []
        for q, order in zip(questions, orders, strict=True):
            shown_correct = sorted(order.index(int(c)) for c in q.correct) \
                if q.kind is not rules.QuestionKind.SHORT else []
            accepted = [str(c) for c in q.correct] if q.kind is rules.QuestionKind.SHORT else []
            results.append(QuestionResult(question_id=q.id, correct=right[q.id],
                                          points=q.points, correct_choices=shown_correct,
                                          accepted_answers=accepted))
        return AttemptResult(attempt_id=attempt_id, score=score, max_score=total,
                             passed=passed, late=late, submitted_at=store.ms0(submitted),
                             results=results, attempts_left=left)

    async def attempts(self, community_id: int, course_id: int, lesson_id: int,
                       user_id: int) -> AttemptsReply:
        """Your attempt history of a quiz."""
        member = await self.courses.member(community_id, user_id)
        async with self.host.connection() as conn:
            await self.courses.visible_course(conn, community_id, course_id,
                                              self.courses.is_staff(member))
            rows = await conn.fetch(
                "SELECT a.* FROM quiz_attempts a JOIN enrolments e ON e.id = a.enrolment_id"
                " WHERE a.lesson_id = $1 AND e.course_id = $2 AND e.user_id = $3"
                " ORDER BY a.id", lesson_id, course_id, user_id)
        return AttemptsReply(attempts=[AttemptSummary(
            attempt_id=r["id"], started_at=store.ms0(r["started_at"]),
            submitted_at=store.ms(r["submitted_at"]), score=r["score"],
            max_score=r["max_score"], passed=r["passed"], late=r["late"]) for r in rows])

    # -------------------------------------------------------------------- assignments

    async def submit_assignment(self, community_id: int, course_id: int, lesson_id: int,
                                user_id: int, body: SubmitAssignment) -> Submission:
        async with self.host.transaction("courses.assignment") as conn:
            course_row, lesson, enrol = await self._learner(conn, community_id, course_id,
                                                            lesson_id, user_id)
            if lesson["kind"] != "assignment":
                raise SidecarError(ErrorCode.INVALID_ARGUMENT, "not an assignment lesson")
            row = store.must(await conn.fetchrow(
                "INSERT INTO assignment_submissions (lesson_id, enrolment_id, user_id, kind,"
                " content) VALUES ($1, $2, $3, $4, $5) RETURNING *", lesson_id, enrol["id"],
                user_id, body.kind, body.content))
            await store.set_lesson_state(conn, enrol["id"], lesson_id, LessonState.IN_PROGRESS)
            await self.courses.statement(conn, course_row, user_id, "submitted", "assignment",
                                         lesson_id)
        return store.submission_of(row, _max_points(lesson))

    async def submissions(self, community_id: int, course_id: int, lesson_id: int,
                          user_id: int) -> SubmissionsReply:
        """Staff: every submission of the lesson; a learner: their own."""
        member = await self.courses.member(community_id, user_id)
        staff = self.courses.is_staff(member)
        async with self.host.connection() as conn:
            await self.courses.visible_course(conn, community_id, course_id, staff)
            lesson = await store.lesson(conn, course_id, lesson_id)
            if lesson is None:
                raise SidecarError(ErrorCode.NOT_FOUND, "unknown lesson")
            rows = await conn.fetch(
                "SELECT * FROM assignment_submissions WHERE lesson_id = $1"
                " AND ($2 OR user_id = $3) ORDER BY id LIMIT 1000", lesson_id, staff, user_id)
        return SubmissionsReply(submissions=[store.submission_of(r, _max_points(lesson))
                                             for r in rows])

    async def grade(self, community_id: int, course_id: int, submission_id: int,
                    user_id: int, body: GradeSubmission) -> Submission:
        """Staff grade a submission; a pass completes the lesson (and perhaps the
        course); the learner gets ``assignment_graded`` with the feedback."""
        await self.courses.staff(community_id, user_id)
        after = After()
        async with self.host.transaction("courses.grade") as conn:
            course_row = await self.courses.visible_course(conn, community_id, course_id,
                                                           True)
            row = await conn.fetchrow(
                "SELECT s.* FROM assignment_submissions s JOIN course_lessons l"
                " ON l.id = s.lesson_id WHERE s.id = $1 AND l.course_id = $2 FOR UPDATE",
                submission_id, course_id)
            if row is None:
                raise SidecarError(ErrorCode.NOT_FOUND, "unknown submission")
            lesson = await store.lesson(conn, course_id, row["lesson_id"])
            assert lesson is not None
            settings = _assignment(lesson)
            top = _max_points(lesson)
            if top and body.score > top:
                raise SidecarError(ErrorCode.INVALID_ARGUMENT, f"the rubric totals {top}")
            passed = body.passed if body.passed is not None else (
                body.score >= settings.pass_points)
            row = store.must(await conn.fetchrow(
                "UPDATE assignment_submissions SET score = $2, passed = $3, feedback = $4,"
                " graded_by = $5, graded_at = now() WHERE id = $1 RETURNING *",
                submission_id, body.score, passed, body.feedback, user_id))
            enrol = await conn.fetchrow("SELECT * FROM enrolments WHERE id = $1 FOR UPDATE",
                                        row["enrolment_id"])
            await self.courses.statement(
                conn, course_row, row["user_id"], "scored", "assignment", lesson["id"],
                StatementResult(score=body.score, max_score=top, success=passed,
                                completion=passed))
            if passed and enrol is not None and rules.opens_content(
                    EnrolmentState(enrol["state"])):
                await self.courses.lesson_done(conn, course_row, enrol, lesson["id"],
                                               LessonState.PASSED, after)
        after.to_users.insert(0, (row["user_id"], AssignmentGraded(
            community_id=community_id, course_id=course_id, lesson_id=lesson["id"],
            submission_id=submission_id, score=body.score, max_score=top, passed=passed,
            feedback=body.feedback, at=now_ms())))
        await self.courses.flush(after)
        return store.submission_of(row, top)


def _quiz(lesson: asyncpg.Record) -> QuizSettings:
    if lesson["kind"] != "quiz":
        raise SidecarError(ErrorCode.INVALID_ARGUMENT, "not a quiz lesson")
    return store.lesson_of(lesson).quiz or QuizSettings()


def _assignment(lesson: asyncpg.Record) -> AssignmentSettings:
    return store.lesson_of(lesson).assignment or AssignmentSettings()


def _max_points(lesson: asyncpg.Record) -> int:
    return sum(item.points for item in _assignment(lesson).rubric)


def _prompt(rows: list[Any], question_id: int) -> str:
    return next(str(r["prompt"]) for r in rows if r["id"] == question_id)


async def attended_percent(conn: asyncpg.Connection, session_id: int | None,
                           user_id: int) -> int:
    """The share of a live session's live window (started to ended, or now while live)
    the member attended, from the core's attendance report (``live_attendance``,
    read only); overlapping stretches count once."""
    if session_id is None:
        return 0
    value = await conn.fetchval(
        """
        WITH s AS (SELECT started_at, coalesce(ended_at, now()) AS ended_at
                   FROM live_sessions WHERE id = $1 AND started_at IS NOT NULL),
        a AS (SELECT greatest(a.joined_at, s.started_at) AS lo,
                     least(coalesce(a.left_at, now()), s.ended_at) AS hi
              FROM live_attendance a, s WHERE a.session_id = $1 AND a.user_id = $2),
        m AS (SELECT lo, hi, max(hi) OVER (ORDER BY lo ROWS BETWEEN UNBOUNDED PRECEDING
                                           AND 1 PRECEDING) AS prev_hi FROM a WHERE hi > lo)
        SELECT CASE WHEN (SELECT ended_at > started_at FROM s) THEN
          floor(100 * coalesce(sum(extract(epoch FROM hi - greatest(lo, coalesce(prev_hi, lo))))
                FILTER (WHERE hi > coalesce(prev_hi, lo)), 0)
                / (SELECT extract(epoch FROM ended_at - started_at) FROM s))
          ELSE 0 END FROM m
        """, session_id, user_id)
    return int(value or 0)
