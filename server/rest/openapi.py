"""The REST route table and the OpenAPI 3.1 document generated from it.

Every REST route is added through :class:`RestApi`, which registers it on the aiohttp
router *and* records what it takes and returns (the same msgspec types the handler
decodes and encodes). :func:`openapi_document` renders that table with
``msgspec.json.schema_components``, so the contract cannot drift from the code; it is
served at ``GET /api/v1/openapi.json`` and rendered into ``docs/rest.md``
(:mod:`server.rest.docs`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from aiohttp import web

from protocol.models import Id
from server.rest.decoding import text_middleware
from server.rest.errors import (
    ErrorBody,
    codes_of_status,
    error_middleware,
    quiet_parser_errors,
)

API_PREFIX = "/api/v1"
OPENAPI_PATH = API_PREFIX + "/openapi.json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NoContent:
    """Marker: the success reply has no body (204)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Operation:
    """One route as the contract describes it."""

    method: str
    path: str
    summary: str
    tag: str
    handler: Handler
    body: Any = None
    """The JSON body's type (a Struct), or None when the route reads no body."""
    body_required: bool = True
    query: Any = None
    """A Struct whose fields are the query parameters."""
    reply: Any = NoContent
    """The success reply's type; :class:`NoContent` for an empty 204."""
    status: int = 200
    auth: bool = True
    credentials: tuple[str, ...] = ("bearer",)
    """Which credentials the route takes when ``auth``: ``bearer`` (a user's access
    token or a bot token), ``serviceKey`` (a service key, ``hsk_...``), or both; or
    ``webSession`` (the browser's refresh cookie with its CSRF proof,
    server/api_web_auth.py)."""
    media_type: str = "application/json"
    path_types: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Types of path parameters; a name ending in ``_id`` is an :data:`Id` unless given."""
    description: str = ""
    more_errors: tuple[int, ...] = ()
    """Error statuses beyond :data:`ERROR_STATUSES` (401 where no token is needed but a
    credential in the body can be wrong)."""

    @property
    def operation_id(self) -> str:
        words = re.sub(r"[{}@.]", "", self.path.removeprefix(API_PREFIX)).replace("-", "_")
        return (self.method.lower() + words.replace("/", "_")).rstrip("_")

    def path_names(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    def path_type(self, name: str) -> Any:
        if name in self.path_types:
            return self.path_types[name]
        if name.endswith("_id"):
            return Id
        raise LookupError(f"{self.method} {self.path}: no type for path parameter {name}")


class RestApi:
    """The application's REST route table (one per application, see :func:`rest_api`)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.operations: list[Operation] = []
        self._document: dict[str, Any] | None = None

    def route(self, method: str, path: str, handler: Handler, *, summary: str, tag: str,
              **details: Any) -> None:
        """Register ``handler`` for ``method`` ``/api/v1`` + ``path`` and document it."""
        operation = Operation(method=method, path=API_PREFIX + path, summary=summary, tag=tag,
                              handler=handler, **details)
        for name in operation.path_names():
            operation.path_type(name)  # fail at start-up, not in a client's face
        self.operations.append(operation)
        self.app.router.add_route(method, operation.path, handler)
        self._document = None

    def document(self) -> dict[str, Any]:
        """The OpenAPI document of every route registered so far (built once)."""
        if self._document is None:
            self._document = openapi_document(self.operations)
        return self._document


REST_API = web.AppKey("hearth_rest_api", RestApi)


def rest_api(app: web.Application) -> RestApi:
    """The route table of ``app``, made on first use; that also installs the middlewares
    every REST route relies on (innermost, so CORS and request ids see their replies):
    the error replies and the text check of paths and queries."""
    if REST_API not in app:
        app[REST_API] = RestApi(app)
        app.middlewares.append(error_middleware)
        app.middlewares.append(text_middleware)
        quiet_parser_errors()
    return app[REST_API]


def add_openapi_route(app: web.Application) -> None:
    """``GET /api/v1/openapi.json``: the contract of every route, this one included."""
    api = rest_api(app)

    async def openapi(request: web.Request) -> web.StreamResponse:
        return web.Response(body=msgspec.json.encode(api.document()),
                            content_type="application/json")

    api.route("GET", OPENAPI_PATH.removeprefix(API_PREFIX), openapi, auth=False,
              summary="This document: the OpenAPI 3.1 contract of every REST route.",
              tag="meta", reply=dict[str, Any])


