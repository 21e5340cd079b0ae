"""Live sessions (issue 6): sessions, registrations, attendance intervals, questions.

Every function takes a connection; callers own transactions. The stage state
(co-hosts, promoted speakers, raised hands) lives on the session row and is changed
under its row lock (``get_session(..., for_update=True)``), so concurrent promotions on
different nodes cannot exceed the speaker limit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import msgspec

from persistence import outbox
from persistence._rows import millis
from persistence.database import Connection
from protocol.domain_events import AttendanceChange, LiveAttended
from protocol.live import (
    AttendanceInterval,
    LiveSession,
    LiveSessionState,
    Question,
    QuestionState,
)

__all__ = ["Connection", "LiveRow"]


class LiveRow(msgspec.Struct, frozen=True, kw_only=True):
    """A session row: its wire form plus the stage state and the raw times."""

    session: LiveSession
    speaker_ids: list[int]
    hand_ids: list[int]
    started_at: dt.datetime | None
    ended_at: dt.datetime | None

    @property
    def id(self) -> int:
        return self.session.id

    @property
    def state(self) -> LiveSessionState:
        return self.session.state


_SESSION_COLUMNS = """
    s.*, (SELECT count(*) FROM live_registrations r WHERE r.session_id = s.id) AS registered
"""


def _row(r: Any) -> LiveRow:
    session = LiveSession(
        id=r["id"], community_id=r["community_id"], channel_id=r["channel_id"],
        title=r["title"], description=r["description"], host_id=r["host_id"],
        starts_at=millis(r["starts_at"]) or 0, duration_s=r["duration_s"],
        capacity=r["capacity"], required_tier=r["required_tier"],
        prerequisite_course=r["prerequisite_course"], recorded=r["recorded"],
        state=LiveSessionState(r["state"]), started_at=millis(r["started_at"]),
        ended_at=millis(r["ended_at"]), cohost_ids=list(r["cohost_ids"]),
        registered_count=r["registered"], recording_path=r["recording_path"],
        recording_s=r["recording_s"], created_at=millis(r["created_at"]) or 0)
    return LiveRow(session=session, speaker_ids=list(r["speaker_ids"]),
                   hand_ids=list(r["hand_ids"]), started_at=r["started_at"],
                   ended_at=r["ended_at"])


def from_millis(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


# ---------------------------------------------------------------------------- sessions


async def create_session_txn(conn: Connection, *, community_id: int, channel_id: int,
                             created_by: int, host_id: int, title: str, description: str,
                             starts_at: int, duration_s: int, capacity: int | None,
                             required_tier: int, prerequisite_course: str | None,
                             recorded: bool) -> LiveRow:
    row = await conn.fetchrow(
        f"""
        WITH s AS (
            INSERT INTO live_sessions (community_id, channel_id, created_by, host_id, title,
                                       description, starts_at, duration_s, capacity,
                                       required_tier, prerequisite_course, recorded)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
            RETURNING *
        )
        SELECT {_SESSION_COLUMNS} FROM s
        """, community_id, channel_id, created_by, host_id, title, description,
        from_millis(starts_at), duration_s, capacity, required_tier, prerequisite_course,
        recorded)
    return _row(row)


async def get_session(conn: Connection, session_id: int, *,
                      for_update: bool = False) -> LiveRow | None:
    lock = " FOR UPDATE OF s" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_SESSION_COLUMNS} FROM live_sessions s WHERE s.id = $1{lock}", session_id)
    return _row(row) if row else None


async def list_sessions(conn: Connection, community_id: int,
                        states: Sequence[str] | None = None, limit: int = 100) -> list[LiveRow]:
    rows = await conn.fetch(
        f"""
        SELECT {_SESSION_COLUMNS} FROM live_sessions s
        WHERE s.community_id = $1 AND ($2::text[] IS NULL OR s.state = ANY($2))
        ORDER BY s.starts_at, s.id LIMIT $3
        """, community_id, list(states) if states is not None else None, limit)
    return [_row(r) for r in rows]


_PATCHABLE = {"title", "description", "starts_at", "duration_s", "host_id", "capacity",
              "required_tier", "prerequisite_course", "recorded"}


async def update_session(conn: Connection, session_id: int, fields: dict[str, Any]) -> None:
    """Set ``fields`` (names from :data:`_PATCHABLE`; ``starts_at`` in ms). Changing
    the start re-arms the reminder."""
    assert set(fields) <= _PATCHABLE, fields
    if not fields:
        return
    values = dict(fields)
    if "starts_at" in values:
        values["starts_at"] = from_millis(values["starts_at"])
    names = list(values)
    sets = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(names))
    if "starts_at" in values:
        sets += ", reminded_at = NULL"
    await conn.execute(f"UPDATE live_sessions SET {sets} WHERE id = $1", session_id,
                       *[values[n] for n in names])


async def set_state(conn: Connection, session_id: int, state: LiveSessionState) -> None:
    """Move to ``state``, stamping ``started_at`` or ``ended_at`` with the database clock
    (the one attendance is clipped against). Ending clears the stage."""
    if state is LiveSessionState.LIVE:
        await conn.execute("UPDATE live_sessions SET state = 'live', started_at = now() "
                           "WHERE id = $1", session_id)
    else:
        await conn.execute(
            "UPDATE live_sessions SET state = $2, ended_at = now(), speaker_ids = '{}', "
            "hand_ids = '{}' WHERE id = $1", session_id, state.value)


async def set_recording(conn: Connection, session_id: int, path: str | None,
                        seconds: float | None) -> None:
    await conn.execute("UPDATE live_sessions SET recording_path = $2, recording_s = $3 "
                       "WHERE id = $1", session_id, path, seconds)


async def set_stage(conn: Connection, session_id: int, *, cohost_ids: list[int],
                    speaker_ids: list[int], hand_ids: list[int]) -> None:
    await conn.execute(
        "UPDATE live_sessions SET cohost_ids = $2, speaker_ids = $3, hand_ids = $4 "
        "WHERE id = $1", session_id, cohost_ids, speaker_ids, hand_ids)


async def sessions_of_channels(conn: Connection, channel_ids: Sequence[int]) -> dict[int, int]:
    """Stage channel id -> its session id, for the channels that are stages."""
    rows = await conn.fetch("SELECT channel_id, id FROM live_sessions "
                            "WHERE channel_id = ANY($1::bigint[])", list(channel_ids))
    return {r["channel_id"]: r["id"] for r in rows}


async def claim_due_reminders(conn: Connection, lead_s: float, limit: int = 100) -> list[LiveRow]:
    """Scheduled sessions starting within ``lead_s`` seconds that were not reminded
    yet, marked reminded in the same statement: with several nodes running the task,
    exactly one of them gets each session."""
    rows = await conn.fetch(
        f"""
        WITH due AS (
            SELECT id FROM live_sessions
            WHERE state = 'scheduled' AND reminded_at IS NULL
              AND starts_at <= now() + make_interval(secs => $1)
            ORDER BY starts_at LIMIT $2
            FOR UPDATE SKIP LOCKED
        ), s AS (
            UPDATE live_sessions t SET reminded_at = now() FROM due WHERE t.id = due.id
            RETURNING t.*
        )
        SELECT {_SESSION_COLUMNS} FROM s
        """, lead_s, limit)
    return [_row(r) for r in rows]


async def was_reminded(conn: Connection, session_id: int) -> bool:
    """Whether the session's reminders already went out (``claim_due_reminders``)."""
    return bool(await conn.fetchval(
        "SELECT reminded_at IS NOT NULL FROM live_sessions WHERE id = $1", session_id))


