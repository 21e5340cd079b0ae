"""Authoring (``MANAGE_COURSES``): courses, modules, lessons, quiz questions, the
discussion channel. Every change tells the community's staff (``course_changed``)."""

from __future__ import annotations

from typing import Any

import msgspec

from protocol.codes import ErrorCode
from protocol.sidecar import CourseChange
from sidecars.api import Host, SidecarError
from sidecars.courses import store
from sidecars.courses.rules import LessonState, QuestionKind
from sidecars.courses.service import After, CourseService, schedule_drip
from sidecars.courses.wire import (
    Course,
    CourseCreate,
    CoursePatch,
    LessonCreate,
    LessonPatch,
    LessonReply,
    Module,
    ModuleCreate,
    ModulePatch,
    QuestionAuthored,
    QuestionCreate,
)

MODULE_COLUMNS = {"title", "position", "drip_kind", "drip_days", "drip_at"}
LESSON_COLUMNS = {"title", "position", "required", "preview", "body", "media_url",
                  "duration_s", "live_session_id", "live_min_percent", "quiz", "assignment"}
MAX_LESSONS = 1000
MAX_QUESTIONS = 200


def _course_fields(body: CourseCreate | CoursePatch) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in ("title", "description", "cover_url", "prerequisite_ids",
                 "completion_percent", "certificate", "lessons_in_order",
                 "min_watch_percent"):
        value = getattr(body, name)
        if value is not None:
            fields[name] = value
    if isinstance(body, CoursePatch) and body.status is not None:
        fields["status"] = body.status
    if isinstance(body, CourseCreate):
        fields["access_days"] = body.access_days
    if body.access is not None:
        fields["access_kind"] = body.access.kind.value
        fields["access_value"] = body.access.value
        fields["price_id"] = body.access.price_id
    return fields


