"""A voice-room participant in Python: joins a Hearth voice (or stage) channel over WebRTC
with aiortc, speaks a tone or a WAV file, and measures what it hears.

It speaks the same gateway protocol as the web page (web/voice.js) and nothing else: log
in, identify, ``voice_join`` with a client-made offer of ONE ``sendrecv`` audio
transceiver (its microphone) followed by N ``recvonly`` transceivers (the receive slots
the server forwards speakers into), apply the answer, ``voice_set_state`` to mute, and
``voice_leave``. So it is both a test peer (tests/test_browser_voice.py: a browser and
this bot hear each other) and a tool to check a deployment by ear and by numbers::

    python -m bots.voice_bot --url ws://127.0.0.1:8080/gateway \\
        --username alice --password '...' --channel lounge --tone 1000 --duration 30

Every second it prints who is speaking (``voice_speaking``) and, per receive slot, the
dominant frequency and the level of what arrives. ``--record DIR`` also writes each slot
as a WAV file (48 kHz mono s16) for listening afterwards.

Measurement is deliberately simple and robust: decoded audio of each slot is kept for the
last ``history_s`` seconds (bounded), and :meth:`Listener.tone_rms` estimates the RMS of
the signal within a few hertz of a frequency from a Hann-windowed FFT. A pure tone of
amplitude A reads A/√2 there; silence (or another speaker's different tone) reads ~0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import logging
import math
import signal
import time
import wave
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import av
import numpy as np
import numpy.typing as npt
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from bots.client import HearthClient, HearthError
from bots.rest import HearthRest
from protocol.frames import Event
from protocol.voice import (
    VoiceDisconnected,
    VoiceJoin,
    VoiceJoined,
    VoiceLeave,
    VoiceMoveRequested,
    VoiceParticipant,
    VoiceSetState,
    VoiceSpeaking,
    VoiceStateUpdated,
)

log = logging.getLogger("hearth.voice_bot")

RATE = 48_000
"""Sample rate of everything the bot sends and measures (Opus runs at 48 kHz)."""
FRAME_SAMPLES = 960
"""20 ms at 48 kHz: the Opus frame size WebRTC uses."""
MAX_SOURCE_S = 600
"""Longest WAV the bot loads (10 minutes, ~58 MB of s16 in memory); longer is cut."""
Samples = npt.NDArray[np.float32]


# ------------------------------------------------------------------------------ sources


def tone(freq_hz: float, seconds: float, amplitude: float = 0.3) -> npt.NDArray[np.int16]:
    """``seconds`` of a sine at ``freq_hz`` as s16 mono 48 kHz. Used for the bot's voice and
    for the browser's fake microphone file in the tests (a whole number of periods per
    second, so looping it has no click that would smear the spectrum)."""
    t = np.arange(int(seconds * RATE), dtype=np.float64) / RATE
    return (np.sin(2 * math.pi * freq_hz * t) * amplitude * 32767).astype(np.int16)


def write_wav(path: Path, samples: npt.NDArray[np.int16]) -> None:
    """Write s16 mono 48 kHz samples as a WAV file (what Chromium's fake capture reads)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(samples.tobytes())


def load_audio(path: Path) -> npt.NDArray[np.int16]:
    """Decode any audio file av understands to s16 mono 48 kHz (at most
    :data:`MAX_SOURCE_S`), so the bot can speak a recording instead of a tone."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    chunks: list[npt.NDArray[np.int16]] = []
    total = 0
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunk = out.to_ndarray().reshape(-1).astype(np.int16)
                chunks.append(chunk)
                total += len(chunk)
            if total >= MAX_SOURCE_S * RATE:
                break
    if not chunks:
        raise ValueError(f"{path}: no audio")
    return np.concatenate(chunks)[: MAX_SOURCE_S * RATE]


class LoopTrack(MediaStreamTrack):
    """The bot's microphone: loops ``samples`` in 20 ms frames paced by the wall clock
    (aiortc's sender pulls as fast as ``recv`` returns, so pacing is ours to do).

    ``muted`` sends digital silence instead, like a browser's disabled track: the
    server also drops a self-muted participant's packets, but a bot must not rely on
    that to be quiet."""

    kind = "audio"

    def __init__(self, samples: npt.NDArray[np.int16]) -> None:
        super().__init__()
        if len(samples) < FRAME_SAMPLES:
            raise ValueError("source shorter than one 20 ms frame")
        self.samples = samples
        self.muted = False
        self._pos = 0
        self._pts = 0
        self._start: float | None = None
        self._time_base = fractions.Fraction(1, RATE)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            due = self._start + self._pts / RATE
            if due > now:
                await asyncio.sleep(due - now)
        end = self._pos + FRAME_SAMPLES
        if end <= len(self.samples):
            chunk = self.samples[self._pos:end]
        else:  # wrap around
            chunk = np.concatenate([self.samples[self._pos:],
                                    self.samples[: end - len(self.samples)]])
        self._pos = end % len(self.samples)
        if self.muted:
            chunk = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += FRAME_SAMPLES
        return frame


# ---------------------------------------------------------------------------- listening


def band_rms(samples: Samples, freq_hz: float, width_hz: float = 15.0) -> float:
    """RMS of ``samples`` (floats in -1..1) within ``width_hz`` of ``freq_hz``, from a
    Hann-windowed FFT scaled so a pure tone of amplitude A reads A/√2 (Parseval over the
    window's energy). 0 for fewer than 1,024 samples: too short to say anything."""
    n = len(samples)
    if n < 1024:
        return 0.0
    window = np.hanning(n)
    spectrum = np.fft.rfft(samples * window)
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    band = np.abs(freqs - freq_hz) <= width_hz
    energy = float(np.sum(np.abs(spectrum[band]) ** 2))
    return math.sqrt(2 * energy / (n * float(np.sum(window ** 2))))


def dominant_frequency(samples: Samples, floor_hz: float = 50.0) -> float | None:
    """The strongest frequency above ``floor_hz`` (None for silence or too little
    audio); resolution 1/duration Hz."""
    n = len(samples)
    if n < 1024 or float(np.max(np.abs(samples))) < 1e-4:
        return None
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(n)))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[freqs < floor_hz] = 0
    return float(freqs[int(np.argmax(spectrum))])


@dataclass
class Listener:
    """Decoded audio of one receive slot: the last ``history_s`` seconds with their
    arrival times (bounded), and counters. A slot carries whichever speaker the server
    forwards into it, so measurements are per slot, and "did I hear X" asks every slot."""

    index: int
    history_s: float = 10.0
    frames: int = 0
    chunks: deque[tuple[float, Samples]] = field(default_factory=deque)
    recording: list[npt.NDArray[np.int16]] | None = None

    def add(self, frame: av.AudioFrame) -> None:
        """Keep one decoded frame (any layout: averaged to mono; any rate: 48 kHz is what
        aiortc's Opus decoder gives)."""
        pcm = frame.to_ndarray()
        channels = len(frame.layout.channels)
        if pcm.dtype == np.int16:
            mono = pcm.reshape(-1, channels).astype(np.float32).mean(axis=1) / 32768
        else:  # planar float formats
            mono = pcm.astype(np.float32).reshape(channels, -1).mean(axis=0)
        now = time.monotonic()
        self.chunks.append((now, mono.astype(np.float32)))
        self.frames += 1
        while self.chunks and self.chunks[0][0] < now - self.history_s:
            self.chunks.popleft()
        if self.recording is not None:
            self.recording.append((np.clip(mono, -1, 1) * 32767).astype(np.int16))

    def last(self, seconds: float) -> Samples:
        """What arrived in the last ``seconds`` (concatenated; may be shorter)."""
        since = time.monotonic() - seconds
        parts = [c for t, c in self.chunks if t >= since]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


# ----------------------------------------------------------------------------- the bot


def ice_servers(urls: Sequence[str]) -> RTCConfiguration:
    """aiortc configuration: no ICE servers on a loopback test, STUN/TURN otherwise."""
    return RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in urls])


