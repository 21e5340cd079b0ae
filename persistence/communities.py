"""Communities: the community row, its members and their roles, invites, and the
installation-wide settings table.

Functions named ``*_txn`` must run inside a transaction the caller opened
(``Database.transaction``) because they either write several rows that belong together
or are meant to be combined with other writes; the others work on any connection.
Membership writes use ``ON CONFLICT`` rather than catching unique violations so a lost
race never leaves the caller's transaction aborted.
"""

from __future__ import annotations

import asyncpg
import msgspec

from persistence import outbox
from persistence._rows import millis
from protocol.domain_events import MemberJoined, MemberLeft, MemberRoleChanged
from protocol.models import Community, Member, Role, User


def _community(row: asyncpg.Record) -> Community:
    return Community(id=row["id"], name=row["name"], owner_id=row["owner_id"],
                     created_at=millis(row["created_at"]) or 0,
                     description=row.get("description") or "")


def _member(row: asyncpg.Record) -> Member:
    user = User(id=row["user_id"], username=row["username"], display_name=row["display_name"],
                bot=row["is_bot"])
    return Member(community_id=row["community_id"], user=user, role=Role(row["role"]),
                  joined_at=millis(row["joined_at"]) or 0,
                  role_ids=list(row.get("role_ids") or ()), tier=row.get("tier") or 0)


_COMMUNITY_COLUMNS = "id, name, owner_id, created_at, description"

# A member row joined with the user's public profile.
_ROLE_IDS = """ARRAY(SELECT mr.role_id FROM member_roles mr
                     WHERE mr.community_id = cm.community_id AND mr.user_id = cm.user_id
                     ORDER BY mr.role_id) AS role_ids"""
"""A member's custom role ids (primary-key lookups of member_roles)."""
_MEMBER_SELECT = f"""
    SELECT cm.community_id, cm.user_id, cm.role, cm.joined_at, cm.tier, {_ROLE_IDS},
           u.username, u.display_name, u.is_bot
      FROM community_members cm
      JOIN users u ON u.id = cm.user_id
"""


# ------------------------------------------------------------------------ communities


async def create_community_txn(conn: asyncpg.Connection, *, name: str,
                               owner_id: int) -> Community:
    """Insert a community and its owner's membership; both or neither, hence ``_txn``."""
    row = await conn.fetchrow(
        f"""INSERT INTO communities (name, owner_id) VALUES ($1, $2)
            RETURNING {_COMMUNITY_COLUMNS}""",
        name, owner_id)
    assert row is not None
    community = _community(row)
    await conn.execute(
        """INSERT INTO community_members (community_id, user_id, role)
           VALUES ($1, $2, 'owner')""",
        community.id, owner_id)
    await outbox.append_txn(conn, [MemberJoined(community_id=community.id, user_id=owner_id,
                                                role=Role.OWNER)])
    return community


async def get_community(conn: asyncpg.Connection, community_id: int) -> Community | None:
    row = await conn.fetchrow(
        f"SELECT {_COMMUNITY_COLUMNS} FROM communities WHERE id = $1", community_id)
    return _community(row) if row is not None else None


async def transfer_ownership_txn(conn: asyncpg.Connection, community_id: int,
                                 new_owner_id: int, *,
                                 only_from: int | None = None) -> int | None:
    """Make ``new_owner_id`` the owner of ``community_id``; the previous owner stays a
    member as ``admin``. Returns the previous owner's id, or None when nothing changed
    (no such community, already the owner, or ``only_from`` given and the owner is
    someone else).

    The community row is locked first (``FOR UPDATE``), so concurrent transfers
    serialize, and one waiting behind another re-reads the owner it left: with
    ``only_from`` this is a compare-and-set that exactly one caller wins.
    """
    previous = await conn.fetchval(
        "SELECT owner_id FROM communities WHERE id = $1 FOR UPDATE", community_id)
    if previous is None or previous == new_owner_id:
        return None
    if only_from is not None and previous != only_from:
        return None
    await conn.execute("UPDATE communities SET owner_id = $2 WHERE id = $1",
                       community_id, new_owner_id)
    if await add_member_txn(conn, community_id, new_owner_id, Role.OWNER) is None:
        await set_role(conn, community_id, new_owner_id, Role.OWNER)
    await set_role(conn, community_id, previous, Role.ADMIN)
    return int(previous)


