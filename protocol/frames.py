"""Every frame of Hearth protocol v1, as msgspec tagged unions.

Two unions, one per direction: :data:`ClientFrame` (client to server) and
:data:`ServerFrame` (server to client). Each frame is a JSON object (or msgpack map)
whose ``"op"`` field names its type. Server events travel inside a ``dispatch`` frame
whose ``d`` is an :data:`Event`, itself tagged by ``"t"``; a request's successful reply
is an ``ok`` frame whose ``data`` is a :data:`Result`, tagged by ``"type"``.

Requests carry a client-chosen ``id`` and get exactly one reply: ``ok`` or ``error``
with the same id. Dispatches carry ``s``, the session's sequence number (1, 2, 3, ...),
which ``resume`` and ``heartbeat`` send back.

Evolution: new ops and new fields with defaults only. Unknown fields are ignored by
both sides, so an older client keeps working against a newer server.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from protocol.base import ClientFrameBase, EventBase, Reason, Request, RequestId, ResultBase
from protocol.codes import ErrorCode
from protocol.limits import Limits
from protocol.live import (
    LIVE_REQUEST_TYPES,
    LiveSessionReminder,
    LiveSessionUpdated,
    QaAsk,
    QaFetch,
    QaSetState,
    QaUpdated,
    QaVote,
    QuestionResult,
    QuestionsResult,
    StageFetch,
    StageRaiseHand,
    StageResult,
    StageSetCohost,
    StageSetSpeaker,
    StageUpdated,
)
from protocol.models import (
    Attachment,
    Channel,
    CommunityRole,
    CommunitySnapshot,
    Id,
    Member,
    Message,
    OverrideKind,
    PermissionOverride,
    Presence,
    PresenceStatus,
    ReadState,
    Role,
    Seq,
    SessionSeq,
    User,
)
from protocol.moderation import (
    Appeal,
    AppealStatus,
    AuditEntry,
    RaidSignalKind,
    ReviewItem,
    ReviewStatus,
    Sanction,
)
from protocol.sidecar import SidecarEvent, SidecarRequest, SidecarResult
from protocol.voice import (
    VOICE_REQUEST_TYPES,
    VoiceDisconnect,
    VoiceDisconnected,
    VoiceFetchStates,
    VoiceIceCandidate,
    VoiceJoin,
    VoiceJoined,
    VoiceLeave,
    VoiceMove,
    VoiceMoveRequested,
    VoiceServerMute,
    VoiceSetState,
    VoiceSpeaking,
    VoiceStatesResult,
    VoiceStateUpdated,
)

PROTOCOL_VERSION = 1

Token = Annotated[str, msgspec.Meta(max_length=4096)]
ShortText = Annotated[str, msgspec.Meta(max_length=200)]


# --------------------------------------------------------------------------------------
# Client -> server
# --------------------------------------------------------------------------------------


class Identify(ClientFrameBase, tag="identify"):
    """First frame of a new session: authenticate with an access or bot token."""

    token: Token
    client: ShortText = ""
    """Free-form client name and version, for logs."""


class Resume(ClientFrameBase, tag="resume"):
    """First frame of a reconnect: continue ``session_id`` after dispatch ``seq``."""

    token: Token
    session_id: Annotated[str, msgspec.Meta(max_length=64)]
    seq: SessionSeq


class Heartbeat(ClientFrameBase, tag="heartbeat"):
    """Keep-alive; ``seq`` is the last dispatch received. Answered by ``heartbeat_ack``."""

    seq: SessionSeq | None = None


class SendMessage(Request, tag="send_message"):
    """Post a message. Mentions are parsed from ``content`` on the server:
    ``<@USER_ID>``, ``<@&ROLE>`` and ``@everyone``. Retrying with the same ``nonce``
    never creates a second message: the reply carries the first one."""

    channel_id: Id
    content: str = ""
    nonce: str | None = None
    reply_to_id: Id | None = None
    attachments: list[Attachment] = []


class EditMessage(Request, tag="edit_message"):
    """Replace the content of your own message."""

    channel_id: Id
    message_id: Id
    content: str


class DeleteMessage(Request, tag="delete_message"):
    """Delete your message, or any message with ``MANAGE_MESSAGES``. A moderator's
    delete of someone else's message lands in the audit log with ``reason``; with
    ``item_id`` it also resolves that review item."""

    channel_id: Id
    message_id: Id
    reason: Reason | None = None
    item_id: Id | None = None


class AddReaction(Request, tag="add_reaction"):
    """React to a message with an emoji. Adding twice is a no-op."""

    channel_id: Id
    message_id: Id
    emoji: str


class RemoveReaction(Request, tag="remove_reaction"):
    """Remove your reaction. Removing an absent one is a no-op."""

    channel_id: Id
    message_id: Id
    emoji: str


class FetchReactions(Request, tag="fetch_reactions"):
    """Who reacted to a message with ``emoji`` (replied with ``users``)."""

    channel_id: Id
    message_id: Id
    emoji: str
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 100


class StartTyping(Request, tag="typing"):
    """Tell the channel you are typing; expires after ``limits.typing_ttl_ms`` (10 s
    by default). Send it again every few seconds while typing goes on: the server
    re-announces you at most every 3 s. Typing is never stored."""

    channel_id: Id


class MarkRead(Request, tag="mark_read"):
    """Mark the channel read up to and including ``seq``. Never moves backwards."""

    channel_id: Id
    seq: Seq


class FetchHistory(Request, tag="fetch_history"):
    """A page of messages, newest last. At most one of ``before``/``after``/``around``
    (channel seqs); none means the newest page."""

    channel_id: Id
    before: Seq | None = None
    after: Seq | None = None
    around: Seq | None = None
    limit: Annotated[int, msgspec.Meta(ge=1)] = 50


class CreateThread(Request, tag="create_thread"):
    """Start a thread in a text/announcement channel, optionally off a message."""

    channel_id: Id
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    message_id: Id | None = None


class SetThreadArchived(Request, tag="set_thread_archived"):
    """Archive (read-only) or unarchive a thread. Its creator or a moderator."""

    thread_id: Id
    archived: bool


class JoinThread(Request, tag="join_thread"):
    """Become a member of a thread (you are notified of its messages)."""

    thread_id: Id


class LeaveThread(Request, tag="leave_thread"):
    """Stop being a member of a thread."""

    thread_id: Id


class SetPresence(Request, tag="set_presence"):
    """Choose your presence, for all your sessions (kept between sessions). Others
    see it while any of your sessions is connected, and ``offline`` otherwise;
    ``invisible`` (or ``offline``) looks ``offline`` to them."""

    status: PresenceStatus


class FetchMembers(Request, tag="fetch_members"):
    """A page of a community's members with their presence, by ascending user id:
    start with ``after`` 0, then pass the last user id of the previous page."""

    community_id: Id
    after: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)] = 0
    """Return members whose user id is greater than this."""
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 100
    """Members per page (1 to 100)."""


# --- Moderation (issue 5): actions, audit log, reports, review queue, appeals, feed. ---
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


# --- Permissions (issue 5): custom roles, channel overrides, membership tiers. ---
# Permission bits are ``rooms.permissions.Permission`` values (docs/moderation.md,
# "Permissions"). Nobody grants bits they lack or manages a role at or above their own
# highest role. Every change lands in the audit log with ``reason`` and takes effect at
# once for connected members on every node (``permissions_update``, then
# ``channel_create`` / ``channel_delete`` for channels gained or lost).

RoleName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Bits = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1, description="Permission bits.")]
Color = Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFF, description="0xRRGGBB.")]
Tier = Annotated[int, msgspec.Meta(ge=0, le=1_000_000, description="Membership tier.")]


class FetchRoles(Request, tag="fetch_roles"):
    """The community's custom roles (any member) -> ``roles``."""

    community_id: Id


