"""The courses sidecar's REST bodies, queries and replies (msgspec, bounded).

Learner-facing types never carry correct answers: :class:`QuestionView` (what an
attempt shows) has no field for them, and :class:`QuestionAuthored` (with them) is
only in staff replies. Gateway events are in ``protocol/sidecar.py``."""

from __future__ import annotations

from typing import Annotated

import msgspec

from protocol.models import Id, Millis
from protocol.sidecar import EnrolmentState
from sidecars.courses.rules import AccessKind, DripKind, LessonState, QuestionKind

Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(max_length=20_000)]
Url = Annotated[str, msgspec.Meta(max_length=2048)]
Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]
Position = Annotated[int, msgspec.Meta(ge=0, le=100_000)]
Seconds = Annotated[int, msgspec.Meta(ge=0, le=86_400 * 366)]
SERIAL_PATTERN = "^[A-Z0-9]{4}(-[A-Z0-9]{4}){3}$"
Serial = Annotated[str, msgspec.Meta(pattern=SERIAL_PATTERN, min_length=19, max_length=19,
                                     description="`XXXX-XXXX-XXXX-XXXX`")]

# ------------------------------------------------------------------------ paths


class CommunityPath(msgspec.Struct):
    community_id: Id


class CoursePath(msgspec.Struct):
    community_id: Id
    course_id: Id


class ModulePath(msgspec.Struct):
    community_id: Id
    course_id: Id
    module_id: Id


class LessonPath(msgspec.Struct):
    community_id: Id
    course_id: Id
    lesson_id: Id


class AttemptPath(msgspec.Struct):
    community_id: Id
    course_id: Id
    lesson_id: Id
    attempt_id: Id


class SubmissionPath(msgspec.Struct):
    community_id: Id
    course_id: Id
    submission_id: Id


class LearnerPath(msgspec.Struct):
    community_id: Id
    course_id: Id
    user_id: Id


class SerialPath(msgspec.Struct):
    serial: Serial


class CommunitySerialPath(msgspec.Struct):
    community_id: Id
    serial: Serial


# ---------------------------------------------------------------------- authoring


class AccessRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who may enrol: ``open`` (members), ``tier`` (member tier >= ``value``),
    ``level`` (gamification level >= ``value``; no level provider exists yet, so a
    grant is needed), ``purchase`` (``price_id`` of the billing service; enrolment
    waits in ``pending_payment`` until granted), ``days_after_join`` (member for >=
    ``value`` days), ``manual`` (staff grant only)."""

    kind: AccessKind = AccessKind.OPEN
    value: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    price_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class CourseCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST .../courses`` (``MANAGE_COURSES``): a new course, in ``draft``."""

    title: Title
    description: Text = ""
    cover_url: Url | None = None
    access: AccessRule = AccessRule()
    prerequisite_ids: Annotated[list[Id], msgspec.Meta(max_length=20)] = []
    completion_percent: Annotated[int, msgspec.Meta(ge=1, le=100, description=(
        "Completed when this share of the required lessons is done."))] = 100
    certificate: bool = False
    lessons_in_order: bool = False
    min_watch_percent: Annotated[Percent, msgspec.Meta(description=(
        "A video lesson completes only once this share of it was watched (0: any)."))] = 0
    access_days: Annotated[int, msgspec.Meta(ge=1, le=36_500, description=(
        "An enrolment expires this many days after it was activated (null: never)."))
    ] | None = None
    discussion_channel: Annotated[bool, msgspec.Meta(description=(
        "Make a private channel whose members are exactly the enrolled learners."))] = False


class CoursePatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``PATCH .../courses/{course_id}``: left-out fields keep their value.
    ``status`` moves ``draft`` -> ``published`` -> ``archived`` (and back to draft
    from either)."""

    title: Title | None = None
    description: Text | None = None
    cover_url: Url | None = None
    status: Annotated[str, msgspec.Meta(pattern="^(draft|published|archived)$")] | None = None
    access: AccessRule | None = None
    prerequisite_ids: Annotated[list[Id], msgspec.Meta(max_length=20)] | None = None
    completion_percent: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    certificate: bool | None = None
    lessons_in_order: bool | None = None
    min_watch_percent: Percent | None = None
    discussion_channel: bool | None = None


class Course(msgspec.Struct, frozen=True, kw_only=True):
    id: Id
    community_id: Id
    title: str
    description: str
    cover_url: str | None
    status: str
    access: AccessRule
    prerequisite_ids: list[int]
    completion_percent: int
    certificate: bool
    lessons_in_order: bool
    min_watch_percent: int
    access_days: int | None
    discussion_channel_id: Id | None
    created_at: Millis
    updated_at: Millis


class ModuleCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A module; ``drip`` says when its lessons open for a learner: ``immediate``,
    ``after_days`` (``drip_days`` after the enrolment was activated), ``at_date``
    (``drip_at``), ``after_previous`` (once the previous module's required lessons
    are done)."""

    title: Title
    position: Position = 0
    drip: DripKind = DripKind.IMMEDIATE
    drip_days: Annotated[int, msgspec.Meta(ge=0, le=3650)] = 0
    drip_at: Millis | None = None


class ModulePatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    title: Title | None = None
    position: Position | None = None
    drip: DripKind | None = None
    drip_days: Annotated[int, msgspec.Meta(ge=0, le=3650)] | None = None
    drip_at: Millis | None = None


class Module(msgspec.Struct, frozen=True, kw_only=True):
    id: Id
    course_id: Id
    title: str
    position: int
    drip: DripKind
    drip_days: int
    drip_at: Millis | None


class QuizSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a quiz lesson is taken; graded on the server."""

    pass_percent: Percent = 70
    time_limit_s: Annotated[int, msgspec.Meta(ge=10, le=86_400)] | None = None
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    shuffle_questions: bool = False
    shuffle_answers: bool = False
    pool_size: Annotated[int, msgspec.Meta(ge=1, le=200, description=(
        "Each attempt draws this many questions at random (null: all)."))] | None = None


class RubricItem(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    criterion: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    points: Annotated[int, msgspec.Meta(ge=0, le=1000)]


class AssignmentSettings(msgspec.Struct, frozen=True, kw_only=True,
                         forbid_unknown_fields=True):
    """An assignment lesson: learners submit text, a link or a file URL; staff grade
    against the rubric (``pass_points`` of its total to pass)."""

    instructions: Text = ""
    rubric: Annotated[list[RubricItem], msgspec.Meta(max_length=20)] = []
    pass_points: Annotated[int, msgspec.Meta(ge=0, le=20_000)] = 0
    peer_review: Annotated[bool, msgspec.Meta(description=(
        "Stored for a later peer-review flow; not acted on yet."))] = False


LessonKindT = Annotated[str, msgspec.Meta(
    pattern="^(video|text|audio|file|quiz|assignment|live_session)$")]


class LessonCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A lesson of a module: ``video`` (``media_url``, ``duration_s`` for the watched
    share), ``text`` (markdown ``body``), ``audio``, ``file``, ``quiz``
    (``quiz`` settings, then questions), ``assignment`` (``assignment``),
    ``live_session`` (completed by attending ``live_min_percent`` of the Hearth live
    session ``live_session_id``, from its attendance report)."""

    module_id: Id
    title: Title
    kind: LessonKindT
    position: Position = 0
    required: bool = True
    preview: bool = False
    body: Text = ""
    media_url: Url | None = None
    duration_s: Seconds = 0
    live_session_id: Id | None = None
    live_min_percent: Annotated[int, msgspec.Meta(ge=1, le=100)] = 50
    quiz: QuizSettings | None = None
    assignment: AssignmentSettings | None = None


class LessonPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    title: Title | None = None
    position: Position | None = None
    required: bool | None = None
    preview: bool | None = None
    body: Text | None = None
    media_url: Url | None = None
    duration_s: Seconds | None = None
    live_session_id: Id | None = None
    live_min_percent: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    quiz: QuizSettings | None = None
    assignment: AssignmentSettings | None = None


Choice = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class QuestionCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A quiz question. ``single``/``multiple``/``true_false``: ``choices`` and the
    indices of the right ones in ``correct_choices`` (true/false: choices are
    ``["true", "false"]`` when left out); ``short``: ``accepted_answers``, matched
    after normalising (case, width, spaces, trailing punctuation)."""

    kind: QuestionKind
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    choices: Annotated[list[Choice], msgspec.Meta(max_length=10)] = []
    correct_choices: Annotated[list[Annotated[int, msgspec.Meta(ge=0, le=9)]],
                               msgspec.Meta(max_length=10)] = []
    accepted_answers: Annotated[list[Choice], msgspec.Meta(max_length=20)] = []
    points: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1
    position: Position = 0


class QuestionAuthored(msgspec.Struct, frozen=True, kw_only=True):
    """A question as staff see it (with its answers)."""

    id: Id
    kind: QuestionKind
    prompt: str
    choices: list[str]
    correct_choices: list[int]
    accepted_answers: list[str]
    points: int
    position: int


class Lesson(msgspec.Struct, frozen=True, kw_only=True):
    """A lesson's content (no correct answers: questions are shown per attempt)."""

    id: Id
    course_id: Id
    module_id: Id
    title: str
    kind: str
    position: int
    required: bool
    preview: bool
    body: str
    media_url: str | None
    duration_s: int
    live_session_id: Id | None
    live_min_percent: int
    quiz: QuizSettings | None
    assignment: AssignmentSettings | None
    question_count: int = 0


