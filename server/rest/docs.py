"""``docs/rest.md``, rendered from the OpenAPI document (a test keeps the file current).

Regenerate with ``hearth docs`` (or ``python -m server.rest.docs > docs/rest.md``).
"""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web

from protocol import codes
from protocol.codes import ErrorCode
from server.rest.errors import HTTP_STATUS
from server.rest.openapi import rest_api

INTRO = """\
# REST API v1

The websocket protocol is in [protocol.md](protocol.md); this is the REST side: accounts
and tokens, communities, invites, members, channels, DMs and history, moderation, roles,
automod and live sessions. This file is generated from the OpenAPI 3.1 document the
server serves at `GET /api/v1/openapi.json` (`server/rest/openapi.py`, rendered by
`server/rest/docs.py`); the document is generated from the msgspec types the handlers
decode and encode, so neither can drift from the code. Every reply carries an
`X-Request-Id` header (the client's own, if it sent one), to match a report to the
server's log.

Requests: JSON bodies (`Content-Type: application/json`; another type is 415), at most
1 MiB (more is 413). Every string (body, path or query) must be valid UTF-8 text
without NUL and at most 32,768 characters unless its field says less; every integer
within its field's bounds (ids are 1 to 2^53-1). Fields not in a body's schema are
ignored. Ops that mirror a websocket op take the same fields (without `op` and `id`)
with the same limits, and answer with the same result.

Auth: `Authorization: Bearer <access JWT or bot token>` on every route marked `bearer`;
`Authorization: Bearer <service key>` (`hsk_...`, with the scope the route names) on
every route marked `service key`.
"""

ERRORS = """\
## Errors

Every error reply, whatever produced it (a refused request, a malformed body, a path
that does not exist, a method the path does not take, a body too large), is JSON:

```json
{"error": {"code": "not_found", "message": "unknown channel"}}
```

`code` is stable and has exactly one HTTP status; `message` is for people. A body that
is not JSON, not an object, or does not match its schema (a missing field, a wrong
type, a number past its bounds) is `invalid_request`, REST's `invalid_frame`; a value
the schema allows but no store can hold (NUL, a lone surrogate, an integer past
bigint), or one the service refuses, is `invalid_argument`: the gateway answers the
same values the same way. A path parameter that is not a valid value
(`/communities/abc`) names nothing: 404. `429` and `503` replies carry `Retry-After`
(seconds) when waiting helps.

One exception is outside the application: a request whose head breaks HTTP itself
(a header line or field past 8,190 bytes, more than 128 headers, a malformed request
line) is refused by aiohttp's parser before any route or middleware runs. The reply
is `400` with a `text/plain` body naming the problem (never 431), and the connection
is closed; the server logs one INFO line for it, without a traceback.
"""

TOKENS = """\
## Tokens
- Access token: JWT HS256 signed with a key derived from `HEARTH_SECRET` (HMAC-SHA256, see `server/auth.py: signing_key`); claims `sub` (user id as string), `typ`="access", `exp` (15 min), `iat`, `jti`.
- Bot token: `hb.<token_id>.<secret>`; `bot_tokens.token_hash` = sha256(secret). Never expires; revocable.
- Refresh token: `hr.<random>`; `refresh_tokens.token_hash` = sha256(token). 30 days; rotated on each use.
- `server/auth.py: Authenticator.authenticate(token) -> protocol.models.User | None` accepts either
  access JWTs or bot tokens; used by the REST routes and by the gateway's identify.
"""  # noqa: E501


def member_docs(enum_cls: type) -> dict[str, str]:
    """The docstrings written under each member of ``enum_cls`` in its source."""
    tree = ast.parse(inspect.getsource(codes))
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == enum_cls.__name__:
            body = node.body
            for first, second in itertools.pairwise(body):
                if (isinstance(first, ast.Assign) and isinstance(second, ast.Expr)
                        and isinstance(second.value, ast.Constant)
                        and isinstance(second.value.value, str)):
                    target = first.targets[0]
                    if isinstance(target, ast.Name):
                        out[target.id] = " ".join(second.value.value.split())
    return out


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rst(text: str) -> str:
    """reStructuredText literals (````x````) as Markdown code."""
    return text.replace("``", "`")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _anchor(name: str) -> str:
    return name.lower()


