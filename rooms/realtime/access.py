"""The one permission resolver every operation uses (websocket and REST).

Two ways in, one rule (:func:`rooms.realtime.permissions.resolve`):

- The gateway resolves from the session's :class:`rooms.realtime.sessions.AccessView`, loaded at
  identify and kept current by control events, so a send costs a dictionary lookup,
  never a query (:func:`session_channel_bits`, :func:`session_community_bits`).
- REST and the moderation/automod services resolve from PostgreSQL
  (:class:`AccessResolver`), one or two indexed queries per call.

Live effect: every change of roles, overrides or tiers publishes a
``permissions_update`` control event on the community topic (or the member's own
topic). Each node re-reads the affected sessions' access for that community
(:meth:`AccessResolver.refresh_session`) and sends each session ``channel_create`` for
channels it gained and ``channel_delete`` for channels it lost, subscribing and
unsubscribing its channel topics, so it starts or stops receiving their messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import msgspec

from persistence import channels as channels_db
from persistence import roles as roles_db
from persistence.database import Connection, Database
from protocol.chat import ChannelCreated, ChannelDeleted, ChannelUpdated
from protocol.frames import Event
from protocol.models import Channel, ChannelKind, PermissionOverride
from rooms.errors import forbidden, not_found
from rooms.realtime.bus import channel_topic
from rooms.realtime.permissions import (
    DIRECT_BITS,
    Override,
    Permission,
    base_bits,
    resolve,
    thread_bits,
)
from rooms.realtime.sessions import AccessView, MemberView, Session

log = logging.getLogger(__name__)

_DIRECT = (ChannelKind.DM, ChannelKind.GROUP_DM)
_REFRESH_CONCURRENCY = 8
"""Sessions of one node re-read at once after a change (the pool serves the rest)."""


def as_override(o: PermissionOverride) -> Override:
    return Override(o.kind, o.target_id, o.allow, o.deny)


def member_view(access: roles_db.MemberAccess) -> MemberView:
    return MemberView(role=access.role, role_ids=frozenset(access.role_ids), tier=access.tier,
                      base=base_bits(access.role, access.custom_bits))


def bits_in(view: AccessView, user_id: int, channel: Channel,
            parent: Channel | None) -> Permission:
    """The member's bits in ``channel`` from a view (pure; no cache)."""
    if channel.kind in _DIRECT:
        return DIRECT_BITS if user_id in channel.member_ids else Permission(0)
    if channel.community_id is None:
        return Permission(0)
    member = view.members.get(channel.community_id)
    if member is None:
        return Permission(0)
    target = channel
    if channel.kind is ChannelKind.THREAD:
        if parent is None:
            return Permission(0)
        target = parent
    bits = resolve(member.base, view.overrides.get(target.id, ()), user_id=user_id,
                   role_ids=member.role_ids, kind=target.kind, private=target.private,
                   listed=target.id in view.listed, required_tier=target.required_tier,
                   tier=member.tier)
    return thread_bits(bits) if target is not channel else bits


def session_channel_bits(session: Session, channel: Channel) -> Permission:
    """The session's bits in a channel, cached until its view changes. No I/O."""
    view = session.access
    cached = view.bits.get(channel.id)
    if cached is None:
        parent = session.parent_of(channel) if channel.kind is ChannelKind.THREAD else None
        cached = view.bits[channel.id] = bits_in(view, session.user.id, channel, parent)
    return cached


def session_community_bits(session: Session, community_id: int | None) -> Permission:
    """The session's community-level bits (fixed role united with custom roles)."""
    if community_id is None:
        return Permission(0)
    member = session.access.members.get(community_id)
    return member.base if member is not None else Permission(0)


def may_view(session: Session, channel: Channel) -> bool:
    return bool(session_channel_bits(session, channel) & Permission.VIEW_CHANNEL)


def fill_view(view: AccessView, members: dict[int, roles_db.MemberAccess],
              overrides: Iterable[tuple[int, PermissionOverride]],
              listed: Iterable[int]) -> None:
    view.members = {cid: member_view(a) for cid, a in members.items()}
    view.overrides = {}
    view.override_community = {}
    _add_overrides(view, overrides)
    view.listed = set(listed)
    view.bits.clear()


def _add_overrides(view: AccessView, overrides: Iterable[tuple[int, PermissionOverride]]) -> None:
    for community_id, o in overrides:
        view.overrides.setdefault(o.channel_id, []).append(as_override(o))
        view.override_community[o.channel_id] = community_id


def forget_community(view: AccessView, community_id: int) -> None:
    """Drop what the view knows about one community (left, kicked, or re-read)."""
    view.members.pop(community_id, None)
    for channel_id in [c for c, cid in view.override_community.items() if cid == community_id]:
        del view.override_community[channel_id]
        view.overrides.pop(channel_id, None)
    view.bits.clear()


def visible_of(view: AccessView, user_id: int, candidates: list[Channel]) -> list[Channel]:
    """The candidates the member may see, parents before their threads."""
    by_id = {c.id: c for c in candidates}
    out: list[Channel] = []
    for channel in candidates:
        parent = by_id.get(channel.parent_id) if channel.kind is ChannelKind.THREAD \
            and channel.parent_id else None
        if bits_in(view, user_id, channel, parent) & Permission.VIEW_CHANNEL:
            out.append(channel)
    return out


