"""Forwarding rules and speaker detection, without sockets (sans-I/O).

Slots are real :class:`EncodedAudioTrack` objects; a test reads what each slot would
send by draining its queue.
"""

from __future__ import annotations

from rooms.media.forwarder import MIX_SOURCE, ForwardingRoom, RoomSinkConfig
from rooms.media.passthrough import EncodedAudioTrack
from rooms.media.speakers import SpeakerDetector

LOUD = 10  # -10 dBov
QUIET = 90  # -90 dBov: below the 50 threshold
VOICE = b"v" * 60


def drain(track: EncodedAudioTrack) -> list[bytes]:
    out = [bytes(p) for p in track._queue]
    track._queue.clear()
    return out


Slots = dict[int, list[EncodedAudioTrack]]


def make_room(n: int, slots: int = 2) -> tuple[ForwardingRoom, Slots]:
    room = ForwardingRoom("r")
    tracks: dict[int, list[EncodedAudioTrack]] = {}
    for pid in range(1, n + 1):
        tracks[pid] = [EncodedAudioTrack(max_queue=1000) for _ in range(slots)]
        room.add(pid, tracks[pid], can_speak=True, deafened=False)
    return room, tracks


def payload(pid: int) -> bytes:
    return bytes([pid]) * 60


async def test_never_self_and_everyone_else_hears() -> None:
    room, tracks = make_room(3)
    for pid in (1, 2, 3):
        room.on_packet(pid, payload(pid), 960, LOUD, now=0.0)
    for pid in (1, 2, 3):
        got = {b for t in tracks[pid] for b in drain(t)}
        assert got == {payload(o) for o in (1, 2, 3) if o != pid}
    assert room.counters.forwarded == 6
    assert room.outbound_tracks == 6


async def test_mute_drops_at_once_and_frees_slot() -> None:
    room, tracks = make_room(3, slots=1)
    room.on_packet(1, payload(1), 0, LOUD, now=0.0)
    assert room.assignments(2) == [1]
    room.set_participant(1, can_speak=False, deafened=False)
    assert room.assignments(2) == [None]
    drain(tracks[2][0])
    room.on_packet(1, payload(1), 960, LOUD, now=0.02)
    assert drain(tracks[2][0]) == []
    assert room.counters.muted_dropped == 1
    # the freed slot goes to the next speaker immediately
    room.on_packet(3, payload(3), 0, LOUD, now=0.03)
    assert room.assignments(2) == [3]


async def test_deafened_receives_nothing() -> None:
    room, tracks = make_room(2)
    room.set_participant(2, can_speak=True, deafened=True)
    room.on_packet(1, payload(1), 0, LOUD, now=0.0)
    assert all(drain(t) == [] for t in tracks[2])


async def test_quiet_speaker_does_not_take_a_slot_but_holder_keeps_forwarding() -> None:
    room, tracks = make_room(2, slots=1)
    room.on_packet(1, payload(1), 0, QUIET, now=0.0)
    assert room.assignments(2) == [None]
    room.on_packet(1, payload(1), 960, LOUD, now=0.02)
    room.on_packet(1, payload(1), 1920, QUIET, now=0.04)  # pause between words
    assert len(drain(tracks[2][0])) == 2


async def test_loudest_waits_for_one_second_hold_then_wins() -> None:
    room, _ = make_room(4, slots=1)
    room.on_packet(2, payload(2), 0, LOUD, now=0.0)  # 2 takes listener 1's only slot
    assert room.assignments(1) == [2]
    t = 0.0
    # 2 stops at t=0; 3 (quieter) and 4 (louder) talk from t=0.1
    while t < 1.5:
        t += 0.02
        room.on_packet(3, payload(3), int(t * 48000), 40, now=t)
        room.on_packet(4, payload(4), int(t * 48000), 5, now=t)
        room.tick(t)
        if t < 0.99:
            assert room.assignments(1) == [2], t  # held during 1 s of silence
    assert room.assignments(1) == [4]  # loudest of the waiting speakers


async def test_speaking_events_rate_limited_and_final_state_delivered() -> None:
    det = SpeakerDetector(hold_s=0.4, min_interval_s=0.5)
    assert det.observe(1, 0.0, LOUD, 60)
    assert det.poll(0.0) == [1]
    det.observe(2, 0.1, LOUD, 60)
    assert det.poll(0.1) is None  # within 500 ms of the last event
    det.observe(1, 0.3, LOUD, 60)
    assert det.poll(0.5) == [1, 2]
    assert det.poll(0.6) is None  # unchanged
    assert det.poll(1.0) == []  # both silent for more than the 0.4 s hold
    events = 0
    for i in range(100):  # flapping every 20 ms never yields more than 2 events/s
        now = 2.0 + i * 0.02
        if i % 2 == 0:
            det.observe(3, now, LOUD, 60)
        if det.poll(now) is not None:
            events += 1
    assert events <= 4


