"""The websocket gateway: a thin I/O adapter between aiohttp and the sans-I/O protocol.

Each connection feeds received messages to its :class:`protocol.session.GatewayProtocol`,
acts on the events it yields (authenticate, open or resume a session, serve requests via
the routing table, :class:`rooms.realtime.routing.Router`) and writes what it produces. Requests
of one connection are served one after another, so a client's messages keep their order.

Writes bypass aiohttp's per-call send path: a frame is written as one
``transport.write`` of a prebuilt websocket header plus the payload, and the payload of
a dispatch is the event encoded once for every recipient (``rooms/realtime/hub.py``). aiohttp
still owns the read side, ping/pong and the close handshake; its uncompressed writes are
whole frames too, so the two never interleave inside a frame.

Slow consumers: when a socket's transport buffer passes ``limits.max_outbound_bytes``
the connection is closed with 4008 (resumable) instead of buffering without bound.
One sweeper task drives every connection's timers (identify timeout, zombies) and
expires detached sessions, instead of a timer per connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from protocol.codec import Codec, codec_for
from protocol.codes import CloseCode, ErrorCode
from protocol.limits import Limits
from protocol.session import (
    GatewayProtocol,
    IdentifyRequested,
    RequestReceived,
    ResumeRequested,
)
from rooms.errors import RequestError
from rooms.realtime.outages import ThrottledLog, unavailable
from rooms.realtime.ready import ABANDONED, SessionOpener
from rooms.realtime.routing import Router
from rooms.realtime.sessions import Session
from server.auth import Authenticator
from server.cors import origin_allowed
from server.rest.errors import error_response, retry_after_header
from server.session_gate import GateBusy, SessionGate

log = logging.getLogger(__name__)


_SESSION_ENDING = frozenset({CloseCode.AUTHENTICATION_FAILED, CloseCode.SESSION_INVALID,
                             CloseCode.NOT_AUTHENTICATED})
"""Closes after which the session is gone rather than resumable."""


def _now_ms() -> float:
    return time.monotonic() * 1000.0


def frame_header(length: int, binary: bool) -> bytes:
    """RFC 6455 header of an unmasked, final, uncompressed server frame."""
    first = 0x82 if binary else 0x81
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


SLOW_CLOSE_GRACE_S = 2.0
"""How long a slow consumer has to read its 4008 close frame before the socket is cut."""
MIRROR_TOUCH_EVERY = 20
"""Sweeps between the mirror's interval writes (rooms/realtime/session_mirror.py): the
cursors of sessions that only received message creates, and live sessions' TTLs (well
inside the resume window)."""
CLOSE_TIMEOUT_S = 5.0
"""Longest a close handshake may take before the socket is cut."""
DRAIN_WINDOW_MS = 1000
"""A draining node asks its clients to reconnect after a delay uniform in [0, 1 s] (more
for a node with many connections: :meth:`Gateway.drain_window_ms`)."""


def close_frame(code: int, reason: str) -> bytes:
    """An RFC 6455 close frame (unmasked, server to client)."""
    payload = struct.pack("!H", code) + reason.encode()[:120]
    return bytes((0x88, len(payload))) + payload


class GatewayConnection:
    """One websocket. Implements :class:`rooms.realtime.sessions.Sink` for its session."""

    # One per connection: no per-instance __dict__.
    __slots__ = ("_binary", "_closing", "_congested_at", "_pending", "codec", "gateway",
                 "protocol", "remote", "session", "transport", "ws")

    def __init__(self, gateway: Gateway, ws: web.WebSocketResponse, codec: Codec,
                 transport: asyncio.Transport, remote: str | None) -> None:
        self.gateway = gateway
        self.ws = ws
        self.codec = codec
        self.transport = transport
        self.remote = remote
        self.protocol = GatewayProtocol(codec, gateway.limits, _now_ms())
        self.session: Session | None = None
        self._binary = codec.binary
        self._congested_at = gateway.limits.max_outbound_bytes // 4
        self._closing = False
        self._pending: list[bytes] = []

    # ----------------------------------------------------------------------------- Sink

    def write(self, frame: bytes) -> None:
        """Queue a frame; every frame queued during one event-loop pass goes out in a
        single ``transport.write`` at the end of the pass (one syscall, not one each)."""
        if self._closing:
            return
        pending = self._pending
        if not pending:
            self.gateway.flush_soon(self)
        pending.append(frame_header(len(frame), self._binary))
        pending.append(frame)

    def write_pending(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        transport = self.transport
        if self._closing or transport.is_closing():
            return
        transport.write(pending[0] + pending[1] if len(pending) == 2 else b"".join(pending))
        if transport.get_write_buffer_size() > self.gateway.limits.max_outbound_bytes:
            self.gateway.stats["slow_consumers"] += 1
            self.fail(CloseCode.SLOW_CONSUMER, "outbound buffer full")

    def congested(self) -> bool:
        return self.transport.get_write_buffer_size() > self._congested_at

    def fail(self, code: CloseCode, reason: str) -> None:
        self.protocol.fail(code, reason)
        self.gateway.close_soon(self)

    # --------------------------------------------------------------------------- flows

    def flush(self) -> None:
        for frame in self.protocol.data_to_send():
            self.write(frame)

    async def process(self) -> None:
        """Act on what the protocol decided, then write its frames."""
        for event in self.protocol.events():
            if isinstance(event, RequestReceived):
                await self._serve(event)
            elif isinstance(event, IdentifyRequested | ResumeRequested):
                await self._start(event)
            self.flush()
        self.flush()

    def abandoned(self) -> bool:
        """The client is gone (closed or reset while it waited): work for it is waste."""
        return self.transport.is_closing()

    async def _start(self, event: IdentifyRequested | ResumeRequested) -> None:
        """Identify or resume inside the process's :class:`SessionGate`: at most
        ``session_start_concurrency`` at once, each served whole, in arrival order; a
        newcomer finding the queue over its limit is asked to come back later."""
        try:
            async with self.gateway.session_gate.slot():
                if self.abandoned():
                    self.gateway.stats["starts_abandoned"] += 1
                    return
                if isinstance(event, IdentifyRequested):
                    await self._identify(event)
                else:
                    await self._resume(event)
        except GateBusy as busy:
            self.gateway.stats["starts_refused"] += 1
            self.protocol.refuse_busy(busy.retry_after_ms)

    async def _identify(self, event: IdentifyRequested) -> None:
        user = await self.gateway.auth.authenticate(event.token)
        if user is None:
            self.protocol.reject_authentication()
            return
        if self.abandoned():
            self.gateway.stats["starts_abandoned"] += 1
            return
        session, ready = await self.gateway.opener.open(user, self.codec, self)
        # No await between open() and here: nothing can be dispatched before ready.
        self.session = session
        self.protocol.accept_identify(ready)
        self.flush()
        if session.held is not None:  # the hub was ahead of the snapshot: catch up
            await self.gateway.opener.catch_up(session)

    async def _resume(self, event: ResumeRequested) -> None:
        self.gateway.stats["resume_attempts"] += 1
        user = await self.gateway.auth.authenticate(event.token)
        if user is None:
            self.protocol.reject_authentication()
            return
        if self.abandoned():  # before the claim: no takeover for a client that left
            self.gateway.stats["starts_abandoned"] += 1
            return
        opener = self.gateway.opener
        result = await opener.resume(user, event.session_id, event.seq, self.codec, self,
                                     event.positions, abandoned=self.abandoned)
        if result == ABANDONED:
            self.gateway.stats["starts_abandoned"] += 1
            return
        if isinstance(result, str):
            self.protocol.reject_resume(result)
            return
        self.session, replay, elsewhere = result
        self.gateway.stats["resume_successes"] += 1
        self.protocol.accept_resume(self.session.session_id, replay)
        self.flush()
        if elsewhere:
            await opener.catch_up(self.session)

    async def _serve(self, event: RequestReceived) -> None:
        request = event.request
        session = self.session
        assert session is not None
        try:
            result = await self.gateway.router.handle(session, request)
        except RequestError as exc:
            self.protocol.reply_error(request.id, exc.code, exc.message, exc.retry_after_ms)
        except Exception as exc:
            store = self.gateway.failures.failure(
                exc, f"request {type(request).__name__}",
                extra={"session_id": session.session_id, "user_id": session.user.id})
            if store is None:
                self.protocol.reply_error(request.id, ErrorCode.INTERNAL, "internal error")
            else:
                refused = unavailable(store)
                self.protocol.reply_error(request.id, refused.code, refused.message,
                                          refused.retry_after_ms)
        else:
            self.protocol.reply_ok(request.id, result)

    async def close(self) -> None:
        """Send the protocol's close code (after its last frames) and close."""
        if self._closing:
            return
        self.flush()
        self.write_pending()  # before the close frame, which aiohttp writes directly
        self._closing = True
        decided = self.protocol.close_code()
        code, reason = decided if decided else (CloseCode.NORMAL, "")
        if code is CloseCode.SLOW_CONSUMER or self.transport.is_closing():
            # Its buffer is full: a close handshake would wait on a drain that never
            # comes. Queue the close frame behind what is buffered (a client that is
            # merely slow still reads it) and cut the socket after a short grace.
            if not self.transport.is_closing():
                self.transport.write(close_frame(int(code), reason))
            asyncio.get_running_loop().call_later(SLOW_CLOSE_GRACE_S, self.transport.abort)
            return
        try:
            await asyncio.wait_for(self.ws.close(code=int(code), message=reason.encode()[:120]),
                                   timeout=CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectionError, RuntimeError):
            self.transport.abort()