class AccessResolver:
    """Permissions from PostgreSQL (REST, services) and the live refresh of sessions.
    One instance per process (``Services.access``)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._refresh_slots = asyncio.Semaphore(_REFRESH_CONCURRENCY)
        self.refreshes = 0

    # ------------------------------------------------------------------ from the database

    async def community_permissions(self, community_id: int, user_id: int) -> Permission:
        async with self.db.connection() as conn:
            return await self.community_permissions_in(conn, community_id, user_id)

    @staticmethod
    async def community_permissions_in(conn: Connection, community_id: int,
                                       user_id: int) -> Permission:
        access = await roles_db.member_access(conn, community_id, user_id)
        if access is None:
            return Permission(0)
        return base_bits(access.role, access.custom_bits)

    async def channel_permissions(self, channel_id: int, user_id: int) -> Permission:
        """0 when the channel does not exist or the member cannot see it."""
        async with self.db.connection() as conn:
            channel = await channels_db.get_channel(conn, channel_id)
            if channel is None:
                return Permission(0)
            return await self.channel_permissions_in(conn, channel, user_id)

    @staticmethod
    async def channel_permissions_in(conn: Connection, channel: Channel,
                                     user_id: int) -> Permission:
        if channel.kind in _DIRECT:
            return DIRECT_BITS if user_id in channel.member_ids else Permission(0)
        if channel.community_id is None:
            return Permission(0)
        access = await roles_db.member_access(conn, channel.community_id, user_id)
        if access is None:
            return Permission(0)
        target = channel
        if channel.kind is ChannelKind.THREAD:
            parent = await channels_db.get_channel(conn, channel.parent_id) \
                if channel.parent_id else None
            if parent is None:
                return Permission(0)
            target = parent
        overrides = [as_override(o) for o in await roles_db.channel_overrides(conn, target.id)]
        listed = target.private and await channels_db.is_channel_member(conn, target.id, user_id)
        bits = resolve(base_bits(access.role, access.custom_bits), overrides,
                       user_id=user_id, role_ids=set(access.role_ids), kind=target.kind,
                       private=target.private, listed=listed,
                       required_tier=target.required_tier, tier=access.tier)
        return thread_bits(bits) if target is not channel else bits

    async def member_role_ids(self, community_id: int, user_id: int) -> frozenset[int]:
        """The member's custom role ids (automod exemptions)."""
        async with self.db.connection() as conn:
            return frozenset(await roles_db.member_role_ids(conn, community_id, user_id))

    async def require(self, community_id: int, user_id: int, perm: Permission) -> None:
        """Raise ``not_found`` for a non-member, ``forbidden`` without every bit of
        ``perm``."""
        bits = await self.community_permissions(community_id, user_id)
        if not bits:
            raise not_found("unknown community")
        if bits & perm != perm:
            raise forbidden("missing permission")

    async def require_channel(self, channel_id: int, user_id: int,
                              perm: Permission) -> Permission:
        """Raise ``not_found`` for a channel the member cannot see, ``forbidden``
        without every bit of ``perm``; return the member's bits there."""
        bits = await self.channel_permissions(channel_id, user_id)
        if not bits & Permission.VIEW_CHANNEL:
            raise not_found("unknown channel")
        if bits & perm != perm:
            raise forbidden("missing permission")
        return bits

    # ------------------------------------------------------------------ sessions' views

    async def load_view(self, conn: Connection, session: Session) -> list[Channel]:
        """Fill ``session.access`` for identify; returns the community channels the
        member may see (in community, position order)."""
        user_id = session.user.id
        members = await roles_db.memberships_access(conn, user_id)
        overrides = await roles_db.overrides_for_member(conn, user_id)
        listed = await channels_db.private_channel_ids_for_user(conn, user_id)
        candidates = await channels_db.visible_community_channels(conn, user_id)
        fill_view(session.access, members, overrides, listed)
        return visible_of(session.access, user_id, candidates)

    async def refresh_session(self, session: Session, community_id: int) -> list[Event]:
        """Re-read the member's access to one community and bring the session's view
        and subscriptions up to date. Returns the events to deliver to it
        (``channel_create`` gained, ``channel_update`` changed, ``channel_delete``
        lost), in that order."""
        user_id = session.user.id
        async with self._refresh_slots, self.db.connection() as conn:
            access = await roles_db.member_access(conn, community_id, user_id)
            if access is None:
                return []
            overrides = await roles_db.overrides_for_member(conn, user_id, [community_id])
            listed = await channels_db.private_channel_ids_for_user(conn, user_id)
            candidates = await channels_db.visible_community_channels(
                conn, user_id, community_id=community_id)
        self.refreshes += 1
        view = session.access
        forget_community(view, community_id)
        view.members[community_id] = member_view(access)
        _add_overrides(view, overrides)
        view.listed = set(listed)
        visible = {c.id: c for c in visible_of(view, user_id, candidates)}
        events: list[Event] = []
        for channel_id, channel in visible.items():
            known = session.channels.get(channel_id)
            if known is None:
                events.append(ChannelCreated(channel=channel))
            elif msgspec.structs.replace(known, last_seq=channel.last_seq) != channel:
                # changed otherwise than by new messages (e.g. its required tier)
                events.append(ChannelUpdated(channel=channel))
        for channel_id in session.community_channel_ids(community_id):
            if channel_id in visible:
                continue
            known = session.channels[channel_id]
            if known.kind is ChannelKind.THREAD and known.archived \
                    and known.parent_id in visible:
                continue  # archived threads are not candidates; their parent decides
            events.append(ChannelDeleted(channel_id=channel_id, community_id=community_id))
        return events


__all__ = ["AccessResolver", "channel_topic"]
