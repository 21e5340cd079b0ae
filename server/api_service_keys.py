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

Bodies, paths and queries go through the shared decoder and errors through the one
error middleware (``server/rest``): 401 ``unauthorized`` for no, an unknown, expired or
revoked key, or one whose creator is no longer owner or admin (with
``WWW-Authenticate``), 403 ``forbidden`` for another community's key, a missing scope
or a target its creator may not touch (an admin's key: the owner or an admin), 429
``rate_limited`` over the key's rate (with ``Retry-After``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from protocol.models import Id
from protocol.rest import MemberReply
from protocol.sidecar import (
    CreateServiceKey,
    Scope,
    ServiceKeyCreated,
    ServiceKeyReply,
    ServiceKeysReply,
    ServicePublish,
    ServiceSetTier,
)
from rooms.moderation.principals import Principal, PrincipalService
from server.api_auth import json_response, require_user
from server.auth import Authenticator
from server.rest.decoding import path_params, read_body
from server.rest.openapi import rest_api

Authenticate = Callable[[PrincipalService, web.Request, int, Scope], Awaitable[Principal]]


class CommunityPath(msgspec.Struct):
    community_id: Id


class KeyPath(msgspec.Struct):
    community_id: Id
    key_id: Id


class MemberPath(msgspec.Struct):
    community_id: Id
    user_id: Id


def add_service_key_routes(app: web.Application, auth: Authenticator,
                           principals: PrincipalService, authenticate: Authenticate) -> None:
    async def create(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, CommunityPath)
        req = await read_body(request, CreateServiceKey)
        return json_response(await principals.create(user.id, path.community_id, req),
                             status=201)

    async def list_keys(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, CommunityPath)
        keys = await principals.list_keys(user.id, path.community_id)
        return json_response(ServiceKeysReply(keys=keys))

    async def revoke(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, KeyPath)
        key = await principals.revoke(user.id, path.community_id, path.key_id)
        return json_response(ServiceKeyReply(key=key))

    async def set_tier(request: web.Request) -> web.StreamResponse:
        path = path_params(request, MemberPath)
        principal = await authenticate(principals, request, path.community_id,
                                       Scope.TIERS_WRITE)
        req = await read_body(request, ServiceSetTier)
        member = await principals.set_member_tier(principal, path.user_id, req)
        return json_response(MemberReply(member=member))

    async def publish(request: web.Request) -> web.StreamResponse:
        path = path_params(request, CommunityPath)
        principal = await authenticate(principals, request, path.community_id,
                                       Scope.EVENTS_PUBLISH)
        req = await read_body(request, ServicePublish)
        await principals.publish(principal, req.user_id, req.event)
        return web.Response(status=204)

    api = rest_api(app)
    tag = "service keys"
    keys = "/communities/{community_id}/service-keys"
    api.route("POST", keys, create, tag=tag, body=CreateServiceKey, reply=ServiceKeyCreated,
              status=201, summary="Create a service key (owner or admin); the secret is "
                                  "shown in this reply only.")
    api.route("GET", keys, list_keys, tag=tag, reply=ServiceKeysReply,
              summary="The community's service keys, without secrets (owner or admin).")
    api.route("DELETE", keys + "/{key_id}", revoke, tag=tag, reply=ServiceKeyReply,
              summary="Revoke a service key (owner or admin); it is refused at once.")
    api.route("PUT", "/service/communities/{community_id}/members/{user_id}/tier", set_tier,
              tag=tag, body=ServiceSetTier, reply=MemberReply, credentials=("serviceKey",),
              summary="As a service key with tiers:write: set a member's tier (no rank "
                      "rule among members, but a key made by an admin cannot change the "
                      "owner's or an admin's; audited naming the key).")
    api.route("POST", "/service/communities/{community_id}/events", publish, tag=tag,
              body=ServicePublish, status=204, credentials=("serviceKey",),
              summary="As a service key with events:publish: deliver a sidecar event to "
                      "one member or to every connected member of the community.")
