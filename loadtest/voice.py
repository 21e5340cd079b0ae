"""``hearth loadtest voice``: voice rooms over WebRTC, timed from mouth to ear.

What runs: ``--rooms`` voice rooms (default 1) of ``--participants`` members each, every
member a real aiortc peer in a generator process (``python -m loadtest.voice_peer``)
that joins with ``voice_join`` over the gateway, exactly as a client does. Two shapes:

- **all-talk** (default): every participant speaks (``--speakers`` defaults to
  ``--participants``); each hears the others in its receive slots.
- **stage** (``--stage``): ``--speakers`` (default 3) speak, the rest listen. The
  harness makes the audience what a stage audience is to the media worker, members who
  may not speak, with a channel override (``SPEAK`` denied to everyone, allowed to each
  speaker): they join with role ``listener`` and their microphones are not forwarded.
  (A ``stage`` channel's speakers are promoted by a live session's host; a load test
  does not need the session.)

Phases, each bounded: provision users (``/api/v1/loadtest/provision``) -> create the
voice channel(s) over REST as the community owner -> spawn generators, which join
everyone -> settle -> the measured phase (``--duration``): speakers play tone bursts
(:mod:`loadtest.voice_audio` documents the mouth-to-ear method) -> a 2 s listening tail
-> every generator reports and leaves.

The report has the keys of every scenario (:mod:`loadtest.report`) with these meanings:
``messages_sent`` = bursts sent in the measured phase; ``deliveries`` = bursts heard
(matched to the burst that was sent); ``latency_ms`` = mouth-to-ear over every heard
burst; ``lost`` = bursts a connected listener should have heard and did not;
``duplicated`` = a burst heard twice by one listener; ``out_of_order`` = a burst heard
after a later one of the same speaker; ``connections_peak`` = participants connected
(websocket + peer connection); ``server.cpu_percent`` and ``server.rss_bytes`` cover the
gateway processes *and* their media workers. The ``voice`` block adds:
``join_to_connected_ms`` (start of the join, before the offer is made, to the peer
connection's ``connected``), frames/s per received track over the measured phase (a
track = a receive slot that carried a speaker; 50 is every 20 ms frame),
media workers' CPU (children of the server whose command line has
``rooms.media.worker``, read from /proc), outbound tracks (receive slots the workers
serve), RTP packets lost (aiortc's receiver statistics), and the generator's own CPU and
lateness (a speaker track more than one frame late means the generator, not the
server, is the bottleneck).

Listeners' mode (``--listeners-mode``): an aiortc listener that decodes costs the
generator ~0.9 ms of CPU per received frame, so on a small machine the generator, not
the server, saturates first. ``lean`` (the default above ``AUTO_LEAN_ABOVE_TRACKS``
received tracks, ``auto``) makes speakers send pre-encoded Opus and all but
``--decode-listeners`` participants per room (the last ones, the audience on a stage;
default ``DECODED_TRACKS_PER_ROOM`` decoded tracks' worth, in generator processes of
their own) tap their slots' RTP without decoding (:mod:`loadtest.voice_lean`,
:mod:`loadtest.voice_tap`): ~0.08 ms per frame. ``latency_ms`` still means
mouth-to-ear and comes only from the decoding participants; lean listeners report
TRANSIT (``voice.transit_ms``: the frame's due instant to its packet at the tap, no
jitter buffer, no decoding), never added to or mixed with mouth-to-ear. With the
server's mix (``--mix-listeners-above``), listeners on the mix receive re-encoded
payloads: lean ones count them (frames/s) but identify nothing (``unidentified``).
Which participants were lean is in ``voice.listeners`` and the report's notes.

The peer (``--peer direct``, :mod:`loadtest.voice_direct`): the same participants,
speakers, listeners' mode and burst method with no server in the media path; each
speaker sends to each listener it would hear over a peer connection of its own (a full
mesh signalled inside each generator process), the floor an SFU adds to. Its report
has the same keys under ``peers.direct`` (server figures are None: there is none) and
the ratios are :data:`loadtest.report.VOICE_RATIO_KEYS`. The mesh is bounded
(``MAX_DIRECT_TRACKS`` edges); the server mix has no counterpart, so on a mixed stage
the peer's listeners get every speaker's track.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil

from loadtest.accounting import Histogram
from loadtest.coordinator import machine_cpu_busy
from loadtest.target import (
    ProcSample,
    ServerProbe,
    Target,
    TargetError,
    child_env,
    cpu_percent_between,
    hearth_pids,
    listening_pids,
    provision,
)
from loadtest.voice_audio import (
    BURST_PERIOD_S,
    FRAMES_PER_S,
    MAX_SPEAKERS,
    SentBurst,
    match_detections,
)
from loadtest.voice_direct import heard_speakers
from loadtest.voice_peer import (
    Gateway,
    ParticipantFinal,
    VoiceFinal,
    VoiceFinish,
    VoiceGo,
    VoiceJoinedReport,
    VoicePlan,
    VoiceSpec,
    pack,
    read_voice_report,
)

MAX_PARTICIPANTS = 2_000
"""Per run (all rooms): aiortc peers cost ~1-3% of a core each; more would need more
machines than a load-test host has."""
MAX_ROOMS = 100
DEFAULT_SLOTS_LIMIT = 9
"""``limits.voice_receive_slots`` when the server's hello does not say."""
TRACKS_PER_PROCESS = 16
"""Default generator processes: one per this many tracks (a received slot that carries
a speaker, or a speaker's own microphone). Measured (report ``generator.
cpu_ms_per_received_frame``): an aiortc peer costs its generator ~0.9 ms of CPU per
20 ms frame received (SRTP, RTP parsing, jitter buffer, a decoder thread's hand-off,
plus its share of the speakers' Opus encoding), i.e. ~22 tracks per core; 16 keeps a
process under ~75% of a core. The report's ``generator`` block says when a run was
behind schedule anyway."""
LISTEN_TAIL_S = 2 * BURST_PERIOD_S
"""After the last burst, listeners keep listening this long (the longest mouth-to-ear
a burst can be matched at)."""
SETTLE_S = 2.0
LISTENERS_MODES = ("auto", "lean", "decode")
AUTO_LEAN_ABOVE_TRACKS = 16
"""``--listeners-mode auto`` turns lean above this many received tracks: what one
decoding generator process carries (``TRACKS_PER_PROCESS``); beyond it decoding
generators take a core of their own on a small machine and crowd out the server."""
DECODED_TRACKS_PER_ROOM = 12
"""Lean mode's default decoding sample per room, in received tracks (~0.5 of a core):
enough mouth-to-ear samples (every speaker, a burst a second each) at a cost the
machine under test can spare."""
DEFAULT_DECODERS_MAX = 4
"""... and at most this many participants (a stage's audience on the mix: 4 tracks)."""
LEAN_TRACK_COST = 0.125
"""A lean received track's generator CPU relative to a decoded one (measured: see
``generator.cpu_ms_per_received_frame`` of a run with ``--decode-listeners 0`` and
docs/BENCHMARKS.md), used to size generator processes."""
MEDIA_WORKER_MARK = "rooms.media.worker"
SPEAK = 1 << 9
"""``Permission.SPEAK`` (docs/protocol.md; the harness imports nothing from rooms/)."""
DIRECT = "direct"
"""The ``--peer`` name (and target name) of the serverless mesh
(:mod:`loadtest.voice_direct`)."""