# ------------------------------------------------------------------------- rendering

_REF = "#/components/schemas/{name}"
ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 415, 429, 503)
"""Error statuses every operation documents (401 only where a token is required;
413 and 415 only where a body is read)."""

_STATUS_TEXT = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
                409: "Conflict", 413: "Payload too large", 415: "Unsupported media type",
                429: "Too many requests", 503: "Unavailable"}


def _error_response(status: int) -> dict[str, Any]:
    codes = codes_of_status(status)
    schema = {
        "allOf": [{"$ref": _REF.format(name="ErrorBody")}],
        "properties": {"error": {"properties": {"code": {"enum": [c.value for c in codes]}}}},
    }
    headers: dict[str, Any] = {}
    if status in (429, 503):
        headers["Retry-After"] = {"description": "Seconds to wait before retrying.",
                                  "schema": {"type": "string"}}
    response: dict[str, Any] = {
        "description": f"{_STATUS_TEXT[status]}: " + ", ".join(f"`{c.value}`" for c in codes),
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def _statuses(op: Operation) -> list[int]:
    out = []
    for status in ERROR_STATUSES:
        if status == 401 and not op.auth and 401 not in op.more_errors:
            continue
        if status in (413, 415) and op.body is None:
            continue
        out.append(status)
    return out


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent rather than null: drop ``null`` from its schema."""
    options = [s for s in schema.get("anyOf", []) if s != {"type": "null"}]
    if len(options) != 1:
        return schema
    out = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    return {**options[0], **out}


def openapi_document(operations: list[Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations`` (deterministic: same input, same text)."""
    types: list[Any] = [ErrorBody]
    for op in operations:
        for t in (op.body, op.query, op.reply):
            if t is not None and t is not NoContent:
                types.append(t)
        types.extend(op.path_type(name) for name in op.path_names())
    unique: list[Any] = []
    for t in types:
        if not any(t is u for u in unique):
            unique.append(t)
    schemas, components = msgspec.json.schema_components(unique, ref_template=_REF)
    schema_of = {id(t): s for t, s in zip(unique, schemas, strict=True)}

    paths: dict[str, dict[str, Any]] = {}
    for op in sorted(operations, key=lambda o: (o.path, o.method)):
        parameters: list[dict[str, Any]] = []
        for name in op.path_names():
            parameters.append({"name": name, "in": "path", "required": True,
                               "schema": schema_of[id(op.path_type(name))]})
        if op.query is not None:
            query_schema = components[op.query.__name__]
            required = set(query_schema.get("required", []))
            for name, prop in query_schema["properties"].items():
                parameters.append({"name": name, "in": "query", "required": name in required,
                                   "schema": _without_null(prop)})
        entry: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary,
                                 "tags": [op.tag]}
        if op.description:
            entry["description"] = op.description
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None:
            entry["requestBody"] = {"required": op.body_required, "content": {
                "application/json": {"schema": schema_of[id(op.body)]}}}
        responses: dict[str, Any] = {}
        if op.reply is NoContent:
            responses[str(op.status)] = {"description": "Done; no content."}
        else:
            reply_schema = ({"type": "string"} if op.media_type != "application/json"
                            else schema_of[id(op.reply)])
            responses[str(op.status)] = {"description": op.summary, "content": {
                op.media_type: {"schema": reply_schema}}}
        for status in _statuses(op):
            responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
        entry["responses"] = responses
        entry["security"] = [{name: []} for name in op.credentials] if op.auth else []
        paths.setdefault(op.path, {})[op.method.lower()] = entry

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Hearth REST API",
            "version": "1",
            "description": "Accounts, communities, moderation, roles, automod and live "
                           "sessions over HTTP. Every error is `{\"error\": {\"code\", "
                           "\"message\"}}` with the status its code maps to.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "responses": {f"Error{s}": _error_response(s) for s in ERROR_STATUSES},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "An access token (JWT) or a bot token."},
                "serviceKey": {"type": "http", "scheme": "bearer",
                               "description": "A service key (`hsk_...`) of the "
                                              "community, with the scope the route "
                                              "names."},
                "webSession": {"type": "apiKey", "in": "cookie", "name": "hearth_refresh",
                               "description": "The browser's HttpOnly refresh cookie, "
                                              "with the header `X-Hearth-CSRF` equal to "
                                              "the `hearth_csrf` cookie (else 403 "
                                              "`csrf_failed`)."}},
        },
    }
