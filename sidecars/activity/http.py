"""The activity sidecar's REST route.

    GET /api/v1/communities/{community_id}/members/{user_id}/activity?limit=50
        -> 200 {"activity": [ActivityItem], "totals": {kind: count}}

A member of the community may read any member's activity (a user bearer token); a
service key needs ``members:read`` in that community, and each read is audited.
Anyone else: 404 ``not_found`` (the community's existence is not disclosed).
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from protocol.sidecar import Scope
from sidecars.activity.service import ActivityService
from sidecars.api import Host

MAX_LIMIT = 200


def _int(raw: str | None, default: int | None = None) -> int | None:
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 16:
        return None
    return int(raw)


def routes(host: Host, service: ActivityService) -> list[web.RouteDef]:
    async def member_activity(request: web.Request) -> web.StreamResponse:
        community_id = _int(request.match_info["community_id"])
        user_id = _int(request.match_info["user_id"])
        if not community_id or not user_id or community_id >= 2**53 or user_id >= 2**53:
            return host.error(404, "not_found", "unknown member")
        limit = _int(request.query.get("limit"), 50)
        if limit is None or not 1 <= limit <= MAX_LIMIT:
            return host.error(400, "invalid_request",
                              f"limit is an integer from 1 to {MAX_LIMIT}")
        if request.headers.get("Authorization", "").lower().startswith("bearer hsk_"):
            principal = await host.principal(request, community_id, Scope.MEMBERS_READ)
            await host.audit_use(principal, "activity.read", {"user_id": user_id})
        else:
            caller = await host.user_id(request)
            if await host.member(community_id, caller) is None:
                return host.error(404, "not_found", "unknown community")
        if await host.member(community_id, user_id) is None:
            return host.error(404, "not_found", "unknown member")
        body = {"activity": await service.recent(community_id, user_id, limit),
                "totals": await service.totals(community_id, user_id)}
        return web.Response(body=msgspec.json.encode(body), content_type="application/json")

    return [web.get("/api/v1/communities/{community_id}/members/{user_id}/activity",
                    member_activity)]