class Authoring:
    def __init__(self, host: Host, courses: CourseService) -> None:
        self.host = host
        self.courses = courses

    async def create_course(self, community_id: int, user_id: int,
                            body: CourseCreate) -> Course:
        await self.courses.staff(community_id, user_id)
        after = After()
        async with self.host.transaction("courses.create") as conn:
            await self._check_prerequisites(conn, community_id, body.prerequisite_ids, None)
            row = await store.insert_course(conn, community_id, user_id, _course_fields(body))
            self.courses.course_changed(row, CourseChange.CREATED, user_id, after)
        if body.discussion_channel:
            row = await self._make_channel(row["id"], community_id, user_id, row["title"])
        await self.courses.flush(after)
        return store.course_of(row)

    async def _make_channel(self, course_id: int, community_id: int, user_id: int,
                            title: str) -> Any:
        """The discussion channel: private, listing the learners whose enrolment opens
        content (active or completed) at the time; enrolments keep it in sync."""
        async with self.host.connection() as conn:
            learners = [r["user_id"] for r in await conn.fetch(
                "SELECT user_id FROM enrolments WHERE course_id = $1"
                " AND state IN ('active', 'completed')", course_id)]
        channel_id = await self.host.create_private_channel(
            community_id, f"course-{title}"[:100], user_id, learners)
        async with self.host.transaction("courses.channel") as conn:
            return store.must(await store.update_row(
                conn, "courses", course_id, {"discussion_channel_id": channel_id},
                store.COURSE_COLUMNS))

    async def _check_prerequisites(self, conn: Any, community_id: int, ids: list[int],
                                   course_id: int | None) -> None:
        if course_id is not None and course_id in ids:
            raise SidecarError(ErrorCode.INVALID_ARGUMENT, "a course cannot require itself")
        if ids:
            found = await conn.fetchval(
                "SELECT count(*) FROM courses WHERE community_id = $1 AND id = ANY($2)",
                community_id, ids)
            if found != len(set(ids)):
                raise SidecarError(ErrorCode.INVALID_ARGUMENT,
                                   "a prerequisite is not a course of this community")

    async def patch_course(self, community_id: int, course_id: int, user_id: int,
                           body: CoursePatch) -> Course:
        await self.courses.staff(community_id, user_id)
        after = After()
        async with self.host.transaction("courses.patch") as conn:
            row = await self.courses.visible_course(conn, community_id, course_id, True,
                                                    for_update=True)
            if body.prerequisite_ids is not None:
                await self._check_prerequisites(conn, community_id, body.prerequisite_ids,
                                                course_id)
            row = store.must(await store.update_row(conn, "courses", course_id,
                                                    _course_fields(body),
                                                    store.COURSE_COLUMNS))
            self.courses.course_changed(row, CourseChange.UPDATED, user_id, after)
        if body.discussion_channel and row["discussion_channel_id"] is None:
            row = await self._make_channel(course_id, community_id, user_id, row["title"])
        await self.courses.flush(after)
        return store.course_of(row)

    async def delete_course(self, community_id: int, course_id: int, user_id: int) -> Course:
        """Delete a course with everything in it (enrolments, progress, certificates:
        archive it instead to keep them)."""
        await self.courses.staff(community_id, user_id)
        after = After()
        async with self.host.transaction("courses.delete") as conn:
            row = await self.courses.visible_course(conn, community_id, course_id, True,
                                                    for_update=True)
            await conn.execute("DELETE FROM courses WHERE id = $1", course_id)
            self.courses.course_changed(row, CourseChange.DELETED, user_id, after)
        await self.courses.flush(after)
        return store.course_of(row)

    async def add_module(self, community_id: int, course_id: int, user_id: int,
                         body: ModuleCreate) -> Module:
        await self.courses.staff(community_id, user_id)
        after = After()
        async with self.host.transaction("courses.module") as conn:
            course_row = await self.courses.visible_course(conn, community_id, course_id,
                                                           True, for_update=True)
            row = store.must(await conn.fetchrow(
                "INSERT INTO course_modules (course_id, position, title, drip_kind,"
                " drip_days, drip_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                course_id, body.position, body.title, body.drip.value, body.drip_days,
                store.at_ms(body.drip_at)))
            await schedule_drip(conn, course_id, None)
            await store.touch(conn, course_id)
            self.courses.course_changed(course_row, CourseChange.UPDATED, user_id, after)
        await self.courses.flush(after)
        return store.module_of(row)

    async def patch_module(self, community_id: int, course_id: int, module_id: int,
                           user_id: int, body: ModulePatch) -> Module:
        await self.courses.staff(community_id, user_id)
        fields: dict[str, Any] = {k: v for k, v in (
            ("title", body.title), ("position", body.position), ("drip_days", body.drip_days),
        ) if v is not None}
        if body.drip is not None:
            fields["drip_kind"] = body.drip.value
        if body.drip_at is not None:
            fields["drip_at"] = store.at_ms(body.drip_at)
        after = After()
        async with self.host.transaction("courses.module.patch") as conn:
            course_row = await self.courses.visible_course(conn, community_id, course_id,
                                                           True, for_update=True)
            if await store.module(conn, course_id, module_id) is None:
                raise SidecarError(ErrorCode.NOT_FOUND, "unknown module")
            row = store.must(await store.update_row(conn, "course_modules", module_id,
                                                    fields, MODULE_COLUMNS))
            await schedule_drip(conn, course_id, None)
            await store.touch(conn, course_id)
            self.courses.course_changed(course_row, CourseChange.UPDATED, user_id, after)
        await self.courses.flush(after)
        return store.module_of(row)

    async def add_lesson(self, community_id: int, course_id: int, user_id: int,
                         body: LessonCreate) -> LessonReply:
        await self.courses.staff(community_id, user_id)
        _check_lesson(body.kind, body.quiz is not None, body.assignment is not None)
        after = After()
        async with self.host.transaction("courses.lesson") as conn:
            course_row = await self.courses.visible_course(conn, community_id, course_id,
                                                           True, for_update=True)
            if await store.module(conn, course_id, body.module_id) is None:
                raise SidecarError(ErrorCode.INVALID_ARGUMENT, "unknown module")
            count = await conn.fetchval(
                "SELECT count(*) FROM course_lessons WHERE course_id = $1", course_id)
            if count >= MAX_LESSONS:
                raise SidecarError(ErrorCode.LIMIT_EXCEEDED,
                                   f"a course has at most {MAX_LESSONS} lessons")
            row = store.must(await conn.fetchrow(
                "INSERT INTO course_lessons (course_id, module_id, position, title, kind,"
                " required, preview, body, media_url, duration_s, live_session_id,"
                " live_min_percent, quiz, assignment) VALUES ($1, $2, $3, $4, $5, $6, $7,"
                " $8, $9, $10, $11, $12, $13::jsonb, $14::jsonb) RETURNING *",
                course_id, body.module_id, body.position, body.title, body.kind,
                body.required, body.preview, body.body, body.media_url, body.duration_s,
                body.live_session_id, body.live_min_percent, _json(body.quiz),
                _json(body.assignment)))
            await store.touch(conn, course_id)
            self.courses.course_changed(course_row, CourseChange.UPDATED, user_id, after)
        await self.courses.flush(after)
        return LessonReply(lesson=store.lesson_of(row), state=LessonState.AVAILABLE,
                           questions=[])

    async def patch_lesson(self, community_id: int, course_id: int, lesson_id: int,
                           user_id: int, body: LessonPatch) -> LessonReply:
        await self.courses.staff(community_id, user_id)
        fields: dict[str, Any] = {}
        for name in LESSON_COLUMNS - {"quiz", "assignment"}:
            value = getattr(body, name)
            if value is not None:
                fields[name] = value
        if body.quiz is not None:
            fields["quiz"] = _json(body.quiz)
        if body.assignment is not None:
            fields["assignment"] = _json(body.assignment)
        after = After()
        async with self.host.transaction("courses.lesson.patch") as conn:
            course_row = await self.courses.visible_course(conn, community_id, course_id,
                                                           True, for_update=True)
            old = await store.lesson(conn, course_id, lesson_id)
            if old is None:
                raise SidecarError(ErrorCode.NOT_FOUND, "unknown lesson")
            _check_lesson(old["kind"], "quiz" in fields or old["quiz"] is not None,
                          "assignment" in fields or old["assignment"] is not None)
            row = store.must(await store.update_row(conn, "course_lessons", lesson_id,
                                                    fields, LESSON_COLUMNS))
            await store.touch(conn, course_id)
            questions = [store.question_of(q) for q in await store.questions(conn, lesson_id)]
            self.courses.course_changed(course_row, CourseChange.UPDATED, user_id, after)
        await self.courses.flush(after)
        return LessonReply(lesson=store.lesson_of(row, len(questions)),
                           state=LessonState.AVAILABLE, questions=questions)

    async def add_question(self, community_id: int, course_id: int, lesson_id: int,
                           user_id: int, body: QuestionCreate) -> QuestionAuthored:
        await self.courses.staff(community_id, user_id)
        choices, correct = _question(body)
        async with self.host.transaction("courses.question") as conn:
            await self.courses.visible_course(conn, community_id, course_id, True,
                                              for_update=True)
            lesson = await store.lesson(conn, course_id, lesson_id)
            if lesson is None:
                raise SidecarError(ErrorCode.NOT_FOUND, "unknown lesson")
            if lesson["kind"] != "quiz":
                raise SidecarError(ErrorCode.INVALID_ARGUMENT, "questions go in quiz lessons")
            if await store.question_count(conn, lesson_id) >= MAX_QUESTIONS:
                raise SidecarError(ErrorCode.LIMIT_EXCEEDED,
                                   f"a quiz has at most {MAX_QUESTIONS} questions")
            row = store.must(await conn.fetchrow(
                "INSERT INTO quiz_questions (lesson_id, position, kind, prompt, choices,"
                " correct, points) VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7)"
                " RETURNING *", lesson_id, body.position, body.kind.value, body.prompt,
                msgspec.json.encode(choices).decode(), msgspec.json.encode(correct).decode(),
                body.points))
            await store.touch(conn, course_id)
        return store.question_of(row)


