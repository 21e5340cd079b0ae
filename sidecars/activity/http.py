"""The activity sidecar's REST route.

    GET /api/v1/communities/{community_id}/members/{user_id}/activity?limit=50
        -> 200 ActivityReply {"activity": [ActivityEntry], "totals": {kind: count}}

With a user's bearer token, a member reads their own activity and staff (owner, admin,
moderator) anyone's; another member's: 403 ``forbidden``. A service key needs
``members:read`` in that community, and each read is audited. Anyone else: 404
``not_found`` (the community's existence is not disclosed).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from protocol.codes import ErrorCode
from protocol.models import Id
from protocol.sidecar import ActivityEntry, Scope
from sidecars.activity.service import ActivityService
from sidecars.api import Host, Route, SidecarError

MAX_LIMIT = 200


class MemberPath(msgspec.Struct):
    community_id: Id
    user_id: Id


class ActivityQuery(msgspec.Struct, kw_only=True):
    """How much to read."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT,
                                       description="At most this many, newest first.")] = 50


class ActivityReply(msgspec.Struct, frozen=True, kw_only=True):
    """A member's recent activity in a community and their totals."""

    activity: Annotated[list[ActivityEntry], msgspec.Meta(description="Newest first.")]
    totals: Annotated[dict[str, int], msgspec.Meta(
        description="The member's count of each kind in the community.")]


def routes(host: Host, service: ActivityService) -> list[Route]:
    async def member_activity(request: web.Request) -> web.StreamResponse:
        path = host.path_params(request, MemberPath)
        query = host.query_params(request, ActivityQuery)
        if host.is_service_key(request):
            principal = await host.principal(request, path.community_id, Scope.MEMBERS_READ)
            await host.audit_use(principal, "activity.read", {"user_id": path.user_id})
        else:
            await service.require_reader(path.community_id, await host.user_id(request),
                                         path.user_id)
        if await host.member(path.community_id, path.user_id) is None:
            raise SidecarError(ErrorCode.NOT_FOUND, "unknown member")
        body = ActivityReply(
            activity=await service.recent(path.community_id, path.user_id, query.limit),
            totals=await service.totals(path.community_id, path.user_id))
        return web.Response(body=msgspec.json.encode(body), content_type="application/json")

    return [Route(method="GET", path="/communities/{community_id}/members/{user_id}/activity",
                  handler=member_activity, query=ActivityQuery, reply=ActivityReply,
                  service_key=True,
                  summary="A member's recent activity and totals (your own; anyone's as "
                          "owner, admin or moderator, or with a service key with "
                          "members:read).")]
