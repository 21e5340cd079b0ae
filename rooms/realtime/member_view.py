"""The core of a session's view: its communities, channels and access, kept current.

These are the first control handlers every hub registers (``rooms/realtime/control.py``): a
channel created, changed or deleted, a community joined or left, a member's role or a
community's permissions changed. A change of roles or overrides re-reads the member's
access to that community from PostgreSQL (:data:`RefreshAccess`), once at a time per
session and community; the channels gained or lost are then applied and told to the
client, and the view listeners are told the view changed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from protocol.chat import ChannelCreated, ChannelDeleted, ChannelUpdated
from protocol.communities import CommunityAvailable, CommunityUnavailable, MemberUpdated
from protocol.frames import Event
from protocol.models import ChannelKind
from protocol.roles import PermissionsUpdated
from rooms.realtime.access import forget_community, may_view
from rooms.realtime.bus import channel_topic, community_topic
from rooms.realtime.control import ControlRegistry, Topics
from rooms.realtime.permissions import Permission
from rooms.realtime.sessions import MemberView, Session

log = logging.getLogger(__name__)

RefreshAccess = Callable[[Session, int], Awaitable[list[Event]]]
"""(session, community id) -> re-read its access; events for channels gained/lost
(``rooms.realtime.access.AccessResolver.refresh_session``)."""
Spawn = Callable[[Coroutine[Any, Any, None]], None]
"""Run a coroutine as a task its owner cancels at close."""


class MemberViewControl:
    """Applies the core control events; see the module docstring."""

    def __init__(self, topics: Topics, control: ControlRegistry, *,
                 refresh_access: RefreshAccess | None, spawn: Spawn) -> None:
        self.topics = topics
        self.control = control
        self.refresh_access = refresh_access
        self.spawn = spawn
        self._refreshing: dict[tuple[Session, int], bool] = {}
        control.on(ChannelCreated, self._channel_changed)
        control.on(ChannelUpdated, self._channel_changed)
        control.on(ChannelDeleted, self._channel_deleted)
        control.on(CommunityAvailable, self._community_available)
        control.on(CommunityUnavailable, self._community_unavailable)
        control.on(MemberUpdated, self._member_updated)
        control.on(PermissionsUpdated, self._permissions_updated)

    def _channel_changed(self, session: Session, topic: str,
                         event: ChannelCreated | ChannelUpdated) -> bool:
        channel = event.channel
        known = channel.id in session.channels
        access = session.access
        access.bits.clear()  # kind, privacy or tier may have changed
        if topic.startswith("u.") and channel.private and channel.kind is not ChannelKind.THREAD:
            access.listed.add(channel.id)  # added to a private channel
        if channel.kind is ChannelKind.THREAD and session.parent_of(channel) is None:
            return False
        if not may_view(session, channel):
            if known:  # no longer visible (e.g. made private): gone for this member
                del session.channels[channel.id]
                self.topics.unsubscribe(session, channel_topic(channel.id))
                session.deliver(session.codec.encode_event(ChannelDeleted(
                    channel_id=channel.id, community_id=channel.community_id)))
            return False
        session.channels[channel.id] = channel
        if not known:
            session.set_cursor(channel.id, channel.last_seq)
            self.topics.subscribe(session, channel_topic(channel.id))
        return True

    def _channel_deleted(self, session: Session, topic: str, event: ChannelDeleted) -> bool:
        if session.channels.pop(event.channel_id, None) is None:
            return False
        self.topics.unsubscribe(session, channel_topic(event.channel_id))
        return True

    def _community_available(self, session: Session, topic: str,
                             event: CommunityAvailable) -> bool:
        snapshot = event.snapshot
        cid = snapshot.community.id
        session.roles[cid] = snapshot.role
        session.access.members[cid] = MemberView(
            role=snapshot.role, role_ids=frozenset(snapshot.role_ids), tier=snapshot.tier,
            base=Permission(snapshot.permissions))
        session.access.bits.clear()
        self.schedule_refresh(session, cid)  # loads the community's overrides
        self.topics.subscribe(session, community_topic(cid))
        for channel in snapshot.channels:
            session.channels[channel.id] = channel
            session.set_cursor(channel.id, channel.last_seq)
            self.topics.subscribe(session, channel_topic(channel.id))
        return True

    def _community_unavailable(self, session: Session, topic: str,
                               event: CommunityUnavailable) -> bool:
        cid = event.community_id
        if session.roles.pop(cid, None) is None:
            return False
        forget_community(session.access, cid)
        for channel_id in session.community_channel_ids(cid):
            del session.channels[channel_id]
            self.topics.unsubscribe(session, channel_topic(channel_id))
        self.topics.unsubscribe(session, community_topic(cid))
        return True

    def _member_updated(self, session: Session, topic: str, event: MemberUpdated) -> bool:
        if event.member.user.id == session.user.id:
            cid = event.member.community_id
            session.roles[cid] = event.member.role
            self.schedule_refresh(session, cid)  # base bits follow the role
        return True

    def _permissions_updated(self, session: Session, topic: str,
                             event: PermissionsUpdated) -> bool:
        cid = event.community_id
        if cid not in session.roles or (
                event.user_id is not None and event.user_id != session.user.id):
            return False
        self.schedule_refresh(session, cid)
        return True

    # ------------------------------------------------------------------ access refresh

    def schedule_refresh(self, session: Session, community_id: int) -> None:
        """Re-read the session's access to a community, once at a time per session and
        community (a change during a refresh runs one more after it)."""
        if self.refresh_access is None:
            return
        key = (session, community_id)
        if key in self._refreshing:
            self._refreshing[key] = True
            return
        self._refreshing[key] = False
        self.spawn(self._refresh(session, community_id))

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
        self.control.view_changed(session, None)

    def _apply_gain_or_loss(self, session: Session, event: Event) -> None:
        """Apply one result of a refresh to the session and tell its client."""
        if isinstance(event, ChannelCreated | ChannelUpdated):
            channel = event.channel
            known = channel.id in session.channels
            session.channels[channel.id] = channel
            if not known:
                session.set_cursor(channel.id, channel.last_seq)
                self.topics.subscribe(session, channel_topic(channel.id))
        elif isinstance(event, ChannelDeleted):
            if session.channels.pop(event.channel_id, None) is None:
                return
            self.topics.unsubscribe(session, channel_topic(event.channel_id))
        session.deliver(session.codec.encode_event(event))
