"""The courses sidecar (docs/courses.md): courses, modules with drip, lessons, quizzes
graded on the server, assignments, enrolments that pause and resume with the member's
access, certificates with public verification, learner statements (outbox and xAPI).

It reaches the core only through ``sidecars/api.py``: members' bits
(``MANAGE_COURSES``), the outbox (membership changes in, ``learner_statement`` out),
typed gateway events to learners and staff, a private discussion channel per course,
and the ``course`` prerequisite check a live session's registration asks.
"""

from __future__ import annotations

from pathlib import Path

from sidecars.api import Host, PrerequisiteCheck, Route, Sidecar, Subscriber, Task
from sidecars.courses import http
from sidecars.courses.admin import Admin
from sidecars.courses.authoring import Authoring
from sidecars.courses.drip import Drip
from sidecars.courses.events import AccessSync
from sidecars.courses.learning import Learning
from sidecars.courses.progress import ProgressWriter
from sidecars.courses.service import CourseService


class CoursesSidecar(Sidecar):
    name = "courses"
    migrations = Path(__file__).parent / "migrations"

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.courses = CourseService(host)
        self.writer = ProgressWriter(host)
        self.authoring = Authoring(host, self.courses)
        self.learning = Learning(host, self.courses, self.writer)
        self.admin = Admin(host, self.courses)
        self.drip = Drip(host, self.courses)
        self.access = AccessSync(host, self.courses)

    def routes(self) -> list[Route]:
        return http.routes(self.host, self.courses, self.authoring, self.learning,
                           self.admin)

    def subscribers(self) -> list[Subscriber]:
        return [self.access.subscriber()]

    def tasks(self) -> list[Task]:
        return [self.drip.run, self.writer.run]

    def prerequisite_checks(self) -> dict[str, PrerequisiteCheck]:
        return {"course": self.courses.course_prerequisite}


SIDECAR = CoursesSidecar