class CreateRole(Request, tag="create_role"):
    """Create a custom role (``MANAGE_ROLES``) -> ``role``. ``position`` defaults to
    just below the actor's highest role; it must be below it."""

    community_id: Id
    name: RoleName
    """Unique in the community (case-insensitive)."""
    permissions: Bits = 0
    position: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    """Rank among custom roles (higher outranks lower)."""
    color: Color | None = None
    reason: Reason | None = None


class UpdateRole(Request, tag="update_role"):
    """Change a custom role (``MANAGE_ROLES``, below your highest role) -> ``role``.
    Fields left out keep their value; ``clear_color`` removes the color."""

    role_id: Id
    name: RoleName | None = None
    """New name (unique in the community, case-insensitive)."""
    permissions: Bits | None = None
    position: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    """New rank among custom roles; must stay below your highest role."""
    color: Color | None = None
    clear_color: bool = False
    """True removes the role's color."""
    reason: Reason | None = None


class DeleteRole(Request, tag="delete_role"):
    """Delete a custom role, its assignments and its overrides (``MANAGE_ROLES``)."""

    role_id: Id
    reason: Reason | None = None


class SetMemberRoles(Request, tag="set_member_roles"):
    """Replace a member's custom roles (``MANAGE_ROLES``; only roles below your highest,
    on a member below you) -> ``member``."""

    community_id: Id
    user_id: Id
    role_ids: list[Id]
    reason: Reason | None = None