async def db_now(conn: Connection) -> dt.datetime:
    value = await conn.fetchval("SELECT now()")
    assert isinstance(value, dt.datetime)
    return value


# ----------------------------------------------------------------------- registrations


async def register(conn: Connection, session_id: int, user_id: int,
                   capacity: int | None) -> bool:
    """Register (idempotent: True when registered now or already). False: full.
    Call with the session row locked, so two last seats cannot both be taken."""
    if await conn.fetchval("SELECT 1 FROM live_registrations "
                           "WHERE session_id = $1 AND user_id = $2", session_id, user_id):
        return True
    if capacity is not None:
        count = await conn.fetchval("SELECT count(*) FROM live_registrations "
                                    "WHERE session_id = $1", session_id)
        if count >= capacity:
            return False
    await conn.execute("INSERT INTO live_registrations (session_id, user_id) VALUES ($1, $2) "
                       "ON CONFLICT DO NOTHING", session_id, user_id)
    return True


async def unregister(conn: Connection, session_id: int, user_id: int) -> bool:
    done = await conn.execute("DELETE FROM live_registrations "
                              "WHERE session_id = $1 AND user_id = $2", session_id, user_id)
    return bool(done != "DELETE 0")


async def registered_ids(conn: Connection, session_id: int) -> list[int]:
    rows = await conn.fetch("SELECT user_id FROM live_registrations WHERE session_id = $1 "
                            "ORDER BY user_id", session_id)
    return [r["user_id"] for r in rows]


