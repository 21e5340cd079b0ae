"""Logging: plain text for people, JSON lines for log pipelines (``HEARTH_LOG_FORMAT``).

Records carry context where there is one: ``session_id`` and ``user_id`` for gateway
work, ``request_id`` for REST (also returned as the ``X-Request-Id`` header, or taken
from the client's, so a report can be matched to a log line).

Failed REST requests are answered and logged by the error middleware
(``server/rest/errors.py``), inside this one: a PostgreSQL or Redis outage as 503
``unavailable`` logged once per store and interval, anything else once with its
traceback. What reaches this middleware still raising is logged here.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from rooms.realtime.outages import outage_of

_CONTEXT_FIELDS = ("session_id", "user_id", "request_id", "worker")
_encoder = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(entry).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(f"{f}={getattr(record, f)}" for f in _CONTEXT_FIELDS
                           if getattr(record, f, None) is not None)
        return f"{text} [{context}]" if context else text


def setup_logging(level: str, fmt: str, worker: str | None = None) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if worker is not None:
        handler.addFilter(_WorkerFilter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # logs every pg_ctl call
    logging.getLogger("asyncpg.pool").addFilter(_no_traceback_for_outages)


def _no_traceback_for_outages(record: logging.LogRecord) -> bool:
    """asyncpg's pool logs each failed attempt to reconnect its minimum connections with
    a traceback (back-off 1, 2, 4 ... 60 s) while PostgreSQL is down: keep the line,
    name the error, drop the traceback, which only shows asyncpg's connect path."""
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None and (isinstance(exc, OSError) or outage_of(exc) is not None):
        record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
        record.args = None
        record.exc_info = None
        record.exc_text = None
    return True


class _WorkerFilter(logging.Filter):
    def __init__(self, worker: str) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_LOG = logging.getLogger("hearth.http")
REQUEST_ID = web.RequestKey("request_id", str)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id; log failures and slow requests with it."""
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() \
        else secrets.token_hex(8)
    request[REQUEST_ID] = request_id
    started = time.monotonic()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["X-Request-Id"] = request_id
        raise
    except Exception:
        REQUEST_LOG.exception("%s %s failed", request.method, request.path,
                              extra={"request_id": request_id})
        raise
    elapsed = time.monotonic() - started
    if elapsed > 1.0 and not isinstance(response, web.WebSocketResponse):
        REQUEST_LOG.warning("%s %s took %.2f s", request.method, request.path, elapsed,
                            extra={"request_id": request_id})
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    return response
