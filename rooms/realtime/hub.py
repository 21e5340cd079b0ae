"""The hub: routes events from the bus to this process's sessions, encoding once.

Publishing encodes an event exactly once (JSON) and hands the bytes to the bus. On
receipt, the hub looks up the local sessions subscribed to the topic and gives each the
same bytes; a session only splices its sequence number in front (see
``protocol/codec.py``). A msgpack session gets the event transcoded once per event per
process, not once per recipient.

Bus payloads are a fixed 17-byte header plus the encoded event::

    kind (1 byte: b"E" plain, b"C" control) | published_at (float64, unix ms)
    | channel seq (uint64; the message's seq for message_create, else 0) | event JSON

so a receiving process can route, measure publish-to-deliver latency and check channel
order without decoding the event. Most events are *plain*: delivered as they are. A few
are *control* events that change what a session may see (a channel created, a community
joined, a role changed); the hub decodes those once and runs, for each recipient, the
handlers the domains registered for the type (``rooms/realtime/control.py``; the core view of
channels, communities and access is ``rooms/realtime/member_view.py``), which update the
session's view and subscriptions before the event is delivered.

The bus is lossy (Redis pub/sub drops what is published while a subscriber reconnects);
PostgreSQL is the record. For every channel topic the hub remembers the newest message
seq it delivered. A ``message_create`` that skips ahead triggers a catch-up: the missing
messages are read from PostgreSQL and delivered first, in order, and events arriving
meanwhile wait behind them; one at or below the remembered seq is a duplicate and is
dropped. After the bus reconnects, :meth:`Hub.catch_up_all` does the same for every
channel. Only messages are sequenced: a lost edit, reaction or typing event stays lost
(clients see the current state in history).

Attaching has the same hole at its start: a channel this process did not carry starts
at the seq of the snapshot the first session read, and a message committed before the
bus confirms the new subscription may never arrive, with nothing after it to reveal the
gap (the last message of a conversation). So every channel newly subscribed is
*confirmed*: once the bus says the subscription is live, the channel's head is read
from PostgreSQL and anything between the start and the head is repaired like a gap.
Whatever is committed after that read is published after the subscription was live,
so the bus brings it. Sessions attaching to a channel the hub already carried are
covered by the same confirmation (or, when the hub had delivered past their snapshot,
by :meth:`rooms.realtime.ready.SessionOpener.catch_up`).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec

from protocol.chat import MessageCreated
from protocol.codec import JSON, Codec
from protocol.frames import Event
from protocol.models import Message
from rooms.realtime.bus import Bus, channel_topic
from rooms.realtime.control import ControlRegistry
from rooms.realtime.member_view import MemberViewControl, RefreshAccess
from rooms.realtime.outages import ThrottledLog
from rooms.realtime.sessions import Session

log = logging.getLogger(__name__)

_PLAIN = b"E"
_CONTROL = b"C"
_EPHEMERAL = b"T"
"""Ephemeral (typing, presence, speaking: marked by their domains): the first thing a
congested client goes without."""
_HEADER = struct.Struct("!cdQ")
_event_decoder = msgspec.json.Decoder(Event)

FetchMissing = Callable[[int, int, int], Awaitable[list[Message]]]
"""(channel id, after seq, up to seq inclusive) -> messages from PostgreSQL, in order."""
ReadHeads = Callable[[list[int]], Awaitable[dict[int, int]]]
"""(channel ids) -> channel id -> newest committed message seq, from PostgreSQL."""
LatencyObserver = Callable[[float], None]


class Hub:
    """Local fan-out. Owns the mapping topic -> sessions and the bus subscriptions."""

    def __init__(self, bus: Bus, fetch_missing: FetchMissing | None = None,
                 observe_latency: LatencyObserver | None = None, *,
                 refresh_access: RefreshAccess | None = None,
                 control: ControlRegistry | None = None,
                 read_heads: ReadHeads | None = None) -> None:
        self.bus = bus
        self.control = control or ControlRegistry()
        """The control-event handlers and view listeners the domains registered
        (``rooms/realtime/control.py``); the session's core view (channels, communities,
        access) registers first, here."""
        self.fetch_missing = fetch_missing
        self.read_heads = read_heads
        """How a newly subscribed channel is confirmed (see the module docstring);
        without it (or ``fetch_missing``) channels are not confirmed."""
        self._unconfirmed: set[int] = set()
        self._confirming = False
        self._targets: dict[int, int] = {}
        """Channels whose repair is running: the head a later check wants reached."""
        self.observe_latency = observe_latency
        self.before_publish: Callable[[int], Awaitable[None]] | None = None
        """Awaited with the channel id before any event but a ``message_create`` is
        published to a channel topic: the group-commit writer's ``after_creates``, so
        an edit, reaction or delete never overtakes the create it refers to on the bus
        (see ``rooms/chat/group_commit.py``)."""
        self._subscribers: dict[str, set[Session]] = {}
        self._last_seq: dict[int, int] = {}
        self._held: dict[int, list[tuple[str, bytes]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._repair_log = ThrottledLog(log)
        self._listeners: dict[str, Callable[[bytes], None]] = {}
        self.member_views = MemberViewControl(self, self.control,
                                              refresh_access=refresh_access,
                                              spawn=self._spawn)
        self.deliveries = 0
        self.events_in = 0
        self.duplicates_dropped = 0
        self.gaps_repaired = 0
        self.ephemeral_dropped = 0
        bus.set_handler(self._on_bus_message)

    # ----------------------------------------------------------------------- publishing

    def encode(self, topic: str, event: Event) -> tuple[str, bytes]:
        kind = _CONTROL if self.control.is_control(event) else \
            _EPHEMERAL if self.control.is_ephemeral(event) else _PLAIN
        seq = event.message.seq if isinstance(event, MessageCreated) else 0
        header = _HEADER.pack(kind, time.time() * 1000.0, seq)
        return topic, header + JSON.encode_event(event)

    async def publish(self, topic: str, event: Event) -> None:
        if self.before_publish is not None and topic.startswith("ch."):
            await self.before_publish(int(topic[3:]))
        await self.bus.publish(*self.encode(topic, event))

    async def publish_many(self, items: list[tuple[str, Event]]) -> None:
        if self.before_publish is not None:
            for channel_id in {int(t[3:]) for t, _ in items if t.startswith("ch.")}:
                await self.before_publish(channel_id)
        await self.bus.publish_many([self.encode(t, e) for t, e in items])

    async def publish_created(self, messages: list[Message]) -> None:
        """Publish committed messages as ``message_create`` events, in the order given
        (the group-commit writer's publisher; not held by :attr:`before_publish`)."""
        await self.bus.publish_many([self.encode(channel_topic(m.channel_id),
                                                 MessageCreated(message=m))
                                     for m in messages])

    # ---------------------------------------------------------------------- subscribing

    def attach(self, session: Session) -> dict[int, int]:
        """Subscribe a session to its topics. Returns, per channel the hub already
        carried, how far it has delivered it here: a session whose snapshot is older
        missed (snapshot, that] and must catch it up (:meth:`ReadyService.catch_up`)."""
        for topic in session.topics():
            self._add(session, topic)
        return {channel_id: last for channel_id in session.channels
                if (last := self._last_seq.get(channel_id)) is not None}

    def detach(self, session: Session) -> None:
        for topic in session.topics():
            self._remove(session, topic)

    def subscribe(self, session: Session, topic: str) -> None:
        """Add one topic to an attached session (the moderator feed, a presence
        subscription)."""
        self._add(session, topic)

    def unsubscribe(self, session: Session, topic: str) -> None:
        self._remove(session, topic)

    def subscriber_count(self, topic: str) -> int:
        return len(self._subscribers.get(topic, ()))

    def topic_count(self) -> int:
        return len(self._subscribers)

    def _add(self, session: Session, topic: str) -> None:
        subscribers = self._subscribers.get(topic)
        if subscribers is None:
            subscribers = self._subscribers[topic] = set()
            self.bus.subscribe(topic)
            if topic.startswith("ch."):
                channel_id = int(topic[3:])
                known = session.channels.get(channel_id)
                # The member's snapshot says how far the channel was when it was read;
                # anything newer that the bus does not bring is caught up from PostgreSQL.
                self._last_seq[channel_id] = known.last_seq if known else 0
                self._confirm_later(channel_id)
        subscribers.add(session)

    def _remove(self, session: Session, topic: str) -> None:
        subscribers = self._subscribers.get(topic)
        if subscribers is None:
            return
        subscribers.discard(session)
        if not subscribers:
            del self._subscribers[topic]
            self.bus.unsubscribe(topic)
            if topic.startswith("ch."):
                self._last_seq.pop(int(topic[3:]), None)
                self._held.pop(int(topic[3:]), None)
                self._targets.pop(int(topic[3:]), None)

    # ------------------------------------------------------------------------ receiving

    def listen(self, topic: str, callback: Callable[[bytes], None]) -> None:
        """Receive a process-internal topic (e.g. ``x.automod``: rule caches to drop):
        its payloads go to ``callback`` on every node, never to sessions. Publish raw
        bytes to it with ``hub.bus.publish``. The callback must not block."""
        self._listeners[topic] = callback
        self.bus.subscribe(topic)

    def _on_bus_message(self, topic: str, payload: bytes) -> None:
        listener = self._listeners.get(topic)
        if listener is not None:
            listener(payload)
            return
        if topic not in self._subscribers:
            return
        self.events_in += 1
        kind, published_at, seq = _HEADER.unpack_from(payload)
        if self.observe_latency is not None:
            self.observe_latency(time.time() * 1000.0 - published_at)
        if self._held and topic.startswith("ch."):
            held = self._held.get(int(topic[3:]))
            if held is not None:
                # A catch-up is running: everything on the channel waits behind it, not
                # only the sequenced creates, or an edit, reaction or delete would reach
                # clients before the message it refers to.
                held.append((topic, payload))
                return
        if seq:
            channel_id = int(topic[3:])
            last = self._last_seq.get(channel_id, 0)
            if seq <= last:
                self.duplicates_dropped += 1
                return
            if seq > last + 1 and self.fetch_missing is not None:
                self._held[channel_id] = [(topic, payload)]
                self._spawn(self._repair(channel_id, last, seq - 1))
                return
            self._last_seq[channel_id] = seq
            self._deliver(topic, kind, payload[_HEADER.size:], channel_id, seq)
            return
        # Unsequenced events on a channel (edits, deletes, reactions...) name their
        # channel too: a mirrored session records where they stood among its creates.
        self._deliver(topic, kind, payload[_HEADER.size:],
                      int(topic[3:]) if topic.startswith("ch.") else 0)

    def _deliver(self, topic: str, kind: bytes, body: bytes, channel_id: int = 0,
                 seq: int = 0) -> None:
        subscribers = self._subscribers.get(topic)
        if not subscribers:
            return
        recipients = list(subscribers)
        if kind == _CONTROL:
            try:
                event = _event_decoder.decode(body)
            except msgspec.DecodeError:
                log.exception("undecodable control event on %s", topic)
                return
            control = self.control
            everyone = recipients
            recipients = [s for s in everyone if control.apply(s, topic, event)]
            for session in everyone:
                control.view_changed(session, event)
        ephemeral = kind == _EPHEMERAL
        bodies: dict[Codec, bytes] = {JSON: body}
        for session in recipients:
            if ephemeral and session.congested():
                self.ephemeral_dropped += 1
                continue
            encoded = bodies.get(session.codec)
            if encoded is None:
                encoded = bodies[session.codec] = session.codec.encode_event(
                    _event_decoder.decode(body))
            session.deliver(encoded, channel_id, seq)
        self.deliveries += len(recipients)

    # ------------------------------------------------------------------------- catch-up

    def catch_up_all(self, newest: dict[int, int]) -> None:
        """After a bus reconnect (or a new subscription's confirmation): repair every
        channel whose newest seq in PostgreSQL (``newest``: channel id -> last_seq) is
        ahead of what was delivered here. A channel whose repair is already running is
        repaired again after it, if that one stopped short of ``last_seq``."""
        for channel_id, last_seq in newest.items():
            last = self._last_seq.get(channel_id)
            if last is None or last_seq <= last:
                continue
            if channel_id in self._held:
                self._targets[channel_id] = max(last_seq, self._targets.get(channel_id, 0))
                continue
            self._held[channel_id] = []
            self._spawn(self._repair(channel_id, last, last_seq))

    def _confirm_later(self, channel_id: int) -> None:
        if self.read_heads is None or self.fetch_missing is None:
            return
        self._unconfirmed.add(channel_id)
        if not self._confirming:
            self._confirming = True
            self._spawn(self._confirm())

    async def _confirm(self) -> None:
        """Confirm the channels newly subscribed (batched: everything subscribed while
        one confirmation runs waits for the next). Retried with back-off while the bus
        or PostgreSQL cannot answer; a bus that reconnects also catches up every
        channel (:meth:`catch_up_all`)."""
        assert self.read_heads is not None
        failures = 0
        try:
            while self._unconfirmed:
                channel_ids, self._unconfirmed = self._unconfirmed, set()
                try:
                    await self.bus.sync_subscriptions()
                    heads = await self.read_heads(
                        [c for c in channel_ids if c in self._last_seq])
                except Exception as exc:
                    failures += 1
                    self._unconfirmed |= {c for c in channel_ids if c in self._last_seq}
                    if failures == 1:
                        log.warning("confirming %d new channel subscription(s) failed "
                                    "(%s: %s); retrying", len(channel_ids),
                                    type(exc).__name__, exc)
                    await asyncio.sleep(min(2.0, 0.05 * 2 ** failures))
                    continue
                failures = 0
                self.catch_up_all(heads)
        finally:
            self._confirming = False

    def subscribed_channels(self) -> list[int]:
        return list(self._last_seq)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _repair(self, channel_id: int, after: int, upto: int) -> None:
        """Deliver messages (after, upto] from PostgreSQL, then whatever waited.

        While PostgreSQL cannot answer, the channel stays held (what arrives meanwhile
        waits behind the repair) and the read is retried with back-off, logged once per
        interval: going on without the missing messages would find the same gap in
        what was held and start another repair at once, a tight loop."""
        assert self.fetch_missing is not None
        topic = channel_topic(channel_id)
        mine = self._held.get(channel_id)
        failures = 0
        while True:
            try:
                missing = await self.fetch_missing(channel_id, after, upto)
                break
            except Exception as exc:
                failures += 1
                self._repair_log.warning(
                    "catch-up", "catch-up of channel %d from seq %d failed (%s: %s); "
                    "retrying", channel_id, after, type(exc).__name__, exc)
                await asyncio.sleep(min(2.0, 0.05 * 2 ** failures))
                if self._held.get(channel_id) is not mine:
                    return  # unsubscribed meanwhile (a later repair owns it now, if any)
        if failures:
            self._repair_log.resolved("catch-up")
        held = self._held.pop(channel_id, [])
        if topic not in self._subscribers:
            return
        last = self._last_seq.get(channel_id, after)
        for message in missing:
            if message.seq > last:
                _, payload = self.encode(topic, MessageCreated(message=message))
                self._deliver(topic, _PLAIN, payload[_HEADER.size:], channel_id, message.seq)
                last = message.seq
                self.gaps_repaired += 1
        self._last_seq[channel_id] = last
        for held_topic, payload in held:
            self._on_bus_message(held_topic, payload)
        target = self._targets.pop(channel_id, 0)
        if target:
            self.catch_up_all({channel_id: target})
