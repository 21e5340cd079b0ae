"""The aiortc adapter: fails when the aiortc internals it relies on change.

Two layers: static checks (names, signatures, version pin) and a real exchange between
two aiortc peers on 127.0.0.1 where the answerer taps its receiver and sends the Opus
payloads back untouched through an :class:`EncodedAudioTrack`; the offerer must decode a
tone of the frequency it sent.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections.abc import Iterator

import aiortc
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription

from rooms.media import passthrough
from rooms.media.passthrough import EncodedAudioTrack
from tests.media_peers import ClientPeer, dominant_frequency


@pytest.fixture
def loopback_ice() -> Iterator[None]:
    passthrough.set_host_address_mode("loopback")
    yield
    passthrough.set_host_address_mode("default")


def test_pinned_version_and_internals() -> None:
    assert aiortc.__version__ == passthrough.AIORTC_VERSION == "1.16.0"
    passthrough.check_internals()  # raises naming the internal that moved
    sig = inspect.signature(RTCRtpReceiver._handle_rtp_packet)
    assert list(sig.parameters) == ["self", "packet", "arrival_time_ms"]


def test_aioice_drops_loopback_by_default_and_mode_restores_it() -> None:
    import aioice.ice

    assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    passthrough.set_host_address_mode("loopback")
    try:
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
    finally:
        passthrough.set_host_address_mode("default")
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)


async def test_encoded_track_pts_monotonic_and_bounded() -> None:
    now = [100.0]
    track = EncodedAudioTrack(max_queue=3, clock=lambda: now[0])
    track.put(b"a", source=1, rtp_timestamp=1000)
    track.put(b"b", source=1, rtp_timestamp=1960)  # +960 within one source
    now[0] += 0.1
    track.put(b"c", source=2, rtp_timestamp=5)  # new source: wall gap 100 ms = 5 frames
    track.put(b"d", source=2, rtp_timestamp=5)  # duplicate timestamp: still advances
    assert track.dropped == 1  # queue of 3: "a" was dropped
    pts = []
    for _ in range(3):
        frame = await track.recv()
        assert frame.pts is not None
        pts.append(frame.pts)
    assert pts == [960, 960 + 4800, 960 + 4800 + 960]
    assert all(b > a for a, b in itertools.pairwise(pts))
    track.stop()
    with pytest.raises(aiortc.mediastreams.MediaStreamError):
        await track.recv()


@pytest.mark.slow
async def test_real_exchange_through_tap_and_encoded_track(loopback_ice: None) -> None:
    client = ClientPeer(freq=660.0, slots=1)
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    got: list[tuple[int, int, int | None]] = []
    echo = EncodedAudioTrack()
    try:
        await server.setRemoteDescription(RTCSessionDescription(await client.offer(), "offer"))
        mic, slot = server.getTransceivers()
        for t in (mic, slot):
            passthrough.restrict_to_opus(t)

        def on_packet(payload: bytes, ts: int, seq: int, level: int | None) -> None:
            got.append((ts, seq, level))
            echo.put(payload, source=7, rtp_timestamp=ts)

        passthrough.tap_receiver(mic.receiver, on_packet)
        slot.sender.replaceTrack(echo)
        slot.direction = "sendonly"
        await server.setLocalDescription(await server.createAnswer())
        answer = server.localDescription.sdp
        assert "opus" in answer.lower() and "PCMU" not in answer
        assert "127.0.0.1" in answer
        await client.accept(answer)

        deadline = time.monotonic() + 10
        heard = 0.0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            samples = client.listeners[0].recent(1.0)
            if len(samples) >= 40_000:
                heard = dominant_frequency(samples)
                break
        assert abs(heard - 660.0) < 5, heard
        assert len(got) > 20
        # audio-level extension negotiated and parsed: a 0.3 sine is about -13 dBov
        levels = [lv for _, _, lv in got[-10:]]
        assert all(lv is not None and 5 <= lv <= 20 for lv in levels), levels
        seqs = [s for _, s, _ in got]
        assert len(set(seqs)) == len(seqs)
        assert echo.queued >= len(got) - 1
    finally:
        echo.stop()
        await client.close()
        await server.close()
