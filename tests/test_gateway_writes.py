"""The gateway's write path: frames queued in one loop pass leave in one write, as
valid websocket frames, and a client that stops reading is cut off."""

from __future__ import annotations

import asyncio

from protocol.chat import MessageCreated
from protocol.codec import JSON
from protocol.codes import CloseCode
from protocol.limits import Limits
from protocol.models import Channel, ChannelKind, Message, User
from rooms.realtime.bus import InProcessBus, channel_topic
from rooms.realtime.hub import Hub
from rooms.realtime.sessions import Session
from server.gateway import GatewayConnection, frame_header


class CountingTransport(asyncio.Transport):
    """Stands in for a socket: records each write; its buffer size is settable."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.buffered = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered


class StubGateway:
    """The parts of :class:`server.gateway.Gateway` a connection uses to write."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.stats = {"slow_consumers": 0}
        self.closing: list[GatewayConnection] = []
        self._to_flush: list[GatewayConnection] = []

    def flush_soon(self, conn: GatewayConnection) -> None:
        if not self._to_flush:
            asyncio.get_running_loop().call_soon(self._write_all)
        self._to_flush.append(conn)

    def _write_all(self) -> None:
        connections, self._to_flush = self._to_flush, []
        for conn in connections:
            conn.write_pending()

    def close_soon(self, conn: GatewayConnection) -> None:
        self.closing.append(conn)


def _parse_frames(data: bytes) -> list[bytes]:
    """Split unmasked server frames (text, lengths < 65536)."""
    frames, i = [], 0
    while i < len(data):
        assert data[i] == 0x81
        length = data[i + 1]
        i += 2
        if length == 126:
            length = int.from_bytes(data[i:i + 2], "big")
            i += 2
        frames.append(data[i:i + length])
        i += length
    return frames


def _connection(gateway: StubGateway) -> tuple[GatewayConnection, CountingTransport]:
    transport = CountingTransport()
    conn = GatewayConnection(gateway, None, JSON, transport, None)  # type: ignore[arg-type]
    return conn, transport


CHANNEL = Channel(id=5, kind=ChannelKind.TEXT, name="x", community_id=1)
AUTHOR = User(id=1, username="a", display_name="A")


async def test_a_burst_leaves_in_one_write_per_connection() -> None:
    gateway = StubGateway(Limits())
    hub = Hub(InProcessBus())
    transports = []
    for user_id in (2, 3):
        conn, transport = _connection(gateway)
        conn.protocol.data_to_send()  # drop hello
        session = Session(User(id=user_id, username="u", display_name="U"), JSON, 100)
        session.channels[CHANNEL.id] = CHANNEL
        session.sink = conn
        hub.attach(session)
        transports.append(transport)
    await hub.publish_many([(channel_topic(CHANNEL.id), MessageCreated(message=Message(
        id=seq, channel_id=CHANNEL.id, seq=seq, author=AUTHOR, content="x" * seq * 3,
        created_at=0))) for seq in range(1, 51)])
    assert all(t.writes == [] for t in transports)  # nothing until the pass ends
    await asyncio.sleep(0)
    for transport in transports:
        assert len(transport.writes) == 1
        frames = [JSON.decode_server(f) for f in _parse_frames(transport.writes[0])]
        assert [f.s for f in frames] == list(range(1, 51))  # type: ignore[union-attr]
        assert frames[-1].d.message.content == "x" * 150  # type: ignore[union-attr]


async def test_buffer_past_the_limit_closes_with_4008() -> None:
    gateway = StubGateway(Limits(max_outbound_bytes=1000))
    conn, transport = _connection(gateway)
    transport.buffered = 1001
    conn.write(b'{"op":"heartbeat_ack"}')
    await asyncio.sleep(0)
    assert gateway.closing == [conn]
    assert conn.protocol.close_code() == (CloseCode.SLOW_CONSUMER, "outbound buffer full")
    assert gateway.stats["slow_consumers"] == 1


def test_frame_header_lengths() -> None:
    assert frame_header(5, binary=False) == b"\x81\x05"
    assert frame_header(126, binary=True) == b"\x82\x7e\x00\x7e"
    assert frame_header(70000, binary=False)[:2] == b"\x81\x7f"
