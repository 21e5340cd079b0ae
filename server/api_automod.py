"""REST for automod rules (``/api/v1/communities/{community_id}/automod/rules``).

Thin handlers over :class:`rooms.automod_service.AutomodService`, which checks
``MANAGE_AUTOMOD``, compiles the rule (a rule that does not compile, e.g. a regular
expression that could backtrack catastrophically, is a 400 ``invalid_argument`` whose
message says why), writes it with its audit entry and tells every node.

    GET    .../automod/rules              -> 200 {"rules": [AutomodRule]}
    POST   .../automod/rules   AutomodRuleBody -> 201 {"rule": AutomodRule}
    GET    .../automod/rules/{rule_id}    -> 200 {"rule": AutomodRule}
    PUT    .../automod/rules/{rule_id}   AutomodRuleBody -> 200 {"rule": AutomodRule}
    DELETE .../automod/rules/{rule_id}    -> 204
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from protocol.automod import AutomodRuleBody
from protocol.codes import ErrorCode
from rooms.automod_service import AutomodService
from rooms.errors import RequestError
from server.api_auth import answers_request_errors, json_response, require_user
from server.auth import Authenticator

_STATUS = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500,
}
_body_decoder = msgspec.json.Decoder(AutomodRuleBody)


def _id(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or not 0 < int(raw) < 2**53:
        raise RequestError(ErrorCode.NOT_FOUND, f"unknown {name.removesuffix('_id')}")
    return int(raw)


async def _body(request: web.Request) -> AutomodRuleBody:
    try:
        return _body_decoder.decode(await request.read() or b"{}")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RequestError(ErrorCode.INVALID_ARGUMENT, str(exc)) from None


def add_automod_routes(app: web.Application, auth: Authenticator,
                       service: AutomodService) -> None:
    endpoint = answers_request_errors(_STATUS)

    @endpoint
    async def list_rules(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        rules = await service.list_rules(user, _id(request, "community_id"))
        return json_response({"rules": rules})

    @endpoint
    async def create_rule(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        community_id = _id(request, "community_id")
        rule = await service.create_rule(user, community_id, await _body(request))
        return json_response({"rule": rule}, status=201)

    @endpoint
    async def get_rule(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        rule = await service.get_rule(user, _id(request, "community_id"),
                                      _id(request, "rule_id"))
        return json_response({"rule": rule})

    @endpoint
    async def update_rule(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        community_id, rule_id = _id(request, "community_id"), _id(request, "rule_id")
        rule = await service.update_rule(user, community_id, rule_id, await _body(request))
        return json_response({"rule": rule})

    @endpoint
    async def delete_rule(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        await service.delete_rule(user, _id(request, "community_id"), _id(request, "rule_id"))
        return web.Response(status=204)

    base = "/api/v1/communities/{community_id}/automod/rules"
    app.router.add_get(base, list_rules)
    app.router.add_post(base, create_rule)
    app.router.add_get(base + "/{rule_id}", get_rule)
    app.router.add_put(base + "/{rule_id}", update_rule)
    app.router.add_delete(base + "/{rule_id}", delete_rule)