class Gateway:
    """Every connection of this process, the sweeper, and shutdown."""

    def __init__(self, *, auth: Authenticator, opener: SessionOpener, router: Router,
                 limits: Limits, allowed_origins: list[str],
                 admission_per_s: int = 2000, session_start_concurrency: int = 32,
                 session_start_max_queue_s: float = 5.0) -> None:
        self.auth = auth
        self.opener = opener
        self.router = router
        self.limits = limits
        self.allowed_origins = allowed_origins
        self.connections: set[GatewayConnection] = set()
        self.draining = False
        self._to_flush: list[GatewayConnection] = []
        self.admission_per_s = admission_per_s
        self._admission_tokens = float(admission_per_s)
        self._admission_at = time.monotonic()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.session_gate = SessionGate(session_start_concurrency, session_start_max_queue_s)
        """Bounds concurrent identify/resume work (server/session_gate.py)."""
        self.failures = ThrottledLog(log)
        """Failed requests and connections: an outage is one line per store and interval,
        not a traceback per request."""
        self.stats: dict[str, int] = {
            "connections_total": 0, "resume_attempts": 0, "resume_successes": 0,
            "slow_consumers": 0, "frames_in": 0, "admission_refused": 0, "handshakes_abandoned": 0,
            "starts_refused": 0, "starts_abandoned": 0,
        }

    def flush_soon(self, conn: GatewayConnection) -> None:
        """Write ``conn``'s queued frames at the end of this event-loop pass."""
        if not self._to_flush:
            asyncio.get_running_loop().call_soon(self._write_all)
        self._to_flush.append(conn)

    def _write_all(self) -> None:
        connections, self._to_flush = self._to_flush, []
        for conn in connections:
            conn.write_pending()

    def _admit(self) -> bool:
        """Token bucket on new connections (``admission_per_s``, burst of one second)."""
        now = time.monotonic()
        rate = self.admission_per_s
        self._admission_tokens = min(float(rate),
                                     self._admission_tokens + (now - self._admission_at) * rate)
        self._admission_at = now
        if self._admission_tokens < 1.0:
            return False
        self._admission_tokens -= 1.0
        return True

    def close_soon(self, conn: GatewayConnection) -> None:
        task = asyncio.get_running_loop().create_task(conn.close())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not origin_allowed(request, self.allowed_origins):
            return error_response(ErrorCode.ORIGIN_NOT_ALLOWED, "origin not allowed")
        codec = codec_for(request.query.get("encoding"))
        if codec is None:
            return error_response(ErrorCode.INVALID_ARGUMENT, "encoding is json or msgpack")
        if self.draining:
            return error_response(ErrorCode.UNAVAILABLE, "node is draining; connect to another",
                                  retry_after_header(DRAIN_WINDOW_MS))
        if not self._admit():
            # A reconnect storm: refuse before any websocket work, and spread the retries.
            self.stats["admission_refused"] += 1
            return error_response(ErrorCode.UNAVAILABLE, "too many new connections; retry",
                                  retry_after_header(random.randint(1, 5) * 1000))
        backlog = self.session_gate.refusal()
        if backlog is not None:
            # More identify/resume queued than this process works off in a few seconds:
            # refuse before the upgrade too (cheaper than the refusal after it).
            self.stats["starts_refused"] += 1
            return error_response(ErrorCode.UNAVAILABLE, "too many sessions starting; retry",
                                  retry_after_header(backlog))
        # aiohttp refuses a frame of exactly max_msg_size; the documented limit is the
        # largest frame accepted, so one byte more is the first refused.
        ws = web.WebSocketResponse(max_msg_size=self.limits.max_frame_bytes + 1, autoping=True,
                                   heartbeat=None, compress=False, timeout=2.0)
        try:
            await ws.prepare(request)
        except ConnectionError:
            # The client gave up before our handshake answer (a connect timeout in a
            # storm): nothing was opened, nothing to log but a count. (Returning the
            # unprepared websocket response would make aiohttp raise.)
            self.stats["handshakes_abandoned"] += 1
            return web.Response(status=499, text="client closed the connection")
        transport = request.transport
        if transport is None or transport.is_closing():
            self.stats["handshakes_abandoned"] += 1
            await ws.close()
            return ws
        conn = GatewayConnection(self, ws, codec, transport, request.remote)
        self.connections.add(conn)
        self.stats["connections_total"] += 1
        client_closed_normally = False
        try:
            conn.flush()  # hello
            async for msg in ws:
                if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                    self.stats["frames_in"] += 1
                    conn.protocol.receive(msg.data, _now_ms())
                    session = conn.session
                    if session is not None and conn.protocol.acked_seq:
                        session.acknowledged(conn.protocol.acked_seq)
                    await conn.process()
                    if conn.protocol.close_code() is not None:
                        await conn.close()
                        break
                elif msg.type is WSMsgType.ERROR:
                    break
            client_closed_normally = ws.close_code in (WSCloseCode.OK, WSCloseCode.GOING_AWAY) \
                and conn.protocol.close_code() is None
        except Exception as exc:
            session = conn.session
            store = self.failures.failure(exc, "gateway connection", extra={
                "session_id": session.session_id if session else None,
                "user_id": session.user.id if session else None})
            if store is None:
                conn.protocol.fail(CloseCode.INTERNAL_ERROR, "internal error")
            else:  # identify or resume needed a store that is down: resumable, retry soon
                conn.protocol.fail(CloseCode.TRY_AGAIN_LATER, f"{store} unavailable")
            await conn.close()
        finally:
            self.connections.discard(conn)
            session = conn.session
            if session is not None and session.sink is conn:
                decided = conn.protocol.close_code()
                final = decided is not None and decided[0] in _SESSION_ENDING
                if not client_closed_normally and not final:
                    self.opener.detach(session, _now_ms())
                else:
                    await self.opener.forget(session)
        return ws

    async def sweep_forever(self, interval_s: float = 1.0) -> None:
        """Timers for every connection, expiry of detached sessions, and keeping live
        sessions' mirrors from expiring."""
        ticks = 0
        while True:
            await asyncio.sleep(interval_s)
            ticks += 1
            mirror = self.opener.mirror
            if mirror is not None and ticks % MIRROR_TOUCH_EVERY == 0:
                # The interval write: seq and cursors of sessions that only received
                # message creates since (nothing else wrote them), TTLs of the rest.
                await mirror.refresh(self.opener.registry.all())
            now = _now_ms()
            for conn in list(self.connections):
                if conn.protocol.close_code() is None:
                    conn.protocol.tick(now)
                    if conn.protocol.close_code() is not None:
                        self.close_soon(conn)
            for session in self.opener.registry.expired(now):
                self.opener.close(session)

    def drain_window_ms(self) -> int:
        """The spread of the clients' ``reconnect.retry_after_ms`` when this node drains:
        uniform over [0, window]. One second, so that most are back (resumed on another
        node) within a second; longer only when this node holds more connections than
        the others admit in a second (``admission_per_s`` per process), so a large node's
        reconnect storm is spread instead of refused with 503s."""
        rate = max(self.admission_per_s, 1)
        return max(DRAIN_WINDOW_MS, len(self.connections) * 1000 // rate)

    async def drain(self) -> None:
        """Shutdown: ask every client to reconnect elsewhere (jittered), close with 1001."""
        self.draining = True
        window = self.drain_window_ms()
        for conn in list(self.connections):
            conn.protocol.drain(retry_after_ms=random.randint(0, window))
            self.close_soon(conn)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
