"""A generator process: opens its share of the connections, sends on schedule, counts.

Started by the coordinator as ``python -m loadtest.worker`` with a :class:`~loadtest.ipc.Plan`
on stdin; reports a :class:`~loadtest.ipc.Tick` every second and a
:class:`~loadtest.ipc.Final` at the end on its stdout. It never outlives
``plan.deadline``, and it exits when its stdin closes (the coordinator died), so a run
always stops by itself.

Sending is open-loop: message ``i`` of this process is due at ``start + i / rate``
whether or not earlier ones were answered, and the send timestamp is the actual send
time. How late the generator was against that schedule is recorded (``send_lag``): if
it grows, the generator, not the server, is the bottleneck, and the report says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import resource
import sys
import time
from collections.abc import Iterator
from typing import BinaryIO

from loadtest.accounting import ChannelBook, ChannelEnd, Histogram, SeqCursor
from loadtest.client import READY, Connection, connect_error_code, open_connection
from loadtest.ipc import Final, Finish, Go, Plan, Tick, read_command, write_report
from loadtest.wire import FrameView, SocketIoFraming, encode_send, last_seqs_of_ready, sent_ns_of

ATTEMPT_TIMEOUT_S = 30.0
"""Longest one connect + handshake + identify + ready may take before it counts as
failed (``ready_timeout``)."""
MAX_PENDING = 100_000
"""Unanswered requests per process before sends are skipped (``send_backpressure``)."""
SEND_BATCH = 2_000
"""Most sends in one pass before yielding to the event loop (receives must go on)."""
MAX_RECONNECT_DELAY_S = 30.0


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard limit; return the new soft limit.
    The hard limit cannot be raised without privileges (20,000 on our machines), which
    is why connections are spread over several processes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1_048_576
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def _succeeded(fut: asyncio.Future[None]) -> bool:
    """The attempt's future resolved (ready / resumed) even though a timeout fired: the
    connection is open and counted, so it must not be aborted and counted again."""
    return fut.done() and not fut.cancelled() and fut.exception() is None


def rss_bytes() -> int:
    """This process's resident set size (from /proc, no psutil import on the hot path)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class Generator:
    """The connections of one process and everything counted about them."""

    def __init__(self, plan: Plan, out: BinaryIO, rss_before: int) -> None:
        self.plan = plan
        self.out = out
        framing = SocketIoFraming() if plan.framing == "socketio" else None
        self.conns = [
            Connection(self, i, spec.token, spec.channel_id, spec.sender, plan.url, framing,
                       plan.resume)
            for i, spec in enumerate(plan.clients)
        ]
        self.waiting: dict[int, asyncio.Future[None]] = {}
        self.attempted = self.ready = self.open = self.failed = 0
        self.sent = self.acked = self.deliveries = self.session_gaps = 0
        self.errors: dict[str, int] = {}
        self.latency = Histogram()
        self.connect = Histogram()
        self.ack = Histogram()
        self.send_lag = Histogram()
        self.book = ChannelBook()
        self.pending: dict[int, tuple[int, int, int, bytes]] = {}
        """Request id -> (send time, channel, connection index, frame): unanswered."""
        self.max_acked: dict[int, int] = {}
        self.next_id = 1
        self.heartbeat_s = 30.0
        self.padding = "x" * max(0, plan.message_bytes - 24)
        self.rss_before = rss_before
        """RSS before the plan was read and the connections built: the per-connection
        figure counts everything a connection costs, protocol objects included."""
        self.rss_connected = 0
        self.connected_at = 0.0
        self.connect_started_at = 0.0
        self.finished = asyncio.Event()
        # Resume mode (failover): reconnects and what became of them.
        self.dropped = self.reconnect_attempts = self.resumed = self.invalid_sessions = 0
        self.reidentified = self.retried = self.skipped_disconnected = 0
        self.resume_hist = Histogram()
        self.other_events: dict[str, int] = {}
        self.connect_retries = 0
        self.dropped_at: list[float] = []
        self.resumed_at: list[float] = []
        self.reconnects: dict[int, asyncio.Task[None]] = {}
        """Connection index -> its reconnect loop (while it runs)."""
        self.dropped_since: dict[int, float] = {}

    # ------------------------------------------------------------------ Sink

    def count_error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def on_hello(self, conn: Connection, frame: FrameView) -> None:
        interval = frame.heartbeat_interval_ms or (frame.limits.heartbeat_interval_ms
                                                   if frame.limits else 30_000)
        self.heartbeat_s = max(1.0, interval / 1000.0)

    def on_ready(self, conn: Connection, frame: FrameView, now_ns: int) -> None:
        self.open += 1
        if conn.index in self.reconnects:
            # A reconnect that could not resume: a new session. The seq cursor goes on
            # from what this member saw, so the messages it missed count as lost.
            self.reidentified += 1
            conn.last_s = 0
            self._reconnected(conn, resumed=False)
            return
        self.ready += 1
        self.connect.record((now_ns - conn.started_ns) // 1000)
        baseline = last_seqs_of_ready(frame).get(conn.channel_id)
        if baseline is None:
            self.count_error("channel_not_in_ready")
        else:
            conn.cursor = SeqCursor(baseline)
        # Spread heartbeats over the interval so they do not all land in one second.
        conn.heartbeat_due = time.monotonic() + random.uniform(0.3, 0.9) * self.heartbeat_s
        fut = self.waiting.get(conn.index)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def on_resumed(self, conn: Connection, frame: FrameView, now_ns: int) -> None:
        self.open += 1
        self.resumed += 1
        self._reconnected(conn, resumed=True)

    def on_invalid_session(self, conn: Connection, frame: FrameView) -> None:
        self.invalid_sessions += 1
        self.count_error("invalid_session")

    def _reconnected(self, conn: Connection, resumed: bool) -> None:
        """A reconnect ended in ``resumed`` or a fresh ``ready``: time it, re-send what
        the old connection left unanswered (same nonce: the server stores it once), and
        let the reconnect loop finish."""
        now = time.monotonic()
        # Done reconnecting from now on: a drop of this new connection starts a new loop.
        self.reconnects.pop(conn.index, None)
        dropped_at = self.dropped_since.pop(conn.index, now)
        if resumed:
            self.resumed_at.append(now)
            self.resume_hist.record(int((now - dropped_at) * 1e6))
        conn.heartbeat_due = now + random.uniform(0.3, 0.9) * self.heartbeat_s
        if conn.sender:
            for _, _, index, frame in list(self.pending.values()):
                if index == conn.index:
                    conn.send(frame)
                    self.retried += 1
        fut = self.waiting.get(conn.index)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def on_closed(self, conn: Connection, reason: str) -> None:
        if reason == "lost_after_ready":
            self.open -= 1
            if not self.finished.is_set():
                if self.plan.resume:
                    self.dropped += 1
                    now = time.monotonic()
                    self.dropped_at.append(now)
                    if conn.index not in self.reconnects:
                        self.reconnects[conn.index] = asyncio.get_running_loop().create_task(
                            self.reconnect(conn, now))
                else:
                    self.count_error("disconnected")
        fut = self.waiting.get(conn.index)
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionResetError(reason))

    def on_reply(self, conn: Connection, frame: FrameView, now_ns: int) -> None:
        entry = self.pending.pop(frame.id, None) if frame.id is not None else None
        if frame.op == "ok":
            self.acked += 1
            if entry is not None:
                self.ack.record((now_ns - entry[0]) // 1000)
            data = frame.data
            if data is not None and data.message is not None:
                msg = data.message
                if msg.seq > self.max_acked.get(msg.channel_id, 0):
                    self.max_acked[msg.channel_id] = msg.seq
        else:
            self.count_error(frame.code or "error")

    def on_dispatch(self, conn: Connection, frame: FrameView, now_ns: int) -> None:
        s = frame.s
        if s is not None:
            if s != conn.last_s + 1 and not (conn.jump_ok and s > conn.last_s):
                self.session_gaps += 1
            conn.jump_ok = False
            conn.last_s = s
        event = frame.d
        if event is None or event.t != "message_create" or event.message is None:
            if event is not None:
                self.other_events[event.t] = self.other_events.get(event.t, 0) + 1
            return
        msg = event.message
        self.deliveries += 1
        sent_ns = sent_ns_of(msg.content)
        if sent_ns is not None:
            self.latency.record((now_ns - sent_ns) // 1000)
        if msg.channel_id != conn.channel_id:
            self.count_error("unexpected_channel")
            return
        cursor = conn.cursor
        if cursor is None:
            # No baseline from ready: the first message sets it (an earlier loss is
            # invisible, and the error above already says so).
            cursor = conn.cursor = SeqCursor(msg.seq - 1)
        assert isinstance(cursor, SeqCursor)
        cursor.observe(msg.seq, self.book.tally(msg.channel_id))

    # ------------------------------------------------------------------ phases

    async def connect_all(self) -> None:
        """Open every connection: at most ``connect_concurrency`` attempts in flight,
        started no faster than ``connect_rate`` per second."""
        plan = self.plan
        indices: Iterator[int] = iter(range(len(self.conns)))
        start = self.connect_started_at = time.monotonic()
        rate = plan.connect_rate
        sources = plan.sources

        async def puller() -> None:
            for i in indices:
                if rate > 0:
                    due = start + i / rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                source = sources[i % len(sources)] if sources else None
                await self.connect_one(self.conns[i], source)

        async with asyncio.TaskGroup() as tg:
            for _ in range(max(1, min(plan.connect_concurrency, len(self.conns)))):
                tg.create_task(puller())
        # Everything built so far (connections, protocol objects) lives until the end:
        # move it out of the cyclic collector's reach, so that a full collection does
        # not walk 15,000 connections and stall every receive for a large fraction of a
        # second (the generator must never be what the latency measures).
        gc.collect()
        gc.freeze()
        self.rss_connected = rss_bytes()
        self.connected_at = time.monotonic()
        write_report(self.out, self.tick())  # tell the coordinator now, not next second

    def source_of(self, conn: Connection) -> str | None:
        sources = self.plan.sources
        return sources[conn.index % len(sources)] if sources else None

    async def reconnect(self, conn: Connection, dropped_at: float) -> None:
        """Reconnect after a jittered back-off (random up to ``reconnect_jitter_s``,
        doubling per failed attempt up to 30 s; a refused handshake's ``Retry-After``
        plus jitter) and resume; until it works or the run ends."""
        attempt = 0
        jitter = self.plan.reconnect_jitter_s
        try:
            while not self.finished.is_set():
                if conn.retry_after_s > 0:
                    delay = conn.retry_after_s + random.uniform(0, jitter)
                    conn.retry_after_s = 0.0
                else:
                    delay = random.uniform(0, min(MAX_RECONNECT_DELAY_S, jitter * 2**attempt))
                await asyncio.sleep(delay)
                if self.finished.is_set():
                    return
                attempt += 1
                self.reconnect_attempts += 1
                conn.reset()
                self.dropped_since[conn.index] = dropped_at
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self.waiting[conn.index] = fut
                try:
                    async with asyncio.timeout(ATTEMPT_TIMEOUT_S):
                        await open_connection(conn, self.plan.host, self.plan.port,
                                              self.source_of(conn))
                        await fut
                    return
                except (TimeoutError, OSError) as exc:
                    if _succeeded(fut):  # resumed in the very pass the timeout fired
                        return
                    code = "timeout" if isinstance(exc, TimeoutError) else \
                        connect_error_code(exc)
                    self.count_error(f"reconnect_{code}")
                    conn.abort()
                finally:
                    self.waiting.pop(conn.index, None)
                    if fut.done() and not fut.cancelled():
                        fut.exception()
        finally:
            if self.reconnects.get(conn.index) is asyncio.current_task():
                del self.reconnects[conn.index]

    async def connect_one(self, conn: Connection, source: str | None) -> None:
        """Connect, identify, wait for ``ready``; a failed attempt is counted under its
        error code and retried up to ``plan.connect_retries`` times after a jittered
        back-off (1-2 s, doubling; or the refusal's ``Retry-After``). The connect time
        of a retried connection runs from its first attempt."""
        conn.started_ns = time.monotonic_ns()
        for attempt in range(self.plan.connect_retries + 1):
            if attempt:
                if conn.retry_after_s > 0:
                    delay, conn.retry_after_s = conn.retry_after_s, 0.0
                else:
                    delay = min(MAX_RECONNECT_DELAY_S, 2.0 ** (attempt - 1))
                await asyncio.sleep(delay * random.uniform(1.0, 2.0))
                conn.reset()
                self.connect_retries += 1
            if await self._attempt(conn, source):
                return
        self.failed += 1

    async def _attempt(self, conn: Connection, source: str | None) -> bool:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self.waiting[conn.index] = fut
        self.attempted += 1
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT_S):
                await open_connection(conn, self.plan.host, self.plan.port, source)
                await fut
            return True
        except TimeoutError:
            if _succeeded(fut):  # ready came in the very pass the timeout fired
                return True
            self.count_error("ready_timeout" if conn.transport is not None else "connect_timeout")
            conn.abort()
        except OSError as exc:
            if not isinstance(exc, ConnectionResetError) or conn.transport is None:
                self.count_error(connect_error_code(exc))
            else:
                self.count_error("closed_before_ready")
            conn.abort()
        finally:
            self.waiting.pop(conn.index, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: no "exception never retrieved" warning
        return False

    async def send_loop(self, go: Go) -> None:
        """Open-loop sends from every sending client of this process, round-robin in a
        shuffled order, each client at ``send_rate`` on average."""
        senders = [c for c in self.conns if c.sender]
        if not senders or self.plan.send_rate <= 0:
            return
        random.shuffle(senders)
        total_rate = len(senders) * self.plan.send_rate
        now = time.monotonic()
        if go.start > now:
            await asyncio.sleep(go.start - now)
        start, stop = go.start, go.stop
        i = 0
        n = len(senders)
        pad = self.padding
        worker = self.plan.worker
        while True:
            due = start + i / total_rate
            if due >= stop:
                return
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
                now = time.monotonic()
            batch = 0
            while batch < SEND_BATCH:
                due = start + i / total_rate
                if due > now or due >= stop:
                    break
                conn = senders[i % n]
                i += 1
                batch += 1
                self.send_lag.record(int((now - due) * 1e6))
                if conn.state != READY:
                    if conn.index in self.reconnects:
                        self.skipped_disconnected += 1
                    else:
                        self.count_error("sender_not_connected")
                    continue
                if len(self.pending) >= MAX_PENDING:
                    self.count_error("send_backpressure")
                    continue
                rid = self.next_id
                self.next_id += 1
                send_ns = time.monotonic_ns()
                frame = encode_send(rid, conn.channel_id, send_ns, f"{worker}.{rid}", pad)
                conn.send(frame)
                self.pending[rid] = (send_ns, conn.channel_id, conn.index, frame)
                self.sent += 1
            if batch >= SEND_BATCH:
                await asyncio.sleep(0)

    async def heartbeats(self) -> None:
        """One loop for every connection's heartbeat (never one task per connection)."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            interval = self.heartbeat_s
            for conn in self.conns:
                if conn.state == READY and conn.heartbeat_due <= now:
                    conn.heartbeat_due = now + interval
                    conn.heartbeat()

    def tick(self) -> Tick:
        """Cumulative counters plus the histograms since the previous tick."""
        lost = duplicated = out_of_order = 0
        for tally in self.book.tallies.values():
            lost += tally.lost
            duplicated += tally.duplicated
            out_of_order += tally.out_of_order
        tick = Tick(
            worker=self.plan.worker, t=time.monotonic(), attempted=self.attempted,
            ready=self.ready, open=self.open, failed=self.failed, sent=self.sent,
            acked=self.acked, deliveries=self.deliveries, lost=lost, duplicated=duplicated,
            out_of_order=out_of_order, session_gaps=self.session_gaps,
            errors=dict(self.errors), latency=self.latency.to_wire(),
            connect=self.connect.to_wire(), ack=self.ack.to_wire(),
            send_lag=self.send_lag.to_wire(), pending=len(self.pending),
            rss_bytes=rss_bytes(), rss_before_bytes=self.rss_before,
            cpu_s=time.process_time(), connect_started_at=self.connect_started_at,
            connected_at=self.connected_at, rss_connected_bytes=self.rss_connected,
            dropped=self.dropped, reconnecting=len(self.reconnects),
            reconnect_attempts=self.reconnect_attempts, resumed=self.resumed,
            invalid_sessions=self.invalid_sessions, reidentified=self.reidentified,
            retried=self.retried, skipped_disconnected=self.skipped_disconnected,
            resume=self.resume_hist.to_wire(), other_events=dict(self.other_events),
            connect_retries=self.connect_retries)
        self.latency, self.connect, self.ack, self.send_lag, self.resume_hist = (
            Histogram(), Histogram(), Histogram(), Histogram(), Histogram())
        return tick

    async def ticker(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            write_report(self.out, self.tick())

    def final(self) -> Final:
        ends: dict[int, ChannelEnd] = {}
        for conn in self.conns:
            cursor = conn.cursor
            if conn.state != READY or not isinstance(cursor, SeqCursor):
                continue
            end = ends.get(conn.channel_id)
            if end is None:
                end = ends[conn.channel_id] = ChannelEnd()
            end.recipients += 1
            end.sum_last += cursor.last
            end.max_seen = max(end.max_seen, cursor.last)
        for cid, seq in self.max_acked.items():
            end = ends.get(cid)
            if end is None:
                end = ends[cid] = ChannelEnd()
            end.max_acked = max(end.max_acked, seq)
        return Final(
            tick=self.tick(),
            channels={cid: (e.recipients, e.sum_last, e.max_seen, e.max_acked)
                      for cid, e in ends.items()},
            anomalies={cid: (t.lost, t.duplicated, t.out_of_order)
                       for cid, t in self.book.nonzero().items()},
            dropped_at=self.dropped_at, resumed_at=self.resumed_at,
            unanswered=len(self.pending))

    async def close_all(self) -> None:
        """Orderly close of every connection, then abort what did not close in 2 s."""
        for i, conn in enumerate(self.conns):
            if conn.transport is not None:
                conn.close()
            if i % 1000 == 999:
                await asyncio.sleep(0)
        for _ in range(20):  # at most 2 s for the servers' close frames
            if not any(c.transport is not None for c in self.conns):
                break
            await asyncio.sleep(0.1)
        for conn in self.conns:
            conn.abort()

    async def commands(self, reader: asyncio.StreamReader, tg: asyncio.TaskGroup) -> None:
        sender: asyncio.Task[None] | None = None
        while True:
            command = await read_command(reader)
            if command is None or isinstance(command, Finish):
                break
            if isinstance(command, Go):
                sender = tg.create_task(self.send_loop(command))
        if sender is not None:
            sender.cancel()
        if command is not None:  # Finish: report; on EOF there is nobody to report to
            self.finished.set()
            for task in list(self.reconnects.values()):
                task.cancel()
            write_report(self.out, self.final())
        self.finished.set()


async def run(out: BinaryIO) -> int:
    rss_before = rss_bytes()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    plan = await read_command(reader)
    if not isinstance(plan, Plan):
        return 2
    gen = Generator(plan, out, rss_before)
    budget = max(0.0, plan.deadline - time.monotonic())
    try:
        async with asyncio.timeout(budget), asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(gen.connect_all()), tg.create_task(gen.ticker()),
                     tg.create_task(gen.heartbeats())]
            tasks.append(tg.create_task(gen.commands(reader, tg)))
            await gen.finished.wait()
            for task in tasks:
                task.cancel()
    except TimeoutError:
        print(f"loadtest worker {plan.worker}: deadline reached, stopping", file=sys.stderr)
    await gen.close_all()
    return 0


def main() -> int:
    # Reports go to the real stdout; anything else printing is sent to stderr so that
    # it cannot corrupt the framed pipe.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    raise_nofile_limit()
    try:
        import uvloop

        return uvloop.run(run(out))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(run(out))


if __name__ == "__main__":
    sys.exit(main())
