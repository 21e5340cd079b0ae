"""The load generator's receive tap: RTP packets of a receive slot, not decoded.

Why this exists: an aiortc listener costs its generator ~0.9 ms of CPU per received
20 ms frame, most of it the jitter buffer, the decoder thread and Opus decoding. A
*lean* listener needs none of that: it counts packets and recognises each Opus payload
(:mod:`loadtest.voice_lean`). aiortc has no public hook for "give me the RTP payloads",
so this module -- and ONLY this module of the harness -- reaches into aiortc's private
internals, the same ones as the server's adapter ``rooms/media/passthrough.py``
(``tap_receiver``): the instance attribute ``RTCRtpReceiver._handle_rtp_packet`` (which
``RTCDtlsTransport._handle_rtp_data`` calls for every routed packet) and the receiver's
name-mangled ``__active_ssrc``, ``__codecs`` and ``__remote_streams``, kept updated so
aiortc still sends RTCP receiver reports and ``getStats()`` still counts received and
lost packets.

Why a copy here rather than importing the server's: the harness speaks only the public
protocol and never imports ``server/``, ``rooms/`` or ``persistence/`` (it must run from
a machine with only the harness on it, against any build of the server). The copy is
small, and ``tests/test_loadtest_voice.py`` holds it to the same contract as the
server's adapter: it runs :func:`check_internals` together with the server's
``check_internals``, checks that both name the same private attributes, and exchanges
real packets between two aiortc peers through it, so an aiortc upgrade breaks a test
instead of silently counting nothing.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import aiortc
from aiortc import RTCRtpReceiver
from aiortc.rtp import RtpPacket

AIORTC_VERSION = "1.16.0"
"""The aiortc version whose internals this module was written against (as the server's
adapter; both are pinned by pyproject.toml)."""

RECEIVER_PRIVATE = {
    "active_ssrc": "_RTCRtpReceiver__active_ssrc",
    "codecs": "_RTCRtpReceiver__codecs",
    "remote_streams": "_RTCRtpReceiver__remote_streams",
}
"""Name-mangled private attributes of ``RTCRtpReceiver`` that the tap keeps updated."""

TapCallback = Callable[[bytes, int, float], None]
"""``on_packet(payload, sequence_number, arrival)``: ``arrival`` is ``time.monotonic()``
when the packet was routed to the receiver (after SRTP). Runs on the event loop: it must
not block."""


def check_internals() -> None:
    """Raise ``RuntimeError`` naming what changed if an aiortc internal the tap uses
    moved (called by each generator process before it builds a lean listener)."""
    problems: list[str] = []
    if aiortc.__version__ != AIORTC_VERSION:
        problems.append(f"aiortc is {aiortc.__version__}, the tap was written for "
                        f"{AIORTC_VERSION}")
    sig = inspect.signature(RTCRtpReceiver._handle_rtp_packet)
    if list(sig.parameters) != ["self", "packet", "arrival_time_ms"]:
        problems.append(f"RTCRtpReceiver._handle_rtp_packet signature is {sig}")
    if not inspect.iscoroutinefunction(RTCRtpReceiver._handle_rtp_packet):
        problems.append("RTCRtpReceiver._handle_rtp_packet is no longer a coroutine")
    src = inspect.getsource(RTCRtpReceiver.__init__)
    for attr in RECEIVER_PRIVATE.values():
        short = attr.replace("_RTCRtpReceiver", "self.")
        if short not in src:
            problems.append(f"RTCRtpReceiver no longer sets {short}")
    if "_enabled" not in src:
        problems.append("RTCRtpReceiver no longer has _enabled")
    from aiortc import rtcdtlstransport

    if "receiver._handle_rtp_packet(packet, arrival_time_ms=" not in inspect.getsource(
            rtcdtlstransport.RTCDtlsTransport._handle_rtp_data):
        problems.append("RTCDtlsTransport._handle_rtp_data no longer calls the receiver hook")
    if problems:
        raise RuntimeError("aiortc internals changed: " + "; ".join(problems))


def tap_receiver(receiver: RTCRtpReceiver, on_packet: TapCallback) -> None:
    """Hand every RTP packet of ``receiver`` to ``on_packet`` instead of its jitter
    buffer and decoder (which then stay idle: nothing is decoded).

    Packets with a payload type that was not negotiated are dropped, as aiortc does.
    The receiver's statistics are kept, so ``receiver.getStats()`` still reports
    ``packetsReceived`` / ``packetsLost`` and RTCP receiver reports still go out.
    """
    from aiortc import clock
    from aiortc.rtcrtpreceiver import StreamStatistics

    active_ssrc: dict[int, Any] = getattr(receiver, RECEIVER_PRIVATE["active_ssrc"])
    codecs: dict[int, Any] = getattr(receiver, RECEIVER_PRIVATE["codecs"])
    remote_streams: dict[int, Any] = getattr(receiver, RECEIVER_PRIVATE["remote_streams"])
    monotonic = time.monotonic

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        if not receiver._enabled:
            return
        arrival = monotonic()
        active_ssrc[packet.ssrc] = clock.current_datetime()
        codec = codecs.get(packet.payload_type)
        if codec is None:
            return
        stats = remote_streams.get(packet.ssrc)
        if stats is None:
            stats = remote_streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stats.add(packet)
        on_packet(packet.payload, packet.sequence_number, arrival)

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]
