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
import math
import sys
import time
from typing import Any

import aiohttp

from loadtest.coordinator import machine_cpu_busy
from loadtest.target import (
    ProcSample,
    ServerProbe,
    Target,
    TargetError,
    child_env,
    provision,
)
from loadtest.voice_peer import (
    Gateway,
    VoiceFinal,
    VoiceFinish,
    VoiceGo,
    VoiceJoinedReport,
    VoicePlan,
    VoiceSpec,
    pack,
    read_voice_report,
)
from loadtest.voice_plan import (
    DEFAULT_SLOTS_LIMIT,
    DIRECT,
    LEAN_TRACK_COST,
    LISTEN_TAIL_S,
    SETTLE_S,
    SPEAK,
    TRACKS_PER_PROCESS,
    Generator,
    Room,
    VoiceOptions,
)
from loadtest.voice_report import VoiceReporting, gateway_pids, media_worker_pids


class VoiceRun(VoiceReporting):
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


async def run_voice(opts: VoiceOptions, target: Target) -> dict[str, Any]:
    """The voice scenario against ``target`` (used by :mod:`loadtest.cli`)."""
    return await VoiceRun(opts, target).run()

