"""REST for custom roles, channel overrides and tiers (``/api/v1``).

The bodies are the fields of the matching websocket request (protocol/frames.py,
"Permissions"), the path carries the ids; the same :class:`rooms.roles.RoleService`
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

from typing import Any, TypeVar

import msgspec
from aiohttp import web

from protocol.codes import ErrorCode
from protocol.frames import (
    ClearChannelOverride,
    CreateRole,
    DeleteRole,
    SetChannelOverride,
    SetChannelTier,
    SetMemberRoles,
    SetMemberTier,
    UpdateRole,
)
from rooms.errors import RequestError
from rooms.roles import RoleService
from server.api_auth import answers_request_errors, json_response, require_user
from server.auth import Authenticator

_STATUS = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.LIMIT_EXCEEDED: 409,
    ErrorCode.INTERNAL: 500,
}
_T = TypeVar("_T")


def _id(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or not 0 <= int(raw) < 2**53:
        raise RequestError(ErrorCode.NOT_FOUND, f"unknown {name.removesuffix('_id')}")
    return int(raw)


async def _request(request: web.Request, request_type: type[_T], **path: Any) -> _T:
    """The websocket request ``kind`` from the JSON body plus the path's ids (the path
    wins). Validation is msgspec's, so REST and websocket accept exactly the same."""
    try:
        raw = await request.read()
        body = msgspec.json.decode(raw) if raw else {}
        if not isinstance(body, dict):
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "the body is a JSON object")
        if "reason" in request.query and "reason" not in body:
            body["reason"] = request.query["reason"]
        body.update(path, id=0)
        body.pop("op", None)
        return msgspec.convert(body, request_type)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RequestError(ErrorCode.INVALID_ARGUMENT, str(exc)) from None


def add_role_routes(app: web.Application, auth: Authenticator, service: RoleService) -> None:
    endpoint = answers_request_errors(_STATUS)

    @endpoint
    async def list_roles(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        roles = await service.fetch_roles(user.id, _id(request, "community_id"))
        return json_response({"roles": roles})

    @endpoint
    async def create_role(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        req = await _request(request, CreateRole, community_id=_id(request, "community_id"))
        return json_response({"role": await service.create_role(user.id, req)}, status=201)

    @endpoint
    async def update_role(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        req = await _request(request, UpdateRole, role_id=_id(request, "role_id"))
        return json_response({"role": await service.update_role(user.id, req)})

    @endpoint
    async def delete_role(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        req = await _request(request, DeleteRole, role_id=_id(request, "role_id"))
        await service.delete_role(user.id, req)
        return web.Response(status=204)

    @endpoint
    async def member_roles(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        req = await _request(request, SetMemberRoles,
                             community_id=_id(request, "community_id"),
                             user_id=_id(request, "user_id"))
        return json_response({"member": await service.set_member_roles(user.id, req)})

    @endpoint
    async def member_tier(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        req = await _request(request, SetMemberTier, community_id=_id(request, "community_id"),
                             user_id=_id(request, "user_id"))
        return json_response({"member": await service.set_member_tier(user.id, req)})

    @endpoint
    async def list_overrides(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        overrides = await service.fetch_overrides(user.id, _id(request, "channel_id"))
        return json_response({"overrides": overrides})

    @endpoint
    async def set_override(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        req = await _request(request, SetChannelOverride, channel_id=_id(request, "channel_id"),
                             kind=request.match_info["kind"],
                             target_id=_id(request, "target_id"))
        return json_response({"override": await service.set_override(user.id, req)})

    @endpoint
    async def clear_override(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        req = await _request(request, ClearChannelOverride,
                             channel_id=_id(request, "channel_id"),
                             kind=request.match_info["kind"],
                             target_id=_id(request, "target_id"))
        await service.set_override(user.id, req)
        return web.Response(status=204)

    @endpoint
    async def channel_tier(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        req = await _request(request, SetChannelTier, channel_id=_id(request, "channel_id"))
        return json_response({"channel": await service.set_channel_tier(user.id, req)})

    v1 = "/api/v1"
    app.router.add_get(v1 + "/communities/{community_id}/roles", list_roles)
    app.router.add_post(v1 + "/communities/{community_id}/roles", create_role)
    app.router.add_patch(v1 + "/roles/{role_id}", update_role)
    app.router.add_delete(v1 + "/roles/{role_id}", delete_role)
    app.router.add_put(v1 + "/communities/{community_id}/members/{user_id}/roles", member_roles)
    app.router.add_put(v1 + "/communities/{community_id}/members/{user_id}/tier", member_tier)
    app.router.add_get(v1 + "/channels/{channel_id}/overrides", list_overrides)
    app.router.add_put(v1 + "/channels/{channel_id}/overrides/{kind}/{target_id}", set_override)
    app.router.add_delete(v1 + "/channels/{channel_id}/overrides/{kind}/{target_id}",
                          clear_override)
    app.router.add_put(v1 + "/channels/{channel_id}/tier", channel_tier)