class FetchChannelOverrides(Request, tag="fetch_channel_overrides"):
    """A channel's overrides (``MANAGE_ROLES`` or ``MANAGE_CHANNELS``) -> ``overrides``."""

    channel_id: Id


class SetChannelOverride(Request, tag="set_channel_override"):
    """Set the allow/deny bits of ``everyone`` (``target_id`` 0), a custom ``role`` or
    a ``member`` in a channel (``MANAGE_ROLES`` and ``MANAGE_CHANNELS``; only bits you
    hold) -> ``override``. Threads follow their parent: set it there."""

    channel_id: Id
    kind: OverrideKind
    """``everyone``, ``role`` or ``member``."""
    target_id: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
    """0 for ``everyone``, a custom role id, or a user id."""
    allow: Bits = 0
    deny: Bits = 0
    reason: Reason | None = None


class ClearChannelOverride(Request, tag="clear_channel_override"):
    """Remove an override (same rights as setting it)."""

    channel_id: Id
    kind: OverrideKind
    """``everyone``, ``role`` or ``member``."""
    target_id: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
    """0 for ``everyone``, a custom role id, or a user id."""
    reason: Reason | None = None


class SetMemberTier(Request, tag="set_member_tier"):
    """Set a member's tier (``MANAGE_ROLES``; the billing sidecar uses the REST form)
    -> ``member``."""

    community_id: Id
    user_id: Id
    tier: Tier
    reason: Reason | None = None


class SetChannelTier(Request, tag="set_channel_tier"):
    """Set the tier a member needs to see a channel (``MANAGE_CHANNELS``; 0: none)
    -> ``channel``."""

    channel_id: Id
    tier: Tier
    reason: Reason | None = None


PERMISSION_REQUEST_TYPES: tuple[type[Request], ...] = (
    FetchRoles, CreateRole, UpdateRole, DeleteRole, SetMemberRoles, FetchChannelOverrides,
    SetChannelOverride, ClearChannelOverride, SetMemberTier, SetChannelTier,
)
"""The permission requests (served by rooms/roles.py)."""