async def is_registered(conn: Connection, session_id: int, user_id: int) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM live_registrations "
                                    "WHERE session_id = $1 AND user_id = $2",
                                    session_id, user_id))


# -------------------------------------------------------------------------- attendance


async def write_attendance(conn: Connection, *,
                           opened: Sequence[tuple[int, int, dt.datetime]],
                           completed: Sequence[tuple[int, int, dt.datetime, dt.datetime]],
                           closed: Sequence[tuple[int, int, dt.datetime]]) -> None:
    """One batch: close the open stretches ``closed`` (session, user, left), insert the
    complete stretches ``completed`` (session, user, joined, left) and the open ones
    ``opened`` (session, user, joined). Three statements whatever the batch size, plus
    the ``live_attended`` outbox events of what actually changed, in the same
    transaction."""
    changes: list[tuple[int, int, AttendanceChange, dt.datetime]] = []
    async with conn.transaction():
        if closed:
            rows = await conn.fetch(
                """
                UPDATE live_attendance a SET left_at = GREATEST(c.left_at, a.joined_at)
                FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[])
                     AS c(session_id, user_id, left_at)
                WHERE a.session_id = c.session_id AND a.user_id = c.user_id
                  AND a.left_at IS NULL
                RETURNING a.session_id, a.user_id, a.left_at
                """, [c[0] for c in closed], [c[1] for c in closed], [c[2] for c in closed])
            changes += [(r[0], r[1], AttendanceChange.LEFT, r[2]) for r in rows]
        if completed:
            rows = await conn.fetch(
                """
                INSERT INTO live_attendance (session_id, user_id, joined_at, left_at)
                SELECT s, u, j, GREATEST(j, l)
                FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::timestamptz[])
                     AS c(s, u, j, l)
                RETURNING session_id, user_id, joined_at, left_at
                """, [c[0] for c in completed], [c[1] for c in completed],
                [c[2] for c in completed], [c[3] for c in completed])
            for r in rows:
                changes.append((r[0], r[1], AttendanceChange.JOINED, r[2]))
                changes.append((r[0], r[1], AttendanceChange.LEFT, r[3]))
        if opened:
            # A member already in (an open stretch left by a crash, or a duplicate join)
            # keeps their first stretch.
            rows = await conn.fetch(
                """
                INSERT INTO live_attendance (session_id, user_id, joined_at)
                SELECT s, u, j
                FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[]) AS c(s, u, j)
                WHERE NOT EXISTS (SELECT 1 FROM live_attendance a
                                  WHERE a.session_id = c.s AND a.user_id = c.u
                                    AND a.left_at IS NULL)
                RETURNING session_id, user_id, joined_at
                """, [c[0] for c in opened], [c[1] for c in opened], [c[2] for c in opened])
            changes += [(r[0], r[1], AttendanceChange.JOINED, r[2]) for r in rows]
        await _attendance_events(conn, changes)


async def _attendance_events(conn: Connection,
                             changes: list[tuple[int, int, AttendanceChange, dt.datetime]]) -> None:
    if not changes:
        return
    rows = await conn.fetch("SELECT id, community_id FROM live_sessions "
                            "WHERE id = ANY($1::bigint[])", list({c[0] for c in changes}))
    community = {r["id"]: r["community_id"] for r in rows}
    await outbox.append_txn(conn, [
        LiveAttended(live_session_id=sid, community_id=community[sid], user_id=uid,
                     change=change, at=millis(at) or 0)
        for sid, uid, change, at in changes if sid in community])


async def close_open_attendance(conn: Connection, session_id: int, at: dt.datetime) -> None:
    """The session ended: whoever is still in the stage leaves at ``at``."""
    async with conn.transaction():
        rows = await conn.fetch("UPDATE live_attendance SET left_at = GREATEST($2, joined_at) "
                                "WHERE session_id = $1 AND left_at IS NULL "
                                "RETURNING user_id, left_at", session_id, at)
        await _attendance_events(conn, [(session_id, r[0], AttendanceChange.LEFT, r[1])
                                        for r in rows])


