"""One way into a REST handler: body, path and query decoded into bounded msgspec types.

Whatever route a value comes by, it passes the same checks before any handler sees it:

- the body must be ``application/json`` (415 ``unsupported_media_type`` otherwise),
  a JSON object and match its Struct, else 400 ``invalid_request`` (REST's
  ``invalid_frame``; the message names the field); msgspec ``Meta`` bounds hold the
  numbers to their columns (ids within bigint and JavaScript's safe range, counts and
  durations within theirs);
- every string anywhere in it, and every path and query parameter, passes the text
  check the gateway runs too (:mod:`protocol.text`: no NUL, no lone surrogate, a length
  limit; every integer fits a ``bigint``), else 400 ``invalid_argument``;
- a path parameter that does not decode (``/communities/abc``), or an id not spelled
  plainly (``/communities/1e3``), names nothing: 404.

Requests that mirror a websocket op take that op's frame type (:func:`read_op`), so
REST and the gateway accept exactly the same fields with exactly the same limits.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from protocol.codes import ErrorCode
from protocol.text import text_problem, value_problem
from server.rest.errors import ApiError, invalid_request

T = TypeVar("T")

JSON_TYPES = ("application/json",)


def check_text(value: str, where: str) -> None:
    """Raise 400 ``invalid_argument`` naming ``where`` if ``value`` cannot be text."""
    problem = text_problem(value)
    if problem is not None:
        raise ApiError(ErrorCode.INVALID_ARGUMENT, f"{where} {problem}")


def check_tree(value: object, where: str) -> None:
    """:func:`protocol.text.value_problem` on a decoded value: 400 ``invalid_argument``."""
    problem = value_problem(value, where)
    if problem is not None:
        raise ApiError(ErrorCode.INVALID_ARGUMENT, problem)


def _schema_error(exc: msgspec.ValidationError, prefix: str) -> ApiError:
    message = str(exc)
    return invalid_request(message.replace("`$.", f"`{prefix}." if prefix else "`")
                            .replace("`$`", f"`{prefix or 'body'}`"))


async def read_json(request: web.Request) -> bytes:
    """The raw body, checked to be JSON by its ``Content-Type`` (an empty body: ``{}``).

    A body past the application's ``client_max_size`` raises aiohttp's 413, which the
    error middleware turns into ``payload_too_large``."""
    raw = await request.read()
    if not raw.strip():
        return b"{}"
    if "Content-Type" in request.headers:
        mime = request.content_type.lower()
        if mime not in JSON_TYPES and not mime.endswith("+json"):
            raise ApiError(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                           f"the body must be application/json, not {mime or 'untyped'}")
    return raw


async def read_body(request: web.Request, model: type[T]) -> T:
    """The JSON body as ``model``, every string and integer in it checked."""
    raw = await read_json(request)
    try:
        value = msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        if not raw.lstrip().startswith(b"{"):
            raise ApiError(ErrorCode.INVALID_REQUEST, "the body must be a JSON object") from None
        raise _schema_error(exc, "") from None
    except msgspec.DecodeError as exc:
        raise ApiError(ErrorCode.INVALID_REQUEST, f"the body is not JSON: {exc}") from None
    check_tree(value, "")
    return value


def _op_tag(frame_type: type[msgspec.Struct]) -> str:
    tag = frame_type.__struct_config__.tag
    assert isinstance(tag, str), frame_type
    return tag


_BODY_TYPES: dict[tuple[type[msgspec.Struct], frozenset[str]], type[msgspec.Struct]] = {}


def body_of(frame_type: type[msgspec.Struct],
            path: frozenset[str] = frozenset()) -> type[msgspec.Struct]:
    """The REST body of websocket op ``frame_type``: its fields but ``op``, ``id`` and
    those the path carries, with the same types, limits and defaults."""
    key = (frame_type, path)
    found = _BODY_TYPES.get(key)
    if found is not None:
        return found
    hints = typing.get_type_hints(frame_type, include_extras=True)
    fields: list[tuple[str, Any, Any]] = []
    for field in msgspec.structs.fields(frame_type):
        if field.name in ("op", "id") or field.name in path:
            continue
        if field.required:
            fields.append((field.name, hints[field.name], msgspec.NODEFAULT))
        elif field.default_factory is not msgspec.NODEFAULT:
            fields.append((field.name, hints[field.name],
                           msgspec.field(default_factory=field.default_factory)))
        else:
            fields.append((field.name, hints[field.name], field.default))
    # A distinct name per shape: the OpenAPI components are keyed by it.
    name = frame_type.__name__ + ("Fields" if path else "Body")
    body = msgspec.defstruct(name, fields, kw_only=True, module=__name__)
    body.__doc__ = frame_type.__doc__
    _BODY_TYPES[key] = body
    return body


async def read_op(request: web.Request, frame_type: type[T],
                  path: Mapping[str, Any] | None = None) -> T:
    """Websocket op ``frame_type`` from the JSON body (:func:`body_of`) plus the path's
    values: REST and the gateway decode the same operation with the same type."""
    assert issubclass(frame_type, msgspec.Struct)
    path = dict(path or {})
    body = await read_body(request, body_of(frame_type, frozenset(path)))
    fields = msgspec.structs.asdict(body) | path
    return typing.cast(T, frame_type(id=0, **fields))


def query_op(request: web.Request, frame_type: type[T],
             path: Mapping[str, Any] | None = None) -> T:
    """Websocket op ``frame_type`` from the query string (:func:`body_of` its fields)
    plus the path's values: a GET that mirrors a websocket op, with its limits."""
    assert issubclass(frame_type, msgspec.Struct)
    path = dict(path or {})
    query = query_params(request, body_of(frame_type, frozenset(path)))
    return typing.cast(T, frame_type(id=0, **(msgspec.structs.asdict(query) | path)))


def path_params(request: web.Request, model: type[T]) -> T:
    """The path's parameters as ``model``; one that does not decode names nothing (404)."""
    raw = dict(request.match_info)
    for name, value in raw.items():
        if text_problem(value) is not None:
            raise ApiError(ErrorCode.NOT_FOUND, f"unknown {name}")
    try:
        params = msgspec.convert(raw, model, strict=False)
    except msgspec.ValidationError as exc:
        raise ApiError(ErrorCode.NOT_FOUND, f"not found ({exc})") from None
    # One spelling per id: the decoder also reads "1e3" and "1.0" as integers.
    for name, text in raw.items():
        decoded = getattr(params, name, None)
        if isinstance(decoded, int) and not isinstance(decoded, bool) \
                and str(decoded) != text:
            raise ApiError(ErrorCode.NOT_FOUND, f"unknown {name}")
    return params


def query_params(request: web.Request, model: type[T]) -> T:
    """The query string as ``model`` (an empty value counts as absent; a repeated
    parameter, its first value); every value is checked as text first."""
    raw: dict[str, str] = {}
    for name, value in request.query.items():
        check_text(name, "query parameter")
        check_text(value, f"query parameter {name}")
        if value != "" and name not in raw:
            raw[name] = value
    try:
        value_ = msgspec.convert(raw, model, strict=False)
    except msgspec.ValidationError as exc:
        raise _schema_error(exc, "query") from None
    check_tree(value_, "query")
    return value_




@web.middleware
async def text_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The path and every query parameter of an ``/api/`` request checked as text before
    routing, so no route can forget it (NUL or a lone surrogate: 400)."""
    if request.path.startswith("/api/"):
        check_text(request.path, "the path")
        for name, value in request.query.items():
            check_text(name, "a query parameter name")
            check_text(value, f"query parameter {name}")
    return await handler(request)
