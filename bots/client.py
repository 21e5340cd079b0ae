"""The Python client SDK for the Hearth gateway (protocol v1), over ``websockets``.

One :class:`HearthClient` is one session: it connects, identifies, heartbeats, answers
nothing by itself but lets you send typed requests and iterate over dispatched events,
and transparently resumes the session after a dropped connection::

    async with HearthClient("ws://127.0.0.1:8080/gateway", token) as client:
        general = client.channel_named("general")
        await client.send_message(general.id, "hello")
        async for event in client:
            if isinstance(event, MessageCreated):
                print(event.message.author.username, event.message.content)

Every background task (the reader with its reconnect loop, the heartbeat) belongs to
the client and is cancelled by :meth:`HearthClient.close`. Only :mod:`protocol` is
imported from Hearth: the SDK speaks the documented wire protocol (``docs/protocol.md``)
and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import typing
import uuid
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from protocol.base import Request
from protocol.chat import (
    AddReaction,
    ChannelCreated,
    ChannelDeleted,
    ChannelResult,
    ChannelUpdated,
    CreateThread,
    DeleteMessage,
    EditMessage,
    FetchHistory,
    FetchReactions,
    HistoryResult,
    JoinThread,
    LeaveThread,
    MarkRead,
    MessageCreated,
    MessageResult,
    ReadStateResult,
    RemoveReaction,
    SendMessage,
    SetThreadArchived,
    StartTyping,
    UsersResult,
)
from protocol.codec import Codec, codec_for
from protocol.codes import RESUMABLE_CLOSE_CODES, CloseCode, ErrorCode
from protocol.communities import CommunityAvailable
from protocol.frames import (
    ClientFrame,
    Dispatch,
    Empty,
    Error,
    Event,
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
    ServerFrame,
)
from protocol.limits import Limits
from protocol.models import Attachment, Channel, Message, ReadState, User

__all__ = [
    "ConnectionLost",
    "HearthClient",
    "HearthClosed",
    "HearthError",
]

log = logging.getLogger("hearth.client")

R = TypeVar("R", bound=Result)

_ABNORMAL_CLOSURE: Final = 1006
"""No close frame (the network or the process went away): the session is resumable."""


class HearthError(Exception):
    """The server answered a request with ``error``."""

    def __init__(self, code: ErrorCode | str, message: str,
                 retry_after_ms: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms


class ConnectionLost(HearthError):
    """The connection dropped before the reply arrived. The request may or may not have
    been applied; retrying ``send_message`` with the same nonce is safe."""

    def __init__(self, message: str = "connection lost before the reply") -> None:
        super().__init__("connection_lost", message)


class HearthClosed(Exception):
    """The session ended for good: closed by :meth:`HearthClient.close`, or by the
    server with a code that does not allow resuming (e.g. 4004, a bad token)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"session closed ({code}): {reason}" if code else reason)
        self.code = code
        self.reason = reason


class _End:
    """Queue sentinel: the event stream is over."""

    def __init__(self, error: HearthClosed | None) -> None:
        self.error = error


