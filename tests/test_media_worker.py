"""A real media worker process driven through pool.py, with real aiortc client peers
on 127.0.0.1 (no gateway): forwarding, muting, speaking events, admission, bad frames."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator

import msgspec
import pytest

from protocol import media_ipc as ipc
from rooms.media import passthrough
from rooms.media.pool import MediaPool, MediaRequestError
from tests.media_peers import ClientPeer

TONES = [440.0, 660.0, 880.0]


@pytest.fixture
async def sock_dir() -> AsyncIterator[str]:
    # AF_UNIX paths are limited to ~100 bytes: pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="hm-", dir="/tmp")
    passthrough.set_host_address_mode("loopback")
    yield path
    passthrough.set_host_address_mode("default")
    shutil.rmtree(path, ignore_errors=True)


async def wait_for(predicate: object, timeout: float, step: float = 0.2) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


@pytest.mark.slow
async def test_bad_frames_get_errors_and_worker_keeps_serving(sock_dir: str) -> None:
    pool = await MediaPool.start(1, sock_dir, ice="loopback")
    try:
        conn = next(iter(pool.workers.values()))
        # 1. not msgpack at all
        await conn.send_raw(ipc.LENGTH_PREFIX.pack(3) + b"\xc1\xc1\xc1")
        # 2. msgpack, right shape, unknown type: the error carries the salvaged id
        body = msgspec.msgpack.encode({"type": "explode", "id": 424242})
        await conn.send_raw(ipc.LENGTH_PREFIX.pack(len(body)) + body)
        # 3. over the frame limit: skipped without buffering, stream stays in sync
        big = ipc.MAX_FRAME_BYTES + 10
        await conn.send_raw(ipc.LENGTH_PREFIX.pack(big) + b"\x00" * big)
        assert await wait_for(lambda: len(conn.orphan_errors) >= 3, 5)
        got = [(e.id, e.code) for e in conn.orphan_errors]
        assert got == [(None, "bad_frame"), (424242, "bad_frame"), (None, "frame_too_large")]
        stats = (await pool.stats())[conn.path]
        assert stats.rooms == 0 and stats.outbound_tracks == 0
        # a field out of range is refused by the schema
        with pytest.raises(MediaRequestError) as err:
            await conn.call(ipc.OpenRoom(id=0, room_id="x" * 129))
        assert err.value.code == "bad_frame"
        # requests to rooms not opened, and offers the worker must refuse
        with pytest.raises(MediaRequestError) as err:
            await conn.call(ipc.Leave(id=0, room_id="nope", participant_id=1))
        assert err.value.code == "unknown_room"
        await pool.open_room("r")
        video = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\n"
        with pytest.raises(MediaRequestError) as err:
            await pool.join("r", 1, video)
        assert err.value.code == "invalid_offer"
        assert (await pool.stats())[conn.path].rooms >= 1
    finally:
        await pool.close()


@pytest.mark.slow
async def test_worker_dies_with_its_parent(sock_dir: str) -> None:
    # A parent process that starts a worker and is then killed: the worker must exit.
    script = (
        "import asyncio, sys\n"
        "from rooms.media.pool import MediaPool\n"
        "async def main():\n"
        "    pool = await MediaPool.start(1, sys.argv[1], ice='loopback')\n"
        "    print(pool.pids[0], flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, sock_dir,
        stdout=asyncio.subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert parent.stdout is not None
    line = await asyncio.wait_for(parent.stdout.readline(), 30)
    worker_pid = int(line)
    os.kill(worker_pid, 0)  # alive
    parent.kill()
    await parent.wait()

    def gone() -> bool:
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            return True
        # a zombie until init reaps it counts as gone
        with open(f"/proc/{worker_pid}/stat") as f:
            return f.read().split(") ")[1].startswith("Z")

    assert await wait_for(gone, 5)


@pytest.mark.slow
async def test_three_peers_hear_each_other_mute_speaking_and_capacity(sock_dir: str) -> None:
    pool = await MediaPool.start(1, sock_dir, capacity_tracks=6, max_slots=2, ice="loopback")
    events: list[tuple[float, ipc.WorkerEvent]] = []
    pool.on_event(lambda _path, ev: events.append((time.monotonic(), ev)))
    peers = [ClientPeer(freq, slots=2) for freq in TONES]
    try:
        for pid, peer in enumerate(peers, start=1):
            answer = await pool.join("room-1", pid, await peer.offer())
            assert answer.slots == 2
            await peer.accept(answer.sdp)

        def everyone_hears_the_others() -> bool:
            return all(
                p.heard(1.0, TONES) == {f for f in TONES if f != p.freq} for p in peers
            )

        assert await wait_for(everyone_hears_the_others, 20), [
            p.heard(1.0, TONES) for p in peers]
        for p in peers:  # never its own tone
            assert p.freq not in p.heard(2.0, TONES)

        connected = {ev.participant_id for _, ev in events
                     if isinstance(ev, ipc.ParticipantState) and ev.state == "connected"}
        assert connected == {1, 2, 3}
        assert await wait_for(lambda: any(
            isinstance(ev, ipc.Speaking) and ev.participant_ids == [1, 2, 3]
            for _, ev in events), 3)

        # admission: 3 x 2 slots = 6 tracks = capacity; a 4th participant is refused
        extra = ClientPeer(None, slots=2)
        try:
            with pytest.raises(MediaRequestError) as err:
                await pool.join("room-1", 4, await extra.offer())
            assert err.value.code == "capacity"
        finally:
            await extra.close()

        stats = next(iter((await pool.stats()).values()))
        assert stats.participants == 3 and stats.outbound_tracks == 6
        assert stats.packets_forwarded > 100

        # server mute of participant 1 (440 Hz): gone from the others within ~1 s
        muted_at = time.monotonic()
        await pool.set_participant("room-1", 1, can_speak=False, deafened=False)
        await asyncio.sleep(1.0)

        def mute_effective() -> bool:
            return all(440.0 not in p.heard(0.5, TONES) for p in peers[1:])

        assert await wait_for(mute_effective, 0.5), [p.heard(0.5, TONES) for p in peers]
        assert peers[1].heard(0.5, TONES) == {880.0}
        assert peers[2].heard(0.5, TONES) == {660.0}
        assert peers[0].heard(0.5, TONES) == {660.0, 880.0}  # muted still hears
        assert await wait_for(lambda: any(
            isinstance(ev, ipc.Speaking) and ev.participant_ids == [2, 3] and t > muted_at
            for t, ev in events), 2)
        stats = next(iter((await pool.stats()).values()))
        assert stats.packets_dropped > 10  # participant 1's packets, dropped at the tap

        await pool.leave("room-1", 3)
        closed = await pool.close_room("room-1")
        assert closed.recording_path is None
        stats = next(iter((await pool.stats()).values()))
        assert stats.rooms == 0 and stats.outbound_tracks == 0
    finally:
        for p in peers:
            await p.close()
        await pool.close()


@pytest.mark.slow
async def test_large_audience_gets_the_mix_and_the_recording_holds_every_speaker(
        sock_dir: str, tmp_path: object) -> None:
    """A room opened for a stage: two speakers, and once listeners outnumber
    ``mix_listeners_above`` they get one shared mix carrying both speakers; speakers
    still hear each other directly; the WAV recording holds both tones."""
    import wave

    import numpy as np

    from tests.media_peers import tones_in

    record = os.path.join(sock_dir, "stage.wav")
    pool = await MediaPool.start(1, sock_dir, ice="loopback")
    speakers = [ClientPeer(freq, slots=2) for freq in TONES[:2]]
    listeners = [ClientPeer(None, slots=2) for _ in range(2)]
    try:
        await pool.open_room("stage", mix_listeners_above=1, record_path=record)
        for pid, peer in enumerate([*speakers, *listeners], start=1):
            can_speak = pid <= len(speakers)
            answer = await pool.join("stage", pid, await peer.offer(), can_speak=can_speak)
            await peer.accept(answer.sdp)

        def listeners_hear_the_mix() -> bool:
            # both tones arrive on the listener's first slot alone: the mix
            return all(tones_in(p.listeners[0].recent(1.0), TONES) == set(TONES[:2])
                       and len(p.listeners[1].recent(1.0)) == 0 for p in listeners)

        assert await wait_for(listeners_hear_the_mix, 20), [
            [tones_in(s.recent(1.0), TONES) for s in p.listeners] for p in listeners]
        assert speakers[0].heard(1.0, TONES) == {TONES[1]}
        assert speakers[1].heard(1.0, TONES) == {TONES[0]}
        await asyncio.sleep(1.0)
        closed = await pool.close_room("stage")
        assert closed.recording_path == record and closed.recording_s > 1.0
        with wave.open(record, "rb") as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (48000, 1, 2)
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        audio = pcm.astype(np.float64)  # int16 scale, as the peers decode it
        windows = [tones_in(audio[i:i + 12000], TONES) for i in range(0, len(audio), 12000)]
        assert set(TONES[:2]) in windows, windows  # a quarter second holding both tones
    finally:
        for p in [*speakers, *listeners]:
            await p.close()
        await pool.close()


@pytest.mark.slow
async def test_admission_counts_sendable_streams_not_offered_slots(sock_dir: str) -> None:
    # Browsers offer 9 slots each. Capacity 10: one speaker and four listeners send
    # 4 streams (the slot count would be 45 and refuse the second joiner); a second
    # speaker makes it 10; a third would need 18 and is refused with `capacity`.
    pool = await MediaPool.start(1, sock_dir, capacity_tracks=10, max_slots=9,
                                 ice="loopback")
    peers: list[ClientPeer] = []
    try:
        async def join(pid: int, can_speak: bool) -> None:
            peer = ClientPeer(440.0 if can_speak else None, slots=9)
            peers.append(peer)
            answer = await pool.join("stage", pid, await peer.offer(), can_speak=can_speak)
            assert answer.slots == 9

        async def stats() -> ipc.WorkerStats:
            return next(iter((await pool.stats()).values()))

        await join(1, True)
        for pid in range(2, 6):
            await join(pid, False)
        s = await stats()
        assert (s.outbound_tracks, s.offered_slots) == (4, 45)
        await join(6, True)
        assert (await stats()).outbound_tracks == 4 * 2 + 1 + 1
        with pytest.raises(MediaRequestError) as refused:
            await join(7, True)
        assert refused.value.code == "capacity"
        # A listener muting a speaker frees streams: the figure follows at once.
        await pool.set_participant("stage", 6, can_speak=False, deafened=False)
        assert (await stats()).outbound_tracks == 5
        await pool.leave("stage", 2)
        assert (await stats()).outbound_tracks == 4
    finally:
        for p in peers:
            await p.close()
        await pool.close()


@pytest.mark.slow
async def test_reopening_an_open_room_attaches_the_mix_and_the_recording(
        sock_dir: str) -> None:
    """People join a stage's room before its live session starts; the session's
    OpenRoom (mix threshold, recording) then arrives for an open room and must take
    effect; a further OpenRoom changes nothing."""
    import wave

    from tests.media_peers import tones_in

    record = os.path.join(sock_dir, "late.wav")
    other = os.path.join(sock_dir, "other.wav")
    pool = await MediaPool.start(1, sock_dir, ice="loopback")
    speakers = [ClientPeer(freq, slots=2) for freq in TONES[:2]]
    listeners = [ClientPeer(None, slots=2) for _ in range(2)]
    try:
        await pool.open_room("early")
        for pid, peer in enumerate([*speakers, *listeners], start=1):
            answer = await pool.join("early", pid, await peer.offer(), can_speak=pid <= 2)
            await peer.accept(answer.sdp)

        def forwarded() -> bool:  # one speaker per slot
            return all(tones_in(p.listeners[0].recent(0.6), TONES) | tones_in(
                p.listeners[1].recent(0.6), TONES) == set(TONES[:2]) for p in listeners)

        assert await wait_for(forwarded, 20)
        opened = await pool.open_room("early", mix_listeners_above=1, record_path=record)
        assert not opened.created
        assert not (await pool.open_room("early", mix_listeners_above=5,
                                         record_path=other)).created

        def on_the_mix() -> bool:  # both tones on slot 0 only: the mix took over
            return all(tones_in(p.listeners[0].recent(0.6), TONES) == set(TONES[:2])
                       and len(p.listeners[1].recent(0.6)) == 0 for p in listeners)

        await asyncio.sleep(1.5)
        assert await wait_for(on_the_mix, 10)
        await asyncio.sleep(1.0)
        closed = await pool.close_room("early")
        assert closed.recording_path == record and closed.recording_s > 1.5
        assert "other.wav" not in os.listdir(sock_dir)
        with wave.open(record, "rb") as w:
            assert w.getnframes() / w.getframerate() == pytest.approx(
                closed.recording_s, abs=0.05)
    finally:
        for p in [*speakers, *listeners]:
            await p.close()
        await pool.close()
