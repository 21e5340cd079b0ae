"""What a ``hearth loadtest voice`` run is asked for and what it is made of: the options
and their bounds, the rooms and the generator processes (:mod:`loadtest.voice` runs it,
:mod:`loadtest.voice_report` reports it)."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field

from loadtest.target import (
    Target,
)
from loadtest.voice_audio import (
    BURST_PERIOD_S,
    MAX_SPEAKERS,
)
from loadtest.voice_peer import (
    VoiceFinal,
    VoiceJoinedReport,
    VoiceSpec,
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