class _Reconnect(Exception):
    """Internal: the current connection is over; reconnect (resume unless told not)."""

    def __init__(self, code: int | None, reason: str, *, resume: bool = True,
                 delay_s: float | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.resume = resume
        self.delay_s = delay_s


class _Envelope(msgspec.Struct):
    """What every server frame has in common, for frames newer than this SDK."""

    op: str = ""
    s: int | None = None


def gateway_url(url: str, encoding: str) -> str:
    """``url`` with ``?encoding=`` set (other query parameters kept)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "encoding"]
    query.append(("encoding", encoding))
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/gateway", urlencode(query),
                       parts.fragment))


_RETRIED = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE})
"""Error codes after which the same request succeeds if sent again after a while."""


class HearthClient:
    """A session on a Hearth gateway. See the module docstring.

    :param url: the gateway, e.g. ``ws://127.0.0.1:8080/gateway``.
    :param token: an access token or a bot token.
    :param encoding: ``"json"`` or ``"msgpack"``.
    :param max_queued_events: bound of the event queue. When your code does not consume
        events fast enough the oldest queued event is dropped (and counted in
        :attr:`dropped_events`) rather than blocking the connection, which would delay
        replies and eventually get the connection closed as a slow consumer.
    :param request_timeout: seconds to wait for a reply.
    :param retry_rate_limited: retry a request answered ``rate_limited`` or
        ``unavailable`` (a store briefly down) after ``retry_after_ms``, up to this many
        times (0 disables).
    :param max_backoff: longest wait between reconnection attempts, in seconds.
    """

    def __init__(self, url: str, token: str, encoding: str = "json", *,
                 client_name: str = "hearth-python-sdk/1",
                 max_queued_events: int = 1000,
                 request_timeout: float = 30.0,
                 retry_rate_limited: int = 3,
                 max_backoff: float = 30.0,
                 max_reconnect_attempts: int | None = None,
                 connect_timeout: float = 10.0) -> None:
        codec = codec_for(encoding)
        if codec is None:
            raise ValueError(f"unknown encoding {encoding!r} (json or msgpack)")
        self.url = gateway_url(url, codec.encoding.value)
        self.token = token
        self.codec: Codec = codec
        self.client_name = client_name
        self.request_timeout = request_timeout
        self.retry_rate_limited = retry_rate_limited
        self.max_backoff = max_backoff
        self.max_reconnect_attempts = max_reconnect_attempts
        self.connect_timeout = connect_timeout

        self.hello: Hello | None = None
        self.ready: Ready | None = None
        """The latest ``ready`` (replaced when the session had to be identified anew)."""
        self.session_id: str | None = None
        self.last_seq = 0
        """The ``s`` of the last dispatch received (it grows, but may jump after a
        resume on another node, which numbers its replay anew)."""
        self.positions: dict[int, int] = {}
        """Per channel, the newest message seq received, most recently advanced last:
        sent with ``resume`` so that a resume on any node is exactly-once."""
        self.dropped_events = 0
        self.duplicates_dropped = 0
        """``message_create`` events received twice (see :meth:`_track`), not delivered."""
        self.reconnects = 0
        """Connections opened after the first one."""
        self.resumes = 0
        """Successful resumes."""
        self.identifies = 0

        self._events: asyncio.Queue[Event | _End] = asyncio.Queue(max_queued_events)
        self._pending: dict[int, asyncio.Future[Result]] = {}
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._open = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._ack_pending = False
        self._closed: HearthClosed | None = None
        self._finished = False
        self._on_ready: list[Callable[[Ready], Any]] = []

    # ------------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> HearthClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    @property
    def user(self) -> User:
        if self.ready is None:
            raise RuntimeError("not connected")
        return self.ready.user

    @property
    def limits(self) -> Limits:
        return self.hello.limits if self.hello is not None else Limits()

    @property
    def connected(self) -> bool:
        """True while a connection is open and its session ready."""
        return self._open.is_set()

    def on_ready(self, callback: Callable[[Ready], Any]) -> None:
        """Call ``callback(ready)`` whenever the session is identified anew (not on
        resume): the state in ``ready`` replaces everything known before."""
        self._on_ready.append(callback)

    async def connect(self) -> Ready:
        """Connect, identify and wait for ``ready``; then keep the session alive in the
        background. Raises :class:`HearthClosed` if the server refuses (e.g. 4004)."""
        if self._runner is not None:
            raise RuntimeError("connect() was already called")
        try:
            await self._open_connection(resume=False)
        except _Reconnect as exc:
            raise HearthClosed(exc.code, exc.reason) from None
        self._runner = asyncio.get_running_loop().create_task(
            self._run(), name="hearth-client-reader")
        assert self.ready is not None
        return self.ready

    async def close(self) -> None:
        """End the session (close code 1000) and stop every background task."""
        if self._closed is None:
            self._closed = HearthClosed(CloseCode.NORMAL, "closed by the client")
        runner, self._runner = self._runner, None
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        await self._stop_heartbeat()
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(code=CloseCode.NORMAL, reason="bye")
        self._open.clear()
        self._fail_pending(self._closed)
        self._finish(None)

    # --------------------------------------------------------------------------- events

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()

    async def events(self) -> AsyncIterator[Event]:
        """Dispatched events in order. Ends after :meth:`close`; raises
        :class:`HearthClosed` if the server ended the session for good."""
        while True:
            item = await self._events.get()
            if isinstance(item, _End):
                self._events.put_nowait(item)  # for any other consumer
                if item.error is not None:
                    raise item.error
                return
            yield item

    async def next_event(self, timeout: float | None = None) -> Event:
        """The next dispatched event (raises ``TimeoutError`` after ``timeout`` s)."""
        async with asyncio.timeout(timeout):
            item = await self._events.get()
        if isinstance(item, _End):
            self._events.put_nowait(item)
            raise item.error or HearthClosed(CloseCode.NORMAL, "closed by the client")
        return item

    async def wait_for(self, predicate: Callable[[Event], bool],
                       timeout: float | None = 10.0) -> Event:
        """Consume events until one satisfies ``predicate``; return it."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next_event()
                if predicate(event):
                    return event

    # ------------------------------------------------------------------------- requests

    async def request(self, frame: Request, *, timeout: float | None = None) -> Result:
        """Send ``frame`` (its ``id`` is replaced by a fresh one) and return the ``data``
        of its ``ok``. Raises :class:`HearthError` for an ``error`` reply,
        :class:`ConnectionLost` if the connection dropped first, ``TimeoutError``."""
        attempts = 0
        while True:
            try:
                return await self._request_once(frame, timeout)
            except HearthError as exc:
                if (exc.code not in _RETRIED or attempts >= self.retry_rate_limited
                        or exc.retry_after_ms is None):
                    raise
                attempts += 1
                await asyncio.sleep(exc.retry_after_ms / 1000)

    async def _request_once(self, frame: Request, timeout: float | None) -> Result:
        if self._closed is not None:
            raise self._closed
        timeout = self.request_timeout if timeout is None else timeout
        async with asyncio.timeout(timeout):
            await self._open.wait()
            if self._closed is not None:
                raise self._closed
            rid = next(self._ids)
            future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
            self._pending[rid] = future
            try:
                await self._send(typing.cast(ClientFrame, msgspec.structs.replace(frame, id=rid)))
                return await future
            finally:
                self._pending.pop(rid, None)

    async def _typed(self, frame: Request, kind: type[R]) -> R:
        result = await self.request(frame)
        if not isinstance(result, kind):
            raise HearthError(ErrorCode.INTERNAL,
                              f"expected a {kind.__name__} reply, got {type(result).__name__}")
        return result

    async def send_message(self, channel_id: int, content: str, nonce: str | None = None,
                           reply_to_id: int | None = None,
                           attachments: list[Attachment] | None = None) -> Message:
        """Post a message; a nonce is generated when none is given, so the SDK's own
        retries never duplicate it."""
        frame = SendMessage(id=0, channel_id=channel_id, content=content,
                            nonce=nonce if nonce is not None else uuid.uuid4().hex,
                            reply_to_id=reply_to_id, attachments=attachments or [])
        return (await self._typed(frame, MessageResult)).message

    async def edit_message(self, channel_id: int, message_id: int, content: str) -> Message:
        frame = EditMessage(id=0, channel_id=channel_id, message_id=message_id,
                            content=content)
        return (await self._typed(frame, MessageResult)).message

    async def delete_message(self, channel_id: int, message_id: int) -> None:
        await self._typed(DeleteMessage(id=0, channel_id=channel_id, message_id=message_id),
                          Empty)

    async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> None:
        await self._typed(AddReaction(id=0, channel_id=channel_id, message_id=message_id,
                                      emoji=emoji), Empty)

    async def remove_reaction(self, channel_id: int, message_id: int, emoji: str) -> None:
        await self._typed(RemoveReaction(id=0, channel_id=channel_id, message_id=message_id,
                                         emoji=emoji), Empty)

    async def fetch_reactions(self, channel_id: int, message_id: int, emoji: str,
                              limit: int = 100) -> list[User]:
        frame = FetchReactions(id=0, channel_id=channel_id, message_id=message_id,
                               emoji=emoji, limit=limit)
        return (await self._typed(frame, UsersResult)).users

    async def typing(self, channel_id: int) -> None:
        await self._typed(StartTyping(id=0, channel_id=channel_id), Empty)

    async def mark_read(self, channel_id: int, seq: int) -> ReadState:
        frame = MarkRead(id=0, channel_id=channel_id, seq=seq)
        return (await self._typed(frame, ReadStateResult)).read_state

    async def history(self, channel_id: int, *, before: int | None = None,
                      after: int | None = None, around: int | None = None,
                      limit: int = 50) -> HistoryResult:
        """A page of messages (oldest first); at most one of before/after/around."""
        frame = FetchHistory(id=0, channel_id=channel_id, before=before, after=after,
                             around=around, limit=limit)
        return await self._typed(frame, HistoryResult)

    async def create_thread(self, channel_id: int, name: str,
                            message_id: int | None = None) -> Channel:
        frame = CreateThread(id=0, channel_id=channel_id, name=name, message_id=message_id)
        return (await self._typed(frame, ChannelResult)).channel

    async def set_thread_archived(self, thread_id: int, archived: bool) -> Channel:
        frame = SetThreadArchived(id=0, thread_id=thread_id, archived=archived)
        return (await self._typed(frame, ChannelResult)).channel

    async def join_thread(self, thread_id: int) -> Channel:
        return (await self._typed(JoinThread(id=0, thread_id=thread_id), ChannelResult)).channel

    async def leave_thread(self, thread_id: int) -> Channel:
        frame = LeaveThread(id=0, thread_id=thread_id)
        return (await self._typed(frame, ChannelResult)).channel

    # ------------------------------------------------------------------------- helpers

    def channels(self) -> list[Channel]:
        """Every channel in the latest ``ready`` (community channels, then DMs)."""
        if self.ready is None:
            return []
        found = [c for snapshot in self.ready.communities for c in snapshot.channels]
        return found + list(self.ready.private_channels)

    def channel_named(self, name: str, community_id: int | None = None) -> Channel:
        for channel in self.channels():
            if channel.name == name and (community_id is None
                                         or channel.community_id == community_id):
                return channel
        raise KeyError(name)

    async def drop_connection(self) -> None:
        """Abort the socket without a close frame, as a network failure would; the
        client then resumes. For tests and demonstrations."""
        ws = self._ws
        if ws is not None:
            ws.transport.abort()

    # ----------------------------------------------------------------------- internals

    async def _send(self, frame: ClientFrame) -> None:
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected")
        data = self.codec.encode_client(frame)
        try:
            if self.codec.binary:
                await ws.send(data)
            else:
                await ws.send(data.decode())
        except ConnectionClosed:
            raise ConnectionLost() from None

    async def _recv(self, ws: ClientConnection) -> ServerFrame:
        while True:
            data = await ws.recv()
            try:
                return self.codec.decode_server(data)
            except (ValueError, RecursionError) as exc:  # DecodeError, UnicodeDecodeError
                # A newer server may send ops or events this SDK does not know: skip
                # them, but count a dispatch's ``s`` so heartbeats and resume stay exact.
                log.debug("ignoring a frame this SDK cannot read: %s", exc)
                envelope = self._envelope(data)
                if envelope is not None and envelope.op == "dispatch" \
                        and isinstance(envelope.s, int) and envelope.s > self.last_seq:
                    self.last_seq = envelope.s

    def _envelope(self, data: str | bytes) -> _Envelope | None:
        try:
            if self.codec.binary:
                raw = data.encode() if isinstance(data, str) else data
                return msgspec.msgpack.decode(raw, type=_Envelope)
            return msgspec.json.decode(data, type=_Envelope)
        except (ValueError, RecursionError):
            return None

    async def _open_connection(self, *, resume: bool) -> None:
        """Connect, read hello, identify or resume; raises :class:`_Reconnect`."""
        try:
            ws = await connect(self.url, open_timeout=self.connect_timeout, max_size=None,
                               compression=None, ping_interval=None, close_timeout=5)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise _Reconnect(None, f"connect failed: {exc}") from exc
        self._ws = ws
        try:
            async with asyncio.timeout(self.connect_timeout + self.limits.identify_timeout_ms
                                       / 1000):
                hello = await self._recv(ws)
                if not isinstance(hello, Hello):
                    raise _Reconnect(None, f"expected hello, got {type(hello).__name__}")
                self.hello = hello
                if resume and self.session_id is not None:
                    await self._send(Resume(token=self.token, session_id=self.session_id,
                                            seq=self.last_seq,
                                            positions=self._resume_positions()))
                else:
                    await self._send(Identify(token=self.token, client=self.client_name))
                while True:
                    frame = await self._recv(ws)
                    if isinstance(frame, Ready):
                        self._ready(frame)
                        break
                    if isinstance(frame, Resumed):
                        self.resumes += 1
                        log.info("resumed session %s, %d replayed", frame.session_id,
                                 frame.replayed)
                        break
                    if isinstance(frame, InvalidSession):
                        self.session_id = None
                        raise _Reconnect(CloseCode.SESSION_INVALID, frame.reason,
                                         resume=False, delay_s=random.uniform(0.1, 1.0))
                    if isinstance(frame, HeartbeatAck):
                        continue
                    log.debug("ignoring %s before ready", type(frame).__name__)
        except ConnectionClosed as exc:
            await self._discard(ws)
            raise self._after_close(exc) from None
        except (TimeoutError, ConnectionLost) as exc:
            await self._discard(ws)
            raise _Reconnect(None, f"handshake failed: {exc!r}") from None
        except BaseException:
            await self._discard(ws)
            raise
        self._ack_pending = False
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._heartbeat_loop(ws, self.hello.heartbeat_interval_ms / 1000),
            name="hearth-client-heartbeat")
        self._open.set()

    def _ready(self, ready: Ready) -> None:
        self.ready = ready
        self.session_id = ready.session_id
        self.last_seq = 0
        self.positions = {}
        for snapshot in ready.communities:
            self._bring(snapshot.channels)
        self._bring(ready.private_channels)
        self.identifies += 1
        for callback in self._on_ready:
            try:
                callback(ready)
            except Exception:
                log.exception("on_ready callback failed")

    def _bring(self, channels: list[Channel]) -> None:
        for channel in channels:
            self.positions.setdefault(channel.id, channel.last_seq)

    def _track(self, event: Event) -> bool:
        """Keep :attr:`positions`; False for a ``message_create`` already received (a
        resume may repeat one for a channel whose position it was not sent)."""
        if isinstance(event, MessageCreated):
            message = event.message
            if message.seq <= self.positions.get(message.channel_id, -1):
                self.duplicates_dropped += 1
                return False
            self.positions.pop(message.channel_id, None)  # most recent last
            self.positions[message.channel_id] = message.seq
        elif isinstance(event, ChannelCreated | ChannelUpdated):
            self._bring([event.channel])
        elif isinstance(event, CommunityAvailable):
            self._bring(event.snapshot.channels)
        elif isinstance(event, ChannelDeleted):
            self.positions.pop(event.channel_id, None)
        return True

    def _resume_positions(self) -> dict[int, int]:
        """The most recently advanced positions, within the server's limit."""
        limit = self.limits.max_resume_positions
        items = list(self.positions.items())
        return dict(items[-limit:]) if limit > 0 else {}

    async def _discard(self, ws: ClientConnection) -> None:
        if self._ws is ws:
            self._ws = None
        with contextlib.suppress(Exception):
            await ws.close(code=CloseCode.UNKNOWN_ERROR, reason="reconnecting")

    def _after_close(self, exc: ConnectionClosed) -> _Reconnect:
        """What a close means: resume, identify anew, or stop (HearthClosed)."""
        close = exc.rcvd
        code = close.code if close is not None else _ABNORMAL_CLOSURE
        reason = close.reason if close is not None else "connection lost"
        if code in RESUMABLE_CLOSE_CODES or code == _ABNORMAL_CLOSURE:
            return _Reconnect(code, reason, resume=True)
        if code in (CloseCode.SESSION_INVALID, CloseCode.IDENTIFY_TIMEOUT):
            if code == CloseCode.SESSION_INVALID:
                self.session_id = None
            return _Reconnect(code, reason, resume=False)
        raise HearthClosed(code, reason or "closed by the server")

    async def _run(self) -> None:
        """Read frames; on a dropped connection, reconnect (resuming) until closed."""
        failures = 0
        try:
            while True:
                ws = self._ws
                assert ws is not None
                try:
                    await self._read_loop(ws)
                    raise _Reconnect(None, "connection ended")
                except _Reconnect as exc:
                    retry = exc
                self._open.clear()
                await self._stop_heartbeat()
                await self._discard(ws)
                self._fail_pending(ConnectionLost(f"connection closed: {retry.reason}"))
                while True:
                    failures += 1
                    if (self.max_reconnect_attempts is not None
                            and failures > self.max_reconnect_attempts):
                        raise HearthClosed(retry.code, f"gave up reconnecting: {retry.reason}")
                    delay = retry.delay_s if retry.delay_s is not None else self._backoff(failures)
                    log.info("connection closed (%s %s); reconnecting in %.2fs",
                             retry.code, retry.reason, delay)
                    await asyncio.sleep(delay)
                    self.reconnects += 1
                    try:
                        await self._open_connection(resume=retry.resume)
                    except _Reconnect as again:
                        retry = again
                        continue
                    failures = 0
                    break
        except HearthClosed as closed:
            log.warning("session ended: %s", closed)
            self._closed = closed
            self._open.clear()
            await self._stop_heartbeat()
            self._fail_pending(closed)
            self._finish(closed)
            if self._ws is not None:
                await self._discard(self._ws)

    def _backoff(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(max_backoff, 0.5 * 2**failures)]."""
        return random.uniform(0.05, min(self.max_backoff, 0.5 * 2 ** min(failures, 16)))

    async def _read_loop(self, ws: ClientConnection) -> None:
        while True:
            try:
                frame = await self._recv(ws)
            except ConnectionClosed as exc:
                raise self._after_close(exc) from None
            if isinstance(frame, Dispatch):
                if frame.s <= self.last_seq:
                    continue  # already seen (never expected; resume replays after seq)
                self.last_seq = frame.s
                if self._track(frame.d):
                    self._deliver(frame.d)
            elif isinstance(frame, Ok):
                future = self._pending.get(frame.id)
                if future is not None and not future.done():
                    future.set_result(frame.data)
            elif isinstance(frame, Error):
                future = self._pending.get(frame.id) if frame.id is not None else None
                if future is not None and not future.done():
                    future.set_exception(HearthError(frame.code, frame.message,
                                                     frame.retry_after_ms))
                else:
                    log.warning("server error %s: %s", frame.code, frame.message)
            elif isinstance(frame, HeartbeatAck):
                self._ack_pending = False
            elif isinstance(frame, Reconnect):
                # The close (1001) follows; wait as asked before reconnecting.
                delay = frame.retry_after_ms / 1000 + random.uniform(0, 0.25)
                raise _Reconnect(CloseCode.GOING_AWAY, "server asked to reconnect",
                                 resume=True, delay_s=delay)
            else:
                log.debug("ignoring %s", type(frame).__name__)

    def _deliver(self, event: Event) -> None:
        if self._events.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._events.get_nowait()
            self.dropped_events += 1
            if self.dropped_events in (1, 10, 100) or self.dropped_events % 1000 == 0:
                log.warning("event queue full: %d events dropped so far", self.dropped_events)
        self._events.put_nowait(event)

    async def _heartbeat_loop(self, ws: ClientConnection, interval: float) -> None:
        await asyncio.sleep(interval * random.uniform(0.5, 1.0))
        while True:
            if self._ack_pending:
                # A zombie connection: drop it (no close handshake to wait for) and let
                # the reader resume on a new one.
                log.warning("heartbeat not acknowledged; reconnecting")
                ws.transport.abort()
                return
            self._ack_pending = True
            try:
                await self._send(Heartbeat(seq=self.last_seq or None))
            except ConnectionLost:
                return
            await asyncio.sleep(interval)

    async def _stop_heartbeat(self) -> None:
        task, self._heartbeat = self._heartbeat, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _fail_pending(self, error: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    def _finish(self, error: HearthClosed | None) -> None:
        if self._finished:
            return
        self._finished = True
        if self._events.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._events.get_nowait()
        self._events.put_nowait(_End(error))
