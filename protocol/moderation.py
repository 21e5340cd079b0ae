"""Records of moderation that appear inside frames: sanctions, audit entries, the review
queue, appeals, and the live moderator feed's signals.

Pure wire types (no I/O), shared by the gateway, the REST API and the moderator console.
Same evolution rules as :mod:`protocol.models`: new fields only with defaults.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import msgspec

from protocol.base import EventBase, Reason, Request, ResultBase, ShortText
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


# --- The moderation frames: actions, audit log, reports, review queue, appeals, feed.
# Every action is checked against the actor's permission bits in the community and
# lands in the audit log with its reason; ``item_id`` (where present) also resolves that
# review item with the action as its decision.

Hours = Annotated[int, msgspec.Meta(ge=1, le=168)]
DurationS = Annotated[int, msgspec.Meta(ge=1, le=2_419_200,
                                        description="Seconds, at most 28 days.")]
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=100)]
BeforeId = Annotated[int, msgspec.Meta(ge=1, le=2**53 - 1)]


class PurgeMessages(Request, tag="purge_messages"):
    """Bulk delete (``MANAGE_MESSAGES``): the last ``count`` messages of ``channel_id``
    (optionally only those of ``user_id``), or with ``hours`` every message ``user_id``
    posted in the community (or in ``channel_id``) in the last ``hours``. Viewers get
    ``message_delete_bulk`` events (one per channel per batch of up to 100)."""

    community_id: Id
    channel_id: Id | None = None
    count: Annotated[int, msgspec.Meta(ge=1, le=500)] | None = None
    """Up to ``limits.max_purge_messages``."""
    user_id: Id | None = None
    hours: Hours | None = None
    """With ``user_id``: delete what they posted in the last this many hours (1 to 168)."""
    reason: Reason | None = None


class WarnMember(Request, tag="warn_member"):
    """Warn a member (``MODERATE``); they get ``member_sanctioned`` (kind ``warn``)."""

    community_id: Id
    user_id: Id
    reason: Reason
    item_id: Id | None = None


class TimeoutMember(Request, tag="timeout_member"):
    """Time a member out for ``duration_s`` (``TIMEOUT_MEMBERS``): until it expires they
    cannot send, react, create threads, speak or join voice (``timed_out`` errors).
    A new timeout replaces the current one."""

    community_id: Id
    user_id: Id
    duration_s: DurationS
    reason: Reason | None = None
    item_id: Id | None = None


class RemoveTimeout(Request, tag="remove_timeout"):
    """Lift a member's timeout early (``TIMEOUT_MEMBERS``)."""

    community_id: Id
    user_id: Id
    reason: Reason | None = None


class KickMember(Request, tag="kick_member"):
    """Remove a member from the community (``KICK_MEMBERS``); they may rejoin with an
    invite. Their sessions get ``community_unavailable`` at once, on every node."""

    community_id: Id
    user_id: Id
    reason: Reason | None = None
    item_id: Id | None = None


class BanMember(Request, tag="ban_member"):
    """Kick and keep out (``BAN_MEMBERS``) for ``duration_s`` (null: until unbanned);
    ``purge_hours`` also deletes what they posted in the community in that many
    hours. Works on non-members too (pre-emptive ban)."""

    community_id: Id
    user_id: Id
    duration_s: DurationS | None = None
    purge_hours: Annotated[int, msgspec.Meta(ge=0, le=168)] = 0
    """Also delete what they posted in the community in the last this many hours (0: none)."""
    reason: Reason | None = None
    item_id: Id | None = None


class UnbanMember(Request, tag="unban_member"):
    """Lift a ban (``BAN_MEMBERS``)."""

    community_id: Id
    user_id: Id
    reason: Reason | None = None


class SetSlowmode(Request, tag="set_slowmode"):
    """Members may post in ``channel_id`` once per ``seconds`` (0 turns it off;
    ``MANAGE_CHANNELS`` or ``MODERATE``). ``BYPASS_SLOWMODE`` is exempt."""

    channel_id: Id
    seconds: Annotated[int, msgspec.Meta(ge=0, le=21_600)]
    """Seconds between two messages of one member (0 to 21,600; 0 turns slow mode off)."""
    reason: Reason | None = None


class SetChannelLocked(Request, tag="set_channel_locked"):
    """Lock a channel: only members with ``MANAGE_MESSAGES`` or ``MODERATE`` may post
    (``MODERATE``)."""

    channel_id: Id
    locked: bool
    """True locks the channel, false unlocks it."""
    reason: Reason | None = None


class SetLockdown(Request, tag="set_lockdown"):
    """Raid mode, one action (``MANAGE_COMMUNITY`` or ``MODERATE``): joins are paused,
    and members who joined less than ``member_age_s`` ago or whose account is younger
    than ``account_age_s`` cannot post. ``enabled: false`` lifts it."""

    community_id: Id
    enabled: bool
    """True starts the lockdown, false lifts it."""
    member_age_s: Annotated[int, msgspec.Meta(ge=0, le=2_419_200)] = 600
    """Members who joined less than this many seconds ago cannot post."""
    account_age_s: Annotated[int, msgspec.Meta(ge=0, le=2_419_200)] = 86_400
    """Members whose account is younger than this many seconds (unverified) cannot post."""
    reason: Reason | None = None


