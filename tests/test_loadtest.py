"""The load-test harness, tested: its accounting on injected faults, its view of the
wire against the real protocol types, and a short run of every scenario against a real
``hearth serve`` process (and the peers, when their runtimes are installed).

Runs go through ``python -m loadtest`` in a subprocess, exactly as a user runs it, so
the generator processes, the phases and the report writing are all exercised.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri

from loadtest.accounting import Anomalies, ChannelEnd, Histogram, SeqCursor, tail_lost
from loadtest.client import HANDSHAKE, READY, RESUMING
from loadtest.html import render_html
from loadtest.ipc import ClientSpec, Plan
from loadtest.target import TargetError, check_target_url, free_port
from loadtest.wire import decode_frame, encode_send, last_seqs_of_ready, sent_ns_of
from loadtest.worker import Generator
from protocol.chat import MessageCreated, MessageResult
from protocol.codec import JSON
from protocol.frames import Dispatch, Hello, InvalidSession, Ok, Ready, Resumed
from protocol.limits import Limits
from protocol.models import Channel, ChannelKind, Community, CommunitySnapshot, Message, Role, User
from tests.redis_fixture import ensure_redis_server

REPO = Path(__file__).resolve().parent.parent
REQUIRED_KEYS = ("scenario", "connections_peak", "duration_s", "messages_sent", "deliveries",
                 "deliveries_per_s", "latency_ms", "lost", "duplicated", "out_of_order",
                 "errors", "server")

# ----------------------------------------------------------------- accounting (unit)


def test_seq_cursor_counts_an_injected_gap_a_duplicate_and_a_late_arrival() -> None:
    tally = Anomalies()
    cursor = SeqCursor(baseline=0)
    for seq in (1, 2, 3, 5, 6, 6, 2, 7):  # 4 skipped, 6 and 2 seen twice
        cursor.observe(seq, tally)
    assert (tally.lost, tally.duplicated, tally.out_of_order) == (1, 2, 0)
    cursor.observe(4, tally)  # the skipped one arrives late: out of order, not lost
    assert (tally.lost, tally.duplicated, tally.out_of_order) == (0, 2, 1)
    cursor.observe(4, tally)  # and again: now a duplicate
    assert (tally.lost, tally.duplicated, tally.out_of_order) == (0, 3, 1)
    assert cursor.last == 7


def test_seq_cursor_starts_after_the_ready_baseline() -> None:
    tally = Anomalies()
    cursor = SeqCursor(baseline=41)  # the channel had 41 messages before the session
    cursor.observe(42, tally)
    cursor.observe(44, tally)
    assert (tally.lost, tally.duplicated, tally.out_of_order) == (1, 0, 0)


def test_tail_loss_counts_what_connected_recipients_never_reached() -> None:
    # 3 recipients; the channel ended at seq 10 (acked); they stopped at 10, 9 and 7.
    end = ChannelEnd(recipients=3, sum_last=10 + 9 + 7, max_seen=10, max_acked=10)
    assert tail_lost(end) == 4
    # A message seen but never acknowledged to its sender still counts as the end.
    assert tail_lost(ChannelEnd(recipients=2, sum_last=22, max_seen=11, max_acked=10)) == 0
    merged = ChannelEnd()
    merged.merge(ChannelEnd(1, 5, 5, 0))
    merged.merge(ChannelEnd(1, 4, 4, 6))
    assert tail_lost(merged) == 3


def test_histogram_percentiles_are_close_and_never_optimistic() -> None:
    hist = Histogram()
    for us in range(1, 10_001):  # 1 us .. 10 ms, uniform
        hist.record(us)
    summary = hist.summary_ms()
    assert summary["max"] == 10.0
    for key, exact in (("p50", 5.0), ("p90", 9.0), ("p99", 9.9)):
        value = summary[key]
        assert value is not None and exact <= value <= exact * 1.03, (key, value)
    other = Histogram.from_wire(msgspec.msgpack.decode(msgspec.msgpack.encode(hist.to_wire())))
    other.merge(hist)
    assert other.count == 20_000 and other.max_us == 10_000


# ----------------------------------------------------------------- the wire (unit)


def _message(seq: int, content: str, channel_id: int = 7) -> Message:
    return Message(id=1000 + seq, channel_id=channel_id, seq=seq, content=content,
                   author=User(id=3, username="lt_3", display_name="lt_3", bot=True),
                   created_at=1_700_000_000_000, nonce="0.1")


def test_views_read_frames_encoded_from_the_protocol_types() -> None:
    sent = time.monotonic_ns()
    content = json.loads(encode_send(5, 7, sent, "0.5", "xx"))["content"]
    assert sent_ns_of(content) == sent and sent_ns_of("hello") is None

    dispatch = decode_frame(JSON.encode(Dispatch(s=3, d=MessageCreated(
        message=_message(9, content)))))
    assert dispatch.op == "dispatch" and dispatch.s == 3 and dispatch.d is not None
    assert dispatch.d.t == "message_create" and dispatch.d.message is not None
    assert (dispatch.d.message.channel_id, dispatch.d.message.seq) == (7, 9)

    ok = decode_frame(JSON.encode(Ok(id=5, data=MessageResult(message=_message(9, content)))))
    assert ok.op == "ok" and ok.id == 5 and ok.data is not None and ok.data.message is not None

    channel = Channel(id=7, kind=ChannelKind.TEXT, name="room-0", community_id=2, private=True,
                      last_seq=12)
    ready = decode_frame(JSON.encode(Ready(
        session_id="abc", user=User(id=3, username="lt_3", display_name="lt_3"),
        communities=[CommunitySnapshot(community=Community(id=2, name="c", owner_id=3),
                                       role=Role.MEMBER, channels=[channel])],
        private_channels=[], read_states=[])))
    assert last_seqs_of_ready(ready) == {7: 12}


def _frame(payload: bytes) -> bytes:
    """A server-to-client (unmasked) websocket text frame."""
    n = len(payload)
    header = bytes([0x81, n]) if n < 126 else bytes([0x81, 126]) + n.to_bytes(2, "big")
    return header + payload


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def test_generator_counts_injected_gap_and_duplicate_from_raw_frames() -> None:
    """Feed a connection raw websocket frames as the server would send them, with seq 3
    missing and seq 4 delivered twice, then seq 6 acknowledged but never delivered:
    the generator's counts and the final tail accounting must show exactly that."""
    plan = Plan(worker=0, scenario="chat", url="ws://127.0.0.1:1/gateway", host="127.0.0.1",
                port=1, sources=[], clients=[ClientSpec("t", 7, True)], connect_rate=0,
                connect_concurrency=1, send_rate=0, message_bytes=64, deadline=0)

    gen = Generator(plan, io.BytesIO(), 0)
    conn = gen.conns[0]
    conn.ws = ClientProtocol(parse_uri("ws://127.0.0.1:1/gateway"), state=State.OPEN)
    conn.transport = _Transport()
    conn.state = READY
    conn.cursor = SeqCursor(0)
    now = time.monotonic_ns()
    stream = b""
    for s, seq in enumerate((1, 2, 4, 4, 5), start=1):
        content = json.loads(encode_send(seq, 7, now, "n", ""))["content"]
        stream += _frame(JSON.encode(Dispatch(s=s, d=MessageCreated(
            message=_message(seq, content)))))
    stream += _frame(JSON.encode(Ok(id=99, data=MessageResult(message=_message(6, "x")))))
    conn.data_received(stream[:37])  # split mid-frame: reads never align with frames
    conn.data_received(stream[37:])

    assert gen.deliveries == 5 and gen.acked == 1 and gen.latency.count == 5
    tally = gen.book.tallies[7]
    assert (tally.lost, tally.duplicated, tally.out_of_order) == (1, 1, 0)
    final = gen.final()
    recipients, sum_last, max_seen, max_acked = final.channels[7]
    assert (recipients, sum_last, max_seen, max_acked) == (1, 5, 5, 6)
    assert tail_lost(ChannelEnd(recipients, sum_last, max_seen, max_acked)) == 1
    assert final.anomalies == {7: (1, 1, 0)}