def type_text(schema: dict[str, Any]) -> str:
    """A JSON schema as a short Markdown type: ``integer 1..100``, ``[Member]``..."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{_anchor(name)})"
    if "anyOf" in schema:
        return " \\| ".join(type_text(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    kind = schema.get("type", "any")
    if kind == "array":
        text = f"[{type_text(schema.get('items', {}))}]"
        if "maxItems" in schema:
            text += f" ({schema.get('minItems', 0)}..{schema['maxItems']} items)"
        return text
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None or high is not None:
            return f"{kind} {'' if low is None else low}..{'' if high is None else high}"
        return str(kind)
    if kind == "string":
        parts = []
        if "pattern" in schema:
            parts.append(f"`{schema['pattern']}`")
        if "maxLength" in schema:
            parts.append(f"{schema.get('minLength', 0)}..{schema['maxLength']} chars")
        return "string" + (f" ({', '.join(parts)})" if parts else "")
    if kind == "object" and "additionalProperties" in schema:
        return "object"
    return str(kind)


def _reply_text(op: dict[str, Any]) -> str:
    for status, response in op["responses"].items():
        if status.startswith("2"):
            content = response.get("content")
            if not content:
                return f"{status} (empty)"
            media, body = next(iter(content.items()))
            if media != "application/json":
                return f"{status} `{media}`"
            return f"{status} {type_text(body['schema'])}"
    return ""


def render_rest_markdown(document: dict[str, Any]) -> str:
    """``docs/rest.md`` for ``document`` (deterministic)."""
    lines = [INTRO, ERRORS]
    docs = member_docs(ErrorCode)
    lines.append("| code | HTTP | meaning |")
    lines.append("|---|---|---|")
    for code in sorted(ErrorCode, key=lambda c: (HTTP_STATUS[c], c.value)):
        meaning = _cell(_rst(docs.get(code.name, "")))
        lines.append(f"| `{code.value}` | {HTTP_STATUS[code]} | {meaning} |")
    lines.append("")

    lines.append("## Endpoints (under /api/v1)\n")
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op["tags"][0], []).append((path, method, op))
    for tag in sorted(by_tag):
        lines.append(f"### {tag}\n")
        rows = []
        for path, method, op in by_tag[tag]:
            params = [p for p in op.get("parameters", []) if p["in"] == "query"]
            query = ", ".join(f"`{p['name']}`: {type_text(p['schema'])}" for p in params)
            body = op.get("requestBody")
            body_text = type_text(body["content"]["application/json"]["schema"]) if body else "-"
            if body and not body["required"]:
                body_text += " (optional)"
            rows.append([method.upper(), f"`{path.removeprefix('/api/v1')}`",
                         " or ".join(_CREDENTIAL[next(iter(c))] for c in op["security"])
                         or "none",
                         body_text + (f"; query {query}" if query else ""),
                         _reply_text(op), _cell(_rst(op["summary"]))])
        lines.extend(_table(["method", "path", "auth", "request", "reply", "what"], rows))
        lines.append("")
    lines.append("Every operation documents its error replies: 400, 403, 404, 409, 429, 503, "
                 "401 where a token is needed, 413 and 415 where a body is read.\n")

    lines.append("## Schemas\n")
    for name, schema in document["components"]["schemas"].items():
        lines.append(f"### {name}\n")
        if schema.get("description"):
            lines.append(_rst(" ".join(schema["description"].split())) + "\n")
        if "properties" in schema:
            required = set(schema.get("required", []))
            rows = []
            for field, prop in schema["properties"].items():
                note = prop.get("description") or next(
                    (s.get("description", "") for s in prop.get("anyOf", [])
                     if "description" in s), "")
                default = ("" if field in required or "default" not in prop
                           else f"default `{json.dumps(prop['default'])}`. ")
                rows.append([f"`{field}`", type_text(prop),
                             "yes" if field in required else "no",
                             _cell(default + _rst(note))])
            lines.extend(_table(["field", "type", "required", "notes"], rows))
            lines.append("")
        elif "anyOf" in schema or "enum" in schema:
            lines.append(f"One of: {type_text(schema)}\n")
    lines.append(TOKENS)
    return "\n".join(lines)


_CREDENTIAL = {"bearer": "bearer", "serviceKey": "service key",
               "webSession": "session cookie + CSRF"}


def current_document() -> dict[str, Any]:
    """The OpenAPI document of the application as ``build_app`` assembles it (no I/O)."""
    from server.app import build_app
    from server.config import load_config

    config = load_config(overrides={"data_dir": tempfile.gettempdir(),
                                    "secret": "docs-only-secret-0123456789"}, environ={})
    app: web.Application = build_app(config)
    return rest_api(app).document()


if __name__ == "__main__":
    print(render_rest_markdown(current_document()), end="")
