"""A generator process of the ``voice`` scenario: gateway sessions plus aiortc peers.

Started by :mod:`loadtest.voice` as ``python -m loadtest.voice_peer`` with pipes: it
reads a :class:`VoicePlan` (then :class:`VoiceGo`, then :class:`VoiceFinish`) from stdin
and writes :class:`VoiceJoinedReport` and :class:`VoiceFinal` to stdout, each a 4-byte
big-endian length and a msgpack body, like :mod:`loadtest.ipc`. End of file on stdin
(the coordinator died) or the plan's deadline ends the process: runs stop by
themselves.

Each participant is what a client does, over the public protocol only: a websocket
session (identify, heartbeats) and one RTCPeerConnection whose offer has one
``sendrecv`` audio transceiver (the microphone: a :class:`ToneTrack` for a speaker,
nothing for a listener) and ``slots`` ``recvonly`` ones, sent with ``voice_join``; the
answer comes back in the reply. aiortc gathers its ICE candidates before the offer is
made, so the offer carries them and no ``voice_ice_candidate`` is needed.

Why several processes: an aiortc peer costs real CPU in Python (SRTP, RTP parsing, a
decoder thread per received track); one process drives only so many before its own
lateness would show up as server latency. The final report carries the process's CPU
and its speaker tracks' lateness so the coordinator can tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
import sys
import time
from typing import Any

import av
import msgspec
import psutil
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from loadtest.accounting import Histogram
from loadtest.voice_audio import (
    MAX_DETECTIONS,
    MAX_SPEAKERS,
    BurstDetector,
    GridTrack,
    ToneTrack,
    mono_samples,
)
from loadtest.voice_direct import Mesh, SourceCopy, heard_speakers, wait_connected
from loadtest.voice_lean import (
    OpusLoopTrack,
    PayloadTable,
    SpeakerLoops,
    build_loops,
    transit_s,
)
from loadtest.voice_tap import TapCallback, check_internals, tap_receiver

# ----------------------------------------------------------------------------- IPC


class VoiceSpec(msgspec.Struct, array_like=True, frozen=True):
    """One participant: who, whether it speaks (``speaker`` >= 0: its tone index) and
    how many receive slots its offer asks for."""

    user_id: int
    token: str
    speaker: int
    slots: int
    lean: bool = False
    """Its receive slots are tapped and counted (:mod:`loadtest.voice_lean`) instead of
    decoded: no mouth-to-ear from this participant, transit instead."""


class VoicePlan(msgspec.Struct, tag="vplan", kw_only=True):
    worker: int
    url: str
    channel_id: int
    speakers: int
    participants: list[VoiceSpec]
    epoch: float
    """Monotonic time of frame 0 of every speaker's frame grid."""
    deadline: float
    """Monotonic time after which the process stops whatever it does and exits."""
    join_concurrency: int = 4
    join_timeout_s: float = 30.0
    listeners_self_mute: bool = True
    """Listeners join with ``self_mute`` (they send no audio either way)."""
    lean_speakers: bool = False
    """Speakers send pre-encoded Opus (:class:`loadtest.voice_lean.OpusLoopTrack`)
    instead of PCM that aiortc encodes per frame."""
    direct: bool = False
    """``--peer direct``: no server; every speaker -> listener edge is a peer connection
    of its own, signalled in this process (:mod:`loadtest.voice_direct`)."""


class VoiceGo(msgspec.Struct, tag="vgo", kw_only=True):
    """Bursts whose first frame is due in [burst_start, burst_stop); frames counted for
    frames/s in [measure_start, measure_stop); detections kept until ``listen_until``."""

    burst_start: float
    burst_stop: float
    measure_start: float
    measure_stop: float
    listen_until: float


class VoiceFinish(msgspec.Struct, tag="vfinish"):
    """Report :class:`VoiceFinal` and close everything."""


VoiceCommand = VoicePlan | VoiceGo | VoiceFinish


class VoiceJoinedReport(msgspec.Struct, tag="vjoined", kw_only=True):
    """Every participant of this process is connected (or failed)."""

    worker: int
    connected: int
    failed: int


