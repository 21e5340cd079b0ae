"""``--peer direct`` of the ``voice`` scenario: the same participants with no server.

Why: an SFU can only add to what the client pipeline costs (capture pacing, Opus,
SRTP, the jitter buffer, decoding). This peer measures that floor with the same
generators, the same speakers and listeners and the same burst method, but each
speaker sends to each listener it would hear over a peer connection of its own (a
full mesh of directed edges, on the same loopback ICE mode as the harness's
participants: host candidates, no STUN/TURN).

How, kept simple and bounded: a generator process hosts listeners (the same
participants, grouped into processes as for Hearth). For each listener it hosts it
builds, *inside the process*, every incoming edge: a sending peer connection fed by a
local copy of the speaker's microphone (one :class:`~loadtest.voice_audio.GridTrack`
per speaker per process, fanned out by :class:`FanOut`) and the listener's
receiving peer connection; offer and answer are handed over in memory (no signalling
server). Every copy of a speaker plays the same grid (same epoch, same burst
schedule), and each process reports its copies' burst instants, so a listener's
mouth-to-ear is timed against the copy that actually fed it. The sending side's CPU
(a mesh client's encoders and SRTP) is in the generator's figures, as it would be on a
real client.

Bounds: ``MAX_DIRECT_TRACKS`` edges per run (the CLI refuses more); each edge has the
participant's join timeout; edges are set up ``join_concurrency`` at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

import msgspec
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from loadtest.voice_audio import FRAME_S, MAX_BACKLOG_S, GridTrack, ToneTrack
from loadtest.voice_lean import OpusLoopTrack, SpeakerLoops

MAX_DIRECT_TRACKS = 200
"""Directed speaker -> listener edges per run: each is two peer connections (ICE, DTLS,
SRTP) in the generators. 200 covers a stage of 3 speakers and 40 listeners (126) and an
all-talk room of 14 (182); a 2-core machine could not drive more honestly."""


FANOUT_BACKLOG = max(1, round(MAX_BACKLOG_S / FRAME_S))
"""Frames a sender may fall behind its microphone copy before the oldest are dropped
(the microphone's own overrun bound): memory stays bounded if a sender stalls."""


class FanOut:
    """One microphone copy read once and handed to each of its senders, every frame to
    every sender (unlike a latest-frame relay, a sender a frame behind loses nothing),
    each through a queue of at most ``FANOUT_BACKLOG`` frames."""

    def __init__(self, source: GridTrack) -> None:
        self.source = source
        self.outlets: list[FanOutTrack] = []
        self._task: asyncio.Task[None] | None = None

    def subscribe(self) -> FanOutTrack:
        outlet = FanOutTrack()
        self.outlets.append(outlet)
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return outlet

    async def _run(self) -> None:
        while True:
            try:
                frame = await self.source.recv()
            except MediaStreamError:
                frame = None
            for outlet in self.outlets:
                outlet.put(frame)
            if frame is None:
                return

    def stop(self) -> None:
        self.source.stop()
        if self._task is not None:
            self._task.cancel()
        for outlet in self.outlets:
            outlet.put(None)


class FanOutTrack(MediaStreamTrack):
    """A sender's view of a :class:`FanOut` (the frames are shared, not copied: aiortc
    encodes or packs them without changing them)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue: deque[Any] = deque(maxlen=FANOUT_BACKLOG)
        self.ready = asyncio.Event()

    def put(self, frame: Any) -> None:
        self.queue.append(frame)
        self.ready.set()

    async def recv(self) -> Any:
        while not self.queue:
            if self.readyState != "live":
                raise MediaStreamError
            self.ready.clear()
            await self.ready.wait()
        frame = self.queue.popleft()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame


class SourceCopy(msgspec.Struct, array_like=True):
    """One process's copy of a speaker's microphone: its bursts (index, monotonic t)
    and pacing figures, so mouth-to-ear is matched per copy."""

    speaker: int
    bursts: list[tuple[int, float]]
    frames: int
    late_frames: int
    dropped_frames: int
    max_lag_s: float


def heard_speakers(speaker: int, speakers: int, slots: int) -> list[int]:
    """Speakers a participant hears directly: every other speaker, the first ``slots``
    of them (what its offer's receive slots would carry through the SFU)."""
    return [s for s in range(speakers) if s != speaker][:slots]


def direct_tracks(participants: int, speakers: int, slots: int) -> int:
    """Edges of one room's mesh (each participant hears up to ``slots`` speakers)."""
    return sum(len(heard_speakers(i if i < speakers else -1, speakers, slots))
               for i in range(participants))


async def wait_connected(pc: RTCPeerConnection, timeout_s: float) -> bool:
    """Until ``pc`` is connected (True), failed/closed or the timeout (False)."""
    if pc.connectionState == "connected":
        return True
    done = asyncio.Event()

    @pc.on("connectionstatechange")
    def _state() -> None:
        if pc.connectionState in ("connected", "failed", "closed"):
            done.set()

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout_s)
    return pc.connectionState == "connected"


class Mesh:
    """The process's side of the mesh: the speakers' microphone copies, the relay that
    fans each out to its edges, and the sending peer connections."""

    def __init__(self, speakers: int, epoch: float, lean_speakers: bool,
                 loops: list[SpeakerLoops] | None) -> None:
        self.speakers = speakers
        self.epoch = epoch
        self.lean_speakers = lean_speakers
        self.loops = loops or []
        self.sources: dict[int, GridTrack] = {}
        self.fanouts: dict[int, FanOut] = {}
        self.senders: list[RTCPeerConnection] = []

    def source(self, speaker: int) -> GridTrack:
        """This process's copy of ``speaker``'s microphone (made once)."""
        track = self.sources.get(speaker)
        if track is None:
            if self.lean_speakers:
                track = OpusLoopTrack(speaker, self.speakers, self.epoch, self.loops[speaker])
            else:
                track = ToneTrack(speaker, self.speakers, self.epoch, seed=1000 + speaker)
            self.sources[speaker] = track
            self.fanouts[speaker] = FanOut(track)
        return track

    async def edge(self, speaker: int, timeout_s: float) -> tuple[RTCPeerConnection, float]:
        """One speaker -> listener edge: returns the listener's receiving peer
        connection, set up but not yet connected, and the instant the edge's setup
        began (before the offer is made). Signalling is in memory."""
        started = time.monotonic()
        sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.senders.append(sender)
        self.source(speaker)
        sender.addTransceiver(self.fanouts[speaker].subscribe(), direction="sendonly")
        receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            await asyncio.wait_for(sender.setLocalDescription(await sender.createOffer()),
                                   timeout_s)
            await receiver.setRemoteDescription(sender.localDescription)
            await asyncio.wait_for(receiver.setLocalDescription(
                await receiver.createAnswer()), timeout_s)
            await sender.setRemoteDescription(receiver.localDescription)
        except BaseException:  # the caller never sees this receiver: close it here
            with contextlib.suppress(Exception):
                await asyncio.wait_for(receiver.close(), 10)
            raise
        return receiver, started

    def copies(self) -> list[SourceCopy]:
        return [SourceCopy(speaker=s, bursts=[(b.index, b.t) for b in t.stats.bursts],
                           frames=t.stats.frames, late_frames=t.stats.late_frames,
                           dropped_frames=t.stats.dropped_frames,
                           max_lag_s=round(t.stats.max_lag_s, 4))
                for s, t in sorted(self.sources.items())]

    def schedule(self, start: float, stop: float) -> None:
        for track in self.sources.values():
            track.schedule(start, stop)

    async def close(self) -> None:
        for fanout in self.fanouts.values():
            fanout.stop()
        for pc in self.senders:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pc.close(), 10)

