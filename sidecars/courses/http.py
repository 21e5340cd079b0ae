"""The courses sidecar's REST routes (docs/courses.md lists them with who may call
each). Every route decodes with the types it names in its :class:`Route`, so the
OpenAPI contract is the code. A non-member gets ``not_found`` everywhere (the
community's courses are not disclosed); a member without ``MANAGE_COURSES`` gets
``forbidden`` on staff routes; certificate verification needs no login."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from protocol.sidecar import Scope
from sidecars.api import Host, Route
from sidecars.courses import store
from sidecars.courses.admin import Admin
from sidecars.courses.authoring import Authoring
from sidecars.courses.learning import Learning
from sidecars.courses.service import CourseService
from sidecars.courses.wire import (
    AttemptPath,
    AttemptResult,
    AttemptsReply,
    AttemptStarted,
    CertificateReply,
    CommunityPath,
    CommunitySerialPath,
    CourseCreate,
    CourseOnlyReply,
    CoursePatch,
    CoursePath,
    CourseReply,
    CoursesReply,
    CourseSummary,
    EnrolmentReply,
    EnrolmentsQuery,
    EnrolmentsReply,
    GradeSubmission,
    GrantBody,
    LearnerPath,
    LessonCreate,
    LessonPatch,
    LessonPath,
    LessonReply,
    LessonStateReply,
    ModuleCreate,
    ModulePatch,
    ModulePath,
    ModuleReply,
    ProgressBody,
    ProgressReply,
    QuestionCreate,
    QuestionReply,
    RevokeBody,
    Serial,
    SerialPath,
    StatementsQuery,
    StatementsReply,
    SubmissionPath,
    SubmissionReply,
    SubmissionsReply,
    SubmitAssignment,
    SubmitAttempt,
)

C = "/communities/{community_id}/courses"
COURSE = C + "/{course_id}"
LESSON = COURSE + "/lessons/{lesson_id}"


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(value), status=status,
                        content_type="application/json")


def routes(host: Host, courses: CourseService, authoring: Authoring, learning: Learning,
           admin: Admin) -> list[Route]:
    async def uid(request: web.Request) -> int:
        return await host.user_id(request)

    async def staff_or_key(request: web.Request, community_id: int, scope: Scope,
                           action: str, detail: dict[str, object]) -> None:
        """A staff member's token (``MANAGE_COURSES``) or a service key with
        ``scope`` (its use audited)."""
        if host.is_service_key(request):
            principal = await host.principal(request, community_id, scope)
            await host.audit_use(principal, action, detail)
        else:
            await courses.staff(community_id, await uid(request))

    # ---------------------------------------------------------------------- courses

    async def list_courses(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, CommunityPath)
        user_id = await uid(request)
        member = await courses.member(path.community_id, user_id)
        async with host.connection() as conn:
            rows = await store.courses(conn, path.community_id, courses.is_staff(member))
            mine = {r["course_id"]: r for r in await conn.fetch(
                "SELECT course_id, state, progress_percent FROM enrolments"
                " WHERE community_id = $1 AND user_id = $2", path.community_id, user_id)}
        return _json(CoursesReply(courses=[CourseSummary(
            course=store.course_of(r),
            enrolment_state=mine[r["id"]]["state"] if r["id"] in mine else None,
            progress_percent=mine[r["id"]]["progress_percent"] if r["id"] in mine else 0)
            for r in rows]))

    async def create_course(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, CommunityPath)
        body = await host.read_body(request, CourseCreate)
        course = await authoring.create_course(path.community_id, await uid(request), body)
        return _json(CourseOnlyReply(course=course), 201)

    async def get_course(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, CoursePath)
        return _json(await courses.course_reply(path.community_id, path.course_id,
                                                await uid(request)))

    async def patch_course(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, CoursePath)
        body = await host.read_body(request, CoursePatch)
        return _json(CourseOnlyReply(course=await authoring.patch_course(
            path.community_id, path.course_id, await uid(request), body)))

    async def delete_course(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, CoursePath)
        return _json(CourseOnlyReply(course=await authoring.delete_course(
            path.community_id, path.course_id, await uid(request))))

    async def add_module(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, CoursePath)
        body = await host.read_body(request, ModuleCreate)
        return _json(ModuleReply(module=await authoring.add_module(
            path.community_id, path.course_id, await uid(request), body)), 201)

    async def patch_module(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, ModulePath)
        body = await host.read_body(request, ModulePatch)
        return _json(ModuleReply(module=await authoring.patch_module(
            path.community_id, path.course_id, path.module_id, await uid(request), body)))

    async def add_lesson(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, CoursePath)
        body = await host.read_body(request, LessonCreate)
        return _json(await authoring.add_lesson(path.community_id, path.course_id,
                                                await uid(request), body), 201)

    async def patch_lesson(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, LessonPath)
        body = await host.read_body(request, LessonPatch)
        return _json(await authoring.patch_lesson(path.community_id, path.course_id,
                                                  path.lesson_id, await uid(request), body))

    async def get_lesson(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, LessonPath)
        return _json(await learning.lesson(path.community_id, path.course_id,
                                           path.lesson_id, await uid(request)))

    async def add_question(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, LessonPath)
        body = await host.read_body(request, QuestionCreate)
        return _json(QuestionReply(question=await authoring.add_question(
            path.community_id, path.course_id, path.lesson_id, await uid(request), body)),
            201)

    # -------------------------------------------------------------------- enrolment

    async def enrol(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, CoursePath)
        return _json(EnrolmentReply(enrolment=await courses.enrol(
            path.community_id, path.course_id, await uid(request))))

    async def list_enrolments(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, CoursePath)
        query = host.query_params(request, EnrolmentsQuery)
        await staff_or_key(request, path.community_id, Scope.COURSES_READ,
                           "courses.enrolments.read", {"course_id": path.course_id})
        return _json(await admin.enrolments(path.community_id, path.course_id, query.after,
                                            query.limit))

    async def grant(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, LearnerPath)
        body = await host.read_body(request, GrantBody)
        await staff_or_key(request, path.community_id, Scope.COURSES_WRITE,
                           "courses.grant", {"course_id": path.course_id,
                                             "user_id": path.user_id})
        return _json(EnrolmentReply(enrolment=await admin.grant(
            path.community_id, path.course_id, path.user_id, body.reason)))

    async def revoke(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, LearnerPath)
        body = await host.read_body(request, RevokeBody)
        await courses.staff(path.community_id, await uid(request))
        return _json(EnrolmentReply(enrolment=await admin.revoke(
            path.community_id, path.course_id, path.user_id, body.reason or None)))

    async def release(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, LearnerPath)
        await courses.staff(path.community_id, await uid(request))
        return _json(EnrolmentReply(enrolment=await admin.release(
            path.community_id, path.course_id, path.user_id)))

    # --------------------------------------------------------------------- learning

    async def progress(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, CoursePath)
        body = await host.read_body(request, ProgressBody)
        accepted = await learning.heartbeat(path.community_id, path.course_id,
                                            await uid(request), body)
        return _json(ProgressReply(accepted=accepted))

    async def complete(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, LessonPath)
        return _json(await learning.complete(path.community_id, path.course_id,
                                             path.lesson_id, await uid(request)))

    async def start_attempt(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, LessonPath)
        return _json(await learning.start_attempt(path.community_id, path.course_id,
                                                  path.lesson_id, await uid(request)), 201)

    async def submit_attempt(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, AttemptPath)
        body = await host.read_body(request, SubmitAttempt)
        return _json(await learning.submit_attempt(path.community_id, path.course_id,
                                                   path.lesson_id, path.attempt_id,
                                                   await uid(request), body))

    async def attempts(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, LessonPath)
        return _json(await learning.attempts(path.community_id, path.course_id,
                                             path.lesson_id, await uid(request)))

    async def submit_assignment(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, LessonPath)
        body = await host.read_body(request, SubmitAssignment)
        return _json(SubmissionReply(submission=await learning.submit_assignment(
            path.community_id, path.course_id, path.lesson_id, await uid(request), body)),
            201)

    async def submissions(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, LessonPath)
        return _json(await learning.submissions(path.community_id, path.course_id,
                                                path.lesson_id, await uid(request)))

    async def grade(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, SubmissionPath)
        body = await host.read_body(request, GradeSubmission)
        return _json(SubmissionReply(submission=await learning.grade(
            path.community_id, path.course_id, path.submission_id, await uid(request),
            body)))

    # -------------------------------------------------------------- certificates, xAPI

    async def my_certificate(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, CoursePath)
        return _json(CertificateReply(certificate=await admin.my_certificate(
            path.community_id, path.course_id, await uid(request))))

    async def verify(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, SerialPath)
        return _json(CertificateReply(certificate=await admin.verify(path.serial)))

    async def pdf(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, SerialPath)
        data = await admin.pdf(path.serial)
        return web.Response(body=data, content_type="application/pdf", headers={
            "Content-Disposition": f'inline; filename="certificate-{path.serial}.pdf"'})

    async def revoke_certificate(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, CommunitySerialPath)
        body = await host.read_body(request, RevokeBody)
        await courses.staff(path.community_id, await uid(request))
        return _json(CertificateReply(certificate=await admin.revoke_certificate(
            path.community_id, path.serial, body.reason)))

    async def statements(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, CoursePath)
        query = host.query_params(request, StatementsQuery)
        await staff_or_key(request, path.community_id, Scope.COURSES_READ,
                           "courses.statements.export", {"course_id": path.course_id})
        return _json(await admin.statements(path.community_id, path.course_id, query.after,
                                            query.limit))

    serial = {"serial": Serial}
    staff = " (MANAGE_COURSES)"
    return [
        Route(method="GET", path=C, handler=list_courses, reply=CoursesReply,
              summary="The community's courses (staff: drafts too) with your enrolment."),
        Route(method="POST", path=C, handler=create_course, body=CourseCreate,
              reply=CourseOnlyReply, status=201, summary="Create a course" + staff + "."),
        Route(method="GET", path=COURSE, handler=get_course, reply=CourseReply,
              summary="A course's outline with your lock state and progress of every "
                      "lesson."),
        Route(method="PATCH", path=COURSE, handler=patch_course, body=CoursePatch,
              reply=CourseOnlyReply, summary="Change a course or its status" + staff + "."),
        Route(method="DELETE", path=COURSE, handler=delete_course, reply=CourseOnlyReply,
              summary="Delete a course with its enrolments and certificates" + staff + "."),
        Route(method="POST", path=COURSE + "/modules", handler=add_module, body=ModuleCreate,
              reply=ModuleReply, status=201, summary="Add a module" + staff + "."),
        Route(method="PATCH", path=COURSE + "/modules/{module_id}", handler=patch_module,
              body=ModulePatch, reply=ModuleReply,
              summary="Change a module or its drip" + staff + "."),
        Route(method="POST", path=COURSE + "/lessons", handler=add_lesson, body=LessonCreate,
              reply=LessonReply, status=201, summary="Add a lesson" + staff + "."),
        Route(method="PATCH", path=LESSON, handler=patch_lesson, body=LessonPatch,
              reply=LessonReply, summary="Change a lesson" + staff + "."),
        Route(method="GET", path=LESSON, handler=get_lesson, reply=LessonReply,
              summary="A lesson's content, once open to you (staff: with the quiz's "
                      "answers)."),
        Route(method="POST", path=LESSON + "/questions", handler=add_question,
              body=QuestionCreate, reply=QuestionReply, status=201,
              summary="Add a quiz question" + staff + "."),
        Route(method="POST", path=COURSE + "/enrolment", handler=enrol, reply=EnrolmentReply,
              summary="Enrol yourself (a purchase course waits in pending_payment)."),
        Route(method="GET", path=COURSE + "/enrolments", handler=list_enrolments,
              query=EnrolmentsQuery, reply=EnrolmentsReply, service_key=True,
              summary="The course's enrolments" + staff + ", or with a courses:read key."),
        Route(method="POST", path=COURSE + "/enrolments/{user_id}/grant", handler=grant,
              body=GrantBody, reply=EnrolmentReply, service_key=True,
              summary="Activate a member's enrolment: payment confirmed (a courses:write "
                      "key) or a staff grant" + staff + "."),
        Route(method="POST", path=COURSE + "/enrolments/{user_id}/revoke", handler=revoke,
              body=RevokeBody, reply=EnrolmentReply,
              summary="Revoke a member's enrolment" + staff + "."),
        Route(method="POST", path=COURSE + "/enrolments/{user_id}/release", handler=release,
              reply=EnrolmentReply,
              summary="Open every module to one learner now, whatever its drip" + staff
              + "."),
        Route(method="POST", path=COURSE + "/progress", handler=progress, body=ProgressBody,
              reply=ProgressReply,
              summary="Progress heartbeats (watched seconds, position, time spent), "
                      "batched; answered once committed."),
        Route(method="POST", path=LESSON + "/complete", handler=complete,
              reply=LessonStateReply,
              summary="Complete a lesson (watch rule and live attendance checked)."),
        Route(method="POST", path=LESSON + "/attempts", handler=start_attempt,
              reply=AttemptStarted, status=201,
              summary="Start a quiz attempt: its questions, without answers."),
        Route(method="GET", path=LESSON + "/attempts", handler=attempts, reply=AttemptsReply,
              summary="Your attempt history of a quiz."),
        Route(method="POST", path=LESSON + "/attempts/{attempt_id}/submit",
              handler=submit_attempt, body=SubmitAttempt, reply=AttemptResult,
              summary="Submit a quiz attempt: graded on the server."),
        Route(method="POST", path=LESSON + "/submissions", handler=submit_assignment,
              body=SubmitAssignment, reply=SubmissionReply, status=201,
              summary="Submit an assignment (text, link or file URL)."),
        Route(method="GET", path=LESSON + "/submissions", handler=submissions,
              reply=SubmissionsReply,
              summary="An assignment's submissions (yours; staff: everyone's)."),
        Route(method="POST", path=COURSE + "/submissions/{submission_id}/grade",
              handler=grade, body=GradeSubmission, reply=SubmissionReply,
              summary="Grade a submission, with feedback" + staff + "."),
        Route(method="GET", path=COURSE + "/certificate", handler=my_certificate,
              reply=CertificateReply, summary="Your certificate of the course."),
        Route(method="GET", path=COURSE + "/statements", handler=statements,
              query=StatementsQuery, reply=StatementsReply, service_key=True,
              summary="The course's learner statements as xAPI" + staff
              + ", or with a courses:read key."),
        Route(method="POST", path="/communities/{community_id}/certificates/{serial}/revoke",
              handler=revoke_certificate, body=RevokeBody, reply=CertificateReply,
              path_types=serial, summary="Revoke a certificate" + staff + "."),
        Route(method="GET", path="/certificates/{serial}", handler=verify,
              reply=CertificateReply, auth=False, path_types=serial,
              summary="Verify a certificate: valid or revoked (no login)."),
        Route(method="GET", path="/certificates/{serial}/pdf", handler=pdf,
              reply=CertificateReply, auth=False, path_types=serial,
              media_type="application/pdf",
              summary="A certificate as PDF (no login)."),
    ]

