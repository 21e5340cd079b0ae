"""Cross-origin rules: CORS for the REST API and the Origin check of the gateway.

Browsers attach ``Origin`` to cross-site requests; non-browser clients (bots, the load
generator, curl) usually send none and are not subject to CORS at all, since they carry
their bearer token explicitly. Credentials (cookies) are never used by Hearth, so
``Access-Control-Allow-Credentials`` is never sent and ``"*"`` can be honoured literally.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

API_PATH_PREFIX = "/api/"
ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type"
EXPOSED_HEADERS = "Retry-After"
PREFLIGHT_MAX_AGE_S = "600"

_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def _normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` lower-cased, default port and trailing slash dropped."""
    parts = urlsplit(origin.strip().rstrip("/").lower())
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None and str(port) != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


def _origin_host(origin: str) -> str:
    return _normalize_origin(origin).partition("://")[2]


def _request_host(request: web.Request, scheme: str) -> str:
    """The Host header, lower-cased, without the default port of ``scheme``."""
    host = (request.headers.get("Host") or "").strip().lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default and host.endswith(f":{default}"):
        host = host[: -len(default) - 1]
    return host


def _listed(origin: str, allowed_origins: list[str]) -> bool:
    if "*" in allowed_origins:
        return True
    wanted = _normalize_origin(origin)
    return any(_normalize_origin(o) == wanted for o in allowed_origins if o != "*")


def origin_allowed(request: web.Request, allowed_origins: list[str]) -> bool:
    """Whether a request's ``Origin`` may use this server (the websocket handshake check).

    No Origin header: a non-browser client, allowed. Same host as the Host header: the
    server's own web client, allowed (the scheme is not compared, since a TLS-terminating
    proxy makes it differ). Otherwise it must be listed in ``allowed_origins``, or
    ``"*"`` must be. This is what stops another site's page from opening a gateway
    connection in a visitor's browser.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if _listed(origin, allowed_origins):
        return True
    if origin.strip().lower() == "null":
        return False
    scheme = urlsplit(origin.strip().lower()).scheme
    request_host = _request_host(request, scheme)
    return bool(request_host) and _origin_host(origin) == request_host


def _add_cors_headers(headers: MutableMapping[str, str], origin: str,
                      allowed_origins: list[str]) -> None:
    headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed_origins else origin
    headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    vary = headers.get("Vary")
    if not vary:
        headers["Vary"] = "Origin"
    elif "origin" not in vary.lower():
        headers["Vary"] = f"{vary}, Origin"


def cors_middleware(allowed_origins: list[str]) -> Middleware:
    """A middleware answering CORS for ``/api/`` paths (other paths pass untouched).

    Preflights (``OPTIONS`` with ``Access-Control-Request-Method``) are answered here:
    204 with the allowed methods and headers for an allowed origin, 403
    ``origin_not_allowed`` otherwise. Actual requests run normally; allowed origins get
    ``Access-Control-Allow-Origin`` on the reply (errors included, so browser clients can
    read error bodies), others get no CORS headers and the browser hides the reply.
    """
    allowed = list(allowed_origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API_PATH_PREFIX):
            return await handler(request)
        origin = request.headers.get("Origin")
        is_preflight = (request.method == "OPTIONS"
                        and "Access-Control-Request-Method" in request.headers)
        permitted = origin is not None and origin_allowed(request, allowed)
        if is_preflight and origin is not None:
            if not permitted:
                return web.json_response(
                    {"error": {"code": "origin_not_allowed", "message": "origin not allowed"}},
                    status=403)
            preflight = web.Response(status=204, headers={
                "Access-Control-Allow-Methods": ALLOWED_METHODS,
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": PREFLIGHT_MAX_AGE_S,
            })
            _add_cors_headers(preflight.headers, origin, allowed)
            return preflight
        if not permitted:
            return await handler(request)
        assert origin is not None
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _add_cors_headers(exc.headers, origin, allowed)
            raise
        _add_cors_headers(response.headers, origin, allowed)
        return response

    return middleware
