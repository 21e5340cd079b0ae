"""The web page's sign-in: the refresh token in an HttpOnly cookie, access tokens in memory.

Why: the JSON API hands both tokens to the client, which a page could only keep in
web storage, readable by any script that runs in it and (in ``sessionStorage``) gone
with the tab. Here the refresh token never reaches a script:

- ``POST /auth/web/login`` and ``/auth/web/register`` set ``hearth_refresh`` (HttpOnly,
  ``SameSite=Strict``, ``Path=/api/v1/auth/web``, ``Max-Age`` the refresh lifetime,
  ``Secure`` when the request came over https) and ``hearth_csrf`` (a random value the
  page may read, ``SameSite=Strict``, ``Path=/``), and answer a :class:`WebSession`: the
  user and a short-lived access token that the page keeps in memory only.
- ``POST /auth/web/refresh`` rotates the cookie (the same rotation and reuse detection
  as ``/auth/refresh``) and answers a new :class:`WebSession`; a new tab or a restarted
  browser starts here.
- ``POST /auth/web/logout`` revokes the cookie's family and clears both cookies;
  ``POST /auth/web/logout-all`` revokes every family of the user (every browser and
  app), as ``POST /auth/logout-all`` does for a bearer-token client.

CSRF (the routes that read the cookie): OWASP's double-submit cookie plus origin
verification. The request must carry ``X-Hearth-CSRF`` equal to the ``hearth_csrf``
cookie (another site can neither read that cookie nor set a custom header on a
cross-origin request without a CORS preflight, which this server never grants for it),
and when the browser says where the request comes from (``Origin``,
``Sec-Fetch-Site``) it must be this server's own origin. A refusal is 403
``csrf_failed`` and changes nothing. ``SameSite=Strict`` is a third layer: the cookie is
not sent on cross-site requests at all. Login and register take no cookie, but are
origin-checked the same way, so another site cannot sign a visitor in as someone else.

Plain http (``http://localhost`` in development): the cookies are set without
``Secure`` (a browser drops a Secure cookie set over http on any host but localhost),
which is safe only on loopback or a trusted network; production serves https, directly
or behind a proxy that sets ``X-Forwarded-Proto: https``, and then the cookie is Secure.
"""

from __future__ import annotations

import hmac
import secrets

import msgspec
from aiohttp import web

from protocol.codes import ErrorCode
from protocol.models import User
from protocol.rest import TokenPair
from server.api_auth import LoginRequest, RegisterRequest, json_response, require_user
from server.auth import Authenticator, InvalidToken
from server.cors import origin_allowed
from server.rest.decoding import read_body
from server.rest.errors import ApiError
from server.rest.openapi import API_PREFIX, rest_api

WEB_AUTH_PATH = API_PREFIX + "/auth/web"
REFRESH_COOKIE = "hearth_refresh"
CSRF_COOKIE = "hearth_csrf"
CSRF_HEADER = "X-Hearth-CSRF"
_SAME_ORIGIN_FETCH = frozenset({"same-origin", "none"})