def direct_target() -> Target:
    """The pseudo-target of ``--peer direct``: nothing listens; the generators connect
    to one another."""
    return Target(name=DIRECT, base_url="direct://mesh", host="127.0.0.1", port=0,
                  local=False, notes=["no server: each speaker sends to each listener over "
                                      "a peer connection of its own (full mesh on loopback); "
                                      "generator CPU includes the senders' side"])


@dataclass
class VoiceOptions:
    """What ``hearth loadtest voice`` was asked for (see the module docstring)."""

    participants: int
    speakers: int
    duration_s: float
    stage: bool = False
    rooms: int = 1
    slots: int | None = None
    """Receive slots every offer asks for (default: as many as there are speakers to
    hear, at most the server's ``voice_receive_slots``)."""
    processes: int = 0
    join_concurrency: int = 4
    join_timeout_s: float = 30.0
    listeners_mode: str = "auto"
    """``decode`` (every listener decodes, every speaker's PCM is encoded by aiortc),
    ``lean`` (speakers send pre-encoded Opus; all but ``decode_listeners`` participants
    per room tap and count instead of decoding: :mod:`loadtest.voice_lean`), ``auto``
    (lean above ``AUTO_LEAN_ABOVE_TRACKS`` received tracks in the run)."""
    decode_listeners: int | None = None
    """Lean mode: participants per room that still decode (mouth-to-ear comes from
    them); the last ones of each room, i.e. audience members on a stage. None: about
    ``DECODED_TRACKS_PER_ROOM`` decoded tracks' worth (:meth:`decoders`)."""
    mix_listeners_above: int | None = None
    """The server's ``voice_mix_listeners_above`` when the harness starts it (None: the
    server's own setting, unknown to the harness when ``--url`` is given)."""
    media_capacity_tracks: int | None = None
    """The server's ``media_capacity_tracks`` when the harness starts it."""
    slots_limit: int | None = None
    """``--peer direct``: the receive-slot limit of Hearth's run (its server's
    ``voice_receive_slots``), so both hear the same speakers."""
    progress: bool = True

    scenario = "voice"

    def validate(self) -> None:
        """Bounds (a clear message instead of a run that cannot work)."""
        if not 1 <= self.rooms <= MAX_ROOMS:
            raise ValueError(f"--rooms must be 1-{MAX_ROOMS}")
        if not 2 <= self.participants <= MAX_PARTICIPANTS // self.rooms:
            raise ValueError(f"--participants must be 2-{MAX_PARTICIPANTS // self.rooms} "
                             f"per room ({MAX_PARTICIPANTS} in all)")
        if not 1 <= self.speakers <= min(MAX_SPEAKERS, self.participants):
            raise ValueError(f"--speakers must be 1-{MAX_SPEAKERS} and at most "
                             "--participants (each speaker needs two tones of its own)")
        if not 0 < self.duration_s <= 3_600:
            raise ValueError("--duration must be in (0, 3600]")
        if self.slots is not None and not 1 <= self.slots <= 64:
            raise ValueError("--slots must be 1-64")
        if self.listeners_mode not in LISTENERS_MODES:
            raise ValueError(f"--listeners-mode must be one of {', '.join(LISTENERS_MODES)}")
        if self.decode_listeners is not None and \
                not 0 <= self.decode_listeners <= self.participants:
            raise ValueError("--decode-listeners must be 0 to --participants")
        if self.mix_listeners_above is not None and not 0 <= self.mix_listeners_above <= 10_000:
            raise ValueError("--mix-listeners-above must be 0-10000")
        if self.media_capacity_tracks is not None and \
                not 1 <= self.media_capacity_tracks <= 100_000:
            raise ValueError("--media-capacity-tracks must be 1-100000")

    def received_tracks(self) -> int:
        """Received tracks of the whole run: a slot that carries a speaker (one per
        participant for listeners on the server mix)."""
        per_room = 0
        for i in range(self.participants):
            hears = self.speakers - (1 if i < self.speakers else 0)
            slots = self.slots or min(DEFAULT_SLOTS_LIMIT, max(1, hears))
            per_room += 1 if i >= self.speakers and self.mixed() else min(hears, slots)
        return per_room * self.rooms

    def mixed(self) -> bool:
        """Whether the server serves this room's listeners its mix (as far as the
        harness knows: ``mix_listeners_above`` was given and the audience exceeds it)."""
        return self.mix_listeners_above is not None and \
            self.participants - self.speakers > self.mix_listeners_above

    def decoders(self) -> int:
        """Decoding participants per room in lean mode: as given, else as many as
        carry ``DECODED_TRACKS_PER_ROOM`` received tracks (at least one, at most
        ``DEFAULT_DECODERS_MAX``): 1 in an all-talk room of 10 (9 tracks each), 4 on a
        stage of 3 speakers, forwarded or mixed."""
        if self.decode_listeners is not None:
            return self.decode_listeners
        last = self.participants - 1
        hears = self.speakers - (1 if last < self.speakers else 0)
        per = 1 if self.mixed() and last >= self.speakers else \
            min(hears, self.slots or DEFAULT_SLOTS_LIMIT)
        return min(self.participants, DEFAULT_DECODERS_MAX,
                   max(1, round(DECODED_TRACKS_PER_ROOM / max(1, per))))

    def lean(self) -> bool:
        """Lean mode for this run (``auto``: above ``AUTO_LEAN_ABOVE_TRACKS``)."""
        if self.listeners_mode == "auto":
            return self.received_tracks() > AUTO_LEAN_ABOVE_TRACKS
        return self.listeners_mode == "lean"

    def direct_tracks(self) -> int:
        """Directed speaker -> listener edges ``--peer direct`` would set up (no mix)."""
        from loadtest.voice_direct import direct_tracks

        return self.rooms * direct_tracks(self.participants, self.speakers,
                                          self.slots or self.slots_limit or
                                          DEFAULT_SLOTS_LIMIT)

    def for_direct(self, slots_limit: int) -> VoiceOptions:
        """The same workload for ``--peer direct``: the listeners' mode Hearth's run
        used (decided once, so lean/decoding participants are the same ones), no
        server mix (there is no server), Hearth's receive-slot limit."""
        return dataclasses.replace(self, listeners_mode="lean" if self.lean() else "decode",
                                   mix_listeners_above=None, media_capacity_tracks=None,
                                   slots_limit=slots_limit, decode_listeners=self.decoders())

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "progress"}


