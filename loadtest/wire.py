"""The harness's side of the public protocol: what it sends and the little it reads.

Client frames are built with :mod:`protocol.frames` and encoded by :mod:`protocol.codec`,
so the harness sends exactly what any client sends. Server frames are decoded into
*views*: msgspec structs naming only the fields the harness reads, under the same names
as :mod:`protocol.frames`. Why not decode the full ``ServerFrame`` union: a generator
decodes every delivery of every connection, and skipping ``author``, ``mentions``,
``attachments`` and the rest roughly halves that cost, which is what keeps the generator
from being the bottleneck. ``tests/test_loadtest.py`` checks the views against frames
encoded from the real protocol types.

The send time rides in the message content (``lt:<monotonic ns>:<padding>``):
CLOCK_MONOTONIC is one clock for every process of a Linux machine, and all generator
processes run on the same machine, so send and receive are timed on one clock.

Peers that are not Hearth speak the same JSON frames; python-socketio wraps each frame
in a Socket.IO event, which :class:`SocketIoFraming` adds and strips.
"""

from __future__ import annotations

import msgspec

from protocol.chat import SendMessage
from protocol.codec import JSON
from protocol.frames import Heartbeat, Identify, Resume

CONTENT_PREFIX = "lt:"


# Views are ``gc=False``: they hold no reference cycles, and a generator decodes one per
# delivery; untracked, they never make the cyclic collector's young generation fill up.


class ChannelView(msgspec.Struct, gc=False):
    id: int
    last_seq: int = 0


class SnapshotView(msgspec.Struct, gc=False):
    channels: list[ChannelView] = []


class LimitsView(msgspec.Struct, gc=False):
    requests_per_window: int = 120
    rate_window_ms: int = 10_000
    heartbeat_interval_ms: int = 30_000


class MessageView(msgspec.Struct, gc=False):
    channel_id: int
    seq: int
    content: str = ""


class EventView(msgspec.Struct, gc=False):
    t: str
    message: MessageView | None = None


class ResultView(msgspec.Struct, gc=False):
    type: str
    message: MessageView | None = None


class FrameView(msgspec.Struct, gc=False):
    """Any server frame, keeping only the fields the harness uses."""

    op: str
    s: int | None = None
    d: EventView | None = None
    id: int | None = None
    data: ResultView | None = None
    code: str | None = None
    heartbeat_interval_ms: int | None = None
    limits: LimitsView | None = None
    session_id: str | None = None
    replayed: int | None = None
    reason: str | None = None
    retry_after_ms: int | None = None
    communities: list[SnapshotView] = []
    private_channels: list[ChannelView] = []


_decode_frame = msgspec.json.Decoder(FrameView).decode


def decode_frame(data: bytes | str) -> FrameView:
    """Decode one server frame into a :class:`FrameView`."""
    return _decode_frame(data)


def encode_identify(token: str) -> bytes:
    return JSON.encode_client(Identify(token=token, client="hearth-loadtest"))


def encode_resume(token: str, session_id: str, seq: int,
                  positions: dict[int, int] | None = None) -> bytes:
    """``positions``: per channel, the newest message seq received (what makes a
    resume on another node exactly-once)."""
    return JSON.encode_client(Resume(token=token, session_id=session_id, seq=seq,
                                     positions=positions or {}))


def encode_heartbeat(seq: int | None) -> bytes:
    return JSON.encode_client(Heartbeat(seq=seq))


def encode_send(request_id: int, channel_id: int, send_ns: int, nonce: str,
                padding: str) -> bytes:
    """A ``send_message`` whose content carries the send time (see module doc)."""
    content = f"{CONTENT_PREFIX}{send_ns}:{padding}"
    return JSON.encode_client(SendMessage(id=request_id, channel_id=channel_id,
                                          content=content, nonce=nonce))


def sent_ns_of(content: str) -> int | None:
    """The send time embedded by :func:`encode_send`, or None for other messages."""
    if not content.startswith(CONTENT_PREFIX):
        return None
    end = content.find(":", 3)
    try:
        return int(content[3:end] if end > 0 else content[3:])
    except ValueError:
        return None


def last_seqs_of_ready(frame: FrameView) -> dict[int, int]:
    """Channel id -> ``last_seq`` for every channel a ``ready`` frame shows."""
    seqs = {c.id: c.last_seq for c in frame.private_channels}
    for snapshot in frame.communities:
        for channel in snapshot.channels:
            seqs[channel.id] = channel.last_seq
    return seqs


class SocketIoFraming:
    """Engine.IO v4 / Socket.IO v5 framing over a plain websocket, for the
    python-socketio peer: Hearth's JSON frames travel as the single argument of a
    ``"f"`` event (``42["f",{...}]``). Only what the peer uses: the open packet, the
    namespace connect, events, and ping/pong."""

    @staticmethod
    def path(path: str) -> str:
        return "/socket.io/?EIO=4&transport=websocket"

    @staticmethod
    def wrap(frame: bytes) -> bytes:
        return b'42["f",' + frame + b"]"

    @staticmethod
    def unwrap(packet: bytes) -> tuple[str, bytes | None]:
        """Classify an incoming packet: ("frame", payload) for an event carrying a
        Hearth frame, ("open"|"connected"|"ping"|"other", None) otherwise."""
        if packet.startswith(b'42["f",'):
            return "frame", packet[7:-1]
        if packet[:1] == b"0":
            return "open", None
        if packet[:2] == b"40":
            return "connected", None
        if packet == b"2":
            return "ping", None
        return "other", None
