"""Generates ``docs/protocol.md`` from the wire types and their docstrings.

:func:`render_protocol_markdown` is pure: it reads nothing but the protocol package
itself (its Structs through :mod:`msgspec.inspect`, and the source of its own modules
through :func:`inspect.getsource`, because attribute and enum member docstrings are not
kept at runtime) and returns the document as a string. Writing the file is the caller's
business (``hearth docs``)::

    .venv/bin/python -c "from protocol.docgen import render_protocol_markdown as r; \\
        open('docs/protocol.md','w').write(r())"

Every description in the document comes from a docstring or a ``msgspec.Meta``
description in ``protocol/``, except the per-field notes in :data:`FIELD_NOTES`, which
fill in fields that carry no docstring of their own.
"""

from __future__ import annotations

import ast
import enum
import inspect
import re
import typing
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

from protocol import base, codes, frames, limits, live, models, moderation, voice
from protocol.codes import RESUMABLE_CLOSE_CODES, CloseCode, ErrorCode
from protocol.frames import (
    PROTOCOL_VERSION,
    AddReaction,
    ChannelCreated,
    ChannelDeleted,
    ChannelResult,
    ChannelUpdated,
    ClientFrame,
    CommunityAvailable,
    CommunityUnavailable,
    CreateThread,
    DeleteMessage,
    Dispatch,
    EditMessage,
    Empty,
    Error,
    Event,
    FetchHistory,
    FetchMembers,
    FetchReactions,
    Heartbeat,
    HeartbeatAck,
    Hello,
    HistoryResult,
    Identify,
    InvalidSession,
    JoinThread,
    LeaveThread,
    MarkRead,
    MemberJoined,
    MemberLeft,
    MembersResult,
    MemberUpdated,
    MessageCreated,
    MessageDeleted,
    MessageResult,
    MessageUpdated,
    Ok,
    PresenceUpdated,
    ReactionAdded,
    ReactionRemoved,
    ReadStateResult,
    ReadStateUpdated,
    Ready,
    Reconnect,
    RemoveReaction,
    Request,
    Result,
    Resume,
    Resumed,
    SendMessage,
    ServerFrame,
    SetPresence,
    SetThreadArchived,
    StartTyping,
    SubscribePresence,
    TypingStarted,
    UsersResult,
)
from protocol.limits import Limits
from protocol.models import (
    Attachment,
    Channel,
    ChannelKind,
    Community,
    CommunitySnapshot,
    Member,
    Message,
    Presence,
    PresenceStatus,
    ReactionCount,
    ReadState,
    Role,
    User,
)
from protocol.voice import (
    VoiceIceCandidate,
    VoiceJoin,
    VoiceJoined,
    VoiceParticipant,
    VoiceSpeaking,
    VoiceStateUpdated,
)

__all__ = [
    "FIELD_NOTES",
    "client_frame_types",
    "event_types",
    "example_of",
    "render_protocol_markdown",
    "result_types",
    "server_frame_types",
    "undocumented_fields",
]

StructT = type[msgspec.Struct]

# ----------------------------------------------------------------------------- the types


def _members(union: Any) -> tuple[StructT, ...]:
    return tuple(typing.get_args(union))


def client_frame_types() -> tuple[StructT, ...]:
    """Every client frame type, in union order."""
    return _members(ClientFrame)


def server_frame_types() -> tuple[StructT, ...]:
    """Every server frame type, in union order."""
    return _members(ServerFrame)


def event_types() -> tuple[StructT, ...]:
    """Every event type (``dispatch.d``), in union order."""
    return _members(Event)


def result_types() -> tuple[StructT, ...]:
    """Every result type (``ok.data``), in union order."""
    return _members(Result)


def _tag(cls: StructT) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str), cls
    return tag


def _tag_field(cls: StructT) -> str:
    field = cls.__struct_config__.tag_field
    assert isinstance(field, str), cls
    return field


# ------------------------------------------------------------------------- docstrings


