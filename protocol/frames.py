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

# The frames live with their domain: protocol.chat, protocol.communities,
# protocol.presence, protocol.moderation, protocol.roles, protocol.voice and protocol.live.
# This module holds the session's own frames (identify, resume, heartbeat and every server
# frame) and the unions over all of them: it imports every domain module, none imports it.

from __future__ import annotations

from typing import Annotated

import msgspec

from protocol.base import ClientFrameBase, Request, RequestId, ResultBase, ShortText
from protocol.chat import (
    AddReaction,
    ChannelCreated,
    ChannelDeleted,
    ChannelResult,
    ChannelUpdated,
    CreateThread,
    DeleteMessage,
    EditMessage,
    FetchHistory,
    FetchReactions,
    HistoryResult,
    JoinThread,
    LeaveThread,
    MarkRead,
    MessageCreated,
    MessageDeleted,
    MessageResult,
    MessagesDeleted,
    MessageUpdated,
    ReactionAdded,
    ReactionRemoved,
    ReadStateResult,
    ReadStateUpdated,
    RemoveReaction,
    SendMessage,
    SetThreadArchived,
    StartTyping,
    TypingStarted,
    UsersResult,
)
from protocol.codes import ErrorCode
from protocol.communities import (
    CommunityAvailable,
    CommunityUnavailable,
    MemberJoined,
    MemberLeft,
    MemberUpdated,
)
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
    Channel,
    CommunitySnapshot,
    Id,
    PresenceStatus,
    ReadState,
    Seq,
    SessionSeq,
    User,
)
from protocol.moderation import (
    MODERATION_REQUEST_TYPES,
    AppealResult,
    AppealsResult,
    AppealUpdated,
    AuditLogResult,
    AutomodAlert,
    BanMember,
    ClaimReviewItem,
    CommunityModerationUpdated,
    FetchAppeals,
    FetchAuditLog,
    FetchReviewQueue,
    KickMember,
    MemberSanctioned,
    ModActionResult,
    ModActionTaken,
    PurgeMessages,
    RaidSignal,
    RemoveTimeout,
    ReportMessage,
    ReportUser,
    ResolveAppeal,
    ResolveReviewItem,
    ReviewItemResult,
    ReviewItemUpdated,
    ReviewQueueResult,
    SetChannelLocked,
    SetLockdown,
    SetSlowmode,
    SubmitAppeal,
    SubscribeModFeed,
    TimeoutMember,
    UnbanMember,
    UnsubscribeModFeed,
    WarnMember,
)
from protocol.presence import (
    FetchMembers,
    MembersResult,
    PresenceUpdated,
    SetPresence,
    SubscribePresence,
)
from protocol.roles import (
    PERMISSION_REQUEST_TYPES,
    ClearChannelOverride,
    CreateRole,
    DeleteRole,
    FetchChannelOverrides,
    FetchRoles,
    MemberResult,
    OverrideResult,
    OverridesResult,
    PermissionsUpdated,
    RoleResult,
    RolesResult,
    SetChannelOverride,
    SetChannelTier,
    SetMemberRoles,
    SetMemberTier,
    UpdateRole,
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


class Identify(ClientFrameBase, tag="identify"):
    """First frame of a new session: authenticate with an access or bot token."""

    token: Token
    client: ShortText = ""
    """Free-form client name and version, for logs."""


Positions = Annotated[dict[Id, Seq], msgspec.Meta(
    max_length=1_000,
    description="Per channel id, the newest message seq the client has; "
                "limits.max_resume_positions.")]


class Resume(ClientFrameBase, tag="resume"):
    """First frame of a reconnect: continue ``session_id`` after dispatch ``seq``.

    ``positions``: per channel, the newest message ``seq`` the client has received
    (start from the ready snapshot's channels' ``last_seq``, set it from every event
    that brings a channel, advance it with every ``message_create``). With them, a
    resume on another node delivers every missed message exactly once. Channels left
    out (an older client, or more than ``limits.max_resume_positions``) are resumed
    from the server's record of what it sent, which may repeat messages the client
    already has: drop a ``message_create`` whose (channel id, seq) you have. Too many
    entries, or a malformed map, is an ``invalid_frame`` error like any undecodable
    frame (the connection stays open for another resume or identify)."""

    token: Token
    session_id: Annotated[str, msgspec.Meta(max_length=64)]
    seq: SessionSeq
    positions: Positions = {}


class Heartbeat(ClientFrameBase, tag="heartbeat"):
    """Keep-alive; ``seq`` is the last dispatch received. Answered by ``heartbeat_ack``."""

    seq: SessionSeq | None = None


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


class Empty(ResultBase, tag="empty"):
    """The request succeeded and has nothing to return."""


Result = (
    Empty | MessageResult | HistoryResult | ChannelResult | UsersResult | ReadStateResult
    | MembersResult | ModActionResult | AuditLogResult | ReviewItemResult | ReviewQueueResult
    | AppealResult | AppealsResult | RolesResult | RoleResult | MemberResult
    | OverridesResult | OverrideResult | StageResult | QuestionResult | QuestionsResult
    | OverridesResult | OverrideResult | VoiceJoined | VoiceStatesResult
    | SidecarResult
)


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
    Sent before a 1001/4010 close when a node drains, and before a 1013 close when
    too many identifies/resumes are queued ahead of this one (nothing was done for
    it: the session, if any, is still resumable)."""

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
    "PROTOCOL_VERSION",
    "REQUEST_TYPES",
    "ClientFrame",
    "Dispatch",
    "Empty",
    "Error",
    "Event",
    "Heartbeat",
    "HeartbeatAck",
    "Hello",
    "Identify",
    "InvalidSession",
    "Ok",
    "Ready",
    "Reconnect",
    "Result",
    "Resume",
    "Resumed",
    "ServerFrame",
    "ServerFrameBase",
    "Token",
]