class _Capture(_Transport):
    """A transport that keeps what the client wrote (masked websocket frames)."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def frames(self) -> list[dict[str, Any]]:
        """The client's frames, unmasked and decoded (as a server reads them)."""
        from websockets.frames import Frame
        from websockets.server import ServerProtocol

        server = ServerProtocol(state=State.OPEN)
        server.receive_data(self.data)
        return [json.loads(bytes(e.data)) for e in server.events_received()
                if isinstance(e, Frame)]


def test_a_reconnected_client_resumes_and_resends_what_went_unanswered() -> None:
    """After a drop, the connection answers ``hello`` with ``resume`` (its session id and
    the last ``s`` it processed); ``resumed`` counts, and the send the dead connection
    left unanswered goes out again with the same nonce. An ``invalid_session`` makes the
    next attempt identify."""
    plan = Plan(worker=0, scenario="failover", url="ws://127.0.0.1:1/gateway",
                host="127.0.0.1", port=1, sources=[], clients=[ClientSpec("tok", 7, True)],
                connect_rate=0, connect_concurrency=1, send_rate=0, message_bytes=64,
                deadline=0, resume=True)

    gen = Generator(plan, io.BytesIO(), 0)
    conn = gen.conns[0]
    conn.session_id, conn.last_s = "sess-1", 41
    conn.cursor = SeqCursor(12)
    unanswered = encode_send(5, 7, time.monotonic_ns(), "0.5", "")
    gen.pending[5] = (1, 7, conn.index, unanswered)
    gen.reconnects[conn.index] = None  # type: ignore[assignment]  # a reconnect under way
    conn.ws = ClientProtocol(parse_uri(plan.url), state=State.OPEN)
    wire = _Capture()
    conn.transport = wire
    conn.state = HANDSHAKE
    hello = JSON.encode(Hello(heartbeat_interval_ms=30_000, limits=Limits()))
    conn.data_received(_frame(hello))
    assert conn.state == RESUMING
    assert wire.frames() == [{"op": "resume", "token": "tok", "session_id": "sess-1",
                              "seq": 41, "positions": {"7": 12}}]
    conn.data_received(_frame(JSON.encode(Resumed(session_id="sess-1", replayed=0))))
    assert conn.state == READY and gen.resumed == 1 and gen.retried == 1 and gen.open == 1
    # A resume on another node numbers its replay after a jump: not a session gap; a
    # later skip is.
    for s in (57, 58, 60):
        gen.on_dispatch(conn, decode_frame(b'{"op":"dispatch","s":%d,"d":{"t":"x"}}' % s), 0)
    assert conn.last_s == 60 and gen.session_gaps == 1
    resent = wire.frames()[1]
    assert resent["op"] == "send_message" and resent["nonce"] == "0.5" and resent["id"] == 5

    conn.ws = ClientProtocol(parse_uri(plan.url), state=State.OPEN)
    conn.state = HANDSHAKE
    conn.data_received(_frame(hello))
    conn.data_received(_frame(JSON.encode(InvalidSession(reason="expired"))))
    assert gen.invalid_sessions == 1 and conn.session_id is None
    gen.reconnects.clear()