class LessonReply(msgspec.Struct, frozen=True, kw_only=True):
    lesson: Lesson
    state: LessonState
    questions: Annotated[list[QuestionAuthored] | None, msgspec.Meta(
        description="Staff only (MANAGE_COURSES): the quiz with its answers.")] = None


class QuestionReply(msgspec.Struct, frozen=True, kw_only=True):
    question: QuestionAuthored


# -------------------------------------------------------------------- enrolments


class Enrolment(msgspec.Struct, frozen=True, kw_only=True):
    id: Id
    course_id: Id
    user_id: Id
    state: EnrolmentState
    reason: str | None
    released: bool
    progress_percent: int
    enrolled_at: Millis
    activated_at: Millis | None
    completed_at: Millis | None
    expires_at: Millis | None


class EnrolmentReply(msgspec.Struct, frozen=True, kw_only=True):
    enrolment: Enrolment


class EnrolmentsReply(msgspec.Struct, frozen=True, kw_only=True):
    enrolments: list[Enrolment]


class EnrolmentsQuery(msgspec.Struct, kw_only=True):
    after: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1, description=(
        "Enrolment id to continue after."))] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


class GrantBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Activate an enrolment: payment confirmed (a billing service, with a
    ``courses:write`` key) or a staff grant; enrols the member first if needed."""

    reason: Annotated[str, msgspec.Meta(max_length=200)] | None = None


# ------------------------------------------------------------------------ outline


class LessonOutline(msgspec.Struct, frozen=True, kw_only=True):
    id: Id
    title: str
    kind: str
    required: bool
    preview: bool
    duration_s: int
    state: LessonState
    watched_percent: Percent = 0
    time_spent_s: int = 0


class ModuleOutline(msgspec.Struct, frozen=True, kw_only=True):
    id: Id
    title: str
    drip: DripKind
    open: bool
    opens_at: Millis | None = None
    lessons: list[LessonOutline]


class CourseReply(msgspec.Struct, frozen=True, kw_only=True):
    """A course with the caller's view of it: every module and lesson with the
    caller's lock state and progress."""

    course: Course
    enrolment: Enrolment | None
    modules: list[ModuleOutline]
    progress_percent: Percent


class CourseSummary(msgspec.Struct, frozen=True, kw_only=True):
    course: Course
    enrolment_state: EnrolmentState | None
    progress_percent: Percent


class CoursesReply(msgspec.Struct, frozen=True, kw_only=True):
    courses: list[CourseSummary]


class CourseOnlyReply(msgspec.Struct, frozen=True, kw_only=True):
    course: Course


class ModuleReply(msgspec.Struct, frozen=True, kw_only=True):
    module: Module


