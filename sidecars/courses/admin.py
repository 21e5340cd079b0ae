"""Staff and service work on learners: listing, granting (payment confirmed or a staff
grant), revoking and releasing enrolments; certificates (read, verify, PDF, revoke);
the xAPI statement export."""

from __future__ import annotations

import datetime as dt
import json

import asyncpg

from protocol.codes import ErrorCode
from protocol.sidecar import EnrolmentState, LessonUnlocked, UnlockReason
from sidecars.api import Host, SidecarError
from sidecars.courses import certificates, store
from sidecars.courses.rules import Trigger
from sidecars.courses.service import After, CourseService, now_ms
from sidecars.courses.wire import (
    Certificate,
    Enrolment,
    EnrolmentsReply,
    StatementsReply,
    XapiAccount,
    XapiActor,
    XapiDefinition,
    XapiObject,
    XapiResult,
    XapiScore,
    XapiStatement,
    XapiVerb,
)

ADL = "http://adlnet.gov/expapi/verbs/"
VERB_IRIS = {
    "registered": ADL + "registered", "enrolled": "http://activitystrea.ms/schema/1.0/join",
    "resumed": ADL + "resumed", "suspended": ADL + "suspended",
    "completed": ADL + "completed", "passed": ADL + "passed", "failed": ADL + "failed",
    "submitted": "http://activitystrea.ms/schema/1.0/submit", "scored": ADL + "scored",
    "earned": "http://id.tincanapi.com/verb/earned", "expired": ADL + "exited",
    "revoked": ADL + "voided", "released": ADL + "launched",
}
ACTIVITY_TYPES = {
    "course": "http://adlnet.gov/expapi/activities/course",
    "lesson": "http://adlnet.gov/expapi/activities/lesson",
    "quiz": "http://adlnet.gov/expapi/activities/assessment",
    "assignment": "http://adlnet.gov/expapi/activities/performance",
    "certificate": "https://w3id.org/xapi/cmi5/activitytype/block",
}
HOME_PAGE = "urn:hearth"
"""The actor's ``account.homePage``: the account is ``user:<id>`` of this server."""


class Admin:
    def __init__(self, host: Host, courses: CourseService) -> None:
        self.host = host
        self.courses = courses

    async def _page(self, table: str, community_id: int, course_id: int, after_id: int,
                    limit: int) -> list[asyncpg.Record]:
        """A page of a course's rows of ``table`` by id (keyset: ``after`` the last)."""
        assert table in ("enrolments", "course_statements")
        async with self.host.connection() as conn:
            await self.courses.visible_course(conn, community_id, course_id, True)
            return list(await conn.fetch(
                f"SELECT * FROM {table} WHERE course_id = $1 AND id > $2 ORDER BY id"
                " LIMIT $3", course_id, after_id, limit))

    async def enrolments(self, community_id: int, course_id: int, after_id: int,
                         limit: int) -> EnrolmentsReply:
        rows = await self._page("enrolments", community_id, course_id, after_id, limit)
        return EnrolmentsReply(enrolments=[store.enrolment_of(r) for r in rows])

    async def grant(self, community_id: int, course_id: int, user_id: int,
                    reason: str | None) -> Enrolment:
        """Activate (enrolling first if needed): a paid purchase, or a staff grant of a
        manual, level or any other course. Already active or completed: unchanged."""
        if await self.host.member(community_id, user_id) is None:
            raise SidecarError(ErrorCode.NOT_FOUND, "unknown member")
        after = After()
        async with self.host.transaction("courses.grant") as conn:
            row = await self.courses.visible_course(conn, community_id, course_id, True)
            enrol = await store.enrolment(conn, course_id, user_id, for_update=True)
            if enrol is not None and enrol["state"] in ("active", "completed"):
                return store.enrolment_of(enrol)
            moved = await self.courses.move(conn, row, enrol, user_id, Trigger.GRANT,
                                            reason or "granted", after)
        await self.courses.flush(after)
        return store.enrolment_of(moved.row)

    async def revoke(self, community_id: int, course_id: int, user_id: int,
                     reason: str | None) -> Enrolment:
        after = After()
        async with self.host.transaction("courses.revoke") as conn:
            row = await self.courses.visible_course(conn, community_id, course_id, True)
            enrol = await store.enrolment(conn, course_id, user_id, for_update=True)
            if enrol is None:
                raise SidecarError(ErrorCode.NOT_FOUND, "not enrolled")
            moved = await self.courses.move(conn, row, enrol, user_id, Trigger.REVOKE,
                                            reason or "revoked", after)
        await self.courses.flush(after)
        return store.enrolment_of(moved.row)

    async def release(self, community_id: int, course_id: int, user_id: int) -> Enrolment:
        """Open every module to one learner now, whatever its drip."""
        after = After()
        async with self.host.transaction("courses.release") as conn:
            row = await self.courses.visible_course(conn, community_id, course_id, True)
            enrol = await store.enrolment(conn, course_id, user_id, for_update=True)
            if enrol is None:
                raise SidecarError(ErrorCode.NOT_FOUND, "not enrolled")
            outline, _, progress, before = await self.courses.outline(conn, row, user_id)
            enrol = await conn.fetchrow(
                "UPDATE enrolments SET released = true, updated_at = now() WHERE id = $1"
                " RETURNING *", enrol["id"])
            assert enrol is not None
            await conn.execute("UPDATE module_unlocks SET notified_at = coalesce("
                               "notified_at, now()) WHERE enrolment_id = $1", enrol["id"])
            computed = self.courses.compute(row, outline, enrol, store.states_of(progress))
            await self.courses.statement(conn, row, user_id, "released", "course", course_id)
        opened = [lesson.id for lesson in outline.lessons
                  if lesson.module_id in computed.open_modules - before.open_modules]
        if opened and EnrolmentState(enrol["state"]) in (EnrolmentState.ACTIVE,
                                                         EnrolmentState.COMPLETED):
            after.to_users.append((user_id, LessonUnlocked(
                community_id=community_id, course_id=course_id, lesson_ids=opened[:1000],
                reason=UnlockReason.RELEASED, at=now_ms())))
        await self.courses.flush(after)
        return store.enrolment_of(enrol)

    # ------------------------------------------------------------------ certificates

    async def my_certificate(self, community_id: int, course_id: int,
                             user_id: int) -> Certificate:
        await self.courses.member(community_id, user_id)
        async with self.host.connection() as conn:
            row = await certificates.of_learner(conn, course_id, user_id)
        if row is None or row["community_id"] != community_id:
            raise SidecarError(ErrorCode.NOT_FOUND, "no certificate")
        return certificates.certificate_of(row)

    async def verify(self, serial: str) -> Certificate:
        async with self.host.connection() as conn:
            return certificates.certificate_of(await _by_serial(conn, serial))

    async def pdf(self, serial: str) -> bytes:
        async with self.host.connection() as conn:
            row = await _by_serial(conn, serial)
            name = await conn.fetchval("SELECT name FROM communities WHERE id = $1",
                                       row["community_id"])
        return certificates.render_pdf(certificates.certificate_of(row), str(name or ""))

    async def revoke_certificate(self, community_id: int, serial: str,
                                 reason: str) -> Certificate:
        async with self.host.transaction("courses.certificate.revoke") as conn:
            row = await certificates.revoke(conn, community_id, serial, reason)
        if row is None:
            raise SidecarError(ErrorCode.NOT_FOUND, "unknown certificate")
        return certificates.certificate_of(row)

    # -------------------------------------------------------------------------- xAPI

    async def statements(self, community_id: int, course_id: int, after_id: int,
                         limit: int) -> StatementsReply:
        rows = await self._page("course_statements", community_id, course_id, after_id,
                                limit)
        out = [to_xapi(r["id"], r["user_id"], r["verb"], r["object_type"], r["object_id"],
                       course_id, r["result"], r["at"]) for r in rows]
        return StatementsReply(statements=out,
                               next_after=rows[-1]["id"] if len(rows) == limit else None)


