"""REST for custom roles, channel overrides and tiers (``/api/v1``).

The bodies are the fields of the matching websocket request (protocol/frames.py,
"Permissions"), the path carries the ids; the same :class:`rooms.moderation.roles.RoleService`
methods serve both, so the checks and the audit log are identical.

    GET    /communities/{community_id}/roles                      -> 200 {"roles": [CommunityRole]}
    POST   /communities/{community_id}/roles  {name, permissions?, position?, color?, reason?}
                                                                  -> 201 {"role": CommunityRole}
    PATCH  /roles/{role_id}  {name?, permissions?, position?, color?, clear_color?, reason?}
                                                                  -> 200 {"role": CommunityRole}
    DELETE /roles/{role_id}?reason=...                            -> 204
    PUT    /communities/{community_id}/members/{user_id}/roles  {role_ids, reason?}
                                                                  -> 200 {"member": Member}
    PUT    /communities/{community_id}/members/{user_id}/tier  {tier, reason?}
                                                                  -> 200 {"member": Member}
    GET    /channels/{channel_id}/overrides                      -> 200 {"overrides": [...]}
    PUT    /channels/{channel_id}/overrides/{kind}/{target_id}  {allow, deny, reason?}
                                                                  -> 200 {"override": ...}
    DELETE /channels/{channel_id}/overrides/{kind}/{target_id}?reason=...  -> 204
    PUT    /channels/{channel_id}/tier  {tier, reason?}          -> 200 {"channel": Channel}
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from protocol.base import Reason
from protocol.models import Id, OverrideKind
from protocol.rest import (
    ChannelReply,
    MemberReply,
    OverrideReply,
    OverridesReply,
    RoleReply,
    RolesReply,
)
from protocol.roles import (
    ClearChannelOverride,
    CreateRole,
    DeleteRole,
    SetChannelOverride,
    SetChannelTier,
    SetMemberRoles,
    SetMemberTier,
    UpdateRole,
)
from rooms.moderation.roles import RoleService
from server.api_auth import json_response, require_user
from server.auth import Authenticator
from server.rest.decoding import body_of, path_params, query_params, read_op
from server.rest.openapi import rest_api

TargetId = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1,
                                       description="A role or user id; 0 for everyone.")]


class CommunityPath(msgspec.Struct):
    community_id: Id


class RolePath(msgspec.Struct):
    role_id: Id


class MemberPath(msgspec.Struct):
    community_id: Id
    user_id: Id


class ChannelPath(msgspec.Struct):
    channel_id: Id


class OverridePath(msgspec.Struct):
    channel_id: Id
    kind: OverrideKind
    target_id: TargetId


class ReasonQuery(msgspec.Struct, kw_only=True):
    """Why (kept in the audit log)."""

    reason: Reason | None = None


def add_role_routes(app: web.Application, auth: Authenticator, service: RoleService) -> None:
    async def list_roles(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, CommunityPath)
        return json_response(RolesReply(roles=await service.fetch_roles(user.id,
                                                                        path.community_id)))

    async def create_role(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, CommunityPath)
        req = await read_op(request, CreateRole, msgspec.structs.asdict(path))
        return json_response(RoleReply(role=await service.create_role(user.id, req)),
                             status=201)

    async def update_role(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, RolePath)
        req = await read_op(request, UpdateRole, msgspec.structs.asdict(path))
        return json_response(RoleReply(role=await service.update_role(user.id, req)))

    async def delete_role(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, RolePath)
        query = query_params(request, ReasonQuery)
        await service.delete_role(user.id, DeleteRole(id=0, role_id=path.role_id,
                                                      reason=query.reason))
        return web.Response(status=204)

    async def member_roles(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, MemberPath)
        req = await read_op(request, SetMemberRoles, msgspec.structs.asdict(path))
        return json_response(MemberReply(member=await service.set_member_roles(user.id, req)))

    async def member_tier(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, MemberPath)
        req = await read_op(request, SetMemberTier, msgspec.structs.asdict(path))
        return json_response(MemberReply(member=await service.set_member_tier(user.id, req)))

    async def list_overrides(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, ChannelPath)
        overrides = await service.fetch_overrides(user.id, path.channel_id)
        return json_response(OverridesReply(overrides=overrides))

    async def set_override(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, OverridePath)
        req = await read_op(request, SetChannelOverride, msgspec.structs.asdict(path))
        return json_response(OverrideReply(override=await service.set_override(user.id, req)))

    async def clear_override(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, OverridePath)
        query = query_params(request, ReasonQuery)
        await service.set_override(user.id, ClearChannelOverride(
            id=0, channel_id=path.channel_id, kind=path.kind, target_id=path.target_id,
            reason=query.reason))
        return web.Response(status=204)

    async def channel_tier(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, ChannelPath)
        req = await read_op(request, SetChannelTier, msgspec.structs.asdict(path))
        return json_response(ChannelReply(channel=await service.set_channel_tier(user.id, req)))

    api = rest_api(app)
    tag = "roles"
    override_types = {"kind": OverrideKind, "target_id": TargetId}
    community, member = frozenset({"community_id"}), frozenset({"community_id", "user_id"})
    channel = frozenset({"channel_id"})
    api.route("GET", "/communities/{community_id}/roles", list_roles, tag=tag,
              summary="The community's custom roles.", reply=RolesReply)
    api.route("POST", "/communities/{community_id}/roles", create_role, tag=tag,
              summary="Create a custom role (MANAGE_ROLES; below your highest role).",
              body=body_of(CreateRole, community), reply=RoleReply, status=201)
    api.route("PATCH", "/roles/{role_id}", update_role, tag=tag,
              summary="Change a custom role; fields left out keep their value.",
              body=body_of(UpdateRole, frozenset({"role_id"})), body_required=False,
              reply=RoleReply)
    api.route("DELETE", "/roles/{role_id}", delete_role, tag=tag, query=ReasonQuery,
              summary="Delete a custom role.", status=204)
    api.route("PUT", "/communities/{community_id}/members/{user_id}/roles", member_roles,
              tag=tag, summary="Set a member's custom roles.",
              body=body_of(SetMemberRoles, member), reply=MemberReply)
    api.route("PUT", "/communities/{community_id}/members/{user_id}/tier", member_tier,
              tag=tag, summary="Set a member's tier.", body=body_of(SetMemberTier, member),
              reply=MemberReply)
    api.route("GET", "/channels/{channel_id}/overrides", list_overrides, tag=tag,
              summary="The channel's permission overrides.", reply=OverridesReply)
    api.route("PUT", "/channels/{channel_id}/overrides/{kind}/{target_id}", set_override,
              tag=tag, summary="Set a permission override (only bits you hold).",
              body=body_of(SetChannelOverride, frozenset({"channel_id", "kind", "target_id"})),
              body_required=False, reply=OverrideReply, path_types=override_types)
    api.route("DELETE", "/channels/{channel_id}/overrides/{kind}/{target_id}", clear_override,
              tag=tag, summary="Remove a permission override.", query=ReasonQuery, status=204,
              path_types=override_types)
    api.route("PUT", "/channels/{channel_id}/tier", channel_tier, tag=tag,
              summary="Set the tier a channel requires.", body=body_of(SetChannelTier, channel),
              reply=ChannelReply)
