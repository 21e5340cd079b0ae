"""Media worker process: WebRTC peers + Opus forwarding for the rooms placed on it.

Run as ``python -m rooms.media.worker --socket PATH [--capacity-tracks N]``; normally
spawned by :class:`rooms.media.pool.MediaPool` (one per core). Why a process of its
own: forwarding is a steady 50 packets/s per speaker per listener of Python work, which
must not steal the gateway's event loop, and processes are how Python uses more cores.

IPC: unix stream socket and/or TCP (``--listen``), frames of :mod:`protocol.media_ipc`
(4-byte length + msgpack). Every connection starts with the worker's ``WorkerHello``;
when the worker has a key (environment ``HEARTH_MEDIA_KEY``, hex; mandatory with
``--listen``) a peer must pass the HMAC challenge before any request is served. A bad
frame gets ``MediaError`` (``bad_frame``/``frame_too_large``) and the connection
keeps serving: oversized bodies are skipped without being buffered. Requests of one
room run one at a time (a room lock), so a trickled candidate never overtakes its Join;
different rooms proceed concurrently.

Lifetime: the worker dies with its parent: ``PR_SET_PDEATHSIG`` (Linux) sends it
SIGTERM when the parent exits, and a 1 s watchdog compares ``os.getppid()`` with the
parent pid it was given (covers other platforms and the fork/prctl race).

Several gateway processes (and nodes) share one worker: a room lives on ONE worker
so all of its members hear each other. Events are therefore routed, not broadcast
(:meth:`Worker._speaking_target`): ``ParticipantState`` goes only to the connection that
joined that participant (the one gateway process holding it), ``Speaking`` to ONE
connection per room, so the bus carries each ``voice_speaking`` once. When a
connection closes (its gateway process died or shut down), the participants it joined
are taken out and a room nobody holds any more is closed: the same outcome as when
workers died with their gateway process.

Remote ICE candidates: a client chooses the addresses the worker sends STUN
connectivity checks to, so without a check a client could make it probe
127.0.0.1, 169.254.169.254 (cloud metadata) or multicast groups. Every candidate -
trickled (``AddCandidate``) or inside the offer - passes :func:`candidate_allowed`
first; refused ones are dropped silently (counted), as a browser's mDNS ``.local``
candidates routinely are.

Admission control: ``--capacity-tracks`` bounds the outbound streams the worker can
be made to send at once: per listener, its receive slots but at most the number of
others who may be heard (1 on the server mix, 0 when deafened), see
:attr:`ForwardingRoom.outbound_tracks`. A Join whose projected total (its own streams
plus the one a speaker adds at every other listener) would exceed it is refused with
``capacity``. See docs/BENCHMARKS.md for the measured per-core figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import itertools
import logging
import os
import re
import secrets
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import psutil
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from protocol import media_ipc as ipc
from rooms.media import passthrough
from rooms.media.forwarder import ForwardingRoom, RoomAudioSinkFactory
from rooms.media.passthrough import EncodedAudioTrack, HostAddressMode
from rooms.media.room_audio import create_room_sink

log = logging.getLogger("hearth.media.worker")

DEFAULT_CAPACITY_TRACKS = 175
"""Outbound tracks per worker (one core) when not configured. Measured here (docs/
BENCHMARKS.md, Voice): 90-126 forwarded tracks cost 37-50 % of a core, ~0.4 % a track,
so 175 keeps a worker near 70 % of its core with room for bursts."""
DEFAULT_MAX_SLOTS = 9
"""Receive slots per participant (``voice_receive_slots``): a 10-person room hears all."""
JOIN_TIMEOUT_S = 10.0
"""Bound on SDP handling + ICE gathering of one Join."""
TICK_S = 0.1
"""Slot reassignment and speaking-event check period of each room."""
MAX_EVENT_BACKLOG = 1 << 20
"""Events are dropped (counted) for a connection whose unsent output exceeds 1 MiB."""
SLOT_QUEUE = 25
"""Per-slot queue bound in packets (500 ms of audio)."""
AUTH_TIMEOUT_S = 5.0
"""A peer that has not authenticated this long after connecting is dropped."""
MAX_CONNECTIONS = 256
"""Open IPC connections at once (gateway processes of every node need one each);
beyond it new ones are closed at once, so a flood cannot exhaust file descriptors."""
KEY_ENV = "HEARTH_MEDIA_KEY"
"""Environment variable carrying the IPC key (hex), never the command line (which
every local user can read)."""


class MediaFailure(Exception):
    """A request failed in a way the gateway should see (code + message)."""

    def __init__(self, code: ipc.ErrorCodeName, message: str) -> None:
        super().__init__(message)
        self.code: ipc.ErrorCodeName = code
        self.message = message


@dataclass(slots=True, eq=False)
class _Conn:
    """One IPC connection (one gateway process, on this node or another)."""

    writer: asyncio.StreamWriter
    number: int
    authenticated: bool
    closed: bool = False


@dataclass(slots=True)
class _Peer:
    pid: int
    pc: RTCPeerConnection
    tracks: list[EncodedAudioTrack]
    conn: _Conn | None = None
    """The connection that joined this participant: its state events go there only."""


@dataclass(slots=True)
class _Room:
    fwd: ForwardingRoom
    peers: dict[int, _Peer] = field(default_factory=dict)
    """In join order (a re-join moves to the end): the oldest decides event routing."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ticker: asyncio.Task[None] | None = None
    openers: list[_Conn] = field(default_factory=list)
    """Connections that opened the room (the gateway processes using it), in order."""


