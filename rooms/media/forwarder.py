"""SFU room logic: which speaker's Opus packets go to which listener slot (sans-I/O).

Why a separate, aiortc-free module: the forwarding rules are the product (who hears
whom, muting, fairness) and must be unit-testable without sockets. The worker feeds it
packets from :func:`rooms.media.passthrough.tap_receiver` and gives it one
:class:`SlotSink` per receive slot (in production an ``EncodedAudioTrack``).

Rules (issue #6 design):

* A participant never receives itself.
* Only participants with ``can_speak`` are forwarded; ``can_speak=False`` (self mute,
  server mute, no SPEAK permission) drops its packets at once and frees its slots.
  A ``deafened`` participant receives nothing.
* Each listener has N slots; a slot carries one speaker at a time. A speaker gets a free
  slot on its first voiced packet (no wait); a speaker keeps its slot while talking and
  for at least ``hold_s`` (1 s) of silence. When more speakers talk than a listener has
  slots, the waiting ones get slots only from holders silent >= 1 s, loudest first
  (checked every :meth:`ForwardingRoom.tick`, 100 ms in the worker).
* Mixed mode (``rooms/media/room_audio.py``): when the room was opened with
  ``mix_listeners_above=M``, a :class:`RoomAudioSink` exists, and more than M
  participants cannot speak, those listeners get the server mix on slot 0 (through
  :class:`MixOutput`) and no per-speaker forwards; speakers keep per-speaker forwards.
* Every permitted speaker packet is also fed to the room's :class:`RoomAudioSink` (if
  any) so it can mix and/or record.

The mixer/recorder side implements :class:`RoomAudioSink`; the worker creates it with
``rooms.media.room_audio.create_room_sink``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rooms.media.speakers import SpeakerDetector

MIX_SOURCE = -1
"""Source id used when the server mix is put into a slot."""

SLOT_HOLD_S = 1.0
"""A slot is reassigned only after its speaker has been silent this long."""


class SlotSink(Protocol):
    """One outbound receive slot of a listener (``EncodedAudioTrack`` in production)."""

    def put(self, payload: bytes, source: int, rtp_timestamp: int) -> None:
        """Queue one Opus payload; must not block (drop rather than wait)."""


class RoomAudioSink(Protocol):
    """Receives every permitted speaker's Opus packets of one room (mixer/recorder).

    ``feed`` runs on the worker's event loop for every packet: it must not block (hand
    decoding/encoding to a bounded queue + thread or keep it cheap).
    """

    def feed(self, participant_id: int, payload: bytes, rtp_timestamp: int) -> None:
        """One Opus packet of ``participant_id`` (48 kHz RTP timestamp of the sender)."""

    def remove_participant(self, participant_id: int) -> None:
        """The participant left or was muted; drop its decoder state."""

    async def close(self) -> tuple[str | None, float]:
        """Stop; finalize any recording. Returns (recording path or None, seconds)."""


class MixOutput:
    """Handed to the sink factory: how the mixer sends its encoded mix to listeners.

    ``active`` tells whether any listener currently takes the mix (the mixer may skip
    encoding while it is False, but must keep recording if asked to).
    """

    def __init__(self, room: ForwardingRoom) -> None:
        self._room = room

    @property
    def active(self) -> bool:
        return self._room.mixed_mode

    def emit(self, payload: bytes, rtp_timestamp: int) -> None:
        """One encoded 20 ms Opus frame of the mix, put into slot 0 of mixed listeners."""
        self._room.feed_mix(payload, rtp_timestamp)


@dataclass(frozen=True, slots=True)
class RoomSinkConfig:
    """What the sink factory gets when a room opens with mixing or recording."""

    room_id: str
    mix_listeners_above: int | None
    record_path: str | None
    output: MixOutput


RoomAudioSinkFactory = Callable[[RoomSinkConfig], RoomAudioSink]


def _sendable(entries: list[tuple[int, bool, bool]], mixed: bool) -> int:
    """Streams sent at most to participants given as (slots, can_speak, deafened):
    nothing to a deafened one, the mix alone to a listener in mixed mode, else one per
    other participant who may be heard, bounded by its slots."""
    audible = sum(1 for _, can_speak, _ in entries if can_speak)
    total = 0
    for slots, can_speak, deafened in entries:
        if deafened or not slots:
            continue
        if mixed and not can_speak:
            total += 1
        else:
            total += min(slots, audible - (1 if can_speak else 0))
    return total


@dataclass(slots=True)
class _Participant:
    pid: int
    can_speak: bool
    deafened: bool
    slots: Sequence[SlotSink]
    owners: list[int | None] = field(default_factory=list)

    def free_slot(self) -> int | None:
        for i, owner in enumerate(self.owners):
            if owner is None:
                return i
        return None


@dataclass(slots=True)
class RoomCounters:
    """Packet accounting of one room (reported by the worker's GetStats)."""

    forwarded: int = 0
    muted_dropped: int = 0


class ForwardingRoom:
    """One voice room's forwarding state. All methods are synchronous and cheap."""

    def __init__(
        self,
        room_id: str,
        detector: SpeakerDetector | None = None,
        mix_listeners_above: int | None = None,
        hold_s: float = SLOT_HOLD_S,
    ) -> None:
        self.room_id = room_id
        self.detector = detector if detector is not None else SpeakerDetector()
        self.mix_listeners_above = mix_listeners_above
        self.hold_s = hold_s
        self.sink: RoomAudioSink | None = None
        self.counters = RoomCounters()
        self._participants: dict[int, _Participant] = {}
        self._holders: dict[int, dict[int, int]] = {}
        """speaker id -> {listener id: slot index} (the hot path's lookup)."""
        self.mixed_mode = False

    # -- membership ---------------------------------------------------------------

    def attach_sink(self, factory: RoomAudioSinkFactory, record_path: str | None) -> None:
        """Create the room's mixer/recorder through ``factory`` (``rooms/media/room_audio.py``)."""
        self.sink = factory(
            RoomSinkConfig(self.room_id, self.mix_listeners_above, record_path, MixOutput(self))
        )
        # Attached to a room people are already in: its listeners may now be enough
        # for the mix.
        self._update_mixed_mode()

    @property
    def participant_ids(self) -> list[int]:
        return list(self._participants)

    def slot_count(self, pid: int) -> int:
        p = self._participants.get(pid)
        return 0 if p is None else len(p.slots)

    @property
    def offered_slots(self) -> int:
        """Receive slots the room's participants offered (attached tracks, most of
        them idle when few can speak)."""
        return sum(len(p.slots) for p in self._participants.values())

    @property
    def outbound_tracks(self) -> int:
        """Streams this room can actually send at once (what admission control counts).

        Why not the offered slots: a browser always offers 9, but a listener can only
        be sent as many streams as there are others who may be heard, and one (the
        mix) once the room serves listeners the server mix. Counting slots refused a
        3-speaker, 40-listener stage on a 175-track worker that sends it 129 streams.
        """
        entries = [(len(p.slots), p.can_speak, p.deafened)
                   for p in self._participants.values()]
        return _sendable(entries, self._mixes(entries))

    def projected_tracks(self, pid: int, slots: int, can_speak: bool,
                         deafened: bool) -> int:
        """:attr:`outbound_tracks` if ``pid`` joined (or re-joined) with these
        settings: its own streams, plus the one it adds at every other listener when it
        can speak, plus any switch into or out of the mix its arrival causes."""
        entries = [(len(p.slots), p.can_speak, p.deafened)
                   for q, p in self._participants.items() if q != pid]
        entries.append((slots, can_speak, deafened))
        return _sendable(entries, self._mixes(entries))

    def _mixes(self, entries: list[tuple[int, bool, bool]]) -> bool:
        """Would a room with these (slots, can_speak, deafened) be in mixed mode?"""
        listeners = sum(1 for _, can_speak, _ in entries if not can_speak)
        return (self.sink is not None and self.mix_listeners_above is not None
                and listeners > self.mix_listeners_above)

    def add(
        self, pid: int, slots: Sequence[SlotSink], can_speak: bool, deafened: bool
    ) -> None:
        """Add (or replace) a participant with its slot sinks."""
        if pid in self._participants:
            self.remove(pid)
        self._participants[pid] = _Participant(
            pid, can_speak, deafened, slots, [None] * len(slots)
        )
        self._holders[pid] = {}
        self._update_mixed_mode()

    def remove(self, pid: int) -> None:
        """Remove a participant: free the slots it holds elsewhere and its own slots."""
        p = self._participants.pop(pid, None)
        if p is None:
            return
        self._release_speaker(pid)
        self._holders.pop(pid, None)
        self._release_listener(p)
        self.detector.remove(pid)
        if self.sink is not None:
            self.sink.remove_participant(pid)
        self._update_mixed_mode()

    def has(self, pid: int) -> bool:
        return pid in self._participants

    def set_participant(self, pid: int, can_speak: bool, deafened: bool) -> None:
        """Apply mute/permission/deafen changes; effective for the very next packet."""
        p = self._participants.get(pid)
        if p is None:
            raise KeyError(pid)
        if p.can_speak and not can_speak:
            self._release_speaker(pid)
            self.detector.remove(pid)
            if self.sink is not None:
                self.sink.remove_participant(pid)
        p.can_speak = can_speak
        if deafened and not p.deafened:
            self._release_listener(p)
        p.deafened = deafened
        self._update_mixed_mode()

    def assignments(self, listener: int) -> list[int | None]:
        """Who each slot of ``listener`` carries now (``MIX_SOURCE`` for the mix)."""
        return list(self._participants[listener].owners)

    # -- packets ------------------------------------------------------------------

    def on_packet(
        self,
        pid: int,
        payload: bytes,
        rtp_timestamp: int,
        audio_level: int | None,
        now: float,
    ) -> None:
        """One RTP packet from ``pid``'s microphone (the tap's callback)."""
        speaker = self._participants.get(pid)
        if speaker is None or not speaker.can_speak:
            self.counters.muted_dropped += 1
            return
        voiced = self.detector.observe(pid, now, audio_level, len(payload))
        if self.sink is not None:
            self.sink.feed(pid, payload, rtp_timestamp)
        held = self._holders[pid]
        for lid, idx in held.items():
            self._participants[lid].slots[idx].put(payload, pid, rtp_timestamp)
        forwarded = len(held)
        if voiced:
            for listener in self._participants.values():
                if listener.pid == pid or listener.pid in held:
                    continue
                if not self._receives_forwards(listener):
                    continue
                free = listener.free_slot()
                if free is None:
                    continue
                listener.owners[free] = pid
                held[listener.pid] = free
                listener.slots[free].put(payload, pid, rtp_timestamp)
                forwarded += 1
        self.counters.forwarded += forwarded

    def feed_mix(self, payload: bytes, rtp_timestamp: int) -> None:
        """Put one mixed frame into slot 0 of every listener taking the mix."""
        if not self.mixed_mode:
            return
        for p in self._participants.values():
            if p.owners and p.owners[0] == MIX_SOURCE and not p.deafened:
                p.slots[0].put(payload, MIX_SOURCE, rtp_timestamp)
                self.counters.forwarded += 1

    def tick(self, now: float) -> list[int] | None:
        """Periodic upkeep: hand slots of speakers silent >= hold to louder waiting
        speakers. Returns a new speaking set when one should be announced."""
        speaking = sorted(
            self.detector.speaking(now), key=self.detector.loudness, reverse=True
        )
        if speaking:
            for listener in self._participants.values():
                if not self._receives_forwards(listener):
                    continue
                waiting = [
                    s for s in speaking
                    if s != listener.pid and listener.pid not in self._holders.get(s, {})
                ]
                if waiting:
                    self._reassign(listener, waiting, now)
        return self.detector.poll(now)

    # -- internals ----------------------------------------------------------------

    def _receives_forwards(self, p: _Participant) -> bool:
        if p.deafened:
            return False
        return not (self.mixed_mode and not p.can_speak)

    def _reassign(self, listener: _Participant, waiting: Iterable[int], now: float) -> None:
        for speaker in waiting:
            free = listener.free_slot()
            if free is not None:
                idx = free
            else:
                stale = [
                    (self.detector.silent_for(o, now), i)
                    for i, o in enumerate(listener.owners)
                    if o is not None and o != MIX_SOURCE
                    and self.detector.silent_for(o, now) >= self.hold_s
                ]
                if not stale:
                    return
                _, idx = max(stale)
                old = listener.owners[idx]
                assert old is not None
                self._holders.get(old, {}).pop(listener.pid, None)
            listener.owners[idx] = speaker
            self._holders[speaker][listener.pid] = idx

    def _release_speaker(self, pid: int) -> None:
        for lid, idx in self._holders.get(pid, {}).items():
            self._participants[lid].owners[idx] = None
        if pid in self._holders:
            self._holders[pid] = {}

    def _release_listener(self, p: _Participant) -> None:
        for idx, owner in enumerate(p.owners):
            if owner is not None and owner != MIX_SOURCE:
                self._holders.get(owner, {}).pop(p.pid, None)
            p.owners[idx] = None

    def _update_mixed_mode(self) -> None:
        listeners = sum(1 for p in self._participants.values() if not p.can_speak)
        mixed = (
            self.sink is not None
            and self.mix_listeners_above is not None
            and listeners > self.mix_listeners_above
        )
        if mixed != self.mixed_mode:
            self.mixed_mode = mixed
            for p in self._participants.values():
                if not p.can_speak:
                    self._release_listener(p)
        if self.mixed_mode:
            for p in self._participants.values():
                if p.slots and not p.can_speak and p.owners[0] != MIX_SOURCE:
                    self._release_listener(p)
                    p.owners[0] = MIX_SOURCE
                elif p.can_speak and p.owners and p.owners[0] == MIX_SOURCE:
                    p.owners[0] = None