class FetchAuditLog(Request, tag="fetch_audit_log"):
    """A page of the audit log, newest first (``VIEW_AUDIT_LOG``). Every filter narrows;
    ``action`` ending in ``.`` is a prefix (``member.``). Page with ``before_id``."""

    community_id: Id
    actor_id: Id | None = None
    target_type: ShortText | None = None
    """Only entries about this kind of target (``user``, ``message``, ``channel``...)."""
    target_id: Id | None = None
    action: ShortText | None = None
    """Only this action (``member.ban``), or every action with this prefix (``member.``)."""
    since: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Milliseconds since the epoch, inclusive."""
    until: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Milliseconds since the epoch, exclusive."""
    before_id: BeforeId | None = None
    """Entries with a smaller id (the last id of the previous page)."""
    limit: PageLimit = 50
    """Entries per page (1 to 100)."""


class ReportMessage(Request, tag="report_message"):
    """Report a message you can see to the community's moderators. Reporting the same
    message twice counts once. At most ``limits.reports_per_window`` reports per
    ``limits.report_window_ms``."""

    channel_id: Id
    message_id: Id
    reason: Reason


class ReportUser(Request, tag="report_user"):
    """Report a member of a community you are in."""

    community_id: Id
    user_id: Id
    reason: Reason


class FetchReviewQueue(Request, tag="fetch_review_queue"):
    """A page of the review queue, newest first (``MODERATE``); ``status`` null means
    open and claimed."""

    community_id: Id
    status: ReviewStatus | None = None
    """Only items in this state; null: open and claimed."""
    before_id: BeforeId | None = None
    """Items with a smaller id (the last id of the previous page)."""
    limit: PageLimit = 50
    """Items per page (1 to 100)."""


class ClaimReviewItem(Request, tag="claim_review_item"):
    """Take an open item (``MODERATE``); others see it claimed at once."""

    item_id: Id


class ResolveReviewItem(Request, tag="resolve_review_item"):
    """Close an item with a ``decision`` (``MODERATE``), e.g. ``dismissed``. Acting on
    an item (``delete_message``, ``timeout_member``, ``ban_member``... with
    ``item_id``) resolves it too."""

    item_id: Id
    decision: ShortText = "dismissed"
    """What was decided: ``dismissed`` or a short word of your own."""
    reason: Reason | None = None


class SubmitAppeal(Request, tag="submit_appeal"):
    """Appeal your current ban or timeout in ``community_id`` (one appeal per action).
    A banned member with no gateway access uses ``POST /api/communities/{id}/appeals``."""

    community_id: Id
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    """Your case, 1 to ``limits.max_appeal_chars`` characters."""


class FetchAppeals(Request, tag="fetch_appeals"):
    """A page of appeals, newest first (``BAN_MEMBERS`` or ``TIMEOUT_MEMBERS``)."""

    community_id: Id
    status: AppealStatus | None = None
    """Only appeals in this state; null: all."""
    before_id: BeforeId | None = None
    """Appeals with a smaller id (the last id of the previous page)."""
    limit: PageLimit = 50
    """Appeals per page (1 to 100)."""


class ResolveAppeal(Request, tag="resolve_appeal"):
    """Accept (lift the ban/timeout) or reject an appeal (the permission the sanction
    needed: ``BAN_MEMBERS`` or ``TIMEOUT_MEMBERS``)."""

    appeal_id: Id
    accept: bool
    """True lifts the ban or timeout; false keeps it."""
    reason: Reason | None = None


class SubscribeModFeed(Request, tag="subscribe_mod_feed"):
    """Receive the live moderator feed of a community (``MODERATE``): ``review_item``,
    ``mod_action``, ``automod_alert``, ``raid_signal``, ``appeal_update`` events.
    Ends when you lose ``MODERATE`` or unsubscribe."""

    community_id: Id


class UnsubscribeModFeed(Request, tag="unsubscribe_mod_feed"):
    community_id: Id


MODERATION_REQUEST_TYPES: tuple[type[Request], ...] = (
    PurgeMessages, WarnMember, TimeoutMember, RemoveTimeout, KickMember, BanMember,
    UnbanMember, SetSlowmode, SetChannelLocked, SetLockdown, FetchAuditLog, ReportMessage,
    ReportUser, FetchReviewQueue, ClaimReviewItem, ResolveReviewItem, SubmitAppeal,
    FetchAppeals, ResolveAppeal, SubscribeModFeed, UnsubscribeModFeed,
)
"""The moderation requests (served by rooms/moderation/moderation.py)."""


