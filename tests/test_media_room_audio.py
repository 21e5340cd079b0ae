"""RoomAudio in a real ForwardingRoom with a real mixer: the mixer is idle while
nobody takes the mix and nothing is recorded, and mixes cleanly once it is needed."""

from __future__ import annotations

import asyncio

from rooms.media.forwarder import MIX_SOURCE, ForwardingRoom
from rooms.media.mixer import FRAME_SAMPLES
from rooms.media.passthrough import EncodedAudioTrack
from rooms.media.room_audio import RoomAudio, create_room_sink
from tests.media_audio import decode, encode, tone, tone_levels

LOUD = 10


def slots() -> list[EncodedAudioTrack]:
    return [EncodedAudioTrack(max_queue=1000) for _ in range(2)]


async def speak(room: ForwardingRoom, packets: list[bytes], first: int) -> None:
    """Feed one speaker's packets in real time (the mixer runs on its own clock)."""
    loop = asyncio.get_running_loop()
    for i, payload in enumerate(packets, start=first):
        room.on_packet(1, payload, i * FRAME_SAMPLES, LOUD, loop.time())
        await asyncio.sleep(0.02)


async def test_mixer_idle_until_the_mix_is_taken_then_heard() -> None:
    room = ForwardingRoom("stage", mix_listeners_above=1)
    room.attach_sink(create_room_sink, record_path=None)
    sink = room.sink
    assert isinstance(sink, RoomAudio)
    room.add(1, slots(), can_speak=True, deafened=False)
    listener = slots()
    room.add(2, listener, can_speak=False, deafened=False)
    packets = encode(tone(440, 100))
    try:
        await speak(room, packets[:40], 0)  # forwarding: one listener is not enough
        assert not room.mixed_mode
        assert sink.mixer_stats.packets_fed == 0
        assert sink.mixer_stats.ticks_encoded == 0
        assert listener[0]._queue  # it was forwarded directly
        listener[0]._queue.clear()

        room.add(3, slots(), can_speak=False, deafened=False)  # now the mix
        assert room.mixed_mode and room.assignments(2)[0] == MIX_SOURCE
        await speak(room, packets[40:], 40)
        # The mixer runs on its own clock: wait until every fed packet is accounted for,
        # mixed into the listener's queue or dropped as late (a busy machine makes the
        # loop skip ticks), not for a fixed time.
        stats = sink.mixer_stats
        async with asyncio.timeout(10):
            while len(listener[0]._queue) + stats.packets_late < 40:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert stats.packets_fed == 60
        mixed = [bytes(p) for p in listener[0]._queue]
        assert len(mixed) >= 10, (len(mixed), stats)
        levels = tone_levels(decode(mixed)[5 * FRAME_SAMPLES:], [440, 660])
        assert levels[440] > 0.3 and levels[660] < 0.05, levels
    finally:
        await sink.close()


async def test_recorded_room_is_mixed_even_without_mix_listeners(tmp_path: object) -> None:
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    room = ForwardingRoom("stage", mix_listeners_above=10)
    room.attach_sink(create_room_sink, record_path=str(tmp_path / "r.wav"))
    sink = room.sink
    assert isinstance(sink, RoomAudio)
    room.add(1, slots(), can_speak=True, deafened=False)
    room.add(2, slots(), can_speak=False, deafened=False)
    await speak(room, encode(tone(440, 10)), 0)
    assert sink.mixer_stats.packets_fed == 10
    path, seconds = await sink.close()
    assert path is not None and seconds > 0
