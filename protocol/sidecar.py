"""Sidecar wire types: events sidecars publish to members, and the service-key REST bodies.

Sidecars (``sidecars/``) publish typed events to one user (every session, on every
node) or to a community through the core's bus; the events below are part of protocol
v1 (added to :data:`protocol.frames.Event`, so ``docs/protocol.md`` documents them).
A sidecar adding an event adds its Struct here and to :data:`SidecarEvent`: no untyped
payloads reach a client.

Service keys are how a sidecar or an outside service (billing) acts on a community
without being a member: scoped, expiring, revocable, stored hashed, shown once.

Same evolution rules as :mod:`protocol.models`: new fields only with defaults.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from protocol.base import EventBase, Request, ResultBase
from protocol.models import Id, Millis

# ------------------------------------------------------------------------------ events


class ActivityKind(enum.StrEnum):
    MESSAGE = "message"
    REACTION = "reaction"
    LIVE = "live"
    JOINED = "joined"


class ActivityRecorded(EventBase, tag="activity_recorded"):
    """The activity sidecar (``sidecars/activity``) counted something you did in a
    community; ``total`` is your count of that kind there so far. Sent to you only."""

    # Field notes as Meta descriptions: the protocol doc generator reads those for
    # every module, attribute docstrings only for the modules it lists.
    community_id: Id
    kind: Annotated[ActivityKind, msgspec.Meta(
        description="What was counted: a message sent, a reaction added, a live session "
                    "attended, a community joined.")]
    total: Annotated[int, msgspec.Meta(
        ge=0, description="Your count of `kind` in the community, this one included.")]
    at: Millis


# ------------------------------------------------------------ courses (sidecars/courses)


class EnrolmentState(enum.StrEnum):
    """An enrolment's state (docs/courses.md: the state machine)."""

    PENDING_PAYMENT = "pending_payment"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    EXPIRED = "expired"
    REVOKED = "revoked"


class UnlockReason(enum.StrEnum):
    DRIP = "drip"
    PREVIOUS_COMPLETED = "previous_completed"
    RELEASED = "released"
    PREREQUISITE = "prerequisite"