async def human_accounts_besides(conn: asyncpg.Connection, user_id: int) -> bool:
    """Whether any person (not a bot or system account) other than ``user_id`` has an
    account (committed, as this transaction sees it)."""
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM users WHERE NOT is_bot AND id <> $1)", user_id))


# ---------------------------------------------------------------------------- members


async def add_member_txn(conn: asyncpg.Connection, community_id: int, user_id: int,
                         role: Role = Role.MEMBER) -> Member | None:
    """Add a member; None if they already were one (their role is left unchanged).

    ``ON CONFLICT DO NOTHING`` makes joining twice (two tabs clicking one invite)
    harmless and keeps the caller's transaction usable.
    """
    row = await conn.fetchrow(
        """WITH ins AS (
               INSERT INTO community_members (community_id, user_id, role)
               VALUES ($1, $2, $3)
               ON CONFLICT (community_id, user_id) DO NOTHING
               RETURNING community_id, user_id, role, joined_at)
           SELECT ins.*, u.username, u.display_name, u.is_bot
             FROM ins JOIN users u ON u.id = ins.user_id""",
        community_id, user_id, Role(role).value)
    if row is None:
        return None
    await outbox.append_txn(conn, [MemberJoined(community_id=community_id, user_id=user_id,
                                                role=Role(role))])
    return _member(row)


async def remove_member(conn: asyncpg.Connection, community_id: int, user_id: int) -> bool:
    """Remove a membership; False if there was none. Channel memberships are kept
    (callers decide whether leaving a community also leaves its private channels)."""
    async with conn.transaction():  # the change and its outbox event, together
        status = await conn.execute(
            "DELETE FROM community_members WHERE community_id = $1 AND user_id = $2",
            community_id, user_id)
        if status == "DELETE 1":
            await outbox.append_txn(conn, [MemberLeft(community_id=community_id,
                                                      user_id=user_id)])
    return bool(status == "DELETE 1")


async def get_role(conn: asyncpg.Connection, community_id: int, user_id: int) -> Role | None:
    """The member's role, or None when ``user_id`` is not a member (the permission
    checks treat None as "sees nothing")."""
    value = await conn.fetchval(
        "SELECT role FROM community_members WHERE community_id = $1 AND user_id = $2",
        community_id, user_id)
    return Role(value) if value is not None else None


async def set_role(conn: asyncpg.Connection, community_id: int, user_id: int,
                   role: Role) -> Member | None:
    """Change a member's role; None if they are not a member. Authorization (who may
    grant what) is the caller's job."""
    async with conn.transaction():  # the change and its outbox event, together
        row = await conn.fetchrow(
            f"""WITH upd AS (
                   UPDATE community_members SET role = $3
                    WHERE community_id = $1 AND user_id = $2
                   RETURNING community_id, user_id, role, joined_at, tier)
               SELECT cm.*, {_ROLE_IDS}, u.username, u.display_name, u.is_bot
                 FROM upd cm JOIN users u ON u.id = cm.user_id""",
            community_id, user_id, Role(role).value)
        if row is None:
            return None
        await outbox.append_txn(conn, [MemberRoleChanged(community_id=community_id,
                                                         user_id=user_id, role=Role(role))])
    return _member(row)


async def get_member(conn: asyncpg.Connection, community_id: int,
                     user_id: int) -> Member | None:
    row = await conn.fetchrow(
        _MEMBER_SELECT + " WHERE cm.community_id = $1 AND cm.user_id = $2",
        community_id, user_id)
    return _member(row) if row is not None else None


async def list_members(conn: asyncpg.Connection, community_id: int, *,
                       after_user_id: int = 0, limit: int = 100) -> list[Member]:
    """One page of members ordered by user id (keyset paging: pass the last user id
    seen as ``after_user_id``; stable while members join and leave)."""
    rows = await conn.fetch(
        _MEMBER_SELECT + """ WHERE cm.community_id = $1 AND cm.user_id > $2
                             ORDER BY cm.user_id LIMIT $3""",
        community_id, after_user_id, max(limit, 0))
    return [_member(row) for row in rows]