class SlotFinal(msgspec.Struct, array_like=True):
    slot: int
    frames: int
    """Frames delivered in the measured window (decoded frames; for a lean listener,
    RTP packets reaching the tap)."""
    frames_total: int
    packets_received: int
    packets_lost: int


class ParticipantFinal(msgspec.Struct, kw_only=True):
    user_id: int
    speaker: int
    slots_offered: int
    connected: bool
    failure: str | None = None
    join_to_connected_s: float | None = None
    """From the start of the join (before the offer is made) to the peer connection's
    ``connected`` (ICE and DTLS done)."""
    join_reply_s: float | None = None
    """``voice_join`` sent -> its ``ok`` reply."""
    slots: list[SlotFinal] = []
    detections: list[tuple[int, int, float]] = []
    """(slot, tone, monotonic t) of every burst onset heard in the listening window."""
    bursts: list[tuple[int, float]] = []
    """Speakers: (burst index, monotonic t) of every burst sent."""
    role: str | None = None
    """The role the server gave this participant (``speaker`` / ``listener``)."""
    frames_sent: int = 0
    dropped_frames: int = 0
    late_frames: int = 0
    max_lag_s: float = 0.0
    events: dict[str, int] = {}
    lean: bool = False
    identified: dict[int, int] = {}
    """Lean listener: packets recognised per speaker index in the measured window."""
    unidentified: int = 0
    """Lean listener: packets in the window whose payload is in no speaker's loop (the
    server's re-encoded mix, or a payload altered on the way)."""


class VoiceFinal(msgspec.Struct, tag="vfinal", kw_only=True):
    worker: int
    participants: list[ParticipantFinal]
    cpu_s: float
    rss_bytes: int
    errors: dict[str, int]
    detections_dropped: int = 0
    transit: tuple[dict[int, int], int, int, int] | None = None
    """Lean listeners' transit histogram (:class:`loadtest.accounting.Histogram` wire
    form, microseconds) over packets identified in the measured window."""
    payloads_ambiguous: int = 0
    """Loop payloads that identify nothing because two entries share them."""
    copies: list[SourceCopy] = []
    """``direct``: this process's copies of the speakers' microphones (their bursts
    time the mouth-to-ear of this process's listeners)."""


VoiceReport = VoiceJoinedReport | VoiceFinal

_HEADER = struct.Struct(">I")
_encoder = msgspec.msgpack.Encoder()
_command_decoder = msgspec.msgpack.Decoder(VoiceCommand)
_report_decoder = msgspec.msgpack.Decoder(VoiceReport)
MAX_IPC_BYTES = 64 * 2**20


def pack(message: VoiceCommand | VoiceReport) -> bytes:
    body = _encoder.encode(message)
    return _HEADER.pack(len(body)) + body


async def _read_body(reader: asyncio.StreamReader) -> bytes | None:
    try:
        header = await reader.readexactly(_HEADER.size)
        size = _HEADER.unpack(header)[0]
        if size > MAX_IPC_BYTES:
            raise ValueError(f"IPC message of {size} bytes")
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        return None


async def read_voice_report(reader: asyncio.StreamReader) -> VoiceReport | None:
    body = await _read_body(reader)
    return None if body is None else _report_decoder.decode(body)


# ----------------------------------------------------------------------- gateway