class CourseChange(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


_Course = Annotated[int, msgspec.Meta(ge=1, le=2**53 - 1, description="The course.")]


class EnrolmentUpdated(EventBase, tag="enrolment_updated", kw_only=True):
    """Your enrolment in a course changed state (enrolled, activated after payment or a
    grant, paused because its access rule stopped holding, resumed, completed, expired,
    revoked). Sent to you only (the courses sidecar, docs/courses.md)."""

    community_id: Id
    course_id: _Course
    enrolment_id: Id
    state: Annotated[EnrolmentState, msgspec.Meta(description="The new state.")]
    reason: Annotated[str | None, msgspec.Meta(
        description="Why (e.g. `tier`, `left`, `granted`); null when self-evident.")] = None
    progress_percent: Annotated[int, msgspec.Meta(ge=0, le=100, description=(
        "Required lessons completed, in percent."))] = 0
    at: Millis


class LessonUnlocked(EventBase, tag="lesson_unlocked", kw_only=True):
    """Lessons of a course you are enrolled in became available: a module's drip time
    was reached (``drip``), the previous module was completed (``previous_completed``),
    staff released the course to you (``released``), or, in a course taken in order,
    the lesson before was completed (``prerequisite``). Sent to you only."""

    community_id: Id
    course_id: _Course
    module_id: Annotated[Id | None, msgspec.Meta(
        description="The module unlocked; null when several were.")] = None
    lesson_ids: Annotated[list[int], msgspec.Meta(
        max_length=1000, description="The lessons now available.")]
    reason: Annotated[UnlockReason, msgspec.Meta(description="What unlocked them.")]
    at: Millis


class CourseCompleted(EventBase, tag="course_completed", kw_only=True):
    """You completed a course (its completion rule holds). Sent to you only."""

    community_id: Id
    course_id: _Course
    certificate_serial: Annotated[str | None, msgspec.Meta(
        description="The certificate issued, if the course issues one "
                    "(`GET /api/v1/certificates/{serial}` verifies it).")] = None
    at: Millis


class QuizGraded(EventBase, tag="quiz_graded", kw_only=True):
    """The server graded your quiz attempt. Sent to you only."""

    community_id: Id
    course_id: _Course
    lesson_id: Id
    attempt_id: Id
    score: Annotated[int, msgspec.Meta(ge=0, description="Points scored (0 when late).")]
    max_score: Annotated[int, msgspec.Meta(ge=0, description="Points of the questions "
                                           "drawn.")]
    passed: Annotated[bool, msgspec.Meta(description="Whether the pass mark was reached.")]
    attempts_left: Annotated[int | None, msgspec.Meta(
        description="Attempts still allowed; null without a limit.")] = None
    at: Millis


class AssignmentGraded(EventBase, tag="assignment_graded", kw_only=True):
    """Staff graded your assignment submission. Sent to you only."""

    community_id: Id
    course_id: _Course
    lesson_id: Id
    submission_id: Id
    score: Annotated[int, msgspec.Meta(ge=0, description="Points given.")]
    max_score: Annotated[int, msgspec.Meta(ge=0, description="The rubric's total.")]
    passed: Annotated[bool, msgspec.Meta(description="A pass completes the lesson.")]
    feedback: Annotated[str, msgspec.Meta(max_length=4000,
                                          description="Staff's words to you.")] = ""
    at: Millis


class CourseChanged(EventBase, tag="course_changed", kw_only=True):
    """A course of the community was created, changed (content, status, access) or
    deleted. Sent to the community's members with ``MANAGE_COURSES`` only."""

    community_id: Id
    course_id: _Course
    change: Annotated[CourseChange, msgspec.Meta(description="What happened to it.")]
    status: Annotated[str, msgspec.Meta(max_length=20, description=(
        "`draft`, `published` or `archived`."))]
    title: Annotated[str, msgspec.Meta(max_length=200, description="Its title now.")]
    by: Annotated[Id | None, msgspec.Meta(description="Who changed it.")] = None
    at: Millis


SidecarEvent = (ActivityRecorded | EnrolmentUpdated | LessonUnlocked | CourseCompleted
                | QuizGraded | AssignmentGraded | CourseChanged)
"""Every event a sidecar may publish."""


# ------------------------------------------------------------------- gateway requests


class ActivityEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One thing a member did, as the activity sidecar recorded it."""

    event_id: Annotated[str, msgspec.Meta(
        description="The domain event it came from (`<xid>:<id>`, see events.md).")]
    kind: Annotated[ActivityKind, msgspec.Meta(description="What the member did.")]
    object_id: Annotated[int | None, msgspec.Meta(
        description="The message, or the live session; null for a join.")]
    at: Millis


class FetchActivity(Request, tag="fetch_activity"):
    """A member's recent activity in a community (the activity sidecar) -> ``activity``.
    Yours, or as the owner, an admin or a moderator anyone's; another member's:
    ``forbidden`` (it names messages in channels you may not see); not a member:
    ``not_found``."""

    community_id: Id
    user_id: Annotated[Id | None, msgspec.Meta(
        description="Whose activity; yours when null.")] = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=200, description="At most this many, "
                                       "newest first.")] = 50


class ActivityResult(ResultBase, tag="activity"):
    items: Annotated[list[ActivityEntry], msgspec.Meta(description="Newest first.")]
    totals: Annotated[dict[str, int], msgspec.Meta(
        description="The member's count of each kind in the community.")]


SidecarRequest = FetchActivity
"""Every gateway request a sidecar serves (added to the client frames)."""
SidecarResult = ActivityResult
"""Every result a sidecar's request answers with."""
SIDECAR_RESULT_OF: dict[type[msgspec.Struct], type[msgspec.Struct]] = {
    FetchActivity: ActivityResult,
}
"""Which result each sidecar request's ``ok`` carries (for the protocol doc)."""


# ------------------------------------------------------------------------ service keys


SERVICE_KEY_PREFIX = "hsk_"
"""How every service key's secret starts (a user's token never does)."""


class Scope(enum.StrEnum):
    """What a service key may do; each route names the one scope it needs."""

    TIERS_READ = "tiers:read"
    TIERS_WRITE = "tiers:write"
    MEMBERS_READ = "members:read"
    COURSES_READ = "courses:read"
    COURSES_WRITE = "courses:write"
    EVENTS_PUBLISH = "events:publish"


KeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
ExpiresIn = Annotated[int, msgspec.Meta(ge=60, le=10 * 365 * 86_400,
                                        description="Seconds, 1 minute to 10 years.")]


class CreateServiceKey(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/v1/communities/{id}/service-keys`` (owner or admin)."""

    name: KeyName
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1, max_length=16)]
    expires_in_s: ExpiresIn | None = None
    """None: the key never expires (revoke it to end it)."""


class ServiceKey(msgspec.Struct, frozen=True, kw_only=True):
    """A service key as listed (never its secret)."""

    id: Id
    community_id: Id
    name: str
    scopes: list[Scope]
    created_by: Id | None
    created_at: Millis
    expires_at: Millis | None
    revoked_at: Millis | None
    last_used_at: Millis | None


class ServiceKeyCreated(msgspec.Struct, frozen=True, kw_only=True):
    """The reply to a creation: the only time ``secret`` is shown."""

    key: ServiceKey
    secret: str
    """Send as ``Authorization: Bearer <secret>``; starts with ``hsk_``
    (:data:`SERVICE_KEY_PREFIX`)."""


class ServiceKeysReply(msgspec.Struct, frozen=True, kw_only=True):
    """The community's service keys (never their secrets)."""

    keys: list[ServiceKey]


class ServiceKeyReply(msgspec.Struct, frozen=True, kw_only=True):
    """One service key, as changed."""

    key: ServiceKey


class ServicePublish(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/v1/service/communities/{cid}/events`` (``events:publish``): deliver a
    typed sidecar event to one member (every session, every node) or, without
    ``user_id``, to every connected member of the community."""

    event: SidecarEvent
    user_id: Id | None = None


class ServiceSetTier(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``PUT /api/v1/service/communities/{cid}/members/{uid}/tier`` (``tiers:write``)."""

    tier: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
    reason: Annotated[str, msgspec.Meta(max_length=512)] | None = None
