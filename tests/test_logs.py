"""Structured logs and request ids."""

from __future__ import annotations

import json
import logging

import aiohttp

from server.logs import JsonFormatter, TextFormatter
from tests.conftest import RunningServer


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("hearth.test", logging.WARNING, __file__, 1, "hello %s",
                               ("world",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_context() -> None:
    line = JsonFormatter().format(_record(session_id="s1", user_id=7))
    entry = json.loads(line)
    assert entry["message"] == "hello world" and entry["level"] == "warning"
    assert entry["session_id"] == "s1" and entry["user_id"] == 7
    assert "request_id" not in entry


def test_text_lines_append_context() -> None:
    assert TextFormatter().format(_record(request_id="r9")).endswith("[request_id=r9]")


async def test_request_id_is_returned_or_echoed(live_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{live_server.url}/healthz") as reply:
            generated = reply.headers["X-Request-Id"]
            assert len(generated) == 16
        async with http.get(f"{live_server.url}/api/v1/users/@me",
                            headers={"X-Request-Id": "trace-42"}) as reply:
            assert reply.status == 401
            assert reply.headers.get("X-Request-Id") == "trace-42", dict(reply.headers)
