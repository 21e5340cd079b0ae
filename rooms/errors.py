"""The one exception the realtime domain raises for a refused request."""

from __future__ import annotations

from protocol.codes import ErrorCode


class RequestError(Exception):
    """A request was refused; the gateway replies ``error`` with this code, REST maps
    it to an HTTP status. Nothing was changed."""

    def __init__(self, code: ErrorCode, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms


def not_found(what: str = "not found") -> RequestError:
    return RequestError(ErrorCode.NOT_FOUND, what)


def forbidden(what: str = "forbidden") -> RequestError:
    return RequestError(ErrorCode.FORBIDDEN, what)
