"""The REST error model: one HTTP status per error code, one error body, one middleware.

Every refusal a REST client can see is an :class:`protocol.codes.ErrorCode` with the
status :data:`HTTP_STATUS` gives it, in the body ``{"error": {"code", "message"}}``
(:class:`ErrorBody`). Handlers raise; they never build error replies themselves:

    ApiError (server/rest)              -> its code
    RequestError (rooms, the domain)    -> its code, Retry-After from retry_after_ms
    AuthError (server/auth.py)          -> its code, Retry-After when throttled
    web.HTTPException (aiohttp's own)   -> the code of its status (404 not_found,
                                           405 method_not_allowed, 413 payload_too_large)
    PostgreSQL or Redis out of reach    -> 503 unavailable with Retry-After, logged
                                           once per store and interval, no traceback
                                           (rooms/realtime/outages.py)
    anything else                       -> 500 internal, logged once with its traceback

The table is the one place a status is chosen: adding a code adds one line here (a
test checks that every :class:`ErrorCode` has a status).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from protocol.codes import ErrorCode
from rooms.errors import RequestError
from rooms.realtime.outages import ThrottledLog, outage_of, unavailable
from server.auth import AuthError, TooManyAttempts
from server.logs import REQUEST_ID

log = logging.getLogger(__name__)
_OUTAGES = ThrottledLog(log)

HTTP_STATUS: Mapping[ErrorCode, int] = {
    # the request itself is wrong
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.INVALID_FRAME: 400,
    ErrorCode.CONTENT_TOO_LONG: 400,
    ErrorCode.EMPTY_MESSAGE: 400,
    ErrorCode.TOO_MANY_ATTACHMENTS: 400,
    ErrorCode.TOO_MANY_MENTIONS: 400,
    ErrorCode.INVALID_EMOJI: 400,
    ErrorCode.NOT_READY: 400,
    ErrorCode.ALREADY_IDENTIFIED: 400,
    # who is asking
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.INVALID_TOKEN: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.PREREQUISITE_NOT_MET: 403,
    ErrorCode.BANNED: 403,
    ErrorCode.TIMED_OUT: 403,
    ErrorCode.CHANNEL_LOCKED: 403,
    ErrorCode.LOCKDOWN: 403,
    ErrorCode.AUTOMOD_BLOCKED: 403,
    ErrorCode.ORIGIN_NOT_ALLOWED: 403,
    ErrorCode.CSRF_FAILED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    # the state of the target
    ErrorCode.CONFLICT: 409,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.USERNAME_TAKEN: 409,
    ErrorCode.LIMIT_EXCEEDED: 409,
    ErrorCode.TOO_MANY_REACTIONS: 409,
    ErrorCode.THREAD_ARCHIVED: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    # slow down
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.SLOWMODE: 429,
    ErrorCode.TOO_MANY_ATTEMPTS: 429,
    # the server
    ErrorCode.INTERNAL: 500,
    ErrorCode.VOICE_CAPACITY: 503,
    ErrorCode.VOICE_UNAVAILABLE: 503,
    ErrorCode.UNAVAILABLE: 503,
}
"""The HTTP status of every error code; REST replies use no other pairing."""

_CODE_OF_STATUS: Mapping[int, ErrorCode] = {
    400: ErrorCode.INVALID_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    429: ErrorCode.RATE_LIMITED,
}
"""The code of an aiohttp ``HTTPException`` by its status (anything else: internal)."""


def codes_of_status(status: int) -> list[ErrorCode]:
    """Every code answered with ``status``, in declaration order (for the documents)."""
    return [code for code in ErrorCode if HTTP_STATUS.get(code) == status]


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    """What went wrong: a stable ``code`` to branch on, a ``message`` for people."""

    code: ErrorCode
    message: str


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """The body of every REST error reply."""

    error: ErrorDetail


class ApiError(Exception):
    """A refused REST request, raised anywhere below a handler."""

    def __init__(self, code: ErrorCode, message: str, *,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def invalid_request(message: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_REQUEST, message)


def error_response(code: ErrorCode, message: str,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    """The documented error reply for ``code`` (its status from :data:`HTTP_STATUS`)."""
    body = msgspec.json.encode(ErrorBody(error=ErrorDetail(code=code, message=message)))
    return web.Response(body=body, status=HTTP_STATUS[code], content_type="application/json",
                        headers=dict(headers) if headers else None)


def retry_after_header(retry_after_ms: int | None) -> dict[str, str]:
    """``Retry-After`` in whole seconds (rounded up, at least 1), or nothing."""
    if retry_after_ms is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(retry_after_ms / 1000)))}


_PASSED_ON = ("Allow", "WWW-Authenticate", "Retry-After")
"""Headers of an aiohttp ``HTTPException`` worth keeping on its JSON replacement."""


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    code = _CODE_OF_STATUS.get(exc.status, ErrorCode.INTERNAL)
    message = exc.reason.lower() if exc.reason else code.value.replace("_", " ")
    if code is ErrorCode.PAYLOAD_TOO_LARGE:
        message = exc.text or message
    headers = {name: exc.headers[name] for name in _PASSED_ON if name in exc.headers}
    return error_response(code, message, headers)


def _answered(request: web.Request) -> bool:
    """Whether a reply (a streamed body, a websocket handshake) has begun: then no
    error reply can follow it."""
    writer = request.writer
    return writer is not None and writer.output_size > 0


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure below this point as the documented JSON error reply."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.code, exc.message, exc.headers)
    except RequestError as exc:
        return error_response(exc.code, exc.message, retry_after_header(exc.retry_after_ms))
    except AuthError as exc:
        headers = ({"Retry-After": str(exc.retry_after)}
                   if isinstance(exc, TooManyAttempts) else None)
        return error_response(ErrorCode(exc.code), exc.message, headers)
    except web.HTTPException as exc:
        if exc.status < 400 or _answered(request):
            raise  # redirects are answers; after a reply began, aiohttp closes it
        return _from_http_exception(exc)
    except asyncio.CancelledError:
        raise  # the client went away: nothing to answer
    except Exception as exc:
        if _answered(request):
            raise  # a stream or websocket already under way: aiohttp logs and closes
        extra = {"request_id": request.get(REQUEST_ID, "")}
        # Before the client-went-away case: a store out of reach may be a
        # ConnectionError too (persistence.database.DatabaseUnavailable).
        store = outage_of(exc)
        if store is not None:
            _OUTAGES.failure(exc, f"{request.method} {request.path}", extra=extra)
            error = unavailable(store)
            return error_response(error.code, error.message,
                                  retry_after_header(error.retry_after_ms))
        if isinstance(exc, ConnectionError):
            raise  # the client went away: nothing to answer
        log.exception("%s %s failed", request.method, request.path, extra=extra)
        return error_response(ErrorCode.INTERNAL, "internal error; nothing was applied")


class ParserErrorsWithoutTraceback(logging.Filter):
    """aiohttp logs a request its HTTP parser refuses (a header past 8,190 bytes, a
    malformed request line) with a full traceback, before any middleware runs. That is
    the client's mistake, not the server's: keep one INFO line, drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = f"{record.msg}: %s"
            record.args = (*(record.args if isinstance(record.args, tuple) else ()),
                           f"{exc.code} {exc.message}")
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_PARSER_FILTER = ParserErrorsWithoutTraceback()


def quiet_parser_errors() -> None:
    """Install :class:`ParserErrorsWithoutTraceback` on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if _PARSER_FILTER not in logger.filters:
        logger.addFilter(_PARSER_FILTER)