class GatewayError(Exception):
    """A refused request (``error`` frame) or a session that did not open."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


_frame_decoder = msgspec.json.Decoder(dict[str, Any])
REQUEST_TIMEOUT_S = 20.0


class Gateway:
    """One gateway session with just what a voice participant needs: identify,
    heartbeats, requests with replies, and a count of the events it receives (every
    frame is read, so the server never sees a slow consumer)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.ws: ClientConnection | None = None
        self.limits: dict[str, Any] = {}
        self.events: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._last_s: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.closed_reason: str | None = None

    async def open(self) -> None:
        self.ws = await connect(self.url, max_size=2**22, open_timeout=REQUEST_TIMEOUT_S,
                                ping_interval=None)
        hello = _frame_decoder.decode(await asyncio.wait_for(self.ws.recv(), REQUEST_TIMEOUT_S))
        if hello.get("op") != "hello":
            raise GatewayError("protocol", f"expected hello, got {hello.get('op')}")
        self.limits = hello.get("limits") or {}
        interval = max(1.0, float(hello.get("heartbeat_interval_ms", 30_000)) / 1000)
        await self.ws.send(msgspec.json.encode(
            {"op": "identify", "token": self.token, "client": "hearth-loadtest-voice"}))
        ready = _frame_decoder.decode(await asyncio.wait_for(self.ws.recv(), REQUEST_TIMEOUT_S))
        if ready.get("op") != "ready":
            raise GatewayError(str(ready.get("code", "identify")),
                               str(ready.get("message", ready.get("op"))))
        self._tasks = [asyncio.create_task(self._reader()),
                       asyncio.create_task(self._heartbeat(interval * 0.8))]

    async def _reader(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                frame = _frame_decoder.decode(raw)
                op = frame.get("op")
                if op == "dispatch":
                    self._last_s = frame.get("s", self._last_s)
                    t = str((frame.get("d") or {}).get("t", "?"))
                    if len(self.events) < 64 or t in self.events:  # bounded
                        self.events[t] = self.events.get(t, 0) + 1
                elif op in ("ok", "error"):
                    future = self._pending.pop(frame.get("id") or -1, None)
                    if future is not None and not future.done():
                        future.set_result(frame)
        except ConnectionClosed as exc:
            self.closed_reason = f"closed {exc.rcvd.code if exc.rcvd else ''}".strip()
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(GatewayError("closed", "the gateway closed"))
            self._pending.clear()

    async def _heartbeat(self, every_s: float) -> None:
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(every_s)
                await self.ws.send(msgspec.json.encode({"op": "heartbeat", "seq": self._last_s}))

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send request ``op`` and return its ``ok`` data; raise :class:`GatewayError`
        for an ``error`` reply."""
        assert self.ws is not None
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        await self.ws.send(msgspec.json.encode({"op": op, "id": request_id, **fields}))
        try:
            reply = await asyncio.wait_for(future, REQUEST_TIMEOUT_S)
        except TimeoutError:
            self._pending.pop(request_id, None)
            raise GatewayError("timeout", f"{op} unanswered after {REQUEST_TIMEOUT_S:g} s")\
                from None
        if reply.get("op") == "error":
            raise GatewayError(str(reply.get("code")), str(reply.get("message")))
        data: dict[str, Any] = reply.get("data") or {}
        return data

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)


# ------------------------------------------------------------------- participant


class Shared:
    """What every participant of the process writes to (one event loop: no locks)."""

    def __init__(self) -> None:
        self.go: VoiceGo | None = None
        self.detections = 0
        self.detections_dropped = 0
        self.errors: dict[str, int] = {}
        self.loops: list[SpeakerLoops] = []
        self.table: PayloadTable | None = None
        self.transit = Histogram()

    def prepare(self, plan: VoicePlan) -> None:
        """Encode the speakers' loops and their payload table once per process, and
        check the tap's aiortc internals, when the plan has anything lean."""
        lean_listeners = any(spec.lean for spec in plan.participants)
        if lean_listeners:
            check_internals()
        if plan.lean_speakers or lean_listeners:
            self.loops = build_loops(plan.speakers)
            self.table = PayloadTable(self.loops)

    def error(self, code: str) -> None:
        if len(self.errors) < 64 or code in self.errors:
            self.errors[code] = self.errors.get(code, 0) + 1


class Participant:
    """One member in the voice room: its session, its peer connection, and per slot a
    reader that counts decoded frames and detects burst onsets."""

    def __init__(self, spec: VoiceSpec, plan: VoicePlan, shared: Shared) -> None:
        self.spec = spec
        self.plan = plan
        self.shared = shared
        self.gateway = Gateway(plan.url, spec.token)
        self.pc: RTCPeerConnection | None = None
        self.track: GridTrack | None = None
        self.final = ParticipantFinal(user_id=spec.user_id, speaker=spec.speaker,
                                      slots_offered=spec.slots, connected=False)
        self.frames: dict[int, list[int]] = {}
        """slot -> [frames in the window, frames in all]."""
        self.detections: list[tuple[int, int, float]] = []
        self._readers: list[asyncio.Task[None]] = []

    async def join(self) -> None:
        started = time.monotonic()
        await self.gateway.open()
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        connected = asyncio.Event()
        failed = asyncio.Event()

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState == "connected":
                connected.set()
            elif pc.connectionState in ("failed", "closed"):
                failed.set()

        if self.spec.speaker >= 0 and self.plan.lean_speakers:
            self.track = OpusLoopTrack(self.spec.speaker, self.plan.speakers, self.plan.epoch,
                                       self.shared.loops[self.spec.speaker])
            pc.addTransceiver(self.track, direction="sendrecv")
        elif self.spec.speaker >= 0:
            self.track = ToneTrack(self.spec.speaker, self.plan.speakers, self.plan.epoch,
                                   seed=self.spec.user_id)
            pc.addTransceiver(self.track, direction="sendrecv")
        else:
            pc.addTransceiver("audio", direction="sendrecv")
        for _ in range(self.spec.slots):
            pc.addTransceiver("audio", direction="recvonly")
        join_started = time.monotonic()
        await pc.setLocalDescription(await pc.createOffer())
        sent = time.monotonic()
        listener = self.spec.speaker < 0
        joined = await self.gateway.request(
            "voice_join", channel_id=self.plan.channel_id, sdp=pc.localDescription.sdp,
            self_mute=listener and self.plan.listeners_self_mute, self_deaf=False)
        self.final.join_reply_s = time.monotonic() - sent
        for member in joined.get("participants") or []:
            if member.get("user_id") == self.spec.user_id:
                self.final.role = str(member.get("role"))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=joined["sdp"], type="answer"))
        self.final.lean = self.spec.lean
        self.final.identified = {}
        for slot, transceiver in enumerate(pc.getTransceivers()[1:]):
            if self.spec.lean:
                tap_receiver(transceiver.receiver, self._counter(slot))
                continue
            track = transceiver.receiver.track
            if track is not None:
                self._readers.append(asyncio.create_task(self._read(slot, track)))
        done = asyncio.ensure_future(connected.wait())
        gone = asyncio.ensure_future(failed.wait())
        try:
            await asyncio.wait({done, gone}, timeout=self.plan.join_timeout_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            gone.cancel()
        if not connected.is_set():
            raise GatewayError("ice_failed" if failed.is_set() else "connect_timeout",
                               f"peer connection {pc.connectionState}")
        self.final.connected = True
        # The start of the join as a user sees it is before the offer is made; the
        # websocket session is already open in a real client, so it is not counted.
        self.final.join_to_connected_s = time.monotonic() - join_started
        del started

    def _counter(self, slot: int) -> TapCallback:
        """A lean slot's packet callback: count, identify, time the transit (one dict
        lookup and a histogram bucket per packet; nothing decoded)."""
        counts = self.frames.setdefault(slot, [0, 0])
        shared = self.shared
        table = shared.table
        assert table is not None
        identified = self.final.identified  # one dict for all of its slots
        epoch = self.plan.epoch
        record = shared.transit.record

        def on_packet(payload: bytes, _seq: int, arrival: float) -> None:
            counts[1] += 1
            go = shared.go
            if go is None or not go.measure_start <= arrival < go.measure_stop:
                return
            counts[0] += 1
            hit = table.identify(payload)
            if hit is None:
                self.final.unidentified += 1
                return
            speaker, index = hit
            identified[speaker] = identified.get(speaker, 0) + 1
            record(int(transit_s(index, arrival, epoch) * 1e6))

        return on_packet

    async def _read(self, slot: int, track: MediaStreamTrack) -> None:
        detector = BurstDetector(slot, 2 * MAX_SPEAKERS)
        counts = self.frames.setdefault(slot, [0, 0])
        shared = self.shared
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            t = time.monotonic()
            counts[1] += 1
            go = shared.go
            if go is None:
                continue
            if go.measure_start <= t < go.measure_stop:
                counts[0] += 1
            if t > go.listen_until:
                continue
            assert isinstance(frame, av.AudioFrame)  # the track is an audio track
            detection = detector.feed(mono_samples(frame), t)
            if detection is None or t < go.burst_start:
                continue
            if shared.detections >= MAX_DETECTIONS:
                shared.detections_dropped += 1
                continue
            shared.detections += 1
            self.detections.append((slot, detection.tone, t))

    async def finish(self) -> ParticipantFinal:
        """Collect this participant's figures, then leave and close."""
        final = self.final
        pc = self.pc
        if pc is not None:
            stats_by_slot: dict[int, tuple[int, int]] = {}
            for slot, transceiver in enumerate(pc.getTransceivers()[1:]):
                with contextlib.suppress(Exception):
                    report = await transceiver.receiver.getStats()
                    received = lost = 0
                    for stat in report.values():
                        if getattr(stat, "type", "") == "inbound-rtp":
                            received += int(stat.packetsReceived)
                            lost += max(0, int(stat.packetsLost))
                    stats_by_slot[slot] = (received, lost)
            final.slots = [SlotFinal(slot=slot, frames=counts[0], frames_total=counts[1],
                                     packets_received=stats_by_slot.get(slot, (0, 0))[0],
                                     packets_lost=stats_by_slot.get(slot, (0, 0))[1])
                           for slot, counts in sorted(self.frames.items())]
        final.detections = self.detections
        if self.track is not None:
            stats = self.track.stats
            final.bursts = [(b.index, b.t) for b in stats.bursts]
            final.frames_sent, final.late_frames = stats.frames, stats.late_frames
            final.dropped_frames = stats.dropped_frames
            final.max_lag_s = round(stats.max_lag_s, 4)
        final.events = dict(self.gateway.events)
        if final.connected and self.gateway.closed_reason is None:
            with contextlib.suppress(Exception):
                await self.gateway.request("voice_leave", channel_id=self.plan.channel_id)
        await self.close()
        return final

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        if self.track is not None:
            self.track.stop()
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pc.close(), 10)
        await self.gateway.close()


