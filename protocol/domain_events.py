"""Domain events: the state changes other parts of Hearth consume, as the outbox stores them.

Every change listed here is written as one row of ``outbox_events`` **in the same
transaction** as the change itself (``persistence/outbox.py``), so a change that rolls
back leaves no event and a committed change never lacks its event. Sidecars
(``sidecars/``) read them through named subscribers, each with its own position.

These are not gateway frames: no client ever receives them. They are versioned like
the wire types all the same: a new field only with a default, a new event only as a new
tag; a consumer ignores tags it does not know (:func:`decode_event` returns None).
``docs/events.md`` is generated from this module (``render_events_markdown``).

Ids are positive integers below 2**53, times integer milliseconds since the Unix epoch.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from protocol.models import Id, Millis, Role, Seq

Tier = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]


class DomainEventBase(msgspec.Struct, tag_field="type", kw_only=True, frozen=True):
    """Base of every domain event; ``type`` is the tag."""


class MessageSent(DomainEventBase, tag="message_sent", frozen=True):
    """A message was stored (group commit: one event per new message, in the batch's
    transaction; a retried nonce stores nothing and emits nothing)."""

    message_id: Id
    channel_id: Id
    community_id: Id | None
    """None in a DM or group DM."""
    author_id: Id
    seq: Seq
    at: Millis
    reply_to_id: Id | None = None


class MessageDeleted(DomainEventBase, tag="message_deleted", frozen=True):
    """A message was deleted (by its author or a moderator)."""

    message_id: Id
    channel_id: Id
    community_id: Id | None
    author_id: Id


class ReactionAdded(DomainEventBase, tag="reaction_added", frozen=True):
    """A member reacted to a message (not emitted when the reaction was already there)."""

    message_id: Id
    channel_id: Id
    community_id: Id | None
    user_id: Id
    emoji: str


class ReactionRemoved(DomainEventBase, tag="reaction_removed", frozen=True):
    """A member took a reaction back."""

    message_id: Id
    channel_id: Id
    community_id: Id | None
    user_id: Id
    emoji: str


class MemberJoined(DomainEventBase, tag="member_joined", frozen=True):
    """Someone became a member of a community (invite, open join, starter community,
    creating it)."""

    community_id: Id
    user_id: Id
    role: Role


class MemberLeft(DomainEventBase, tag="member_left", frozen=True):
    """A membership ended (left, kicked or banned)."""

    community_id: Id
    user_id: Id


class MemberTierChanged(DomainEventBase, tag="member_tier_changed", frozen=True):
    """A member's tier changed (staff, or a service principal with ``tiers:write``)."""

    community_id: Id
    user_id: Id
    before: Tier
    after: Tier


class MemberRoleChanged(DomainEventBase, tag="member_role_changed", frozen=True):
    """A member's fixed role changed (owner, admin, moderator, member)."""

    community_id: Id
    user_id: Id
    role: Role


class MemberRolesChanged(DomainEventBase, tag="member_roles_changed", frozen=True):
    """A member's custom roles were replaced; ``role_ids`` is the new set."""

    community_id: Id
    user_id: Id
    role_ids: list[int]


class AttendanceChange(enum.StrEnum):
    JOINED = "joined"
    LEFT = "left"


class LiveAttended(DomainEventBase, tag="live_attended", frozen=True):
    """A member entered (``joined``) or left (``left``) a live session's stage; the
    attendance report (``live_attendance``) is the record these come from."""

    live_session_id: Id
    community_id: Id
    user_id: Id
    change: AttendanceChange
    at: Millis


class VoiceAttended(DomainEventBase, tag="voice_attended", frozen=True):
    """A member entered (``joined``) or left (``left``) a voice room. Voice presence
    lives in Redis, not PostgreSQL, so this is written just after the change, in its own
    transaction: a process killed in between loses it (a live session's stage
    attendance, ``live_attended``, has no such gap)."""

    channel_id: Id
    community_id: Id
    user_id: Id
    change: AttendanceChange
    at: Millis


class LoggedIn(DomainEventBase, tag="logged_in", frozen=True):
    """A user signed in with their password (daily actives, security reports)."""

    user_id: Id


class StatementResult(msgspec.Struct, kw_only=True, frozen=True):
    """The outcome of a learner statement (xAPI's ``result``); every field optional."""

    score: int | None = None
    """Points scored (a quiz, a graded assignment)."""
    max_score: int | None = None
    success: bool | None = None
    """Passed (true) or failed (false); null when not graded."""
    completion: bool | None = None
    """Whether the object is now completed."""
    duration_s: int | None = None
    """Time spent, in seconds."""
    response: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    """A short note (a state a learner moved to, a late submission's rule)."""


class LearnerStatement(DomainEventBase, tag="learner_statement", frozen=True, kw_only=True):
    """A learner did something in a sidecar (the courses sidecar: enrolled, started,
    progressed, completed, attempted, passed, failed, submitted, scored, earned a
    certificate). Shaped like an xAPI statement: ``actor`` (``user_id``), ``verb``,
    ``object`` (``object_type`` + ``object_id``, inside ``course_id``) and
    ``result``, so analytics and gamification consume every learner action the same
    way. Written in the transaction of the change by the sidecar
    (``Host.append_events``)."""

    community_id: Id
    user_id: Id
    verb: Annotated[str, msgspec.Meta(max_length=40, description="xAPI-style verb: "
                                      "`enrolled`, `completed`, `passed`...")]
    object_type: Annotated[str, msgspec.Meta(max_length=40, description="`course`, "
                                             "`lesson`, `module`, `quiz`, `assignment`, "
                                             "`certificate`.")]
    object_id: Annotated[str, msgspec.Meta(max_length=64)]
    course_id: Id | None = None
    result: StatementResult | None = None
    at: Millis


DomainEvent = (
    MessageSent
    | MessageDeleted
    | ReactionAdded
    | ReactionRemoved
    | MemberJoined
    | MemberLeft
    | MemberTierChanged
    | MemberRoleChanged
    | MemberRolesChanged
    | LiveAttended
    | VoiceAttended
    | LoggedIn
    | LearnerStatement
)
"""Every domain event the core (and a sidecar, through ``Host.append_events``) writes
to the outbox."""

_decoder = msgspec.json.Decoder(DomainEvent)
_encoder = msgspec.json.Encoder()


def event_type(event: DomainEvent) -> str:
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def encode_event(event: DomainEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(payload: bytes | str) -> DomainEvent | None:
    """The event, or None for a tag this version does not know (newer writer)."""
    try:
        return _decoder.decode(payload)
    except msgspec.ValidationError:
        return None


def community_of(event: DomainEvent) -> int | None:
    """The community an event belongs to (stored in its own column for filtering)."""
    return getattr(event, "community_id", None)
