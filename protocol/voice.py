"""Voice rooms on the gateway (issue 6): requests, results and events.

A voice room is a ``voice`` or ``stage`` channel. The gateway only *signals*: a member
joins with a WebRTC offer and gets the media worker's answer back (``voice_join``),
trickles ICE candidates (``voice_ice_candidate``), reports their own mute/deafen
(``voice_set_state``) and leaves (``voice_leave``). Audio itself flows between the
browser and a media worker (SFU, ``rooms/media/``), never through the websocket.

The offer must carry exactly one ``sendrecv`` audio transceiver (the microphone) first,
then up to ``limits.voice_receive_slots`` ``recvonly`` audio transceivers (the slots the
server forwards the active speakers into). The connection is never renegotiated: a
``voice_move_request`` or a reconnect means a new ``voice_join`` with a new offer.

Everyone who can view the channel sees who is in it through ``voice_state_update``
(and ``voice_speaking`` while people talk), on every node. Moderators mute
(``voice_server_mute``), disconnect (``voice_disconnect``) and move (``voice_move``)
participants; each action is audited.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from protocol.base import EventBase, Reason, Request, ResultBase
from protocol.models import Id

Sdp = Annotated[str, msgspec.Meta(min_length=1, max_length=32_768,
                                  description="An SDP offer or answer; "
                                              "limits.max_sdp_chars.")]
IceCandidate = Annotated[str, msgspec.Meta(max_length=1_024,
                                           description="One ICE candidate line "
                                                       "(``candidate:...``); empty: "
                                                       "end of candidates.")]
SdpMid = Annotated[str, msgspec.Meta(max_length=64)]
MLineIndex = Annotated[int, msgspec.Meta(ge=0, le=63)]


class VoiceRole(enum.StrEnum):
    """Whether a participant is heard. A ``voice`` channel makes everyone with
    ``SPEAK`` a speaker; a ``stage`` makes the audience listeners until the host
    promotes them (live sessions)."""

    SPEAKER = "speaker"
    LISTENER = "listener"


class VoiceLeaveReason(enum.StrEnum):
    """Why the server took you out of a voice room (``voice_disconnected``)."""

    LEFT = "left"
    """You sent ``voice_leave``, or joined another room."""
    REPLACED = "replaced"
    """Another of your sessions joined a voice room: one voice connection per member."""
    MODERATOR = "moderator"
    """A moderator disconnected you (``voice_disconnect``)."""
    MOVED = "moved"
    """A moderator moved you: re-join the channel of ``voice_move_request``."""
    SANCTIONED = "sanctioned"
    """You were timed out, kicked or banned."""
    PERMISSION = "permission"
    """You can no longer view the channel or lost ``CONNECT_VOICE``."""
    MEDIA = "media"
    """Your media connection failed or closed (or its media worker went away)."""
    SESSION = "session"
    """Your gateway session ended."""


class VoiceParticipant(msgspec.Struct, frozen=True, kw_only=True):
    """One member in a voice room, as everyone who can view the channel sees them."""

    user_id: Id
    self_mute: bool = False
    """The member muted their microphone (``voice_set_state``)."""
    self_deaf: bool = False
    """The member stopped listening (``voice_set_state``); implies nothing is sent to them."""
    server_mute: bool = False
    """A moderator muted them (``voice_server_mute``): not heard until unmuted, even
    after leaving and re-joining."""
    speaking: bool = False
    """Talking right now (from the media worker's level detection)."""
    role: VoiceRole = VoiceRole.SPEAKER
    """``listener``: joined without ``SPEAK`` (or in a stage audience): never heard."""


# ------------------------------------------------------------------------- requests


class VoiceJoin(Request, tag="voice_join"):
    """Join the voice room of a ``voice`` or ``stage`` channel with a WebRTC offer.

    Needs ``VIEW_CHANNEL`` and ``CONNECT_VOICE`` there; without ``SPEAK`` you join as a
    listener. Refused while timed out (``timed_out``) or banned (``banned``); a full
    room (``limits.max_voice_room_participants``) or media workers without room left
    answer ``voice_capacity``; no media workers ``voice_unavailable``. At most
    ``limits.voice_joins_per_window`` joins per ``limits.voice_join_window_ms`` per member
    (every connection and node together), beyond it ``rate_limited`` with
    ``retry_after_ms``. Joining while in
    another room (from any of your sessions) leaves it first (``voice_disconnected``
    there). Answered with the media worker's SDP answer and who is already there."""

    channel_id: Id
    sdp: Sdp
    """The offer: one ``sendrecv`` audio m-line, then at most
    ``limits.voice_receive_slots`` ``recvonly`` audio m-lines."""
    self_mute: bool = False
    """Join muted (nothing you send is forwarded until ``voice_set_state``)."""
    self_deaf: bool = False
    """Join deafened (nothing is forwarded to you until ``voice_set_state``)."""


class VoiceLeave(Request, tag="voice_leave"):
    """Leave the voice room (harmless if you are not in it)."""

    channel_id: Id


class VoiceIceCandidate(Request, tag="voice_ice_candidate"):
    """Trickle one local ICE candidate of your voice connection to its media worker.
    At most ``limits.max_voice_ice_candidates`` per join (then ``rate_limited``)."""

    channel_id: Id
    candidate: IceCandidate
    sdp_mid: SdpMid | None = None
    """The candidate's ``sdpMid`` (media stream id), as the browser gives it."""
    sdp_mline_index: MLineIndex | None = None
    """The candidate's ``sdpMLineIndex`` (0: the first m-line), as the browser gives it."""


class VoiceSetState(Request, tag="voice_set_state"):
    """Mute or deafen yourself in the room you are in. Everyone viewing the channel gets
    ``voice_state_update``. Self-unmuting never lifts a server mute."""

    channel_id: Id
    self_mute: bool
    """Your microphone is muted: the media worker drops what you send."""
    self_deaf: bool
    """You are not listening: the media worker sends you nothing."""


class VoiceServerMute(Request, tag="voice_server_mute"):
    """Mute (or unmute) a member in voice rooms of the channel's community: needs
    ``MUTE_MEMBERS`` in the channel and a role above the member's. The mute holds until
    lifted, across leaving and re-joining. Audited (``voice.mute`` / ``voice.unmute``)."""

    channel_id: Id
    user_id: Id
    muted: bool = True
    """True mutes, false lifts the mute."""
    reason: Reason | None = None


class VoiceDisconnect(Request, tag="voice_disconnect"):
    """Take a member out of the voice room of ``channel_id``: needs ``MOVE_MEMBERS`` in
    the channel and a role above the member's. They may re-join. Audited
    (``voice.disconnect``)."""

    channel_id: Id
    user_id: Id
    reason: Reason | None = None


class VoiceMove(Request, tag="voice_move"):
    """Move a member from the voice room of ``channel_id`` to ``to_channel_id`` (same
    community; needs ``MOVE_MEMBERS`` in both, and the member must be allowed to
    connect there). The member gets ``voice_move_request`` and re-joins with a new
    offer. Audited (``voice.move``)."""

    channel_id: Id
    user_id: Id
    to_channel_id: Id
    reason: Reason | None = None


class VoiceFetchStates(Request, tag="voice_fetch_states"):
    """Who is in the voice room of a channel you can view (without joining)."""

    channel_id: Id


VOICE_REQUEST_TYPES: tuple[type[Request], ...] = (
    VoiceJoin, VoiceLeave, VoiceIceCandidate, VoiceSetState, VoiceServerMute,
    VoiceDisconnect, VoiceMove, VoiceFetchStates,
)
"""The voice requests (served by rooms/voice/voice.py)."""


# -------------------------------------------------------------------------- results


class VoiceJoined(ResultBase, tag="voice_joined"):
    """You are in the room: apply ``sdp`` as the remote answer."""

    channel_id: Id
    sdp: Sdp
    participants: list[VoiceParticipant]
    """Everyone in the room, you included."""


class VoiceStatesResult(ResultBase, tag="voice_states"):
    """Who is in a voice room."""

    channel_id: Id
    participants: list[VoiceParticipant]
    """Everyone in the room now, on every node (empty: nobody)."""


# --------------------------------------------------------------------------- events


class VoiceStateUpdated(EventBase, tag="voice_state_update"):
    """Someone joined, left, or changed their state in a voice room. Sent to everyone
    who can view the channel, on every node."""

    community_id: Id
    channel_id: Id
    user_id: Id
    joined: bool
    """False: they left (the other fields are their last state)."""
    self_mute: bool = False
    """They muted themselves."""
    self_deaf: bool = False
    """They deafened themselves."""
    server_mute: bool = False
    """A moderator muted them."""
    role: VoiceRole = VoiceRole.SPEAKER
    """``listener``: not heard (no ``SPEAK``, or in a stage audience)."""


class VoiceSpeaking(EventBase, tag="voice_speaking"):
    """Who is talking in a voice room now (the whole set; empty: silence). At most one
    per room every 500 ms; skipped for clients that are behind."""

    community_id: Id
    channel_id: Id
    user_ids: list[Id]


class VoiceMoveRequested(EventBase, tag="voice_move_request"):
    """A moderator moved you: you are out of ``channel_id``; send ``voice_join`` for
    ``to_channel_id`` with a new offer. Sent to the moved session only."""

    channel_id: Id
    to_channel_id: Id


class VoiceDisconnected(EventBase, tag="voice_disconnected"):
    """The server took this session out of a voice room: close its peer connection.
    Sent to that session only."""

    channel_id: Id
    reason: VoiceLeaveReason
    """Why; ``moved`` comes right after ``voice_move_request``."""


__all__ = [
    "VOICE_REQUEST_TYPES",
    "VoiceDisconnect",
    "VoiceDisconnected",
    "VoiceFetchStates",
    "VoiceIceCandidate",
    "VoiceJoin",
    "VoiceJoined",
    "VoiceLeave",
    "VoiceLeaveReason",
    "VoiceMove",
    "VoiceMoveRequested",
    "VoiceParticipant",
    "VoiceRole",
    "VoiceServerMute",
    "VoiceSetState",
    "VoiceSpeaking",
    "VoiceStateUpdated",
    "VoiceStatesResult",
]