def test_only_loopback_or_named_hosts_are_targeted() -> None:
    assert check_target_url("http://127.0.0.1:8080", []) == ("127.0.0.1", 8080)
    assert check_target_url("http://localhost:9", []) == ("localhost", 9)
    with pytest.raises(TargetError, match="allow-remote"):
        check_target_url("http://10.1.2.3:8080", [])
    assert check_target_url("http://10.1.2.3:8080", ["10.1.2.3"]) == ("10.1.2.3", 8080)


# ----------------------------------------------------------------- real runs


@dataclass
class Served:
    url: str
    log: Path


@pytest.fixture
def hearth_server(database_url: str, tmp_path: Path) -> Iterator[Served]:
    """``hearth serve`` as a separate process on a fresh database, provisioning on.

    Its output goes to a file, not a pipe: a load test can make a server log a lot,
    and an unread pipe would block it mid-run."""
    port = free_port()
    log = tmp_path / "hearth-serve.log"
    env = dict(os.environ, HEARTH_DATABASE_URL=database_url,
               HEARTH_SECRET="hearth-loadtest-secret-0123456789",
               HEARTH_LOADTEST_PROVISIONING="true", HEARTH_LOG_LEVEL="WARNING",
               HEARTH_DATA_DIR=tempfile.mkdtemp(prefix="hearth-lt-data-"))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--port",
                                 str(port)], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    served = Served(url=f"http://127.0.0.1:{port}", log=log)
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{served.url}/readyz", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"hearth serve did not become ready:\n{log.read_text()}")
            time.sleep(0.1)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run_cli(args: list[str], tmp_path: Path, timeout: float = 240) -> dict[str, Any]:
    out = tmp_path / "report.json"
    page = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "loadtest", *args, "--json", str(out),
                           "--html", str(page)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "conns" in done.stderr  # the live progress line
    report: dict[str, Any] = json.loads(out.read_text())
    html = page.read_text()
    assert html.startswith("<!doctype html>") and "<svg" in html
    assert "<script" not in html and 'src="' not in html and "<link" not in html  # offline
    return report


