"""REST routes for accounts and credentials, plus the caller check every REST module uses.

Routes: ``POST /api/v1/auth/{register,login,refresh,logout}``, ``GET /api/v1/users/@me``,
``POST /api/v1/bots``, ``POST /api/v1/loadtest/provision`` (their contract:
``GET /api/v1/openapi.json``, rendered in docs/rest.md). The handlers only decode, call
:class:`server.auth.Authenticator` and encode; all policy lives there, and its
:class:`server.auth.AuthError` refusals become error replies in
:mod:`server.rest.errors`.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web

from protocol.codes import ErrorCode
from protocol.models import User
from protocol.rest import BotCreated, MeReply, Provisioned, TokenPair
from server.auth import (
    DISPLAY_NAME_MAX,
    LOADTEST_MAX_USERS,
    PASSWORD_MAX,
    PASSWORD_MIN,
    Authenticator,
)
from server.rest.decoding import read_body
from server.rest.errors import ApiError
from server.rest.openapi import rest_api

AUTH_KEY = web.AppKey("hearth_authenticator", Authenticator)
"""Where :func:`add_auth_routes` leaves the Authenticator for other modules."""

Username = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-]{3,32}$",
                                       description="3-32 of A-Z a-z 0-9 _ . -")]
Password = Annotated[str, msgspec.Meta(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)]
DisplayName = Annotated[str, msgspec.Meta(max_length=DISPLAY_NAME_MAX,
                                          description="1-64 characters once trimmed.")]
Token = Annotated[str, msgspec.Meta(max_length=4096)]


def json_response(obj: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    """``obj`` (msgspec Structs, dicts, lists...) encoded with msgspec as the reply."""
    return web.Response(body=msgspec.json.encode(obj), status=status,
                        content_type="application/json", headers=headers)


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def require_user(request: web.Request, auth: Authenticator) -> User:
    """The authenticated caller, or raise 401 ``unauthorized``.

    Raising (rather than returning a response) lets any handler call this first thing
    without threading an early return through its own code.
    """
    token = bearer_token(request)
    user = await auth.authenticate(token) if token is not None and token.isascii() else None
    if user is None:
        raise ApiError(ErrorCode.UNAUTHORIZED, "a valid bearer token is required",
                       headers={"WWW-Authenticate": "Bearer"})
    return user


# ------------------------------------------------------------------------ bodies


class RegisterRequest(msgspec.Struct, kw_only=True):
    """A new password account."""

    username: Username
    password: Password
    display_name: DisplayName | None = None


class LoginRequest(msgspec.Struct, kw_only=True):
    """Sign in with a password."""

    username: Annotated[str, msgspec.Meta(max_length=64)]
    password: Annotated[str, msgspec.Meta(max_length=PASSWORD_MAX)]


class RefreshRequest(msgspec.Struct, kw_only=True):
    """A refresh token (rotated by refresh, revoked by logout)."""

    refresh_token: Token


class CreateBotRequest(msgspec.Struct, kw_only=True):
    """A bot account owned by the caller."""

    username: Username
    display_name: DisplayName | None = None


class ProvisionRequest(msgspec.Struct, kw_only=True):
    """Bulk load-test bots in private rooms of ``room_size``."""

    users: Annotated[int, msgspec.Meta(ge=1, le=LOADTEST_MAX_USERS)]
    room_size: Annotated[int, msgspec.Meta(ge=1, le=LOADTEST_MAX_USERS)]
    prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-]{1,24}$")] | None = None


# ----------------------------------------------------------------------- handlers


class _AuthRoutes:
    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    async def register(self, request: web.Request) -> web.Response:
        body = await read_body(request, RegisterRequest)
        pair = await self.auth.register(body.username, body.password, body.display_name)
        return json_response(pair, status=201)

    async def login(self, request: web.Request) -> web.Response:
        body = await read_body(request, LoginRequest)
        pair = await self.auth.login(body.username, body.password, remote=request.remote)
        return json_response(pair)

    async def refresh(self, request: web.Request) -> web.Response:
        body = await read_body(request, RefreshRequest)
        return json_response(await self.auth.refresh(body.refresh_token))

    async def logout(self, request: web.Request) -> web.Response:
        body = await read_body(request, RefreshRequest)
        await self.auth.logout(body.refresh_token)
        return web.Response(status=204)

    async def me(self, request: web.Request) -> web.Response:
        return json_response(MeReply(user=await require_user(request, self.auth)))

    async def create_bot(self, request: web.Request) -> web.Response:
        owner = await require_user(request, self.auth)
        body = await read_body(request, CreateBotRequest)
        created = await self.auth.create_bot(owner, body.username, body.display_name)
        return json_response(created, status=201)

    async def provision(self, request: web.Request) -> web.Response:
        if not self.auth.loadtest_provisioning:  # before decoding: the route looks absent
            raise ApiError(ErrorCode.NOT_FOUND, "not found")
        body = await read_body(request, ProvisionRequest)
        result = await self.auth.provision_loadtest(body.users, body.room_size, body.prefix)
        return json_response(result, status=201)


def add_auth_routes(app: web.Application, auth: Authenticator) -> None:
    """Register the account routes on ``app`` and keep ``auth`` under :data:`AUTH_KEY`."""
    app[AUTH_KEY] = auth
    routes = _AuthRoutes(auth)
    api = rest_api(app)
    tag = "accounts"
    api.route("POST", "/auth/register", routes.register, tag=tag, auth=False,
              summary="Create a password account and sign in.", body=RegisterRequest,
              reply=TokenPair, status=201)
    api.route("POST", "/auth/login", routes.login, tag=tag, auth=False,
              summary="Sign in; throttled per account and address (429 with Retry-After).",
              body=LoginRequest, reply=TokenPair, more_errors=(401,))
    api.route("POST", "/auth/refresh", routes.refresh, tag=tag, auth=False,
              summary="A new token pair; reusing a refresh token revokes its family.",
              body=RefreshRequest, reply=TokenPair, more_errors=(401,))
    api.route("POST", "/auth/logout", routes.logout, tag=tag, auth=False,
              summary="Revoke the refresh token's family.", body=RefreshRequest, status=204)
    api.route("GET", "/users/@me", routes.me, tag=tag, summary="The caller.", reply=MeReply)
    api.route("POST", "/bots", routes.create_bot, tag=tag,
              summary="A bot account and its long-lived token (shown once).",
              body=CreateBotRequest, reply=BotCreated, status=201)
    api.route("POST", "/loadtest/provision", routes.provision, tag=tag, auth=False,
              summary="Load-test bots (only with loadtest_provisioning on; else 404).",
              body=ProvisionRequest, reply=Provisioned, status=201)
