"""Channels of every kind (text, announcement, category, thread, DM, group DM) and the
explicit membership lists of private channels, threads and DMs."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from persistence._rows import channel_from
from persistence.database import Connection
from protocol.models import Channel, ChannelKind

__all__ = ["Connection"]

_LISTED_KINDS = ("dm", "group_dm", "thread")
"""Kinds whose Channel record carries ``member_ids``."""


async def _with_members(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> list[Channel]:
    listed = [r["id"] for r in rows if r["kind"] in _LISTED_KINDS]
    members: dict[int, list[int]] = {}
    if listed:
        for r in await conn.fetch(
                "SELECT channel_id, user_id FROM channel_members WHERE channel_id = ANY($1) "
                "ORDER BY user_id", listed):
            members.setdefault(r["channel_id"], []).append(r["user_id"])
    return [channel_from(r, members.get(r["id"])) for r in rows]


async def create_channel_txn(conn: asyncpg.Connection, *, kind: ChannelKind, name: str,
                             community_id: int | None, created_by: int | None,
                             parent_id: int | None = None, private: bool = False,
                             topic: str = "", thread_root_message_id: int | None = None,
                             member_ids: Sequence[int] = (), dm_key: str | None = None) -> Channel:
    row = await conn.fetchrow(
        """
        INSERT INTO channels (community_id, kind, name, topic, parent_id, private, position,
                              thread_root_message_id, created_by, dm_key)
        VALUES ($1, $2, $3, $4, $5, $6,
                COALESCE((SELECT max(position) + 1 FROM channels
                          WHERE community_id = $1 AND $1 IS NOT NULL), 0),
                $7, $8, $9)
        RETURNING *
        """, community_id, kind.value, name, topic, parent_id, private,
        thread_root_message_id, created_by, dm_key)
    assert row is not None  # INSERT ... RETURNING: one row
    if member_ids:
        await conn.execute(
            "INSERT INTO channel_members (channel_id, user_id) "
            "SELECT $1, unnest($2::bigint[]) ON CONFLICT DO NOTHING", row["id"], list(member_ids))
    if thread_root_message_id is not None:
        await conn.execute("UPDATE messages SET thread_id = $2 WHERE id = $1",
                           thread_root_message_id, row["id"])
    return (await _with_members(conn, [row]))[0]


async def get_channel(conn: asyncpg.Connection, channel_id: int) -> Channel | None:
    row = await conn.fetchrow("SELECT * FROM channels WHERE id = $1", channel_id)
    return (await _with_members(conn, [row]))[0] if row else None


async def community_channels(conn: asyncpg.Connection, community_id: int) -> list[Channel]:
    """Every channel of a community, private ones and live threads included; archived
    threads are left out (they are fetched on demand). Callers filter visibility."""
    rows = await conn.fetch(
        "SELECT * FROM channels WHERE community_id = $1 AND NOT (kind = 'thread' AND archived) "
        "ORDER BY position, id", community_id)
    return await _with_members(conn, rows)


VISIBLE_CHANNELS_SQL = """
        WITH mine AS (
            SELECT community_id FROM community_members
            WHERE user_id = $1 AND ($2::bigint IS NULL OR community_id = $2)
        ), opened AS (
            SELECT channel_id FROM channel_members WHERE user_id = $1
            UNION
            SELECT o.channel_id FROM channel_overrides o
            WHERE o.target_kind = 'member' AND o.target_id = $1 AND o.allow & 1 <> 0
            UNION
            SELECT o.channel_id FROM member_roles mr
            JOIN channel_overrides o ON o.target_kind = 'role' AND o.target_id = mr.role_id
            WHERE mr.user_id = $1 AND o.allow & 1 <> 0
            UNION
            SELECT o.channel_id FROM mine
            JOIN channel_overrides o ON o.community_id = mine.community_id
            WHERE o.target_kind = 'everyone' AND o.allow & 1 <> 0
        ), private_parents AS (
            SELECT c.* FROM opened
            JOIN channels c ON c.id = opened.channel_id
            JOIN mine ON mine.community_id = c.community_id
            WHERE c.private AND c.kind <> 'thread'
        )
        SELECT c.* FROM mine
        JOIN channels c ON c.community_id = mine.community_id
        WHERE NOT c.private AND NOT (c.kind = 'thread' AND c.archived)
        UNION ALL
        SELECT * FROM private_parents
        UNION ALL
        SELECT t.* FROM private_parents p
        JOIN channels t ON t.parent_id = p.id
        WHERE t.kind = 'thread' AND NOT t.archived AND t.private
        ORDER BY community_id, position, id
