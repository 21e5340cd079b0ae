"""Live sessions (issue 6): scheduled talks on a stage channel, with Q&A.

Wire types only (no I/O), shared by the gateway (stage and Q&A ops, their results and
events, added to the unions of :mod:`protocol.frames`) and the REST API
(``server/api_live.py``: the bodies and replies below).

A live session moves ``scheduled`` -> ``live`` -> ``ended``, or ``scheduled`` ->
``cancelled``; nothing else. Its stage channel (kind ``stage``) is created with it;
its media is the voice room of that channel (``voice_join``). On the stage the host,
the co-hosts and the promoted speakers talk (at most ``limits.max_stage_speakers``
together); everyone else listens and may raise a hand.

Same evolution rules as :mod:`protocol.models`: new fields only with defaults.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from protocol.base import EventBase, Request, ResultBase
from protocol.models import Id, Millis

Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Description = Annotated[str, msgspec.Meta(max_length=4000)]
SessionDuration = Annotated[int, msgspec.Meta(ge=60, le=86_400,
                                              description="Seconds, 1 minute to 24 hours.")]
Capacity = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
TierLevel = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
CourseRef = Annotated[str, msgspec.Meta(max_length=200)]
QuestionText = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


class LiveSessionState(enum.StrEnum):
    """Where a live session is: ``scheduled`` -> ``live`` -> ``ended``, or
    ``scheduled`` -> ``cancelled``."""

    SCHEDULED = "scheduled"
    LIVE = "live"
    ENDED = "ended"
    CANCELLED = "cancelled"


class QuestionState(enum.StrEnum):
    """A Q&A question is ``open`` until a host, co-host or moderator marks it
    ``answered`` or ``dismissed``."""

    OPEN = "open"
    ANSWERED = "answered"
    DISMISSED = "dismissed"


# ------------------------------------------------------------------------------ records


class LiveSession(msgspec.Struct, frozen=True, kw_only=True):
    """A scheduled talk and its stage channel."""

    id: Id
    community_id: Id
    channel_id: Id
    """The session's stage channel (kind ``stage``): join its voice room to attend."""
    title: str
    """What the session is about (1 to 200 characters)."""
    description: str = ""
    """Longer text shown to members (up to 4,000 characters)."""
    host_id: Id | None = None
    """Who runs the session (null if their account was deleted)."""
    starts_at: Millis = 0
    """When it is planned to start (reminders go out before it)."""
    duration_s: int = 3600
    """Planned length in seconds."""
    capacity: int | None = None
    """Most members who may register (null: no limit)."""
    required_tier: int = 0
    """Members below this tier cannot register or see the stage (0: everyone)."""
    prerequisite_course: str | None = None
    """A course to have completed first: a course id in decimal (``"42"``), checked at
    registration (``prerequisite_not_met`` until completed; staff with
    ``MANAGE_CHANNELS`` are exempt, as for the tier); any other text is a label from
    before courses existed, shown and not checked."""
    recorded: bool = False
    """The stage's audio mix is recorded (WAV) while live."""
    state: LiveSessionState = LiveSessionState.SCHEDULED
    """``scheduled``, ``live``, ``ended`` or ``cancelled``."""
    started_at: Millis | None = None
    """When it went live."""
    ended_at: Millis | None = None
    """When it ended or was cancelled."""
    cohost_ids: list[int] = []
    """Co-hosts: they may start, end, promote and moderate Q&A like the host."""
    registered_count: int = 0
    """Members registered."""
    recording_path: str | None = None
    """Where the recording was written (server-side path), once ended."""
    recording_s: float | None = None
    """Length of the recording in seconds, once ended."""
    created_at: Millis = 0


class StageState(msgspec.Struct, frozen=True, kw_only=True):
    """Who is on a live session's stage."""

    session_id: Id
    channel_id: Id
    """The stage channel."""
    speakers: list[int] = []
    """Everyone who may talk: the host, the co-hosts and promoted speakers."""
    cohosts: list[int] = []
    """The co-hosts (the host is not listed)."""
    hands: list[int] = []
    """Raised hands, oldest first."""


class Question(msgspec.Struct, frozen=True, kw_only=True):
    """A Q&A question."""

    id: Id
    session_id: Id
    author_id: Id | None
    """Who asked (null if their account was deleted)."""
    text: str
    """The question."""
    state: QuestionState = QuestionState.OPEN
    """``open``, ``answered`` or ``dismissed``."""
    votes: int = 0
    """Members who voted it up."""
    created_at: Millis = 0
    resolved_by: Id | None = None
    """Who marked it answered or dismissed."""