@dataclass
class Generator:
    index: int
    process: asyncio.subprocess.Process
    joined: VoiceJoinedReport | None = None
    final: VoiceFinal | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Room:
    channel_id: int
    specs: list[VoiceSpec]


def media_worker_pids(target: Target) -> list[int]:
    """Media worker processes of a local server: descendants of the server the
    harness started (or of the processes listening on its port, and of their
    supervisor) whose command line names ``rooms.media.worker``."""
    roots = [target.process.pid] if target.process is not None else \
        listening_pids(target.port)
    for pid in list(roots):  # under --workers N the supervisor owns the media workers
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(pid).parent()
            if parent is not None and "server.cli" in " ".join(parent.cmdline()):
                roots.append(parent.pid)
    found: set[int] = set()
    for pid in roots:
        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            continue
        for child in children:
            with contextlib.suppress(psutil.Error):
                if MEDIA_WORKER_MARK in " ".join(child.cmdline()):
                    found.add(child.pid)
    return sorted(found)


def gateway_pids(target: Target) -> list[int]:
    if target.process is not None and target.name == "hearth":
        return hearth_pids(target.process)
    return listening_pids(target.port) if target.local else []


def percentiles_ms(values_s: list[float]) -> dict[str, float | int | None]:
    """p50 / p95 / max (and count) of a few hundred durations (exact, not bucketed)."""
    if not values_s:
        return {"p50": None, "p95": None, "max": None, "count": 0}
    ordered = sorted(values_s)

    def q(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered))
                                                              - 1))], 3)

    return {"p50": q(0.50), "p95": q(0.95), "max": round(1000 * ordered[-1], 3),
            "count": len(ordered)}