MODERATION_REQUEST_TYPES: tuple[type[Request], ...] = (
    PurgeMessages, WarnMember, TimeoutMember, RemoveTimeout, KickMember, BanMember,
    UnbanMember, SetSlowmode, SetChannelLocked, SetLockdown, FetchAuditLog, ReportMessage,
    ReportUser, FetchReviewQueue, ClaimReviewItem, ResolveReviewItem, SubmitAppeal,
    FetchAppeals, ResolveAppeal, SubscribeModFeed, UnsubscribeModFeed,
)
"""The moderation requests (served by rooms/moderation.py)."""

class SubscribePresence(Request, tag="subscribe_presence"):
    """Receive (or stop receiving) a large community's ``presence_update`` batches.

    Presence of communities with at most ``limits.presence_auto_max_members`` members
    reaches every member's session unasked. Above that, fanning every status change out
    to every member would cost the server more than everything else those members do,
    so sessions receive it only while subscribed (a client subscribes while it shows the
    member list), at most ``limits.max_presence_subscriptions`` communities at once.
    Subscriptions belong to the session and survive ``resume`` on the same process;
    send them again after ``resumed`` (harmless if still in place)."""

    community_id: Id
    subscribed: bool = True
    """True subscribes, false unsubscribes."""


ClientFrame = (
    Identify
    | Resume
    | Heartbeat
    | SendMessage
    | EditMessage
    | DeleteMessage
    | AddReaction
    | RemoveReaction
    | FetchReactions
    | StartTyping
    | MarkRead
    | FetchHistory
    | CreateThread
    | SetThreadArchived
    | JoinThread
    | LeaveThread
    | SetPresence
    | FetchMembers
    | PurgeMessages
    | WarnMember
    | TimeoutMember
    | RemoveTimeout
    | KickMember
    | BanMember
    | UnbanMember
    | SetSlowmode
    | SetChannelLocked
    | SetLockdown
    | FetchAuditLog
    | ReportMessage
    | ReportUser
    | FetchReviewQueue
    | ClaimReviewItem
    | ResolveReviewItem
    | SubmitAppeal
    | FetchAppeals
    | ResolveAppeal
    | SubscribeModFeed
    | UnsubscribeModFeed
    | FetchRoles
    | CreateRole
    | UpdateRole
    | DeleteRole
    | SetMemberRoles
    | FetchChannelOverrides
    | SetChannelOverride
    | ClearChannelOverride
    | SetMemberTier
    | SetChannelTier
    | SubscribePresence
    | StageRaiseHand
    | StageSetSpeaker
    | StageSetCohost
    | StageFetch
    | QaAsk
    | QaVote
    | QaSetState
    | QaFetch
    | VoiceJoin
    | VoiceLeave
    | VoiceIceCandidate
    | VoiceSetState
    | VoiceServerMute
    | VoiceDisconnect
    | VoiceMove
    | VoiceFetchStates
    | SidecarRequest
)
"""Every frame a client may send."""

REQUEST_TYPES: tuple[type[Request], ...] = (
    SendMessage,
    EditMessage,
    DeleteMessage,
    AddReaction,
    RemoveReaction,
    FetchReactions,
    StartTyping,
    MarkRead,
    FetchHistory,
    CreateThread,
    SetThreadArchived,
    JoinThread,
    LeaveThread,
    SetPresence,
    FetchMembers,
    *MODERATION_REQUEST_TYPES,
    *PERMISSION_REQUEST_TYPES,
    SubscribePresence,
    *LIVE_REQUEST_TYPES,
    *VOICE_REQUEST_TYPES,
    SidecarRequest,
)


# --------------------------------------------------------------------------------------
# Request results (inside ``ok``)
# --------------------------------------------------------------------------------------


class Empty(ResultBase, tag="empty"):
    """The request succeeded and has nothing to return."""


class MessageResult(ResultBase, tag="message"):
    """The message created, edited or deduplicated by nonce."""

    message: Message


class HistoryResult(ResultBase, tag="history"):
    """A page of history, oldest first. ``has_more`` is true when older (for
    ``before``/default) or newer (for ``after``) messages exist beyond this page."""

    channel_id: Id
    messages: list[Message]
    has_more: bool