class AttendanceInterval(msgspec.Struct, frozen=True, kw_only=True):
    """One stretch a member spent in the stage's voice room."""

    joined_at: Millis
    """When they joined the voice room."""
    left_at: Millis | None = None
    """When they left (null: still there)."""


class Attendee(msgspec.Struct, frozen=True, kw_only=True):
    """One member's attendance of a session."""

    user_id: Id
    intervals: list[AttendanceInterval] = []
    """Their stretches in the stage, oldest first (as recorded, not clipped)."""
    total_s: float = 0.0
    """Seconds they were in the stage while the session was live (clipped to the
    session's start and end; overlapping stretches count once)."""
    registered: bool = False
    """They had registered."""


# ------------------------------------------------------------------------ REST bodies


class LiveSessionCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/v1/communities/{id}/live-sessions``: schedule a session
    (``MANAGE_CHANNELS``); its stage channel is created with it."""

    title: Title
    """What the session is about."""
    starts_at: Millis
    """When it is planned to start (ms since the epoch)."""
    duration_s: SessionDuration = 3600
    """Planned length."""
    description: Description = ""
    """Longer text."""
    host_id: Id | None = None
    """The host (a member); default: you."""
    capacity: Capacity | None = None
    """Most registrations (null: no limit)."""
    required_tier: TierLevel = 0
    """Minimum member tier to register and see the stage."""
    prerequisite_course: CourseRef | None = None
    """A course id in decimal (``"42"``): registration needs that course completed
    (``prerequisite_not_met``); other text is a label, not checked."""
    recorded: bool = False
    """Record the stage's audio mix."""


class LiveSessionPatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``PATCH /api/v1/communities/{id}/live-sessions/{sid}``: change a session (host,
    co-host or ``MANAGE_CHANNELS``). Left-out fields keep their value. Only
    ``title`` and ``description`` change once it is live; nothing after it ended."""

    title: Title | None = None
    description: Description | None = None
    starts_at: Millis | None = None
    duration_s: SessionDuration | None = None
    host_id: Id | None = None
    capacity: Capacity | None = None
    clear_capacity: bool = False
    """True removes the capacity limit."""
    required_tier: TierLevel | None = None
    prerequisite_course: CourseRef | None = None
    recorded: bool | None = None


class LiveSessionReply(msgspec.Struct, frozen=True, kw_only=True):
    """A session (REST replies)."""

    session: LiveSession


class LiveSessionsReply(msgspec.Struct, frozen=True, kw_only=True):
    """A community's sessions, by start time (REST)."""

    sessions: list[LiveSession]


class AttendanceReport(msgspec.Struct, frozen=True, kw_only=True):
    """``GET .../live-sessions/{sid}/attendance`` (host, co-host or
    ``MANAGE_CHANNELS``): who came, for how long, and who registered but missed it."""

    session_id: Id
    attendees: list[Attendee] = []
    """Everyone who was in the stage while live (and registered members who were not,
    with ``total_s`` 0), by user id."""
    registered: list[int] = []
    """Registered members."""
    attended: list[int] = []
    """Members who spent any time in the stage while it was live."""
    missed: list[int] = []
    """Registered members who did not attend."""


# --------------------------------------------------------------------- gateway requests


class StageRaiseHand(Request, tag="stage_raise_hand"):
    """Ask to speak on a live session's stage (or lower your hand with ``raised``
    false). The hosts see it in ``stage_update``."""

    session_id: Id
    raised: bool = True
    """True raises your hand, false lowers it."""


class StageSetSpeaker(Request, tag="stage_set_speaker"):
    """Promote a member to speaker or move them back to the audience (host or co-host;
    anyone may step down themselves). Promoting lowers their hand. At most
    ``limits.max_stage_speakers`` on stage, hosts included (``limit_exceeded``)."""

    session_id: Id
    user_id: Id
    speaker: bool
    """True puts them on stage, false back in the audience."""


class StageSetCohost(Request, tag="stage_set_cohost"):
    """Make a member co-host or not (the host, or ``MANAGE_CHANNELS``). Co-hosts are
    on stage and count as speakers."""

    session_id: Id
    user_id: Id
    cohost: bool
    """True makes them co-host, false removes it."""


