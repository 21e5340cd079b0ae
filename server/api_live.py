"""REST for live sessions (``/api/v1``); the checks are :class:`rooms.live.LiveService`'s,
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

from typing import TypeVar

import msgspec
from aiohttp import web

from protocol.codes import ErrorCode
from protocol.live import (
    LiveSessionCreate,
    LiveSessionPatch,
    LiveSessionReply,
    LiveSessionsReply,
    LiveSessionState,
)
from rooms.errors import RequestError, not_found
from rooms.live import LiveService
from server.api_auth import answers_request_errors, json_response, require_user
from server.auth import Authenticator

_STATUS = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.CONFLICT: 409,
    ErrorCode.LIMIT_EXCEEDED: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500,
}
_T = TypeVar("_T")


def _id(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or not 0 < int(raw) < 2**53:
        raise not_found(f"unknown {name.removesuffix('_id')}")
    return int(raw)


async def _body(request: web.Request, kind: type[_T]) -> _T:
    try:
        return msgspec.json.decode(await request.read() or b"{}", type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RequestError(ErrorCode.INVALID_ARGUMENT, str(exc)) from None


def add_live_routes(app: web.Application, auth: Authenticator, live: LiveService) -> None:
    endpoint = answers_request_errors(_STATUS)
    base = "/api/v1/communities/{community_id}/live-sessions"

    async def _in_community(request: web.Request, user_id: int) -> int:
        """The session id of the path, checked to belong to the path's community."""
        sid = _id(request, "session_id")
        session = await live.get(user_id, sid)
        if session.community_id != _id(request, "community_id"):
            raise not_found("unknown live session")
        return sid

    @endpoint
    async def create(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        body = await _body(request, LiveSessionCreate)
        session = await live.create(user.id, _id(request, "community_id"), body)
        return json_response(LiveSessionReply(session=session), status=201)

    @endpoint
    async def list_(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        state = None
        if request.query.get("state"):
            try:
                state = LiveSessionState(request.query["state"])
            except ValueError:
                raise RequestError(ErrorCode.INVALID_ARGUMENT,
                                   "state: scheduled, live, ended or cancelled") from None
        sessions = await live.list_sessions(user.id, _id(request, "community_id"), state)
        return json_response(LiveSessionsReply(sessions=sessions))

    @endpoint
    async def get(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        sid = await _in_community(request, user.id)
        return json_response(LiveSessionReply(session=await live.get(user.id, sid)))

    @endpoint
    async def patch(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        sid = await _in_community(request, user.id)
        body = await _body(request, LiveSessionPatch)
        return json_response(LiveSessionReply(session=await live.patch(user.id, sid, body)))

    @endpoint
    async def transition(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        sid = await _in_community(request, user.id)
        action = request.match_info["action"]
        if action == "start":
            session = await live.start(user.id, sid)
        elif action == "end":
            session = await live.end(user.id, sid)
        elif action == "cancel":
            session = await live.cancel(user.id, sid)
        else:
            raise not_found(f"no action {action!r}")
        return json_response(LiveSessionReply(session=session))

    @endpoint
    async def register(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        sid = await _in_community(request, user.id)
        session = await live.register(user.id, sid, registered=request.method == "POST")
        return json_response(LiveSessionReply(session=session))

    @endpoint
    async def attendance(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        sid = await _in_community(request, user.id)
        return json_response(await live.attendance(user.id, sid))

    @endpoint
    async def questions(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        sid = await _in_community(request, user.id)
        return json_response(await live.questions_rest(user.id, sid))

    app.router.add_post(base, create)
    app.router.add_get(base, list_)
    app.router.add_get(base + "/{session_id}", get)
    app.router.add_patch(base + "/{session_id}", patch)
    app.router.add_post(base + "/{session_id}/register", register)
    app.router.add_delete(base + "/{session_id}/register", register)
    app.router.add_get(base + "/{session_id}/attendance", attendance)
    app.router.add_get(base + "/{session_id}/questions", questions)
    app.router.add_post(base + "/{session_id}/{action}", transition)