class ChannelResult(ResultBase, tag="channel"):
    """A channel or thread created or changed."""

    channel: Channel


class UsersResult(ResultBase, tag="users"):
    """A list of users (e.g. who reacted)."""

    users: list[User]


class ReadStateResult(ResultBase, tag="read_state"):
    """The read state after ``mark_read``."""

    read_state: ReadState


class MembersResult(ResultBase, tag="members"):
    """A page of members and their presence (``fetch_members``)."""

    community_id: Id
    members: list[Member]
    presences: list[Presence]
    """The presence of each member of the page, in the same order."""
    online_count: int
    """Members of the community online, idle or dnd now."""
    has_more: bool
    """More members follow: ask again with ``after`` set to the last user id."""


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


class RolesResult(ResultBase, tag="roles"):
    community_id: Id
    roles: list[CommunityRole]
    """Highest position first."""


class RoleResult(ResultBase, tag="role"):
    role: CommunityRole
    """The role in its new state."""


class MemberResult(ResultBase, tag="member"):
    member: Member
    """The member in their new state (custom roles, tier)."""


class OverridesResult(ResultBase, tag="overrides"):
    channel_id: Id
    overrides: list[PermissionOverride]
    """Every override of the channel."""


class OverrideResult(ResultBase, tag="override"):
    override: PermissionOverride
    """The override in its new state."""


Result = (
    Empty | MessageResult | HistoryResult | ChannelResult | UsersResult | ReadStateResult
    | MembersResult | ModActionResult | AuditLogResult | ReviewItemResult | ReviewQueueResult
    | AppealResult | AppealsResult | RolesResult | RoleResult | MemberResult
    | OverridesResult | OverrideResult | StageResult | QuestionResult | QuestionsResult
    | OverridesResult | OverrideResult | VoiceJoined | VoiceStatesResult
    | SidecarResult
)


# --------------------------------------------------------------------------------------
# Events (inside ``dispatch``)
# --------------------------------------------------------------------------------------


class MessageCreated(EventBase, tag="message_create"):
    """A message was posted in a channel you can see."""

    message: Message


class MessageUpdated(EventBase, tag="message_update"):
    """A message was edited; ``message`` is its new state."""

    message: Message


class MessageDeleted(EventBase, tag="message_delete"):
    """A message was deleted."""

    channel_id: Id
    message_id: Id
    seq: Seq


class ReactionAdded(EventBase, tag="reaction_add"):
    """``user_id`` reacted; ``count`` is the emoji's new total on the message."""

    channel_id: Id
    message_id: Id
    user_id: Id
    emoji: str
    count: int


class ReactionRemoved(EventBase, tag="reaction_remove"):
    """``user_id`` removed a reaction; ``count`` is the emoji's new total."""

    channel_id: Id
    message_id: Id
    user_id: Id
    emoji: str
    count: int


class TypingStarted(EventBase, tag="typing_start"):
    """``user`` is typing in ``channel_id`` until ``expires_at`` unless renewed.
    Ephemeral and never stored (not in history): drop the indicator at ``expires_at``,
    at the latest ``limits.typing_ttl_ms`` (10 s by default) after you received it
    (your clock may differ from the server's), or when that user's message arrives."""

    channel_id: Id
    user: User
    expires_at: int


class ReadStateUpdated(EventBase, tag="read_state_update"):
    """Your read state changed (from another of your sessions)."""

    read_state: ReadState


class ChannelCreated(EventBase, tag="channel_create"):
    """A channel, thread or DM you can see was created (or you gained access)."""

    channel: Channel


class ChannelUpdated(EventBase, tag="channel_update"):
    """A channel you can see changed (renamed, archived, members changed)."""

    channel: Channel


class ChannelDeleted(EventBase, tag="channel_delete"):
    """A channel was deleted or you lost access to it."""

    channel_id: Id
    community_id: Id | None = None