_REPORTED_STATES: dict[str, Literal["connected", "failed", "closed"]] = {
    "connected": "connected", "failed": "failed", "closed": "closed"}
"""aiortc connection states forwarded to the gateway as ParticipantState."""

_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
"""RFC 6598 carrier-grade NAT space: hosts behind a CGNAT have these as host
candidates, so it is treated like the RFC 1918 ranges."""
_PRIVATE_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"), _SHARED_ADDRESS_SPACE,
    ipaddress.ip_network("fc00::/7"),
)


def candidate_allowed(host: str, *, allow_loopback: bool, allow_private: bool) -> bool:
    """May the worker send connectivity checks to a remote candidate at ``host``?

    Why: the client picks these addresses, so they must not turn the worker into a
    probe of its own host or network. Allowed: globally routable addresses; the
    private ranges (RFC 1918, RFC 6598, fc00::/7) when ``allow_private`` (clients on
    the same LAN or VPN as the worker; a public deployment can refuse them);
    loopback only when the worker itself gathers on loopback (``--ice loopback`` /
    ``with_loopback``: tests, one-machine setups). Refused: link-local (169.254/16 -
    cloud metadata - and fe80::/10), multicast, unspecified, reserved and every other
    special-purpose range, and hostnames: mDNS ``.local`` names would be resolved by
    aioice to an address this check never sees (and a plain hostname is not a valid
    candidate address).
    """
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback:
        return allow_loopback
    if (addr.is_link_local or addr.is_multicast or addr.is_unspecified
            or addr.is_reserved):
        return False
    if any(addr in net for net in _PRIVATE_NETWORKS if net.version == addr.version):
        return allow_private
    return addr.is_global


_CANDIDATE_LINE = re.compile(r"^a=candidate:(.*?)\r?$", re.M)


def candidate_host(text: str) -> str | None:
    """The address field of an SDP candidate (``foundation component transport
    priority address port typ ...``), or None when the line is malformed."""
    bits = text.split()
    return bits[4] if len(bits) >= 8 else None


_MLINE = re.compile(r"^m=(\w+) ", re.M)
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


