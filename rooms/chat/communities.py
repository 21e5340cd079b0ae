"""Community management (REST): communities, invites, members, channels, DMs.

Each operation checks the actor's right with :mod:`rooms.realtime.permissions`, changes
PostgreSQL in one transaction, then publishes the events that let connected members'
sessions gain (or lose) what they may now see, on every node.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from persistence import accounts as accounts_db
from persistence import audit as audit_db
from persistence import channels as channels_db
from persistence import communities as communities_db
from persistence import messages as messages_db
from persistence import moderation as moderation_db
from persistence.database import Connection, Database
from protocol.chat import ChannelCreated
from protocol.codes import ErrorCode
from protocol.communities import CommunityAvailable, MemberJoined, MemberUpdated
from protocol.limits import Limits
from protocol.models import (
    Channel,
    ChannelKind,
    CommunitySnapshot,
    Member,
    Message,
    Role,
    User,
)
from rooms.chat.chat import check_text
from rooms.errors import RequestError, forbidden, not_found
from rooms.realtime.access import AccessResolver
from rooms.realtime.bus import channel_topic, community_topic, user_topic
from rooms.realtime.hub import Hub
from rooms.realtime.permissions import Permission, can_set_role
from rooms.realtime.ready import community_snapshot

STARTER_KEY = "starter_community_id"
MAX_GROUP_DM = 10
CREATABLE_KINDS = (ChannelKind.TEXT, ChannelKind.ANNOUNCEMENT, ChannelKind.CATEGORY,
                   ChannelKind.VOICE, ChannelKind.STAGE)
"""Channel kinds ``create_channel`` makes (threads and DMs have their own paths)."""


class CommunityService:
    def __init__(self, db: Database, hub: Hub, limits: Limits,
                 on_join: Callable[[int], None] | None = None,
                 access: AccessResolver | None = None) -> None:
        self.db = db
        self.access = access or AccessResolver(db)
        """The one resolver (rooms/realtime/access.py): every check here goes through it."""
        self.hub = hub
        self.limits = limits
        self.on_join = on_join
        """Counts joins per community for raid signals (rooms/moderation/raid.py); no I/O."""

    async def _role(self, community_id: int, user_id: int) -> Role | None:
        async with self.db.connection() as conn:
            return await communities_db.get_role(conn, community_id, user_id)

    async def _member_role(self, community_id: int, user_id: int) -> Role:
        role = await self._role(community_id, user_id)
        if role is None:
            raise not_found("unknown community")
        return role

    # ------------------------------------------------------------------------ community

    async def create_community(self, owner: User, name: str) -> CommunitySnapshot:
        name = name.strip()
        check_text(name)
        if not 1 <= len(name) <= 100:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "a name is 1 to 100 characters")
        async with self.db.transaction("create_community") as conn:
            community = await communities_db.create_community_txn(
                conn, name=name, owner_id=owner.id)
            await channels_db.create_channel_txn(
                conn, kind=ChannelKind.TEXT, name="general", community_id=community.id,
                created_by=owner.id)
        snapshot = await community_snapshot(self.db, community.id, owner.id)
        assert snapshot is not None
        await self.hub.publish(user_topic(owner.id), CommunityAvailable(snapshot=snapshot))
        return snapshot

    async def communities_of(self, user: User) -> list[CommunitySnapshot]:
        async with self.db.connection() as conn:
            memberships = await communities_db.memberships(conn, user.id)
        snapshots = [await community_snapshot(self.db, c.id, user.id) for c, _ in memberships]
        return [s for s in snapshots if s is not None]

    async def create_invite(self, actor: User, community_id: int, max_uses: int | None,
                            expires_in_s: int | None) -> str:
        await self.access.require(community_id, actor.id, Permission.CREATE_INVITES)
        if max_uses is not None and max_uses < 1:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "max_uses must be positive")
        if expires_in_s is not None and expires_in_s < 1:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "expires_in_s must be positive")
        code = secrets.token_urlsafe(8)
        async with self.db.connection() as conn:
            return await communities_db.create_invite(
                conn, community_id=community_id, created_by=actor.id, code=code,
                max_uses=max_uses, expires_in_s=expires_in_s)

    async def join_by_invite(self, user: User, code: str) -> CommunitySnapshot:
        async with self.db.transaction("join_invite") as conn:
            community_id = await communities_db.redeem_invite_txn(conn, code)
            if community_id is None:
                raise not_found("unknown or expired invite")
            await self._check_may_join(conn, community_id, user.id)
            member = await communities_db.add_member_txn(conn, community_id, user.id)
        return await self._announce_join(community_id, user, member)

    async def join_directly(self, user: User, community_id: int) -> CommunitySnapshot | None:
        """Add ``user`` without an invite (the starter community)."""
        async with self.db.transaction("join_direct") as conn:
            await self._check_may_join(conn, community_id, user.id)
            member = await communities_db.add_member_txn(conn, community_id, user.id)
        return await self._announce_join(community_id, user, member)

    @staticmethod
    async def _check_may_join(conn: Connection, community_id: int, user_id: int) -> None:
        """Banned users stay out; during a lockdown joins are paused (the invite use
        rolls back with the refusal). Existing members pass (joining twice is a no-op)."""
        if await communities_db.get_role(conn, community_id, user_id) is not None:
            return
        refusal = await moderation_db.join_refusal(conn, community_id, user_id)
        if refusal is None:
            return
        why, until = refusal
        if why == "banned":
            left = None if until is None else max(
                int((until - await moderation_db.db_now(conn)).total_seconds() * 1000), 1)
            raise RequestError(ErrorCode.BANNED, "you are banned from this community",
                               retry_after_ms=left)
        raise RequestError(ErrorCode.LOCKDOWN, "the community is in lockdown: joins are paused")

    async def _announce_join(self, community_id: int, user: User,
                             member: Member | None) -> CommunitySnapshot:
        snapshot = await community_snapshot(self.db, community_id, user.id)
        if snapshot is None:
            raise not_found("unknown community")
        if member is not None:
            if self.on_join is not None:
                self.on_join(community_id)
            await self.hub.publish_many([
                (community_topic(community_id), MemberJoined(member=member)),
                (user_topic(user.id), CommunityAvailable(snapshot=snapshot)),
            ])
        return snapshot

    @staticmethod
    async def add_starter_member_txn(conn: Connection, community_id: int, user_id: int) -> None:
        await communities_db.add_member_txn(conn, community_id, user_id)

    async def ensure_starter_community(self) -> int:
        """On a new installation, a community everyone joins on registering, with a
        #general and an #introductions channel, so a newcomer has somewhere to talk."""
        async with self.db.transaction("starter_community") as conn:
            await communities_db.lock_instance_settings_txn(conn)
            existing = await communities_db.get_instance_setting(conn, STARTER_KEY)
            if isinstance(existing, int):
                return existing
            owner_id = await accounts_db.ensure_system_user_txn(conn, "hearth", "Hearth")
            community = await communities_db.create_community_txn(
                conn, name="Hearth", owner_id=owner_id)
            for name, topic in (("general", "Say hello!"),
                                ("introductions", "Who are you, and what brings you here?")):
                await channels_db.create_channel_txn(
                    conn, kind=ChannelKind.TEXT, name=name, topic=topic,
                    community_id=community.id, created_by=owner_id)
            await communities_db.set_instance_setting(conn, STARTER_KEY, community.id)
            return community.id

    # -------------------------------------------------------------------------- members

    async def members(self, actor: User, community_id: int, after: int,
                      limit: int) -> list[Member]:
        await self._member_role(community_id, actor.id)
        async with self.db.connection() as conn:
            return await communities_db.list_members(
                conn, community_id, after_user_id=after, limit=min(max(limit, 1), 1000))

    async def set_role(self, actor: User, community_id: int, user_id: int, role: Role) -> Member:
        actor_role = await self._member_role(community_id, actor.id)
        target_role = await self._role(community_id, user_id)
        if target_role is None:
            raise not_found("unknown member")
        if not can_set_role(actor_role, target_role, role):
            raise forbidden("you cannot give that role to that member")
        async with self.db.transaction("member.role") as conn:
            member = await communities_db.set_role(conn, community_id, user_id, role)
            if member is None:
                raise not_found("unknown member")
            await audit_db.record(conn, community_id=community_id, actor_id=actor.id,
                                  action="member.role", target_type="member",
                                  target_id=user_id, reason=None,
                                  before={"role": target_role.value},
                                  after={"role": role.value})
        # The member's sessions re-resolve their access on every node (rooms/realtime/hub.py).
        await self.hub.publish(community_topic(community_id), MemberUpdated(member=member))
        return member

    # ------------------------------------------------------------------------- channels

    async def create_channel(self, actor: User, community_id: int, *, name: str,
                             kind: ChannelKind, private: bool, parent_id: int | None,
                             topic: str, member_ids: list[int]) -> Channel:
        await self.access.require(community_id, actor.id, Permission.MANAGE_CHANNELS)
        if kind not in CREATABLE_KINDS:
            raise RequestError(ErrorCode.INVALID_ARGUMENT,
                               "kind is text, announcement, category, voice or stage")
        name = name.strip()
        check_text(name, topic)
        if not 1 <= len(name) <= 100 or len(topic) > 1024:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "a name is 1 to 100 characters")
        async with self.db.transaction("create_channel") as conn:
            if parent_id is not None:
                parent = await channels_db.get_channel(conn, parent_id)
                if parent is None or parent.community_id != community_id \
                        or parent.kind is not ChannelKind.CATEGORY:
                    raise RequestError(ErrorCode.INVALID_ARGUMENT, "parent is not a category")
            members: list[int] = []
            if private:
                allowed = set(await communities_db.member_ids(conn, community_id))
                members = sorted({actor.id, *(m for m in member_ids if m in allowed)})
            channel = await channels_db.create_channel_txn(
                conn, kind=kind, name=name, community_id=community_id, created_by=actor.id,
                parent_id=parent_id, private=private, topic=topic, member_ids=members)
        if private:
            await self.hub.publish_many(
                [(user_topic(m), ChannelCreated(channel=channel)) for m in members])
        else:
            await self.hub.publish(community_topic(community_id), ChannelCreated(channel=channel))
        return channel

    async def add_channel_member(self, actor: User, channel_id: int, user_id: int) -> None:
        async with self.db.connection() as conn:
            channel = await channels_db.get_channel(conn, channel_id)
        if channel is None or channel.community_id is None:
            raise not_found("unknown channel")
        await self.access.require(channel.community_id, actor.id, Permission.MANAGE_CHANNELS)
        if await self._role(channel.community_id, user_id) is None:
            raise not_found("unknown member")
        async with self.db.transaction("channel.member") as conn:
            added = await channels_db.add_channel_member(conn, channel_id, user_id)
            if added:
                await audit_db.record(conn, community_id=channel.community_id,
                                      actor_id=actor.id, action="channel.member.add",
                                      target_type="channel", target_id=channel_id,
                                      reason=None, before=None, after={"user_id": user_id})
        if added:
            await self.hub.publish(user_topic(user_id), ChannelCreated(channel=channel))

    async def open_direct(self, actor: User, user_ids: list[int]) -> Channel:
        others = sorted({u for u in user_ids if u != actor.id})
        if not others or len(others) > MAX_GROUP_DM - 1:
            raise RequestError(ErrorCode.INVALID_ARGUMENT,
                               f"a DM has 1 to {MAX_GROUP_DM - 1} other members")
        async with self.db.transaction("open_direct") as conn:
            found = await accounts_db.users_by_ids(conn, others)
            if len(found) != len(others):
                raise not_found("unknown user")
            if len(others) == 1:
                channel, created = await channels_db.get_or_create_dm_txn(
                    conn, actor.id, others[0])
            else:
                channel = await channels_db.create_channel_txn(
                    conn, kind=ChannelKind.GROUP_DM, name="", community_id=None,
                    created_by=actor.id, member_ids=[actor.id, *others])
                created = True
        if created:
            await self.hub.publish_many(
                [(user_topic(m), ChannelCreated(channel=channel)) for m in channel.member_ids])
        return channel

    async def history(self, actor: User, channel_id: int, *, before: int | None,
                      after: int | None, around: int | None,
                      limit: int) -> tuple[list[Message], bool]:
        """REST history: the same rules as the gateway, resolved from the database."""
        if limit < 1 or limit > self.limits.history_page_size:
            raise RequestError(ErrorCode.INVALID_ARGUMENT,
                               f"limit is 1 to {self.limits.history_page_size}")
        async with self.db.connection() as conn:
            channel = await channels_db.get_channel(conn, channel_id)
            if channel is None or not await self._can_view(conn, actor, channel):
                raise not_found("unknown channel")
            return await messages_db.history(conn, channel_id, before=before, after=after,
                                             around=around, limit=limit)

    async def _can_view(self, conn: Connection, actor: User,
                        channel: Channel) -> bool:
        bits = await self.access.channel_permissions_in(conn, channel, actor.id)
        return bool(bits & Permission.VIEW_CHANNEL)


__all__ = ["CommunityService", "channel_topic"]
