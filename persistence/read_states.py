"""Read state: how far each member has read each channel; unread and mention counts."""

from __future__ import annotations

import asyncpg

from protocol.models import ReadState


async def mark_read(conn: asyncpg.Connection, user_id: int, channel_id: int, seq: int) -> int:
    """Move the read marker forward (never back), clamped to the channel's newest seq."""
    stored = await conn.fetchval(
        """
        INSERT INTO read_states (user_id, channel_id, last_read_seq)
        SELECT $1, $2, LEAST($3, c.last_seq) FROM channels c WHERE c.id = $2
        ON CONFLICT (user_id, channel_id) DO UPDATE
            SET last_read_seq = GREATEST(read_states.last_read_seq, EXCLUDED.last_read_seq)
        RETURNING last_read_seq
        """, user_id, channel_id, seq)
    return int(stored or 0)


async def read_states(conn: asyncpg.Connection, user_id: int, channels: list[tuple[int, int]],
                      roles_by_channel: dict[int, str | None] | None = None) -> list[ReadState]:
    """Read state for every (channel id, last seq) given, in one query. Mentions count
    messages after the marker that name the user, ``@everyone``, or the user's role."""
    if not channels:
        return []
    roles = roles_by_channel or {}
    ids = [c for c, _ in channels]
    rows = await conn.fetch(
        """
        SELECT d.channel_id, d.last_seq, COALESCE(rs.last_read_seq, 0) AS last_read,
               (SELECT count(*) FROM messages m
                 WHERE m.channel_id = d.channel_id
                   AND m.seq > COALESCE(rs.last_read_seq, 0)
                   AND m.deleted_at IS NULL
                   -- the predicate of the partial index messages_with_mentions:
                   AND (m.mention_everyone OR m.mention_user_ids <> '{}'
                        OR m.mention_roles <> '{}')
                   AND ($2 = ANY(m.mention_user_ids) OR m.mention_everyone
                        OR (d.role IS NOT NULL AND d.role = ANY(m.mention_roles)))
               ) AS mentions
        FROM unnest($1::bigint[], $3::bigint[], $4::text[]) AS d(channel_id, last_seq, role)
        LEFT JOIN read_states rs ON rs.user_id = $2 AND rs.channel_id = d.channel_id
        """, ids, user_id, [s for _, s in channels], [roles.get(c) for c in ids])
    return [ReadState(channel_id=r["channel_id"], last_read_seq=r["last_read"],
                      unread_count=max(r["last_seq"] - r["last_read"], 0),
                      mention_count=r["mentions"]) for r in rows]


async def read_state(conn: asyncpg.Connection, user_id: int, channel_id: int, last_seq: int,
                     role: str | None) -> ReadState:
    return (await read_states(conn, user_id, [(channel_id, last_seq)], {channel_id: role}))[0]
