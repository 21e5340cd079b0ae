"""The ``voice`` load-test scenario: its timing marker through the real Opus codec, the
matching of what listeners heard against what speakers sent, and a short real run of
``python -m loadtest voice`` against a ``hearth serve`` the harness starts itself.

The run asserts structure and correctness (everyone joined, every forwarded slot
carried every frame, mouth-to-ear measured), never performance targets: the figures
belong in docs/BENCHMARKS.md, not in a test that a busy machine would fail.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import pytest
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpreceiver import RemoteStreamTrack

from loadtest import voice_tap
from loadtest.voice_audio import (
    BURST_FRAMES,
    BURST_PERIOD_FRAMES,
    FRAME_S,
    BurstDetector,
    SentBurst,
    ToneTrack,
    burst_offset_frames,
    match_detections,
    mono_samples,
)
from loadtest.voice_lean import (
    LOOP_FRAMES,
    OpusLoopTrack,
    PayloadTable,
    build_loops,
    frame_of,
    transit_s,
)

REPO = Path(__file__).resolve().parent.parent
REQUIRED_KEYS = ("scenario", "connections_peak", "duration_s", "messages_sent", "deliveries",
                 "deliveries_per_s", "latency_ms", "lost", "duplicated", "out_of_order",
                 "errors", "server")


def test_every_burst_survives_opus_once_with_its_speakers_tone() -> None:
    """Four speakers' tracks through aiortc's own Opus encoder and decoder: each burst
    is detected exactly once, in the frame it was sent in or the next, and its tone
    names the right speaker and parity. A detector that fired on noise, twice per
    burst, or on the wrong tone fails this."""
    speakers = 4
    epoch = time.monotonic()
    for speaker in range(speakers):
        track = ToneTrack(speaker, speakers, epoch, seed=speaker)
        track.schedule(epoch, epoch + 3.0)
        encoder, decoder = OpusEncoder(), OpusDecoder()
        detector = BurstDetector(slot=0, tones=2 * speakers)
        found: list[tuple[int, int]] = []  # (frame, tone)
        for k in range(3 * BURST_PERIOD_FRAMES):
            payloads, timestamp = encoder.encode(track.frame(k, epoch + k * FRAME_S))
            for payload in payloads:
                for decoded in decoder.decode(JitterFrame(payload, timestamp)):
                    assert isinstance(decoded, av.AudioFrame)
                    hit = detector.feed(mono_samples(decoded), float(k))
                    if hit is not None:
                        found.append((k, hit.tone))
        offset = burst_offset_frames(speaker, speakers)
        sent = [b.index for b in track.stats.bursts]
        assert sent == [0, 1, 2]
        assert [tone for _, tone in found] == [2 * speaker + j % 2 for j in sent]
        for (frame, _), j in zip(found, sent, strict=True):
            assert 0 <= frame - (offset + j * BURST_PERIOD_FRAMES) <= 1
        assert track.stats.late_frames == 0


def test_noise_alone_is_never_a_burst() -> None:
    epoch = time.monotonic()
    track = ToneTrack(0, 1, epoch, seed=7)  # never scheduled: noise only
    encoder, decoder = OpusEncoder(), OpusDecoder()
    detector = BurstDetector(slot=0, tones=2)
    for k in range(2 * BURST_PERIOD_FRAMES):
        payloads, timestamp = encoder.encode(track.frame(k, epoch + k * FRAME_S))
        for payload in payloads:
            for decoded in decoder.decode(JitterFrame(payload, timestamp)):
                assert isinstance(decoded, av.AudioFrame)
                assert detector.feed(mono_samples(decoded), 0.0) is None
    assert track.stats.bursts == []
    assert BURST_FRAMES * FRAME_S == pytest.approx(0.1)


def test_matching_counts_latency_duplicates_reordering_and_strays() -> None:
    sent = {0: [SentBurst(0, 10.0), SentBurst(2, 12.0), SentBurst(4, 14.0)],
            1: [SentBurst(1, 11.0), SentBurst(3, 13.0)]}
    heard = [(0, 10.05),   # burst 0 after 50 ms
             (0, 10.30),   # burst 0 again: duplicate
             (0, 12.08),   # burst 2 (burst 1 never heard: lost)
             (1, 13.10),   # burst 3
             (0, 14.20),   # burst 4
             (1, 9.0)]     # before any burst of that parity: stray
    m = match_detections(sent, heard)
    assert m.heard == 4 and m.duplicated == 1 and m.unmatched == 1 and m.out_of_order == 0
    assert [round(x, 3) for x in m.latencies_s] == [0.05, 0.08, 0.1, 0.2]
    late = match_detections(sent, [(1, 13.2), (1, 13.3)])  # 3 then (again) 3
    assert late.heard == 1 and late.duplicated == 1
    reordered = match_detections({0: [SentBurst(0, 1.0), SentBurst(2, 3.0)],
                                  1: [SentBurst(1, 2.0)]}, [(0, 3.05), (1, 3.1)])
    assert reordered.heard == 2 and reordered.out_of_order == 1
    too_late = match_detections(sent, [(0, 14.0 + 2.5)])  # beyond 2 periods: unmatchable
    assert too_late.unmatched == 1 and too_late.heard == 0


def _run_voice(args: list[str], tmp_path: Path, timeout: float = 300) -> dict[str, Any]:
    out = tmp_path / "voice.json"
    page = tmp_path / "voice.html"
    done = subprocess.run([sys.executable, "-m", "loadtest", "voice", *args, "--json", str(out),
                           "--html", str(page)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mouth-to-ear" in done.stdout, done.stdout
    assert page.read_text().startswith("<!doctype html>")
    report: dict[str, Any] = json.loads(out.read_text())
    return report


@pytest.mark.slow
def test_voice_room_run_measures_mouth_to_ear(database_url: str, tmp_path: Path) -> None:
    """4 participants, 2 talking, 5 s, against a server the harness starts (with its
    media worker): everyone connects, every listener gets every 20 ms frame of each
    speaker forwarded to it, and every burst is heard with a real latency."""
    report = _run_voice(["--participants", "4", "--speakers", "2", "--duration", "5",
                         "--database-url", database_url], tmp_path)
    for key in REQUIRED_KEYS:
        assert key in report, key
    assert report["scenario"] == "voice"
    assert set(report["latency_ms"]) >= {"p50", "p90", "p99", "p999", "max"}
    assert set(report["server"]) >= {"rss_bytes", "rss_per_connection_bytes", "cpu_percent"}
    voice = report["voice"]
    assert report["connections_peak"] == 4 and voice["failed"] == 0, voice["failures"]
    assert voice["join_to_connected_ms"]["count"] == 4
    assert set(voice["join_to_connected_ms"]) >= {"p50", "p95", "max"}
    # 2 speakers hear 1 track each, 2 listeners hear 2 each
    assert voice["received_tracks_expected"] == 6
    assert voice["received_tracks_active"] == 6, voice
    fps = voice["frames_per_s_per_track"]
    assert fps["min"] is not None and fps["min"] >= 49, fps
    p50 = report["latency_ms"]["p50"]
    assert isinstance(p50, float) and math.isfinite(p50) and p50 > 0
    assert report["messages_sent"] >= 2 * 4  # ~5 bursts per speaker in 5 s
    assert report["deliveries"] > 0 and voice["bursts"]["expected"] > 0
    assert report["errors"] == {}
    assert voice["media_workers"] >= 1 and voice["media_worker_cpu_percent"] is not None
    assert voice["outbound_tracks"] == 6
    assert report["generator"]["cpu_percent"] is not None
    assert report["interrupted"] is None


@pytest.mark.slow
def test_voice_options_are_bounded(tmp_path: Path) -> None:
    for bad in (["--participants", "1"], ["--participants", "4", "--speakers", "5"],
                ["--participants", "40", "--speakers", "17"], ["--duration", "0"],
                ["--participants", "30", "--speakers", "16", "--peer", "direct"],
                ["--peer", "node-ws"]):
        done = subprocess.run([sys.executable, "-m", "loadtest", "voice", *bad],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "hearth loadtest:" in done.stderr, (bad, done.stderr)


# ----------------------------------------------------------------------- lean mode


def test_every_loop_payload_names_its_speaker_and_frame() -> None:
    """Three speakers' pre-encoded loops: every payload is in the table once (nothing
    ambiguous), names the speaker and loop index it was encoded for, and a payload of
    no loop (a server mix, a corrupted packet) identifies nothing."""
    loops = build_loops(3)
    table = PayloadTable(loops)
    assert table.ambiguous == 0
    for speaker, loop in enumerate(loops):
        assert len(loop.bursts) == len(loop.noise) == LOOP_FRAMES
        for index in range(LOOP_FRAMES):
            assert table.identify(loop.bursts[index]) == (speaker, index)
            assert table.identify(loop.noise[index]) == (speaker, index)
    # burst frames differ from noise frames; distinct speakers never share a payload
    assert loops[0].bursts[burst_offset_frames(0, 3)] != loops[0].noise[0]
    payload = bytearray(loops[1].noise[5])
    payload[-1] ^= 0xFF
    assert table.identify(bytes(payload)) is None
    assert table.identify(b"") is None
    # the same tables in another process: libopus is deterministic for the same input
    assert build_loops(1)[0] == loops[0]


def test_frame_and_transit_from_loop_index_and_arrival() -> None:
    epoch = 1000.0
    # frame 17 due at epoch + 0.34 s, received 12 ms later
    assert frame_of(17, epoch + 0.352, epoch) == 17
    assert transit_s(17, epoch + 0.352, epoch) == pytest.approx(0.012)
    # the same index one loop later: frame 117
    assert frame_of(17, epoch + 2.352, epoch) == 117
    # a packet 1.9 s late is still its own frame (transit < one loop)
    assert frame_of(17, epoch + 0.34 + 1.9, epoch) == 17
    # received at its due instant (or within float rounding before it): that frame,
    # not the one a loop earlier
    assert frame_of(LOOP_FRAMES - 1, epoch + (2 * LOOP_FRAMES - 1) * FRAME_S - 1e-9,
                    epoch) == 2 * LOOP_FRAMES - 1
    assert transit_s(3, epoch + 3 * FRAME_S, epoch) == pytest.approx(0.0, abs=1e-9)


def test_loop_track_plays_the_tone_track_and_its_bursts_decode() -> None:
    """An OpusLoopTrack hands over frame k's payload from the right loop with pts on
    the grid, notes the same burst instants as a ToneTrack would, and what it sends
    decodes (aiortc's decoder) to bursts of the right tone: decoding listeners time
    mouth-to-ear from lean speakers exactly as from PCM ones."""
    speakers = 2
    loops = build_loops(speakers)
    table = PayloadTable(loops)
    epoch = 50.0
    for speaker in range(speakers):
        track = OpusLoopTrack(speaker, speakers, epoch, loops[speaker])
        pcm = ToneTrack(speaker, speakers, epoch, seed=0)
        track.schedule(epoch + 0.5, epoch + 3.5)
        pcm.schedule(epoch + 0.5, epoch + 3.5)
        decoder = OpusDecoder()
        detector = BurstDetector(slot=0, tones=2 * speakers)
        found: list[tuple[int, int]] = []
        for k in range(4 * BURST_PERIOD_FRAMES):
            packet = track.frame(k, epoch + k * FRAME_S)
            pcm.frame(k, epoch + k * FRAME_S)
            assert packet.pts == k * 960
            assert table.identify(bytes(packet)) == (speaker, k % LOOP_FRAMES)
            for decoded in decoder.decode(JitterFrame(bytes(packet), k * 960)):
                assert isinstance(decoded, av.AudioFrame)
                hit = detector.feed(mono_samples(decoded), float(k))
                if hit is not None:
                    found.append((k, hit.tone))
        assert [(b.index, b.t) for b in track.stats.bursts] == \
            [(b.index, b.t) for b in pcm.stats.bursts]
        sent = [b.index for b in track.stats.bursts]
        assert len(sent) == 3
        assert [tone for _, tone in found] == [2 * speaker + j % 2 for j in sent]
        offset = burst_offset_frames(speaker, speakers)
        for (frame, _), j in zip(found, sent, strict=True):
            assert 0 <= frame - (offset + j * BURST_PERIOD_FRAMES) <= 1


def test_harness_tap_uses_the_servers_adapter_internals() -> None:
    """The harness's tap (loadtest/voice_tap.py) and the server's adapter
    (rooms/media/passthrough.py) rely on the same aiortc internals: both checks pass on
    the pinned aiortc, and they name the same private attributes."""
    from rooms.media import passthrough

    voice_tap.check_internals()
    passthrough.check_internals()
    assert voice_tap.AIORTC_VERSION == passthrough.AIORTC_VERSION
    assert voice_tap.RECEIVER_PRIVATE == passthrough._RECEIVER_PRIVATE


@pytest.mark.slow
async def test_harness_tap_receives_and_identifies_a_real_peers_packets() -> None:
    """Two aiortc peers on 127.0.0.1: a lean speaker (pre-encoded loop) and a tapped
    receiver. The tap gets the payloads byte for byte (each identified, in order), its
    receiver's statistics still count them, and nothing reaches its decoder."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from rooms.media import passthrough

    passthrough.set_host_address_mode("loopback")
    loops = build_loops(1)
    table = PayloadTable(loops)
    epoch = time.monotonic()
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = OpusLoopTrack(0, 1, epoch, loops[0])
    got: list[tuple[tuple[int, int] | None, int, float]] = []
    enough = asyncio.Event()

    def on_packet(payload: bytes, seq: int, t: float) -> None:
        got.append((table.identify(payload), seq, t))
        if len(got) >= 50:
            enough.set()

    try:
        sender.addTransceiver(track, direction="sendonly")
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(RTCSessionDescription(
            sender.localDescription.sdp, "offer"))
        rx = receiver.getTransceivers()[0].receiver
        voice_tap.tap_receiver(rx, on_packet)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(RTCSessionDescription(
            receiver.localDescription.sdp, "answer"))
        await asyncio.wait_for(enough.wait(), 10)
        assert all(hit is not None and hit[0] == 0 for hit, _, _ in got)
        indexes = [hit[1] for hit, _, _ in got if hit is not None]
        assert all((b - a) % LOOP_FRAMES == 1 for a, b in itertools.pairwise(indexes))
        transits = [transit_s(hit[1], t, epoch) for hit, _, t in got if hit is not None]
        assert all(0 <= x < 0.5 for x in transits), transits
        stats = [s for s in (await rx.getStats()).values()
                 if getattr(s, "type", "") == "inbound-rtp"]
        assert stats and stats[0].packetsReceived >= 50
        assert isinstance(rx.track, RemoteStreamTrack)
        assert rx.track._queue.qsize() == 0  # nothing decoded
    finally:
        track.stop()
        await sender.close()
        await receiver.close()
        passthrough.set_host_address_mode("default")


@pytest.mark.slow
def test_lean_voice_run_counts_identifies_and_times_transit(database_url: str,
                                                            tmp_path: Path) -> None:
    """6 participants, 3 talking, lean mode with 2 decoding participants, 5 s: every
    received track carries every frame, each lean listener recognises packets of every
    speaker it hears (and never itself), transit is positive and sane, and mouth-to-ear
    still comes from the decoding ones."""
    report = _run_voice(["--participants", "6", "--speakers", "3", "--duration", "5",
                         "--listeners-mode", "lean", "--decode-listeners", "2",
                         "--database-url", database_url], tmp_path)
    voice = report["voice"]
    assert report["connections_peak"] == 6 and voice["failed"] == 0, voice["failures"]
    assert voice["listeners"]["mode"] == "lean"
    assert voice["listeners"]["lean_participants"] == 4
    assert voice["listeners"]["decoding_participants"] == 2
    assert voice["listeners"]["speakers_send"] == "pre-encoded Opus loop"
    # 3 speakers hear 2 tracks each, 3 listeners hear 3 each; lean: the 3 speakers and
    # the first listener (the last 2 participants decode)
    assert voice["received_tracks_expected"] == 15
    assert voice["received_tracks_active"] == 15, voice
    fps = voice["frames_per_s_per_track"]
    assert fps["min"] >= 49 and fps["lean_tracks"] == 9 and fps["lean_min"] >= 49, fps
    transit = voice["transit_ms"]
    assert transit["lean_listeners"] == 4
    assert transit["lean_listeners_missing_a_speaker"] == 0, transit
    assert transit["speakers_identified_per_lean_listener"]["min"] == 2, transit
    assert transit["frames_per_s_per_speaker_pair"]["pairs"] == 9
    assert transit["packets_unidentified"] == 0 and transit["heard_themselves"] == 0
    assert transit["frames_per_s_per_speaker_pair"]["min"] >= 49, transit
    assert transit["packets_identified"] >= 9 * 49 * 5
    lat = transit["latency"]
    assert lat["count"] == transit["packets_identified"]
    assert 0 < lat["p50"] < 1000 and lat["max"] < 1000, lat
    # mouth-to-ear from the decoding participants only
    assert report["deliveries"] > 0 and report["latency_ms"]["p50"] > 0
    assert voice["bursts"]["expected"] > 0
    assert any("lean mode" in note for note in report["notes"])
    gen = report["generator"]
    assert gen["received_frames_lean"] > 0 and gen["received_frames_decoded"] > 0
    assert report["errors"] == {} and report["interrupted"] is None


@pytest.mark.slow
def test_lean_stage_on_the_server_mix(database_url: str, tmp_path: Path) -> None:
    """A stage of 2 speakers and 4 listeners whose server mixes above 2 listeners: the
    listeners get one track each (the mix), lean ones count its packets but identify
    none (re-encoded by the server), speakers still identify each other (forwarded),
    and the decoding listeners time mouth-to-ear through the mix."""
    report = _run_voice(["--stage", "--participants", "6", "--speakers", "2",
                         "--duration", "5", "--listeners-mode", "lean",
                         "--decode-listeners", "2", "--mix-listeners-above", "2",
                         "--database-url", database_url], tmp_path)
    voice = report["voice"]
    assert report["connections_peak"] == 6 and voice["failed"] == 0, voice["failures"]
    assert voice["roles"] == {"speaker": 2, "listener": 4}
    assert voice["server_mix"]["listeners_on_mix"] is True
    assert voice["received_tracks_expected"] == 6  # 2 speakers x 1 + 4 listeners x 1 (mix)
    assert voice["received_tracks_active"] == 6, voice
    assert voice["frames_per_s_per_track"]["min"] >= 49, voice["frames_per_s_per_track"]
    transit = voice["transit_ms"]
    assert transit["lean_listeners"] == 4  # 2 speakers + 2 listeners
    assert transit["packets_unidentified"] >= 2 * 49 * 5  # the 2 lean listeners' mix
    assert transit["speakers_identified_per_lean_listener"]["listeners_checked"] == 2
    assert transit["lean_listeners_missing_a_speaker"] == 0, transit
    assert transit["latency"]["p50"] > 0
    assert report["deliveries"] > 0 and report["latency_ms"]["p50"] > 0
    assert report["errors"] == {}


# ------------------------------------------------------------------- --peer direct


def test_direct_mesh_edges_are_what_the_sfu_would_forward() -> None:
    """The mesh's size is the bound the CLI checks: stage 3 + 40 = 126 edges, an
    all-talk room of 10 = 90 (each hears at most the server's 9 receive slots), 16
    speakers in a room of 30 = 270 (refused above MAX_DIRECT_TRACKS)."""
    from loadtest.voice_direct import MAX_DIRECT_TRACKS, direct_tracks, heard_speakers

    assert heard_speakers(1, 3, 9) == [0, 2] and heard_speakers(-1, 3, 2) == [0, 1]
    assert direct_tracks(43, 3, 9) == 3 * 2 + 40 * 3 == 126
    assert direct_tracks(10, 10, 9) == 90
    assert direct_tracks(30, 16, 9) == 270 > MAX_DIRECT_TRACKS >= 126


@pytest.mark.slow
def test_direct_peer_runs_beside_hearth_and_every_listener_hears_every_speaker(
        database_url: str, tmp_path: Path) -> None:
    """3 participants, 2 talking, 5 s, with ``--peer direct``: the peer's report has the
    voice report's structure under its own name, its listeners heard every speaker
    directly (no server), and the ratios name the voice figures. No figure is judged."""
    from loadtest.report import VOICE_RATIO_KEYS

    report = _run_voice(["--participants", "3", "--speakers", "2", "--duration", "5",
                         "--database-url", database_url, "--peer", "direct"], tmp_path)
    peer = report["peers"]["direct"]
    for key in REQUIRED_KEYS:
        assert key in peer, key
    assert peer["scenario"] == "voice" and peer["target"]["name"] == "direct"
    assert peer["interrupted"] is None and peer["errors"] == {}
    voice = peer["voice"]
    assert peer["connections_peak"] == 3 and voice["failed"] == 0, voice["failures"]
    assert voice["join_to_connected_ms"]["count"] == 3
    # 2 speakers hear 1 track each, the listener 2: 4 direct edges, all carrying frames
    assert voice["received_tracks_expected"] == 4 and voice["received_tracks_active"] == 4
    bursts = voice["bursts"]
    assert bursts["sent"] >= 2 * 3 and bursts["expected"] > 0 and bursts["heard"] > 0
    assert bursts["listener_speaker_pairs_unheard"] == 0, bursts
    assert peer["latency_ms"]["count"] == bursts["heard"]
    assert peer["generator"]["cpu_percent"] is not None
    assert peer["server"]["cpu_percent"] is None  # there is no server
    ratios = report["ratios"]["direct"]
    assert set(ratios) == {name for name, _, _ in VOICE_RATIO_KEYS}
    assert set(ratios["mouth_to_ear_p50_ms"]) >= {"hearth", "peer", "ratio", "better"}
    assert report["voice"]["bursts"]["listener_speaker_pairs_unheard"] == 0
