"""The courses sidecar's SQL (its tables: ``migrations/``; core tables only read)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import asyncpg
import msgspec

from protocol.sidecar import EnrolmentState
from sidecars.courses import rules
from sidecars.courses.rules import AccessKind, DripKind, LessonState, QuestionKind
from sidecars.courses.wire import (
    AccessRule,
    AssignmentSettings,
    Course,
    Enrolment,
    Lesson,
    Module,
    QuestionAuthored,
    QuizSettings,
    Submission,
)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def ms(at: dt.datetime | None) -> int | None:
    return None if at is None else (at - EPOCH) // dt.timedelta(milliseconds=1)


def ms0(at: dt.datetime) -> int:
    return (at - EPOCH) // dt.timedelta(milliseconds=1)


def at_ms(value: int | None) -> dt.datetime | None:
    return None if value is None else EPOCH + dt.timedelta(milliseconds=value)


async def now_ms(conn: asyncpg.Connection) -> int:
    """The database's clock (one clock for every process claiming drip work)."""
    return ms0(await conn.fetchval("SELECT now()"))


# ------------------------------------------------------------------------- courses


def course_of(r: asyncpg.Record) -> Course:
    return Course(
        id=r["id"], community_id=r["community_id"], title=r["title"],
        description=r["description"], cover_url=r["cover_url"], status=r["status"],
        access=AccessRule(kind=AccessKind(r["access_kind"]), value=r["access_value"],
                          price_id=r["price_id"]),
        prerequisite_ids=list(r["prerequisite_ids"]),
        completion_percent=r["completion_percent"], certificate=r["certificate"],
        lessons_in_order=r["lessons_in_order"], min_watch_percent=r["min_watch_percent"],
        access_days=r["access_days"], discussion_channel_id=r["discussion_channel_id"],
        created_at=ms0(r["created_at"]), updated_at=ms0(r["updated_at"]))


async def course(conn: asyncpg.Connection, community_id: int, course_id: int,
                 for_update: bool = False) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM courses WHERE id = $1 AND community_id = $2"
        + (" FOR UPDATE" if for_update else ""), course_id, community_id)


async def courses(conn: asyncpg.Connection, community_id: int,
                  staff: bool) -> list[asyncpg.Record]:
    return list(await conn.fetch(
        "SELECT * FROM courses WHERE community_id = $1"
        + ("" if staff else " AND status <> 'draft'") + " ORDER BY id LIMIT 500",
        community_id))


async def touch(conn: asyncpg.Connection, course_id: int) -> None:
    await conn.execute("UPDATE courses SET updated_at = now() WHERE id = $1", course_id)


COURSE_COLUMNS = {"title", "description", "cover_url", "status", "access_kind",
                  "access_value", "price_id", "prerequisite_ids", "completion_percent",
                  "certificate", "lessons_in_order", "min_watch_percent", "access_days",
                  "discussion_channel_id"}


async def insert_course(conn: asyncpg.Connection, community_id: int, created_by: int,
                        fields: dict[str, Any]) -> asyncpg.Record:
    names = sorted(fields)
    assert set(names) <= COURSE_COLUMNS
    cols = ", ".join(["community_id", "created_by", *names])
    args = ", ".join(f"${i}" for i in range(1, len(names) + 3))
    row = await conn.fetchrow(f"INSERT INTO courses ({cols}) VALUES ({args}) RETURNING *",
                              community_id, created_by, *(fields[n] for n in names))
    assert row is not None
    return row


async def update_row(conn: asyncpg.Connection, table: str, row_id: int,
                     fields: dict[str, Any], allowed: set[str]) -> asyncpg.Record | None:
    names = sorted(fields)
    assert set(names) <= allowed and table in ("courses", "course_modules", "course_lessons")
    if not names:
        return await conn.fetchrow(f"SELECT * FROM {table} WHERE id = $1", row_id)
    sets = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, start=2))
    extra = ", updated_at = now()" if table == "courses" else ""
    return await conn.fetchrow(f"UPDATE {table} SET {sets}{extra} WHERE id = $1 RETURNING *",
                               row_id, *(fields[n] for n in names))


# ------------------------------------------------------------------ modules, lessons