async def _by_serial(conn: asyncpg.Connection, serial: str) -> asyncpg.Record:
    row = await certificates.by_serial(conn, serial)
    if row is None:
        raise SidecarError(ErrorCode.NOT_FOUND, "unknown certificate")
    return row


def to_xapi(statement_id: int, user_id: int, verb: str, object_type: str, object_id: str,
            course_id: int, result: str | None, at: dt.datetime) -> XapiStatement:
    """One stored statement as xAPI 1.0.3: actor (the account ``user:<id>``), verb
    (ADL IRIs where one exists), object (``urn:hearth:course:<id>[:<type>:<id>]``),
    result (score raw/max/scaled, success, completion, duration ISO 8601)."""
    res = json.loads(result) if result else None
    xres = None
    if res:
        score = None
        if res.get("score") is not None and res.get("max_score"):
            score = XapiScore(raw=res["score"], max=res["max_score"],
                              scaled=round(res["score"] / res["max_score"], 4))
        duration = f"PT{res['duration_s']}S" if res.get("duration_s") is not None else None
        xres = XapiResult(score=score, success=res.get("success"),
                          completion=res.get("completion"), duration=duration,
                          response=res.get("response"))
    object_iri = f"urn:hearth:course:{course_id}"
    if object_type != "course":
        object_iri += f":{object_type}:{object_id}"
    stamp = at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return XapiStatement(
        id=_uuid(course_id, statement_id),
        actor=XapiActor(objectType="Agent",
                        account=XapiAccount(homePage=HOME_PAGE, name=f"user:{user_id}")),
        verb=XapiVerb(id=VERB_IRIS.get(verb, ADL + verb), display={"en-US": verb}),
        object=XapiObject(objectType="Activity", id=object_iri, definition=XapiDefinition(
            type=ACTIVITY_TYPES.get(object_type, ACTIVITY_TYPES["lesson"]))),
        timestamp=stamp, result=xres)


def _uuid(course_id: int, statement_id: int) -> str:
    """A stable UUID (v5) per stored statement, so an LRS de-duplicates re-exports."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:hearth:statement:{statement_id}"))