async def member_count(conn: asyncpg.Connection, community_id: int) -> int:
    value = await conn.fetchval(
        "SELECT count(*) FROM community_members WHERE community_id = $1", community_id)
    return int(value)


async def memberships(conn: asyncpg.Connection, user_id: int) -> list[tuple[Community, Role]]:
    """Every community the user belongs to with their role there, oldest joined first
    (the order a client lists them in)."""
    rows = await conn.fetch(
        """SELECT c.id, c.name, c.owner_id, c.created_at, c.description, cm.role
             FROM community_members cm
             JOIN communities c ON c.id = cm.community_id
            WHERE cm.user_id = $1
            ORDER BY cm.joined_at, c.id""",
        user_id)
    return [(_community(row), Role(row["role"])) for row in rows]


async def memberships_with_counts(conn: asyncpg.Connection,
                                  user_id: int) -> list[tuple[Community, Role, int]]:
    """The member's communities, role and member count, in one query (identify)."""
    rows = await conn.fetch(
        "SELECT c.*, cm.role FROM community_members cm JOIN communities c "
        "ON c.id = cm.community_id WHERE cm.user_id = $1 ORDER BY c.id", user_id)
    return [(_community(r), Role(r["role"]), r["member_count"]) for r in rows]


async def member_ids(conn: asyncpg.Connection, community_id: int) -> list[int]:
    """User ids of all members, ascending."""
    rows = await conn.fetch(
        "SELECT user_id FROM community_members WHERE community_id = $1 ORDER BY user_id",
        community_id)
    return [row["user_id"] for row in rows]


# ---------------------------------------------------------------------------- invites


async def create_invite(conn: asyncpg.Connection, *, community_id: int, created_by: int,
                        code: str, max_uses: int | None, expires_in_s: int | None) -> str:
    """Store an invite and return its code. The expiry is computed by PostgreSQL so
    every process agrees on the clock used to check it."""
    await conn.execute(
        """INSERT INTO invites (code, community_id, created_by, max_uses, expires_at)
           VALUES ($1, $2, $3, $4,
                   CASE WHEN $5::integer IS NULL THEN NULL
                        ELSE now() + make_interval(secs => $5::integer) END)""",
        code, community_id, created_by, max_uses, expires_in_s)
    return code


async def redeem_invite_txn(conn: asyncpg.Connection, code: str) -> int | None:
    """Use an invite once: the community id, or None if it is unknown, expired or used up.

    One conditional ``UPDATE ... RETURNING`` both checks and counts, so two people
    racing for the last use of an invite cannot both get in (the second waits on the
    row lock, re-checks ``uses < max_uses`` and finds it false). ``_txn``: the use is
    only consumed if the caller's membership insert commits with it.

    Uses ``clock_timestamp()`` rather than ``now()`` so a long transaction cannot
    redeem an invite that expired after it began.
    """
    value = await conn.fetchval(
        """UPDATE invites SET uses = uses + 1
            WHERE code = $1
              AND (expires_at IS NULL OR expires_at > clock_timestamp())
              AND (max_uses IS NULL OR uses < max_uses)
           RETURNING community_id""",
        code)
    return int(value) if value is not None else None


# ------------------------------------------------------------------ instance settings


async def get_instance_setting(conn: asyncpg.Connection, key: str) -> object | None:
    """The decoded JSON value of a setting, or None if it was never set."""
    raw = await conn.fetchval("SELECT value::text FROM instance_settings WHERE key = $1", key)
    return msgspec.json.decode(raw) if raw is not None else None


async def set_instance_setting(conn: asyncpg.Connection, key: str, value: object) -> None:
    """Insert or replace a setting (any JSON-encodable value)."""
    await conn.execute(
        """INSERT INTO instance_settings (key, value) VALUES ($1, $2::text::jsonb)
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value""",
        key, msgspec.json.encode(value).decode())


async def lock_instance_settings_txn(conn: asyncpg.Connection) -> None:
    """Serialize instance set-up between processes booting at once (released at commit)."""
    await conn.execute("SELECT pg_advisory_xact_lock(4242001)")
