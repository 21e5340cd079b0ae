"""The moderation domain's state in a session, and the control events that keep it.

Enforcement in the send path (``rooms/moderation/enforcement.py``) reads timeouts, lockdowns and
join times from here without a query; they are loaded at identify
(``rooms/realtime/ready.py``) and kept current on every node by ``member_sanctioned`` and
``community_moderation_update`` on the bus. The live moderator feed (``m.<community>``)
a session subscribed to ends the moment the member loses ``MODERATE``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from protocol.communities import CommunityAvailable, CommunityUnavailable, MemberUpdated
from protocol.frames import Event
from protocol.moderation import CommunityModerationUpdated, MemberSanctioned, SanctionKind
from rooms.realtime.access import session_community_bits
from rooms.realtime.bus import mod_topic
from rooms.realtime.control import ControlRegistry, Topics, ViewKey
from rooms.realtime.permissions import Permission
from rooms.realtime.sessions import Session


class ModerationView:
    """What a session knows to enforce sanctions without a query per send."""

    __slots__ = ("account_created_ms", "feeds", "joined_ms", "lockdowns", "timeouts")

    def __init__(self) -> None:
        self.account_created_ms = 0
        self.joined_ms: dict[int, int] = {}
        """community id -> when the member joined (ms)."""
        self.timeouts: dict[int, int] = {}
        """community id -> when the member's timeout ends (ms)."""
        self.lockdowns: dict[int, tuple[int, int]] = {}
        """community id -> (member_age_s, account_age_s) while in lockdown."""
        self.feeds: set[int] = set()
        """Communities whose live moderator feed this session receives."""

    def topics(self, session: Session) -> Iterable[str]:
        return (mod_topic(c) for c in self.feeds if c in session.roles)


MODERATION = ViewKey("moderation", ModerationView)


def may_moderate(session: Session, community_id: int) -> bool:
    """Does the session's cached role carry MODERATE in the community?"""
    return bool(session_community_bits(session, community_id) & Permission.MODERATE)


class ModerationControl:
    """Applies the moderation control events to sessions' :class:`ModerationView`."""

    def __init__(self, topics: Topics, control: ControlRegistry) -> None:
        self.topics = topics
        control.on(CommunityAvailable, self._joined)
        control.on(CommunityUnavailable, self._left)
        control.on(MemberUpdated, self._member_updated)
        control.on(MemberSanctioned, self._sanctioned)
        control.on(CommunityModerationUpdated, self._lockdown)
        control.on_view_changed(self._view_changed)

    def _end_feed_unless_moderator(self, session: Session, community_id: int) -> None:
        view = session.peek(MODERATION)
        if view is not None and community_id in view.feeds \
                and not may_moderate(session, community_id):
            view.feeds.discard(community_id)
            self.topics.unsubscribe(session, mod_topic(community_id))

    def _joined(self, session: Session, topic: str, event: CommunityAvailable) -> bool:
        cid = event.snapshot.community.id
        session.view(MODERATION).joined_ms.setdefault(cid, int(time.time() * 1000))
        return True

    def _left(self, session: Session, topic: str, event: CommunityUnavailable) -> bool:
        view = session.peek(MODERATION)
        if view is None:
            return True
        cid = event.community_id
        if cid in view.feeds:
            view.feeds.discard(cid)
            self.topics.unsubscribe(session, mod_topic(cid))
        view.joined_ms.pop(cid, None)
        view.lockdowns.pop(cid, None)
        return True

    def _member_updated(self, session: Session, topic: str, event: MemberUpdated) -> bool:
        if event.member.user.id == session.user.id:
            # Lost MODERATE: the moderator feed stops at once.
            self._end_feed_unless_moderator(session, event.member.community_id)
        return True

    def _sanctioned(self, session: Session, topic: str, event: MemberSanctioned) -> bool:
        # Sent to the member's own topic: their sessions' cached timeouts change, so
        # the next send on any node is checked against the new state.
        sanction = event.sanction
        if sanction.kind is SanctionKind.TIMEOUT:
            timeouts = session.view(MODERATION).timeouts
            if event.lifted or sanction.expires_at is None:
                timeouts.pop(sanction.community_id, None)
            else:
                timeouts[sanction.community_id] = sanction.expires_at
        return True

    def _lockdown(self, session: Session, topic: str,
                  event: CommunityModerationUpdated) -> bool:
        lockdowns = session.view(MODERATION).lockdowns
        if event.lockdown:
            lockdowns[event.community_id] = (event.member_age_s, event.account_age_s)
        else:
            lockdowns.pop(event.community_id, None)
        return True

    def _view_changed(self, session: Session, event: Event | None) -> None:
        if event is None:  # an access refresh: MODERATE may be gone
            view = session.peek(MODERATION)
            for cid in list(view.feeds) if view is not None else ():
                self._end_feed_unless_moderator(session, cid)