# ----------------------------------------------------------------------- progress


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One lesson's progress since the last beat (a video player sends one every
    10 s). ``watched_s`` is the total seconds watched so far (kept as the maximum)."""

    lesson_id: Id
    watched_s: Seconds = 0
    position_s: Seconds = 0
    time_spent_s: Annotated[int, msgspec.Meta(ge=0, le=600, description=(
        "Seconds spent since the previous beat (at most 600)."))] = 0


class ProgressBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    items: Annotated[list[Heartbeat], msgspec.Meta(min_length=1, max_length=50)]


class ProgressReply(msgspec.Struct, frozen=True, kw_only=True):
    accepted: Annotated[int, msgspec.Meta(description="Beats written.")]


class LessonStateReply(msgspec.Struct, frozen=True, kw_only=True):
    lesson_id: Id
    state: LessonState
    progress_percent: Percent
    course_completed: bool
    certificate_serial: str | None = None


# ------------------------------------------------------------------------- quizzes


class QuestionView(msgspec.Struct, frozen=True, kw_only=True):
    """A question as an attempt shows it: choices in the attempt's order, no
    answers."""

    id: Id
    kind: QuestionKind
    prompt: str
    choices: list[str]
    points: int


class AttemptStarted(msgspec.Struct, frozen=True, kw_only=True):
    attempt_id: Id
    started_at: Millis
    deadline: Annotated[Millis | None, msgspec.Meta(description=(
        "Submit by then (a 5 s grace follows); null without a time limit."))]
    questions: list[QuestionView]
    attempts_left: int | None


class Answer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    question_id: Id
    choices: Annotated[list[Annotated[int, msgspec.Meta(ge=0, le=9)]],
                       msgspec.Meta(max_length=10, description=(
                           "Indices as shown in the attempt."))] = []
    text: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class SubmitAttempt(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    answers: Annotated[list[Answer], msgspec.Meta(max_length=200)]


class QuestionResult(msgspec.Struct, frozen=True, kw_only=True):
    """After submission: whether the answer was right, and the right one (indices as
    shown in the attempt)."""

    question_id: Id
    correct: bool
    points: int
    correct_choices: list[int]
    accepted_answers: list[str]


class AttemptResult(msgspec.Struct, frozen=True, kw_only=True):
    attempt_id: Id
    score: int
    max_score: int
    passed: bool
    late: Annotated[bool, msgspec.Meta(description=(
        "Submitted after the deadline and its grace: scored 0 and failed."))]
    submitted_at: Millis
    results: list[QuestionResult]
    attempts_left: int | None


class AttemptSummary(msgspec.Struct, frozen=True, kw_only=True):
    attempt_id: Id
    started_at: Millis
    submitted_at: Millis | None
    score: int | None
    max_score: int | None
    passed: bool | None
    late: bool


class AttemptsReply(msgspec.Struct, frozen=True, kw_only=True):
    attempts: list[AttemptSummary]


# ---------------------------------------------------------------------- assignments


class SubmitAssignment(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    kind: Annotated[str, msgspec.Meta(pattern="^(text|link|file)$")]
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000, description=(
        "The text, or the URL of the link or uploaded file."))]


class GradeSubmission(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    score: Annotated[int, msgspec.Meta(ge=0, le=20_000)]
    feedback: Annotated[str, msgspec.Meta(max_length=4000)] = ""
    passed: bool | None = None
    """Default: score >= the assignment's pass_points."""


class Submission(msgspec.Struct, frozen=True, kw_only=True):
    id: Id
    lesson_id: Id
    user_id: Id
    kind: str
    content: str
    submitted_at: Millis
    score: int | None
    max_score: int
    passed: bool | None
    feedback: str | None
    graded_by: Id | None
    graded_at: Millis | None


class SubmissionReply(msgspec.Struct, frozen=True, kw_only=True):
    submission: Submission


class SubmissionsReply(msgspec.Struct, frozen=True, kw_only=True):
    submissions: list[Submission]


# --------------------------------------------------------------------- certificates


class Certificate(msgspec.Struct, frozen=True, kw_only=True):
    serial: str
    course_id: Id
    community_id: Id
    user_id: Id
    learner_name: str
    course_title: str
    issued_at: Millis
    valid: bool
    revoked_at: Millis | None
    revoked_reason: str | None
    verify_url: Annotated[str, msgspec.Meta(description=(
        "The public verification route (no login)."))]


class CertificateReply(msgspec.Struct, frozen=True, kw_only=True):
    certificate: Certificate


class RevokeBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


# ------------------------------------------------------------------------ xAPI


class XapiAccount(msgspec.Struct, frozen=True, kw_only=True):
    homePage: str
    name: str


class XapiActor(msgspec.Struct, frozen=True, kw_only=True):
    objectType: str
    account: XapiAccount


class XapiVerb(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    display: dict[str, str]


class XapiDefinition(msgspec.Struct, frozen=True, kw_only=True):
    type: str


class XapiObject(msgspec.Struct, frozen=True, kw_only=True):
    objectType: str
    id: str
    definition: XapiDefinition


class XapiScore(msgspec.Struct, frozen=True, kw_only=True):
    raw: int
    max: int
    scaled: float


class XapiResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    score: XapiScore | None = None
    success: bool | None = None
    completion: bool | None = None
    duration: str | None = None
    response: str | None = None


class XapiStatement(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    actor: XapiActor
    verb: XapiVerb
    object: XapiObject
    timestamp: str
    result: XapiResult | None = None


class StatementsQuery(msgspec.Struct, kw_only=True):
    after: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 500


class StatementsReply(msgspec.Struct, frozen=True, kw_only=True):
    """xAPI 1.0.3 statements of the course, oldest first; continue with
    ``after=next_after``."""

    statements: list[XapiStatement]
    next_after: int | None