def module_of(r: asyncpg.Record) -> Module:
    return Module(id=r["id"], course_id=r["course_id"], title=r["title"],
                  position=r["position"], drip=DripKind(r["drip_kind"]),
                  drip_days=r["drip_days"], drip_at=ms(r["drip_at"]))


def lesson_of(r: asyncpg.Record, question_count: int = 0) -> Lesson:
    quiz = msgspec.json.decode(r["quiz"], type=QuizSettings) if r["quiz"] else None
    assignment = (msgspec.json.decode(r["assignment"], type=AssignmentSettings)
                  if r["assignment"] else None)
    return Lesson(id=r["id"], course_id=r["course_id"], module_id=r["module_id"],
                  title=r["title"], kind=r["kind"], position=r["position"],
                  required=r["required"], preview=r["preview"], body=r["body"],
                  media_url=r["media_url"], duration_s=r["duration_s"],
                  live_session_id=r["live_session_id"],
                  live_min_percent=r["live_min_percent"], quiz=quiz, assignment=assignment,
                  question_count=question_count)


async def modules(conn: asyncpg.Connection, course_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(
        "SELECT * FROM course_modules WHERE course_id = $1 ORDER BY position, id", course_id))


async def lessons(conn: asyncpg.Connection, course_id: int) -> list[asyncpg.Record]:
    """In course order: module order, then position."""
    return list(await conn.fetch(
        "SELECT l.id, l.module_id, l.title, l.kind, l.required, l.preview, l.duration_s"
        " FROM course_lessons l JOIN course_modules m ON m.id = l.module_id"
        " WHERE l.course_id = $1 ORDER BY m.position, m.id, l.position, l.id", course_id))


def outline_of(module_rows: list[asyncpg.Record], lesson_rows: list[asyncpg.Record],
               in_order: bool) -> rules.Outline:
    return rules.Outline(
        modules=[rules.ModuleRule(r["id"], DripKind(r["drip_kind"]), r["drip_days"],
                                  ms(r["drip_at"])) for r in module_rows],
        lessons=[rules.LessonRule(r["id"], r["module_id"], r["required"], r["preview"])
                 for r in lesson_rows],
        lessons_in_order=in_order)