def _json(value: object) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


def _check_lesson(kind: str, has_quiz: bool, has_assignment: bool) -> None:
    if has_quiz and kind != "quiz":
        raise SidecarError(ErrorCode.INVALID_ARGUMENT, "quiz settings are for quiz lessons")
    if has_assignment and kind != "assignment":
        raise SidecarError(ErrorCode.INVALID_ARGUMENT,
                           "assignment settings are for assignment lessons")


def _question(body: QuestionCreate) -> tuple[list[str], list[int] | list[str]]:
    """The stored choices and answers, checked: a choice question has 2+ choices and
    its right ones among them (one for single and true/false); a short answer has at
    least one accepted answer."""
    if body.kind is QuestionKind.SHORT:
        if not body.accepted_answers or body.choices or body.correct_choices:
            raise SidecarError(ErrorCode.INVALID_ARGUMENT,
                               "a short-answer question has accepted_answers only")
        return [], list(body.accepted_answers)
    choices = list(body.choices) or (["true", "false"]
                                     if body.kind is QuestionKind.TRUE_FALSE else [])
    if body.kind is QuestionKind.TRUE_FALSE and len(choices) != 2:
        raise SidecarError(ErrorCode.INVALID_ARGUMENT, "true/false has two choices")
    if len(choices) < 2:
        raise SidecarError(ErrorCode.INVALID_ARGUMENT, "a question needs two choices or more")
    correct = sorted(set(body.correct_choices))
    if not correct or any(c >= len(choices) for c in correct):
        raise SidecarError(ErrorCode.INVALID_ARGUMENT, "correct_choices index the choices")
    if body.kind is not QuestionKind.MULTIPLE and len(correct) != 1:
        raise SidecarError(ErrorCode.INVALID_ARGUMENT, "this kind has one correct choice")
    return choices, correct
