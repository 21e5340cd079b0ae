"""Who may see and do what: the one set of rules every path (websocket, REST) uses.

The rules are pure functions over a channel, the member's role in its community and
whether the member is listed in the channel; the callers fetch those facts (the gateway
from the session's state, REST from the database) and never decide on their own.

Since issue 5 the rules are permission bits: a member's *base* bits are the union of
their fixed role's default bits (:data:`FIXED_ROLE_BITS`) and their custom roles' bits;
:func:`resolve` turns base bits plus a channel's overrides, privacy and required tier
into the member's bits in that channel (Discord's order, see docs/moderation.md).
:mod:`rooms.realtime.access` feeds it, from the session's cached view on the gateway and from
PostgreSQL for REST. The older role-only helpers below remain for callers that have
not been moved yet.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from enum import IntFlag
from typing import NamedTuple

from protocol.models import ROLE_RANK, Channel, ChannelKind, Role


class Permission(IntFlag):
    """Permission bits carried by roles and by channel overrides (moderation, issue 5).

    The values are part of the wire and the database (stored as bigint), so a bit's
    number never changes; new bits take the next free number.
    """

    VIEW_CHANNEL = 1 << 0
    SEND_MESSAGES = 1 << 1
    ADD_REACTIONS = 1 << 2
    ATTACH_FILES = 1 << 3
    MENTION_EVERYONE = 1 << 4
    CREATE_THREADS = 1 << 5
    SEND_IN_THREADS = 1 << 6
    CREATE_INVITES = 1 << 7
    CONNECT_VOICE = 1 << 8
    SPEAK = 1 << 9
    MANAGE_MESSAGES = 1 << 10
    TIMEOUT_MEMBERS = 1 << 11
    KICK_MEMBERS = 1 << 12
    BAN_MEMBERS = 1 << 13
    MANAGE_CHANNELS = 1 << 14
    MANAGE_ROLES = 1 << 15
    VIEW_AUDIT_LOG = 1 << 16
    MODERATE = 1 << 17          # review queue, live moderator feed, warn, slow mode, lock
    MANAGE_AUTOMOD = 1 << 18
    MANAGE_COMMUNITY = 1 << 19  # lockdown, settings, retention policy
    BYPASS_SLOWMODE = 1 << 20
    MUTE_MEMBERS = 1 << 21      # voice: server mute (voice_server_mute)
    MOVE_MEMBERS = 1 << 22      # voice: disconnect and move (voice_disconnect, voice_move)
    MANAGE_COURSES = 1 << 23    # courses sidecar: author courses, grade, grant and revoke
    ADMINISTRATOR = 1 << 30     # every bit, and channel overrides do not apply


P = Permission
ALL_BITS = Permission(sum(p.value for p in Permission))
"""Every defined bit (ADMINISTRATOR included)."""
MEMBER_BITS = (P.VIEW_CHANNEL | P.SEND_MESSAGES | P.ADD_REACTIONS | P.ATTACH_FILES
               | P.CREATE_THREADS | P.SEND_IN_THREADS | P.CREATE_INVITES | P.CONNECT_VOICE
               | P.SPEAK)
MODERATOR_BITS = (MEMBER_BITS | P.MANAGE_MESSAGES | P.TIMEOUT_MEMBERS | P.KICK_MEMBERS
                  | P.MODERATE | P.VIEW_AUDIT_LOG | P.BYPASS_SLOWMODE | P.MENTION_EVERYONE
                  | P.MUTE_MEMBERS | P.MOVE_MEMBERS)
ADMIN_BITS = (MODERATOR_BITS | P.BAN_MEMBERS | P.MANAGE_CHANNELS | P.MANAGE_ROLES
              | P.MANAGE_AUTOMOD | P.MANAGE_COMMUNITY | P.MANAGE_COURSES)
FIXED_ROLE_BITS: dict[Role, Permission] = {
    Role.MEMBER: MEMBER_BITS, Role.MODERATOR: MODERATOR_BITS, Role.ADMIN: ADMIN_BITS,
    Role.OWNER: ALL_BITS,
}
"""Default bits of the fixed roles (CONTRACT.md). Custom roles add to these."""
DIRECT_BITS = MEMBER_BITS | P.MENTION_EVERYONE
"""What a listed member of a DM or group DM may do there."""
STAFF_SEES_TIERS = P.ADMINISTRATOR | P.MANAGE_CHANNELS
"""Base bits that see tier-gated channels whatever the member's tier (staff must see
what they manage)."""


class Override(NamedTuple):
    """One channel override: ``kind`` is ``everyone`` (target 0), ``role`` (a custom
    role id) or ``member`` (a user id)."""

    kind: str
    target_id: int
    allow: int
    deny: int


def base_bits(role: Role | None, custom: Iterable[int] = ()) -> Permission:
    """Community-level bits: the fixed role's defaults united with the custom roles'
    bits. ADMINISTRATOR (the owner's, or granted by a custom role) means every bit.
    A non-member (``role`` None) has none, whatever ``custom`` says."""
    if role is None:
        return Permission(0)
    bits = int(FIXED_ROLE_BITS[role])
    for extra in custom:
        bits |= extra
    if bits & P.ADMINISTRATOR:
        return ALL_BITS
    return Permission(bits & ALL_BITS)


def resolve(base: Permission, overrides: Sequence[Override], *, user_id: int,
            role_ids: Collection[int], kind: ChannelKind = ChannelKind.TEXT,
            private: bool = False, listed: bool = False, required_tier: int = 0,
            tier: int = 0) -> Permission:
    """The member's bits in one community channel (for a thread: pass its parent).

    Order: base bits; ADMINISTRATOR stops here with every bit (only a private channel's
    list still applies: an administrator sees it when listed or allowed VIEW by an
    override); an announcement channel takes SEND away from whoever lacks
    MANAGE_MESSAGES; a private channel takes VIEW away; then the ``everyone`` override
    (deny, then allow), the member's roles' overrides combined (all denies, then all
    allows), being listed in a private channel (allows VIEW), the member's own override
    (deny, then allow). Without VIEW nothing else remains. A member below the channel's
    required tier gets nothing unless their base bits carry ADMINISTRATOR or
    MANAGE_CHANNELS. Categories never take messages.
    """
    if not base:
        return Permission(0)
    if base & P.ADMINISTRATOR:
        bits = int(ALL_BITS)
        if private and not listed and not _apply_member(
                0, overrides, user_id, role_ids) & P.VIEW_CHANNEL:
            return Permission(0)
    else:
        bits = int(base)
        if kind is ChannelKind.ANNOUNCEMENT and not bits & P.MANAGE_MESSAGES:
            bits &= ~int(P.SEND_MESSAGES)
        if private:
            bits &= ~int(P.VIEW_CHANNEL)
        bits = _apply_member(bits, overrides, user_id, role_ids, listed=listed)
    if not bits & P.VIEW_CHANNEL:
        return Permission(0)
    if required_tier > tier and not base & STAFF_SEES_TIERS:
        return Permission(0)
    if kind is ChannelKind.CATEGORY:
        bits &= ~int(P.SEND_MESSAGES | P.SEND_IN_THREADS | P.CREATE_THREADS)
    return Permission(bits)


def _apply_member(bits: int, overrides: Sequence[Override], user_id: int,
                  role_ids: Collection[int], *, listed: bool = False) -> int:
    role_allow = role_deny = 0
    own: Override | None = None
    for o in overrides:
        if o.kind == "everyone":
            bits = (bits & ~o.deny) | o.allow
        elif o.kind == "role":
            if o.target_id in role_ids:
                role_allow |= o.allow
                role_deny |= o.deny
        elif o.kind == "member" and o.target_id == user_id:
            own = o
    bits = (bits & ~role_deny) | role_allow
    if listed:
        bits |= int(P.VIEW_CHANNEL)
    if own is not None:
        bits = (bits & ~own.deny) | own.allow
    return bits & int(ALL_BITS)


def thread_bits(parent_bits: Permission) -> Permission:
    """A thread follows its parent: who may view the parent views the thread, and
    posting in it takes SEND_IN_THREADS (not the parent's SEND_MESSAGES)."""
    if not parent_bits & P.VIEW_CHANNEL:
        return Permission(0)
    bits = parent_bits & ~P.SEND_MESSAGES
    if parent_bits & P.SEND_IN_THREADS:
        bits |= P.SEND_MESSAGES
    return bits

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
