"""REST routes for accounts and credentials, plus helpers every REST module shares.

Routes (docs/rest.md): ``POST /api/v1/auth/{register,login,refresh,logout}``,
``GET /api/v1/users/@me``, ``POST /api/v1/bots``, ``POST /api/v1/loadtest/provision``.
The handlers only decode, call :class:`server.auth.Authenticator` and encode; all
policy lives there. :func:`require_user`, :func:`json_response`, :func:`error_response`
and :func:`decode_body` are exported so the other REST modules answer the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from protocol.codes import ErrorCode
from protocol.models import User
from rooms.errors import RequestError
from server.auth import Authenticator, AuthError, TooManyAttempts

API_PREFIX = "/api/v1"
AUTH_KEY = web.AppKey("hearth_authenticator", Authenticator)
"""Where :func:`add_auth_routes` leaves the Authenticator for other modules."""

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------- shared helpers


def json_response(obj: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    """``obj`` (msgspec Structs, dicts, lists...) encoded with msgspec as the reply."""
    return web.Response(body=msgspec.json.encode(obj), status=status,
                        content_type="application/json", headers=headers)


def _error_body(code: str, message: str) -> bytes:
    return msgspec.json.encode({"error": {"code": code, "message": message}})


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    """The contract's error shape: ``{"error": {"code": ..., "message": ...}}``."""
    return web.Response(body=_error_body(code, message), status=status,
                        content_type="application/json", headers=headers)


def answers_request_errors(status: Mapping[ErrorCode, int]) -> Callable[[Handler], Handler]:
    """Decorator for REST handlers that call the domain services: a
    :class:`rooms.errors.RequestError` becomes the contract's error reply, with the HTTP
    status ``status`` gives its code (400 otherwise)."""
    def decorate(fn: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await fn(request)
            except RequestError as exc:
                return error_response(status.get(exc.code, 400), exc.code.value, exc.message)
        return wrapped
    return decorate


class BadRequest(web.HTTPBadRequest):
    """A 400 ``invalid_request`` that handlers can raise from deep inside decoding."""

    def __init__(self, message: str) -> None:
        super().__init__(text=_error_body("invalid_request", message).decode(),
                         content_type="application/json")


async def decode_body(request: web.Request, model: type[T]) -> T:
    """The request's JSON body as ``model``; malformed or invalid -> 400 invalid_request."""
    body = await request.read()
    try:
        return msgspec.json.decode(body, type=model)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadRequest(str(exc)) from None


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
    user = await auth.authenticate(token) if token is not None else None
    if user is None:
        raise web.HTTPUnauthorized(
            text=_error_body("unauthorized", "a valid bearer token is required").decode(),
            content_type="application/json", headers={"WWW-Authenticate": "Bearer"})
    return user


def auth_error_response(exc: AuthError) -> web.Response:
    """An :class:`AuthError` as its REST reply (with Retry-After when throttled)."""
    headers = ({"Retry-After": str(exc.retry_after)}
               if isinstance(exc, TooManyAttempts) else None)
    return error_response(exc.status, exc.code, exc.message, headers=headers)


# ------------------------------------------------------------------------ bodies


class RegisterRequest(msgspec.Struct, kw_only=True):
    username: str
    password: str
    display_name: str | None = None


class LoginRequest(msgspec.Struct, kw_only=True):
    username: str
    password: str


class RefreshRequest(msgspec.Struct, kw_only=True):
    refresh_token: str


class CreateBotRequest(msgspec.Struct, kw_only=True):
    username: str
    display_name: str | None = None


class ProvisionRequest(msgspec.Struct, kw_only=True):
    users: int
    room_size: int
    prefix: str | None = None


class MeReply(msgspec.Struct, frozen=True, kw_only=True):
    user: User


# ----------------------------------------------------------------------- handlers


class _AuthRoutes:
    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    async def register(self, request: web.Request) -> web.Response:
        body = await decode_body(request, RegisterRequest)
        pair = await self.auth.register(body.username, body.password, body.display_name)
        return json_response(pair, status=201)

    async def login(self, request: web.Request) -> web.Response:
        body = await decode_body(request, LoginRequest)
        pair = await self.auth.login(body.username, body.password, remote=request.remote)
        return json_response(pair)

    async def refresh(self, request: web.Request) -> web.Response:
        body = await decode_body(request, RefreshRequest)
        return json_response(await self.auth.refresh(body.refresh_token))

    async def logout(self, request: web.Request) -> web.Response:
        body = await decode_body(request, RefreshRequest)
        await self.auth.logout(body.refresh_token)
        return web.Response(status=204)

    async def me(self, request: web.Request) -> web.Response:
        return json_response(MeReply(user=await require_user(request, self.auth)))

    async def create_bot(self, request: web.Request) -> web.Response:
        owner = await require_user(request, self.auth)
        body = await decode_body(request, CreateBotRequest)
        created = await self.auth.create_bot(owner, body.username, body.display_name)
        return json_response(created, status=201)

    async def provision(self, request: web.Request) -> web.Response:
        if not self.auth.loadtest_provisioning:  # before decoding: the route looks absent
            return error_response(404, "not_found", "not found")
        body = await decode_body(request, ProvisionRequest)
        result = await self.auth.provision_loadtest(body.users, body.room_size, body.prefix)
        return json_response(result, status=201)


def _mapping_auth_errors(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except AuthError as exc:
            return auth_error_response(exc)

    return wrapped


def add_auth_routes(app: web.Application, auth: Authenticator) -> None:
    """Register the account routes on ``app`` and keep ``auth`` under :data:`AUTH_KEY`."""
    app[AUTH_KEY] = auth
    routes = _AuthRoutes(auth)
    for method, path, handler in (
        ("POST", "/auth/register", routes.register),
        ("POST", "/auth/login", routes.login),
        ("POST", "/auth/refresh", routes.refresh),
        ("POST", "/auth/logout", routes.logout),
        ("GET", "/users/@me", routes.me),
        ("POST", "/bots", routes.create_bot),
        ("POST", "/loadtest/provision", routes.provision),
    ):
        app.router.add_route(method, API_PREFIX + path, _mapping_auth_errors(handler))
