"""The audit log: every moderation and permission change, who made it, why, before/after.

:func:`record` takes the caller's connection so the entry commits or rolls back together
with the change it describes (an audited change that rolled back leaves no entry, a
change never lands without its entry). Queries always name one community and page by
id, newest first; the indexes in ``0004_moderation.sql`` start with the community so a
filtered page costs the page. Retention is a plain delete by age
(:func:`purge_older_than`), run periodically by the server.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import msgspec

_json = msgspec.json.Encoder()
_decode = msgspec.json.Decoder()


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the audit log, as stored."""

    id: int
    community_id: int | None
    actor_id: int | None
    action: str
    target_type: str
    target_id: int | None
    reason: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    created_at: dt.datetime


def _encode(value: dict[str, Any] | None) -> str | None:
    return None if value is None else _json.encode(value).decode()


async def record(conn: asyncpg.Connection, *, community_id: int | None, actor_id: int | None,
                 action: str, target_type: str, target_id: int | None, reason: str | None,
                 before: dict[str, Any] | None, after: dict[str, Any] | None) -> int:
    """Append one entry in the caller's transaction; returns its id.

    ``action`` is dotted (``member.ban``, ``role.update``...); ``before``/``after`` are
    small JSON-able dicts of the fields that changed (not whole rows).
    """
    value = await conn.fetchval(
        "INSERT INTO audit_log (community_id, actor_id, action, target_type, target_id,"
        " reason, before, after) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb)"
        " RETURNING id",
        community_id, actor_id, action, target_type, target_id, reason,
        _encode(before), _encode(after))
    return int(value)


_COLUMNS = ("id, community_id, actor_id, action, target_type, target_id, reason,"
            " before::text AS before, after::text AS after, created_at")


def _entry(row: asyncpg.Record) -> AuditEntry:
    return AuditEntry(
        id=row["id"], community_id=row["community_id"], actor_id=row["actor_id"],
        action=row["action"], target_type=row["target_type"], target_id=row["target_id"],
        reason=row["reason"],
        before=None if row["before"] is None else _decode.decode(row["before"]),
        after=None if row["after"] is None else _decode.decode(row["after"]),
        created_at=row["created_at"])


class AuditFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What to select; every field narrows (AND). ``before_id`` pages backwards."""

    community_id: int
    actor_id: int | None = None
    target_type: str | None = None
    target_id: int | None = None
    action: str | None = None          # exact, or a prefix ending in "." ("member.")
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    before_id: int | None = None


def _where(f: AuditFilter) -> tuple[str, list[Any]]:
    clauses = ["community_id = $1"]
    args: list[Any] = [f.community_id]

    def add(sql: str, value: Any) -> None:
        args.append(value)
        clauses.append(sql.replace("?", f"${len(args)}"))

    if f.actor_id is not None:
        add("actor_id = ?", f.actor_id)
    if f.target_type is not None:
        add("target_type = ?", f.target_type)
    if f.target_id is not None:
        add("target_id = ?", f.target_id)
    if f.action is not None:
        if f.action.endswith("."):
            # A prefix match that can use the (community, action) index.
            add("action >= ?", f.action)
            add("action < ?", f.action[:-1] + "/")   # '/' sorts right after '.'
        else:
            add("action = ?", f.action)
    if f.since is not None:
        add("created_at >= ?", f.since)
    if f.until is not None:
        add("created_at < ?", f.until)
    if f.before_id is not None:
        add("id < ?", f.before_id)
    return " AND ".join(clauses), args


async def query(conn: asyncpg.Connection, f: AuditFilter, *, limit: int) -> list[AuditEntry]:
    """One page, newest first."""
    where, args = _where(f)
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM audit_log WHERE {where} ORDER BY id DESC LIMIT ${len(args)}",
        *args)
    return [_entry(r) for r in rows]


async def get(conn: asyncpg.Connection, entry_id: int) -> AuditEntry | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM audit_log WHERE id = $1", entry_id)
    return None if row is None else _entry(row)


async def purge_older_than(conn: asyncpg.Connection, cutoff: dt.datetime, *,
                           batch: int = 5000) -> int:
    """Delete entries created before ``cutoff`` in batches (short transactions, no long
    lock on a big table); returns how many were deleted."""
    total = 0
    while True:
        status = await conn.execute(
            "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log"
            " WHERE created_at < $1 LIMIT $2)", cutoff, batch)
        n = int(status.split()[-1])
        total += n
        if n < batch:
            return total
