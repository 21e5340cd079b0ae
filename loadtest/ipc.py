"""Messages between the coordinator and its generator processes.

Generator processes are separate interpreters (``python -m loadtest.worker``), started
with pipes: the coordinator writes commands to the worker's stdin, the worker writes
reports to its stdout. Each message is a 4-byte big-endian length and a msgpack body
(msgspec tagged union), so a 100,000-client plan is one cheap write and the worker
notices its coordinator dying as end-of-file on stdin.

Times are CLOCK_MONOTONIC seconds (``time.monotonic()``), one clock for every process
of the machine, so the coordinator can hand out absolute start and stop times.
"""

from __future__ import annotations

import asyncio
import struct
from typing import BinaryIO

import msgspec


class ClientSpec(msgspec.Struct, array_like=True, frozen=True):
    """One simulated user: its token, its room and whether it sends."""

    token: str
    channel_id: int
    sender: bool


class Plan(msgspec.Struct, tag="plan", kw_only=True):
    """Everything a generator process needs; sent once, first."""

    worker: int
    scenario: str
    url: str
    """The websocket URL (``ws://host:port/gateway`` or the peer's)."""
    host: str
    port: int
    sources: list[str]
    """Source addresses to spread connections over (empty: let the kernel choose)."""
    clients: list[ClientSpec]
    connect_rate: float
    """Connection attempts per second for this process (0: as fast as admitted)."""
    connect_concurrency: int
    """Attempts in flight at once (handshake + identify) for this process."""
    send_rate: float
    """Messages per second for one sending client."""
    message_bytes: int
    deadline: float
    """Monotonic time after which the process stops whatever it is doing and exits."""
    framing: str = "hearth"
    """``hearth`` (plain JSON frames) or ``socketio`` (python-socketio peer)."""
    resume: bool = False
    """Reconnect a connection that drops after ``ready`` and ``resume`` its session
    (the failover scenario); otherwise a drop is counted as an error."""
    connect_retries: int = 0
    """Extra attempts for a connection whose connect / identify failed (0: none)."""
    reconnect_jitter_s: float = 1.0
    """First reconnect waits a random delay up to this, doubling per failed attempt up
    to 30 s (what docs/protocol.md asks of clients)."""


class Go(msgspec.Struct, tag="go", kw_only=True):
    """Start sending at ``start`` and stop at ``stop`` (monotonic seconds)."""

    start: float
    stop: float


class Finish(msgspec.Struct, tag="finish"):
    """Stop sending now (if still sending), report ``Final`` and close everything."""


Command = Plan | Go | Finish


class Tick(msgspec.Struct, tag="tick", kw_only=True):
    """A generator's counters (cumulative) and histograms (since the previous tick)."""

    worker: int
    t: float
    attempted: int
    ready: int
    open: int
    failed: int
    sent: int
    acked: int
    deliveries: int
    lost: int
    duplicated: int
    out_of_order: int
    session_gaps: int
    errors: dict[str, int]
    latency: tuple[dict[int, int], int, int, int]
    connect: tuple[dict[int, int], int, int, int]
    ack: tuple[dict[int, int], int, int, int]
    send_lag: tuple[dict[int, int], int, int, int]
    pending: int
    rss_bytes: int
    rss_before_bytes: int
    cpu_s: float
    connect_started_at: float
    connected_at: float
    """When every client of this process had connected or given up (0: not yet)."""
    rss_connected_bytes: int
    """RSS at ``connected_at`` (0: not yet)."""
    dropped: int = 0
    """Connections that dropped after ``ready`` (resume mode: each is reconnected)."""
    reconnecting: int = 0
    """Connections waiting to reconnect or in a reconnect attempt right now."""
    reconnect_attempts: int = 0
    resumed: int = 0
    """Reconnects answered ``resumed``."""
    invalid_sessions: int = 0
    """Resumes answered ``invalid_session`` (the connection then identifies afresh)."""
    reidentified: int = 0
    """Reconnects that ended with a fresh ``ready`` instead of ``resumed``."""
    retried: int = 0
    """Requests re-sent (same nonce) after a reconnect because the old connection died
    before their reply."""
    skipped_disconnected: int = 0
    """Scheduled sends skipped because the sender was reconnecting (resume mode)."""
    connect_retries: int = 0
    """Connect attempts that were retries of a failed one."""
    other_events: dict[str, int] = {}
    """Dispatches other than ``message_create`` received, by event type (presence
    updates, typing...): work the server did that the scenario did not ask for."""
    resume: tuple[dict[int, int], int, int, int] = ({}, 0, 0, 0)
    """Histogram: from a drop to ``resumed`` (since the previous tick)."""


class Final(msgspec.Struct, tag="final", kw_only=True):
    """A generator's last word: its final tick and what it knows of each channel."""

    tick: Tick
    channels: dict[int, tuple[int, int, int, int]]
    """channel id -> (recipients, sum of last seq, max seen, max acked)."""
    anomalies: dict[int, tuple[int, int, int]]
    """channel id -> (lost, duplicated, out of order), only channels with any."""
    dropped_at: list[float] = []
    """Monotonic times of the drops after ``ready`` (resume mode)."""
    resumed_at: list[float] = []
    """Monotonic times at which each reconnect was answered ``resumed``."""
    unanswered: int = 0
    """Requests never answered by the end of the run."""


Report = Tick | Final

_HEADER = struct.Struct(">I")
_command_decoder = msgspec.msgpack.Decoder(Command)
_report_decoder = msgspec.msgpack.Decoder(Report)
_encoder = msgspec.msgpack.Encoder()


def pack(message: Command | Report) -> bytes:
    body = _encoder.encode(message)
    return _HEADER.pack(len(body)) + body


async def read_report(reader: asyncio.StreamReader) -> Report | None:
    """The next report from a worker, or None at end of file."""
    try:
        header = await reader.readexactly(_HEADER.size)
        body = await reader.readexactly(_HEADER.unpack(header)[0])
    except asyncio.IncompleteReadError:
        return None
    report: Report = _report_decoder.decode(body)
    return report


async def read_command(reader: asyncio.StreamReader) -> Command | None:
    """The next command from the coordinator, or None at end of file."""
    try:
        header = await reader.readexactly(_HEADER.size)
        body = await reader.readexactly(_HEADER.unpack(header)[0])
    except asyncio.IncompleteReadError:
        return None
    command: Command = _command_decoder.decode(body)
    return command


def write_report(out: BinaryIO, report: Report) -> None:
    out.write(pack(report))
    out.flush()
