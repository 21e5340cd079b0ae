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

from protocol.codes import ErrorCode
from protocol.limits import Limits
from protocol.models import (
    Attachment,
    Channel,
    CommunitySnapshot,
    Id,
    Member,
    Message,
    Presence,
    PresenceStatus,
    ReadState,
    Role,
    Seq,
    SessionSeq,
    User,
)

PROTOCOL_VERSION = 1

RequestId = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1, description="Client-chosen id.")]
Token = Annotated[str, msgspec.Meta(max_length=4096)]
ShortText = Annotated[str, msgspec.Meta(max_length=200)]


# --------------------------------------------------------------------------------------
# Client -> server
# --------------------------------------------------------------------------------------


class ClientFrameBase(msgspec.Struct, tag_field="op", kw_only=True):
    """Base of every client frame."""


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


class Request(ClientFrameBase):
    """A request: gets exactly one ``ok`` or ``error`` reply with the same ``id``."""

    id: RequestId


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
    """Delete your message, or any message as a moderator or above."""

    channel_id: Id
    message_id: Id


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
)


# --------------------------------------------------------------------------------------
# Request results (inside ``ok``)
# --------------------------------------------------------------------------------------


class ResultBase(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of every ``ok.data``."""


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


Result = (
    Empty | MessageResult | HistoryResult | ChannelResult | UsersResult | ReadStateResult
    | MembersResult
)


# --------------------------------------------------------------------------------------
# Events (inside ``dispatch``)
# --------------------------------------------------------------------------------------


class EventBase(msgspec.Struct, tag_field="t", kw_only=True):
    """Base of every ``dispatch.d``."""


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
    """You left or were removed from a community."""

    community_id: Id


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
    "PROTOCOL_VERSION",
    "REQUEST_TYPES",
    "AddReaction",
    "ChannelCreated",
    "ChannelDeleted",
    "ChannelResult",
    "ChannelUpdated",
    "ClientFrame",
    "CommunityAvailable",
    "CommunityUnavailable",
    "CreateThread",
    "DeleteMessage",
    "Dispatch",
    "EditMessage",
    "Empty",
    "Error",
    "Event",
    "FetchHistory",
    "FetchMembers",
    "FetchReactions",
    "Heartbeat",
    "HeartbeatAck",
    "Hello",
    "HistoryResult",
    "Identify",
    "InvalidSession",
    "JoinThread",
    "LeaveThread",
    "MarkRead",
    "MemberJoined",
    "MemberLeft",
    "MemberUpdated",
    "MembersResult",
    "MessageCreated",
    "MessageDeleted",
    "MessageResult",
    "MessageUpdated",
    "Ok",
    "PresenceUpdated",
    "ReactionAdded",
    "ReactionRemoved",
    "ReadStateResult",
    "ReadStateUpdated",
    "Ready",
    "Reconnect",
    "RemoveReaction",
    "Request",
    "Result",
    "Resume",
    "Resumed",
    "Role",
    "SendMessage",
    "ServerFrame",
    "SetPresence",
    "SetThreadArchived",
    "StartTyping",
    "TypingStarted",
    "UsersResult",
]
