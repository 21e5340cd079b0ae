"""The hub without sockets: encode-once fan-out, per-session numbering, congestion."""

from __future__ import annotations

import msgspec

from protocol.chat import MessageCreated, TypingStarted
from protocol.codec import JSON, MSGPACK, Codec
from protocol.codes import CloseCode
from protocol.frames import ServerFrame
from protocol.models import Channel, ChannelKind, Message, User
from rooms.realtime.bus import InProcessBus, channel_topic
from rooms.realtime.hub import Hub
from rooms.realtime.sessions import Session


class RecordingSink:
    """A socket stand-in that keeps what was written and can pretend to be behind."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.behind = False

    def write(self, frame: bytes) -> None:
        self.frames.append(frame)

    def fail(self, code: CloseCode, reason: str) -> None:
        raise AssertionError(f"unexpected close {code}")

    def congested(self) -> bool:
        return self.behind


ALICE = User(id=1, username="alice", display_name="Alice")
CHANNEL = Channel(id=7, kind=ChannelKind.TEXT, name="general", community_id=3)


def _session(user_id: int, codec: Codec = JSON) -> tuple[Session, RecordingSink]:
    session = Session(User(id=user_id, username=f"u{user_id}", display_name="U"),
                      codec, replay_size=100)
    session.channels[CHANNEL.id] = CHANNEL
    sink = RecordingSink()
    session.sink = sink
    return session, sink


def _message(seq: int) -> Message:
    return Message(id=100 + seq, channel_id=CHANNEL.id, seq=seq, author=ALICE,
                   content=f"m{seq}", created_at=0)


async def test_one_encoding_many_recipients_each_numbered() -> None:
    hub = Hub(InProcessBus())
    sessions = [_session(i) for i in range(2, 6)]
    for session, _ in sessions:
        hub.attach(session)
    sessions[0][0].seq = 41  # a session that already received other events
    await hub.publish(channel_topic(CHANNEL.id), MessageCreated(message=_message(1)))
    bodies = set()
    for index, (_, sink) in enumerate(sessions):
        [frame] = sink.frames
        decoded = msgspec.json.decode(frame, type=ServerFrame)
        assert decoded.s == (42 if index == 0 else 1)  # type: ignore[union-attr]
        bodies.add(frame[frame.index(b',"d":') + 5:-1])
    assert len(bodies) == 1  # the same event bytes behind every prefix
    assert hub.deliveries == 4


async def test_msgpack_sessions_get_one_transcoding() -> None:
    hub = Hub(InProcessBus())
    (json_session, json_sink) = _session(2)
    (mp_session, mp_sink) = _session(3, MSGPACK)
    hub.attach(json_session)
    hub.attach(mp_session)
    await hub.publish(channel_topic(CHANNEL.id), MessageCreated(message=_message(1)))
    frame = MSGPACK.decode_server(mp_sink.frames[0])
    assert frame.d.message.content == "m1"  # type: ignore[union-attr]
    assert JSON.decode_server(json_sink.frames[0]).s == 1  # type: ignore[union-attr]


async def test_congested_client_skips_typing_without_a_seq_gap() -> None:
    hub = Hub(InProcessBus())
    hub.control.ephemeral(TypingStarted)  # as rooms/chat/chat.py registers it
    session, sink = _session(2)
    hub.attach(session)
    sink.behind = True
    await hub.publish(channel_topic(CHANNEL.id), TypingStarted(
        channel_id=CHANNEL.id, user=ALICE, expires_at=0))
    await hub.publish(channel_topic(CHANNEL.id), MessageCreated(message=_message(1)))
    sink.behind = False
    await hub.publish(channel_topic(CHANNEL.id), TypingStarted(
        channel_id=CHANNEL.id, user=ALICE, expires_at=0))
    frames = [JSON.decode_server(f) for f in sink.frames]
    assert [f.s for f in frames] == [1, 2]  # type: ignore[union-attr]
    assert [f.d.__struct_config__.tag for f in frames] == [  # type: ignore[union-attr]
        "message_create", "typing_start"]
    assert hub.ephemeral_dropped == 1


async def test_duplicates_dropped_per_channel_seq() -> None:
    hub = Hub(InProcessBus())
    session, sink = _session(2)
    hub.attach(session)
    for seq in (1, 2, 2, 1, 3):
        await hub.publish(channel_topic(CHANNEL.id), MessageCreated(message=_message(seq)))
    seqs = [JSON.decode_server(f).d.message.seq for f in sink.frames]  # type: ignore[union-attr]
    assert seqs == [1, 2, 3]
    assert hub.duplicates_dropped == 2


async def test_acknowledged_events_leave_the_replay_buffer() -> None:
    hub = Hub(InProcessBus())
    session, _ = _session(2)
    hub.attach(session)
    for seq in range(1, 6):
        await hub.publish(channel_topic(CHANNEL.id), MessageCreated(message=_message(seq)))
    session.acknowledged(3)
    replay = session.replay_after(3)
    assert replay is not None
    assert [JSON.decode_server(f).s for f in replay] == [4, 5]  # type: ignore[union-attr]
    assert session.replay_after(2) is None  # acknowledged, so no longer kept
    assert session.replay is not None and len(session.replay) == 2
