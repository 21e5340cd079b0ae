"""Records of moderation that appear inside frames: sanctions, audit entries, the review
queue, appeals, and the live moderator feed's signals.

Pure wire types (no I/O), shared by the gateway, the REST API and the moderator console.
Same evolution rules as :mod:`protocol.models`: new fields only with defaults.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from protocol.models import Id, Millis


class SanctionKind(enum.StrEnum):
    """What a moderator did to a member."""

    WARN = "warn"
    TIMEOUT = "timeout"
    KICK = "kick"
    BAN = "ban"


class Sanction(msgspec.Struct, frozen=True, kw_only=True):
    """A sanction as its target sees it (``member_sanctioned``, ``community_unavailable``).
    ``audit_id`` names the action: an appeal points at it."""

    community_id: Id
    kind: SanctionKind
    """Warn, timeout, kick or ban."""
    reason: str | None = None
    """The moderator's reason (may be null)."""
    expires_at: Millis | None = None
    """When a timeout or ban ends (null: permanent ban, or a warn/kick)."""
    audit_id: Id | None = None


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One audit log entry: who (``actor_id``, null for automod or a deleted account)
    did ``action`` to ``target_type``/``target_id``, why, and what changed."""

    id: Id
    community_id: Id | None
    actor_id: Id | None
    action: str
    """Dotted name: ``message.delete``, ``member.ban``, ``role.update``..."""
    target_type: str
    """``message``, ``user``, ``channel``, ``community``, ``role``, ``rule``..."""
    target_id: Id | None
    reason: str | None
    """Why, as the actor gave it."""
    before: dict[str, Any] | None = None
    """The changed fields before the action (null for a creation)."""
    after: dict[str, Any] | None = None
    """The changed fields after the action (null for a deletion)."""
    created_at: Millis = 0


class ReviewStatus(enum.StrEnum):
    """Where a review item is: ``open`` -> ``claimed`` (a moderator took it) ->
    ``resolved`` (with a decision)."""

    OPEN = "open"
    CLAIMED = "claimed"
    RESOLVED = "resolved"


class ReviewKind(enum.StrEnum):
    MESSAGE = "message"
    USER = "user"


class ReviewItem(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the review queue: a reported or flagged message (or a reported
    user). Several reports of one message are one item; ``report_count`` counts them
    and ``flag_count`` counts automod flags."""

    id: Id
    community_id: Id
    kind: ReviewKind
    """A reported/flagged message, or a reported user."""
    status: ReviewStatus
    """Where the item is in the queue."""
    channel_id: Id | None = None
    message_id: Id | None = None
    target_user_id: Id | None = None
    content: str = ""
    """The message's content when it was first reported or flagged."""
    first_reason: str = ""
    """The reason of the first report or flag."""
    sources: list[str] = []
    """``report`` and/or ``automod:<rule name>``."""
    report_count: int = 0
    """Members who reported it."""
    flag_count: int = 0
    """Automod flags."""
    claimed_by: Id | None = None
    resolved_by: Id | None = None
    decision: str | None = None
    """How it was resolved: ``dismissed``, or the action taken (``message.delete``,
    ``member.timeout``, ``member.ban``...)."""
    decision_reason: str | None = None
    """The resolving moderator's reason."""
    created_at: Millis = 0
    updated_at: Millis = 0


class AppealStatus(enum.StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Appeal(msgspec.Struct, frozen=True, kw_only=True):
    """A member's appeal against one timeout or ban (``audit_id``). Accepting it lifts
    the sanction; one appeal per action."""

    id: Id
    community_id: Id
    user_id: Id
    audit_id: Id
    action: str
    """The sanction appealed: ``member.ban`` or ``member.timeout``."""
    text: str
    """The member's case."""
    status: AppealStatus
    """Open until a moderator accepts or rejects it."""
    resolved_by: Id | None = None
    decision_reason: str | None = None
    """The moderator's reason, once resolved."""
    created_at: Millis = 0
    resolved_at: Millis | None = None


class RaidSignalKind(enum.StrEnum):
    JOINS = "joins"
    MESSAGES = "messages"


__all__ = [
    "Appeal",
    "AppealStatus",
    "AuditEntry",
    "RaidSignalKind",
    "ReviewItem",
    "ReviewKind",
    "ReviewStatus",
    "Sanction",
    "SanctionKind",
]
