"""The sans-I/O gateway session: frames in, decisions and frames out.

:class:`GatewayProtocol` holds the state of one websocket connection as the protocol
sees it and nothing else: no sockets, no event loop, no clock of its own (every call
that needs the time is given ``now`` in milliseconds). The server feeds it each
websocket message with :meth:`receive`, then drains :meth:`events` (what the
application must decide: authenticate, resume, serve a request) and
:meth:`data_to_send` (frames to write, in order). :meth:`close_code` tells when the
connection must be closed and with which code. :meth:`tick` drives the timers
(identify timeout, zombie detection) so that one sweeper can serve every connection.

States::

    AWAITING_IDENTIFY --identify/resume--> AUTHENTICATING --accept--> READY
           |                                     |--reject--> CLOSED (4004 / 4006)
           +--timeout--> CLOSED (4003)          READY --zombie--> CLOSED (4009)

Requests are answered exactly once: the application calls :meth:`reply_ok` or
:meth:`reply_error` for each :class:`RequestReceived`; errors the protocol detects by
itself (bad frame, not ready, rate limited) are answered here.
"""

from __future__ import annotations

import collections
import enum
import math
from dataclasses import dataclass, field

import msgspec

from protocol.base import Request
from protocol.codec import Codec
from protocol.codes import CloseCode, ErrorCode
from protocol.frames import (
    Error,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Identify,
    InvalidSession,
    Ok,
    Ready,
    Reconnect,
    Result,
    Resume,
    Resumed,
)
from protocol.limits import Limits
from protocol.text import value_problem


class State(enum.Enum):
    AWAITING_IDENTIFY = "awaiting_identify"
    AUTHENTICATING = "authenticating"
    READY = "ready"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class IdentifyRequested:
    """Authenticate ``token`` and answer with :meth:`GatewayProtocol.accept_identify`
    or :meth:`GatewayProtocol.reject_authentication`."""

    token: str
    client: str


@dataclass(frozen=True, slots=True)
class ResumeRequested:
    """Authenticate ``token``, find ``session_id`` and answer with
    :meth:`GatewayProtocol.accept_resume` or :meth:`GatewayProtocol.reject_resume`."""

    token: str
    session_id: str
    seq: int
    positions: dict[int, int] = field(default_factory=dict)
    """Per channel id, the newest message seq the client has (``resume.positions``)."""


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """Serve ``request`` and answer with exactly one ``reply_ok`` / ``reply_error``."""

    request: Request


SessionEvent = IdentifyRequested | ResumeRequested | RequestReceived


class ProtocolViolation(Exception):
    """An application called the protocol in a state where that call is not valid."""


def _request_id(data: bytes | str) -> int | None:
    """Best effort: the ``id`` of an undecodable request, so its error can name it."""
    raw: object = None
    try:
        raw = msgspec.json.decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError):
        try:
            raw = msgspec.msgpack.decode(
                data if isinstance(data, bytes) else data.encode("utf-8", "replace"))
        except (msgspec.DecodeError, ValueError, RecursionError):
            return None
    if isinstance(raw, dict):
        rid = raw.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid < 2**53:
            return rid
    return None