def check_offer(sdp: str, max_slots: int) -> int:
    """Validate the offer's shape (audio only, mic first, slots after); return slots."""
    sections = re.split(r"^(?=m=)", sdp, flags=re.M)[1:]
    if not sections:
        raise MediaFailure("invalid_offer", "the offer has no media section")
    kinds = [m.group(1) for s in sections if (m := _MLINE.match(s))]
    if len(kinds) != len(sections) or any(k != "audio" for k in kinds):
        raise MediaFailure("invalid_offer", f"only audio m-lines are accepted, got {kinds}")
    directions = []
    for s in sections:
        found = [d for d in _DIRECTIONS if f"a={d}" in s]
        directions.append(found[0] if found else "sendrecv")
    if directions[0] not in ("sendrecv", "sendonly"):
        raise MediaFailure("invalid_offer", "the first m-line (microphone) must send")
    if any(d not in ("recvonly", "sendrecv") for d in directions[1:]):
        raise MediaFailure("invalid_offer", "receive slots must be recvonly")
    slots = len(sections) - 1
    if slots > max_slots:
        raise MediaFailure("invalid_offer", f"{slots} receive slots, at most {max_slots}")
    return slots


class Worker:
    """Rooms, peers and the IPC server of one worker process."""

    def __init__(
        self,
        capacity_tracks: int = DEFAULT_CAPACITY_TRACKS,
        max_slots: int = DEFAULT_MAX_SLOTS,
        sink_factory: RoomAudioSinkFactory | None = None,
        key: bytes | None = None,
        advertise: str | None = None,
        ice: HostAddressMode = "default",
        private_candidates: bool = True,
    ) -> None:
        self.capacity_tracks = capacity_tracks
        self.max_slots = max_slots
        self.sink_factory = sink_factory
        self.key = key
        self.advertise = advertise
        self.allow_loopback_candidates = ice != "default"
        """Loopback remote candidates only when this worker gathers on loopback."""
        self.private_candidates = private_candidates
        self.candidates_dropped = 0
        """Remote candidates refused by :func:`candidate_allowed` (offers + trickle)."""
        self.instance = secrets.token_hex(8)
        """Random per process start: a placement naming another instance is stale."""
        self.rooms: dict[str, _Room] = {}
        self._conns: set[_Conn] = set()
        self._numbers = itertools.count(1)
        self.auth_failures = 0
        self._process = psutil.Process()
        self._process.cpu_percent(None)
        self.events_dropped = 0
        self._closed_dropped = 0
        self._closed_forwarded = 0

    # -- requests -----------------------------------------------------------------

    async def handle(self, req: ipc.WorkerRequest,
                     conn: _Conn | None = None) -> ipc.MediaResult | None:
        """Run one request; raises :class:`MediaFailure` for gateway-visible errors.
        ``conn`` is who asked (events of what it opens/joins are routed to it)."""
        if isinstance(req, ipc.GetStats):
            return self.stats()
        if isinstance(req, ipc.Authenticate):
            raise MediaFailure("bad_frame", "already authenticated")
        if isinstance(req, ipc.OpenRoom):
            return self._open_room(req, conn)
        room = self.rooms.get(req.room_id)
        if room is None:
            raise MediaFailure("unknown_room", f"room {req.room_id!r} is not open here")
        async with room.lock:
            if self.rooms.get(req.room_id) is not room:  # closed while we waited
                raise MediaFailure("unknown_room", f"room {req.room_id!r} is not open here")
            if isinstance(req, ipc.Join):
                return await self._join(room, req, conn)
            if isinstance(req, ipc.AddCandidate):
                await self._add_candidate(room, req)
                return None
            if isinstance(req, ipc.SetParticipant):
                if not room.fwd.has(req.participant_id):
                    raise MediaFailure("unknown_participant", str(req.participant_id))
                room.fwd.set_participant(req.participant_id, req.can_speak, req.deafened)
                return None
            if isinstance(req, ipc.Leave):
                await self._leave(room, req.participant_id)
                return None
            assert isinstance(req, ipc.CloseRoom)
            return await self._close_room(req.room_id, room)

    def _open_room(self, req: ipc.OpenRoom, conn: _Conn | None) -> ipc.RoomOpened:
        """Open a room, or join the openers of an open one.

        An open room without room audio gets it from a later OpenRoom asking for a
        mix or a recording: people join a stage's voice room before its live session
        starts, and the session's OpenRoom (mix threshold, recording path) must not
        be ignored because the room already exists. A room that has room audio keeps
        it (repeated opens from every gateway process are idempotent)."""
        wants_sink = req.mix_listeners_above is not None or req.record_path is not None
        existing = self.rooms.get(req.room_id)
        if existing is not None:
            if conn is not None and conn not in existing.openers:
                existing.openers.append(conn)
            fwd = existing.fwd
            if wants_sink and fwd.sink is None and self.sink_factory is not None:
                fwd.mix_listeners_above = req.mix_listeners_above
                fwd.attach_sink(self.sink_factory, req.record_path)
            return ipc.RoomOpened(room_id=req.room_id, created=False)
        fwd = ForwardingRoom(req.room_id, mix_listeners_above=req.mix_listeners_above)
        if wants_sink and self.sink_factory is not None:
            fwd.attach_sink(self.sink_factory, req.record_path)
        room = _Room(fwd)
        if conn is not None:
            room.openers.append(conn)
        room.ticker = asyncio.create_task(self._tick(req.room_id, room))
        self.rooms[req.room_id] = room
        return ipc.RoomOpened(room_id=req.room_id, created=True)

    @property
    def outbound_tracks(self) -> int:
        return sum(r.fwd.outbound_tracks for r in self.rooms.values())

    async def _join(self, room: _Room, req: ipc.Join, conn: _Conn | None) -> ipc.Answer:
        slots = check_offer(req.offer_sdp, self.max_slots)
        now = self.outbound_tracks
        after = now - room.fwd.outbound_tracks + room.fwd.projected_tracks(
            req.participant_id, slots, req.can_speak, req.deafened)
        if after > self.capacity_tracks:
            raise MediaFailure(
                "capacity",
                f"worker sends up to {now} of {self.capacity_tracks} outbound "
                f"tracks; with this join it would be {after}",
            )
        if req.participant_id in room.peers:
            await self._leave(room, req.participant_id)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        tracks: list[EncodedAudioTrack] = []
        try:
            async with asyncio.timeout(JOIN_TIMEOUT_S):
                offer = self._filter_offer_candidates(req.offer_sdp)
                try:
                    await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
                    transceivers = pc.getTransceivers()
                    for t in transceivers:
                        passthrough.restrict_to_opus(t)
                except (ValueError, KeyError, IndexError) as exc:
                    raise MediaFailure("invalid_offer", str(exc) or type(exc).__name__) from exc
                fwd, pid, loop = room.fwd, req.participant_id, asyncio.get_running_loop()

                def on_packet(payload: bytes, ts: int, seq: int, level: int | None) -> None:
                    fwd.on_packet(pid, payload, ts, level, loop.time())

                passthrough.tap_receiver(transceivers[0].receiver, on_packet)
                for t in transceivers[1:]:
                    track = EncodedAudioTrack(max_queue=SLOT_QUEUE)
                    tracks.append(track)
                    t.sender.replaceTrack(track)
                    t.direction = "sendonly"
                await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            for track in tracks:
                track.stop()
            await pc.close()
            raise
        peer = _Peer(req.participant_id, pc, tracks, conn)
        room.peers[req.participant_id] = peer
        if conn is not None and conn not in room.openers:
            room.openers.append(conn)
        if conn is not None and conn.closed:  # its gateway went away meanwhile
            await self._leave(room, req.participant_id)
            raise MediaFailure("internal", "the requesting connection closed")
        room.fwd.add(req.participant_id, tracks, req.can_speak, req.deafened)
        self._watch_state(room, peer)
        return ipc.Answer(sdp=pc.localDescription.sdp, slots=slots)

    def _watch_state(self, room: _Room, peer: _Peer) -> None:
        room_id = room.fwd.room_id

        @peer.pc.on("connectionstatechange")
        async def changed() -> None:
            state = peer.pc.connectionState
            reported = _REPORTED_STATES.get(state)
            # Only the current peer's changes are news: the "closed" of a peer taken
            # out by Leave or replaced by a re-join must not take the new one out.
            if reported is not None and room.peers.get(peer.pid) is peer:
                self._send(peer.conn, ipc.ParticipantState(
                    room_id=room_id, participant_id=peer.pid, state=reported))
            if state == "failed" and room.peers.get(peer.pid) is peer:
                async with room.lock:
                    if room.peers.get(peer.pid) is peer:
                        await self._leave(room, peer.pid)

    def _candidate_allowed(self, host: str) -> bool:
        allowed = candidate_allowed(host, allow_loopback=self.allow_loopback_candidates,
                                    allow_private=self.private_candidates)
        if not allowed:
            self.candidates_dropped += 1
            log.debug("remote ICE candidate %s refused", host)
        return allowed

    def _filter_offer_candidates(self, sdp: str) -> str:
        """The offer without ``a=candidate`` lines :func:`candidate_allowed` refuses
        (a malformed one is left to aiortc, which rejects the offer)."""

        def keep(match: re.Match[str]) -> bool:
            host = candidate_host(match.group(1))
            return host is None or self._candidate_allowed(host)

        lines = sdp.splitlines(keepends=True)
        return "".join(line for line in lines
                       if not (m := _CANDIDATE_LINE.match(line)) or keep(m))

    async def _add_candidate(self, room: _Room, req: ipc.AddCandidate) -> None:
        peer = room.peers.get(req.participant_id)
        if peer is None:
            raise MediaFailure("unknown_participant", str(req.participant_id))
        text = req.candidate.removeprefix("a=").removeprefix("candidate:")
        if not text:
            return  # end-of-candidates marker: aiortc needs nothing
        try:
            cand = candidate_from_sdp(text)
        except (ValueError, IndexError, AssertionError) as exc:
            raise MediaFailure("invalid_offer", f"bad candidate: {exc!r}") from exc
        if not self._candidate_allowed(cand.ip):
            return
        cand.sdpMid = req.sdp_mid
        cand.sdpMLineIndex = req.sdp_mline_index
        if cand.sdpMid is None and cand.sdpMLineIndex is None:
            cand.sdpMLineIndex = 0
        await peer.pc.addIceCandidate(cand)

    async def _leave(self, room: _Room, pid: int) -> None:
        peer = room.peers.pop(pid, None)
        room.fwd.remove(pid)
        if peer is not None:
            self._closed_dropped += sum(t.dropped for t in peer.tracks)
            for track in peer.tracks:
                track.stop()
            await peer.pc.close()

    async def _close_room(self, room_id: str, room: _Room) -> ipc.RoomClosed:
        self.rooms.pop(room_id, None)
        if room.ticker is not None:
            room.ticker.cancel()
        path, seconds = (None, 0.0)
        if room.fwd.sink is not None:  # the recording ends with the room, not after
            path, seconds = await room.fwd.sink.close()  # every peer has hung up
        for pid in list(room.peers):
            await self._leave(room, pid)
        self._closed_forwarded += room.fwd.counters.forwarded
        self._closed_dropped += room.fwd.counters.muted_dropped
        return ipc.RoomClosed(recording_path=path, recording_s=seconds)

    async def _tick(self, room_id: str, room: _Room) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK_S)
            change = room.fwd.tick(loop.time())
            if change is not None:
                self._send(self._speaking_target(room),
                           ipc.Speaking(room_id=room_id, participant_ids=change))

    @staticmethod
    def _speaking_target(room: _Room) -> _Conn | None:
        """The ONE connection that gets a room's ``Speaking`` events.

        Why one: every gateway process connected to this worker would otherwise
        publish the same ``voice_speaking`` on the bus, and every viewer would get it
        once per process. Why this one: the connection that joined the room's oldest
        current participant belongs to a gateway process holding a participant of the
        room, so it knows the room's community and publishes; if that connection is
        gone, the next participant's; with nobody left, the first opener still open.
        The choice only moves when that participant leaves or its gateway goes away.
        """
        for peer in room.peers.values():
            if peer.conn is not None and not peer.conn.closed:
                return peer.conn
        for conn in room.openers:
            if not conn.closed:
                return conn
        return None

    def stats(self) -> ipc.WorkerStats:
        forwarded = self._closed_forwarded
        dropped = self._closed_dropped
        participants = 0
        for room in self.rooms.values():
            forwarded += room.fwd.counters.forwarded
            dropped += room.fwd.counters.muted_dropped
            participants += len(room.peers)
            for peer in room.peers.values():
                dropped += sum(t.dropped for t in peer.tracks)
        return ipc.WorkerStats(
            rooms=len(self.rooms),
            participants=participants,
            outbound_tracks=self.outbound_tracks,
            offered_slots=sum(r.fwd.offered_slots for r in self.rooms.values()),
            capacity_tracks=self.capacity_tracks,
            cpu_percent=self._process.cpu_percent(None),
            packets_forwarded=forwarded,
            packets_dropped=dropped,
        )

    # -- IPC ----------------------------------------------------------------------

    def _send(self, conn: _Conn | None, event: ipc.WorkerEvent) -> None:
        """Send an event to one connection; never waits on a slow one (dropped and
        counted beyond :data:`MAX_EVENT_BACKLOG`)."""
        if conn is None or conn.closed or conn.writer.is_closing():
            self.events_dropped += 1
            return
        if conn.writer.transport.get_write_buffer_size() > MAX_EVENT_BACKLOG:
            self.events_dropped += 1
            return
        conn.writer.write(ipc.encode_frame(event))

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Hello, authentication if keyed, then frames until EOF; each request runs
        as its own task. On EOF the connection's participants are taken out."""
        try:
            await self._serve_connection(reader, writer)
        except asyncio.CancelledError:
            # Shutdown cancels connection handlers; asyncio's stream callback would log
            # the cancellation as an error. Rooms are closed by Worker.close().
            writer.close()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if len(self._conns) >= MAX_CONNECTIONS:
            log.warning("IPC connection refused: %d open", len(self._conns))
            writer.close()
            return
        conn = _Conn(writer, next(self._numbers), authenticated=self.key is None)
        self._conns.add(conn)
        tasks: set[asyncio.Task[None]] = set()
        try:
            nonce = secrets.token_bytes(ipc.NONCE_BYTES)
            writer.write(ipc.encode_frame(ipc.WorkerHello(
                instance=self.instance, advertise=self.advertise, nonce=nonce,
                auth_required=self.key is not None)))
            if not conn.authenticated:
                try:
                    async with asyncio.timeout(AUTH_TIMEOUT_S):
                        if not await self._authenticate(reader, writer, nonce):
                            self.auth_failures += 1
                            return
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    self.auth_failures += 1
                    return
                conn.authenticated = True
            while True:
                try:
                    header = await reader.readexactly(ipc.LENGTH_PREFIX.size)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                (length,) = ipc.LENGTH_PREFIX.unpack(header)
                if length > ipc.MAX_FRAME_BYTES:
                    if not await _skip(reader, length):
                        return
                    self._reply(writer, ipc.MediaError(
                        id=None, code="frame_too_large",
                        message=f"{length} bytes > {ipc.MAX_FRAME_BYTES}"))
                    continue
                try:
                    body = await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                try:
                    req = ipc.decode_request(body)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    self._reply(writer, ipc.MediaError(
                        id=ipc.salvage_request_id(body), code="bad_frame", message=str(exc)))
                    continue
                task = asyncio.create_task(self._run(conn, req))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            conn.closed = True
            self._conns.discard(conn)
            writer.close()
            if conn.authenticated:
                await self._connection_gone(conn)

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            nonce: bytes) -> bool:
        """The HMAC challenge (see :mod:`protocol.media_ipc`); False closes the link.
        Nothing but one small ``Authenticate`` frame is read from an unproven peer."""
        assert self.key is not None
        header = await reader.readexactly(ipc.LENGTH_PREFIX.size)
        (length,) = ipc.LENGTH_PREFIX.unpack(header)
        if length > ipc.MAX_PREAUTH_FRAME_BYTES:
            self._reply(writer, ipc.MediaError(id=None, code="unauthorized",
                                               message="authenticate first"))
            return False
        body = await reader.readexactly(length)
        try:
            req = ipc.decode_request(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            req = None
        if not isinstance(req, ipc.Authenticate):
            self._reply(writer, ipc.MediaError(id=ipc.salvage_request_id(body),
                                               code="unauthorized",
                                               message="authenticate first"))
            return False
        expected = ipc.client_mac(self.key, nonce, req.client_nonce)
        if not hmac.compare_digest(expected, req.mac):
            log.warning("IPC peer %s failed authentication",
                        writer.get_extra_info("peername"))
            self._reply(writer, ipc.MediaError(id=req.id, code="unauthorized",
                                               message="bad key"))
            return False
        self._reply(writer, ipc.MediaOk(id=req.id, result=ipc.Authenticated(
            mac=ipc.worker_mac(self.key, nonce, req.client_nonce))))
        return True

    async def _connection_gone(self, conn: _Conn) -> None:
        """A gateway process went away: its participants leave, and rooms nobody
        holds any more are closed (recordings finalized), as if their worker had died
        with that process. Rooms other connections use stay untouched."""
        for room_id, room in list(self.rooms.items()):
            async with room.lock:
                if self.rooms.get(room_id) is not room:
                    continue
                for pid, peer in list(room.peers.items()):
                    if peer.conn is conn:
                        await self._leave(room, pid)
                room.openers = [c for c in room.openers if c is not conn]
                if not room.peers and not any(not c.closed for c in room.openers):
                    await self._close_room(room_id, room)

    async def _run(self, conn: _Conn, req: ipc.WorkerRequest) -> None:
        writer = conn.writer
        try:
            result = await self.handle(req, conn)
        except MediaFailure as exc:
            self._reply(writer, ipc.MediaError(id=req.id, code=exc.code, message=exc.message))
            return
        except TimeoutError:
            self._reply(writer, ipc.MediaError(id=req.id, code="timeout",
                                               message="ICE gathering/SDP took too long"))
            return
        except Exception as exc:
            log.exception("request %s failed", type(req).__name__)
            self._reply(writer, ipc.MediaError(id=req.id, code="internal", message=repr(exc)))
            return
        self._reply(writer, ipc.MediaOk(id=req.id, result=result))

    def _reply(self, writer: asyncio.StreamWriter, frame: ipc.WorkerFrame) -> None:
        if writer.is_closing():
            return
        try:
            data = ipc.encode_frame(frame)
        except ipc.FrameTooLarge as exc:
            rid = frame.id if isinstance(frame, ipc.MediaOk | ipc.MediaError) else None
            data = ipc.encode_frame(ipc.MediaError(id=rid, code="internal", message=str(exc)))
        writer.write(data)

    async def close(self) -> None:
        """Close every room (peers, tasks, recordings)."""
        for room_id, room in list(self.rooms.items()):
            async with room.lock:
                await self._close_room(room_id, room)


async def _skip(reader: asyncio.StreamReader, length: int) -> bool:
    """Discard ``length`` bytes in 64 KiB pieces; False if the stream ended first."""
    while length:
        chunk = await reader.read(min(length, 65536))
        if not chunk:
            return False
        length -= len(chunk)
    return True


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM us when the parent exits (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.warning("parent %d is gone; exiting", parent_pid)
            stop.set()
            return
        await asyncio.sleep(1.0)


async def run(args: argparse.Namespace) -> None:
    """Serve until SIGTERM/SIGINT or the parent's death."""
    passthrough.check_internals()
    passthrough.set_host_address_mode(args.ice)
    key = load_key()
    if args.listen and key is None:
        raise SystemExit(f"--listen needs the IPC key in {KEY_ENV}: a TCP port must "
                         "never serve an unauthenticated peer")
    worker = Worker(args.capacity_tracks, args.max_slots, create_room_sink, key=key,
                    ice=args.ice, private_candidates=args.private_candidates)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    servers: list[asyncio.Server] = []
    if args.listen:
        host, port = ipc.split_host_port(args.listen)
        tcp = await asyncio.start_server(worker.serve_connection, host, port)
        servers.append(tcp)
        bound = tcp.sockets[0].getsockname()[1]
        advertise_host = args.advertise or host
        if advertise_host in ("0.0.0.0", "::", ""):
            raise SystemExit("--listen on a wildcard address needs --advertise (the "
                             "address other nodes reach this worker at)")
        worker.advertise = ipc.join_host_port(advertise_host, bound)
    if args.socket:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.socket)
        # Created under a 0o077 umask, so no other user can connect before the chmod.
        old_umask = os.umask(0o077)
        try:
            servers.append(await asyncio.start_unix_server(worker.serve_connection,
                                                           path=args.socket))
        finally:
            os.umask(old_umask)
        os.chmod(args.socket, 0o600)
    watchers: list[asyncio.Task[Any]] = []
    if args.parent_pid:
        watchers.append(asyncio.create_task(_watch_parent(args.parent_pid, stop)))
    log.info("media worker %s serving on %s%s (capacity %d tracks)", worker.instance,
             args.socket or "", f" tcp {worker.advertise}" if args.listen else "",
             args.capacity_tracks)
    try:
        await stop.wait()
    finally:
        for w in watchers:
            w.cancel()
        for server in servers:
            server.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await worker.close()
        if args.socket:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.socket)


