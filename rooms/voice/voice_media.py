"""The media side of voice rooms, as the gateway sees it.

Voice rooms (``rooms/voice/voice.py``) are coded against :class:`MediaBackend`
(``rooms/media/pool.py`` satisfies it), reached through the :class:`MediaLink` the
server connects once the node's media workers answer. Room ids are the channel id in
decimal. An offer is checked here before any worker sees it.
"""

from __future__ import annotations

from typing import Protocol

from protocol.codes import ErrorCode
from rooms.errors import RequestError


class MediaAnswer(Protocol):
    """The media worker's answer to a join (``protocol/media_ipc.py: Answer``)."""

    @property
    def sdp(self) -> str: ...


class StageOptions(Protocol):
    """Live sessions (``rooms/voice/live.py``) tell any process how to open a stage's room."""

    async def stage_room_options(self, channel_id: int
                                 ) -> tuple[int | None, str | None] | None:
        """(mix_listeners_above, record_path) while the channel's session is live."""
        ...


class MediaBackend(Protocol):
    """What voice rooms need from the media workers (``rooms/media/pool.py``).

    Every method may raise; an exception whose ``code`` attribute is ``"capacity"``
    means admission control refused the join (-> ``voice_capacity``), ``"invalid_offer"``
    an offer the worker cannot use (-> ``invalid_argument``), any other that the media
    side failed (-> ``voice_unavailable``). Event callbacks: the pool calls
    :meth:`VoiceService.media_speaking` and :meth:`VoiceService.media_participant_state`
    (wired in ``server/app.py``). Room ids are strings (the
    channel id in decimal), participant ids the user ids."""

    async def open_room(self, room_id: str, *, mix_listeners_above: int | None = None,
                        record_path: str | None = None) -> object:
        """Create the room on a worker (idempotent)."""

    async def join(self, room_id: str, participant_id: int, offer_sdp: str, *,
                   can_speak: bool, deafened: bool) -> MediaAnswer:
        """Admit a participant with its client offer; returns the SDP answer."""

    async def add_candidate(self, room_id: str, participant_id: int, candidate: str,
                            sdp_mid: str | None, sdp_mline_index: int | None) -> object: ...

    async def set_participant(self, room_id: str, participant_id: int, *, can_speak: bool,
                              deafened: bool) -> object:
        """``can_speak`` False: the participant's packets are dropped from now on."""

    async def leave(self, room_id: str, participant_id: int) -> object: ...

    async def close_room(self, room_id: str) -> object:
        """Close the room; the result carries the recording path and duration."""

    async def stats(self) -> object: ...


def media_code(exc: BaseException) -> str | None:
    """The media side's error code, if the exception carries one (``MediaError``)."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else None


def room_id(channel_id: int) -> str:
    return str(channel_id)


# ---------------------------------------------------------------------- SDP checks


def check_offer(sdp: str, receive_slots: int) -> None:
    """The offer shape the SFU needs (see ``protocol/voice.py``), refused early with a
    clear error instead of a failed negotiation: audio m-lines only, the first one
    sending (``sendrecv`` or ``sendonly``), then 0..``receive_slots`` receive-only."""
    directions: list[str] = []
    kind: str | None = None
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            kind = line[2:].split(" ", 1)[0]
            if kind != "audio":
                raise RequestError(ErrorCode.INVALID_ARGUMENT,
                                   f"the offer may carry audio only, not {kind}")
            directions.append("sendrecv")
        elif kind is not None and line in ("a=sendrecv", "a=sendonly", "a=recvonly",
                                           "a=inactive"):
            directions[-1] = line[2:]
    if not sdp.startswith("v=0") or not directions:
        raise RequestError(ErrorCode.INVALID_ARGUMENT, "not an SDP offer with audio")
    if directions[0] not in ("sendrecv", "sendonly"):
        raise RequestError(ErrorCode.INVALID_ARGUMENT,
                           "the first audio m-line must send (the microphone)")
    slots = directions[1:]
    if any(d != "recvonly" for d in slots):
        raise RequestError(ErrorCode.INVALID_ARGUMENT,
                           "every audio m-line after the first must be recvonly")
    if len(slots) > receive_slots:
        raise RequestError(ErrorCode.INVALID_ARGUMENT,
                           f"at most {receive_slots} receive slots (recvonly m-lines)")


class MediaLink:
    """The node's media workers as the voice rooms reach them.

    The workers are reached with the server's other I/O, after every service is built,
    and closed before them; until then (and without workers) :attr:`backend` is None
    and voice joins answer ``voice_unavailable``. The server opens and closes the link
    (``server/app.py``); the voice rooms only read it."""

    __slots__ = ("backend",)

    def __init__(self) -> None:
        self.backend: MediaBackend | None = None

    def connected(self, backend: MediaBackend) -> None:
        self.backend = backend

    def disconnected(self) -> None:
        self.backend = None
