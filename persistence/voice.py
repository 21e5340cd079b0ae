"""Voice rooms' durable state: server mutes (issue 6).

Who is in a room right now is not here: it is live state, kept in Redis (or in
memory for one process) by ``rooms/voice/voice.py``. A server mute is a moderation decision
and must survive the muted member leaving and re-joining, and server restarts, so it is
a row (``0006_voice_channels.sql``), written in the same transaction as its audit entry.
"""

from __future__ import annotations

import asyncpg


async def is_server_muted(conn: asyncpg.Connection, community_id: int, user_id: int) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM voice_server_mutes"
        " WHERE community_id = $1 AND user_id = $2)", community_id, user_id))


async def set_server_mute_txn(conn: asyncpg.Connection, *, community_id: int, user_id: int,
                              muted: bool, actor_id: int | None,
                              audit_id: int | None) -> bool:
    """Mute or unmute; returns whether anything changed (muting twice is one row)."""
    if muted:
        status = await conn.execute(
            "INSERT INTO voice_server_mutes (community_id, user_id, actor_id, audit_id)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            community_id, user_id, actor_id, audit_id)
    else:
        status = await conn.execute(
            "DELETE FROM voice_server_mutes WHERE community_id = $1 AND user_id = $2",
            community_id, user_id)
    return not str(status).endswith(" 0")
