"""One lean gateway client connection: websockets' sans-I/O protocol on an asyncio.Protocol.

Why sans-I/O instead of ``websockets.asyncio.client.connect``: that API gives each
connection a reader task, a keep-alive task, a message queue and an assembler; at
15,000-20,000 connections per generator process those are most of the memory and a good
part of the CPU. Here a connection is one object with ``__slots__``, the websockets
:class:`~websockets.client.ClientProtocol` (framing, masking, close handshake) and the
transport; incoming frames are handled inline in ``data_received`` and every outgoing
frame is one ``transport.write``. Timers (heartbeats, sends) live in the generator, one
loop for all connections, never one task per connection.

Connections bind a source address of the generator's choosing (spread over
127.0.0.0/8 for loopback targets) with ``IP_BIND_ADDRESS_NO_PORT`` so that the kernel
picks the port at connect time per 4-tuple: ephemeral ports then run out per source
address, not per machine.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from typing import Protocol, runtime_checkable

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from loadtest.wire import (
    FrameView,
    SocketIoFraming,
    decode_frame,
    encode_heartbeat,
    encode_identify,
    encode_resume,
)

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

CONNECTING, HANDSHAKE, IDENTIFYING, READY, CLOSED, RESUMING = range(6)


@runtime_checkable
class Wire(Protocol):
    """What a connection uses of its transport: asyncio's stream transport and uvloop's
    (which is no subclass of ``asyncio.Transport``) both have it."""

    def write(self, data: bytes) -> None: ...
    def can_write_eof(self) -> bool: ...
    def write_eof(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class Sink(Protocol):
    """What a connection reports to its generator (implemented by ``worker.Generator``)."""

    def on_hello(self, conn: Connection, frame: FrameView) -> None: ...
    def on_ready(self, conn: Connection, frame: FrameView, now_ns: int) -> None: ...
    def on_resumed(self, conn: Connection, frame: FrameView, now_ns: int) -> None: ...
    def on_invalid_session(self, conn: Connection, frame: FrameView) -> None: ...
    def on_dispatch(self, conn: Connection, frame: FrameView, now_ns: int) -> None: ...
    def on_reply(self, conn: Connection, frame: FrameView, now_ns: int) -> None: ...
    def on_closed(self, conn: Connection, reason: str) -> None: ...
    def count_error(self, code: str) -> None: ...


class Connection(asyncio.Protocol):
    """One simulated user: connect, identify, then receive and (maybe) send.

    With ``resume`` (the failover scenario), a connection that drops after ``ready``
    is reconnected by its generator (:meth:`reset`, then a new TCP connection to the
    same object) and sends ``resume`` with its session id and the ``s`` of the last
    dispatch it received, as the protocol tells clients to; if the server answers
    ``invalid_session``, the next attempt identifies afresh."""

    __slots__ = (
        "channel_id",
        "cursor",
        "framing",
        "heartbeat_due",
        "index",
        "jump_ok",
        "last_s",
        "resume",
        "retry_after_s",
        "sender",
        "session_id",
        "sink",
        "started_ns",
        "state",
        "token",
        "transport",
        "url",
        "ws",
    )

    def __init__(self, sink: Sink, index: int, token: str, channel_id: int, sender: bool,
                 url: str, framing: SocketIoFraming | None = None,
                 resume: bool = False) -> None:
        self.sink = sink
        self.index = index
        self.token = token
        self.channel_id = channel_id
        self.sender = sender
        self.framing = framing
        self.url = url
        self.resume = resume
        self.session_id: str | None = None
        self.retry_after_s = 0.0
        """``Retry-After`` of the last refused handshake (503 while busy), 0 if none."""
        self.ws = ClientProtocol(parse_uri(url), max_size=2**20)
        self.transport: Wire | None = None
        self.state = CONNECTING
        self.last_s = 0
        self.jump_ok = False
        """The next dispatch may skip numbers: the first after a resume (a resume on
        another node numbers its replay after everything either side knows)."""
        self.cursor: object | None = None
        """The generator's per-channel state for this recipient (a SeqCursor)."""
        self.heartbeat_due = 0.0
        self.started_ns = 0

    def positions(self) -> dict[int, int]:
        """The ``resume`` positions: the followed channel's newest seq received (the
        generator's cursor), so a resume on another node repeats nothing."""
        last = getattr(self.cursor, "last", None)
        return {self.channel_id: last} if isinstance(last, int) else {}

    def reset(self) -> None:
        """Ready for a new TCP connection (a reconnect): fresh websocket state; the
        session id, ``last_s`` and the seq cursor are kept."""
        if self.transport is not None:
            self.transport.abort()
        self.transport = None
        self.ws = ClientProtocol(parse_uri(self.url), max_size=2**20)
        self.state = CONNECTING

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, Wire):
            raise TypeError(f"not a stream transport: {transport!r}")
        self.transport = transport
        self.state = HANDSHAKE
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        now_ns = time.monotonic_ns()
        for event in ws.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT or event.opcode is Opcode.BINARY:
                    self._on_payload(bytes(event.data), now_ns)
                elif event.opcode is Opcode.CLOSE:
                    code = ws.close_code
                    self.sink.count_error(f"close_{code}")
            elif isinstance(event, Response):
                if ws.handshake_exc is not None:
                    try:
                        self.retry_after_s = float(event.headers.get("Retry-After") or 0)
                    except ValueError:
                        self.retry_after_s = 0.0
                    self.sink.count_error(f"handshake_{event.status_code}")
                    self._abort(f"handshake_{event.status_code}")
                    return
        self._flush()
        if ws.state is State.CLOSED and self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.state != CLOSED:
            was = self.state
            self.state = CLOSED
            self.sink.on_closed(self, "lost_after_ready" if was == READY else "lost_before_ready")

    # ---------------------------------------------------------------- frames

    def _on_payload(self, payload: bytes, now_ns: int) -> None:
        framing = self.framing
        if framing is not None:
            kind, inner = framing.unwrap(payload)
            if kind == "ping":
                self._send_raw(b"3")
                return
            if kind == "open":
                self._send_raw(b"40")
                return
            if inner is None:
                return
            payload = inner
        try:
            frame = decode_frame(payload)
        except Exception:  # a frame the views cannot read is an error of the server
            self.sink.count_error("undecodable_frame")
            return
        op = frame.op
        if op == "dispatch":
            self.sink.on_dispatch(self, frame, now_ns)
        elif op == "ok" or op == "error":
            self.sink.on_reply(self, frame, now_ns)
        elif op == "hello":
            self.sink.on_hello(self, frame)
            if self.resume and self.session_id is not None:
                self.state = RESUMING
                self.send(encode_resume(self.token, self.session_id, self.last_s,
                                        self.positions()))
            else:
                self.state = IDENTIFYING
                self.send(encode_identify(self.token))
        elif op == "ready":
            self.state = READY
            self.session_id = frame.session_id
            self.sink.on_ready(self, frame, now_ns)
        elif op == "resumed" and self.state == RESUMING:
            self.state = READY
            self.jump_ok = True
            self.sink.on_resumed(self, frame, now_ns)
        elif op == "invalid_session" and self.state == RESUMING:
            self.session_id = None  # the next attempt identifies
            self.sink.on_invalid_session(self, frame)
        elif op == "heartbeat_ack":
            pass
        elif op == "reconnect":  # a busy or draining server: come back after this long
            self.retry_after_s = (frame.retry_after_ms or 0) / 1000
            self.sink.count_error("server_busy" if self.state in (RESUMING, IDENTIFYING)
                                  else "frame_reconnect")
        else:  # reconnect; resumed or invalid_session out of place
            self.sink.count_error(f"frame_{op}")

    def send(self, frame: bytes) -> None:
        """Send one Hearth client frame (a JSON text frame)."""
        if self.transport is None or self.ws.state is not State.OPEN:
            return
        if self.framing is not None:
            frame = self.framing.wrap(frame)
        self.ws.send_text(frame)
        self._flush()

    def _send_raw(self, data: bytes) -> None:
        if self.transport is not None and self.ws.state is State.OPEN:
            self.ws.send_text(data)
            self._flush()

    def heartbeat(self) -> None:
        self.send(encode_heartbeat(self.last_s or None))

    def close(self) -> None:
        """Orderly close (1000); the transport closes when the server answers or aborts."""
        if self.transport is None:
            return
        if self.ws.state is State.OPEN:
            self.ws.send_close(1000)
            self._flush()
        self.state = CLOSED

    def abort(self) -> None:
        self.state = CLOSED
        if self.transport is not None:
            self.transport.abort()

    def _abort(self, reason: str) -> None:
        if self.state != CLOSED:
            self.state = CLOSED
            self.sink.on_closed(self, reason)
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()


def connect_error_code(exc: BaseException) -> str:
    """A short, stable name for why a connection attempt failed (for ``errors``)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connect_refused"
    if isinstance(exc, TimeoutError):
        return "connect_timeout"
    if isinstance(exc, ConnectionResetError):
        return "connect_reset"
    if isinstance(exc, OSError) and exc.errno is not None:
        return "connect_" + errno.errorcode.get(exc.errno, str(exc.errno)).lower()
    return "connect_" + type(exc).__name__.lower()


async def open_connection(conn: Connection, host: str, port: int,
                          source: str | None) -> None:
    """Open the TCP connection for ``conn`` from ``source`` (an IPv4 address or None)
    and start the websocket handshake (the rest happens in ``conn``'s callbacks)."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source is not None and family == socket.AF_INET:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        await loop.sock_connect(sock, (host, port))
        await loop.create_connection(lambda: conn, sock=sock)
    except BaseException:
        sock.close()
        raise