def _assert_structure(report: dict[str, Any], scenario: str, connections: int) -> None:
    for key in REQUIRED_KEYS:
        assert key in report, key
    assert report["scenario"] == scenario
    assert set(report["latency_ms"]) >= {"p50", "p90", "p99", "p999", "max"}
    assert set(report["server"]) >= {"rss_bytes", "rss_per_connection_bytes", "cpu_percent"}
    assert report["connections_peak"] == connections, report["errors"]
    assert report["connections_failed"] == 0
    assert report["server"]["rss_bytes"] and report["server"]["rss_bytes"] > 0
    assert report["duration_s"] > 0
    assert isinstance(report["errors"], dict)
    assert report["timeseries"] and "connections" in report["timeseries"][0]
    assert set(report["connect_phase"]) >= {"server_cpu_percent", "database_cpu_percent",
                                            "generator_cpu_percent"}
    assert isinstance(report["other_events"], dict) and report["interrupted"] is None


@pytest.mark.slow
def test_idle_holds_authenticated_connections(hearth_server: Served, tmp_path: Path) -> None:
    report = _run_cli(["idle", "--url", hearth_server.url, "-n", "60", "--duration", "2",
                       "--processes", "2"], tmp_path)
    _assert_structure(report, "idle", 60)
    assert report["connections_held"] == 60
    assert report["messages_sent"] == 0 and report["latency_ms"]["p50"] is None
    assert report["errors"] == {}


@pytest.mark.slow
def test_chat_delivers_every_message_once_in_order(hearth_server: Served, tmp_path: Path) -> None:
    report = _run_cli(["chat", "--url", hearth_server.url, "-n", "40", "--room-size", "5",
                       "--rate", "1", "--duration", "3", "--processes", "2"], tmp_path)
    _assert_structure(report, "chat", 40)
    sent = report["messages_sent"]
    assert sent > 0 and report["messages_acked"] == sent
    assert report["deliveries"] == sent * 5  # every member, the sender included
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    assert report["latency_ms"]["p99"] is not None and report["latency_ms"]["p99"] > 0
    assert report["channels"]["count"] == 8
    assert report["errors"] == {}


@pytest.mark.slow
def test_broadcast_fans_out_to_the_whole_channel(hearth_server: Served, tmp_path: Path) -> None:
    report = _run_cli(["broadcast", "--url", hearth_server.url, "-n", "50", "--rate", "20",
                       "--duration", "2"], tmp_path)
    _assert_structure(report, "broadcast", 50)
    sent = report["messages_sent"]
    assert sent > 0 and report["deliveries"] == sent * 50
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    assert report["channels"]["count"] == 1


