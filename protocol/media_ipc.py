"""Wire types of the gateway <-> media-worker IPC (voice rooms, issue #6).

Why a separate protocol: media (WebRTC, Opus forwarding) runs in worker processes so
that packet forwarding never competes with the gateway's event loop, and so that one
worker per core can be used. The gateway side (``rooms/media/pool.py``) and the worker
(``rooms/media/worker.py``) talk over a unix stream socket, or over TCP when the worker
must be reachable from other nodes (a room lives on ONE worker, whichever node its
members are connected to).

Handshake: the worker speaks first with :class:`WorkerHello` (its random ``instance``
id, the TCP address it advertises, a fresh ``nonce``). When the worker holds a key
(always on TCP), the client must prove it knows the shared secret before anything else
is served: :class:`Authenticate` carries HMAC-SHA256(key, "client" | worker nonce |
client nonce); the worker answers :class:`Authenticated` with HMAC-SHA256(key, "worker"
| client nonce | worker nonce), so the client knows it reached a real worker too (a
fake "worker" could otherwise point clients' media anywhere). Before authentication
frames are limited to :data:`MAX_PREAUTH_FRAME_BYTES` and any other request closes the
connection. The key is derived from the server ``secret`` (:func:`derive_key`), never
the secret itself, so a leaked IPC key does not sign access tokens.

Framing: every frame is a 4-byte big-endian unsigned length followed by that many bytes
of msgpack encoding ONE Struct of this module. A frame longer than
:data:`MAX_FRAME_BYTES` is refused (the receiver skips its body without buffering it and
answers ``MediaError(code="frame_too_large")``), so a buggy or hostile peer cannot make
the other side allocate unbounded memory and the stream stays in sync.

Requests (gateway -> worker) carry ``id``; each gets exactly one reply with the same id:
:class:`MediaOk` (with a :data:`MediaResult` or ``None``) or :class:`MediaError`. Events
(worker -> gateway: :class:`Speaking`, :class:`ParticipantState`) carry no id.

Evolution: new request types and new fields with defaults only.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Annotated, Literal

import msgspec

MAX_FRAME_BYTES = 256 * 1024
"""Largest frame body either side accepts (an SDP offer with 10 m-lines is ~6 KiB)."""

MAX_SDP_CHARS = 64 * 1024
"""Largest SDP offer/answer accepted; bounded well under the frame limit."""

MAX_RECEIVE_SLOTS = 32
"""Hard upper bound on receive slots of one participant on the wire; the worker's own
``--max-slots`` (default 9 = ``voice_receive_slots``) is usually lower."""

MAX_PREAUTH_FRAME_BYTES = 1024
"""Largest frame accepted from a peer that has not authenticated yet (an
:class:`Authenticate` is ~100 bytes): an unauthenticated peer cannot make the worker
buffer more than this."""

NONCE_BYTES = 32

LENGTH_PREFIX = struct.Struct(">I")

RequestId = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
RoomId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
ParticipantId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Sdp = Annotated[str, msgspec.Meta(max_length=MAX_SDP_CHARS)]

ErrorCodeName = Literal[
    "bad_frame",  # not msgpack, or no request type matched, or a field out of range
    "frame_too_large",  # length prefix above MAX_FRAME_BYTES
    "capacity",  # admission control refused the join (worker outbound-track capacity)
    "unknown_room",  # room not opened on this worker
    "unknown_participant",  # participant not in the room
    "invalid_offer",  # SDP not parseable, not audio-only, no Opus, too many slots
    "timeout",  # (gateway side) no reply in time
    "worker_gone",  # (gateway side) the worker connection closed
    "unreachable",  # (gateway side) the room's worker cannot be reached from here
    "unauthorized",  # the IPC peer did not prove it knows the shared secret
    "internal",  # unexpected failure inside the worker (logged there)
]


# --------------------------------------------------------------------------------------
# Requests (gateway -> worker)
# --------------------------------------------------------------------------------------


class MediaRequest(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of every request; ``id`` pairs it with its reply."""

    id: RequestId


