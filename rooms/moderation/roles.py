"""Custom roles, channel overrides and membership tiers: the permission-changing ops.

Served over the websocket (:meth:`RoleService.handlers`) and REST
(server/api_roles.py) by the same methods. Each one checks the actor with
:class:`rooms.realtime.access.AccessResolver`, changes PostgreSQL and writes the audit log in
one transaction, then publishes ``permissions_update`` so every node re-resolves the
affected sessions at once (they gain or lose channels live, rooms/realtime/hub.py).

Hierarchy (docs/moderation.md, "Permissions"): a member's *rank* is unbounded for the
owner, :data:`ADMIN_RANK` for a fixed admin (above every custom role), otherwise the
highest position among their custom roles (-1 with none). Nobody grants bits they do
not hold, manages a role at or above their rank, or changes a member whose rank is not
below theirs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from persistence import audit as audit_db
from persistence import channels as channels_db
from persistence import communities as communities_db
from persistence import roles as roles_db
from persistence.database import Connection, Database
from protocol.base import Request
from protocol.chat import ChannelResult
from protocol.codes import ErrorCode
from protocol.frames import Empty, Event, Result
from protocol.limits import Limits
from protocol.models import (
    Channel,
    ChannelKind,
    CommunityRole,
    Member,
    PermissionOverride,
    Role,
)
from protocol.moderation import ModActionTaken
from protocol.roles import (
    ClearChannelOverride,
    CreateRole,
    DeleteRole,
    FetchChannelOverrides,
    FetchRoles,
    MemberResult,
    OverrideResult,
    OverridesResult,
    PermissionsUpdated,
    RoleResult,
    RolesResult,
    SetChannelOverride,
    SetChannelTier,
    SetMemberRoles,
    SetMemberTier,
    UpdateRole,
)
from rooms.errors import RequestError, forbidden, not_found
from rooms.moderation.moderation import wire_entry
from rooms.realtime.access import AccessResolver
from rooms.realtime.bus import community_topic, mod_topic, user_topic
from rooms.realtime.hub import Hub
from rooms.realtime.permissions import ALL_BITS, Permission, base_bits
from rooms.realtime.sessions import Session

P = Permission
ADMIN_RANK = 1_000_001
"""A fixed admin's rank: above every custom role (positions are at most 1,000,000)."""
OWNER_RANK = 1_000_002
_KINDS = ("everyone", "role", "member")


class Actor:
    """The acting member's standing in one community."""

    __slots__ = ("access", "bits", "rank", "user_id")

    def __init__(self, user_id: int, access: roles_db.MemberAccess,
                 positions: dict[int, int]) -> None:
        self.user_id = user_id
        self.access = access
        self.bits = base_bits(access.role, access.custom_bits)
        self.rank = rank_of(access, positions)

    def require(self, perm: Permission) -> None:
        if self.bits & perm != perm:
            raise forbidden("missing permission")

    def may_grant(self, bits: int) -> None:
        """Only bits the actor holds may be granted (or denied) by them."""
        if bits & ~int(self.bits):
            raise forbidden("you cannot grant permissions you do not have")


def rank_of(access: roles_db.MemberAccess, positions: dict[int, int]) -> int:
    if access.role is Role.OWNER:
        return OWNER_RANK
    if access.role is Role.ADMIN:
        return ADMIN_RANK
    return max((positions[r] for r in access.role_ids if r in positions), default=-1)


def _role_dict(role: CommunityRole) -> dict[str, Any]:
    return {"name": role.name, "permissions": role.permissions, "position": role.position,
            "color": role.color}


