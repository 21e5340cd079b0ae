"""REST for live sessions (``/api/v1``); the checks are :class:`rooms.voice.live.LiveService`'s,
the same the gateway's stage and Q&A ops run.

    POST   /communities/{cid}/live-sessions  LiveSessionCreate      -> 201 {"session"}
    GET    /communities/{cid}/live-sessions?state=scheduled          -> 200 {"sessions"}
    GET    /communities/{cid}/live-sessions/{sid}                    -> 200 {"session"}
    PATCH  /communities/{cid}/live-sessions/{sid}  LiveSessionPatch  -> 200 {"session"}
    POST   /communities/{cid}/live-sessions/{sid}/start|end|cancel   -> 200 {"session"}
    POST   /communities/{cid}/live-sessions/{sid}/register           -> 200 {"session"}
    DELETE /communities/{cid}/live-sessions/{sid}/register           -> 200 {"session"}
    GET    /communities/{cid}/live-sessions/{sid}/attendance         -> 200 AttendanceReport
    GET    /communities/{cid}/live-sessions/{sid}/questions          -> 200 QuestionsResult

A session id under another community's path is ``404``.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from protocol.live import (
    AttendanceReport,
    LiveSessionCreate,
    LiveSessionPatch,
    LiveSessionReply,
    LiveSessionsReply,
    LiveSessionState,
    QuestionsResult,
)
from protocol.models import Id
from rooms.errors import not_found
from rooms.voice.live import LiveService
from server.api_auth import json_response, require_user
from server.auth import Authenticator
from server.rest.decoding import path_params, query_params, read_body
from server.rest.openapi import rest_api


class CommunityPath(msgspec.Struct):
    community_id: Id


class SessionPath(msgspec.Struct):
    community_id: Id
    session_id: Id


class ListQuery(msgspec.Struct, kw_only=True):
    """Only sessions in this state (all of them without it)."""

    state: LiveSessionState | None = None


def add_live_routes(app: web.Application, auth: Authenticator, live: LiveService) -> None:
    async def _in_community(request: web.Request, user_id: int) -> int:
        """The session id of the path, checked to belong to the path's community."""
        path = path_params(request, SessionPath)
        session = await live.get(user_id, path.session_id)
        if session.community_id != path.community_id:
            raise not_found("unknown live session")
        return path.session_id

    async def create(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, CommunityPath)
        body = await read_body(request, LiveSessionCreate)
        session = await live.create(user.id, path.community_id, body)
        return json_response(LiveSessionReply(session=session), status=201)

    async def list_(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, CommunityPath)
        query = query_params(request, ListQuery)
        sessions = await live.list_sessions(user.id, path.community_id, query.state)
        return json_response(LiveSessionsReply(sessions=sessions))

    async def get(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        sid = await _in_community(request, user.id)
        return json_response(LiveSessionReply(session=await live.get(user.id, sid)))

    async def patch(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        sid = await _in_community(request, user.id)
        body = await read_body(request, LiveSessionPatch)
        return json_response(LiveSessionReply(session=await live.patch(user.id, sid, body)))

    async def start(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        sid = await _in_community(request, user.id)
        return json_response(LiveSessionReply(session=await live.start(user.id, sid)))

    async def end(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        sid = await _in_community(request, user.id)
        return json_response(LiveSessionReply(session=await live.end(user.id, sid)))

    async def cancel(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        sid = await _in_community(request, user.id)
        return json_response(LiveSessionReply(session=await live.cancel(user.id, sid)))

    async def register(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        sid = await _in_community(request, user.id)
        session = await live.register(user.id, sid, registered=request.method == "POST")
        return json_response(LiveSessionReply(session=session))

    async def attendance(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        sid = await _in_community(request, user.id)
        return json_response(await live.attendance(user.id, sid))

    async def questions(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        sid = await _in_community(request, user.id)
        return json_response(await live.questions_rest(user.id, sid))

    api = rest_api(app)
    tag = "live sessions"
    base = "/communities/{community_id}/live-sessions"
    one = base + "/{session_id}"
    api.route("POST", base, create, tag=tag, body=LiveSessionCreate, reply=LiveSessionReply,
              status=201, summary="Schedule a live session (MANAGE_CHANNELS; creates its "
                                  "stage channel).")
    api.route("GET", base, list_, tag=tag, query=ListQuery, reply=LiveSessionsReply,
              summary="The community's live sessions, by start time.")
    api.route("GET", one, get, tag=tag, reply=LiveSessionReply, summary="One live session.")
    api.route("PATCH", one, patch, tag=tag, body=LiveSessionPatch, reply=LiveSessionReply,
              summary="Change a session (409 conflict once ended, or for anything but "
                      "title and description while live).")
    for action, handler in (("start", start), ("end", end), ("cancel", cancel)):
        api.route("POST", f"{one}/{action}", handler, tag=tag, reply=LiveSessionReply,
                  summary=f"{action.capitalize()} the session (host, co-host or "
                          "MANAGE_CHANNELS; 409 conflict when its state does not allow it).")
    api.route("POST", one + "/register", register, tag=tag, reply=LiveSessionReply,
              summary="Register (409 limit_exceeded at capacity; 403 below the tier).")
    api.route("DELETE", one + "/register", register, tag=tag, reply=LiveSessionReply,
              summary="Withdraw a registration.")
    api.route("GET", one + "/attendance", attendance, tag=tag, reply=AttendanceReport,
              summary="Who attended, when and for how long (host, co-host or "
                      "MANAGE_CHANNELS).")
    api.route("GET", one + "/questions", questions, tag=tag, reply=QuestionsResult,
              summary="The Q&A questions (dismissed ones only for hosts and moderators).")