class DirectParticipant(Participant):
    """A participant of ``--peer direct``: no gateway session; one receiving peer
    connection per speaker it hears (slot = its index among them), each fed straight
    by that speaker's sending peer connection (:class:`loadtest.voice_direct.Mesh`)."""

    def __init__(self, spec: VoiceSpec, plan: VoicePlan, shared: Shared) -> None:
        super().__init__(spec, plan, shared)
        self.receivers: list[RTCPeerConnection] = []

    async def join_direct(self, mesh: Mesh, gate: asyncio.Semaphore) -> None:
        """Set up every incoming edge (``join_concurrency`` at a time per process);
        connected when all are. ``join_to_connected_s`` is the slowest edge's, from
        the start of its setup (before its offer) to its ``connected``: the moment
        this participant hears everyone."""
        spec, plan = self.spec, self.plan
        self.final.lean = spec.lean
        self.final.identified = {}
        self.final.role = "speaker" if spec.speaker >= 0 else "listener"
        timeout = plan.join_timeout_s

        async def one(slot: int, speaker: int) -> float:
            async with gate:
                pc, started = await mesh.edge(speaker, timeout)
                self.receivers.append(pc)
                transceiver = pc.getTransceivers()[0]
                if spec.lean:
                    tap_receiver(transceiver.receiver, self._counter(slot))
                elif transceiver.receiver.track is not None:
                    self._readers.append(asyncio.create_task(
                        self._read(slot, transceiver.receiver.track)))
                if not await wait_connected(pc, timeout):
                    raise GatewayError("ice_failed", f"direct edge {pc.connectionState}")
                return time.monotonic() - started

        heard = heard_speakers(spec.speaker, plan.speakers, spec.slots)
        took = await asyncio.gather(*(one(slot, s) for slot, s in enumerate(heard)))
        self.final.connected = True
        self.final.join_to_connected_s = max(took) if took else None

    async def finish(self) -> ParticipantFinal:
        final = self.final
        slots: dict[int, tuple[int, int]] = {}
        for slot, pc in enumerate(self.receivers):
            with contextlib.suppress(Exception):
                report = await pc.getTransceivers()[0].receiver.getStats()
                received = lost = 0
                for stat in report.values():
                    if getattr(stat, "type", "") == "inbound-rtp":
                        received += int(stat.packetsReceived)
                        lost += max(0, int(stat.packetsLost))
                slots[slot] = (received, lost)
        final.slots = [SlotFinal(slot=slot, frames=counts[0], frames_total=counts[1],
                                 packets_received=slots.get(slot, (0, 0))[0],
                                 packets_lost=slots.get(slot, (0, 0))[1])
                       for slot, counts in sorted(self.frames.items())]
        final.detections = self.detections
        await self.close()
        return final

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        for pc in self.receivers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pc.close(), 10)


