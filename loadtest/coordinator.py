"""One scenario against one target: provision, spawn generators, run the phases, count.

Phases (every one bounded in time):

1. **provision**: bot users and rooms through ``POST /api/v1/loadtest/provision``.
2. **connect**: generator processes open their connections (connect + websocket
   handshake + identify + ready). ``join-storm`` measures this phase and ends here.
3. **measure** (``--duration``): ``idle`` holds, ``chat`` and ``broadcast`` send on an
   open-loop schedule that starts at the same monotonic instant in every process.
   ``failover`` is ``chat`` plus, ``--kill-after`` seconds in, a SIGKILL of the gateway
   process holding the most connections: its clients reconnect after a jittered
   back-off and ``resume`` on whatever process the kernel hands them, and the report
   times kill -> resumed and counts lost / duplicated / out-of-order per channel.
4. **drain** (at most ``--drain`` s): no more sends; wait until every request is
   answered, every reconnect is over and deliveries stop arriving.
5. **finish**: every generator reports its final counts and closes its connections.

Server CPU and RSS are sampled every second when the target is local; the time series
(connections, deliveries/s, p99 per second) is built from the generators' ticks.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TextIO

import psutil

from loadtest.accounting import Anomalies, ChannelEnd, Histogram, tail_lost
from loadtest.ipc import ClientSpec, Final, Finish, Go, Plan, Tick, pack, read_report
from loadtest.target import (
    ProcSample,
    Provisioned,
    ServerProbe,
    Target,
    child_env,
    cpu_percent_between,
    hearth_pids,
    is_loopback_host,
    listening_pids,
    provision,
)

SCENARIOS = ("idle", "chat", "broadcast", "join-storm", "failover", "voice")
"""``voice`` runs in :mod:`loadtest.voice` (aiortc peers, not this coordinator's
generators); the CLI dispatches it there."""
CONNECTIONS_PER_SOURCE = 10_000
"""Connections per source address (a source address has ~28,000 ephemeral ports)."""
SAFE_SHARE_OF_RATE_LIMIT = 0.5
"""Broadcast spreads its sends over enough members that none uses more than this share
of the per-connection request limit (``limits.requests_per_window``)."""
FD_HEADROOM = 200
LOW_MEMORY_FRACTION = 0.08
"""The run stops early (and still reports) when the machine's available memory falls
below this share of the total: a server that grows without bound must not take the
machine, and whoever else works on it, down with it."""


@dataclass
class RunOptions:
    scenario: str
    connections: int
    duration_s: float
    rate: float
    room_size: int
    processes: int
    connect_rate: float
    connect_concurrency: int
    message_bytes: int = 64
    drain_s: float = 5.0
    connect_timeout_s: float = 120.0
    spread_sources: bool = True
    progress: bool = True
    requests_per_s_limit: float = 12.0
    """The server's per-connection request rate (limits.requests_per_window / window)."""
    kill_after_s: float = 0.0
    """failover: seconds into the measured phase at which a gateway process is killed."""
    settle_s: float = 2.0
    """Pause between the connect phase and the measured phase, so that what the last
    joins set off (a presence batch to every member, 1.5 s later) is not measured as
    the scenario's steady state."""
    connect_retries: int = 0
    """Retries of a failed connect + identify (each failed attempt is still an error)."""
    reconnect_jitter_s: float = 1.0
    """failover: a dropped client waits a random delay up to this before reconnecting
    (doubling per failed attempt)."""

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "progress"}


@dataclass
class WorkerState:
    index: int
    process: asyncio.subprocess.Process
    clients: int
    tick: Tick | None = None
    final: Final | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class SeriesPoint:
    t: float
    connections: int
    deliveries_per_s: float
    sent_per_s: float
    p99_ms: float | None
    server_cpu_percent: float | None
    server_rss_bytes: int | None


@dataclass
class FailoverRecord:
    """failover: what was killed and when, and every client's drop and resume times."""

    killed_pid: int | None = None
    kill_at: float | None = None
    """Monotonic time of the SIGKILL."""
    kill_after_s: float | None = None
    pids_before: list[int] = field(default_factory=list)
    pids_after: list[int] = field(default_factory=list)
    connections_per_pid: dict[int, int] = field(default_factory=dict)
    dropped_at: list[float] = field(default_factory=list)
    resumed_at: list[float] = field(default_factory=list)
    unanswered: int = 0


