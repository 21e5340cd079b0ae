"""Reactions: who reacted to which message with which emoji."""

from __future__ import annotations

import asyncpg

from persistence._rows import user_from
from protocol.models import User


async def _count(conn: asyncpg.Connection, message_id: int, emoji: str) -> int:
    count = await conn.fetchval(
        "SELECT count(*) FROM reactions WHERE message_id = $1 AND emoji = $2", message_id, emoji)
    return int(count)


async def add_reaction(conn: asyncpg.Connection, message_id: int, user_id: int, emoji: str, *,
                       max_distinct: int) -> tuple[int, bool] | None:
    """(the emoji's count after adding, whether this call added it); the count is
    unchanged and the flag False if it was already there; None when a new distinct
    emoji would pass ``max_distinct``. The limit check and the insert are one
    statement, so two racing reactors cannot both slip past it by much."""
    inserted = await conn.fetchval(
        """
        INSERT INTO reactions (message_id, emoji, user_id)
        SELECT $1, $2, $3
        WHERE EXISTS (SELECT 1 FROM reactions WHERE message_id = $1 AND emoji = $2)
           OR (SELECT count(DISTINCT emoji) FROM reactions WHERE message_id = $1) < $4
        ON CONFLICT DO NOTHING
        RETURNING 1
        """, message_id, emoji, user_id, max_distinct)
    if inserted is None:
        exists = await conn.fetchval(
            "SELECT 1 FROM reactions WHERE message_id = $1 AND emoji = $2 AND user_id = $3",
            message_id, emoji, user_id)
        if exists is None:
            return None
    return await _count(conn, message_id, emoji), inserted is not None


async def remove_reaction(conn: asyncpg.Connection, message_id: int, user_id: int,
                          emoji: str) -> tuple[bool, int]:
    result = await conn.execute(
        "DELETE FROM reactions WHERE message_id = $1 AND emoji = $2 AND user_id = $3",
        message_id, emoji, user_id)
    return result.endswith(" 1"), await _count(conn, message_id, emoji)


async def reaction_users(conn: asyncpg.Connection, message_id: int, emoji: str,
                         limit: int) -> list[User]:
    rows = await conn.fetch(
        "SELECT u.* FROM reactions r JOIN users u ON u.id = r.user_id "
        "WHERE r.message_id = $1 AND r.emoji = $2 ORDER BY r.created_at, u.id LIMIT $3",
        message_id, emoji, limit)
    return [user_from(r) for r in rows]