class GatewayProtocol:
    """Protocol state of one connection. See the module docstring."""

    # One per connection: no per-instance __dict__ (100,000 of them on a node).
    __slots__ = ("_close", "_events", "_invalid_in_a_row", "_last_refill", "_last_seen",
                 "_opened_at", "_outbox", "_rate_strikes", "_refill_per_ms", "_tokens",
                 "_unanswered", "acked_seq", "codec", "limits", "session_id", "state")

    def __init__(self, codec: Codec, limits: Limits, now: float) -> None:
        self.codec = codec
        self.limits = limits
        self.state = State.AWAITING_IDENTIFY
        self.session_id: str | None = None
        self.acked_seq = 0
        """The newest dispatch the client says it received (heartbeat ``seq``): the
        server need not keep anything up to it for resume."""
        self._opened_at = now
        self._last_seen = now
        self._events: list[SessionEvent] = []
        self._outbox: list[bytes] = []
        self._close: tuple[CloseCode, str] | None = None
        self._invalid_in_a_row = 0
        self._unanswered: collections.Counter[int] = collections.Counter()
        # Token bucket: ``requests_per_window`` tokens, refilled evenly over the window.
        self._tokens = float(limits.requests_per_window)
        self._refill_per_ms = limits.requests_per_window / max(limits.rate_window_ms, 1)
        self._last_refill = now
        self._rate_strikes = 0
        self._outbox.append(
            codec.encode(Hello(heartbeat_interval_ms=limits.heartbeat_interval_ms, limits=limits))
        )

    # ----------------------------------------------------------------------------- input

    def receive(self, data: bytes | str, now: float) -> None:
        """Feed one complete websocket message."""
        if self.state is State.CLOSED:
            return
        self._last_seen = now
        try:
            frame = self.codec.decode_client(data)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError) as exc:
            # ValueError: a text frame that is not UTF-8 after all; RecursionError: nesting
            # deeper than the decoder allows. Both are just invalid frames.
            self._invalid(_request_id(data), ErrorCode.INVALID_FRAME, str(exc),
                          CloseCode.DECODE_ERROR)
            return
        if isinstance(frame, Heartbeat):
            if frame.seq is not None and frame.seq > self.acked_seq:
                self.acked_seq = frame.seq
            self._outbox.append(self.codec.encode(HeartbeatAck()))
            return
        if isinstance(frame, Identify | Resume):
            if self.state is not State.AWAITING_IDENTIFY:
                self._invalid(None, ErrorCode.ALREADY_IDENTIFIED, "already identified",
                              CloseCode.DECODE_ERROR)
                return
            self._invalid_in_a_row = 0
            self.state = State.AUTHENTICATING
            if isinstance(frame, Identify):
                self._events.append(IdentifyRequested(frame.token, frame.client))
            else:
                self._events.append(ResumeRequested(frame.token, frame.session_id, frame.seq,
                                                    frame.positions))
            return
        # Every other frame is a request.
        assert isinstance(frame, Request)
        if self.state is not State.READY:
            self._invalid(frame.id, ErrorCode.NOT_READY, "identify or resume first",
                          CloseCode.NOT_AUTHENTICATED)
            return
        self._invalid_in_a_row = 0
        retry_after = self._take_token(now)
        if retry_after is not None:
            self._rate_strikes += 1
            self._outbox.append(self.codec.encode(Error(
                id=frame.id, code=ErrorCode.RATE_LIMITED, message="too many requests",
                retry_after_ms=retry_after)))
            if self._rate_strikes > self.limits.requests_per_window:
                self._close_with(CloseCode.RATE_LIMITED, "rate limit exceeded repeatedly")
            return
        self._rate_strikes = 0
        problem = value_problem(frame)
        if problem is not None:  # well-formed, but holds a value no store can keep
            self._outbox.append(self.codec.encode(Error(
                id=frame.id, code=ErrorCode.INVALID_ARGUMENT, message=problem)))
            return
        self._unanswered[frame.id] += 1
        self._events.append(RequestReceived(frame))

    def tick(self, now: float) -> None:
        """Run the timers: identify timeout and zombie detection."""
        if self.state is State.CLOSED:
            return
        if self.state in (State.AWAITING_IDENTIFY, State.AUTHENTICATING):
            if now - self._opened_at > self.limits.identify_timeout_ms:
                self._close_with(CloseCode.IDENTIFY_TIMEOUT, "identify timeout")
            return
        if now - self._last_seen > 2 * self.limits.heartbeat_interval_ms:
            self._close_with(CloseCode.ZOMBIE, "no heartbeat")

    # ---------------------------------------------------------------------- app decisions

    def accept_identify(self, ready: Ready) -> None:
        if not self._expect(State.AUTHENTICATING):
            return
        self.state = State.READY
        self.session_id = ready.session_id
        self._outbox.append(self.codec.encode(ready))

    def accept_resume(self, session_id: str, replay: list[bytes]) -> None:
        """Resume succeeded: ``replay`` is the missed dispatch frames, already encoded."""
        if not self._expect(State.AUTHENTICATING):
            return
        self.state = State.READY
        self.session_id = session_id
        self._outbox.append(self.codec.encode(Resumed(session_id=session_id, replayed=len(replay))))
        self._outbox.extend(replay)

    def reject_authentication(self) -> None:
        if not self._expect(State.AUTHENTICATING):
            return
        self._close_with(CloseCode.AUTHENTICATION_FAILED, "authentication failed")

    def reject_resume(self, reason: str) -> None:
        if not self._expect(State.AUTHENTICATING):
            return
        self._outbox.append(self.codec.encode(InvalidSession(reason=reason)))
        self._close_with(CloseCode.SESSION_INVALID, reason)

    def reply_ok(self, request_id: int, data: Result) -> None:
        self._answer(request_id)
        if self.state is State.CLOSED:
            return
        self._outbox.append(self.codec.encode(Ok(id=request_id, data=data)))

    def reply_error(self, request_id: int, code: ErrorCode, message: str,
                    retry_after_ms: int | None = None) -> None:
        self._answer(request_id)
        if self.state is State.CLOSED:
            return
        self._outbox.append(self.codec.encode(Error(
            id=request_id, code=code, message=message, retry_after_ms=retry_after_ms)))

    def dispatch_frame(self, seq: int, event_body: bytes) -> bytes | None:
        """The dispatch frame for ``seq`` (the caller writes it), or None once closed."""
        if not self._expect(State.READY):
            return None
        return self.codec.dispatch_frame(seq, event_body)

    def drain(self, retry_after_ms: int) -> None:
        """The server is going away: ask the client to reconnect, then close 1001."""
        if self.state is State.CLOSED:
            return
        self._outbox.append(self.codec.encode(Reconnect(retry_after_ms=retry_after_ms)))
        self._close_with(CloseCode.GOING_AWAY, "server draining")

    def refuse_busy(self, retry_after_ms: int) -> None:
        """Too many identify/resume ahead of this one: ask the client to come back after
        ``retry_after_ms`` (``reconnect``), then close 1013. Nothing was done for it."""
        if not self._expect(State.AUTHENTICATING):
            return
        self._outbox.append(self.codec.encode(Reconnect(retry_after_ms=retry_after_ms)))
        self._close_with(CloseCode.TRY_AGAIN_LATER, "server busy")

    def fail(self, code: CloseCode, reason: str) -> None:
        """Close for a reason found outside the protocol (slow consumer, shutdown)."""
        self._close_with(code, reason)

    # ---------------------------------------------------------------------------- output

    def events(self) -> list[SessionEvent]:
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def close_code(self) -> tuple[CloseCode, str] | None:
        """Set once the connection must close; send the outbox first, then close."""
        return self._close

    # ---------------------------------------------------------------------------- inside

    def _expect(self, state: State) -> bool:
        """True when a decision applies; False when the connection already closed (a
        late decision is dropped); raises when the application is confused."""
        if self.state is state:
            return True
        if self.state is State.CLOSED:
            return False
        raise ProtocolViolation(f"in state {self.state.value}, expected {state.value}")

    def _answer(self, request_id: int) -> None:
        # A multiset: a client may reuse an id before its first reply; each request
        # still gets exactly one reply.
        if self._unanswered[request_id] <= 0:
            raise ProtocolViolation(f"request {request_id} is not awaiting a reply")
        self._unanswered[request_id] -= 1
        if not self._unanswered[request_id]:
            del self._unanswered[request_id]

    def _invalid(self, request_id: int | None, code: ErrorCode, message: str,
                 close: CloseCode) -> None:
        self._invalid_in_a_row += 1
        self._outbox.append(self.codec.encode(Error(id=request_id, code=code, message=message)))
        if self._invalid_in_a_row > self.limits.max_invalid_frames:
            self._close_with(close, f"too many invalid frames ({code.value})")

    def _take_token(self, now: float) -> int | None:
        """Spend one request token; None if allowed, else milliseconds to wait."""
        elapsed = max(now - self._last_refill, 0.0)
        self._last_refill = now
        self._tokens = min(float(self.limits.requests_per_window),
                           self._tokens + elapsed * self._refill_per_ms)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        # Round up: retrying after exactly this long must succeed.
        return max(1, math.ceil((1.0 - self._tokens) / self._refill_per_ms))

    def _close_with(self, code: CloseCode, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
        self.state = State.CLOSED