async def _join_direct(plan: VoicePlan, shared: Shared, mesh: Mesh) -> list[Participant]:
    participants = [DirectParticipant(spec, plan, shared) for spec in plan.participants]
    gate = asyncio.Semaphore(max(1, plan.join_concurrency))

    async def one(p: DirectParticipant) -> None:
        try:
            await asyncio.wait_for(p.join_direct(mesh, gate),
                                   plan.join_timeout_s * (1 + len(plan.participants)))
        except (GatewayError, OSError, TimeoutError, ValueError) as exc:
            code = exc.code if isinstance(exc, GatewayError) else type(exc).__name__
            shared.error(f"join:{code}")
            p.final.failure = str(exc)[:300]

    await asyncio.gather(*(one(p) for p in participants))
    return list(participants)


# ---------------------------------------------------------------------- process


async def _join_all(plan: VoicePlan, shared: Shared) -> list[Participant]:
    participants = [Participant(spec, plan, shared) for spec in plan.participants]
    gate = asyncio.Semaphore(max(1, plan.join_concurrency))

    async def one(p: Participant) -> None:
        async with gate:
            try:
                await asyncio.wait_for(p.join(), plan.join_timeout_s + REQUEST_TIMEOUT_S)
            except (GatewayError, OSError, TimeoutError, ConnectionClosed) as exc:
                code = exc.code if isinstance(exc, GatewayError) else type(exc).__name__
                shared.error(f"join:{code}")
                p.final.failure = str(exc)[:300]

    await asyncio.gather(*(one(p) for p in participants))
    return participants


