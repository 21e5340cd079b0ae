"""REST for automod rules (``/api/v1/communities/{community_id}/automod/rules``).

Thin handlers over :class:`rooms.moderation.automod_service.AutomodService`, which checks
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
from protocol.models import Id
from protocol.rest import AutomodRuleReply, AutomodRulesReply
from rooms.moderation.automod_service import AutomodService
from server.api_auth import json_response, require_user
from server.auth import Authenticator
from server.rest.decoding import path_params, read_body
from server.rest.openapi import rest_api


class CommunityPath(msgspec.Struct):
    community_id: Id


class RulePath(msgspec.Struct):
    community_id: Id
    rule_id: Id


def add_automod_routes(app: web.Application, auth: Authenticator,
                       service: AutomodService) -> None:
    async def list_rules(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, CommunityPath)
        return json_response(AutomodRulesReply(
            rules=await service.list_rules(user, path.community_id)))

    async def create_rule(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, CommunityPath)
        rule = await service.create_rule(user, path.community_id,
                                         await read_body(request, AutomodRuleBody))
        return json_response(AutomodRuleReply(rule=rule), status=201)

    async def get_rule(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, RulePath)
        rule = await service.get_rule(user, path.community_id, path.rule_id)
        return json_response(AutomodRuleReply(rule=rule))

    async def update_rule(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, RulePath)
        rule = await service.update_rule(user, path.community_id, path.rule_id,
                                         await read_body(request, AutomodRuleBody))
        return json_response(AutomodRuleReply(rule=rule))

    async def delete_rule(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, RulePath)
        await service.delete_rule(user, path.community_id, path.rule_id)
        return web.Response(status=204)

    api = rest_api(app)
    tag = "automod"
    base = "/communities/{community_id}/automod/rules"
    api.route("GET", base, list_rules, tag=tag, summary="The community's automod rules.",
              reply=AutomodRulesReply)
    api.route("POST", base, create_rule, tag=tag, summary="Create an automod rule.",
              body=AutomodRuleBody, reply=AutomodRuleReply, status=201)
    api.route("GET", base + "/{rule_id}", get_rule, tag=tag, summary="One automod rule.",
              reply=AutomodRuleReply)
    api.route("PUT", base + "/{rule_id}", update_rule, tag=tag,
              summary="Replace an automod rule.", body=AutomodRuleBody, reply=AutomodRuleReply)
    api.route("DELETE", base + "/{rule_id}", delete_rule, tag=tag,
              summary="Delete an automod rule.", status=204)
