"""Part of :mod:`protocol.docgen`: the JSON examples of ``docs/protocol.md``. Curated
ones for the frames a reader meets first (one coherent story: Ada in the ``general``
channel of community 7), generated ones for the rest, each a valid instance of its type."""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.inspect as mi

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
from protocol.docgen_introspect import StructT
from protocol.frames import (
    Dispatch,
    Empty,
    Error,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Identify,
    InvalidSession,
    Ok,
    Ready,
    Reconnect,
    Resume,
    Resumed,
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
from protocol.presence import (
    FetchMembers,
    MembersResult,
    PresenceUpdated,
    SetPresence,
    SubscribePresence,
)
from protocol.voice import (
    VoiceIceCandidate,
    VoiceJoin,
    VoiceJoined,
    VoiceParticipant,
    VoiceSpeaking,
    VoiceStateUpdated,
)

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