class StageFetch(Request, tag="stage_fetch"):
    """The stage's current speakers, co-hosts and hands -> ``stage``."""

    session_id: Id


class QaAsk(Request, tag="qa_ask"):
    """Ask a question in a session's Q&A -> ``question``. Moderated like a chat
    message: automod rules, timeouts, channel lock and lockdown apply, at most
    ``limits.questions_per_window`` per ``limits.rate_window_ms``. Not after the
    session ended."""

    session_id: Id
    text: QuestionText
    """1 to ``limits.max_question_chars`` characters."""


class QaVote(Request, tag="qa_vote"):
    """Vote a question up (or take your vote back with ``vote`` false); once per
    member -> ``question``."""

    question_id: Id
    vote: bool = True
    """True votes, false withdraws your vote."""


class QaSetState(Request, tag="qa_set_state"):
    """Mark a question answered or dismissed (host, co-host, or ``MODERATE``)
    -> ``question``."""

    question_id: Id
    state: QuestionState
    """``answered`` or ``dismissed`` (``open`` reopens it)."""


class QaFetch(Request, tag="qa_fetch"):
    """A session's questions, most votes first, then oldest first -> ``questions``.
    Dismissed questions are listed only to hosts, co-hosts and moderators."""

    session_id: Id


LIVE_REQUEST_TYPES: tuple[type[Request], ...] = (
    StageRaiseHand, StageSetSpeaker, StageSetCohost, StageFetch, QaAsk, QaVote,
    QaSetState, QaFetch,
)
"""The live-session requests (served by rooms/voice/live.py)."""


# ----------------------------------------------------------------------------- results


class StageResult(ResultBase, tag="stage"):
    """The stage after a stage request."""

    stage: StageState
    """Speakers, co-hosts and hands now."""


class QuestionResult(ResultBase, tag="question"):
    """The question after ``qa_ask``, ``qa_vote`` or ``qa_set_state``."""

    question: Question
    """The question in its new state."""
    voted: bool = False
    """You have voted for it."""


class QuestionsResult(ResultBase, tag="questions"):
    """A session's questions (``qa_fetch`` and REST)."""

    session_id: Id
    questions: list[Question]
    """Most votes first, then oldest first."""
    voted_ids: list[int] = []
    """The questions you voted for."""


# ------------------------------------------------------------------------------ events


class StageUpdated(EventBase, tag="stage_update"):
    """A live session's stage changed: a hand went up or down, someone was promoted,
    demoted or made co-host. Sent to everyone who sees the stage channel."""

    session_id: Id
    channel_id: Id
    """The stage channel."""
    speakers: list[int] = []
    """Everyone who may talk now (host, co-hosts, promoted speakers)."""
    cohosts: list[int] = []
    """The co-hosts."""
    hands: list[int] = []
    """Raised hands, oldest first."""


class QaUpdated(EventBase, tag="qa_update"):
    """A question was asked, voted on, answered or dismissed. Dismissed questions go
    to everyone who sees the stage too, without their text, so clients drop them (hosts
    and moderators read the text with ``qa_fetch``)."""

    question: Question
    """The question in its new state."""


class LiveSessionUpdated(EventBase, tag="live_session_update"):
    """A live session was scheduled, changed, went live, ended or was cancelled. Sent
    to everyone who sees its stage channel."""

    session: LiveSession
    """The session in its new state."""


class LiveSessionReminder(EventBase, tag="live_session_reminder"):
    """A session you registered for starts soon (sent once, the configured lead time
    before ``starts_at``, 10 minutes by default)."""

    session: LiveSession
    """The session (its stage channel, title, planned start)."""
    starts_in_s: int = 0
    """Seconds until the planned start when the reminder was sent."""


__all__ = [
    "LIVE_REQUEST_TYPES",
    "AttendanceInterval",
    "AttendanceReport",
    "Attendee",
    "LiveSession",
    "LiveSessionCreate",
    "LiveSessionPatch",
    "LiveSessionReminder",
    "LiveSessionReply",
    "LiveSessionState",
    "LiveSessionUpdated",
    "LiveSessionsReply",
    "QaAsk",
    "QaFetch",
    "QaSetState",
    "QaUpdated",
    "QaVote",
    "Question",
    "QuestionResult",
    "QuestionState",
    "QuestionsResult",
    "StageFetch",
    "StageRaiseHand",
    "StageResult",
    "StageSetCohost",
    "StageSetSpeaker",
    "StageState",
    "StageUpdated",
]