def _attribute_docs(module: ModuleType) -> dict[str, dict[str, str]]:
    """``{class name: {attribute: docstring}}`` from the module's own source.

    An attribute docstring is a string literal statement right after an assignment in a
    class body (the convention Sphinx reads); Python discards them at runtime.
    """
    tree = ast.parse(inspect.getsource(module))
    found: dict[str, dict[str, str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        docs: dict[str, str] = {}
        for stmt, following in zip(node.body, node.body[1:], strict=False):
            target: ast.expr | None = None
            if isinstance(stmt, ast.AnnAssign):
                target = stmt.target
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target = stmt.targets[0]
            if (isinstance(target, ast.Name) and isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[target.id] = inspect.cleandoc(following.value.value)
        found[node.name] = docs
    return found


def _own_doc(obj: type) -> str:
    """The docstring written on ``obj`` itself (not inherited)."""
    doc = obj.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


_ROLE = re.compile(r":(?:class|meth|func|data|attr|mod):`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def _inline(text: str) -> str:
    """reStructuredText inline markup to Markdown."""
    text = _ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    return _LITERAL.sub(r"`\1`", text)


def _prose(doc: str) -> str:
    """A docstring as Markdown paragraphs (``::`` literal blocks become fenced code)."""
    blocks: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(" ".join(para))
            para.clear()

    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        i += 1
        if not stripped:
            flush()
        elif stripped.endswith("::"):
            head = stripped[:-2].rstrip()
            if head:
                para.append(_inline(head) + ":")
            flush()
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            blocks.append("```text\n" + "\n".join(_dedent(block)) + "\n```")
        else:
            para.append(_inline(stripped))
    flush()
    return "\n\n".join(blocks)


def _dedent(block: list[str]) -> list[str]:
    indents = [len(x) - len(x.lstrip()) for x in block if x.strip()]
    cut = min(indents, default=0)
    return [x[cut:] for x in block]


def _cell(text: str) -> str:
    """One table cell: a single line, pipes escaped."""
    return " ".join(_inline(text).split()).replace("|", "\\|")


# -------------------------------------------------------------------- field notes

FIELD_NOTES: Final[dict[tuple[str, str], str]] = {
    # client frames
    ("Identify", "token"): "An access token (`access_token` from `POST /api/v1/auth/login` or "
    "`/auth/register`) or a bot token (`hb.…` from `POST /api/v1/bots`).",
    ("Resume", "token"): "A valid token of the session's user (refresh an expired access "
    "token first).",
    ("Resume", "session_id"): "`session_id` from the `ready` that opened the session.",
    ("Resume", "seq"): "The `s` of the last dispatch you processed (0 if none): every "
    "dispatch after it is replayed.",
    ("Heartbeat", "seq"): "The `s` of the last dispatch received, or null before the first.",
    ("Request", "id"): "Client-chosen request id (0 ≤ id < 2^53), echoed by the reply. Use a "
    "fresh id per request (a counter will do).",
    ("SendMessage", "channel_id"): "Where to post: a text, announcement, thread, DM or group "
    "DM channel.",
    ("SendMessage", "content"): "The text, at most `limits.max_message_chars` code points; may "
    "be empty when there are attachments.",
    ("SendMessage", "nonce"): "Idempotency key, at most `limits.max_nonce_chars`: a retry with "
    "the same nonce returns the first message instead of posting another.",
    ("SendMessage", "reply_to_id"): "The message (in the same channel) this one answers.",
    ("SendMessage", "attachments"): "Metadata of files stored elsewhere, at most "
    "`limits.max_attachments`.",
    ("EditMessage", "content"): "The new content (same rules as `send_message`).",
    ("FetchReactions", "limit"): "Most users to return (1 to 100).",
    ("MarkRead", "seq"): "Channel `seq` of the newest message read.",
    ("FetchHistory", "before"): "Page of messages with a seq below this one.",
    ("FetchHistory", "after"): "Page of messages with a seq above this one.",
    ("FetchHistory", "around"): "Page of messages surrounding this seq.",
    ("FetchHistory", "limit"): "Messages per page, at most `limits.history_page_size` "
    "(more is `invalid_argument`).",
    ("CreateThread", "channel_id"): "The text or announcement channel the thread belongs to.",
    ("CreateThread", "name"): "The thread's name (1 to 100 characters).",
    ("CreateThread", "message_id"): "Start the thread off this message of the channel.",
    ("SetThreadArchived", "archived"): "True archives (read-only), false unarchives.",
    ("SetPresence", "status"): "`online`, `idle`, `dnd`, or `invisible` (`offline` means "
    "`invisible`).",
    ("FetchMembers", "community_id"): "The community (you must be a member).",
    ("SubscribePresence", "community_id"): "The community (you must be a member).",
    ("*", "channel_id"): "The channel (threads, DMs and group DMs are channels too).",
    ("*", "message_id"): "The message.",
    ("*", "thread_id"): "The thread (a channel of kind `thread`).",
    ("*", "emoji"): "A Unicode emoji sequence or a `:custom_name:`, at most "
    "`limits.max_emoji_chars`.",
    # results
    ("MessageResult", "message"): "The stored message.",
    ("HistoryResult", "channel_id"): "The channel paged.",
    ("HistoryResult", "messages"): "The page, oldest first; deleted messages are left out.",
    ("HistoryResult", "has_more"): "More messages exist beyond this page in the direction "
    "paged.",
    ("ChannelResult", "channel"): "The channel or thread as it now is.",
    ("UsersResult", "users"): "The users, in no particular order.",
    ("ReadStateResult", "read_state"): "Your read state in the channel.",
    ("MembersResult", "community_id"): "The community paged.",
    ("MembersResult", "members"): "The page, by ascending user id (at most `limit`).",
    # events
    ("MessageCreated", "message"): "The new message (yours too: match it by `nonce`).",
    ("MessageUpdated", "message"): "The message after the edit.",
    ("MessageDeleted", "seq"): "The deleted message's seq in its channel.",
    ("ReactionAdded", "user_id"): "Who reacted.",
    ("ReactionAdded", "count"): "How many members now use this emoji on the message.",
    ("ReactionRemoved", "user_id"): "Whose reaction went.",
    ("ReactionRemoved", "count"): "How many members still use this emoji on the message.",
    ("TypingStarted", "user"): "Who is typing.",
    ("TypingStarted", "expires_at"): "When the indicator lapses unless renewed (milliseconds "
    "since the Unix epoch).",
    ("ReadStateUpdated", "read_state"): "Your new read state in the channel.",
    ("ChannelCreated", "channel"): "The channel.",
    ("ChannelUpdated", "channel"): "The channel as it now is.",
    ("ChannelDeleted", "channel_id"): "The channel gone (or no longer visible).",
    ("ChannelDeleted", "community_id"): "Its community; null for DMs and group DMs.",
    ("CommunityAvailable", "snapshot"): "The community, your role and the channels you see.",
    ("CommunityUnavailable", "community_id"): "The community you no longer belong to.",
    ("MemberJoined", "member"): "The new member.",
    ("MemberUpdated", "member"): "The member with their new role.",
    ("MemberLeft", "community_id"): "The community.",
    ("MemberLeft", "user_id"): "Who left or was removed.",
    ("PresenceUpdated", "community_id"): "The community whose members changed presence.",
    ("PresenceUpdated", "presences"): "The latest presence of each member who changed, "
    "once each.",
    # server frames
    ("Hello", "heartbeat_interval_ms"): "Send a `heartbeat` this often (milliseconds).",
    ("Hello", "limits"): "The limits this server enforces.",
    ("Hello", "protocol_version"): f"The protocol version; {PROTOCOL_VERSION} for this "
    "document.",
    ("Ready", "session_id"): "Keep it: `resume` needs it after a dropped connection.",
    ("Ready", "user"): "Who you are.",
    ("Ready", "communities"): "Every community you belong to, with the channels you can see.",
    ("Ready", "private_channels"): "Your DMs and group DMs.",
    ("Ready", "read_states"): "Your read state in channels where you have one.",
    ("Resumed", "session_id"): "The session resumed.",
    ("Resumed", "replayed"): "How many replayed dispatches follow this frame.",
    ("InvalidSession", "reason"): "Why the session cannot be resumed (for logs).",
    ("Ok", "id"): "The `id` of the request answered.",
    ("Ok", "data"): "The result; its `type` says which.",
    ("Error", "id"): "The `id` of the request answered, or null when it could not be read.",
    ("Error", "code"): "What went wrong (see [Error codes](#error-codes)).",
    ("Error", "message"): "Human-readable detail, for logs; do not parse it.",
    ("Error", "retry_after_ms"): "With `rate_limited`: wait this long before retrying.",
    ("Dispatch", "s"): "The session sequence number: 1, 2, 3, ... without gaps, per session.",
    ("Dispatch", "d"): "The event; its `t` says which.",
    ("Reconnect", "retry_after_ms"): "Wait this long (milliseconds) before reconnecting.",
    # records
    ("User", "username"): "Unique account name.",
    ("User", "display_name"): "The name to show.",
    ("User", "bot"): "True for bot accounts.",
    ("Attachment", "url"): "Where the file can be fetched.",
    ("Attachment", "filename"): "The file's name.",
    ("Attachment", "content_type"): "Its MIME type.",
    ("Attachment", "size"): "Its size in bytes.",
    ("Attachment", "width"): "Pixels, for images and video.",
    ("Attachment", "height"): "Pixels, for images and video.",
    ("ReactionCount", "emoji"): "The emoji.",
    ("ReactionCount", "count"): "How many members used it.",
    ("Message", "channel_id"): "The channel it was posted in.",
    ("Message", "seq"): "Its position in the channel: 1, 2, 3, ... without gaps.",
    ("Message", "author"): "Who posted it.",
    ("Message", "content"): "Its text (empty once deleted).",
    ("Message", "created_at"): "When it was posted.",
    ("Message", "nonce"): "The nonce it was sent with.",
    ("Message", "reply_to_id"): "The message it answers.",
    ("Message", "mention_user_ids"): "Users mentioned with `<@USER_ID>`.",
    ("Message", "mention_roles"): "Roles mentioned with `<@&ROLE>`.",
    ("Message", "mention_everyone"): "Whether `@everyone` was used by someone allowed to.",
    ("Message", "attachments"): "Attachment metadata.",
    ("Message", "reactions"): "Each emoji on it and how many members used it.",
    ("Message", "thread_id"): "The thread started off this message, if any.",
    ("Message", "edited_at"): "When it was last edited.",
    ("Message", "deleted"): "True once deleted.",
    ("Channel", "kind"): "What the channel is.",
    ("Channel", "name"): "Its name (for DMs, may be empty).",
    ("Channel", "community_id"): "Its community; null for DMs and group DMs.",
    ("Channel", "parent_id"): "The category of a channel, or the channel of a thread.",
    ("Channel", "topic"): "Its topic.",
    ("Channel", "private"): "Visible only to the members added to it.",
    ("Channel", "archived"): "Threads: archived threads are read-only.",
    ("Channel", "position"): "Sort order among its siblings.",
    ("Channel", "last_seq"): "The `seq` of its newest message (0 when empty).",
    ("Channel", "thread_root_message_id"): "Threads: the message it was started off.",
    ("Community", "name"): "Its name.",
    ("Community", "owner_id"): "The owner's user id.",
    ("Community", "created_at"): "When it was created.",
    ("Member", "community_id"): "The community.",
    ("Member", "user"): "The member.",
    ("Member", "role"): "Their role.",
    ("Member", "joined_at"): "When they joined.",
    ("CommunitySnapshot", "community"): "The community.",
    ("CommunitySnapshot", "role"): "Your role in it.",
    ("CommunitySnapshot", "channels"): "The channels you can see.",
    ("CommunitySnapshot", "member_count"): "How many members it has.",
    ("Presence", "user_id"): "The user.",
    ("Presence", "status"): "`online`, `idle`, `dnd` or `offline` (invisible users are "
    "`offline`).",
    ("ReadState", "channel_id"): "The channel.",
    ("ReadState", "last_read_seq"): "The newest `seq` you have read.",
    ("ReadState", "unread_count"): "Messages after it.",
    ("ReadState", "mention_count"): "Messages after it that mention you.",
}
"""Descriptions of fields that carry no docstring: ``(class name or "*", field)``."""


# ----------------------------------------------------------------------------- examples

_T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def _example_records() -> dict[str, Any]:
    ada = User(id=101, username="ada", display_name="Ada Lovelace")
    echo = User(id=205, username="echo", display_name="Echo", bot=True)
    general = Channel(id=42, kind=ChannelKind.TEXT, name="general", community_id=7,
                      topic="Say hi", last_seq=118)
    thread = Channel(id=57, kind=ChannelKind.THREAD, name="Release plan", community_id=7,
                     parent_id=42, thread_root_message_id=9001, member_ids=[101])
    message = Message(id=9001, channel_id=42, seq=118, author=ada,
                      content="Hello <@205>!", created_at=_T0, nonce="c0ffee-1",
                      mention_user_ids=[205], reactions=[ReactionCount(emoji="👍", count=2)])
    community = Community(id=7, name="Hearth", owner_id=1, created_at=_T0 - 86_400_000)
    snapshot = CommunitySnapshot(community=community, role=Role.MEMBER, channels=[general],
                                 member_count=2, online_count=1)
    return {
        "ada": ada, "echo": echo, "general": general, "thread": thread, "message": message,
        "snapshot": snapshot,
        "read_state": ReadState(channel_id=42, last_read_seq=118),
        "member": Member(community_id=7, user=echo, role=Role.MEMBER, joined_at=_T0),
        "dm": Channel(id=64, kind=ChannelKind.DM, name="", member_ids=[101, 205]),
        "online": Presence(user_id=101, status=PresenceStatus.ONLINE),
        "away": Presence(user_id=205, status=PresenceStatus.OFFLINE,
                         last_seen=_T0 - 3_600_000),
    }


_EXAMPLE_OFFER = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
                  "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\n...\r\n"
                  "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=recvonly\r\n...\r\n")
_EXAMPLE_ANSWER = ("v=0\r\no=- 2 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
                   "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\n...\r\n"
                   "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=sendonly\r\n...\r\n")


def _curated_examples() -> dict[StructT, msgspec.Struct]:
    r = _example_records()
    message: Message = r["message"]
    return {
        # client frames
        Identify: Identify(token="eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMDEifQ.c2lnbmF0dXJl",
                           client="my-client/1.0"),
        Resume: Resume(token="eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMDEifQ.c2lnbmF0dXJl",
                       session_id="6f1c2d8e9a7b4c3d", seq=17),
        Heartbeat: Heartbeat(seq=17),
        SendMessage: SendMessage(id=1, channel_id=42, content="Hello <@205>!",
                                 nonce="c0ffee-1"),
        EditMessage: EditMessage(id=2, channel_id=42, message_id=9001,
                                 content="Hello again <@205>!"),
        DeleteMessage: DeleteMessage(id=3, channel_id=42, message_id=9001),
        AddReaction: AddReaction(id=4, channel_id=42, message_id=9001, emoji="👍"),
        RemoveReaction: RemoveReaction(id=5, channel_id=42, message_id=9001, emoji="👍"),
        FetchReactions: FetchReactions(id=6, channel_id=42, message_id=9001, emoji="👍",
                                       limit=25),
        StartTyping: StartTyping(id=7, channel_id=42),
        MarkRead: MarkRead(id=8, channel_id=42, seq=118),
        FetchHistory: FetchHistory(id=9, channel_id=42, before=118, limit=50),
        CreateThread: CreateThread(id=10, channel_id=42, name="Release plan",
                                   message_id=9001),
        SetThreadArchived: SetThreadArchived(id=11, thread_id=57, archived=True),
        JoinThread: JoinThread(id=12, thread_id=57),
        LeaveThread: LeaveThread(id=13, thread_id=57),
        SetPresence: SetPresence(id=14, status=PresenceStatus.DND),
        FetchMembers: FetchMembers(id=15, community_id=7, after=0, limit=100),
        SubscribePresence: SubscribePresence(id=16, community_id=7, subscribed=True),
        VoiceJoin: VoiceJoin(id=17, channel_id=44, sdp=_EXAMPLE_OFFER),
        VoiceIceCandidate: VoiceIceCandidate(
            id=18, channel_id=44, sdp_mid="0", sdp_mline_index=0,
            candidate="candidate:1 1 UDP 2122252543 192.0.2.10 50000 typ host"),
        VoiceJoined: VoiceJoined(channel_id=44, sdp=_EXAMPLE_ANSWER, participants=[
            VoiceParticipant(user_id=101), VoiceParticipant(user_id=205, self_mute=True)]),
        VoiceStateUpdated: VoiceStateUpdated(community_id=7, channel_id=44, user_id=205,
                                             joined=True, self_mute=True),
        VoiceSpeaking: VoiceSpeaking(community_id=7, channel_id=44, user_ids=[101]),
        # server frames
        Hello: Hello(heartbeat_interval_ms=Limits().heartbeat_interval_ms, limits=Limits()),
        Ready: Ready(session_id="6f1c2d8e9a7b4c3d", user=r["ada"],
                     communities=[r["snapshot"]], private_channels=[r["dm"]],
                     read_states=[r["read_state"]]),
        Resumed: Resumed(session_id="6f1c2d8e9a7b4c3d", replayed=2),
        InvalidSession: InvalidSession(reason="session expired"),
        HeartbeatAck: HeartbeatAck(),
        Ok: Ok(id=1, data=MessageResult(message=message)),
        Error: Error(id=1, code=ErrorCode.RATE_LIMITED, message="too many requests",
                     retry_after_ms=84),
        Dispatch: Dispatch(s=18, d=MessageCreated(message=message)),
        Reconnect: Reconnect(retry_after_ms=2500),
        # results
        Empty: Empty(),
        MessageResult: MessageResult(message=message),
        HistoryResult: HistoryResult(channel_id=42, messages=[message], has_more=True),
        ChannelResult: ChannelResult(channel=r["thread"]),
        UsersResult: UsersResult(users=[r["ada"], r["echo"]]),
        ReadStateResult: ReadStateResult(read_state=r["read_state"]),
        MembersResult: MembersResult(
            community_id=7, members=[Member(community_id=7, user=r["ada"], role=Role.MEMBER,
                                            joined_at=_T0), r["member"]],
            presences=[r["online"], r["away"]], online_count=1, has_more=False),
        # events
        MessageCreated: MessageCreated(message=message),
        MessageUpdated: MessageUpdated(message=msgspec.structs.replace(
            message, content="Hello again <@205>!", edited_at=_T0 + 60_000)),
        MessageDeleted: MessageDeleted(channel_id=42, message_id=9001, seq=118),
        ReactionAdded: ReactionAdded(channel_id=42, message_id=9001, user_id=205, emoji="👍",
                                     count=3),
        ReactionRemoved: ReactionRemoved(channel_id=42, message_id=9001, user_id=205,
                                         emoji="👍", count=2),
        TypingStarted: TypingStarted(channel_id=42, user=r["ada"], expires_at=_T0 + 10_000),
        ReadStateUpdated: ReadStateUpdated(read_state=r["read_state"]),
        ChannelCreated: ChannelCreated(channel=r["thread"]),
        ChannelUpdated: ChannelUpdated(channel=msgspec.structs.replace(r["thread"],
                                                                       archived=True)),
        ChannelDeleted: ChannelDeleted(channel_id=57, community_id=7),
        CommunityAvailable: CommunityAvailable(snapshot=r["snapshot"]),
        CommunityUnavailable: CommunityUnavailable(community_id=7),
        MemberJoined: MemberJoined(member=r["member"]),
        MemberUpdated: MemberUpdated(member=msgspec.structs.replace(r["member"],
                                                                    role=Role.MODERATOR)),
        MemberLeft: MemberLeft(community_id=7, user_id=205),
        PresenceUpdated: PresenceUpdated(
            community_id=7, presences=[msgspec.structs.replace(r["online"],
                                                               status=PresenceStatus.DND),
                                       r["away"]], online_count=1),
        # records
        User: r["ada"], Channel: r["general"], Message: message, Member: r["member"],
        CommunitySnapshot: r["snapshot"], ReadState: r["read_state"],
        Community: r["snapshot"].community,
        Attachment: Attachment(url="https://cdn.example.com/a/plan.png", filename="plan.png",
                               content_type="image/png", size=48_213, width=800, height=600),
        ReactionCount: ReactionCount(emoji="👍", count=2),
        Presence: r["away"],
    }


def _sample(t: mi.Type) -> Any:
    """A plain value of type ``t``, for types without a curated example."""
    if isinstance(t, mi.Metadata):
        return _sample(t.type)
    if isinstance(t, mi.IntType):
        for bound in (t.ge, t.gt):
            if bound is not None:
                return bound + (1 if bound is t.gt else 0) or 1
        return 1
    if isinstance(t, mi.StrType):
        return "x" * max(t.min_length or 1, 1) if t.max_length != 0 else ""
    if isinstance(t, mi.BoolType):
        return False
    if isinstance(t, mi.FloatType):
        return 1.0
    if isinstance(t, mi.NoneType):
        return None
    if isinstance(t, mi.EnumType):
        return next(iter(t.cls)).value
    if isinstance(t, mi.LiteralType):
        return t.values[0]
    if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        return []
    if isinstance(t, mi.DictType):
        return {}
    if isinstance(t, mi.UnionType):
        not_none = [x for x in t.types if not isinstance(x, mi.NoneType)]
        return _sample(not_none[0]) if not_none else None
    if isinstance(t, mi.StructType):
        return _sample_struct(t)
    return None


def _sample_struct(t: mi.StructType) -> dict[str, Any]:
    value: dict[str, Any] = {}
    if t.tag_field is not None:
        value[t.tag_field] = t.tag
    for f in t.fields:
        if f.required:
            value[f.encode_name] = _sample(f.type)
    return value


def example_of(cls: StructT) -> msgspec.Struct:
    """An example value of ``cls``: curated when one exists, else built from its schema."""
    curated = _curated_examples()
    if cls in curated:
        return curated[cls]
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return msgspec.convert(_sample_struct(info), cls)


def _json(obj: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(obj), indent=2).decode()


# ------------------------------------------------------------------------- type names

_INT53 = 2**53 - 1


def _num(n: int | float) -> str:
    if n == _INT53:
        return "2^53−1"
    return f"{n:,}" if isinstance(n, int) and abs(n) >= 10_000 else str(n)


def _scalar_aliases() -> list[tuple[str, mi.Type, str]]:
    """``(name, type info, description)`` of every described ``Annotated`` alias."""
    aliases: list[tuple[str, mi.Type, str]] = []
    for module in (models, frames):
        for name, value in vars(module).items():
            if typing.get_origin(value) is not typing.Annotated:
                continue
            info = mi.type_info(value)
            if isinstance(info, mi.Metadata) and info.extra_json_schema:
                description = info.extra_json_schema.get("description")
                if isinstance(description, str) and all(a[0] != name for a in aliases):
                    aliases.append((name, info, description))
    return aliases


class _Types:
    """Renders msgspec type info as short Markdown, linking named types to their section."""

    def __init__(self, anchors: dict[type, str]) -> None:
        self.anchors = anchors
        self.aliases = _scalar_aliases()

    def link(self, cls: type, text: str | None = None) -> str:
        label = text or cls.__name__
        anchor = self.anchors.get(cls)
        return f"[{label}](#{anchor})" if anchor else label

    def name(self, t: mi.Type) -> str:
        if isinstance(t, mi.Metadata):
            for alias, info, _ in self.aliases:
                if info == t:
                    return f"[{alias}](#scalar-types)"
            return self.name(t.type)
        if isinstance(t, mi.IntType):
            return "integer" + self._bounds(t.ge, t.gt, t.le, t.lt)
        if isinstance(t, mi.StrType):
            if t.min_length and t.max_length is not None:
                return f"string ({t.min_length}–{_num(t.max_length)} chars)"
            if t.max_length is not None:
                return f"string (≤ {_num(t.max_length)} chars)"
            if t.min_length:
                return f"string (≥ {t.min_length} chars)"
            return "string"
        if isinstance(t, mi.BoolType):
            return "boolean"
        if isinstance(t, mi.FloatType):
            return "number"
        if isinstance(t, mi.NoneType):
            return "null"
        if isinstance(t, mi.EnumType):
            return self.link(t.cls)
        if isinstance(t, mi.ListType):
            return f"array of {self.name(t.item_type)}"
        if isinstance(t, mi.DictType):
            return f"object of {self.name(t.key_type)} to {self.name(t.value_type)}"
        if isinstance(t, mi.StructType):
            return self.link(t.cls)
        if isinstance(t, mi.UnionType):
            members = {x.cls for x in t.types if isinstance(x, mi.StructType)}
            if members and members == set(result_types()):
                return "[Result](#results)"
            if members and members == set(event_types()):
                return "[Event](#events)"
            return " or ".join(self.name(x) for x in t.types)
        if isinstance(t, mi.LiteralType):
            return " or ".join(f"`{msgspec.json.encode(v).decode()}`" for v in t.values)
        if isinstance(t, mi.AnyType):
            return "any"
        return type(t).__name__

    @staticmethod
    def _bounds(ge: int | None, gt: int | None, le: int | None, lt: int | None) -> str:
        low = f"{_num(ge)}" if ge is not None else f"{_num(gt + 1)}" if gt is not None else ""
        high = f"{_num(le)}" if le is not None else f"{_num(lt - 1)}" if lt is not None else ""
        if low and high:
            return f" ({low} to {high})"
        if low:
            return f" (≥ {low})"
        if high:
            return f" (≤ {high})"
        return ""


# ------------------------------------------------------------------------- the document


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


class _Doc:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.toc: list[tuple[int, str, str]] = []
        self.slugs: set[str] = set()

    def heading(self, level: int, text: str) -> str:
        slug = _slug(text)
        if slug in self.slugs:
            raise ValueError(f"duplicate heading anchor {slug!r}")
        self.slugs.add(slug)
        self.toc.append((level, text, slug))
        self.para("#" * level + " " + text)
        return slug

    def para(self, *texts: str) -> None:
        for text in texts:
            if text.strip():
                self.lines.extend([text, ""])

    def code(self, text: str, lang: str = "json") -> None:
        self.lines.extend([f"```{lang}", text.rstrip("\n"), "```", ""])

    def table(self, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            self.lines.append("| " + " | ".join(row) + " |")
        self.lines.append("")

    def text(self, head: list[str]) -> str:
        toc = ["## Contents", ""]
        for level, text, slug in self.toc:
            if level in (2, 3) and text != "Contents":
                toc.append("  " * (level - 2) + f"- [{text}](#{slug})")
        return "\n".join([*head, *toc, "", *self.lines]).rstrip("\n") + "\n"


class _Renderer:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, str]] = {}
        for module in (base, frames, models, moderation, live, voice, limits, codes):
            self.docs.update(_attribute_docs(module))
        self.anchors: dict[type, str] = {}
        for cls in (*client_frame_types(), *server_frame_types()):
            self.anchors[cls] = _slug(f"`{_tag(cls)}`")
        for cls in result_types():
            self.anchors[cls] = _slug(f"Result `{_tag(cls)}`")
        for cls in event_types():
            self.anchors[cls] = _slug(f"`{_tag(cls)}`")
        for cls in self.records():
            self.anchors[cls] = _slug(f"`{cls.__name__}`")
        for enum_cls in self.enums():
            self.anchors[enum_cls] = _slug(f"`{enum_cls.__name__}`")
        self.anchors[ErrorCode] = "error-codes"
        self.anchors[Limits] = "limits"
        self.types = _Types(self.anchors)
        self.limits = Limits()
        self.doc = _Doc()

    # ------------------------------------------------------------------ what to document

    @staticmethod
    def records() -> list[StructT]:
        """Untagged Structs reachable from the frames (the domain records), by name."""
        found: dict[str, StructT] = {}

        def visit(t: mi.Type) -> None:
            if isinstance(t, mi.Metadata):
                visit(t.type)
            elif isinstance(t, mi.StructType):
                if t.tag is None and t.cls is not Limits and t.cls.__name__ not in found:
                    found[t.cls.__name__] = t.cls
                for f in t.fields:
                    visit(f.type)
            elif isinstance(t, mi.UnionType):
                for x in t.types:
                    visit(x)
            elif isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
                visit(t.item_type)
            elif isinstance(t, mi.DictType):
                visit(t.key_type)
                visit(t.value_type)

        for info in mi.multi_type_info([ClientFrame, ServerFrame]):
            visit(info)
        order = [User, Community, CommunitySnapshot, Member, Presence, Channel, Message,
                 Attachment, ReactionCount, ReadState]
        ranked = sorted(found.values(), key=lambda c: (order.index(c) if c in order
                                                       else len(order), c.__name__))
        return ranked

    def enums(self) -> list[type[enum.Enum]]:
        found: list[type[enum.Enum]] = []
        for cls in self.records():
            info = mi.type_info(cls)
            assert isinstance(info, mi.StructType)
            for f in info.fields:
                for t in _walk(f.type):
                    if isinstance(t, mi.EnumType) and t.cls is not ErrorCode \
                            and t.cls not in found:
                        found.append(t.cls)
        return found

    # ----------------------------------------------------------------------- fields

    def field_doc(self, cls: type, name: str, t: mi.Type) -> str:
        for klass in cls.__mro__:
            doc = self.docs.get(klass.__name__, {}).get(name)
            if doc and klass.__module__.startswith("protocol."):
                return doc
        for klass in cls.__mro__:
            note = FIELD_NOTES.get((klass.__name__, name))
            if note:
                return note
        if ("*", name) in FIELD_NOTES:
            return FIELD_NOTES[("*", name)]
        for x in _walk(t):
            if isinstance(x, mi.Metadata) and x.extra_json_schema:
                description = x.extra_json_schema.get("description")
                if isinstance(description, str):
                    return description
        return ""

    def fields_table(self, cls: StructT) -> None:
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        rows: list[list[str]] = []
        if info.tag_field is not None:
            rows.append([f"`{info.tag_field}`", f'`"{info.tag}"`', "required",
                         "Says which frame this is." if info.tag_field == "op"
                         else "Says which kind this is."])
        for f in info.fields:
            if f.required:
                default = "required"
            elif f.default_factory is not msgspec.NODEFAULT:
                default = f"`{msgspec.json.encode(f.default_factory()).decode()}`"
            else:
                default = f"`{msgspec.json.encode(f.default).decode()}`"
            rows.append([f"`{f.encode_name}`", self.types.name(f.type), default,
                         _cell(self.field_doc(cls, f.name, f.type))])
        if len(rows) == 0:
            self.doc.para("No fields.")
            return
        self.doc.table(["field", "type", "default", "description"], rows)

    def frame_section(self, cls: StructT, title: str, example: Any,
                      intro: str | None = None) -> None:
        self.doc.heading(3, title)
        self.doc.para(_prose(_own_doc(cls)))
        if intro:
            self.doc.para(intro)
        self.fields_table(cls)
        self.doc.code(_json(example))

    # --------------------------------------------------------------------- sections

    def render(self) -> str:
        self.overview()
        self.lifecycle()
        self.client_frames()
        self.server_frames()
        self.results()
        self.events()
        self.records_section()
        self.error_codes()
        self.close_codes()
        self.limits_section()
        self.walkthrough()
        head = [
            f"# Hearth gateway protocol, version {PROTOCOL_VERSION}",
            "",
            "<!-- Generated by protocol/docgen.py from protocol/*.py; do not edit by hand.",
            "     Regenerate with `hearth docs` or:",
            "     .venv/bin/python -c \"from protocol.docgen import render_protocol_markdown "
            "as r; open('docs/protocol.md','w').write(r())\" -->",
            "",
            "Everything a client needs to talk to a Hearth server in real time: how to "
            "connect, every frame in both directions with its fields and an example, every "
            "error and close code, and the limits. It is generated from the wire types "
            "themselves (`protocol/frames.py`, `protocol/models.py`, `protocol/codes.py`, "
            "`protocol/limits.py`), so it cannot drift from what the server speaks.",
            "",
        ]
        return self.doc.text(head)

    def overview(self) -> None:
        d = self.doc
        d.heading(2, "Overview")
        d.para(*_prose(_own_doc_module(frames)).split("\n\n")[1:])
        d.heading(3, "Transport")
        d.para(
            "Open a websocket to `ws://HOST:PORT/gateway?encoding=json` (`wss://` behind "
            "TLS). `encoding` picks the wire format for the whole connection:",
        )
        d.table(["encoding", "frames", "notes"], [
            ["`json` (default)", "websocket **text** frames, one JSON object each",
             "UTF-8; integers are exact up to 2^53−1, so every id fits a JavaScript number"],
            ["`msgpack`", "websocket **binary** frames, one MessagePack map each",
             "the same field names and values as JSON; string keys; smaller and faster "
             "to parse"],
        ])
        d.para(
            "Any other `encoding` value is refused before the upgrade (HTTP 400). Every "
            "websocket message carries exactly one frame; frames are never split or "
            "batched. A frame larger than `limits.max_frame_bytes` "
            f"({_num(self.limits.max_frame_bytes)} bytes by default) closes the connection "
            "with 1009.",
            "Conventions used below:",
        )
        d.para(
            "- Ids are positive integers below 2^53. Times are integer milliseconds since "
            "the Unix epoch (UTC).\n"
            "- A field with a default may be left out; the server always sends every "
            "field.\n"
            "- Ignore fields and frames you do not know: new ones are added in place "
            "(with defaults), never renamed or retyped.\n"
            "- `limits.NAME` refers to a field of the [limits](#limits) sent in `hello`.",
        )
        d.heading(3, "Getting a token")
        d.para(
            "The gateway authenticates with a token obtained over REST (JSON, under "
            "`/api/v1`):",
        )
        d.table(["request", "body", "reply"], [
            ["`POST /api/v1/auth/register`", "`{username, password, display_name?}`",
             "201 `{user, access_token, refresh_token, expires_in}`"],
            ["`POST /api/v1/auth/login`", "`{username, password}`", "200, same as register"],
            ["`POST /api/v1/auth/refresh`", "`{refresh_token}`",
             "200, a new pair (refresh tokens rotate on each use)"],
            ["`POST /api/v1/bots` (with `Authorization: Bearer ACCESS_TOKEN`)",
             "`{username, display_name?}`", "201 `{user, token}`: a long-lived bot token"],
        ])
        d.para(
            "Access tokens are short-lived (`expires_in` seconds); `identify` and `resume` "
            "need a valid one, so refresh before reconnecting with an expired token. Bot "
            "tokens do not expire. Both kinds work in `identify` and `resume`.",
        )

    def lifecycle(self) -> None:
        d, lim = self.doc, self.limits
        d.heading(2, "Connection lifecycle")
        d.code(
            "client                                   server\n"
            "  | ---- websocket upgrade ----------------> |\n"
            "  | <--------------------------------- hello | heartbeat_interval_ms, limits\n"
            "  | identify (new session) ----------------> |\n"
            "  |   or resume (session_id, seq) ---------> |\n"
            "  | <------------------------- ready        | session_id, user, communities\n"
            "  |        or resumed + replayed dispatches  |\n"
            "  |        or invalid_session, close 4006    |\n"
            "  | heartbeat (every interval) ------------> |\n"
            "  | <------------------------ heartbeat_ack  |\n"
            "  | request {id} --------------------------> |\n"
            "  | <------------------ ok {id} | error {id} | exactly one per request\n"
            "  | <---------------------- dispatch {s, d}  | s = 1, 2, 3, ... per session\n"
            "  | <----------------------------- reconnect | server draining: close 1001\n",
            lang="text",
        )
        d.heading(3, "Hello and identify")
        d.para(
            "The server speaks first: `hello` carries `heartbeat_interval_ms` and the "
            f"[limits](#limits). Send `identify` (or `resume`) within "
            f"`limits.identify_timeout_ms` ({_num(lim.identify_timeout_ms)} ms by default) "
            "or the server closes with 4003. A bad token closes with 4004 (get a new "
            "token; do not retry with the same one). Otherwise the server answers "
            "`ready`: your user, every community you belong to with the channels you can "
            "see, your DMs and your read states. From `ready` on you may send requests "
            "and you receive dispatches: every message committed after the snapshot (after "
            "each channel's `last_seq` in `ready`) reaches you as a `message_create`, once "
            "and in order, whichever node it was sent on. Sending `identify` or `resume` "
            "again on the same "
            "connection is answered with `error` `already_identified`.",
            "Before `ready`, only `identify`, `resume` and `heartbeat` are allowed; any "
            "request is answered with `error` `not_ready`, and more than "
            f"`limits.max_invalid_frames` ({lim.max_invalid_frames}) of those in a row close "
            "the connection with 4002.",
        )
        d.heading(3, "Heartbeats")
        d.para(
            "Send `heartbeat` every `heartbeat_interval_ms` "
            f"({_num(lim.heartbeat_interval_ms)} ms by default) with `seq` set to the `s` "
            "of the last dispatch you received; the server answers `heartbeat_ack`, in "
            "any state. Any frame you send counts as a sign of life, but a connection "
            f"that sends nothing for twice the interval is closed with 4009 (resumable). "
            "If your heartbeat is not acknowledged before the next one is due, treat the "
            "connection as dead: close it and resume on a new one. Heartbeats do not count "
            "against the rate limit.",
        )
        d.heading(3, "Requests and replies")
        d.para(
            "Every frame other than `identify`, `resume` and `heartbeat` is a request. It "
            "carries an `id` you choose (0 ≤ id < 2^53) and is answered by exactly one "
            "`ok` (with a typed `data` result) or `error` (with a `code`) carrying the "
            "same `id`. Replies and dispatches interleave on the connection; match replies "
            "by `id`. The server handles one connection's requests in the order sent, so "
            "messages you post keep their order. A frame the server cannot decode at all "
            "is answered with `error` `invalid_frame` (with its `id` if one could be read, "
            "else `id: null`); more than `limits.max_invalid_frames` undecodable or "
            "out-of-place frames in a row close the connection with 4001.",
            "Requests are rate limited per connection by a token bucket holding "
            f"`limits.requests_per_window` ({lim.requests_per_window}) tokens, refilled "
            f"evenly over `limits.rate_window_ms` ({_num(lim.rate_window_ms)} ms). A "
            "request that finds the bucket empty is not performed and is answered with "
            "`error` `rate_limited` and `retry_after_ms`: wait that long, then retry. A "
            "client that keeps sending far above the limit is closed with 4005.",
            "`send_message` is idempotent when you give it a `nonce`: if the connection "
            "drops before the reply, send the same request again (same `nonce`) after "
            "reconnecting and you get the original message back instead of a duplicate. "
            "After `error` `internal` nothing was applied and the same retry is safe.",
        )
        d.heading(3, "Dispatches and sequence numbers")
        d.para(
            "Events reach you as `dispatch` frames: `d` is the event (tagged by `t`) and "
            "`s` is the session's sequence number, 1 for the first dispatch after `ready`, "
            "then 2, 3, ... without gaps. Remember the last `s` you processed: heartbeats "
            "report it and `resume` replays everything after it. Your own actions are "
            "dispatched to you like everyone else's (for example your `message_create`, "
            "which you can match to your request by `nonce`).",
            "Messages also carry a per-channel `seq` (1, 2, 3, ... per channel, without "
            "gaps). A jump in a channel's `seq` means you missed messages there (for "
            "example after a new `identify`); page them in with `fetch_history` `after`.",
        )
        d.heading(3, "Resuming a session")
        d.para(
            "A dropped connection does not end the session: the server keeps numbering "
            "and buffering its dispatches for `limits.resume_window_ms` "
            f"({_num(lim.resume_window_ms)} ms), up to `limits.replay_buffer_events` "
            f"({_num(lim.replay_buffer_events)}) of them. To continue, open a new "
            "connection (with the same `encoding`), wait for `hello`, and send `resume` "
            "with the `session_id` from `ready` and the last `s` you processed. The "
            "server answers `resumed` with the number of replayed dispatches, sends "
            "those dispatches (their original `s`, in order), then live ones: you miss "
            "nothing and see nothing twice. Requests that were in flight when the "
            "connection dropped get no reply; retry them (with the same `nonce` for "
            "messages).",
            "What you may rely on after `resumed`, whichever node answered it (the one "
            "that held the session, another after that one died or drained, or one you "
            "left earlier): dispatches continue from your `seq` with no gap in `s`; every "
            "message committed in your channels after the last one you processed arrives "
            "exactly once, in each channel's `seq` order, including those committed while "
            "you were away or while no node held the session (those follow the replayed "
            "dispatches, without waiting for a later message). Other events of a time "
            "when no node held the session (after a crash: edits, reactions, typing, "
            "presence) are not replayed; `fetch_history` shows the current state. A "
            "session has one connection: the newest `resume` wins, on any node, and the "
            "connection it replaces is closed with 4006 (`session resumed on another "
            "connection`). Resuming again, on this node or another, works the "
            "same way for as long as the session lives.",
            "If the session cannot be resumed (unknown, expired, or further behind than "
            "the replay buffer) the server sends `invalid_session` and closes with 4006. "
            "Reconnect and `identify` for a new session, whose `ready` is the fresh "
            "state; fetch history for what you missed.",
            "Resume after a close with a code listed as resumable in "
            "[Close codes](#close-codes), after a connection lost without a close frame "
            "(1006), and after a `reconnect` frame. Wait a jittered back-off before "
            "reconnecting (for example a random delay up to 1 s, doubling per failed "
            "attempt up to 30 s), and honour `reconnect.retry_after_ms`. A close you "
            "initiate with 1000 or 1001 ends the session for good; close with any other "
            "code (for example 4000) if you mean to resume.",
        )
        d.heading(3, "Closing")
        d.para(
            "The server closes with one of the [close codes](#close-codes). When it "
            "drains for a deploy or shutdown it first sends `reconnect` (with a jittered "
            "`retry_after_ms`) and then closes with 1001: resume, possibly on another node.",
        )

    def client_frames(self) -> None:
        d = self.doc
        d.heading(2, "Client frames")
        d.para(
            "Frames a client sends, tagged by `op`. `identify`, `resume` and `heartbeat` "
            "are control frames; every other frame is a request with an `id`, answered "
            "by exactly one `ok` or `error`. The result type named for each request is "
            "the `data` of its `ok`.",
        )
        request_results = _request_results()
        for cls in client_frame_types():
            intro = None
            if issubclass(cls, Request):
                result = request_results.get(cls)
                if result is not None:
                    link = self.types.link(result, f"`{_tag(result)}`")
                    intro = f"Replied with `ok` carrying {link}."
            self.frame_section(cls, f"`{_tag(cls)}`", example_of(cls), intro)

    def server_frames(self) -> None:
        d = self.doc
        d.heading(2, "Server frames")
        d.para("Frames the server sends, tagged by `op`.")
        for cls in server_frame_types():
            self.frame_section(cls, f"`{_tag(cls)}`", example_of(cls))

    def results(self) -> None:
        d = self.doc
        d.heading(2, "Results")
        d.para(
            "The `data` of an `ok` reply is one of these, tagged by `type`. Which one a "
            "request gets is listed with the request. The examples show the whole `ok` "
            "frame.",
        )
        for i, cls in enumerate(result_types(), start=1):
            data = typing.cast(Result, example_of(cls))
            self.frame_section(cls, f"Result `{_tag(cls)}`", Ok(id=i, data=data))

    def events(self) -> None:
        d = self.doc
        d.heading(2, "Events")
        d.para(
            "Every event arrives as the `d` of a `dispatch` frame, tagged by `t`. You "
            "receive the events of the communities and channels you can see, and those "
            "about yourself. The examples show the whole `dispatch` frame.",
        )
        d.table(["`t`", "when"], [
            [f"[`{_tag(cls)}`](#{self.anchors[cls]})", _cell(_first_sentence(_own_doc(cls)))]
            for cls in event_types()
        ])
        for i, cls in enumerate(event_types(), start=18):
            event = typing.cast(Event, example_of(cls))
            self.frame_section(cls, f"`{_tag(cls)}`", Dispatch(s=i, d=event))

    def records_section(self) -> None:
        d = self.doc
        d.heading(2, "Records")
        d.para(_prose(_own_doc_module(models)))
        d.heading(3, "Scalar types")
        rows = []
        for alias, info, description in self.types.aliases:
            assert isinstance(info, mi.Metadata)
            rows.append([f"`{alias}`", self.types.name(info.type), _cell(description)])
        d.table(["name", "type", "meaning"], rows)
        for enum_cls in self.enums():
            d.heading(3, f"`{enum_cls.__name__}`")
            d.para(_prose(_own_doc(enum_cls)))
            d.para("One of: " + ", ".join(f'`"{m.value}"`' for m in enum_cls) + ".")
        for cls in self.records():
            d.heading(3, f"`{cls.__name__}`")
            d.para(_prose(_own_doc(cls)))
            self.fields_table(cls)
            d.code(_json(example_of(cls)))

    def error_codes(self) -> None:
        d = self.doc
        d.heading(2, "Error codes")
        d.para(_prose(_own_doc(ErrorCode)) + " An `error` frame's `code` is one of:")
        member_docs = self.docs.get("ErrorCode", {})
        d.table(["code", "meaning"], [
            [f"`{code.value}`", _cell(member_docs.get(code.name, ""))] for code in ErrorCode
        ])
        d.para(
            "Treat a code you do not know like `internal`: new codes may be added. Errors "
            "the protocol layer answers by itself (`invalid_frame`, `not_ready`, "
            "`already_identified`, `rate_limited`) also count towards the closes below; "
            "the others are decided per request and never close the connection.",
        )

    def close_codes(self) -> None:
        d = self.doc
        d.heading(2, "Close codes")
        d.para(_prose(_own_doc(CloseCode)))
        member_docs = self.docs.get("CloseCode", {})
        d.table(["code", "name", "resumable", "meaning", "what the client does"], [
            [str(int(code)), f"`{code.name}`",
             "yes" if code in RESUMABLE_CLOSE_CODES else "no",
             _cell(member_docs.get(code.name, "")), _close_action(code)]
            for code in CloseCode
        ])
        d.para(
            "A connection lost without a close frame (1006, e.g. a network failure) is "
            "resumable too. Treat any other code like 4000.",
        )

    def limits_section(self) -> None:
        d = self.doc
        d.heading(2, "Limits")
        d.para(
            _prose(_own_doc_module(limits)),
            _prose(_own_doc(Limits)) + " The defaults below are what a stock server "
            "sends; always use the values from `hello`.",
        )
        member_docs = self.docs.get("Limits", {})
        info = mi.type_info(Limits)
        assert isinstance(info, mi.StructType)
        d.table(["limit", "default", "meaning"], [
            [f"`{f.encode_name}`", f"{_num(f.default)}", _cell(member_docs.get(f.name, ""))]
            for f in info.fields
        ])

    def walkthrough(self) -> None:
        d, lim = self.doc, self.limits
        d.heading(2, "Writing a client")
        d.para(
            "The steps every client takes, in order. The Python SDK in `bots/client.py` "
            "implements all of them and is a working reference.",
        )
        d.para(
            "1. **Get a token** over REST ([Getting a token](#getting-a-token)).\n"
            "2. **Connect** to `/gateway?encoding=json` and read the first frame, "
            "`hello`. Keep `heartbeat_interval_ms` and `limits`.\n"
            "3. **Identify**: send `{\"op\": \"identify\", \"token\": TOKEN}`. Read frames "
            "until `ready` (or a close: 4004 means the token is bad). Keep "
            "`ready.session_id`; build your view of communities, channels and read states "
            "from `ready`.\n"
            "4. **Heartbeat**: start a timer that sends `{\"op\": \"heartbeat\", \"seq\": "
            "LAST_S}` every `heartbeat_interval_ms`. If the previous `heartbeat_ack` has "
            "not arrived when the next heartbeat is due, close the socket (code 4000) and "
            "resume.\n"
            "5. **Read loop**: for each frame, switch on `op`: on `dispatch`, set "
            "`LAST_S = s` and handle `d` by its `t`; on `ok`/`error`, complete the pending "
            "request with that `id`; on `heartbeat_ack`, note it; on `reconnect`, wait "
            "`retry_after_ms` and resume on a new connection. Ignore unknown ops, event "
            "types and fields.\n"
            "6. **Requests**: give each a fresh `id` from a counter, remember it until its "
            "`ok` or `error` arrives, and time out after a while. Give every "
            "`send_message` a unique `nonce` so retries are safe. On `rate_limited`, wait "
            "`retry_after_ms`; better, stay under `limits.requests_per_window` per "
            "`limits.rate_window_ms` yourself.\n"
            "7. **Reconnect**: when the connection closes with a resumable code (or drops), "
            "wait a jittered back-off, connect again, read `hello`, send `resume` with "
            "`session_id` and `LAST_S`, then expect `resumed` followed by the replayed "
            "dispatches. On `invalid_session`, or a close with 4006, `identify` again, "
            "replace your state with the new `ready` and fetch history for what you "
            "missed. Fail the requests that were in flight, or retry them (same `nonce`).\n"
            "8. **Close** with code 1000 when you are done: that ends the session.",
        )
        d.para("A minimal client in Python (`pip install websockets`), without reconnection:")
        d.code(_MINIMAL_CLIENT, lang="python")
        d.para(
            "Check the limits before sending: content up to "
            f"`limits.max_message_chars` ({_num(lim.max_message_chars)}) code points, "
            f"up to `limits.max_attachments` ({lim.max_attachments}) attachments and "
            f"`limits.max_mentions` ({lim.max_mentions}) mentions per message, emoji up to "
            f"`limits.max_emoji_chars` ({lim.max_emoji_chars}) characters, and frames up to "
            f"`limits.max_frame_bytes` ({_num(lim.max_frame_bytes)}) bytes.",
        )


_MINIMAL_CLIENT = '''\
import asyncio
import itertools
import json

import websockets


async def main(token: str) -> None:
    async with websockets.connect("ws://127.0.0.1:8080/gateway?encoding=json") as ws:
        hello = json.loads(await ws.recv())
        interval = hello["heartbeat_interval_ms"] / 1000
        await ws.send(json.dumps({"op": "identify", "token": token, "client": "demo/1"}))
        ready = json.loads(await ws.recv())
        assert ready["op"] == "ready", ready
        last_s = 0

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(interval)
                await ws.send(json.dumps({"op": "heartbeat", "seq": last_s}))

        beat = asyncio.create_task(heartbeat())
        ids = itertools.count(1)
        channel_id = ready["communities"][0]["channels"][0]["id"]
        await ws.send(json.dumps({"op": "send_message", "id": next(ids),
                                  "channel_id": channel_id, "content": "hello",
                                  "nonce": "demo-1"}))
        try:
            async for raw in ws:
                frame = json.loads(raw)
                if frame["op"] == "dispatch":
                    last_s = frame["s"]
                    print("event", frame["d"]["t"], frame["d"])
                elif frame["op"] in ("ok", "error"):
                    print("reply", frame["id"], frame)
        finally:
            beat.cancel()


asyncio.run(main("YOUR_TOKEN"))
'''


def _walk(t: mi.Type) -> Iterable[mi.Type]:
    yield t
    if isinstance(t, mi.Metadata):
        yield from _walk(t.type)
    elif isinstance(t, mi.UnionType):
        for x in t.types:
            yield from _walk(x)
    elif isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        yield from _walk(t.item_type)


def _own_doc_module(module: ModuleType) -> str:
    return inspect.cleandoc(module.__doc__ or "")


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    match = re.match(r"(.+?\.)(\s|$)", text)
    return match.group(1) if match else text


_RESULT_OF: Final[dict[StructT, StructT]] = {
    SendMessage: MessageResult,
    EditMessage: MessageResult,
    DeleteMessage: Empty,
    AddReaction: Empty,
    RemoveReaction: Empty,
    FetchReactions: UsersResult,
    StartTyping: Empty,
    MarkRead: ReadStateResult,
    FetchHistory: HistoryResult,
    CreateThread: ChannelResult,
    SetThreadArchived: ChannelResult,
    JoinThread: ChannelResult,
    LeaveThread: ChannelResult,
    SetPresence: Empty,
    FetchMembers: MembersResult,
    # moderation (rooms/moderation.py)
    frames.PurgeMessages: frames.ModActionResult,
    frames.WarnMember: frames.ModActionResult,
    frames.TimeoutMember: frames.ModActionResult,
    frames.RemoveTimeout: frames.ModActionResult,
    frames.KickMember: frames.ModActionResult,
    frames.BanMember: frames.ModActionResult,
    frames.UnbanMember: frames.ModActionResult,
    frames.SetSlowmode: ChannelResult,
    frames.SetChannelLocked: ChannelResult,
    frames.SetLockdown: frames.ModActionResult,
    frames.FetchAuditLog: frames.AuditLogResult,
    frames.ReportMessage: frames.ReviewItemResult,
    frames.ReportUser: frames.ReviewItemResult,
    frames.FetchReviewQueue: frames.ReviewQueueResult,
    frames.ClaimReviewItem: frames.ReviewItemResult,
    frames.ResolveReviewItem: frames.ReviewItemResult,
    frames.SubmitAppeal: frames.AppealResult,
    frames.FetchAppeals: frames.AppealsResult,
    frames.ResolveAppeal: frames.AppealResult,
    frames.SubscribeModFeed: Empty,
    frames.UnsubscribeModFeed: Empty,
    # permissions (rooms/roles.py)
    frames.FetchRoles: frames.RolesResult,
    frames.CreateRole: frames.RoleResult,
    frames.UpdateRole: frames.RoleResult,
    frames.DeleteRole: Empty,
    frames.SetMemberRoles: frames.MemberResult,
    frames.FetchChannelOverrides: frames.OverridesResult,
    frames.SetChannelOverride: frames.OverrideResult,
    frames.ClearChannelOverride: Empty,
    frames.SetMemberTier: frames.MemberResult,
    frames.SetChannelTier: ChannelResult,
    SubscribePresence: Empty,
    # live sessions (rooms/live.py)
    live.StageRaiseHand: live.StageResult,
    live.StageSetSpeaker: live.StageResult,
    live.StageSetCohost: live.StageResult,
    live.StageFetch: live.StageResult,
    live.QaAsk: live.QuestionResult,
    live.QaVote: live.QuestionResult,
    live.QaSetState: live.QuestionResult,
    live.QaFetch: live.QuestionsResult,
    # voice rooms (rooms/voice.py)
    VoiceJoin: VoiceJoined,
    voice.VoiceLeave: Empty,
    VoiceIceCandidate: Empty,
    voice.VoiceSetState: Empty,
    voice.VoiceServerMute: frames.ModActionResult,
    voice.VoiceDisconnect: frames.ModActionResult,
    voice.VoiceMove: frames.ModActionResult,
    voice.VoiceFetchStates: voice.VoiceStatesResult,
}


def _request_results() -> dict[StructT, StructT]:
    """Which result each request's ``ok`` carries (as served by ``rooms/chat.py``)."""
    return dict(_RESULT_OF)


_CLOSE_ACTIONS: Final[dict[int, str]] = {
    CloseCode.NORMAL: "Stop; identify on a new connection to start over.",
    CloseCode.NOT_AUTHENTICATED: "Fix the client (identify before requests); reconnect "
    "and identify.",
    CloseCode.IDENTIFY_TIMEOUT: "Reconnect and identify promptly after `hello`.",
    CloseCode.AUTHENTICATION_FAILED: "Get a new token (log in or refresh), then identify.",
    CloseCode.SESSION_INVALID: "Reconnect and identify; fetch history for what you missed.",
}


def _close_action(code: CloseCode) -> str:
    if code in _CLOSE_ACTIONS:
        return _CLOSE_ACTIONS[code]
    if code in RESUMABLE_CLOSE_CODES:
        return "Reconnect after a jittered back-off and resume."
    return "Reconnect and identify."


def undocumented_fields() -> list[str]:
    """``Class.field`` of every documented field that has no description at all."""
    renderer = _Renderer()
    missing: list[str] = []
    documented: list[StructT] = [*client_frame_types(), *server_frame_types(),
                                 *result_types(), *event_types(), *renderer.records(), Limits]
    for cls in documented:
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        for f in info.fields:
            if not renderer.field_doc(cls, f.name, f.type):
                missing.append(f"{cls.__name__}.{f.name}")
    return missing


def render_protocol_markdown() -> str:
    """The whole of ``docs/protocol.md``. Pure: reads only the protocol package."""
    return _Renderer().render()