@dataclass
class RunResult:
    """Everything measured in one run against one target (turned into JSON by report)."""

    target: Target
    options: RunOptions
    started_at: float
    phases: dict[str, float] = field(default_factory=dict)
    workers: list[WorkerState] = field(default_factory=list)
    latency: Histogram = field(default_factory=Histogram)
    connect: Histogram = field(default_factory=Histogram)
    ack: Histogram = field(default_factory=Histogram)
    send_lag: Histogram = field(default_factory=Histogram)
    series: list[SeriesPoint] = field(default_factory=list)
    server_samples: dict[str, ProcSample | None] = field(default_factory=dict)
    server_pids: list[int] = field(default_factory=list)
    connections_peak: int = 0
    connections_held: int = 0
    channels: dict[int, ChannelEnd] = field(default_factory=dict)
    anomalies: dict[int, Anomalies] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    interrupted: str | None = None
    machine_cpu: dict[str, tuple[float, float]] = field(default_factory=dict)
    """(busy CPU seconds of the whole machine, monotonic time) at measure start/end."""
    resume: Histogram = field(default_factory=Histogram)
    """failover: from a client's drop to its ``resumed`` (as each client saw it)."""
    failover: FailoverRecord = field(default_factory=FailoverRecord)


def postgres_pids() -> list[int]:
    """Every ``postgres`` process on the machine: a local Hearth's embedded database
    (its CPU is part of what a message costs, but it is not the gateway's)."""
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]


