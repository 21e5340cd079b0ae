"""The activity sidecar's SQL (its tables: ``migrations/``)."""

from __future__ import annotations

import datetime as dt

import asyncpg

from protocol.sidecar import ActivityEntry, ActivityKind
from sidecars.activity.events import Activity

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


async def record_txn(conn: asyncpg.Connection, event_id: str, activity: Activity,
                     at_ms: int) -> int:
    """Store one item and bump the member's total of its kind; returns the new total.
    One statement (a data-modifying CTE), so one round trip per event: the recorder runs
    for every message the community sends."""
    at = _EPOCH + dt.timedelta(milliseconds=activity.at_ms or at_ms)
    total = await conn.fetchval(
        "WITH item AS (INSERT INTO activity_items"
        " (event_id, community_id, user_id, kind, object_id, at)"
        " VALUES ($1, $2, $3, $4, $5, $6))"
        " INSERT INTO activity_totals (community_id, user_id, kind, total) VALUES ($2, $3, $4, 1)"
        " ON CONFLICT (community_id, user_id, kind)"
        " DO UPDATE SET total = activity_totals.total + 1 RETURNING total",
        event_id, activity.community_id, activity.user_id, activity.kind.value,
        activity.object_id, at)
    return int(total)


async def recent(conn: asyncpg.Connection, community_id: int, user_id: int,
                 limit: int) -> list[ActivityEntry]:
    rows = await conn.fetch(
        "SELECT event_id, kind, object_id, at FROM activity_items"
        " WHERE community_id = $1 AND user_id = $2 ORDER BY id DESC LIMIT $3",
        community_id, user_id, limit)
    return [ActivityEntry(event_id=r["event_id"], kind=ActivityKind(r["kind"]),
                         object_id=r["object_id"],
                         at=(r["at"] - _EPOCH) // dt.timedelta(milliseconds=1)) for r in rows]


async def totals(conn: asyncpg.Connection, community_id: int,
                 user_id: int) -> dict[str, int]:
    rows = await conn.fetch("SELECT kind, total FROM activity_totals"
                            " WHERE community_id = $1 AND user_id = $2", community_id, user_id)
    return {r["kind"]: int(r["total"]) for r in rows}