class CommunityAvailable(EventBase, tag="community_available"):
    """You joined a community (or it was created): its snapshot."""

    snapshot: CommunitySnapshot


class CommunityUnavailable(EventBase, tag="community_unavailable"):
    """You left or were removed from a community. ``sanction`` says why when a
    moderator kicked or banned you (null when you left)."""

    community_id: Id
    sanction: Sanction | None = None
    """The kick or ban that removed you, when it was one."""


class MemberJoined(EventBase, tag="member_join"):
    """Someone joined a community you are in."""

    member: Member


class MemberUpdated(EventBase, tag="member_update"):
    """A member's role changed."""

    member: Member


class MemberLeft(EventBase, tag="member_leave"):
    """Someone left or was removed from a community you are in."""

    community_id: Id
    user_id: Id


class PresenceUpdated(EventBase, tag="presence_update"):
    """Members of a community changed presence. Batched: at most one per community
    every ~1.5 s, carrying everyone whose presence changed since the previous one (their
    latest presence; at most 500 users, more follow in the next batches). Ephemeral:
    skipped while your connection is congested or detached (so after a ``resume``, page
    ``fetch_members`` to refresh a member list you show)."""

    community_id: Id
    presences: list[Presence]
    online_count: int = 0
    """Members of the community online, idle or dnd after these changes."""


class MessagesDeleted(EventBase, tag="message_delete_bulk"):
    """Several messages of one channel were deleted at once (purge, ban with purge).
    At most 100 ids per event; a large purge sends several."""

    channel_id: Id
    message_ids: list[Id]


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


class PermissionsUpdated(EventBase, tag="permissions_update"):
    """Roles, overrides or tiers changed in a community (for everyone, or for
    ``user_id`` only: then it goes to that member alone). Your permissions there are
    already re-resolved: ``channel_create`` / ``channel_delete`` follow for channels
    you gained or lost. Re-read roles with ``fetch_roles`` if you show them."""

    community_id: Id
    user_id: Id | None = None


Event = (
    MessageCreated
    | MessageUpdated
    | MessageDeleted
    | ReactionAdded
    | ReactionRemoved
    | TypingStarted
    | ReadStateUpdated
    | ChannelCreated
    | ChannelUpdated
    | ChannelDeleted
    | CommunityAvailable
    | CommunityUnavailable
    | MemberJoined
    | MemberUpdated
    | MemberLeft
    | PresenceUpdated
    | MessagesDeleted
    | MemberSanctioned
    | CommunityModerationUpdated
    | ReviewItemUpdated
    | ModActionTaken
    | AutomodAlert
    | RaidSignal
    | AppealUpdated
    | PermissionsUpdated
    | StageUpdated
    | QaUpdated
    | LiveSessionUpdated
    | LiveSessionReminder
    | VoiceStateUpdated
    | VoiceSpeaking
    | VoiceMoveRequested
    | VoiceDisconnected
    | SidecarEvent
)
"""Every event a server may dispatch."""


# --------------------------------------------------------------------------------------
# Server -> client
# --------------------------------------------------------------------------------------


class ServerFrameBase(msgspec.Struct, tag_field="op", kw_only=True):
    """Base of every server frame."""


class Hello(ServerFrameBase, tag="hello"):
    """First frame on every connection: the heartbeat interval and the limits."""

    heartbeat_interval_ms: int
    limits: Limits
    protocol_version: int = PROTOCOL_VERSION


class Ready(ServerFrameBase, tag="ready"):
    """The session is open. ``session_id`` resumes it; dispatches start at ``s = 1``."""

    session_id: str
    user: User
    communities: list[CommunitySnapshot]
    private_channels: list[Channel]
    read_states: list[ReadState]
    status: PresenceStatus = PresenceStatus.ONLINE
    """Your chosen presence (kept between sessions; change it with ``set_presence``)."""


class Resumed(ServerFrameBase, tag="resumed"):
    """Resume succeeded; ``replayed`` missed dispatches follow, then live ones."""

    session_id: str
    replayed: int


