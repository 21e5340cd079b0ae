"""Adapter to aiortc 1.16 internals for Opus pass-through (no decode, no re-encode).

Why this module exists: aiortc's public API always decodes what it receives (jitter
buffer + decoder thread) and encodes what it sends from raw frames. An SFU needs
neither: it forwards each speaker's Opus payloads untouched. aiortc has no public hook
for that, so this module -- and ONLY this module -- reaches into private internals:

* receiving: :func:`tap_receiver` replaces the instance attribute
  ``RTCRtpReceiver._handle_rtp_packet`` (which ``RTCDtlsTransport._handle_rtp_data``
  calls for every routed packet) with a function that keeps the receiver's bookkeeping
  needed for RTCP receiver reports (``__active_ssrc``, ``__remote_streams``) and hands
  the payload to a callback instead of the jitter buffer / decoder;
* sending: aiortc's ``RTCRtpSender`` already accepts ``av.Packet`` from a track and
  ``pack()``s it without encoding; :class:`EncodedAudioTrack` is such a track;
* codecs: :func:`restrict_to_opus` trims a transceiver's negotiated codec list
  (``RTCRtpTransceiver._codecs``) so the answer and the sender use Opus only;
* ICE on loopback: :func:`set_host_address_mode` swaps ``aioice.ice.get_host_addresses``,
  which in aioice 0.13 always drops ``127.0.0.1`` and ``::1`` and has no parameter or
  environment variable to keep them.

``tests/test_media_passthrough.py`` checks every internal used here (names, signatures,
behaviour with two real peers) so an aiortc upgrade fails loudly instead of silently
forwarding nothing. :data:`AIORTC_VERSION` is asserted at import for the same reason.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import inspect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import aioice.ice
import aiortc
import av
from aiortc import MediaStreamTrack, RTCRtpReceiver, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

AIORTC_VERSION = "1.16.0"
"""The aiortc version whose internals this module was written against."""

if aiortc.__version__ != AIORTC_VERSION:  # pragma: no cover - guarded by the pin
    raise ImportError(
        f"rooms.media.passthrough needs aiortc=={AIORTC_VERSION} "
        f"(found {aiortc.__version__}); re-check the private internals it patches"
    )

OPUS_CLOCK_RATE = 48_000
OPUS_FRAME_SAMPLES = 960
"""20 ms at 48 kHz: the packet duration browsers and aiortc use."""
TIME_BASE = fractions.Fraction(1, OPUS_CLOCK_RATE)

if TYPE_CHECKING:
    OpusPacket = av.Packet[Any]
    """An ``av.Packet`` carrying one Opus payload (no stream attached)."""
else:
    OpusPacket = av.Packet

PacketCallback = Callable[[bytes, int, int, "int | None"], None]
"""``on_packet(payload, rtp_timestamp, sequence_number, audio_level)``; audio_level is
the RFC 6464 level in -dBov (0 loudest .. 127 silence) or ``None`` if absent."""

_RECEIVER_PRIVATE = {
    "active_ssrc": "_RTCRtpReceiver__active_ssrc",
    "codecs": "_RTCRtpReceiver__codecs",
    "remote_streams": "_RTCRtpReceiver__remote_streams",
}
"""Name-mangled private attributes of ``RTCRtpReceiver`` that the tap keeps updated."""


def check_internals() -> None:
    """Raise ``RuntimeError`` naming what changed if an aiortc internal we use moved.

    Called by the worker at start so a broken install fails before accepting rooms.
    """
    problems: list[str] = []
    sig = inspect.signature(RTCRtpReceiver._handle_rtp_packet)
    if list(sig.parameters) != ["self", "packet", "arrival_time_ms"]:
        problems.append(f"RTCRtpReceiver._handle_rtp_packet signature is {sig}")
    if not inspect.iscoroutinefunction(RTCRtpReceiver._handle_rtp_packet):
        problems.append("RTCRtpReceiver._handle_rtp_packet is no longer a coroutine")
    src = inspect.getsource(RTCRtpReceiver.__init__)
    for attr in _RECEIVER_PRIVATE.values():
        short = attr.replace("_RTCRtpReceiver", "self.")
        if short not in src:
            problems.append(f"RTCRtpReceiver no longer sets {short}")
    if "_enabled" not in src:
        problems.append("RTCRtpReceiver no longer has _enabled")
    from aiortc import rtcdtlstransport

    if "receiver._handle_rtp_packet(packet, arrival_time_ms=" not in inspect.getsource(
        rtcdtlstransport.RTCDtlsTransport._handle_rtp_data
    ):
        problems.append("RTCDtlsTransport._handle_rtp_data no longer calls the receiver hook")
    from aiortc import rtcrtpsender

    if "self.__encoder.pack(data)" not in inspect.getsource(
        rtcrtpsender.RTCRtpSender._next_encoded_frame
    ):
        problems.append("RTCRtpSender no longer packs pre-encoded av.Packet objects")
    if "self._codecs" not in inspect.getsource(RTCRtpTransceiver.__init__):
        problems.append("RTCRtpTransceiver._codecs is gone")
    if not callable(getattr(aioice.ice, "get_host_addresses", None)):
        problems.append("aioice.ice.get_host_addresses is gone")
    if problems:
        raise RuntimeError("aiortc internals changed: " + "; ".join(problems))


def tap_receiver(receiver: RTCRtpReceiver, on_packet: PacketCallback) -> None:
    """Route the receiver's RTP packets to ``on_packet`` instead of its decoder.

    Why keep some bookkeeping: RTCP receiver reports (loss, jitter) that the remote
    sender uses come from ``__remote_streams``; ``getSynchronizationSources`` from
    ``__active_ssrc``. Packets with an unknown payload type (not negotiated) are dropped,
    as aiortc would. RTX never reaches audio receivers (aiortc negotiates no RTX for
    audio). ``on_packet`` runs on the event loop and must not block.
    """
    from aiortc.rtcrtpreceiver import StreamStatistics

    active_ssrc: dict[int, Any] = getattr(receiver, _RECEIVER_PRIVATE["active_ssrc"])
    codecs: dict[int, Any] = getattr(receiver, _RECEIVER_PRIVATE["codecs"])
    remote_streams: dict[int, Any] = getattr(receiver, _RECEIVER_PRIVATE["remote_streams"])
    from aiortc import clock

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        if not receiver._enabled:
            return
        active_ssrc[packet.ssrc] = clock.current_datetime()
        codec = codecs.get(packet.payload_type)
        if codec is None:
            return
        stats = remote_streams.get(packet.ssrc)
        if stats is None:
            stats = remote_streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stats.add(packet)
        level = packet.extensions.audio_level
        on_packet(
            packet.payload,
            packet.timestamp,
            packet.sequence_number,
            None if level is None else int(level[1]),
        )

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]


def restrict_to_opus(transceiver: RTCRtpTransceiver) -> None:
    """Keep only Opus in a transceiver's negotiated codecs (call after
    ``setRemoteDescription``, before ``createAnswer``).

    Why: pass-through forwards payloads as they are, so every leg must be Opus; an
    offer that lists PCMU first would otherwise get PCMU on some legs. Raises
    ``ValueError`` when the offer has no Opus at all.
    """
    codecs = [c for c in transceiver._codecs if c.mimeType.lower() == "audio/opus"]
    if not codecs:
        raise ValueError("the offer does not include Opus")
    transceiver._codecs = codecs[:1]


HostAddressMode = Literal["default", "loopback", "with_loopback"]

_original_get_host_addresses = aioice.ice.get_host_addresses


def set_host_address_mode(mode: HostAddressMode) -> None:
    """Choose which local addresses ICE gathers host candidates on (process-wide).

    aioice 0.13 ``get_host_addresses`` skips 127.0.0.1 and ::1 unconditionally, so two
    peers on a machine with only ``lo`` gather no candidates and never connect.
    ``"loopback"`` gathers on 127.0.0.1 only (tests, single-host deployments behind a
    local TURN/proxy); ``"with_loopback"`` adds it to the normal list; ``"default"``
    restores aioice's behaviour.
    """
    if mode == "default":
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return
    if mode == "loopback":

        def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            return ["127.0.0.1"] if use_ipv4 else ["::1"]

        aioice.ice.get_host_addresses = loopback_only
        return

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        found = _original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        return (["127.0.0.1"] if use_ipv4 else []) + found

    aioice.ice.get_host_addresses = with_loopback


class EncodedAudioTrack(MediaStreamTrack):
    """An outbound audio track whose frames are already-encoded Opus packets.

    ``put()`` (synchronous, from the forwarder's packet path) enqueues a payload;
    aiortc's sender task awaits ``recv()`` and packetizes without encoding. The queue is
    bounded (``max_queue`` packets, default 25 = 500 ms): when the sender falls behind
    the OLDEST packets are dropped (late audio is useless) and counted in ``dropped``.

    pts are in a 48 kHz time base and strictly increase per track, even when the
    speaker carried by the slot changes: within one source the RTP timestamp delta is
    kept (so DTX gaps stay gaps); on a source change the wall-clock gap is used. This is
    what the remote jitter buffer and decoder need to play a continuous stream.
    """

    kind = "audio"

    def __init__(self, max_queue: int = 25, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self._queue: collections.deque[OpusPacket] = collections.deque(maxlen=max_queue)
        self._ready = asyncio.Event()
        self._clock = clock
        self._last_pts: int | None = None
        self._last_source: int | None = None
        self._last_rtp_ts = 0
        self._last_wall = 0.0
        self.dropped = 0
        self.queued = 0

    def put(self, payload: bytes, source: int, rtp_timestamp: int) -> None:
        """Enqueue one Opus payload from ``source`` (a participant id, or -1 for a mix)."""
        if self.readyState != "live":
            return
        now = self._clock()
        if self._last_pts is None:
            pts = 0
        else:
            step = OPUS_FRAME_SAMPLES
            if source == self._last_source:
                delta = (rtp_timestamp - self._last_rtp_ts) & 0xFFFFFFFF
                if 0 < delta <= 10 * OPUS_CLOCK_RATE:
                    step = delta
                elif delta != 0:
                    step = self._wall_step(now)
            else:
                step = self._wall_step(now)
            pts = self._last_pts + step
        self._last_pts = pts
        self._last_source = source
        self._last_rtp_ts = rtp_timestamp
        self._last_wall = now
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = TIME_BASE
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(packet)
        self.queued += 1
        self._ready.set()

    def _wall_step(self, now: float) -> int:
        """Elapsed wall time since the last packet, in whole 20 ms frames (at least one)."""
        frames = round((now - self._last_wall) * OPUS_CLOCK_RATE / OPUS_FRAME_SAMPLES)
        return max(1, frames) * OPUS_FRAME_SAMPLES

    async def recv(self) -> OpusPacket:
        """Next queued packet; waits while the slot is idle."""
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def stop(self) -> None:
        """End the track and wake a pending ``recv`` so the sender task exits."""
        super().stop()
        self._queue.clear()
        self._ready.set()