def machine_cpu_busy() -> tuple[float, float]:
    """Busy CPU seconds of the whole machine so far (all cores), and when: to show how
    much CPU went to processes that are neither the server nor the generator."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return (sum(times) - idle, time.monotonic())


def plan_clients(opts: RunOptions, provisioned: Provisioned) -> tuple[list[ClientSpec], float]:
    """Each provisioned user as a client spec, and the per-sender send rate."""
    tokens = {u.id: u.token for u in provisioned.users}
    specs: list[ClientSpec] = []
    scenario = opts.scenario
    if scenario == "broadcast":
        members = [m for ch in provisioned.channels for m in ch.member_ids]
        channel = provisioned.channels[0].id
        per_sender = max(0.001, SAFE_SHARE_OF_RATE_LIMIT * opts.requests_per_s_limit)
        senders = min(len(members), max(1, math.ceil(opts.rate / per_sender)))
        step = max(1, len(members) // senders)
        sender_ids = set(members[::step][:senders])
        for uid in members:
            specs.append(ClientSpec(tokens[uid], channel, uid in sender_ids))
        return specs, opts.rate / len(sender_ids)
    sending = scenario in ("chat", "failover")
    for ch in provisioned.channels:
        for uid in ch.member_ids:
            specs.append(ClientSpec(tokens[uid], ch.id, sending))
    return specs, (opts.rate if sending else 0.0)


def source_addresses(worker: int, clients: int, target_host: str, spread: bool) -> list[str]:
    """Source addresses for one generator process: 127.<worker+1>.x.y for a loopback
    IPv4 target, so that no single source address runs out of ephemeral ports."""
    if not spread or not is_loopback_host(target_host) or ":" in target_host:
        return []
    count = max(1, math.ceil(clients / CONNECTIONS_PER_SOURCE))
    return [f"127.{(worker + 1) % 256}.{j // 250}.{j % 250 + 1}" for j in range(count)]


class Coordinator:
    """Runs one scenario against one target and returns a :class:`RunResult`."""

    def __init__(self, opts: RunOptions, target: Target, stream: TextIO = sys.stderr) -> None:
        self.opts = opts
        self.target = target
        self.stream = stream
        self.result = RunResult(target=target, options=opts, started_at=time.time())
        self.probe: ServerProbe | None = None
        self.generator_pids: list[int] = []
        self.generator_probe: ServerProbe | None = None
        self.database_probe: ServerProbe | None = None
        self.redis_probe: ServerProbe | None = None
        self._interval_latency = Histogram()
        self._last_counts = (0, 0, time.monotonic())
        self._last_sample: ProcSample | None = None
        self._phase = "provision"
        self._tty = stream.isatty()
        self._last_print = 0.0
        self._measure_start: float | None = None
        self._stop = asyncio.Event()
        """Set to end the phases early (Ctrl+C, or the machine running out of memory)."""

    # ------------------------------------------------------------------ totals

    def _sum(self, name: str) -> int:
        return sum(getattr(w.tick, name) for w in self.result.workers if w.tick is not None)

    def _errors(self) -> dict[str, int]:
        errors: dict[str, int] = {}
        for w in self.result.workers:
            if w.tick is not None:
                for code, n in w.tick.errors.items():
                    errors[code] = errors.get(code, 0) + n
        return errors

    # ------------------------------------------------------------------ run

    async def run(self) -> RunResult:
        opts, result = self.opts, self.result
        t0 = time.monotonic()
        budget = opts.connect_timeout_s + opts.duration_s + opts.drain_s + 120.0
        deadline = t0 + budget
        self.probe = self.target.probe()
        if self.probe is not None:
            result.server_pids = list(self.probe.pids)
        self._progress_line(force=True)
        room = opts.connections if opts.scenario == "broadcast" else \
            min(opts.room_size, opts.connections)
        provisioned = await provision(self.target.base_url, opts.connections, room)
        result.phases["provision_s"] = round(time.monotonic() - t0, 3)
        specs, per_sender_rate = plan_clients(opts, provisioned)
        result.notes.append(f"{len(provisioned.channels)} channel(s); "
                            f"{sum(s.sender for s in specs)} sender(s) at "
                            f"{per_sender_rate:g} msg/s each")
        if per_sender_rate > opts.requests_per_s_limit:
            result.notes.append(f"per-sender rate {per_sender_rate:g}/s exceeds the server's "
                                f"request limit {opts.requests_per_s_limit:g}/s: expect "
                                "rate_limited errors")
        result.server_samples["baseline"] = self._sample()
        try:
            async with asyncio.TaskGroup() as tg:
                await self._spawn(specs, per_sender_rate, deadline, tg)
                tg.create_task(self._ticker())
                try:
                    async with asyncio.timeout_at(self._loop_time(deadline)):
                        await self._interruptible(self._phases())
                except TimeoutError:
                    result.interrupted = "run deadline reached"
                await self._finish()
                raise _Done
        except* _Done:
            pass
        self._progress_line(force=True, final=True)
        return result

    async def _interruptible(self, phases: Coroutine[Any, Any, None]) -> None:
        """Run the phases; a first Ctrl+C (SIGINT) ends them early and the run still
        finishes: generators report, connections close, the report is written (marked
        ``interrupted``). A second Ctrl+C aborts as usual."""
        loop = asyncio.get_running_loop()
        stop = self._stop
        handler = False

        def interrupt() -> None:
            self.result.interrupted = "interrupted (SIGINT): the figures cover the run so far"
            loop.remove_signal_handler(signal.SIGINT)
            stop.set()

        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals here
            loop.add_signal_handler(signal.SIGINT, interrupt)
            handler = True
        task = asyncio.ensure_future(phases)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                self._finalize_interrupted()
        finally:
            stopping.cancel()
            if handler and not stop.is_set():
                loop.remove_signal_handler(signal.SIGINT)

    def _finalize_interrupted(self) -> None:
        """Samples an interrupted run did not reach, taken now (so RSS and CPU are
        reported for the run so far)."""
        result, samples = self.result, self.result.server_samples
        result.connections_peak = max(result.connections_peak, self._sum("open"))
        result.connections_held = self._sum("open")
        if "connected" not in samples:
            samples["connected"] = self._sample()
            self._other_samples("connect_end")
            started = [w.tick.connect_started_at for w in result.workers if w.tick]
            if started:
                result.phases["connect_s"] = round(time.monotonic() - min(started), 3)
        if "measure_end" not in samples and "measure_start" in samples:
            samples["measure_end"] = self._sample()
            self._other_samples("end")
            if self._measure_start is not None:
                result.phases["measure_s"] = round(time.monotonic() - self._measure_start, 3)

    @staticmethod
    def _loop_time(monotonic_deadline: float) -> float:
        loop = asyncio.get_running_loop()
        return loop.time() + (monotonic_deadline - time.monotonic())

    def _sample(self) -> ProcSample | None:
        return self.probe.sample() if self.probe is not None else None

    async def _spawn(self, specs: list[ClientSpec], per_sender_rate: float, deadline: float,
                     tg: asyncio.TaskGroup) -> None:
        opts = self.opts
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        per_process_cap = (hard if hard != resource.RLIM_INFINITY else 1 << 20) - FD_HEADROOM
        processes = max(opts.processes, math.ceil(len(specs) / per_process_cap))
        if processes != opts.processes:
            self.result.notes.append(f"using {processes} generator processes: the open-files "
                                     f"hard limit is {hard} per process")
        env = child_env()
        for w in range(processes):
            clients = specs[w::processes]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "loadtest.worker", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, env=env)
            state = WorkerState(index=w, process=proc, clients=len(clients))
            self.generator_pids.append(proc.pid)
            self.result.workers.append(state)
            plan = Plan(worker=w, scenario=opts.scenario, url=self.target.ws_url,
                        host=self.target.host, port=self.target.port,
                        sources=source_addresses(w, len(clients), self.target.host,
                                                 opts.spread_sources),
                        clients=clients,
                        connect_rate=opts.connect_rate / processes if opts.connect_rate else 0,
                        connect_concurrency=max(1, opts.connect_concurrency // processes),
                        send_rate=per_sender_rate, message_bytes=opts.message_bytes,
                        deadline=deadline, framing=self.target.framing,
                        resume=opts.scenario == "failover",
                        connect_retries=opts.connect_retries,
                        reconnect_jitter_s=opts.reconnect_jitter_s)
            assert proc.stdin is not None
            proc.stdin.write(pack(plan))
            await proc.stdin.drain()
            tg.create_task(self._reader(state))
        self._phase = "connect"
        self.generator_probe = ServerProbe(self.generator_pids)
        self.database_probe = ServerProbe(postgres_pids())
        self.redis_probe = ServerProbe([self.target.redis_pid] if self.target.redis_pid else [])
        self._other_samples("connect_start")

    def _other_samples(self, label: str) -> None:
        """Generator, database and whole-machine CPU at the start or end of a phase."""
        samples = self.result.server_samples
        assert self.generator_probe is not None and self.database_probe is not None
        samples[f"generator_{label}"] = self.generator_probe.sample()
        # PostgreSQL forks a backend per new connection (pools grow under load): pick
        # them up; one born during the phase counts with all of its CPU.
        self.database_probe.add(postgres_pids())
        samples[f"database_{label}"] = self.database_probe.sample()
        if self.redis_probe is not None:
            samples[f"redis_{label}"] = self.redis_probe.sample()
        self.result.machine_cpu[label] = machine_cpu_busy()

    async def _reader(self, state: WorkerState) -> None:
        assert state.process.stdout is not None
        while True:
            report = await read_report(state.process.stdout)
            if report is None:
                break
            tick = report.tick if isinstance(report, Final) else report
            state.tick = tick
            self.result.latency.merge(Histogram.from_wire(tick.latency))
            self._interval_latency.merge(Histogram.from_wire(tick.latency))
            self.result.connect.merge(Histogram.from_wire(tick.connect))
            self.result.ack.merge(Histogram.from_wire(tick.ack))
            self.result.send_lag.merge(Histogram.from_wire(tick.send_lag))
            self.result.resume.merge(Histogram.from_wire(tick.resume))
            if isinstance(report, Final):
                state.final = report
                break
        state.done.set()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._record_point()
            self._progress_line()
            memory = psutil.virtual_memory()
            if memory.available < LOW_MEMORY_FRACTION * memory.total and not self._stop.is_set():
                self.result.interrupted = (
                    f"stopped early: the machine had {memory.available / 2**30:.1f} GiB of "
                    f"{memory.total / 2**30:.1f} GiB available; the figures cover the run so far")
                self._stop.set()

    def _record_point(self) -> None:
        now = time.monotonic()
        if self.result.failover.kill_at and self.probe is not None:
            self.probe.add(self._gateway_pids())  # the worker that replaced the dead one
        sent, delivered, before = self._sum("sent"), self._sum("deliveries"), \
            self._last_counts
        wall = max(1e-6, now - before[2])
        sample = self._sample()
        cpu = cpu_percent_between(self._last_sample, sample)
        self._last_sample = sample
        connections = self._sum("open")
        self.result.connections_peak = max(self.result.connections_peak, connections)
        p99 = self._interval_latency.percentile_us(0.99)
        self.result.series.append(SeriesPoint(
            t=round(time.time() - self.result.started_at, 2),
            connections=connections,
            deliveries_per_s=round((delivered - before[1]) / wall, 1),
            sent_per_s=round((sent - before[0]) / wall, 1),
            p99_ms=None if p99 is None else round(p99 / 1000, 3),
            server_cpu_percent=round(sum(cpu.values()), 1) if cpu else None,
            server_rss_bytes=sample.rss_bytes if sample else None))
        self._interval_latency = Histogram()
        self._last_counts = (sent, delivered, now)

    async def _wait_connected(self) -> None:
        """Until every generator has connected its clients (or given up on them)."""
        while True:
            workers = self.result.workers
            if all(w.tick is not None and w.tick.connected_at > 0 for w in workers):
                return
            if any(w.done.is_set() for w in workers):
                raise RuntimeError("a generator process exited early (see its stderr above)")
            await asyncio.sleep(0.05)

    async def _phases(self) -> None:
        opts, result = self.opts, self.result
        try:
            async with asyncio.timeout(opts.connect_timeout_s + 5):
                await self._wait_connected()
        except TimeoutError:
            result.notes.append(f"connect phase cut at --connect-timeout "
                                f"{opts.connect_timeout_s:g} s")
        started = [w.tick.connect_started_at for w in result.workers if w.tick]
        ended = [w.tick.connected_at for w in result.workers if w.tick and w.tick.connected_at]
        if started and ended and len(ended) == len(result.workers):
            result.phases["connect_s"] = round(max(ended) - min(started), 3)
        elif started:  # cut by the timeout: the rate is what was reached until the cut
            result.phases["connect_s"] = round(time.monotonic() - min(started), 3)
        self._record_point()  # a point at the end of the connect phase, however short
        result.connections_peak = max(result.connections_peak, self._sum("open"))
        result.server_samples["connected"] = self._sample()
        self._other_samples("connect_end")
        if opts.scenario == "join-storm":
            samples = result.server_samples
            samples["measure_start"] = samples["baseline"]
            samples["measure_end"] = samples["connected"]
            for who in ("generator", "database", "redis"):
                samples[f"{who}_start"] = samples[f"{who}_connect_start"]
                samples[f"{who}_end"] = samples[f"{who}_connect_end"]
            result.machine_cpu["start"] = result.machine_cpu["connect_start"]
            result.machine_cpu["end"] = result.machine_cpu["connect_end"]
            result.connections_held = self._sum("open")
            return
        self._phase = "settle"
        await asyncio.sleep(opts.settle_s)
        self._phase = "measure"
        start = time.monotonic() + 0.5
        self._measure_start = start
        stop = start + opts.duration_s
        if opts.scenario in ("chat", "broadcast", "failover"):
            for w in result.workers:
                assert w.process.stdin is not None
                w.process.stdin.write(pack(Go(start=start, stop=stop)))
                await w.process.stdin.drain()
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        result.server_samples["measure_start"] = self._sample()
        self._other_samples("start")
        if opts.scenario == "failover":
            await asyncio.sleep(max(0.0, start + opts.kill_after_s - time.monotonic()))
            await self._kill_one()
        await asyncio.sleep(max(0.0, stop - time.monotonic()))
        result.server_samples["measure_end"] = self._sample()
        self._other_samples("end")
        result.phases["measure_s"] = round(time.monotonic() - start, 3)
        result.connections_held = self._sum("open")
        self._phase = "drain"
        drain_end = time.monotonic() + opts.drain_s
        last_delivered, stable_since = -1, time.monotonic()
        while time.monotonic() < drain_end:
            await asyncio.sleep(0.25)
            delivered = self._sum("deliveries")
            if delivered != last_delivered:
                last_delivered, stable_since = delivered, time.monotonic()
            elif self._sum("pending") == 0 and self._sum("reconnecting") == 0 \
                    and time.monotonic() - stable_since >= 1.0:
                break
        result.phases["drain_s"] = round(time.monotonic() - stop, 3)
        if opts.scenario == "failover":
            result.failover.pids_after = self._gateway_pids()
            if self._sum("reconnecting"):
                result.notes.append(f"{self._sum('reconnecting')} client(s) were still "
                                    "reconnecting when the drain ended")

    # ------------------------------------------------------------------ failover

    def _gateway_pids(self) -> list[int]:
        """The target's gateway processes: the workers of a server the harness started,
        else whoever listens on the port (local targets only)."""
        if self.target.process is not None and self.target.name == "hearth":
            return hearth_pids(self.target.process)
        return listening_pids(self.target.port) if self.target.local else []

    async def _kill_one(self) -> None:
        """SIGKILL the gateway process holding the most client connections (no goodbye,
        as a crash or an OOM kill would do it)."""
        result = self.result
        pids = self._gateway_pids()
        if len(pids) < 2:
            result.notes.append(f"failover: {len(pids)} gateway process(es) found on port "
                                f"{self.target.port}; at least 2 are needed: nothing killed")
            return

        def held(pid: int) -> int:
            try:
                return sum(1 for c in psutil.Process(pid).net_connections(kind="tcp")
                           if c.status == psutil.CONN_ESTABLISHED and c.laddr
                           and c.laddr.port == self.target.port)
            except psutil.Error:
                return 0

        counts = await asyncio.to_thread(lambda: {pid: held(pid) for pid in pids})
        victim = max(pids, key=lambda pid: counts[pid])
        kill_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        fo = result.failover
        fo.killed_pid, fo.kill_at, fo.pids_before, fo.connections_per_pid = \
            victim, kill_at, pids, counts
        fo.kill_after_s = round(kill_at - (self._measure_start or kill_at), 3)
        self._phase = "failover"
        self._progress_line(force=True)

    async def _finish(self) -> None:
        """Ask every generator for its final report, then make sure it exits."""
        self._phase = "finish"
        for w in self.result.workers:
            if w.process.returncode is None and w.process.stdin is not None:
                with contextlib.suppress(ConnectionError):
                    w.process.stdin.write(pack(Finish()))
                    await w.process.stdin.drain()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60):
                for w in self.result.workers:
                    await w.done.wait()
        for w in self.result.workers:
            if w.process.stdin is not None:
                w.process.stdin.close()
            try:
                async with asyncio.timeout(15):
                    await w.process.wait()
            except TimeoutError:
                w.process.kill()
                await w.process.wait()
        for w in self.result.workers:
            if w.final is None:
                self.result.notes.append(f"generator {w.index} sent no final report")
                continue
            for cid, (recipients, sum_last, max_seen, max_acked) in w.final.channels.items():
                end = self.result.channels.setdefault(cid, ChannelEnd())
                end.merge(ChannelEnd(recipients, sum_last, max_seen, max_acked))
            for cid, (lost, dup, ooo) in w.final.anomalies.items():
                self.result.anomalies.setdefault(cid, Anomalies()).add(Anomalies(lost, dup, ooo))
            fo = self.result.failover
            fo.dropped_at.extend(w.final.dropped_at)
            fo.resumed_at.extend(w.final.resumed_at)
            fo.unanswered += w.final.unanswered
        for cid, end in self.result.channels.items():
            missing = tail_lost(end)
            if missing:
                self.result.anomalies.setdefault(cid, Anomalies()).lost += missing

    # ------------------------------------------------------------------ progress

    def _progress_line(self, force: bool = False, final: bool = False) -> None:
        """One status line per second (rewritten in place on a terminal, every 5 s
        otherwise so that logs stay readable)."""
        if not self.opts.progress:
            return
        now = time.monotonic()
        if not force and not self._tty and now - self._last_print < 5.0:
            return
        self._last_print = now
        last = self.result.series[-1] if self.result.series else None
        elapsed = time.time() - self.result.started_at
        errors = sum(self._errors().values())
        line = (f"[{self.opts.scenario} @ {self.target.name}] {elapsed:6.1f}s {self._phase:<9} "
                f"conns {self._sum('open')}/{self.opts.connections} "
                f"sent {self._sum('sent')} ({last.sent_per_s if last else 0:.0f}/s) "
                f"deliv {self._sum('deliveries')} ({last.deliveries_per_s if last else 0:.0f}/s) "
                f"p99 {last.p99_ms if last and last.p99_ms is not None else '-'} ms "
                f"lost {self._sum('lost')} dup {self._sum('duplicated')} err {errors}")
        if self.opts.scenario == "failover":
            line += (f" dropped {self._sum('dropped')} resumed {self._sum('resumed')} "
                     f"reconnecting {self._sum('reconnecting')}")
        if last and last.server_cpu_percent is not None:
            line += f" srv cpu {last.server_cpu_percent:.0f}%"
        if last and last.server_rss_bytes:
            line += f" rss {last.server_rss_bytes / 2**20:.0f}MiB"
        if self._tty and not final:
            self.stream.write("\r" + line[:200].ljust(120))
        else:
            self.stream.write(("\r" if self._tty else "") + line + "\n")
        self.stream.flush()


class _Done(Exception):
    """Leaves the TaskGroup once the run is over (cancelling the ticker and readers)."""