async def lesson(conn: asyncpg.Connection, course_id: int,
                 lesson_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM course_lessons WHERE id = $1 AND course_id = $2", lesson_id, course_id)


async def module(conn: asyncpg.Connection, course_id: int,
                 module_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM course_modules WHERE id = $1 AND course_id = $2", module_id, course_id)


def question_of(r: asyncpg.Record) -> QuestionAuthored:
    correct = json.loads(r["correct"])
    kind = QuestionKind(r["kind"])
    return QuestionAuthored(
        id=r["id"], kind=kind, prompt=r["prompt"], choices=json.loads(r["choices"]),
        correct_choices=[] if kind is QuestionKind.SHORT else [int(c) for c in correct],
        accepted_answers=[str(c) for c in correct] if kind is QuestionKind.SHORT else [],
        points=r["points"], position=r["position"])


def question_rule(r: asyncpg.Record) -> rules.Question:
    return rules.Question(r["id"], QuestionKind(r["kind"]), tuple(json.loads(r["choices"])),
                          tuple(json.loads(r["correct"])), r["points"])


async def questions(conn: asyncpg.Connection, lesson_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(
        "SELECT * FROM quiz_questions WHERE lesson_id = $1 ORDER BY position, id", lesson_id))


async def question_count(conn: asyncpg.Connection, lesson_id: int) -> int:
    return int(await conn.fetchval(
        "SELECT count(*) FROM quiz_questions WHERE lesson_id = $1", lesson_id))


# ---------------------------------------------------------------------- enrolments


def enrolment_of(r: asyncpg.Record) -> Enrolment:
    return Enrolment(id=r["id"], course_id=r["course_id"], user_id=r["user_id"],
                     state=EnrolmentState(r["state"]), reason=r["reason"],
                     released=r["released"], progress_percent=r["progress_percent"],
                     enrolled_at=ms0(r["enrolled_at"]), activated_at=ms(r["activated_at"]),
                     completed_at=ms(r["completed_at"]), expires_at=ms(r["expires_at"]))


async def enrolment(conn: asyncpg.Connection, course_id: int, user_id: int,
                    for_update: bool = False) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM enrolments WHERE course_id = $1 AND user_id = $2"
        + (" FOR UPDATE" if for_update else ""), course_id, user_id)


async def enrolment_with_progress(conn: asyncpg.Connection, course_id: int, user_id: int,
                                  ) -> tuple[asyncpg.Record | None, list[Progress]]:
    """The enrolment and its progress in one round trip (the outline's read): the
    progress comes as four arrays, not as a row per lesson repeating the enrolment."""
    row = await conn.fetchrow(
        "SELECT e.*, p.ids, p.states, p.watched, p.spent FROM enrolments e"
        " LEFT JOIN LATERAL (SELECT array_agg(lesson_id) AS ids, array_agg(state) AS states,"
        " array_agg(watched_s) AS watched, array_agg(time_spent_s) AS spent"
        " FROM lesson_progress WHERE enrolment_id = e.id) p ON true"
        " WHERE e.course_id = $1 AND e.user_id = $2", course_id, user_id)
    if row is None:
        return None, []
    if row["ids"] is None:
        return row, []
    return row, [Progress(*t) for t in zip(row["ids"], row["states"], row["watched"],
                                           row["spent"], strict=True)]


class Progress(NamedTuple):
    """One lesson's progress, as the outline reads it."""

    lesson_id: int
    state: str
    watched_s: int
    time_spent_s: int


async def progress(conn: asyncpg.Connection, enrolment_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(
        "SELECT lesson_id, state, watched_s, time_spent_s FROM lesson_progress"
        " WHERE enrolment_id = $1", enrolment_id))


def states_of(rows: Sequence[asyncpg.Record | Progress]) -> dict[int, LessonState]:
    """Lesson id -> state, from :func:`progress` rows or :class:`Progress`."""
    return {r[0]: LessonState(r[1]) for r in rows}


async def set_lesson_state(conn: asyncpg.Connection, enrolment_id: int, lesson_id: int,
                           state: LessonState) -> None:
    done = state in rules.DONE
    await conn.execute(
        "INSERT INTO lesson_progress (enrolment_id, lesson_id, state, completed_at)"
        " VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END)"
        " ON CONFLICT (enrolment_id, lesson_id) DO UPDATE SET"
        # a passed or completed lesson stays done (a later failed attempt keeps it)
        " state = CASE WHEN lesson_progress.state IN ('completed', 'passed')"
        "  AND NOT $4 THEN lesson_progress.state ELSE EXCLUDED.state END,"
        " completed_at = coalesce(lesson_progress.completed_at, EXCLUDED.completed_at),"
        " updated_at = now()", enrolment_id, lesson_id, state.value, done)


async def member_facts(conn: asyncpg.Connection, community_id: int,
                       user_id: int) -> rules.AccessFacts:
    """From the core's membership row (read only)."""
    row = await conn.fetchrow(
        "SELECT tier, extract(epoch FROM now() - joined_at) / 86400 AS days"
        " FROM community_members WHERE community_id = $1 AND user_id = $2",
        community_id, user_id)
    if row is None:
        return rules.AccessFacts(member=False)
    return rules.AccessFacts(member=True, tier=row["tier"], member_days=float(row["days"]))


async def display_name(conn: asyncpg.Connection, user_id: int) -> str:
    row = await conn.fetchrow("SELECT username, display_name FROM users WHERE id = $1",
                              user_id)
    if row is None:
        return f"user {user_id}"
    return str(row["display_name"] or row["username"])


# ------------------------------------------------------------------- submissions


def submission_of(r: asyncpg.Record, max_score: int) -> Submission:
    return Submission(id=r["id"], lesson_id=r["lesson_id"], user_id=r["user_id"],
                      kind=r["kind"], content=r["content"],
                      submitted_at=ms0(r["submitted_at"]), score=r["score"],
                      max_score=max_score, passed=r["passed"], feedback=r["feedback"],
                      graded_by=r["graded_by"], graded_at=ms(r["graded_at"]))


def must(row: asyncpg.Record | None) -> asyncpg.Record:
    """A row the statement always returns (an UPDATE of a row locked or just read)."""
    if row is None:
        raise LookupError("the row vanished")  # a concurrent delete of the course
    return row