"""
"""$1 user id, $2 community id or NULL (all the member's communities); see
:func:`visible_community_channels`. A constant so tests can EXPLAIN it."""


async def visible_community_channels(conn: asyncpg.Connection, user_id: int,
                                     community_id: int | None = None) -> list[Channel]:
    """Candidate channels of the member's communities (or of ``community_id``), in one
    query of three index-driven parts, so it costs what the member sees, not what the
    communities hold:

    1. public channels and live public threads, per community, through the partial
       index ``channels_community_public``;
    2. private channels the member is listed in (``channel_members``) or that an
       override allowing VIEW opens to the member (their own, one of their custom
       roles', or ``everyone``), through ``channel_overrides_target``;
    3. live threads of those private channels (``channels_parent``).

    Tier gates and deny overrides are applied by the caller (:mod:`rooms.realtime.access`)
    with the member's view; this only leaves out what they could never see."""
    rows = await conn.fetch(VISIBLE_CHANNELS_SQL, user_id, community_id)
    return await _with_members(conn, rows)


async def channel_member_ids(conn: asyncpg.Connection, channel_id: int) -> list[int]:
    rows = await conn.fetch(
        "SELECT user_id FROM channel_members WHERE channel_id = $1 ORDER BY user_id", channel_id)
    return [r["user_id"] for r in rows]


async def is_channel_member(conn: asyncpg.Connection, channel_id: int, user_id: int) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM channel_members WHERE channel_id = $1 AND user_id = $2",
        channel_id, user_id)
    return found is not None


async def add_channel_member(conn: asyncpg.Connection, channel_id: int, user_id: int) -> bool:
    added = await conn.fetchval(
        "INSERT INTO channel_members (channel_id, user_id) VALUES ($1, $2) "
        "ON CONFLICT DO NOTHING RETURNING user_id", channel_id, user_id)
    return added is not None


async def remove_channel_member(conn: asyncpg.Connection, channel_id: int, user_id: int) -> bool:
    result = await conn.execute(
        "DELETE FROM channel_members WHERE channel_id = $1 AND user_id = $2", channel_id, user_id)
    return bool(result.endswith(" 1"))


async def private_channel_ids_for_user(conn: asyncpg.Connection, user_id: int) -> set[int]:
    rows = await conn.fetch("SELECT channel_id FROM channel_members WHERE user_id = $1", user_id)
    return {r["channel_id"] for r in rows}


async def direct_channels(conn: asyncpg.Connection, user_id: int) -> list[Channel]:
    rows = await conn.fetch(
        "SELECT c.* FROM channels c JOIN channel_members cm ON cm.channel_id = c.id "
        "WHERE cm.user_id = $1 AND c.kind IN ('dm', 'group_dm') ORDER BY c.id", user_id)
    return await _with_members(conn, rows)


async def get_or_create_dm_txn(conn: asyncpg.Connection, user_a: int,
                               user_b: int) -> tuple[Channel, bool]:
    """The one DM between two users; race-safe through the unique ``dm_key``."""
    low, high = sorted((user_a, user_b))
    key = f"{low}:{high}"
    row = await conn.fetchrow(
        "INSERT INTO channels (kind, name, dm_key) VALUES ('dm', '', $1) "
        "ON CONFLICT (dm_key) DO NOTHING RETURNING *", key)
    created = row is not None
    if row is None:
        row = await conn.fetchrow("SELECT * FROM channels WHERE dm_key = $1", key)
        assert row is not None  # the row the INSERT conflicted with
    else:
        await conn.execute(
            "INSERT INTO channel_members (channel_id, user_id) VALUES ($1, $2), ($1, $3)",
            row["id"], low, high)
    return (await _with_members(conn, [row]))[0], created


async def set_archived(conn: asyncpg.Connection, channel_id: int,
                       archived: bool) -> Channel | None:
    row = await conn.fetchrow(
        "UPDATE channels SET archived = $2 WHERE id = $1 RETURNING *", channel_id, archived)
    return (await _with_members(conn, [row]))[0] if row else None


async def last_seqs(conn: asyncpg.Connection, channel_ids: list[int]) -> dict[int, int]:
    """Newest message seq of each channel (for catching up after a bus outage)."""
    rows = await conn.fetch(
        "SELECT id, last_seq FROM channels WHERE id = ANY($1::bigint[])", channel_ids)
    return {r["id"]: r["last_seq"] for r in rows}


async def created_by(conn: asyncpg.Connection, channel_id: int) -> int | None:
    """Who created a channel or thread (None when unknown or system-made)."""
    value = await conn.fetchval("SELECT created_by FROM channels WHERE id = $1", channel_id)
    return int(value) if value is not None else None