class ModActionResult(ResultBase, tag="mod_action"):
    """A moderation action was applied; ``audit_id`` is its audit log entry (null when
    nothing changed, e.g. unban of someone not banned)."""

    audit_id: Id | None = None
    count: int = 0
    """Messages deleted (``purge_messages``, ``ban_member`` with ``purge_hours``)."""


class AuditLogResult(ResultBase, tag="audit_log"):
    """A page of the audit log, newest first; ``has_more``: pass the last id as
    ``before_id``."""

    entries: list[AuditEntry]
    """Newest first."""
    has_more: bool
    """Older entries exist: ask again with ``before_id``."""


class ReviewItemResult(ResultBase, tag="review_item"):
    """The review item a report landed in (or that was claimed/resolved)."""

    item: ReviewItem
    """The item in its new state."""


class ReviewQueueResult(ResultBase, tag="review_queue"):
    items: list[ReviewItem]
    """Newest first."""
    has_more: bool
    """Older items exist: ask again with ``before_id``."""


class AppealResult(ResultBase, tag="appeal"):
    appeal: Appeal
    """The appeal in its new state."""


class AppealsResult(ResultBase, tag="appeals"):
    appeals: list[Appeal]
    """Newest first."""
    has_more: bool
    """Older appeals exist: ask again with ``before_id``."""


class MemberSanctioned(EventBase, tag="member_sanctioned"):
    """You were warned or timed out in a community (or your timeout was lifted:
    ``lifted``). While timed out, sends, reactions, threads and voice fail with
    ``timed_out``. Kicks and bans arrive as ``community_unavailable`` with a
    ``sanction``."""

    sanction: Sanction
    """The warn or timeout (``expires_at``: when the timeout ends)."""
    lifted: bool = False
    """True when a timeout was lifted early (you may post again)."""


class CommunityModerationUpdated(EventBase, tag="community_moderation_update"):
    """A community's lockdown (raid mode) was turned on or off."""

    community_id: Id
    lockdown: bool
    """True while the community is in lockdown."""
    member_age_s: int = 0
    """Members who joined less than this many seconds ago cannot post."""
    account_age_s: int = 0
    """Accounts younger than this many seconds cannot post."""


class ReviewItemUpdated(EventBase, tag="review_item"):
    """Moderator feed: a review item was created, got another report or flag, was
    claimed or resolved. ``item`` is its new state."""

    item: ReviewItem
    """The item in its new state."""


class ModActionTaken(EventBase, tag="mod_action"):
    """Moderator feed: an audited action was taken (by a moderator or automod)."""

    entry: AuditEntry
    """The audit entry of the action."""


class AutomodAlert(EventBase, tag="automod_alert"):
    """Moderator feed: an automod rule with the ``alert`` action matched."""

    community_id: Id
    rule: str
    """The rule that matched."""
    summary: str
    """What happened, for a human."""
    user_id: Id | None = None
    channel_id: Id | None = None
    message_id: Id | None = None
    actions: list[str] = []
    """What the rule did: ``block``, ``flag``, ``timeout``, ``alert``."""


class RaidSignal(EventBase, tag="raid_signal"):
    """Moderator feed: ``count`` joins (or messages) in the last ``window_s`` seconds
    crossed ``threshold`` in the community. Sent at most once per window per kind."""

    community_id: Id
    kind: RaidSignalKind
    """What spiked: joins or messages."""
    count: int
    """How many in the window."""
    window_s: int
    """The window, in seconds."""
    threshold: int
    """The configured threshold that was crossed."""


class AppealUpdated(EventBase, tag="appeal_update"):
    """Moderator feed: an appeal was submitted or resolved. Also sent to the appellant
    when it is resolved."""

    appeal: Appeal
    """The appeal in its new state."""


__all__ = [
    "MODERATION_REQUEST_TYPES",
    "Appeal",
    "AppealResult",
    "AppealStatus",
    "AppealUpdated",
    "AppealsResult",
    "AuditEntry",
    "AuditLogResult",
    "AutomodAlert",
    "BanMember",
    "BeforeId",
    "ClaimReviewItem",
    "CommunityModerationUpdated",
    "DurationS",
    "FetchAppeals",
    "FetchAuditLog",
    "FetchReviewQueue",
    "Hours",
    "KickMember",
    "MemberSanctioned",
    "ModActionResult",
    "ModActionTaken",
    "PageLimit",
    "PurgeMessages",
    "RaidSignal",
    "RaidSignalKind",
    "RemoveTimeout",
    "ReportMessage",
    "ReportUser",
    "ResolveAppeal",
    "ResolveReviewItem",
    "ReviewItem",
    "ReviewItemResult",
    "ReviewItemUpdated",
    "ReviewKind",
    "ReviewQueueResult",
    "ReviewStatus",
    "Sanction",
    "SanctionKind",
    "SetChannelLocked",
    "SetLockdown",
    "SetSlowmode",
    "SubmitAppeal",
    "SubscribeModFeed",
    "TimeoutMember",
    "UnbanMember",
    "UnsubscribeModFeed",
    "WarnMember",
]