async def test_fallback_without_audio_level_uses_payload_size() -> None:
    det = SpeakerDetector()
    assert not det.observe(1, 0.0, None, 3)  # DTX / comfort noise
    assert det.observe(1, 0.02, None, 80)
    assert det.is_speaking(1, 0.1)


class ListSink:
    """A minimal real RoomAudioSink: keeps what it was fed (what a recorder would)."""

    def __init__(self, config: RoomSinkConfig) -> None:
        self.config = config
        self.fed: list[tuple[int, bytes]] = []
        self.removed: list[int] = []

    def feed(self, participant_id: int, payload: bytes, rtp_timestamp: int) -> None:
        self.fed.append((participant_id, payload))

    def remove_participant(self, participant_id: int) -> None:
        self.removed.append(participant_id)

    async def close(self) -> tuple[str | None, float]:
        return self.config.record_path, len(self.fed) * 0.02


async def test_sink_fed_and_mix_mode_for_many_listeners() -> None:
    room = ForwardingRoom("r", mix_listeners_above=1)
    sinks: list[ListSink] = []

    def factory(cfg: RoomSinkConfig) -> ListSink:
        sinks.append(ListSink(cfg))
        return sinks[-1]

    room.attach_sink(factory, record_path="/tmp/x.wav")
    spk = [EncodedAudioTrack(max_queue=100) for _ in range(2)]
    l1 = [EncodedAudioTrack(max_queue=100) for _ in range(2)]
    l2 = [EncodedAudioTrack(max_queue=100) for _ in range(2)]
    room.add(1, spk, can_speak=True, deafened=False)
    room.add(2, l1, can_speak=False, deafened=False)
    assert not room.mixed_mode
    room.add(3, l2, can_speak=False, deafened=False)
    assert room.mixed_mode and sinks[0].config.output.active
    room.on_packet(1, payload(1), 0, LOUD, now=0.0)
    room.on_packet(2, payload(2), 0, LOUD, now=0.0)  # a listener cannot speak
    assert sinks[0].fed == [(1, payload(1))]
    assert all(drain(t) == [] for t in l1 + l2)  # no per-speaker forward in mixed mode
    sinks[0].config.output.emit(b"MIX", 960)
    assert drain(l1[0]) == [b"MIX"] and drain(l2[0]) == [b"MIX"]
    assert room.assignments(2)[0] == MIX_SOURCE
    room.remove(3)
    assert not room.mixed_mode and room.assignments(2) == [None, None]
    assert await sinks[0].close() == ("/tmp/x.wav", 0.02)


def _nine() -> list[EncodedAudioTrack]:
    return [EncodedAudioTrack(max_queue=10) for _ in range(9)]


async def test_outbound_tracks_count_what_can_be_sent_not_offered_slots() -> None:
    # A browser offers 9 slots; a 3-speaker + 40-listener stage can send each listener
    # 3 streams and each speaker 2: 126, well inside 175 (the slots would be 387).
    room = ForwardingRoom("stage")
    for pid in range(1, 4):
        room.add(pid, _nine(), can_speak=True, deafened=False)
    for pid in range(4, 44):
        assert room.projected_tracks(pid, 9, False, False) == room.outbound_tracks + 3
        room.add(pid, _nine(), can_speak=False, deafened=False)
    assert room.outbound_tracks == 3 * 2 + 40 * 3 <= 175
    assert room.offered_slots == 43 * 9
    # One more speaker: one more stream at each of the 43 others, 3 for itself.
    assert room.projected_tracks(44, 9, True, False) == 126 + 43 + 3
    room.set_participant(43, can_speak=False, deafened=True)  # deafened: nothing
    assert room.outbound_tracks == 126 - 3
    room.set_participant(1, can_speak=False, deafened=False)  # one speaker fewer
    assert room.outbound_tracks == 2 * 1 + 39 * 2 + 1 * 2
    room.remove(2)
    assert room.outbound_tracks == 1 * 0 + 40 * 1


async def test_outbound_tracks_in_mixed_mode_is_one_per_listener() -> None:
    room = ForwardingRoom("stage", mix_listeners_above=5)
    room.attach_sink(ListSink, record_path=None)
    for pid in range(1, 4):
        room.add(pid, _nine(), can_speak=True, deafened=False)
    for pid in range(4, 9):
        room.add(pid, _nine(), can_speak=False, deafened=False)
    assert not room.mixed_mode and room.outbound_tracks == 6 + 5 * 3
    # The sixth listener switches the room to the mix: every listener costs 1.
    assert room.projected_tracks(9, 9, False, False) == 6 + 6
    room.add(9, _nine(), can_speak=False, deafened=False)
    assert room.mixed_mode and room.outbound_tracks == 6 + 6