async def attendance(conn: Connection,
                     session_id: int) -> dict[int, list[tuple[dt.datetime, dt.datetime | None]]]:
    """user id -> their stretches (joined, left), oldest first."""
    rows = await conn.fetch("SELECT user_id, joined_at, left_at FROM live_attendance "
                            "WHERE session_id = $1 ORDER BY user_id, joined_at, id",
                            session_id)
    out: dict[int, list[tuple[dt.datetime, dt.datetime | None]]] = {}
    for r in rows:
        out.setdefault(r["user_id"], []).append((r["joined_at"], r["left_at"]))
    return out


def wire_interval(joined: dt.datetime, left: dt.datetime | None) -> AttendanceInterval:
    return AttendanceInterval(joined_at=millis(joined) or 0, left_at=millis(left))


# --------------------------------------------------------------------------- questions

_QUESTION_COLUMNS = "id, session_id, author_id, text, state, votes, resolved_by, created_at"


def _question(r: Any) -> Question:
    return Question(id=r["id"], session_id=r["session_id"], author_id=r["author_id"],
                    text=r["text"], state=QuestionState(r["state"]), votes=r["votes"],
                    resolved_by=r["resolved_by"], created_at=millis(r["created_at"]) or 0)


async def add_question(conn: Connection, session_id: int, author_id: int, text: str) -> Question:
    row = await conn.fetchrow(
        f"INSERT INTO live_questions (session_id, author_id, text) VALUES ($1, $2, $3) "
        f"RETURNING {_QUESTION_COLUMNS}", session_id, author_id, text)
    return _question(row)


async def get_question(conn: Connection, question_id: int) -> Question | None:
    row = await conn.fetchrow(f"SELECT {_QUESTION_COLUMNS} FROM live_questions WHERE id = $1",
                              question_id)
    return _question(row) if row else None


async def vote(conn: Connection, question_id: int, user_id: int, up: bool) -> Question | None:
    """Add or withdraw one member's vote and keep ``votes`` equal to the vote rows, in
    one statement (a repeated vote changes nothing)."""
    if up:
        sql = f"""
            WITH v AS (
                INSERT INTO live_question_votes (question_id, user_id) VALUES ($1, $2)
                ON CONFLICT DO NOTHING RETURNING 1
            )
            UPDATE live_questions SET votes = votes + (SELECT count(*) FROM v)
            WHERE id = $1 RETURNING {_QUESTION_COLUMNS}
        """
    else:
        sql = f"""
            WITH v AS (
                DELETE FROM live_question_votes WHERE question_id = $1 AND user_id = $2
                RETURNING 1
            )
            UPDATE live_questions SET votes = votes - (SELECT count(*) FROM v)
            WHERE id = $1 RETURNING {_QUESTION_COLUMNS}
        """
    row = await conn.fetchrow(sql, question_id, user_id)
    return _question(row) if row else None


async def set_question_state(conn: Connection, question_id: int, state: QuestionState,
                             actor_id: int) -> Question | None:
    row = await conn.fetchrow(
        f"UPDATE live_questions SET state = $2, resolved_by = CASE WHEN $2 = 'open' "
        f"THEN NULL ELSE $3::bigint END WHERE id = $1 RETURNING {_QUESTION_COLUMNS}",
        question_id, state.value, actor_id)
    return _question(row) if row else None


async def list_questions(conn: Connection, session_id: int, *, include_dismissed: bool,
                         limit: int = 500) -> list[Question]:
    rows = await conn.fetch(
        f"""
        SELECT {_QUESTION_COLUMNS} FROM live_questions
        WHERE session_id = $1 AND ($2 OR state <> 'dismissed')
        ORDER BY votes DESC, id LIMIT $3
        """, session_id, include_dismissed, limit)
    return [_question(r) for r in rows]


async def voted_ids(conn: Connection, session_id: int, user_id: int) -> list[int]:
    rows = await conn.fetch(
        "SELECT v.question_id FROM live_question_votes v "
        "JOIN live_questions q ON q.id = v.question_id "
        "WHERE q.session_id = $1 AND v.user_id = $2 ORDER BY v.question_id",
        session_id, user_id)
    return [r["question_id"] for r in rows]


async def has_voted(conn: Connection, question_id: int, user_id: int) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM live_question_votes "
                                    "WHERE question_id = $1 AND user_id = $2",
                                    question_id, user_id))
