"""Who may see and do what: the one set of rules every path (websocket, REST) uses.

The rules are pure functions over a channel, the member's role in its community and
whether the member is listed in the channel; the callers fetch those facts (the gateway
from the session's state, REST from the database) and never decide on their own.

v1 roles are fixed (owner > admin > moderator > member); custom roles and per-channel
overrides arrive with the moderation work and will extend these functions, not replace
them.
"""

from __future__ import annotations

from protocol.models import ROLE_RANK, Channel, ChannelKind, Role

_DIRECT = (ChannelKind.DM, ChannelKind.GROUP_DM)


def outranks_or_equal(role: Role | None, minimum: Role) -> bool:
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[minimum]


def can_view(channel: Channel, role: Role | None, is_listed: bool,
             parent: Channel | None = None) -> bool:
    """May the member read ``channel``?

    DMs: listed members only. Community channels: members of the community, and for a
    private channel only those listed in it. Threads: whoever can view their parent.
    """
    if channel.kind in _DIRECT:
        return is_listed
    if role is None:
        return False
    if channel.kind is ChannelKind.THREAD:
        if parent is None:
            return False
        return can_view(parent, role, is_listed=not parent.private or is_listed)
    return not channel.private or is_listed


def can_send(channel: Channel, role: Role | None) -> bool:
    """May a member who can view ``channel`` post in it? (Archived threads: see caller.)"""
    if channel.kind is ChannelKind.CATEGORY:
        return False
    if channel.kind is ChannelKind.ANNOUNCEMENT:
        return outranks_or_equal(role, Role.MODERATOR)
    return True


def can_manage_messages(channel: Channel, role: Role | None) -> bool:
    """Delete others' messages, archive others' threads: moderators and above."""
    return channel.community_id is not None and outranks_or_equal(role, Role.MODERATOR)


def can_mention_everyone(channel: Channel, role: Role | None) -> bool:
    """``@everyone`` notifies: moderators and above in communities, anyone in a DM."""
    if channel.kind in _DIRECT:
        return True
    return outranks_or_equal(role, Role.MODERATOR)


def can_manage_channels(role: Role | None) -> bool:
    """Create channels and categories, add members to private channels: admins."""
    return outranks_or_equal(role, Role.ADMIN)


def can_create_invites(role: Role | None) -> bool:
    return role is not None


def can_set_role(actor: Role | None, target: Role, new: Role) -> bool:
    """Admins manage roles below their own; only the owner makes admins; nobody
    assigns or removes ownership this way."""
    if actor is None or target is Role.OWNER or new is Role.OWNER:
        return False
    return ROLE_RANK[actor] > ROLE_RANK[target] and ROLE_RANK[actor] > ROLE_RANK[new] \
        and outranks_or_equal(actor, Role.ADMIN)