class WebSession(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of the web sign-in routes: the refresh token is in the ``hearth_refresh``
    cookie, never in the body; keep ``access_token`` in memory only."""

    user: User
    access_token: str
    expires_in: int
    """Seconds the access token stays valid; refresh before (``POST /auth/web/refresh``)."""
    csrf_token: str
    """The value to send as ``X-Hearth-CSRF`` (also readable from the ``hearth_csrf``
    cookie, so a page loaded later finds it)."""


def _secure(request: web.Request) -> bool:
    """Whether the page was served over https (directly, or as a proxy says).

    Trusting ``X-Forwarded-Proto`` blindly is harmless here: the worst a forged header
    does is mark the caller's own cookie Secure, which only breaks their own session."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def check_same_origin(request: web.Request) -> None:
    """Refuse (403 ``csrf_failed``) a request a browser says comes from another site."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.lower() not in _SAME_ORIGIN_FETCH:
        raise ApiError(ErrorCode.CSRF_FAILED, "cross-site request refused")
    if request.headers.get("Origin") is not None and not origin_allowed(request, []):
        raise ApiError(ErrorCode.CSRF_FAILED, "cross-origin request refused")


def check_csrf(request: web.Request) -> None:
    """The double-submit check: ``X-Hearth-CSRF`` equals the ``hearth_csrf`` cookie,
    and the request is same-origin (:func:`check_same_origin`)."""
    check_same_origin(request)
    header = request.headers.get(CSRF_HEADER, "")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not header or not cookie or not hmac.compare_digest(header.encode(), cookie.encode()):
        raise ApiError(ErrorCode.CSRF_FAILED,
                       f"the {CSRF_HEADER} header must equal the {CSRF_COOKIE} cookie")


def _expired_cookie(name: str, path: str, secure: bool) -> str:
    """A ``Set-Cookie`` value that deletes cookie ``name`` of ``path``."""
    return (f"{name}=; Max-Age=0; Path={path}; SameSite=Strict"
            + ("; Secure" if secure else ""))


def _refresh_cookie(request: web.Request) -> str:
    token = request.cookies.get(REFRESH_COOKIE, "")
    if not token or not token.isascii() or len(token) > 4096:
        raise ApiError(ErrorCode.INVALID_TOKEN, "not signed in on this browser")
    return token


class _WebAuthRoutes:
    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    def _signed_in(self, request: web.Request, pair: TokenPair,
                   status: int = 200) -> web.Response:
        """The reply that stores ``pair``'s refresh token in the cookie, not the body.
        The CSRF value is kept across rotations (one per browser sign-in)."""
        csrf = request.cookies.get(CSRF_COOKIE, "")
        if not (csrf.isascii() and 20 <= len(csrf) <= 128 and csrf.replace("-", "")
                .replace("_", "").isalnum()):
            csrf = secrets.token_urlsafe(24)
        reply = json_response(WebSession(user=pair.user, access_token=pair.access_token,
                                         expires_in=pair.expires_in, csrf_token=csrf),
                              status=status, headers={"Cache-Control": "no-store"})
        secure = _secure(request)
        reply.set_cookie(REFRESH_COOKIE, pair.refresh_token, path=WEB_AUTH_PATH,
                         max_age=self.auth.refresh_ttl_s, httponly=True, secure=secure,
                         samesite="Strict")
        reply.set_cookie(CSRF_COOKIE, csrf, path="/", max_age=self.auth.refresh_ttl_s,
                         secure=secure, samesite="Strict")
        return reply

    @staticmethod
    def _signed_out(request: web.Request) -> web.Response:
        reply = web.Response(status=204, headers={"Cache-Control": "no-store"})
        secure = _secure(request)
        reply.del_cookie(REFRESH_COOKIE, path=WEB_AUTH_PATH, secure=secure, samesite="Strict")
        reply.del_cookie(CSRF_COOKIE, path="/", secure=secure, samesite="Strict")
        return reply

    async def login(self, request: web.Request) -> web.Response:
        check_same_origin(request)
        body = await read_body(request, LoginRequest)
        pair = await self.auth.login(body.username, body.password, remote=request.remote)
        return self._signed_in(request, pair)

    async def register(self, request: web.Request) -> web.Response:
        check_same_origin(request)
        body = await read_body(request, RegisterRequest)
        pair = await self.auth.register(body.username, body.password, body.display_name)
        return self._signed_in(request, pair, status=201)

    async def refresh(self, request: web.Request) -> web.Response:
        check_csrf(request)
        try:
            pair = await self.auth.refresh(_refresh_cookie(request))
        except (InvalidToken, ApiError) as exc:
            # A dead sign-in: drop the CSRF cookie too, so the page stops trying it
            # (session.js only refreshes while that cookie exists).
            message = exc.message if isinstance(exc, ApiError) else str(exc)
            raise ApiError(ErrorCode.INVALID_TOKEN, message, headers={
                "Set-Cookie": _expired_cookie(CSRF_COOKIE, "/", _secure(request))}) from None
        return self._signed_in(request, pair)

    async def logout(self, request: web.Request) -> web.Response:
        check_csrf(request)
        token = request.cookies.get(REFRESH_COOKIE)
        if token and token.isascii():
            await self.auth.logout(token)
        return self._signed_out(request)

    async def logout_all(self, request: web.Request) -> web.Response:
        check_csrf(request)
        # Rotating the cookie proves it is live and names its user in one step.
        pair = await self.auth.refresh(_refresh_cookie(request))
        await self.auth.logout_everywhere(pair.user.id)
        return self._signed_out(request)

    async def logout_all_bearer(self, request: web.Request) -> web.Response:
        user = await require_user(request, self.auth)
        await self.auth.logout_everywhere(user.id)
        return web.Response(status=204)


def add_web_auth_routes(app: web.Application, auth: Authenticator) -> None:
    """Register the cookie sign-in routes and ``POST /auth/logout-all`` on ``app``."""
    routes = _WebAuthRoutes(auth)
    api = rest_api(app)
    tag = "web session"
    cookie_note = (f"Needs the `{REFRESH_COOKIE}` cookie and the CSRF proof: header "
                   f"`{CSRF_HEADER}` equal to the `{CSRF_COOKIE}` cookie, same-origin "
                   "(else 403 `csrf_failed`).")
    api.route("POST", "/auth/web/login", routes.login, tag=tag, auth=False,
              summary="Browser sign-in: sets the HttpOnly refresh cookie; the access "
                      "token is in the body (keep it in memory). Same-origin only.",
              body=LoginRequest, reply=WebSession, more_errors=(401,))
    api.route("POST", "/auth/web/register", routes.register, tag=tag, auth=False,
              summary="Create a password account and sign this browser in (as "
                      "/auth/web/login). Same-origin only.",
              body=RegisterRequest, reply=WebSession, status=201)
    api.route("POST", "/auth/web/refresh", routes.refresh, tag=tag,
              credentials=("webSession",),
              summary="A new access token from the refresh cookie (rotated; reuse "
                      "revokes its family). " + cookie_note,
              reply=WebSession)
    api.route("POST", "/auth/web/logout", routes.logout, tag=tag,
              credentials=("webSession",),
              summary="Sign this browser out: revoke the cookie's family, clear the "
                      "cookies. " + cookie_note, status=204)
    api.route("POST", "/auth/web/logout-all", routes.logout_all, tag=tag,
              credentials=("webSession",),
              summary="Sign out everywhere: revoke every refresh-token family of the "
                      "cookie's user (every browser and app) and clear the cookies. "
                      + cookie_note, status=204)
    api.route("POST", "/auth/logout-all", routes.logout_all_bearer, tag="accounts",
              summary="Sign out everywhere: revoke every refresh-token family of the "
                      "caller (access tokens already issued expire on their own).",
              status=204)
