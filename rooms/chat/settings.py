"""The owner's settings page's own operations: a community's name and description, a channel
(name, topic, position, category), list and revoke invites.

Everything else the settings page does (channels, roles, overrides, automod, invites,
live sessions) already has a route; these fill the gaps. Same rules as the rest of
rooms/: the resolver decides (``MANAGE_COMMUNITY`` for the community and its invites,
``MANAGE_CHANNELS`` for channels), every change is audited, a channel change reaches
its viewers as ``channel_update``. A community's new name has no event of its own yet:
members see the new name when they next connect (docs/ASSUMPTIONS.md).
"""

from __future__ import annotations

from persistence import audit as audit_db
from persistence import channels as channels_db
from persistence import community_settings as settings_db
from persistence.database import Database
from protocol.chat import ChannelUpdated
from protocol.codes import ErrorCode
from protocol.community_admin import Invite
from protocol.models import Channel, ChannelKind, Community, User
from rooms.chat.chat import check_text
from rooms.errors import RequestError, not_found
from rooms.realtime.access import AccessResolver
from rooms.realtime.bus import channel_topic
from rooms.realtime.hub import Hub
from rooms.realtime.permissions import Permission

_EDITABLE = frozenset({ChannelKind.TEXT, ChannelKind.ANNOUNCEMENT, ChannelKind.CATEGORY,
                       ChannelKind.VOICE, ChannelKind.STAGE})


class CommunitySettings:
    """Owner and admin operations on a community's own settings."""

    def __init__(self, db: Database, hub: Hub, access: AccessResolver) -> None:
        self.db = db
        self.hub = hub
        self.access = access

    async def update(self, actor: User, community_id: int, *, name: str | None,
                     description: str | None) -> Community:
        """Change the name and/or description (None keeps one); audited as
        ``community.update`` with what changed."""
        await self.access.require(community_id, actor.id, Permission.MANAGE_COMMUNITY)
        if name is not None:
            name = name.strip()
            if not 1 <= len(name) <= 100:
                raise RequestError(ErrorCode.INVALID_ARGUMENT, "a name is 1 to 100 characters")
        if description is not None:
            description = description.strip()
        check_text(name or "", description or "")
        async with self.db.transaction("community.update") as conn:
            before = await conn.fetchrow(
                "SELECT name, description FROM communities WHERE id = $1 FOR UPDATE",
                community_id)
            community = await settings_db.update_community(conn, community_id, name=name,
                                                           description=description)
            if before is None or community is None:
                raise not_found("unknown community")
            changed = [k for k in ("name", "description")
                       if getattr(community, k) != before[k]]
            if changed:
                await audit_db.record(conn, community_id=community_id, actor_id=actor.id,
                                      action="community.update", target_type="community",
                                      target_id=community_id, reason=None,
                                      before={k: before[k] for k in changed},
                                      after={k: getattr(community, k) for k in changed})
        return community

    async def update_channel(self, actor: User, channel_id: int, *, name: str | None,
                             topic: str | None, position: int | None,
                             parent_id: int | None) -> Channel:
        """``parent_id`` 0 takes the channel out of its category."""
        await self.access.require_channel(channel_id, actor.id, Permission.MANAGE_CHANNELS)
        async with self.db.connection() as conn:
            channel = await channels_db.get_channel(conn, channel_id)
        if channel is None or channel.community_id is None or channel.kind not in _EDITABLE:
            raise not_found("unknown channel")
        cid = channel.community_id
        if name is not None:
            name = name.strip()
            if not 1 <= len(name) <= 100:
                raise RequestError(ErrorCode.INVALID_ARGUMENT, "a name is 1 to 100 characters")
        check_text(name or "", topic or "")
        async with self.db.transaction("channel.update") as conn:
            if parent_id:
                parent = await channels_db.get_channel(conn, parent_id)
                if parent is None or parent.community_id != cid \
                        or parent.kind is not ChannelKind.CATEGORY \
                        or channel.kind is ChannelKind.CATEGORY:
                    raise RequestError(ErrorCode.INVALID_ARGUMENT,
                                       "parent must be a category of the same community "
                                       "(and a category has none)")
            await settings_db.update_channel(conn, channel_id, name=name, topic=topic,
                                             position=position, parent_id=parent_id or None,
                                             clear_parent=parent_id == 0)
            updated = await channels_db.get_channel(conn, channel_id)
            assert updated is not None
            changed = {k for k in ("name", "topic", "position", "parent_id")
                       if getattr(updated, k) != getattr(channel, k)}
            if changed:
                await audit_db.record(
                    conn, community_id=cid, actor_id=actor.id, action="channel.update",
                    target_type="channel", target_id=channel_id, reason=None,
                    before={k: getattr(channel, k) for k in sorted(changed)},
                    after={k: getattr(updated, k) for k in sorted(changed)})
        if changed:
            await self.hub.publish(channel_topic(channel_id), ChannelUpdated(channel=updated))
        return updated

    async def invites(self, actor: User, community_id: int) -> list[Invite]:
        await self.access.require(community_id, actor.id, Permission.MANAGE_COMMUNITY)
        async with self.db.connection() as conn:
            return await settings_db.list_invites(conn, community_id)

    async def revoke_invite(self, actor: User, community_id: int, code: str) -> None:
        await self.access.require(community_id, actor.id, Permission.MANAGE_COMMUNITY)
        async with self.db.transaction("invite.revoke") as conn:
            if not await settings_db.delete_invite(conn, community_id, code):
                raise not_found("unknown invite")
            await audit_db.record(conn, community_id=community_id, actor_id=actor.id,
                                  action="invite.revoke", target_type="invite",
                                  target_id=None, reason=None, before={"code": code},
                                  after=None)
