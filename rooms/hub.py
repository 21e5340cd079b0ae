"""The hub: routes events from the bus to this process's sessions, encoding once.

Publishing encodes an event exactly once (JSON) and hands the bytes to the bus. On
receipt, the hub looks up the local sessions subscribed to the topic and gives each the
same bytes; a session only splices its sequence number in front (see
``protocol/codec.py``). A msgpack session gets the event transcoded once per event per
process, not once per recipient.

Most events are *plain*: delivered as they are, never decoded here. A few are *control*
events that change what a session may see (a channel created, a community joined, a role
changed); the hub decodes those once and updates each recipient's view and topic
subscriptions before delivering them. A one-byte kind prefix on the bus payload tells
the two apart without decoding.
"""

from __future__ import annotations

import logging

import msgspec

from protocol.codec import JSON, Codec
from protocol.frames import (
    ChannelCreated,
    ChannelDeleted,
    ChannelUpdated,
    CommunityAvailable,
    CommunityUnavailable,
    Event,
    MemberUpdated,
)
from protocol.models import ChannelKind
from rooms.bus import Bus, channel_topic, community_topic
from rooms.permissions import can_view
from rooms.sessions import Session

log = logging.getLogger(__name__)

_PLAIN = b"E"
_CONTROL = b"C"
_CONTROL_TYPES = (
    ChannelCreated, ChannelUpdated, ChannelDeleted, CommunityAvailable, CommunityUnavailable,
    MemberUpdated,
)
_event_decoder = msgspec.json.Decoder(Event)


class Hub:
    """Local fan-out. Owns the mapping topic -> sessions and the bus subscriptions."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._subscribers: dict[str, set[Session]] = {}
        self.deliveries = 0
        self.events_in = 0
        bus.set_handler(self._on_bus_message)

    # ----------------------------------------------------------------------- publishing

    @staticmethod
    def encode(topic: str, event: Event) -> tuple[str, bytes]:
        kind = _CONTROL if isinstance(event, _CONTROL_TYPES) else _PLAIN
        return topic, kind + JSON.encode_event(event)

    async def publish(self, topic: str, event: Event) -> None:
        await self.bus.publish(*self.encode(topic, event))

    async def publish_many(self, items: list[tuple[str, Event]]) -> None:
        await self.bus.publish_many([self.encode(t, e) for t, e in items])

    # ---------------------------------------------------------------------- subscribing

    def attach(self, session: Session) -> None:
        for topic in session.topics():
            self._add(session, topic)

    def detach(self, session: Session) -> None:
        for topic in session.topics():
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
        subscribers.add(session)

    def _remove(self, session: Session, topic: str) -> None:
        subscribers = self._subscribers.get(topic)
        if subscribers is None:
            return
        subscribers.discard(session)
        if not subscribers:
            del self._subscribers[topic]
            self.bus.unsubscribe(topic)

    # ------------------------------------------------------------------------ receiving

    def _on_bus_message(self, topic: str, payload: bytes) -> None:
        subscribers = self._subscribers.get(topic)
        if not subscribers:
            return
        self.events_in += 1
        kind, body = payload[:1], payload[1:]
        recipients = list(subscribers)
        if kind == _CONTROL:
            try:
                event = _event_decoder.decode(body)
            except msgspec.DecodeError:
                log.exception("undecodable control event on %s", topic)
                return
            recipients = [s for s in recipients if self._apply_control(s, topic, event)]
        bodies: dict[Codec, bytes] = {JSON: body}
        for session in recipients:
            encoded = bodies.get(session.codec)
            if encoded is None:
                encoded = bodies[session.codec] = session.codec.encode_event(
                    _event_decoder.decode(body))
            session.deliver(encoded)
        self.deliveries += len(recipients)

    def _apply_control(self, session: Session, topic: str, event: Event) -> bool:
        """Update ``session``'s view for a control event; False if it must not see it."""
        targeted = topic.startswith("u.")
        if isinstance(event, ChannelCreated | ChannelUpdated):
            channel = event.channel
            known = channel.id in session.channels
            if not targeted and not known:
                parent = session.parent_of(channel)
                if channel.kind is ChannelKind.THREAD and parent is None:
                    return False
                if not can_view(channel, session.role_in(channel),
                                session.user.id in channel.member_ids, parent):
                    return False
            session.channels[channel.id] = channel
            if not known:
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
            self._add(session, community_topic(cid))
            for channel in snapshot.channels:
                session.channels[channel.id] = channel
                self._add(session, channel_topic(channel.id))
            return True
        if isinstance(event, CommunityUnavailable):
            cid = event.community_id
            if session.roles.pop(cid, None) is None:
                return False
            for channel_id in session.community_channel_ids(cid):
                del session.channels[channel_id]
                self._remove(session, channel_topic(channel_id))
            self._remove(session, community_topic(cid))
            return True
        if isinstance(event, MemberUpdated):
            if event.member.user.id == session.user.id:
                session.roles[event.member.community_id] = event.member.role
            return True
        return True
