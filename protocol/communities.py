"""Community membership on the gateway: the events that tell a session it joined or left
a community, and that its members joined, changed or left.

Published by ``rooms/chat/communities.py`` and the moderation services (a kick or ban is a
``community_unavailable`` carrying the sanction).
"""

from __future__ import annotations

from protocol.base import EventBase
from protocol.models import CommunitySnapshot, Id, Member
from protocol.moderation import Sanction


class CommunityAvailable(EventBase, tag="community_available"):
    """You joined a community (or it was created): its snapshot."""

    snapshot: CommunitySnapshot


class CommunityUnavailable(EventBase, tag="community_unavailable"):
    """You left or were removed from a community. ``sanction`` says why when a
    moderator kicked or banned you (null when you left)."""

    community_id: Id
    sanction: Sanction | None = None
    """The kick or ban that removed you, when it was one."""


class MemberJoined(EventBase, tag="member_join"):
    """Someone joined a community you are in."""

    member: Member


class MemberUpdated(EventBase, tag="member_update"):
    """A member's role changed."""

    member: Member


class MemberLeft(EventBase, tag="member_leave"):
    """Someone left or was removed from a community you are in."""

    community_id: Id
    user_id: Id


__all__ = [
    "CommunityAvailable",
    "CommunityUnavailable",
    "MemberJoined",
    "MemberLeft",
    "MemberUpdated",
]