class OpenRoom(MediaRequest, tag="open_room"):
    """Create the room on this worker; idempotent (a second open changes nothing).

    ``mix_listeners_above``/``record_path`` switch on the room's server-side audio
    (:mod:`rooms.media.room_audio`): the shared mix for large audiences, the recording.
    """

    room_id: RoomId
    mix_listeners_above: Annotated[int, msgspec.Meta(ge=0)] | None = None
    record_path: Annotated[str, msgspec.Meta(max_length=4096)] | None = None


class Join(MediaRequest, tag="join"):
    """Add a participant from its client-made offer; the reply carries the answer.

    The offer has exactly one ``sendrecv`` audio m-line (the microphone) first, then
    N ``recvonly`` audio m-lines (receive slots). Joining again with the same
    participant id replaces the previous connection (re-join after a move/reconnect).
    """

    room_id: RoomId
    participant_id: ParticipantId
    offer_sdp: Sdp
    can_speak: bool = True
    deafened: bool = False


class AddCandidate(MediaRequest, tag="add_candidate"):
    """A trickled remote ICE candidate (``candidate:...`` line, as browsers send it)."""

    room_id: RoomId
    participant_id: ParticipantId
    candidate: Annotated[str, msgspec.Meta(max_length=1024)]
    sdp_mid: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    sdp_mline_index: Annotated[int, msgspec.Meta(ge=0, le=1024)] | None = None


class SetParticipant(MediaRequest, tag="set_participant"):
    """Change what a participant may do. ``can_speak=False`` (muted by self or server,
    or not permitted) drops its packets at once; ``deafened`` stops forwarding to it."""

    room_id: RoomId
    participant_id: ParticipantId
    can_speak: bool
    deafened: bool


class Leave(MediaRequest, tag="leave"):
    """Remove a participant and close its peer connection (idempotent)."""

    room_id: RoomId
    participant_id: ParticipantId


class CloseRoom(MediaRequest, tag="close_room"):
    """Close every connection of the room and finalize its recording, if any."""

    room_id: RoomId


class GetStats(MediaRequest, tag="get_stats"):
    """Ask the worker for its load (used for placement and metrics)."""


Nonce = Annotated[bytes, msgspec.Meta(min_length=NONCE_BYTES, max_length=NONCE_BYTES)]
Mac = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


class Authenticate(MediaRequest, tag="authenticate"):
    """The client's proof of the shared key (first request on a keyed worker)."""

    client_nonce: Nonce
    mac: Mac


WorkerRequest = (OpenRoom | Join | AddCandidate | SetParticipant | Leave | CloseRoom
                 | GetStats | Authenticate)


# --------------------------------------------------------------------------------------
# Results (inside MediaOk)
# --------------------------------------------------------------------------------------


