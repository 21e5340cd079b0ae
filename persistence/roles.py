"""Custom roles, members' custom roles, channel overrides and membership tiers (issue 5).

Reads here feed :mod:`rooms.realtime.access`; every write is called inside the transaction that
also records it in the audit log (persistence/audit.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from asyncpg import Record

from persistence import outbox
from protocol.domain_events import MemberRolesChanged, MemberTierChanged
from protocol.models import CommunityRole, PermissionOverride, Role

__all__ = ["MemberAccess"]


def role_from(row: Record) -> CommunityRole:
    return CommunityRole(id=row["id"], community_id=row["community_id"], name=row["name"],
                         permissions=row["permissions"], position=row["position"],
                         color=row["color"])


def override_from(row: Record) -> PermissionOverride:
    return PermissionOverride(channel_id=row["channel_id"], kind=row["target_kind"],
                              target_id=row["target_id"], allow=row["allow"], deny=row["deny"])


class MemberAccess:
    """What the resolver needs about one member of one community."""

    __slots__ = ("custom_bits", "role", "role_ids", "tier")

    def __init__(self, role: Role, role_ids: list[int], custom_bits: list[int],
                 tier: int) -> None:
        self.role = role
        self.role_ids = role_ids
        self.custom_bits = custom_bits
        self.tier = tier


# ----------------------------------------------------------------------------- roles

async def list_roles(conn: asyncpg.Connection, community_id: int) -> list[CommunityRole]:
    rows = await conn.fetch("SELECT * FROM community_roles WHERE community_id = $1 "
                            "ORDER BY position DESC, id", community_id)
    return [role_from(r) for r in rows]


async def roles_of_communities(conn: asyncpg.Connection,
                               community_ids: Sequence[int]) -> dict[int, list[CommunityRole]]:
    rows = await conn.fetch("SELECT * FROM community_roles WHERE community_id = ANY($1) "
                            "ORDER BY position DESC, id", list(community_ids))
    out: dict[int, list[CommunityRole]] = {}
    for r in rows:
        out.setdefault(r["community_id"], []).append(role_from(r))
    return out


async def get_role(conn: asyncpg.Connection, role_id: int) -> CommunityRole | None:
    row = await conn.fetchrow("SELECT * FROM community_roles WHERE id = $1", role_id)
    return role_from(row) if row else None


async def count_roles(conn: asyncpg.Connection, community_id: int) -> int:
    return int(await conn.fetchval(
        "SELECT count(*) FROM community_roles WHERE community_id = $1", community_id))


async def create_role(conn: asyncpg.Connection, *, community_id: int, name: str,
                      permissions: int, position: int, color: int | None) -> CommunityRole | None:
    """None when the community already has a role of that name."""
    row = await conn.fetchrow(
        "INSERT INTO community_roles (community_id, name, permissions, position, color) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING *",
        community_id, name, permissions, position, color)
    return role_from(row) if row else None


async def update_role(conn: asyncpg.Connection, role_id: int, *, name: str, permissions: int,
                      position: int, color: int | None) -> CommunityRole | None:
    row = await conn.fetchrow(
        "UPDATE community_roles SET name = $2, permissions = $3, position = $4, color = $5 "
        "WHERE id = $1 RETURNING *", role_id, name, permissions, position, color)
    return role_from(row) if row else None


async def name_taken(conn: asyncpg.Connection, community_id: int, name: str,
                     except_id: int = 0) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM community_roles WHERE community_id = $1 AND lower(name) = lower($2) "
        "AND id <> $3", community_id, name, except_id)
    return found is not None


async def delete_role(conn: asyncpg.Connection, role_id: int) -> bool:
    """Deletes the role, its holders' assignments and its channel overrides."""
    await conn.execute(
        "DELETE FROM channel_overrides WHERE target_kind = 'role' AND target_id = $1", role_id)
    result = await conn.execute("DELETE FROM community_roles WHERE id = $1", role_id)
    return bool(result.endswith(" 1"))


# ----------------------------------------------------------------------- member roles

async def member_role_ids(conn: asyncpg.Connection, community_id: int, user_id: int) -> set[int]:
    """The member's custom role ids (for automod exemptions and the resolver)."""
    rows = await conn.fetch("SELECT role_id FROM member_roles WHERE community_id = $1 "
                            "AND user_id = $2", community_id, user_id)
    return {r["role_id"] for r in rows}


async def set_member_roles(conn: asyncpg.Connection, community_id: int, user_id: int,
                           role_ids: Sequence[int]) -> None:
    async with conn.transaction():  # the change and its outbox event, together
        await conn.execute("DELETE FROM member_roles WHERE community_id = $1 AND user_id = $2 "
                           "AND role_id <> ALL($3::bigint[])", community_id, user_id,
                           list(role_ids))
        await conn.execute(
            "INSERT INTO member_roles (community_id, user_id, role_id) "
            "SELECT $1, $2, unnest($3::bigint[]) ON CONFLICT DO NOTHING",
            community_id, user_id, list(role_ids))
        await outbox.append_txn(conn, [MemberRolesChanged(
            community_id=community_id, user_id=user_id, role_ids=sorted(set(role_ids)))])


async def role_holder_ids(conn: asyncpg.Connection, role_id: int) -> list[int]:
    rows = await conn.fetch("SELECT user_id FROM member_roles WHERE role_id = $1", role_id)
    return [r["user_id"] for r in rows]


