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
joined, a role changed); the hub decodes those once and updates each recipient's view
and subscriptions before delivering them.

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
by :meth:`rooms.ready.SessionOpener.catch_up`).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable

import msgspec

from protocol.codec import JSON, Codec
from protocol.frames import (
    ChannelCreated,
    ChannelDeleted,
    ChannelUpdated,
    CommunityAvailable,
    CommunityModerationUpdated,
    CommunityUnavailable,
    Event,
    MemberSanctioned,
    MemberUpdated,
    MessageCreated,
    PermissionsUpdated,
    PresenceUpdated,
    TypingStarted,
)
from protocol.models import ChannelKind, Message
from protocol.moderation import SanctionKind
from protocol.voice import VoiceSpeaking
from rooms.access import forget_community, may_view, session_community_bits
from rooms.bus import Bus, channel_topic, community_topic, mod_topic, presence_topic
from rooms.permissions import Permission
from rooms.sessions import MemberView, Session

log = logging.getLogger(__name__)


def may_moderate(session: Session, community_id: int) -> bool:
    """Does the session's cached role carry MODERATE in the community?"""
    return bool(session_community_bits(session, community_id) & Permission.MODERATE)

_PLAIN = b"E"
_CONTROL = b"C"
_EPHEMERAL = b"T"
"""Typing (and presence): the first thing a congested client goes without."""
_HEADER = struct.Struct("!cdQ")
_CONTROL_TYPES = (
    ChannelCreated, ChannelUpdated, ChannelDeleted, CommunityAvailable, CommunityUnavailable,
    MemberUpdated, MemberSanctioned, CommunityModerationUpdated, PermissionsUpdated,
)
_EPHEMERAL_TYPES: tuple[type, ...] = (TypingStarted, PresenceUpdated, VoiceSpeaking)
_event_decoder = msgspec.json.Decoder(Event)

FetchMissing = Callable[[int, int, int], Awaitable[list[Message]]]
"""(channel id, after seq, up to seq inclusive) -> messages from PostgreSQL, in order."""
ReadHeads = Callable[[list[int]], Awaitable[dict[int, int]]]
"""(channel ids) -> channel id -> newest committed message seq, from PostgreSQL."""
LatencyObserver = Callable[[float], None]
AfterControl = Callable[[Session, "Event | None"], None]
"""(session, the control event, or None after an access refresh) -> nothing; must not
block. Lets state held outside the session (voice rooms) follow a changed view."""
RefreshAccess = Callable[[Session, int], Awaitable[list[Event]]]
"""(session, community id) -> re-read its access; events for channels gained/lost
(``rooms.access.AccessResolver.refresh_session``)."""


