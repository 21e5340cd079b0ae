"""REST for communities, invites, members, channels, DMs and history (``/api/v1``).

Thin handlers: decode the body into a msgspec Struct, call :mod:`rooms.communities`,
encode the records. Refusals raised by the domain become the documented JSON error
with the matching HTTP status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from aiohttp import web

from protocol.codes import ErrorCode
from protocol.models import ChannelKind, Role
from protocol.rest import CommunityCreated
from rooms.communities import CommunityService
from rooms.errors import RequestError
from server.api_auth import error_response, json_response, require_user
from server.auth import Authenticator

_STATUS = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.BANNED: 403,
    ErrorCode.LOCKDOWN: 403,
    ErrorCode.INTERNAL: 500,
}


class CreateCommunityBody(msgspec.Struct, forbid_unknown_fields=False):
    name: str


class CreateInviteBody(msgspec.Struct):
    max_uses: int | None = None
    expires_in_s: int | None = None


class SetRoleBody(msgspec.Struct):
    role: Role


class CreateChannelBody(msgspec.Struct):
    name: str
    kind: ChannelKind = ChannelKind.TEXT
    private: bool = False
    parent_id: int | None = None
    topic: str = ""
    member_ids: list[int] = []


class AddChannelMemberBody(msgspec.Struct):
    user_id: int


class OpenDirectBody(msgspec.Struct):
    user_ids: list[int]


_T = TypeVar("_T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _int(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.match_info.get(name) or request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer") from None
    if not 0 <= value < 2**53:
        raise web.HTTPBadRequest(text=f"{name} is out of range")
    return value


async def _body(request: web.Request, kind: type[_T]) -> _T:
    data = await request.read()
    try:
        return msgspec.json.decode(data or b"{}", type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _Invalid(str(exc)) from None


class _Invalid(Exception):
    pass


def add_community_routes(app: web.Application, auth: Authenticator,
                         service: CommunityService) -> None:
    def endpoint(fn: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await fn(request)
            except RequestError as exc:
                return error_response(_STATUS.get(exc.code, 400), exc.code.value, exc.message)
            except _Invalid as exc:
                return error_response(400, "invalid_request", str(exc))
            except web.HTTPBadRequest as exc:
                return error_response(400, "invalid_request", exc.text or "bad request")
        return wrapped

    @endpoint
    async def create_community(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        body = await _body(request, CreateCommunityBody)
        snapshot = await service.create_community(user, body.name)
        return json_response(CommunityCreated(community=snapshot.community,
                                              channels=snapshot.channels, snapshot=snapshot),
                             status=201)

    @endpoint
    async def list_communities(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        return json_response({"communities": await service.communities_of(user)})

    @endpoint
    async def create_invite(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        body = await _body(request, CreateInviteBody)
        code = await service.create_invite(user, _int(request, "community_id") or 0,
                                           body.max_uses, body.expires_in_s)
        return json_response({"code": code}, status=201)

    @endpoint
    async def join_invite(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        snapshot = await service.join_by_invite(user, request.match_info["code"])
        return json_response({"snapshot": snapshot})

    @endpoint
    async def list_members(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        members = await service.members(user, _int(request, "community_id") or 0,
                                        _int(request, "after", 0) or 0,
                                        _int(request, "limit", 100) or 100)
        return json_response({"members": members})

    @endpoint
    async def set_role(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        body = await _body(request, SetRoleBody)
        member = await service.set_role(user, _int(request, "community_id") or 0,
                                        _int(request, "user_id") or 0, body.role)
        return json_response({"member": member})

    @endpoint
    async def create_channel(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        body = await _body(request, CreateChannelBody)
        channel = await service.create_channel(
            user, _int(request, "community_id") or 0, name=body.name, kind=body.kind,
            private=body.private, parent_id=body.parent_id, topic=body.topic,
            member_ids=body.member_ids)
        return json_response({"channel": channel}, status=201)

    @endpoint
    async def add_channel_member(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        body = await _body(request, AddChannelMemberBody)
        await service.add_channel_member(user, _int(request, "channel_id") or 0, body.user_id)
        return web.Response(status=204)

    @endpoint
    async def open_direct(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        body = await _body(request, OpenDirectBody)
        channel = await service.open_direct(user, body.user_ids)
        return json_response({"channel": channel}, status=201)

    @endpoint
    async def history(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        messages, has_more = await service.history(
            user, _int(request, "channel_id") or 0, before=_int(request, "before"),
            after=_int(request, "after"), around=_int(request, "around"),
            limit=_int(request, "limit", 50) or 50)
        return json_response({"messages": messages, "has_more": has_more})

    app.router.add_post("/api/v1/communities", create_community)
    app.router.add_get("/api/v1/communities", list_communities)
    app.router.add_post("/api/v1/communities/{community_id}/invites", create_invite)
    app.router.add_post("/api/v1/invites/{code}/join", join_invite)
    app.router.add_get("/api/v1/communities/{community_id}/members", list_members)
    app.router.add_patch("/api/v1/communities/{community_id}/members/{user_id}", set_role)
    app.router.add_post("/api/v1/communities/{community_id}/channels", create_channel)
    app.router.add_post("/api/v1/channels/{channel_id}/members", add_channel_member)
    app.router.add_post("/api/v1/dms", open_direct)
    app.router.add_get("/api/v1/channels/{channel_id}/messages", history)
