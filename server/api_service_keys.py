"""REST for service keys and the actions service principals take (``/api/v1``).

Managing keys (a user's bearer token; the community's owner or an admin):

    POST   /communities/{community_id}/service-keys  {name, scopes, expires_in_s?}
                                                     -> 201 ServiceKeyCreated (secret shown once)
    GET    /communities/{community_id}/service-keys  -> 200 {"keys": [ServiceKey]}
    DELETE /communities/{community_id}/service-keys/{key_id}  -> 200 {"key": ServiceKey}

Acting as a principal (``Authorization: Bearer hsk_...``):

    PUT    /service/communities/{community_id}/members/{user_id}/tier  {tier, reason?}
           (scope ``tiers:write``)                   -> 200 {"member": Member}
    POST   /service/communities/{community_id}/events  {event, user_id?}
           (scope ``events:publish``)                -> 204

Errors are ``{"error": {"code", "message"}}``: 400 ``invalid_request`` (body or path),
401 ``unauthorized`` (no, unknown, expired or revoked key/token), 403 ``forbidden``
(not owner/admin; key of another community; missing scope), 404 ``not_found``, 409
``limit_exceeded``, 429 ``rate_limited`` (with Retry-After).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from aiohttp import web

from protocol.codes import ErrorCode
from protocol.sidecar import CreateServiceKey, Scope, ServicePublish, ServiceSetTier
from rooms.moderation.principals import Principal, PrincipalService
from server.api_auth import answers_request_errors, error_response, json_response, require_user
from server.auth import Authenticator

_STATUS = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.LIMIT_EXCEEDED: 409,
    ErrorCode.INTERNAL: 500,
}
_T = TypeVar("_T")
MAX_BODY = 16 * 1024

Authenticate = Callable[[PrincipalService, web.Request, int, Scope], Awaitable[Principal]]


class _Invalid(Exception):
    pass


def _id(request: web.Request, name: str) -> int | None:
    raw = request.match_info[name]
    if not raw.isdigit() or len(raw) > 16 or not 0 < int(raw) < 2**53:
        return None
    return int(raw)


async def _body(request: web.Request, model: type[_T]) -> _T:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise _Invalid("the body is too large")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise _Invalid("the body is too large")
    try:
        return msgspec.json.decode(raw, type=model)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _Invalid(str(exc)) from None
    except UnicodeDecodeError:
        raise _Invalid("the body is not UTF-8") from None


def add_service_key_routes(app: web.Application, auth: Authenticator,
                           principals: PrincipalService, authenticate: Authenticate) -> None:
    v1 = "/api/v1"

    @answers_request_errors(_STATUS)
    async def create(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        community_id = _id(request, "community_id")
        if community_id is None:
            return error_response(404, "not_found", "unknown community")
        try:
            req = await _body(request, CreateServiceKey)
        except _Invalid as exc:
            return error_response(400, "invalid_request", str(exc))
        return json_response(await principals.create(user.id, community_id, req), status=201)

    @answers_request_errors(_STATUS)
    async def list_keys(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        community_id = _id(request, "community_id")
        if community_id is None:
            return error_response(404, "not_found", "unknown community")
        return json_response({"keys": await principals.list_keys(user.id, community_id)})

    @answers_request_errors(_STATUS)
    async def revoke(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        community_id = _id(request, "community_id")
        key_id = _id(request, "key_id")
        if community_id is None or key_id is None:
            return error_response(404, "not_found", "unknown service key")
        return json_response({"key": await principals.revoke(user.id, community_id, key_id)})

    @answers_request_errors(_STATUS)
    async def set_tier(request: web.Request) -> web.StreamResponse:
        community_id = _id(request, "community_id")
        user_id = _id(request, "user_id")
        if community_id is None or user_id is None:
            return error_response(404, "not_found", "unknown member")
        principal = await authenticate(principals, request, community_id, Scope.TIERS_WRITE)
        try:
            req = await _body(request, ServiceSetTier)
        except _Invalid as exc:
            return error_response(400, "invalid_request", str(exc))
        member = await principals.set_member_tier(principal, user_id, req)
        return json_response({"member": member})

    @answers_request_errors(_STATUS)
    async def publish(request: web.Request) -> web.StreamResponse:
        community_id = _id(request, "community_id")
        if community_id is None:
            return error_response(404, "not_found", "unknown community")
        principal = await authenticate(principals, request, community_id,
                                       Scope.EVENTS_PUBLISH)
        try:
            req = await _body(request, ServicePublish)
        except _Invalid as exc:
            return error_response(400, "invalid_request", str(exc))
        await principals.publish(principal, req.user_id, req.event)
        return web.Response(status=204)

    keys = v1 + "/communities/{community_id}/service-keys"
    app.router.add_post(keys, create)
    app.router.add_get(keys, list_keys)
    app.router.add_delete(keys + "/{key_id}", revoke)
    app.router.add_put(v1 + "/service/communities/{community_id}/members/{user_id}/tier",
                       set_tier)
    app.router.add_post(v1 + "/service/communities/{community_id}/events", publish)