class InvalidSession(ServerFrameBase, tag="invalid_session"):
    """Resume failed; identify again (and fetch history). The close that follows is 4006."""

    reason: str


class HeartbeatAck(ServerFrameBase, tag="heartbeat_ack"):
    """Answer to ``heartbeat``."""


class Ok(ServerFrameBase, tag="ok"):
    """Successful reply to request ``id``."""

    id: RequestId
    data: Result


class Error(ServerFrameBase, tag="error"):
    """Failed reply to request ``id`` (``id`` is null when the frame had no readable id)."""

    id: RequestId | None
    code: ErrorCode
    message: str
    retry_after_ms: int | None = None


class Dispatch(ServerFrameBase, tag="dispatch"):
    """A server event. ``s`` is the session sequence number, 1 for the first after ready."""

    s: SessionSeq
    d: Event


class Reconnect(ServerFrameBase, tag="reconnect"):
    """The server asks the client to reconnect (and resume) after ``retry_after_ms``.
    Sent before a 1001/4010 close when a node drains."""

    retry_after_ms: int = 0


ServerFrame = (
    Hello
    | Ready
    | Resumed
    | InvalidSession
    | HeartbeatAck
    | Ok
    | Error
    | Dispatch
    | Reconnect
)
"""Every frame a server may send."""

__all__ = [
    "MODERATION_REQUEST_TYPES",
    "PROTOCOL_VERSION",
    "REQUEST_TYPES",
    "AddReaction",
    "AppealResult",
    "AppealUpdated",
    "AppealsResult",
    "AuditLogResult",
    "AutomodAlert",
    "BanMember",
    "ChannelCreated",
    "ChannelDeleted",
    "ChannelResult",
    "ChannelUpdated",
    "ClaimReviewItem",
    "ClientFrame",
    "CommunityAvailable",
    "CommunityModerationUpdated",
    "CommunityUnavailable",
    "CreateThread",
    "DeleteMessage",
    "Dispatch",
    "EditMessage",
    "Empty",
    "Error",
    "Event",
    "FetchAppeals",
    "FetchAuditLog",
    "FetchHistory",
    "FetchMembers",
    "FetchReactions",
    "FetchReviewQueue",
    "Heartbeat",
    "HeartbeatAck",
    "Hello",
    "HistoryResult",
    "Identify",
    "InvalidSession",
    "JoinThread",
    "KickMember",
    "LeaveThread",
    "MarkRead",
    "MemberJoined",
    "MemberLeft",
    "MemberSanctioned",
    "MemberUpdated",
    "MembersResult",
    "MessageCreated",
    "MessageDeleted",
    "MessageResult",
    "MessageUpdated",
    "MessagesDeleted",
    "ModActionResult",
    "ModActionTaken",
    "Ok",
    "PresenceUpdated",
    "PurgeMessages",
    "RaidSignal",
    "ReactionAdded",
    "ReactionRemoved",
    "ReadStateResult",
    "ReadStateUpdated",
    "Ready",
    "Reconnect",
    "RemoveReaction",
    "RemoveTimeout",
    "ReportMessage",
    "ReportUser",
    "Request",
    "ResolveAppeal",
    "ResolveReviewItem",
    "Result",
    "Resume",
    "Resumed",
    "ReviewItemResult",
    "ReviewItemUpdated",
    "ReviewQueueResult",
    "Role",
    "SendMessage",
    "ServerFrame",
    "SetChannelLocked",
    "SetLockdown",
    "SetPresence",
    "SetSlowmode",
    "SetThreadArchived",
    "StartTyping",
    "SubmitAppeal",
    "SubscribeModFeed",
    "SubscribePresence",
    "TimeoutMember",
    "TypingStarted",
    "UnbanMember",
    "UnsubscribeModFeed",
    "UsersResult",
    "WarnMember",
]