async def member_access(conn: asyncpg.Connection, community_id: int,
                        user_id: int) -> MemberAccess | None:
    """The member's fixed role, custom roles (with their bits) and tier; None for a
    non-member. One query."""
    row = await conn.fetchrow(
        """
        SELECT m.role, m.tier,
               coalesce(array_agg(r.id) FILTER (WHERE r.id IS NOT NULL), '{}') AS role_ids,
               coalesce(array_agg(r.permissions) FILTER (WHERE r.id IS NOT NULL), '{}') AS bits
        FROM community_members m
        LEFT JOIN member_roles mr ON mr.community_id = m.community_id AND mr.user_id = m.user_id
        LEFT JOIN community_roles r ON r.id = mr.role_id
        WHERE m.community_id = $1 AND m.user_id = $2
        GROUP BY m.role, m.tier
        """, community_id, user_id)
    if row is None:
        return None
    return MemberAccess(Role(row["role"]), list(row["role_ids"]), list(row["bits"]),
                        row["tier"])


async def memberships_access(conn: asyncpg.Connection,
                             user_id: int) -> dict[int, MemberAccess]:
    """:func:`member_access` for every community of the member, in one query."""
    rows = await conn.fetch(
        """
        SELECT m.community_id, m.role, m.tier,
               coalesce(array_agg(r.id) FILTER (WHERE r.id IS NOT NULL), '{}') AS role_ids,
               coalesce(array_agg(r.permissions) FILTER (WHERE r.id IS NOT NULL), '{}') AS bits
        FROM community_members m
        LEFT JOIN member_roles mr ON mr.community_id = m.community_id AND mr.user_id = m.user_id
        LEFT JOIN community_roles r ON r.id = mr.role_id
        WHERE m.user_id = $1
        GROUP BY m.community_id, m.role, m.tier
        """, user_id)
    return {r["community_id"]: MemberAccess(Role(r["role"]), list(r["role_ids"]),
                                            list(r["bits"]), r["tier"]) for r in rows}


async def set_member_tier(conn: asyncpg.Connection, community_id: int, user_id: int,
                          tier: int) -> int | None:
    """The previous tier, or None for a non-member."""
    async with conn.transaction():  # the change and its outbox event, together
        before: int | None = await conn.fetchval(
            "UPDATE community_members m SET tier = $3 FROM community_members old "
            "WHERE m.community_id = $1 AND m.user_id = $2 "
            "AND old.community_id = m.community_id AND old.user_id = m.user_id "
            "RETURNING old.tier", community_id, user_id, tier)
        if before is not None and before != tier:
            await outbox.append_txn(conn, [MemberTierChanged(
                community_id=community_id, user_id=user_id, before=before, after=tier)])
    return before


async def set_channel_tier(conn: asyncpg.Connection, channel_id: int, tier: int) -> None:
    await conn.execute("UPDATE channels SET required_tier = $2 WHERE id = $1", channel_id, tier)


# -------------------------------------------------------------------------- overrides

async def channel_overrides(conn: asyncpg.Connection,
                            channel_id: int) -> list[PermissionOverride]:
    rows = await conn.fetch("SELECT * FROM channel_overrides WHERE channel_id = $1 "
                            "ORDER BY target_kind, target_id", channel_id)
    return [override_from(r) for r in rows]


async def get_override(conn: asyncpg.Connection, channel_id: int, kind: str,
                       target_id: int) -> PermissionOverride | None:
    row = await conn.fetchrow(
        "SELECT * FROM channel_overrides WHERE channel_id = $1 AND target_kind = $2 "
        "AND target_id = $3", channel_id, kind, target_id)
    return override_from(row) if row else None


async def set_override(conn: asyncpg.Connection, *, channel_id: int, community_id: int,
                       kind: str, target_id: int, allow: int, deny: int) -> PermissionOverride:
    row = await conn.fetchrow(
        "INSERT INTO channel_overrides (channel_id, community_id, target_kind, target_id, "
        "allow, deny) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT (channel_id, target_kind, target_id) "
        "DO UPDATE SET allow = EXCLUDED.allow, deny = EXCLUDED.deny RETURNING *",
        channel_id, community_id, kind, target_id, allow, deny)
    assert row is not None  # an upsert with RETURNING: one row
    return override_from(row)


async def clear_override(conn: asyncpg.Connection, channel_id: int, kind: str,
                         target_id: int) -> bool:
    result = await conn.execute(
        "DELETE FROM channel_overrides WHERE channel_id = $1 AND target_kind = $2 "
        "AND target_id = $3", channel_id, kind, target_id)
    return bool(result.endswith(" 1"))


async def overrides_for_member(conn: asyncpg.Connection, user_id: int,
                               community_ids: Sequence[int] | None = None,
                               ) -> list[tuple[int, PermissionOverride]]:
    """Every override that can concern the member, in their communities (or in
    ``community_ids``): ``everyone`` ones, their custom roles' and their own. Three
    index lookups; the cost follows the overrides that concern the member, not the
    number of channels."""
    rows = await conn.fetch(
        """
        SELECT o.* FROM channel_overrides o
        JOIN community_members m ON m.community_id = o.community_id AND m.user_id = $1
        WHERE o.target_kind = 'everyone'
          AND ($2::bigint[] IS NULL OR o.community_id = ANY($2))
        UNION ALL
        SELECT o.* FROM member_roles mr
        JOIN channel_overrides o ON o.target_kind = 'role' AND o.target_id = mr.role_id
        WHERE mr.user_id = $1 AND ($2::bigint[] IS NULL OR mr.community_id = ANY($2))
        UNION ALL
        SELECT o.* FROM channel_overrides o
        WHERE o.target_kind = 'member' AND o.target_id = $1
          AND ($2::bigint[] IS NULL OR o.community_id = ANY($2))
        """, user_id, list(community_ids) if community_ids is not None else None)
    return [(r["community_id"], override_from(r)) for r in rows]
