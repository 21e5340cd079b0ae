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
per speaker per process, fanned out with aiortc's ``MediaRelay``) and the listener's
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

import msgspec
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.contrib.media import MediaRelay

from loadtest.voice_audio import GridTrack, ToneTrack
from loadtest.voice_lean import OpusLoopTrack, SpeakerLoops

MAX_DIRECT_TRACKS = 200
"""Directed speaker -> listener edges per run: each is two peer connections (ICE, DTLS,
SRTP) in the generators. 200 covers a stage of 3 speakers and 40 listeners (126) and an
all-talk room of 14 (182); a 2-core machine could not drive more honestly."""


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
        self.relay = MediaRelay()
        self.sources: dict[int, GridTrack] = {}
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
        return track

    async def edge(self, speaker: int, timeout_s: float) -> tuple[RTCPeerConnection, float]:
        """One speaker -> listener edge: returns the listener's receiving peer
        connection, set up but not yet connected, and the instant the edge's setup
        began (before the offer is made). Signalling is in memory."""
        started = time.monotonic()
        sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.senders.append(sender)
        sender.addTransceiver(self.relay.subscribe(self.source(speaker), buffered=False),
                              direction="sendonly")
        receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        await asyncio.wait_for(sender.setLocalDescription(await sender.createOffer()),
                               timeout_s)
        await receiver.setRemoteDescription(sender.localDescription)
        await asyncio.wait_for(receiver.setLocalDescription(await receiver.createAnswer()),
                               timeout_s)
        await sender.setRemoteDescription(receiver.localDescription)
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
        for track in self.sources.values():
            track.stop()
        for pc in self.senders:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pc.close(), 10)