class MediaResultBase(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of the payloads of :class:`MediaOk`."""


class RoomOpened(MediaResultBase, tag="room_opened"):
    """Reply to OpenRoom; ``created`` is False when the room was already open."""

    room_id: RoomId
    created: bool


class Answer(MediaResultBase, tag="answer"):
    """Reply to Join: the SDP answer (ICE candidates included, gathering is done)."""

    sdp: Sdp
    slots: int


class RoomClosed(MediaResultBase, tag="room_closed"):
    """Reply to CloseRoom."""

    recording_path: str | None = None
    recording_s: float = 0.0


class WorkerStats(MediaResultBase, tag="worker_stats"):
    """Reply to GetStats; ``outbound_tracks`` is what admission control counts: the
    streams the worker can be made to send at once (per listener min(slots, others who
    may be heard), 1 on the mix, 0 deafened). ``offered_slots`` is the receive slots
    the clients offered (attached tracks, mostly idle in a stage)."""

    rooms: int
    participants: int
    outbound_tracks: int
    capacity_tracks: int
    cpu_percent: float
    packets_forwarded: int
    packets_dropped: int
    offered_slots: int = 0


class Authenticated(MediaResultBase, tag="authenticated"):
    """Reply to Authenticate: the worker's proof of the same key."""

    mac: Mac


MediaResult = RoomOpened | Answer | RoomClosed | WorkerStats | Authenticated


# --------------------------------------------------------------------------------------
# Worker -> gateway frames
# --------------------------------------------------------------------------------------


class WorkerFrameBase(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of every frame the worker sends."""


class MediaOk(WorkerFrameBase, tag="ok"):
    """Successful reply to request ``id``."""

    id: RequestId
    result: MediaResult | None = None


class MediaError(WorkerFrameBase, tag="error"):
    """Failed request ``id`` (``None`` when the request's id could not be read)."""

    id: RequestId | None
    code: ErrorCodeName
    message: str = ""


class Speaking(WorkerFrameBase, tag="speaking"):
    """Who is speaking now in a room; sent on change, at most every 500 ms per room."""

    room_id: RoomId
    participant_ids: list[int]


class ParticipantState(WorkerFrameBase, tag="participant_state"):
    """A participant's media connection changed state."""

    room_id: RoomId
    participant_id: ParticipantId
    state: Literal["connected", "failed", "closed"]


class WorkerHello(WorkerFrameBase, tag="hello"):
    """The worker's first frame on every connection.

    ``instance`` is random per worker process start: a placement naming an instance
    that no longer answers at its address is stale (the worker died or was restarted)
    and may be replaced. ``advertise`` is the ``host:port`` other nodes use to reach
    this worker (None: unix socket only, reachable on this node only)."""

    instance: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    nonce: Nonce
    auth_required: bool
    advertise: Annotated[str, msgspec.Meta(max_length=300)] | None = None


WorkerFrame = MediaOk | MediaError | Speaking | ParticipantState | WorkerHello
WorkerEvent = Speaking | ParticipantState


# --------------------------------------------------------------------------------------
# Codec helpers (pure: no I/O)
# --------------------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()
_request_decoder = msgspec.msgpack.Decoder(WorkerRequest)
_worker_frame_decoder = msgspec.msgpack.Decoder(WorkerFrame)


class FrameTooLarge(ValueError):
    """An encoded frame would exceed :data:`MAX_FRAME_BYTES`."""


def encode_frame(msg: WorkerRequest | WorkerFrame) -> bytes:
    """Length prefix + msgpack body; refuses bodies above the limit (sender side check)."""
    body = _encoder.encode(msg)
    if len(body) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return LENGTH_PREFIX.pack(len(body)) + body


def decode_request(body: bytes) -> WorkerRequest:
    """Decode a request body; raises ``msgspec.DecodeError``/``ValidationError``."""
    request: WorkerRequest = _request_decoder.decode(body)
    return request


def decode_worker_frame(body: bytes) -> WorkerFrame:
    """Decode a worker frame body; raises ``msgspec.DecodeError``/``ValidationError``."""
    frame: WorkerFrame = _worker_frame_decoder.decode(body)
    return frame


def salvage_request_id(body: bytes) -> int | None:
    """Best effort: the ``id`` of an invalid request, so its error can be paired with it."""
    try:
        raw = msgspec.msgpack.decode(body)
    except msgspec.DecodeError:
        return None
    if isinstance(raw, dict):
        rid = raw.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid <= 2**53 - 1:
            return rid
    return None


# --------------------------------------------------------------------------------------
# Authentication helpers (pure)
# --------------------------------------------------------------------------------------


def derive_key(secret: str) -> bytes:
    """The IPC key for a server ``secret`` (every node sharing the secret derives the
    same key; the secret itself never goes on the wire or to the worker)."""
    return hmac.new(secret.encode(), b"hearth media ipc v1", hashlib.sha256).digest()


def client_mac(key: bytes, worker_nonce: bytes, client_nonce: bytes) -> bytes:
    """What the client sends in :class:`Authenticate`."""
    return hmac.new(key, b"client\0" + worker_nonce + client_nonce, hashlib.sha256).digest()


def worker_mac(key: bytes, worker_nonce: bytes, client_nonce: bytes) -> bytes:
    """What the worker sends in :class:`Authenticated` (a different label, so a
    reflected client proof is never a valid worker proof)."""
    return hmac.new(key, b"worker\0" + client_nonce + worker_nonce, hashlib.sha256).digest()


def split_host_port(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError names the value."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected host:port, got {value!r}")
    number = int(port)
    if not 0 <= number < 65536:
        raise ValueError(f"port out of range in {value!r}")
    return host.removeprefix("[").removesuffix("]"), number


def join_host_port(host: str, port: int) -> str:
    """The inverse of :func:`split_host_port` (brackets an IPv6 host)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
