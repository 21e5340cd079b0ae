"""The ``voice`` load-test scenario: its timing marker through the real Opus codec, the
matching of what listeners heard against what speakers sent, and a short real run of
``python -m loadtest voice`` against a ``hearth serve`` the harness starts itself.

The run asserts structure and correctness (everyone joined, every forwarded slot
carried every frame, mouth-to-ear measured), never performance targets: the figures
belong in docs/BENCHMARKS.md, not in a test that a busy machine would fail.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame

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
                    hit = detector.feed(mono_samples(decoded), float(k))  # type: ignore[arg-type]
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
                assert detector.feed(mono_samples(decoded), 0.0) is None  # type: ignore[arg-type]
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
                ["--participants", "40", "--speakers", "17"], ["--duration", "0"]):
        done = subprocess.run([sys.executable, "-m", "loadtest", "voice", *bad],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "hearth loadtest:" in done.stderr, (bad, done.stderr)