class VoiceRun:
    """One ``voice`` run against one target; :meth:`run` returns the report."""

    def __init__(self, opts: VoiceOptions, target: Target, stream: Any = sys.stderr) -> None:
        self.opts = opts
        self.target = target
        self.stream = stream
        self.started_at = time.time()
        self.generators: list[Generator] = []
        self.notes: list[str] = []
        self.errors: dict[str, int] = {}
        self.phases: dict[str, float] = {}
        self.samples: dict[str, ProcSample | None] = {}
        self.rooms: list[Room] = []
        self.slots_limit = DEFAULT_SLOTS_LIMIT
        self.go: VoiceGo | None = None
        self.interrupted: str | None = None
        self.machine_cpu: dict[str, tuple[float, float]] = {}
        self.direct = target.name == DIRECT

    def _say(self, text: str) -> None:
        if self.opts.progress:
            print(f"[voice @ {self.target.name}] {time.time() - self.started_at:6.1f}s {text}",
                  file=self.stream, flush=True)

    # ------------------------------------------------------------------ setup

    async def _setup(self) -> None:
        """Users, the voice channel(s), and in stage mode the SPEAK overrides."""
        opts = self.opts
        t0 = time.monotonic()
        total = opts.participants * opts.rooms
        if self.direct:
            self._setup_direct()
            self.phases["setup_s"] = round(time.monotonic() - t0, 3)
            return
        provisioned = await provision(self.target.base_url, total, opts.participants)
        owner = provisioned.users[0]
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {owner.token}"}) \
                as http:
            channel_ids = []
            for r in range(opts.rooms):
                url = f"{self.target.base_url}/api/v1/communities/" \
                      f"{provisioned.community_id}/channels"
                async with http.post(url, json={"name": f"voice-lt-{r}", "kind": "voice"},
                                     timeout=aiohttp.ClientTimeout(total=30)) as reply:
                    body = await reply.json(content_type=None)
                    if reply.status != 201:
                        raise TargetError(f"creating a voice channel failed: HTTP "
                                          f"{reply.status} {str(body)[:300]} (does the server "
                                          "have voice rooms?)")
                    channel_ids.append(int(body["channel"]["id"]))
        gateway = Gateway(self.target.ws_url, owner.token)
        await gateway.open()
        try:
            self.slots_limit = int(gateway.limits.get("voice_receive_slots",
                                                      DEFAULT_SLOTS_LIMIT))
            users = provisioned.users
            for r, channel_id in enumerate(channel_ids):
                members = users[r * opts.participants:(r + 1) * opts.participants]
                specs = []
                lean = opts.lean()
                for i, user in enumerate(members):
                    speaker = i if i < opts.speakers else -1
                    audible = opts.speakers - (1 if speaker >= 0 else 0)
                    slots = opts.slots or max(1, min(self.slots_limit, audible))
                    # the decoding sample: the last members (the audience on a stage)
                    decodes = i >= opts.participants - opts.decoders()
                    specs.append(VoiceSpec(user_id=user.id, token=user.token,
                                           speaker=speaker, slots=slots,
                                           lean=lean and not decodes))
                self.rooms.append(Room(channel_id, specs))
                if opts.stage:
                    await gateway.request("set_channel_override", channel_id=channel_id,
                                          kind="everyone", target_id=0, deny=SPEAK,
                                          reason="load test: stage audience")
                    for spec in specs:
                        if spec.speaker >= 0 and spec.user_id != owner.id:
                            await gateway.request("set_channel_override",
                                                  channel_id=channel_id, kind="member",
                                                  target_id=spec.user_id, allow=SPEAK,
                                                  reason="load test: stage speaker")
        finally:
            await gateway.close()
        self.phases["setup_s"] = round(time.monotonic() - t0, 3)

    def _setup_direct(self) -> None:
        """``--peer direct``: the same participants (ids 1..N, no tokens: there is no
        server) and rooms numbered from 1; who speaks, who decodes as for Hearth."""
        opts = self.opts
        self.slots_limit = opts.slots_limit or DEFAULT_SLOTS_LIMIT
        lean = opts.lean()
        for r in range(opts.rooms):
            specs = []
            for i in range(opts.participants):
                speaker = i if i < opts.speakers else -1
                audible = opts.speakers - (1 if speaker >= 0 else 0)
                slots = opts.slots or max(1, min(self.slots_limit, audible))
                decodes = i >= opts.participants - opts.decoders()
                specs.append(VoiceSpec(user_id=r * opts.participants + i + 1, token="",
                                       speaker=speaker, slots=slots,
                                       lean=lean and not decodes))
            self.rooms.append(Room(r + 1, specs))

    # ------------------------------------------------------------------ generators

    async def _spawn(self, epoch: float, deadline: float) -> None:
        opts = self.opts
        specs = [(room.channel_id, spec) for room in self.rooms for spec in room.specs]
        # Process count by cost: a decoded track 1, a lean one LEAN_TRACK_COST, a
        # speaker's microphone 1 (PCM encoded by aiortc) or LEAN_TRACK_COST (pre-encoded).
        lean = opts.lean()
        mic = LEAN_TRACK_COST if lean else 1.0

        def cost(spec: VoiceSpec) -> float:
            tracks = min(spec.slots, opts.speakers - (spec.speaker >= 0))
            if self.direct:  # each received track also has its sender in the process
                return tracks * ((LEAN_TRACK_COST if spec.lean else 1.0) + mic)
            return tracks * (LEAN_TRACK_COST if spec.lean else 1.0) + mic * (spec.speaker >= 0)

        # In lean mode, decoding participants, lean speakers and lean listeners get
        # processes of their own: a speaker's pacing lag is in every transit and
        # mouth-to-ear figure, so neither decoders nor a crowd of listeners may delay it.
        groups = [[s for s in specs if not s[1].lean],
                  [s for s in specs if s[1].lean and s[1].speaker >= 0],
                  [s for s in specs if s[1].lean and s[1].speaker < 0]]
        if opts.processes:
            groups = [specs]
        shares: dict[tuple[int, int], list[VoiceSpec]] = {}
        first = 0
        for group in groups:
            if not group:
                continue
            processes = opts.processes or max(1, math.ceil(
                sum(cost(spec) for _, spec in group) / TRACKS_PER_PROCESS))
            processes = min(processes, len(group))
            # A plan is for one channel: with several rooms, each (process, room) share
            # is a process of its own.
            for i, (channel_id, spec) in enumerate(group):
                shares.setdefault((first + i % processes, channel_id), []).append(spec)
            first += processes
        for index, ((_, channel_id), members) in enumerate(sorted(shares.items())):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "loadtest.voice_peer",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env=child_env(), limit=64 * 2**20)
            gen = Generator(index=index, process=proc)
            self.generators.append(gen)
            plan = VoicePlan(worker=index, url=self.target.ws_url, channel_id=channel_id,
                             speakers=opts.speakers, participants=members, epoch=epoch,
                             deadline=deadline, join_concurrency=opts.join_concurrency,
                             join_timeout_s=opts.join_timeout_s, lean_speakers=lean,
                             direct=self.direct)
            assert proc.stdin is not None
            proc.stdin.write(pack(plan))
            await proc.stdin.drain()
        self._readers = [asyncio.create_task(self._reader(g)) for g in self.generators]

    async def _reader(self, gen: Generator) -> None:
        assert gen.process.stdout is not None
        try:
            while True:
                report = await read_voice_report(gen.process.stdout)
                if report is None:
                    break
                if isinstance(report, VoiceJoinedReport):
                    gen.joined = report
                    gen.ready.set()
                elif isinstance(report, VoiceFinal):
                    gen.final = report
                    break
        finally:
            gen.ready.set()
            gen.done.set()

    async def _send_all(self, message: VoiceGo | VoiceFinish) -> None:
        for gen in self.generators:
            if gen.process.returncode is None and gen.process.stdin is not None:
                with contextlib.suppress(ConnectionError):
                    gen.process.stdin.write(pack(message))
                    await gen.process.stdin.drain()

    # ------------------------------------------------------------------ run

    async def run(self) -> dict[str, Any]:
        opts = self.opts
        total = opts.participants * opts.rooms
        budget = 60 + total * 1.0 + opts.duration_s + SETTLE_S + LISTEN_TAIL_S + 60
        if self.direct:  # edges are set up join_concurrency at a time per process
            budget += opts.direct_tracks() * 2.0
        deadline = time.monotonic() + budget
        self._say(f"setting up {opts.rooms} room(s) of {opts.participants} "
                  f"({opts.speakers} speaking)")
        # the whole server: gateway processes + their media workers (spawned at start)
        media_pids = media_worker_pids(self.target) if self.target.local else []
        gw_probe = ServerProbe(gateway_pids(self.target) + media_pids) \
            if self.target.local else None
        self.samples["baseline"] = gw_probe.sample() if gw_probe else None
        await self._setup()
        epoch = time.monotonic()
        t_join = time.monotonic()
        await self._spawn(epoch, deadline)
        gen_probe = ServerProbe([g.process.pid for g in self.generators])
        try:
            async with asyncio.timeout(60 + 2.0 * total
                                       + (2.0 * opts.direct_tracks() if self.direct else 0)):
                for gen in self.generators:
                    await gen.ready.wait()
        except TimeoutError:
            self.notes.append("join phase cut after its timeout")
        self.phases["join_s"] = round(time.monotonic() - t_join, 3)
        connected = sum(g.joined.connected for g in self.generators if g.joined)
        self._say(f"{connected}/{total} connected in {self.phases['join_s']} s")
        if self.target.local:  # workers started since (a pool that grows on demand)
            media_pids = sorted(set(media_pids) | set(media_worker_pids(self.target)))
        media_probe = ServerProbe(list(media_pids))
        if gw_probe is not None:
            gw_probe.add(media_pids)
        self.samples["connected"] = gw_probe.sample() if gw_probe else None
        await asyncio.sleep(SETTLE_S)
        start = time.monotonic() + 0.5
        stop = start + opts.duration_s
        self.go = VoiceGo(burst_start=start, burst_stop=stop, measure_start=start,
                          measure_stop=stop, listen_until=stop + LISTEN_TAIL_S)
        await self._send_all(self.go)
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        self.samples["measure_start"] = gw_probe.sample() if gw_probe else None
        self.samples["media_start"] = media_probe.sample()
        self.samples["generator_start"] = gen_probe.sample()
        self.machine_cpu["start"] = machine_cpu_busy()
        self._say(f"measuring for {opts.duration_s:g} s")
        await asyncio.sleep(max(0.0, stop - time.monotonic()))
        self.samples["measure_end"] = gw_probe.sample() if gw_probe else None
        self.samples["media_end"] = media_probe.sample()
        self.samples["generator_end"] = gen_probe.sample()
        self.machine_cpu["end"] = machine_cpu_busy()
        self.phases["measure_s"] = round(time.monotonic() - start, 3)
        await asyncio.sleep(max(0.0, stop + LISTEN_TAIL_S - time.monotonic()))
        self._say("collecting")
        await self._send_all(VoiceFinish())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60 + total * 0.5):
                for gen in self.generators:
                    await gen.done.wait()
        for gen in self.generators:
            if gen.process.stdin is not None:
                gen.process.stdin.close()
            try:
                async with asyncio.timeout(15):
                    await gen.process.wait()
            except TimeoutError:
                gen.process.kill()
                await gen.process.wait()
            if gen.final is None:
                self.notes.append(f"generator {gen.index} sent no final report")
        self._media_pids = media_pids
        return self.report()

    # ------------------------------------------------------------------ report

    def report(self) -> dict[str, Any]:
        from loadtest.report import machine

        opts, go = self.opts, self.go
        finals: list[ParticipantFinal] = [p for g in self.generators if g.final
                                          for p in g.final.participants]
        errors: dict[str, int] = {}
        for g in self.generators:
            for code, n in (g.final.errors if g.final else {}).items():
                errors[code] = errors.get(code, 0) + n
        channel_of = {spec.user_id: room.channel_id for room in self.rooms
                      for spec in room.specs}
        connected = [p for p in finals if p.connected]
        # bursts sent in the window, per room and speaker, by parity
        sent: dict[tuple[int, int], dict[int, list[SentBurst]]] = {}
        messages_sent = 0
        if self.direct:
            # Each process fed its listeners from its own copy of every speaker's
            # microphone: a listener's bursts are its process's copy's.
            channel_of = {p.user_id: g.index for g in self.generators if g.final
                          for p in g.final.participants}
            bursts_of: dict[int, int] = {}
            for g in self.generators:
                for copy in g.final.copies if g.final else []:
                    by_parity = sent.setdefault((g.index, copy.speaker), {0: [], 1: []})
                    for index, t in copy.bursts:
                        by_parity[index % 2].append(SentBurst(index=index, t=t))
                    bursts_of[copy.speaker] = max(bursts_of.get(copy.speaker, 0),
                                                    len(copy.bursts))
            messages_sent = sum(bursts_of.values())
        for p in finals if not self.direct else []:
            if p.speaker < 0:
                continue
            by_parity = sent.setdefault((channel_of[p.user_id], p.speaker), {0: [], 1: []})
            for index, t in p.bursts:
                by_parity[index % 2].append(SentBurst(index=index, t=t))
                messages_sent += 1
        latency = Histogram()
        heard = duplicated = out_of_order = unmatched = expected = 0
        missing_a_speaker = 0  # decoding listeners that heard no burst of a speaker
        for p in connected:
            if p.lean:  # lean listeners decode nothing: no mouth-to-ear from them
                continue
            room = channel_of[p.user_id]
            per_speaker: dict[int, list[tuple[int, float]]] = {}
            for _slot, tone, t in p.detections:
                per_speaker.setdefault(tone // 2, []).append((tone % 2, t))
            for (channel_id, speaker), by_parity in sent.items():
                if channel_id != room or speaker == p.speaker:
                    continue
                if self.direct and speaker not in heard_speakers(p.speaker, opts.speakers,
                                                                 p.slots_offered):
                    continue
                expected += len(by_parity[0]) + len(by_parity[1])
                m = match_detections(by_parity, per_speaker.pop(speaker, []))
                heard += m.heard
                missing_a_speaker += not m.heard and bool(by_parity[0] or by_parity[1])
                duplicated += m.duplicated
                out_of_order += m.out_of_order
                unmatched += m.unmatched
                for s in m.latencies_s:
                    latency.record(int(s * 1e6))
            unmatched += sum(len(v) for v in per_speaker.values())  # tones of nobody
        duration = self.phases.get("measure_s", opts.duration_s)
        server = self._server_block(len(connected))
        # Frames are counted by the generators over exactly [measure_start,
        # measure_stop); measure_s also holds the coordinator's own lateness and /proc
        # sampling (up to a few hundred ms on a loaded machine), so rates use the window.
        window = go.measure_stop - go.measure_start if go is not None else duration
        voice = self._voice_block(finals, connected, window)
        voice["bursts"] = {"sent": messages_sent, "expected": expected, "heard": heard,
                           "unmatched_detections": unmatched,
                           "listener_speaker_pairs_unheard": missing_a_speaker}
        voice["transit_ms"] = self._transit_block(connected)
        gen_block = self._generator_block(finals)
        report: dict[str, Any] = {
            "scenario": "voice",
            "target": {"name": self.target.name, "url": self.target.base_url,
                       "local": self.target.local, "notes": self.target.notes},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
            "machine": machine(),
            "options": opts.as_dict(),
            "connections_target": opts.participants * opts.rooms,
            "connections_peak": len(connected),
            "connections_failed": len(finals) - len(connected),
            "duration_s": duration,
            "messages_sent": messages_sent,
            "deliveries": heard,
            "deliveries_per_s": round(heard / duration, 1) if duration else None,
            "latency_ms": latency.summary_ms(),
            "lost": max(0, expected - heard),
            "duplicated": duplicated,
            "out_of_order": out_of_order,
            "errors": errors,
            "server": server,
            "generator": gen_block,
            "voice": voice,
            "phases_s": self.phases,
            "latency_histogram_ms": [[round(ub, 4), n] for ub, n in latency.bars_ms()],
            "notes": self.notes,
            "interrupted": self.interrupted,
        }
        if go is None:
            report["interrupted"] = report["interrupted"] or "the measured phase never started"
        return report

    def _server_block(self, connections: int) -> dict[str, Any]:
        s = self.samples
        base, conn = s.get("baseline"), s.get("connected")
        m_start, m_end = s.get("measure_start"), s.get("measure_end")
        cpu = cpu_percent_between(m_start, m_end)
        media = set(getattr(self, "_media_pids", []))
        out: dict[str, Any] = {
            "local": self.target.local,
            "pids": sorted(cpu) if cpu else [],
            "rss_bytes": last.rss_bytes if (last := m_end or conn) else None,
            "rss_baseline_bytes": base.rss_bytes if base else None,
            "rss_per_connection_bytes": round((conn.rss_bytes - base.rss_bytes) / connections)
            if base and conn and connections else None,
            "cpu_percent": round(sum(cpu.values()), 1) if cpu else None,
            "gateway_cpu_percent": round(sum(v for k, v in cpu.items() if k not in media), 1)
            if cpu else None,
            "cpu_percent_per_process": {str(k): v for k, v in cpu.items()},
            "includes": "gateway processes and their media workers",
        }
        return out

    def _voice_block(self, finals: list[ParticipantFinal], connected: list[ParticipantFinal],
                     duration: float) -> dict[str, Any]:
        opts = self.opts
        media_cpu = cpu_percent_between(self.samples.get("media_start"),
                                        self.samples.get("media_end"))
        fps: list[float] = []
        expected_tracks = 0
        active = 0
        outbound = sum(p.slots_offered for p in connected)
        lost = received = 0
        for p in connected:
            hears = opts.speakers - (1 if p.speaker >= 0 else 0)
            # a listener on the server's mix gets one track (slot 0), whatever it offered
            expected_tracks += 1 if opts.mixed() and p.speaker < 0 else \
                min(hears, p.slots_offered)
            for slot in p.slots:
                lost += slot.packets_lost
                received += slot.packets_received
                if slot.frames > 0:
                    active += 1
                    fps.append(slot.frames / duration if duration else 0.0)
        workers = list(getattr(self, "_media_pids", []))
        per_worker: dict[str, int] = {}
        if workers:
            # A room lives on one worker: this run's rooms are on the busiest ones.
            busiest = sorted(media_cpu, key=lambda pid: -media_cpu[pid])[:opts.rooms] \
                if media_cpu else workers[:1]
            for i, room in enumerate(self.rooms):
                pid = str(busiest[i % len(busiest)])
                ids = {s.user_id for s in room.specs}
                per_worker[pid] = per_worker.get(pid, 0) + sum(
                    p.slots_offered for p in connected if p.user_id in ids)
        below = sum(1 for f in fps if f < FRAMES_PER_S - 1)
        lean_fps = [slot.frames / duration for p in connected if p.lean for slot in p.slots
                    if slot.frames > 0] if duration else []
        lean_users = sorted(p.user_id for p in finals if p.lean)
        roles: dict[str, int] = {}
        wrong_roles = 0
        for p in connected:
            roles[str(p.role)] = roles.get(str(p.role), 0) + 1
            wanted = "speaker" if p.speaker >= 0 or not opts.stage else "listener"
            wrong_roles += p.role != wanted and not self.direct  # no server gives roles
        if lean_users:
            self.notes.append(
                f"lean mode: {len(lean_users)} of {len(finals)} participants counted RTP "
                "packets without decoding (voice.transit_ms); latency_ms (mouth-to-ear) "
                f"comes from the {len(finals) - len(lean_users)} decoding ones "
                "(voice.listeners.decoding_user_ids); speakers sent pre-encoded Opus")
            if len(finals) == len(lean_users):
                self.notes.append("no decoding participant: latency_ms (mouth-to-ear) is "
                                  "not measured in this run")
        if wrong_roles:
            self.notes.append(f"{wrong_roles} participant(s) got another role than the "
                              "scenario meant (see voice.roles)")
        return {
            "mode": "stage" if opts.stage else "all-talk",
            "listeners": {
                "requested": opts.listeners_mode,
                "mode": "lean" if opts.lean() else "decode",
                "lean_participants": len(lean_users),
                "decoding_participants": len(finals) - len(lean_users),
                "decoding_user_ids": sorted(p.user_id for p in finals if not p.lean)[:50],
                "speakers_send": "pre-encoded Opus loop" if opts.lean() else
                "PCM encoded by aiortc per frame",
            },
            "server_mix": {"mix_listeners_above": opts.mix_listeners_above,
                           "listeners_on_mix": opts.mixed(),
                           "media_capacity_tracks": opts.media_capacity_tracks},
            "rooms": opts.rooms,
            "participants_per_room": opts.participants,
            "speakers_per_room": opts.speakers,
            "listeners_per_room": opts.participants - opts.speakers,
            "slots_per_participant": sorted({p.slots_offered for p in finals}),
            "server_voice_receive_slots": self.slots_limit,
            "joined": len(connected),
            "failed": len(finals) - len(connected),
            "roles": roles,
            "failures": sorted({p.failure for p in finals if p.failure})[:10],
            "join_to_connected_ms": percentiles_ms(
                [p.join_to_connected_s for p in connected if p.join_to_connected_s is not None]),
            "voice_join_reply_ms": percentiles_ms(
                [p.join_reply_s for p in connected if p.join_reply_s is not None]),
            "media_workers": len(workers),
            "media_worker_pids": workers,
            "media_worker_cpu_percent": round(sum(media_cpu.values()), 1) if media_cpu else None,
            "media_worker_cpu_percent_per_process": {str(k): v for k, v in media_cpu.items()},
            "outbound_tracks": outbound,
            "outbound_tracks_per_media_worker": per_worker,
            "received_tracks_expected": expected_tracks,
            "received_tracks_active": active,
            "frames_per_s_per_track": {
                "min": round(min(fps), 2) if fps else None,
                "median": round(statistics.median(fps), 2) if fps else None,
                "max": round(max(fps), 2) if fps else None,
                "tracks_below_49": below,
                "target": FRAMES_PER_S - 1,
                "lean_tracks": len(lean_fps),
                "lean_min": round(min(lean_fps), 2) if lean_fps else None,
            },
            "packets_received": received,
            "packets_lost": lost,
            "events": self._events(finals),
        }

    def _transit_block(self, connected: list[ParticipantFinal]) -> dict[str, Any]:
        """Lean listeners' figures: transit (NOT mouth-to-ear, see loadtest/voice_lean.py)
        and whether each lean listener recognised packets of every speaker it should
        hear by forward (on the server mix: none; that audio is re-encoded)."""
        opts = self.opts
        transit = Histogram()
        ambiguous = 0
        for g in self.generators:
            if g.final is not None and g.final.transit is not None:
                transit.merge(Histogram.from_wire(g.final.transit))
            ambiguous = max(ambiguous, g.final.payloads_ambiguous if g.final else 0)
        lean = [p for p in connected if p.lean]
        mixed = opts.mixed()
        identified = unidentified = missing = heard_self = 0
        per_listener: list[int] = []
        wanted_sizes: list[int] = []
        go = self.go
        window = max(1e-6, go.measure_stop - go.measure_start if go else opts.duration_s)
        pair_fps: list[float] = []
        for p in lean:
            wanted = set(range(opts.speakers)) - {p.speaker}
            if mixed and p.speaker < 0:
                wanted = set()  # the mix is re-encoded: nothing to recognise
            wanted = set(sorted(wanted)[:p.slots_offered]) if len(wanted) > p.slots_offered \
                else wanted
            got = set(p.identified)
            identified += sum(p.identified.values())
            unidentified += p.unidentified
            heard_self += p.identified.get(p.speaker, 0) if p.speaker >= 0 else 0
            if wanted:
                wanted_sizes.append(len(wanted))
                per_listener.append(len(got & wanted))
                missing += len(wanted) > len(got & wanted)
                pair_fps.extend(p.identified.get(s, 0) / window for s in wanted)
        out: dict[str, Any] = {
            "what": "due instant of the frame on the shared grid -> its RTP packet at a lean "
                    "listener's tap: speaker hand-over lag, SRTP, loopback UDP, the SFU's "
                    "forwarding; no jitter buffer, no decoding, no playout (NOT mouth-to-ear; "
                    "latency_ms is, from the decoding listeners)",
            "lean_listeners": len(lean),
            "packets_identified": identified,
            "packets_unidentified": unidentified,
            "payloads_ambiguous": ambiguous,
            "lean_listeners_missing_a_speaker": missing,
            "speakers_identified_per_lean_listener": {
                "min": min(per_listener) if per_listener else None,
                "expected_min": min(wanted_sizes) if wanted_sizes else None,
                "listeners_checked": len(per_listener),
            },
            "heard_themselves": heard_self,
            "frames_per_s_per_speaker_pair": {
                "min": round(min(pair_fps), 2) if pair_fps else None,
                "median": round(statistics.median(pair_fps), 2) if pair_fps else None,
                "pairs": len(pair_fps),
                "below_49": sum(1 for f in pair_fps if f < FRAMES_PER_S - 1),
            },
        }
        return out | {"latency": transit.summary_ms()}

    @staticmethod
    def _events(finals: list[ParticipantFinal]) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in finals:
            for name, n in p.events.items():
                out[name] = out.get(name, 0) + n
        return out

    def _generator_block(self, finals: list[ParticipantFinal]) -> dict[str, Any]:
        s = self.samples
        cpu = cpu_percent_between(s.get("generator_start"), s.get("generator_end"))
        speakers = [p for p in finals if p.speaker >= 0]
        frames = sum(p.frames_sent for p in speakers)
        late = sum(p.late_frames for p in speakers)
        dropped = sum(p.dropped_frames for p in speakers)
        max_lag = max((p.max_lag_s for p in speakers), default=0.0)
        if self.direct:  # the microphones are the processes' copies
            copies = [c for g in self.generators if g.final for c in g.final.copies]
            frames = sum(c.frames for c in copies)
            late = sum(c.late_frames for c in copies)
            dropped = sum(c.dropped_frames for c in copies)
            max_lag = max((c.max_lag_s for c in copies), default=0.0)
        counts = [len(g.final.participants) for g in self.generators if g.final]
        window = max(1e-6, self.phases.get("measure_s", self.opts.duration_s))
        received = sum(slot.frames for p in finals for slot in p.slots)
        received_lean = sum(slot.frames for p in finals if p.lean for slot in p.slots)
        gen_cpu_s = sum(cpu.values()) / 100 * window
        # What one frame costs the generator (receive path + its share of the speakers'
        # encoding), hence how many 50 frames/s tracks one core's worth drives.
        per_frame_ms = 1000 * gen_cpu_s / received if received and cpu else None
        out: dict[str, Any] = {}
        m = self.machine_cpu
        if "start" in m and "end" in m and m["end"][1] > m["start"][1]:
            busy = 100 * (m["end"][0] - m["start"][0]) / (m["end"][1] - m["start"][1])
            server = cpu_percent_between(s.get("measure_start"), s.get("measure_end"))
            ours = sum(server.values()) + sum(cpu.values())
            out["machine_cpu_busy_percent"] = round(busy, 1)
            out["other_processes_cpu_percent"] = round(max(0.0, busy - ours), 1)
            if busy - ours > 20:
                self.notes.append(f"other processes used about {busy - ours:.0f}% CPU during "
                                  "the measured phase: figures are disturbed")
        return out | {
            "processes": len(self.generators),
            "participants_per_process": max(counts) if counts else None,
            "cpu_percent": round(sum(cpu.values()), 1) if cpu else None,
            "cpu_percent_per_process": {str(k): v for k, v in cpu.items()},
            "max_process_cpu_percent": max(cpu.values()) if cpu else None,
            "received_frames": received,
            "received_frames_lean": received_lean,
            "received_frames_decoded": received - received_lean,
            "cpu_ms_per_received_frame": round(per_frame_ms, 3) if per_frame_ms else None,
            "tracks_per_core_estimate": round(1000 / (FRAMES_PER_S * per_frame_ms))
            if per_frame_ms else None,
            "cost_basis": "all generator CPU (speakers included) / every received frame, "
                          "lean and decoded together",
            "speaker_frames_sent": frames,
            "speaker_frames_late": late,
            "speaker_frames_dropped": dropped,
            "speaker_max_lag_ms": round(1000 * max_lag, 1),
            "behind_schedule": bool(dropped) or bool(frames and late / frames > 0.01)
            or bool(cpu and max(cpu.values()) > 85),
            "rss_bytes": sum(g.final.rss_bytes for g in self.generators if g.final),
        }


async def run_voice(opts: VoiceOptions, target: Target) -> dict[str, Any]:
    """The voice scenario against ``target`` (used by :mod:`loadtest.cli`)."""
    return await VoiceRun(opts, target).run()


def summary(report: dict[str, Any]) -> str:
    """The one-paragraph summary the CLI prints."""
    v = report["voice"]
    lat = report["latency_ms"]
    j = v["join_to_connected_ms"]
    f = v["frames_per_s_per_track"]
    g = report["generator"]
    t = v.get("transit_ms") or {}
    lean_line = [] if not t.get("lean_listeners") else [
        f"  lean listeners {t['lean_listeners']}: transit (not mouth-to-ear) p50 "
        f"{t['latency']['p50']} p99 {t['latency']['p99']} max {t['latency']['max']} ms over "
        f"{t['packets_identified']} packets ({t['packets_unidentified']} unidentified); "
        f"{t['lean_listeners_missing_a_speaker']} missed a speaker"]
    return "\n".join([
        f"voice ({v['mode']}) @ {report['target']['name']}: {v['joined']}/"
        f"{report['connections_target']} joined, mouth-to-ear p50 {lat['p50']} p99 "
        f"{lat['p99']} max {lat['max']} ms, bursts {report['deliveries']}/"
        f"{v['bursts']['expected']} heard (lost {report['lost']}), errors {report['errors']}",
        f"  join->connected p50 {j['p50']} p95 {j['p95']} max {j['max']} ms; frames/s per "
        f"track min {f['min']} median {f['median']} ({v['received_tracks_active']}/"
        f"{v['received_tracks_expected']} tracks); packets lost {v['packets_lost']}",
        (f"  no server ({v['outbound_tracks']} direct speaker->listener tracks); "
         if report["target"]["name"] == DIRECT else
         f"  server cpu {report['server']['cpu_percent']}% (media workers "
         f"{v['media_worker_cpu_percent']}%, {v['media_workers']} worker(s), "
         f"{v['outbound_tracks']} outbound tracks); ")
        + f"generator cpu {g['cpu_percent']}% in "
        f"{g['processes']} process(es), late frames {g['speaker_frames_late']}"
        + (" (BEHIND SCHEDULE)" if g["behind_schedule"] else "")
        + f"; {g['cpu_ms_per_received_frame']} ms CPU per received frame",
    ] + lean_line + [f"  note: {n}" for n in report["notes"]] + [
        "  " + line for peer in (report.get("peers") or {}).values()
        for line in summary(peer).splitlines()] + [
        f"  hearth/{name}: " + ", ".join(f"{k} x{v['ratio']}" for k, v in ratios.items()
                                         if v["ratio"] is not None)
        for name, ratios in (report.get("ratios") or {}).items()])

