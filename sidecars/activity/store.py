"""The activity sidecar's SQL (its tables: ``migrations/``)."""

from __future__ import annotations

import datetime as dt

import asyncpg

from protocol.sidecar import ActivityEntry, ActivityKind
from sidecars.activity.events import Activity

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


async def record_batch_txn(conn: asyncpg.Connection,
                           items: list[tuple[str, Activity, int]]) -> list[int]:
    """Store a batch of items (event id, activity, commit time ms) and bump each member's
    total of its kind; returns each item's total as it stood after that item. One
    statement (a data-modifying CTE over arrays) for the whole batch: the recorder runs
    for every message the community sends, so a round trip per event would cost the
    gateway more than the message itself."""
    if not items:
        return []
    at = [_EPOCH + dt.timedelta(milliseconds=a.at_ms or at_ms) for _, a, at_ms in items]
    rows = await conn.fetch(
        "WITH item AS (INSERT INTO activity_items"
        " (event_id, community_id, user_id, kind, object_id, at)"
        " SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[],"
        " $5::bigint[], $6::timestamptz[])),"
        " counted AS (SELECT c, u, k, count(*) AS n"
        " FROM unnest($2::bigint[], $3::bigint[], $4::text[]) AS t(c, u, k)"
        " GROUP BY c, u, k)"
        " INSERT INTO activity_totals (community_id, user_id, kind, total)"
        " SELECT c, u, k, n FROM counted"
        " ON CONFLICT (community_id, user_id, kind)"
        " DO UPDATE SET total = activity_totals.total + EXCLUDED.total"
        " RETURNING community_id, user_id, kind, total",
        [e for e, _, _ in items], [a.community_id for _, a, _ in items],
        [a.user_id for _, a, _ in items], [a.kind.value for _, a, _ in items],
        [a.object_id for _, a, _ in items], at)
    final = {(r["community_id"], r["user_id"], r["kind"]): int(r["total"]) for r in rows}
    # Walk back from the end: each item's total is the final one less what came after it.
    totals: list[int] = []
    for _, a, _ in reversed(items):
        key = (a.community_id, a.user_id, a.kind.value)
        totals.append(final[key])
        final[key] -= 1
    totals.reverse()
    return totals


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