async def run(reader: asyncio.StreamReader, out: Any) -> None:
    """The process: plan -> join everyone -> report -> (go) -> finish -> final."""
    body = await _read_body(reader)
    if body is None:
        return
    plan = _command_decoder.decode(body)
    if not isinstance(plan, VoicePlan):
        raise SystemExit("voice generator: the first command must be a plan")
    me = psutil.Process()
    shared = Shared()
    shared.prepare(plan)
    loop = asyncio.get_running_loop()
    participants: list[Participant] = []
    mesh = Mesh(plan.speakers, plan.epoch, plan.lean_speakers, shared.loops) \
        if plan.direct else None
    try:
        async with asyncio.timeout_at(loop.time() + (plan.deadline - time.monotonic())):
            participants = await _join_direct(plan, shared, mesh) if mesh is not None \
                else await _join_all(plan, shared)
            ok = sum(p.final.connected for p in participants)
            out.write(pack(VoiceJoinedReport(worker=plan.worker, connected=ok,
                                             failed=len(participants) - ok)))
            out.flush()
            while True:
                body = await _read_body(reader)
                if body is None:
                    break
                command = _command_decoder.decode(body)
                if isinstance(command, VoiceGo):
                    shared.go = command
                    if mesh is not None:
                        mesh.schedule(command.burst_start, command.burst_stop)
                    for p in participants:
                        if p.track is not None:
                            p.track.schedule(command.burst_start, command.burst_stop)
                elif isinstance(command, VoiceFinish):
                    break
    except TimeoutError:
        shared.error("generator_deadline")
    finals = []
    for p in participants:
        try:
            finals.append(await asyncio.wait_for(p.finish(), 15))
        except Exception:  # a stuck or failing close must not hang the run
            shared.error("close_timeout")
            finals.append(p.final)
    copies = mesh.copies() if mesh is not None else []
    if mesh is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(mesh.close(), 30)
    times = me.cpu_times()
    out.write(pack(VoiceFinal(worker=plan.worker, participants=finals,
                              cpu_s=times.user + times.system,
                              rss_bytes=me.memory_info().rss, errors=shared.errors,
                              detections_dropped=shared.detections_dropped,
                              transit=shared.transit.to_wire() if shared.transit.count
                              else None,
                              payloads_ambiguous=shared.table.ambiguous if shared.table
                              else 0, copies=copies)))
    out.flush()


async def _main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_IPC_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await run(reader, sys.stdout.buffer)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(_main())
    except ImportError:  # pragma: no cover
        asyncio.run(_main())