def load_key() -> bytes | None:
    """The IPC key from :data:`KEY_ENV` (hex), removed from the environment so that
    nothing this process starts inherits it."""
    raw = os.environ.pop(KEY_ENV, "")
    if not raw:
        return None
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        raise SystemExit(f"{KEY_ENV} is not hex") from None
    if len(key) < 16:
        raise SystemExit(f"{KEY_ENV} is shorter than 16 bytes")
    return key


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rooms.media.worker", description=__doc__)
    p.add_argument("--socket", help="unix socket path to listen on")
    p.add_argument("--listen", help="also serve IPC on TCP host:port (port 0: any free "
                   f"port); needs the key in {KEY_ENV}")
    p.add_argument("--advertise", help="host other nodes use to reach --listen "
                   "(default: its host); the bound port is appended")
    p.add_argument("--capacity-tracks", type=int, default=DEFAULT_CAPACITY_TRACKS)
    p.add_argument("--max-slots", type=int, default=DEFAULT_MAX_SLOTS)
    p.add_argument("--parent-pid", type=int, default=0,
                   help="exit when this process is no longer our parent")
    p.add_argument("--ice", choices=["default", "loopback", "with_loopback"],
                   default="default", help="host candidate addresses (see passthrough)")
    p.add_argument("--no-private-candidates", dest="private_candidates",
                   action="store_false", help="refuse remote ICE candidates in private "
                   "ranges (RFC 1918, 100.64/10, fc00::/7): public deployments whose "
                   "clients never share a network with the worker")
    args = p.parse_args(argv)
    if not args.socket and not args.listen:
        p.error("give --socket, --listen or both")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s media %(message)s")
    for noisy in ("aioice", "aiortc"):  # per-candidate-pair INFO lines
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.parent_pid:
        _die_with_parent(args.parent_pid)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-Linux platforms
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))


if __name__ == "__main__":
    main()
