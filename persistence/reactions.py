"""Reactions: who reacted to which message with which emoji."""

from __future__ import annotations

import asyncpg

from persistence import outbox
from persistence._rows import user_from
from protocol.domain_events import ReactionAdded, ReactionRemoved
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
    async with conn.transaction():  # the reaction and its outbox event, together
        inserted = await conn.fetchval(
            """
            INSERT INTO reactions (message_id, emoji, user_id)
            SELECT $1, $2, $3
            WHERE EXISTS (SELECT 1 FROM reactions WHERE message_id = $1 AND emoji = $2)
               OR (SELECT count(DISTINCT emoji) FROM reactions WHERE message_id = $1) < $4
            ON CONFLICT DO NOTHING
            RETURNING 1
            """, message_id, emoji, user_id, max_distinct)
        if inserted is not None:
            await _record(conn, message_id, user_id, emoji, added=True)
    if inserted is None:
        exists = await conn.fetchval(
            "SELECT 1 FROM reactions WHERE message_id = $1 AND emoji = $2 AND user_id = $3",
            message_id, emoji, user_id)
        if exists is None:
            return None
    return await _count(conn, message_id, emoji), inserted is not None


async def remove_reaction(conn: asyncpg.Connection, message_id: int, user_id: int,
                          emoji: str) -> tuple[bool, int]:
    async with conn.transaction():  # the removal and its outbox event, together
        result = await conn.execute(
            "DELETE FROM reactions WHERE message_id = $1 AND emoji = $2 AND user_id = $3",
            message_id, emoji, user_id)
        removed = result.endswith(" 1")
        if removed:
            await _record(conn, message_id, user_id, emoji, added=False)
    return removed, await _count(conn, message_id, emoji)


async def _record(conn: asyncpg.Connection, message_id: int, user_id: int, emoji: str, *,
                  added: bool) -> None:
    row = await conn.fetchrow("SELECT m.channel_id, c.community_id FROM messages m "
                              "JOIN channels c ON c.id = m.channel_id WHERE m.id = $1",
                              message_id)
    if row is None:
        return
    kind = ReactionAdded if added else ReactionRemoved
    await outbox.append_txn(conn, [kind(message_id=message_id, channel_id=row["channel_id"],
                                        community_id=row["community_id"], user_id=user_id,
                                        emoji=emoji)])


async def reaction_users(conn: asyncpg.Connection, message_id: int, emoji: str,
                         limit: int) -> list[User]:
    rows = await conn.fetch(
        "SELECT u.* FROM reactions r JOIN users u ON u.id = r.user_id "
        "WHERE r.message_id = $1 AND r.emoji = $2 ORDER BY r.created_at, u.id LIMIT $3",
        message_id, emoji, limit)
    return [user_from(r) for r in rows]