class VoiceBot:
    """One participant in one voice room at a time, on an identified :class:`HearthClient`.

    The owner of the client feeds its events to :meth:`handle` (a client has one event
    stream, and a test wants to look at the same events), or calls :meth:`run_events` to
    let the bot consume them. The bot re-joins on ``voice_move_request`` and closes its
    connection on ``voice_disconnected``, as the web page does."""

    def __init__(self, client: HearthClient, source: npt.NDArray[np.int16], *,
                 slots: int | None = None, ice: Sequence[str] = (),
                 history_s: float = 10.0, record: bool = False) -> None:
        self.client = client
        self.source = source
        limit = client.limits.voice_receive_slots
        self.slots = limit if slots is None else max(0, min(slots, limit))
        self.ice = list(ice)
        self.history_s = history_s
        self.record = record
        self.pc: RTCPeerConnection | None = None
        self.mic: LoopTrack | None = None
        self.channel_id: int | None = None
        self.listeners: list[Listener] = []
        self.participants: dict[int, VoiceParticipant] = {}
        self.speaking: set[int] = set()
        self.self_mute = False
        self.self_deaf = False
        self.disconnected: VoiceDisconnected | None = None
        self._readers: list[asyncio.Task[None]] = []

    @property
    def me(self) -> int:
        return self.client.user.id

    async def join(self, channel_id: int) -> VoiceJoined:
        """Offer 1 sendrecv + ``slots`` recvonly audio transceivers, send ``voice_join``
        and apply the answer. aiortc gathers every candidate in ``setLocalDescription``,
        so the offer is complete and nothing needs trickling."""
        await self.close_connection()
        pc = RTCPeerConnection(ice_servers(self.ice))
        self.pc = pc
        self.mic = LoopTrack(self.source)
        self.mic.muted = self.self_mute
        pc.addTransceiver(self.mic, direction="sendrecv")
        for _ in range(self.slots):
            pc.addTransceiver("audio", direction="recvonly")
        self.listeners = [Listener(i, self.history_s, recording=[] if self.record else None)
                          for i in range(self.slots + 1)]

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            index = next((i for i, t in enumerate(pc.getTransceivers())
                          if t.receiver.track is track), len(self._readers))
            listener = self.listeners[min(index, len(self.listeners) - 1)]
            self._readers.append(asyncio.create_task(self._read(track, listener)))

        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription
        result = await self.client.request(VoiceJoin(
            id=0, channel_id=channel_id, sdp=offer.sdp, self_mute=self.self_mute,
            self_deaf=self.self_deaf))
        if not isinstance(result, VoiceJoined):
            raise HearthError("internal", f"voice_join answered {type(result).__name__}")
        self.channel_id = channel_id
        self.disconnected = None
        self.participants = {p.user_id: p for p in result.participants}
        await pc.setRemoteDescription(RTCSessionDescription(sdp=result.sdp, type="answer"))
        return result

    async def _read(self, track: MediaStreamTrack, listener: Listener) -> None:
        """Decode a remote track into its listener until it ends."""
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, av.AudioFrame):
                    listener.add(frame)

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Until ICE+DTLS are up (``connectionState`` ``connected``)."""
        async with asyncio.timeout(timeout):
            while self.pc is None or self.pc.connectionState != "connected":
                if self.pc is not None and self.pc.connectionState in ("failed", "closed"):
                    raise ConnectionError(f"peer connection {self.pc.connectionState}")
                await asyncio.sleep(0.05)

    async def set_state(self, *, mute: bool | None = None, deaf: bool | None = None) -> None:
        """Mute (silence the track AND tell the server) and/or deafen."""
        if mute is not None:
            self.self_mute = mute
            if self.mic is not None:
                self.mic.muted = mute
        if deaf is not None:
            self.self_deaf = deaf
        if self.channel_id is not None:
            await self.client.request(VoiceSetState(
                id=0, channel_id=self.channel_id, self_mute=self.self_mute,
                self_deaf=self.self_deaf))

    async def leave(self) -> None:
        """``voice_leave`` and close the connection."""
        channel_id, self.channel_id = self.channel_id, None
        if channel_id is not None:
            with contextlib.suppress(HearthError):
                await self.client.request(VoiceLeave(id=0, channel_id=channel_id))
        await self.close_connection()

    async def close_connection(self) -> None:
        pc, self.pc = self.pc, None
        readers, self._readers = self._readers, []
        if pc is not None:
            await pc.close()
        for task in readers:
            task.cancel()
        for task in readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ----------------------------------------------------------------------- events

    async def handle(self, event: Event) -> None:
        """Keep the room's state from one gateway event; act on moves and disconnects."""
        if isinstance(event, VoiceStateUpdated) and event.channel_id == self.channel_id:
            if event.joined:
                self.participants[event.user_id] = VoiceParticipant(
                    user_id=event.user_id, self_mute=event.self_mute,
                    self_deaf=event.self_deaf, server_mute=event.server_mute,
                    role=event.role, speaking=event.user_id in self.speaking)
            else:
                self.participants.pop(event.user_id, None)
        elif isinstance(event, VoiceSpeaking) and event.channel_id == self.channel_id:
            self.speaking = set(event.user_ids)
        elif isinstance(event, VoiceDisconnected) and event.channel_id == self.channel_id:
            self.disconnected = event
            self.channel_id = None
            await self.close_connection()
        elif isinstance(event, VoiceMoveRequested):
            log.info("moved from channel %d to %d", event.channel_id, event.to_channel_id)
            await self.join(event.to_channel_id)

    async def run_events(self) -> None:
        """Consume the client's events until it closes."""
        async for event in self.client:
            await self.handle(event)

    # ------------------------------------------------------------------ measurement

    def heard_rms(self, freq_hz: float, seconds: float = 1.0) -> float:
        """The loudest level of ``freq_hz`` over every receive slot in the last
        ``seconds`` (the mic transceiver's own receive side included: it carries
        nothing, so it reads 0)."""
        return max((band_rms(listener.last(seconds), freq_hz) for listener in self.listeners),
                   default=0.0)

    def report(self, seconds: float = 1.0) -> list[tuple[int, float | None, float]]:
        """Per slot that got audio: (slot, dominant Hz, RMS) over the last ``seconds``."""
        rows = []
        for listener in self.listeners:
            pcm = listener.last(seconds)
            if len(pcm):
                rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
                rows.append((listener.index, dominant_frequency(pcm), rms))
        return rows

    def write_recordings(self, directory: Path) -> list[Path]:
        """Each slot's audio so far as ``slot-N.wav`` (only with ``record=True``)."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for listener in self.listeners:
            if listener.recording:
                path = directory / f"slot-{listener.index}.wav"
                write_wav(path, np.concatenate(listener.recording))
                paths.append(path)
        return paths


# ---------------------------------------------------------------------------------- CLI


def http_base(gateway: str) -> str:
    """The REST root for a gateway URL: ws://h:p/gateway -> http://h:p."""
    parts = urlsplit(gateway)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def gateway_url(url: str) -> str:
    """What a user may pass as ``--url``: the gateway (ws://h:p/gateway) or the server's
    address as ``hearth serve`` prints it (http://h:p/) -> ws://h:p/gateway."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        scheme = "ws" if parts.scheme == "http" else "wss"
        return urlunsplit((scheme, parts.netloc, "/gateway", "", ""))
    return url


def find_channel(client: HearthClient, wanted: str) -> int:
    """A voice or stage channel by id or by name."""
    for channel in client.channels():
        if str(channel.kind) in ("voice", "stage") and wanted in (str(channel.id),
                                                                  channel.name):
            return channel.id
    raise SystemExit(f"no voice or stage channel {wanted!r} visible to this account")


async def amain(args: argparse.Namespace) -> None:
    args.url = gateway_url(args.url)
    token = args.token
    if token is None:
        async with HearthRest(http_base(args.url)) as rest:
            token = (await rest.login(args.username, args.password)).access_token
    source = load_audio(Path(args.wav)) if args.wav else tone(args.tone, 1.0)
    client = HearthClient(args.url, token, client_name="hearth-voice-bot/1")
    await client.connect()
    bot = VoiceBot(client, source, slots=args.slots, ice=args.ice,
                   record=args.record is not None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    events = asyncio.create_task(bot.run_events())
    try:
        joined = await bot.join(find_channel(client, args.channel))
        log.info("joined channel %d with %d participants", joined.channel_id,
                 len(joined.participants))
        await bot.wait_connected()
        if args.mute:
            await bot.set_state(mute=True)
        deadline = loop.time() + args.duration if args.duration else None
        while not stop.is_set() and (deadline is None or loop.time() < deadline):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            slots = ", ".join(f"slot {i}: {f or 0:.0f} Hz rms {r:.3f}"
                              for i, f, r in bot.report())
            print(f"speaking {sorted(bot.speaking)} | {slots or 'nothing heard'}", flush=True)
    finally:
        await bot.leave()
        if args.record is not None:
            for path in bot.write_recordings(Path(args.record)):
                print(f"wrote {path}")
        await client.close()
        events.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await events


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bots.voice_bot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True,
                        help="the gateway, e.g. ws://127.0.0.1:8080/gateway, or the "
                             "server's address, e.g. http://127.0.0.1:8080/")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--token", help="an access token or a bot token")
    who.add_argument("--username", help="log in with this username (and --password)")
    parser.add_argument("--password", help="password for --username")
    parser.add_argument("--channel", required=True, help="voice/stage channel id or name")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--tone", type=float, default=440.0, help="speak a sine (Hz)")
    what.add_argument("--wav", help="speak this audio file (looped)")
    parser.add_argument("--slots", type=int, default=None,
                        help="receive slots (default: the server's voice_receive_slots)")
    parser.add_argument("--ice", action="append", default=[],
                        help="STUN/TURN URL (repeatable); none on a LAN or loopback")
    parser.add_argument("--mute", action="store_true", help="join, then mute")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="seconds to stay (0: until Ctrl-C)")
    parser.add_argument("--record", help="write each receive slot to DIR/slot-N.wav")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.username and not args.password:
        parser.error("--username needs --password")
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().level > logging.DEBUG:  # ICE pair-by-pair chatter: debug only
        logging.getLogger("aioice").setLevel(logging.WARNING)
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