class RoleService:
    """See the module docstring. One per process."""

    def __init__(self, db: Database, hub: Hub, limits: Limits, access: AccessResolver) -> None:
        self.db = db
        self.hub = hub
        self.limits = limits
        self.access = access

    # -------------------------------------------------------------------------- helpers

    async def _actor(self, conn: Connection, community_id: int, user_id: int) -> Actor:
        access = await roles_db.member_access(conn, community_id, user_id)
        if access is None:
            raise not_found("unknown community")
        positions = {r.id: r.position for r in await roles_db.list_roles(conn, community_id)}
        return Actor(user_id, access, positions)

    async def _target_rank(self, conn: Connection, community_id: int, user_id: int) -> \
            tuple[roles_db.MemberAccess, int]:
        access = await roles_db.member_access(conn, community_id, user_id)
        if access is None:
            raise not_found("unknown member")
        positions = {r.id: r.position for r in await roles_db.list_roles(conn, community_id)}
        return access, rank_of(access, positions)

    async def _channel(self, conn: Connection, channel_id: int, user_id: int) -> Channel:
        """A community channel the actor can see (threads follow their parent: their
        overrides and tier are the parent's)."""
        channel = await channels_db.get_channel(conn, channel_id)
        if channel is None or channel.community_id is None:
            raise not_found("unknown channel")
        bits = await self.access.channel_permissions_in(conn, channel, user_id)
        if not bits & P.VIEW_CHANNEL:
            raise not_found("unknown channel")
        if channel.kind is ChannelKind.THREAD:
            raise RequestError(ErrorCode.INVALID_ARGUMENT,
                               "threads follow their parent channel: set it there")
        return channel

    def _reason(self, reason: str | None) -> str | None:
        if reason is not None and len(reason) > self.limits.max_reason_chars:
            raise RequestError(ErrorCode.INVALID_ARGUMENT,
                               f"a reason is at most {self.limits.max_reason_chars} characters")
        return reason

    async def _audit(self, conn: Connection, events: list[tuple[str, Event]], *,
                     community_id: int, actor_id: int, action: str, target_type: str,
                     target_id: int | None, reason: str | None, before: dict[str, Any] | None,
                     after: dict[str, Any] | None) -> None:
        audit_id = await audit_db.record(
            conn, community_id=community_id, actor_id=actor_id, action=action,
            target_type=target_type, target_id=target_id, reason=reason, before=before,
            after=after)
        entry = await audit_db.get(conn, audit_id)
        if entry is not None:
            events.append((mod_topic(community_id), ModActionTaken(entry=wire_entry(entry))))

    async def _publish(self, events: list[tuple[str, Event]], community_id: int,
                       user_id: int | None = None) -> None:
        """After commit: the moderator feed, then the re-resolution on every node."""
        topic = community_topic(community_id) if user_id is None else user_topic(user_id)
        events.append((topic, PermissionsUpdated(community_id=community_id, user_id=user_id)))
        await self.hub.publish_many(events)

    # ---------------------------------------------------------------------------- roles

    async def fetch_roles(self, actor_id: int, community_id: int) -> list[CommunityRole]:
        async with self.db.connection() as conn:
            await self._actor(conn, community_id, actor_id)
            return await roles_db.list_roles(conn, community_id)

    async def create_role(self, actor_id: int, req: CreateRole) -> CommunityRole:
        reason = self._reason(req.reason)
        name = req.name.strip()
        if not name or "\x00" in name:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "a role needs a name")
        events: list[tuple[str, Event]] = []
        async with self.db.transaction("role.create") as conn:
            actor = await self._actor(conn, req.community_id, actor_id)
            actor.require(P.MANAGE_ROLES)
            actor.may_grant(req.permissions)
            if req.permissions & ~int(ALL_BITS):
                raise RequestError(ErrorCode.INVALID_ARGUMENT, "unknown permission bits")
            position = req.position if req.position is not None else max(actor.rank - 1, 0)
            position = min(position, 1_000_000)
            if position >= actor.rank:
                raise forbidden("a role must rank below your highest role")
            if await roles_db.count_roles(conn, req.community_id) >= self.limits.max_custom_roles:
                raise RequestError(ErrorCode.LIMIT_EXCEEDED,
                                   f"at most {self.limits.max_custom_roles} roles")
            role = await roles_db.create_role(conn, community_id=req.community_id, name=name,
                                              permissions=req.permissions, position=position,
                                              color=req.color)
            if role is None:
                raise RequestError(ErrorCode.ALREADY_EXISTS, "a role of that name exists")
            await self._audit(conn, events, community_id=req.community_id, actor_id=actor_id,
                              action="role.create", target_type="role", target_id=role.id,
                              reason=reason, before=None, after=_role_dict(role))
        await self._publish(events, req.community_id)
        return role

    async def _managed_role(self, conn: Connection, actor_id: int,
                            role_id: int) -> tuple[CommunityRole, Actor]:
        role = await roles_db.get_role(conn, role_id)
        if role is None:
            raise not_found("unknown role")
        actor = await self._actor(conn, role.community_id, actor_id)
        actor.require(P.MANAGE_ROLES)
        if role.position >= actor.rank:
            raise forbidden("that role ranks at or above your highest role")
        return role, actor

    async def update_role(self, actor_id: int, req: UpdateRole) -> CommunityRole:
        reason = self._reason(req.reason)
        events: list[tuple[str, Event]] = []
        async with self.db.transaction("role.update") as conn:
            role, actor = await self._managed_role(conn, actor_id, req.role_id)
            name = req.name.strip() if req.name is not None else role.name
            if not name or "\x00" in name:
                raise RequestError(ErrorCode.INVALID_ARGUMENT, "a role needs a name")
            permissions = req.permissions if req.permissions is not None else role.permissions
            if permissions & ~int(ALL_BITS):
                raise RequestError(ErrorCode.INVALID_ARGUMENT, "unknown permission bits")
            # Changing bits: the actor must hold every bit added or removed.
            actor.may_grant(permissions ^ role.permissions)
            position = req.position if req.position is not None else role.position
            if position >= actor.rank:
                raise forbidden("a role must rank below your highest role")
            color = None if req.clear_color else (
                req.color if req.color is not None else role.color)
            if name.lower() != role.name.lower() and await roles_db.name_taken(
                    conn, role.community_id, name, role.id):
                raise RequestError(ErrorCode.ALREADY_EXISTS, "a role of that name exists")
            updated = await roles_db.update_role(conn, role.id, name=name,
                                                 permissions=permissions, position=position,
                                                 color=color)
            assert updated is not None
            await self._audit(conn, events, community_id=role.community_id, actor_id=actor_id,
                              action="role.update", target_type="role", target_id=role.id,
                              reason=reason, before=_role_dict(role),
                              after=_role_dict(updated))
        await self._publish(events, role.community_id)
        return updated

    async def delete_role(self, actor_id: int, req: DeleteRole) -> None:
        reason = self._reason(req.reason)
        events: list[tuple[str, Event]] = []
        async with self.db.transaction("role.delete") as conn:
            role, _ = await self._managed_role(conn, actor_id, req.role_id)
            await roles_db.delete_role(conn, role.id)
            await self._audit(conn, events, community_id=role.community_id, actor_id=actor_id,
                              action="role.delete", target_type="role", target_id=role.id,
                              reason=reason, before=_role_dict(role), after=None)
        await self._publish(events, role.community_id)

    # ----------------------------------------------------------------------- members

    async def set_member_roles(self, actor_id: int, req: SetMemberRoles) -> Member:
        reason = self._reason(req.reason)
        wanted = sorted(set(req.role_ids))
        if len(wanted) > self.limits.max_roles_per_member:
            raise RequestError(ErrorCode.LIMIT_EXCEEDED,
                               f"at most {self.limits.max_roles_per_member} roles per member")
        events: list[tuple[str, Event]] = []
        async with self.db.transaction("member.roles") as conn:
            actor = await self._actor(conn, req.community_id, actor_id)
            actor.require(P.MANAGE_ROLES)
            target, target_rank = await self._target_rank(conn, req.community_id, req.user_id)
            if target_rank >= actor.rank and actor.access.role is not Role.OWNER:
                raise forbidden("that member ranks at or above you")
            roles = {r.id: r for r in await roles_db.list_roles(conn, req.community_id)}
            if any(r not in roles for r in wanted):
                raise not_found("unknown role")
            before = set(target.role_ids)
            for role_id in before.symmetric_difference(wanted):
                role = roles.get(role_id)
                if role is None:
                    continue
                if role.position >= actor.rank:
                    raise forbidden(f"role {role.name!r} ranks at or above your highest role")
                actor.may_grant(role.permissions)
            await roles_db.set_member_roles(conn, req.community_id, req.user_id, wanted)
            member = await self._member(conn, req.community_id, req.user_id)
            await self._audit(conn, events, community_id=req.community_id, actor_id=actor_id,
                              action="member.roles", target_type="member",
                              target_id=req.user_id, reason=reason,
                              before={"role_ids": sorted(before)}, after={"role_ids": wanted})
        await self._publish(events, req.community_id, req.user_id)
        return member

    @staticmethod
    async def _member(conn: Connection, community_id: int, user_id: int) -> Member:
        member = await communities_db.get_member(conn, community_id, user_id)
        if member is None:
            raise not_found("unknown member")
        return member

    async def set_member_tier(self, actor_id: int, req: SetMemberTier) -> Member:
        reason = self._reason(req.reason)
        events: list[tuple[str, Event]] = []
        async with self.db.transaction("member.tier") as conn:
            actor = await self._actor(conn, req.community_id, actor_id)
            actor.require(P.MANAGE_ROLES)
            _, target_rank = await self._target_rank(conn, req.community_id, req.user_id)
            if target_rank >= actor.rank and actor.access.role is not Role.OWNER:
                raise forbidden("that member ranks at or above you")
            before = await roles_db.set_member_tier(conn, req.community_id, req.user_id,
                                                    req.tier)
            if before is None:
                raise not_found("unknown member")
            member = await self._member(conn, req.community_id, req.user_id)
            await self._audit(conn, events, community_id=req.community_id, actor_id=actor_id,
                              action="member.tier", target_type="member",
                              target_id=req.user_id, reason=reason, before={"tier": before},
                              after={"tier": req.tier})
        await self._publish(events, req.community_id, req.user_id)
        return member

    # ---------------------------------------------------------------------- channels

    async def fetch_overrides(self, actor_id: int, channel_id: int) -> list[
            PermissionOverride]:
        async with self.db.connection() as conn:
            channel = await self._channel(conn, channel_id, actor_id)
            assert channel.community_id is not None
            actor = await self._actor(conn, channel.community_id, actor_id)
            if not actor.bits & (P.MANAGE_ROLES | P.MANAGE_CHANNELS):
                raise forbidden("missing permission")
            return await roles_db.channel_overrides(conn, channel.id)

    async def set_override(self, actor_id: int, req: SetChannelOverride | ClearChannelOverride,
                           ) -> PermissionOverride | None:
        """Set (or, for :class:`ClearChannelOverride`, remove) one override."""
        reason = self._reason(req.reason)
        clearing = isinstance(req, ClearChannelOverride)
        allow = req.allow if isinstance(req, SetChannelOverride) else 0
        deny = req.deny if isinstance(req, SetChannelOverride) else 0
        if allow & deny:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "a bit cannot be allowed and denied")
        if (allow | deny) & ~int(ALL_BITS) or (allow | deny) & P.ADMINISTRATOR:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "unknown permission bits")
        if req.kind == "everyone" and req.target_id != 0:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "everyone's target_id is 0")
        events: list[tuple[str, Event]] = []
        async with self.db.transaction("channel.override") as conn:
            channel = await self._channel(conn, req.channel_id, actor_id)
            cid = channel.community_id
            assert cid is not None
            actor = await self._actor(conn, cid, actor_id)
            actor.require(P.MANAGE_ROLES | P.MANAGE_CHANNELS)
            before = await roles_db.get_override(conn, channel.id, req.kind, req.target_id)
            # Granting or denying: only bits the actor holds, changes included.
            old_bits = (before.allow | before.deny) if before else 0
            actor.may_grant(allow | deny | old_bits)
            if req.kind == "role":
                role = await roles_db.get_role(conn, req.target_id)
                if role is None or role.community_id != cid:
                    raise not_found("unknown role")
                if role.position >= actor.rank:
                    raise forbidden("that role ranks at or above your highest role")
            elif req.kind == "member":
                _, target_rank = await self._target_rank(conn, cid, req.target_id)
                if target_rank >= actor.rank and actor.access.role is not Role.OWNER:
                    raise forbidden("that member ranks at or above you")
            result: PermissionOverride | None = None
            if clearing:
                if before is None:
                    return None
                await roles_db.clear_override(conn, channel.id, req.kind, req.target_id)
            else:
                if before is None and len(await roles_db.channel_overrides(conn, channel.id)) \
                        >= self.limits.max_overrides_per_channel:
                    raise RequestError(ErrorCode.LIMIT_EXCEEDED, "too many overrides")
                result = await roles_db.set_override(
                    conn, channel_id=channel.id, community_id=cid, kind=req.kind,
                    target_id=req.target_id, allow=allow, deny=deny)
            await self._audit(
                conn, events, community_id=cid, actor_id=actor_id, action="channel.override",
                target_type="channel", target_id=channel.id, reason=reason,
                before=None if before is None else {
                    "kind": before.kind, "target_id": before.target_id,
                    "allow": before.allow, "deny": before.deny},
                after=None if result is None else {
                    "kind": result.kind, "target_id": result.target_id,
                    "allow": result.allow, "deny": result.deny})
        await self._publish(events, cid, req.target_id if req.kind == "member" else None)
        return result

    async def set_channel_tier(self, actor_id: int, req: SetChannelTier) -> Channel:
        reason = self._reason(req.reason)
        events: list[tuple[str, Event]] = []
        async with self.db.transaction("channel.tier") as conn:
            channel = await self._channel(conn, req.channel_id, actor_id)
            cid = channel.community_id
            assert cid is not None
            actor = await self._actor(conn, cid, actor_id)
            actor.require(P.MANAGE_CHANNELS)
            await roles_db.set_channel_tier(conn, channel.id, req.tier)
            updated = await channels_db.get_channel(conn, channel.id)
            assert updated is not None
            await self._audit(conn, events, community_id=cid, actor_id=actor_id,
                              action="channel.tier", target_type="channel",
                              target_id=channel.id, reason=reason,
                              before={"required_tier": channel.required_tier},
                              after={"required_tier": req.tier})
        # Viewers who keep it see the new tier (channel_update from the refresh).
        await self._publish(events, cid)
        return updated

    # ---------------------------------------------------------------------- websocket

    def handlers(self) -> dict[type[Request], Callable[[Session, Any], Awaitable[Result]]]:
        async def fetch_roles(session: Session, req: FetchRoles) -> Result:
            return RolesResult(community_id=req.community_id,
                               roles=await self.fetch_roles(session.user.id, req.community_id))

        async def create_role(session: Session, req: CreateRole) -> Result:
            return RoleResult(role=await self.create_role(session.user.id, req))

        async def update_role(session: Session, req: UpdateRole) -> Result:
            return RoleResult(role=await self.update_role(session.user.id, req))

        async def delete_role(session: Session, req: DeleteRole) -> Result:
            await self.delete_role(session.user.id, req)
            return Empty()

        async def member_roles(session: Session, req: SetMemberRoles) -> Result:
            return MemberResult(member=await self.set_member_roles(session.user.id, req))

        async def overrides(session: Session, req: FetchChannelOverrides) -> Result:
            return OverridesResult(channel_id=req.channel_id, overrides=await
                                   self.fetch_overrides(session.user.id, req.channel_id))

        async def set_override(session: Session, req: SetChannelOverride) -> Result:
            result = await self.set_override(session.user.id, req)
            assert result is not None
            return OverrideResult(override=result)

        async def clear_override(session: Session, req: ClearChannelOverride) -> Result:
            await self.set_override(session.user.id, req)
            return Empty()

        async def member_tier(session: Session, req: SetMemberTier) -> Result:
            return MemberResult(member=await self.set_member_tier(session.user.id, req))

        async def channel_tier(session: Session, req: SetChannelTier) -> Result:
            return ChannelResult(channel=await self.set_channel_tier(session.user.id, req))

        return {
            FetchRoles: fetch_roles, CreateRole: create_role, UpdateRole: update_role,
            DeleteRole: delete_role, SetMemberRoles: member_roles,
            FetchChannelOverrides: overrides, SetChannelOverride: set_override,
            ClearChannelOverride: clear_override, SetMemberTier: member_tier,
            SetChannelTier: channel_tier,
        }
