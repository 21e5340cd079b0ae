"""Writes of the owner's settings page that no other module had: a community's name and
description,
changing a channel's name, topic, position or category, listing and revoking invites.

Authorization and events are the caller's (rooms/chat/settings.py); these only read and
write rows.
"""

from __future__ import annotations

import asyncpg

from persistence._rows import millis
from protocol.community_admin import Invite
from protocol.models import Community


async def update_community(conn: asyncpg.Connection, community_id: int, *,
                           name: str | None, description: str | None) -> Community | None:
    """Change the name and/or description (None keeps one)."""
    row = await conn.fetchrow(
        """UPDATE communities SET name = COALESCE($2, name),
                  description = COALESCE($3, description)
            WHERE id = $1 RETURNING id, name, owner_id, created_at, description""",
        community_id, name, description)
    if row is None:
        return None
    return Community(id=row["id"], name=row["name"], owner_id=row["owner_id"],
                     created_at=millis(row["created_at"]) or 0, description=row["description"])


async def update_channel(conn: asyncpg.Connection, channel_id: int, *, name: str | None,
                         topic: str | None, position: int | None, parent_id: int | None,
                         clear_parent: bool) -> None:
    """Change the fields given (None keeps one; ``clear_parent`` takes the channel out of
    its category)."""
    await conn.execute(
        """UPDATE channels SET name = COALESCE($2, name), topic = COALESCE($3, topic),
                  position = COALESCE($4, position),
                  parent_id = CASE WHEN $6 THEN NULL ELSE COALESCE($5, parent_id) END
            WHERE id = $1""", channel_id, name, topic, position, parent_id, clear_parent)


async def list_invites(conn: asyncpg.Connection, community_id: int) -> list[Invite]:
    """The community's invites that can still be used, newest first."""
    rows = await conn.fetch(
        """SELECT code, created_by, max_uses, uses, expires_at, created_at FROM invites
            WHERE community_id = $1 AND (expires_at IS NULL OR expires_at > now())
              AND (max_uses IS NULL OR uses < max_uses)
            ORDER BY created_at DESC, code LIMIT 1000""", community_id)
    return [Invite(code=r["code"], created_by=r["created_by"], max_uses=r["max_uses"],
                   uses=r["uses"], expires_at=millis(r["expires_at"]),
                   created_at=millis(r["created_at"]) or 0) for r in rows]


async def delete_invite(conn: asyncpg.Connection, community_id: int, code: str) -> bool:
    status = await conn.execute("DELETE FROM invites WHERE community_id = $1 AND code = $2",
                                community_id, code)
    return bool(status == "DELETE 1")