class Hub:
    """Local fan-out. Owns the mapping topic -> sessions and the bus subscriptions."""

    def __init__(self, bus: Bus, fetch_missing: FetchMissing | None = None,
                 observe_latency: LatencyObserver | None = None,
                 presence_auto_max_members: int = 1_000,
                 read_heads: ReadHeads | None = None) -> None:
        self.bus = bus
        self.presence_auto_max_members = presence_auto_max_members
        """A community joined live sends its presence unasked up to this size."""
        self.fetch_missing = fetch_missing
        self.read_heads = read_heads
        """How a newly subscribed channel is confirmed (see the module docstring);
        without it (or ``fetch_missing``) channels are not confirmed."""
        self._unconfirmed: set[int] = set()
        self._confirming = False
        self._targets: dict[int, int] = {}
        """Channels whose repair is running: the head a later check wants reached."""
        self.observe_latency = observe_latency
        self._subscribers: dict[str, set[Session]] = {}
        self._last_seq: dict[int, int] = {}
        self._held: dict[int, list[tuple[str, bytes]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listeners: dict[str, Callable[[bytes], None]] = {}
        self.refresh_access: RefreshAccess | None = None
        """Set by the server: how a ``permissions_update`` re-reads a session's access."""
        self.after_control: AfterControl | None = None
        """Set by the server: told after a control event or an access refresh changed a
        session's view (rooms/voice.py disconnects or mutes a sanctioned participant)."""
        self._refreshing: dict[tuple[Session, int], bool] = {}
        self.deliveries = 0
        self.events_in = 0
        self.duplicates_dropped = 0
        self.gaps_repaired = 0
        self.ephemeral_dropped = 0
        bus.set_handler(self._on_bus_message)

    # ----------------------------------------------------------------------- publishing

    @staticmethod
    def encode(topic: str, event: Event) -> tuple[str, bytes]:
        kind = _CONTROL if isinstance(event, _CONTROL_TYPES) else \
            _EPHEMERAL if isinstance(event, _EPHEMERAL_TYPES) else _PLAIN
        seq = event.message.seq if isinstance(event, MessageCreated) else 0
        header = _HEADER.pack(kind, time.time() * 1000.0, seq)
        return topic, header + JSON.encode_event(event)

    async def publish(self, topic: str, event: Event) -> None:
        await self.bus.publish(*self.encode(topic, event))

    async def publish_many(self, items: list[tuple[str, Event]]) -> None:
        await self.bus.publish_many([self.encode(t, e) for t, e in items])

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
        if seq:
            channel_id = int(topic[3:])
            held = self._held.get(channel_id)
            if held is not None:  # a catch-up is running: wait behind it
                held.append((topic, payload))
                return
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
        self._deliver(topic, kind, payload[_HEADER.size:])

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
            everyone = recipients
            recipients = [s for s in everyone if self._apply_control(s, topic, event)]
            after = self.after_control
            if after is not None:
                for session in everyone:
                    after(session, event)
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

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _repair(self, channel_id: int, after: int, upto: int) -> None:
        """Deliver messages (after, upto] from PostgreSQL, then whatever waited."""
        assert self.fetch_missing is not None
        topic = channel_topic(channel_id)
        try:
            missing = await self.fetch_missing(channel_id, after, upto)
        except Exception:
            log.exception("catch-up of channel %d from seq %d failed", channel_id, after)
            missing = []
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

    # ------------------------------------------------------------------------- control

    def _apply_control(self, session: Session, topic: str, event: Event) -> bool:
        """Update ``session``'s view for a control event; False if it must not see it."""
        targeted = topic.startswith("u.")
        if isinstance(event, ChannelCreated | ChannelUpdated):
            channel = event.channel
            known = channel.id in session.channels
            access = session.access
            access.bits.clear()  # kind, privacy or tier may have changed
            if targeted and channel.private and channel.kind is not ChannelKind.THREAD:
                access.listed.add(channel.id)  # added to a private channel
            if channel.kind is ChannelKind.THREAD and session.parent_of(channel) is None:
                return False
            if not may_view(session, channel):
                if known:  # no longer visible (e.g. made private): gone for this member
                    del session.channels[channel.id]
                    self._remove(session, channel_topic(channel.id))
                    session.deliver(session.codec.encode_event(ChannelDeleted(
                        channel_id=channel.id, community_id=channel.community_id)))
                return False
            session.channels[channel.id] = channel
            if not known:
                session.set_cursor(channel.id, channel.last_seq)
                self._add(session, channel_topic(channel.id))
            return True
        if isinstance(event, ChannelDeleted):
            if session.channels.pop(event.channel_id, None) is None:
                return False
            self._remove(session, channel_topic(event.channel_id))
            return True
        if isinstance(event, CommunityAvailable):
            snapshot = event.snapshot
            cid = snapshot.community.id
            session.roles[cid] = snapshot.role
            session.access.members[cid] = MemberView(
                role=snapshot.role, role_ids=frozenset(snapshot.role_ids), tier=snapshot.tier,
                base=Permission(snapshot.permissions))
            session.access.bits.clear()
            self._schedule_refresh(session, cid)  # loads the community's overrides
            session.moderation.joined_ms.setdefault(cid, int(time.time() * 1000))
            self._add(session, community_topic(cid))
            if snapshot.member_count <= self.presence_auto_max_members:
                session.presence_communities.add(cid)
                self._add(session, presence_topic(cid))
            for channel in snapshot.channels:
                session.channels[channel.id] = channel
                session.set_cursor(channel.id, channel.last_seq)
                self._add(session, channel_topic(channel.id))
            return True
        if isinstance(event, CommunityUnavailable):
            cid = event.community_id
            if session.roles.pop(cid, None) is None:
                return False
            forget_community(session.access, cid)
            for channel_id in session.community_channel_ids(cid):
                del session.channels[channel_id]
                self._remove(session, channel_topic(channel_id))
            self._remove(session, community_topic(cid))
            moderation = session.moderation
            if cid in moderation.feeds:
                moderation.feeds.discard(cid)
                self._remove(session, mod_topic(cid))
            moderation.joined_ms.pop(cid, None)
            moderation.lockdowns.pop(cid, None)
            session.presence_requested.discard(cid)
            if cid in session.presence_communities:
                session.presence_communities.discard(cid)
                self._remove(session, presence_topic(cid))
            return True
        if isinstance(event, MemberUpdated):
            if event.member.user.id == session.user.id:
                cid = event.member.community_id
                session.roles[cid] = event.member.role
                self._schedule_refresh(session, cid)  # base bits follow the role
                if cid in session.moderation.feeds and not may_moderate(session, cid):
                    # Lost MODERATE: the moderator feed stops at once.
                    session.moderation.feeds.discard(cid)
                    self._remove(session, mod_topic(cid))
            return True
        if isinstance(event, MemberSanctioned):
            # Sent to the member's own topic: their sessions' cached timeouts change, so
            # the next send on any node is checked against the new state.
            sanction = event.sanction
            if sanction.kind is SanctionKind.TIMEOUT:
                if event.lifted or sanction.expires_at is None:
                    session.moderation.timeouts.pop(sanction.community_id, None)
                else:
                    session.moderation.timeouts[sanction.community_id] = sanction.expires_at
            return True
        if isinstance(event, PermissionsUpdated):
            cid = event.community_id
            if cid not in session.roles or (
                    event.user_id is not None and event.user_id != session.user.id):
                return False
            self._schedule_refresh(session, cid)
            return True
        if isinstance(event, CommunityModerationUpdated):
            if event.lockdown:
                session.moderation.lockdowns[event.community_id] = (
                    event.member_age_s, event.account_age_s)
            else:
                session.moderation.lockdowns.pop(event.community_id, None)
            return True
        return True

    # ------------------------------------------------------------------ access refresh

    def _schedule_refresh(self, session: Session, community_id: int) -> None:
        """Re-read the session's access to a community, once at a time per session and
        community (a change during a refresh runs one more after it)."""
        if self.refresh_access is None:
            return
        key = (session, community_id)
        if key in self._refreshing:
            self._refreshing[key] = True
            return
        self._refreshing[key] = False
        self._spawn(self._refresh(session, community_id))

    async def _refresh(self, session: Session, community_id: int) -> None:
        key = (session, community_id)
        try:
            while True:
                assert self.refresh_access is not None
                try:
                    events = await self.refresh_access(session, community_id)
                except Exception:
                    log.exception("access refresh of %s failed", session.session_id)
                    events = []
                if not self._refreshing.get(key):
                    break
                self._refreshing[key] = False
        finally:
            self._refreshing.pop(key, None)
        if session.is_superseded or community_id not in session.roles:
            return
        for event in events:
            self._apply_gain_or_loss(session, event)
        if self.after_control is not None:
            self.after_control(session, None)
        moderation = session.moderation
        if community_id in moderation.feeds and not may_moderate(session, community_id):
            moderation.feeds.discard(community_id)
            self._remove(session, mod_topic(community_id))

    def _apply_gain_or_loss(self, session: Session, event: Event) -> None:
        """Apply one result of a refresh to the session and tell its client."""
        if isinstance(event, ChannelCreated | ChannelUpdated):
            channel = event.channel
            known = channel.id in session.channels
            session.channels[channel.id] = channel
            if not known:
                session.set_cursor(channel.id, channel.last_seq)
                self._add(session, channel_topic(channel.id))
        elif isinstance(event, ChannelDeleted):
            if session.channels.pop(event.channel_id, None) is None:
                return
            self._remove(session, channel_topic(event.channel_id))
        session.deliver(session.codec.encode_event(event))