@pytest.mark.slow
def test_join_storm_measures_the_connect_rate(hearth_server: Served, tmp_path: Path) -> None:
    report = _run_cli(["join-storm", "--url", hearth_server.url, "-n", "100", "--duration",
                       "30"], tmp_path)
    _assert_structure(report, "join-storm", 100)
    assert report["connect_rate_per_s"] > 0
    assert report["connect_ms"]["count"] == 100


@pytest.mark.slow
def test_failover_kills_a_worker_and_every_client_resumes(database_url: str,
                                                         tmp_path: Path) -> None:
    """Real processes: the harness starts ``hearth serve --workers 2`` (its own throwaway
    redis-server, the test's fresh database), chats, SIGKILLs the worker holding the
    most connections, and its clients reconnect and resume on the other: every one of
    them resumes, and no channel loses, duplicates or reorders a message."""
    ensure_redis_server()  # --workers 2 needs Redis: installed when missing, never skipped
    report = _run_cli(["failover", "--database-url", database_url, "--workers", "2",
                       "-n", "60", "--room-size", "5", "--rate", "1", "--duration", "6",
                       "--kill-after", "2", "--reconnect-jitter", "0.3", "--drain", "20"],
                      tmp_path, timeout=300)
    _assert_structure(report, "failover", 60)
    fo = report["failover"]
    assert fo["killed"] and fo["killed_pid"] in fo["gateway_pids_before"]
    assert len(fo["gateway_pids_before"]) == 2
    assert 0 < fo["dropped"] == fo["expected_dropped"], fo
    assert fo["resumed"] == fo["dropped"] and fo["resume_success_rate"] == 1.0, fo
    assert fo["not_recovered"] == 0 and fo["invalid_sessions"] == 0
    assert fo["kill_to_resumed_ms"]["count"] == fo["resumed"]
    assert 0 < fo["kill_to_resumed_ms"]["p50"] <= fo["kill_to_resumed_ms"]["max"] < 30_000
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0), \
        (report["channels"], fo, report["errors"], report["notes"])
    assert (fo["lost"], fo["duplicated"], fo["out_of_order"]) == (0, 0, 0)
    assert report["session_seq_gaps"] == 0  # resumed sessions go on numbering without a gap
    assert report["messages_sent"] > 0 and report["messages_acked"] == report["messages_sent"]
    assert report["connections_held"] == 60 and report["errors"] == {}
    assert "Failover" in render_html(report)


def test_failover_refuses_peers_and_a_single_process(tmp_path: Path) -> None:
    for extra in (["--peer", "node-ws"], ["--workers", "1"]):
        done = subprocess.run([sys.executable, "-m", "loadtest", "failover", *extra, "--json",
                               str(tmp_path / "r.json")], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode != 0 and "failover" in done.stderr
        assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")), reason="needs node")
def test_node_ws_peer_runs_the_same_workload(hearth_server: Served, tmp_path: Path) -> None:
    report = _run_cli(["chat", "--url", hearth_server.url, "-n", "20", "--room-size", "5",
                       "--rate", "1", "--duration", "2", "--peer", "node-ws"], tmp_path,
                      timeout=400)
    peer = report["peers"]["node-ws"]
    _assert_structure(peer, "chat", 20)
    assert peer["deliveries"] == peer["messages_sent"] * 5 and peer["lost"] == 0
    ratio = report["ratios"]["node-ws"]["deliveries_per_s"]
    assert ratio["ratio"] is not None and ratio["ratio"] > 0


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("socketio") is None
                    or not shutil.which("redis-server"),
                    reason="needs the loadtest extra (python-socketio) and redis-server")
def test_python_socketio_peer_runs_the_same_workload(hearth_server: Served,
                                                     tmp_path: Path) -> None:
    report = _run_cli(["broadcast", "--url", hearth_server.url, "-n", "20", "--rate", "10",
                       "--duration", "2", "--peer", "python-socketio"], tmp_path, timeout=400)
    peer = report["peers"]["python-socketio"]
    _assert_structure(peer, "broadcast", 20)
    assert peer["deliveries"] == peer["messages_sent"] * 20 and peer["lost"] == 0
    assert "python-socketio" in render_html(report)
