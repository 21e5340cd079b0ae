"""Wire types of the gateway <-> media-worker IPC (voice rooms, issue #6).

Why a separate protocol: media (WebRTC, Opus forwarding) runs in worker processes so
that packet forwarding never competes with the gateway's event loop, and so that one
worker per core can be used. The gateway side (``rooms/media/pool.py``) and the worker
(``rooms/media/worker.py``) talk over a unix stream socket.

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
    "unsupported",  # e.g. record_path/mix requested but the mixer module is absent
    "timeout",  # (gateway side) no reply in time
    "worker_gone",  # (gateway side) the worker connection closed
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

    ``mix_listeners_above``/``record_path`` switch on the mixer (helper A2's module);
    a worker without it answers ``unsupported``.
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


WorkerRequest = OpenRoom | Join | AddCandidate | SetParticipant | Leave | CloseRoom | GetStats


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
    """Reply to GetStats; ``outbound_tracks`` is what admission control counts."""

    rooms: int
    participants: int
    outbound_tracks: int
    capacity_tracks: int
    cpu_percent: float
    packets_forwarded: int
    packets_dropped: int


MediaResult = RoomOpened | Answer | RoomClosed | WorkerStats


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


WorkerFrame = MediaOk | MediaError | Speaking | ParticipantState
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
