"""Accounts: users, bot tokens, rotating refresh tokens, and load-test provisioning.

Only hashes of secrets reach the database (SHA-256 of a bot token's secret part or of a
whole refresh token); hashing and token formats belong to ``server/auth.py``, which
passes ``bytes`` digests in here. Functions named ``*_txn`` must run inside a
transaction the caller opened (``Database.transaction``); the others work on any
connection.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from protocol.models import User


class UsernameTaken(Exception):
    """Another account already uses this username (compared case-insensitively)."""

    def __init__(self, username: str) -> None:
        super().__init__(f"username {username!r} is taken")
        self.username = username


def _user(row: asyncpg.Record) -> User:
    return User(id=row["id"], username=row["username"], display_name=row["display_name"],
                bot=row["is_bot"])


_USER_COLUMNS = "id, username, display_name, is_bot"


# ---------------------------------------------------------------------------- users


async def create_user(conn: asyncpg.Connection, *, username: str, display_name: str,
                      password_hash: str | None, is_bot: bool = False,
                      bot_owner_id: int | None = None) -> User:
    """Insert an account; raises :class:`UsernameTaken` if the name is in use.

    ``ON CONFLICT DO NOTHING`` on the case-insensitive unique index (rather than catching
    a unique violation) keeps the caller's transaction usable, so a registration that
    loses a race fails cleanly instead of leaving an aborted transaction behind.
    """
    row = await conn.fetchrow(
        f"""INSERT INTO users (username, display_name, password_hash, is_bot, bot_owner_id)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT ((lower(username))) DO NOTHING
            RETURNING {_USER_COLUMNS}""",
        username, display_name, password_hash, is_bot, bot_owner_id)
    if row is None:
        raise UsernameTaken(username)
    return _user(row)


async def get_user(conn: asyncpg.Connection, user_id: int) -> User | None:
    row = await conn.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id)
    return _user(row) if row is not None else None


async def users_by_ids(conn: asyncpg.Connection, user_ids: list[int]) -> dict[int, User]:
    """Users keyed by id; ids that do not exist are simply absent."""
    rows = await conn.fetch(
        f"SELECT {_USER_COLUMNS} FROM users WHERE id = ANY($1::bigint[])", list(user_ids))
    return {row["id"]: _user(row) for row in rows}


async def get_user_auth_by_username(conn: asyncpg.Connection,
                                    username: str) -> tuple[int, str] | None:
    """(user id, argon2 hash) of a password account, or None.

    Bots have no password and are reported as absent, so a login attempt against a bot's
    name looks exactly like one against a name nobody has.
    """
    row = await conn.fetchrow(
        """SELECT id, password_hash FROM users
           WHERE lower(username) = lower($1) AND password_hash IS NOT NULL""", username)
    if row is None:
        return None
    return row["id"], row["password_hash"]


async def set_password_hash(conn: asyncpg.Connection, user_id: int, password_hash: str) -> None:
    """Replace a stored hash, e.g. to upgrade it to stronger argon2 parameters."""
    await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1",
                       user_id, password_hash)


# ----------------------------------------------------------------------- bot tokens


async def insert_bot_token(conn: asyncpg.Connection, user_id: int, token_hash: bytes) -> int:
    """Store a bot token's hash; returns the token id (part of the token string)."""
    token_id: int = await conn.fetchval(
        "INSERT INTO bot_tokens (user_id, token_hash) VALUES ($1, $2) RETURNING id",
        user_id, token_hash)
    return token_id


async def user_for_bot_token(conn: asyncpg.Connection, token_id: int,
                             token_hash: bytes) -> User | None:
    """The bot owning a live (unrevoked) token, matched on both id and hash."""
    row = await conn.fetchrow(
        """SELECT u.id, u.username, u.display_name, u.is_bot
           FROM bot_tokens t JOIN users u ON u.id = t.user_id
           WHERE t.id = $1 AND t.token_hash = $2 AND t.revoked_at IS NULL""",
        token_id, token_hash)
    return _user(row) if row is not None else None


async def revoke_bot_token(conn: asyncpg.Connection, token_id: int) -> bool:
    """Revoke one bot token; False if it did not exist or was already revoked."""
    result: str = await conn.execute(
        "UPDATE bot_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        token_id)
    return result == "UPDATE 1"


# ------------------------------------------------------------------- refresh tokens


class RefreshStatus(enum.Enum):
    """What presenting a refresh token did."""

    ROTATED = "rotated"
    """Valid: it is now used and a child token in the same family was stored."""
    REUSED = "reused"
    """It had already been used: the whole family is now revoked (likely theft)."""
    INVALID = "invalid"
    """Unknown, expired, or its family was revoked earlier."""


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    status: RefreshStatus
    user_id: int | None = None


async def insert_refresh_token(conn: asyncpg.Connection, *, user_id: int, token_hash: bytes,
                               expires_at: datetime,
                               family_id: uuid.UUID | None = None) -> uuid.UUID:
    """Store a refresh token; a new family unless ``family_id`` is given. Returns the family."""
    family = family_id or uuid.uuid4()
    await conn.execute(
        """INSERT INTO refresh_tokens (user_id, family_id, token_hash, expires_at)
           VALUES ($1, $2, $3, $4)""", user_id, family, token_hash, expires_at)
    return family


async def _revoke_family_txn(conn: asyncpg.Connection, family_id: uuid.UUID) -> None:
    """Revoke every token of a family, including children committed concurrently.

    Locking the family's rows first waits for any in-flight rotation of a family member
    (which holds that member's row lock); the UPDATE, a new statement under READ
    COMMITTED, then sees the child that rotation inserted, so no token of the family
    survives.
    """
    await conn.execute("SELECT 1 FROM refresh_tokens WHERE family_id = $1 FOR UPDATE", family_id)
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
        family_id)


async def consume_refresh_token_txn(conn: asyncpg.Connection, *, token_hash: bytes,
                                    new_token_hash: bytes,
                                    new_expires_at: datetime) -> RefreshOutcome:
    """Use a refresh token once: rotate it, or detect its reuse and revoke its family.

    The presented row is locked (``FOR UPDATE``), so two concurrent presentations of one
    token serialize: the first rotates it, the second sees it used and revokes the family.
    Reuse is reported as a status, not an exception, so the caller commits the revocation
    before refusing the request.
    """
    row = await conn.fetchrow(
        """SELECT id, user_id, family_id, expires_at <= now() AS expired, used_at, revoked_at
           FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE""", token_hash)
    if row is None or row["revoked_at"] is not None:
        return RefreshOutcome(RefreshStatus.INVALID)
    if row["used_at"] is not None:
        await _revoke_family_txn(conn, row["family_id"])
        return RefreshOutcome(RefreshStatus.REUSED, row["user_id"])
    if row["expired"]:
        return RefreshOutcome(RefreshStatus.INVALID)
    await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE id = $1", row["id"])
    await insert_refresh_token(conn, user_id=row["user_id"], token_hash=new_token_hash,
                               expires_at=new_expires_at, family_id=row["family_id"])
    return RefreshOutcome(RefreshStatus.ROTATED, row["user_id"])


async def revoke_refresh_family_txn(conn: asyncpg.Connection, token_hash: bytes) -> bool:
    """Revoke the family of the given token (logout). False if the token is unknown."""
    family = await conn.fetchval(
        "SELECT family_id FROM refresh_tokens WHERE token_hash = $1", token_hash)
    if family is None:
        return False
    await _revoke_family_txn(conn, family)
    return True


async def revoke_user_refresh_tokens_txn(conn: asyncpg.Connection, user_id: int) -> int:
    """Revoke every refresh token of ``user_id`` ("sign out everywhere"); returns how many
    families were live.

    Same order as :func:`_revoke_family_txn`: locking the user's live rows first waits for
    any rotation in flight (it holds its token's row lock), and the UPDATE, a new
    statement, then also sees the child that rotation inserted.
    """
    await conn.execute(
        "SELECT 1 FROM refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL FOR UPDATE",
        user_id)
    families = await conn.fetchval(
        """WITH revoked AS (
               UPDATE refresh_tokens SET revoked_at = now()
               WHERE user_id = $1 AND revoked_at IS NULL RETURNING family_id)
           SELECT count(DISTINCT family_id) FROM revoked""", user_id)
    return int(families or 0)


# ------------------------------------------------------------ load-test provisioning


async def bulk_create_bot_users_txn(conn: asyncpg.Connection, prefix: str,
                                    n: int) -> list[tuple[int, str, str]]:
    """Create ``n`` bot users ``<prefix>0 .. <prefix>{n-1}`` each with one bot token.

    Returns (user_id, username, token) in index order; tokens use the ``hb.<id>.<secret>``
    format of the token contract. Two set-based INSERTs over ``unnest`` arrays do the
    work (a row-at-a-time loop would need 2n round trips: minutes at 100,000 users).
    Raises :class:`UsernameTaken` naming one clashing username if any already exists.
    """
    if n <= 0:
        return []
    names = [f"{prefix}{i}" for i in range(n)]
    user_rows = await conn.fetch(
        """INSERT INTO users (username, display_name, is_bot)
           SELECT name, name, true FROM unnest($1::text[]) AS name
           ON CONFLICT ((lower(username))) DO NOTHING
           RETURNING id, username""", names)
    id_by_name = {row["username"]: row["id"] for row in user_rows}
    if len(id_by_name) != n:
        # The caller's transaction rolls back on this exception, undoing the others.
        raise UsernameTaken(next(name for name in names if name not in id_by_name))
    user_ids = [id_by_name[name] for name in names]
    token_secrets = [secrets.token_urlsafe(24) for _ in range(n)]
    hashes = [hashlib.sha256(s.encode()).digest() for s in token_secrets]
    token_rows = await conn.fetch(
        """INSERT INTO bot_tokens (user_id, token_hash)
           SELECT * FROM unnest($1::bigint[], $2::bytea[])
           RETURNING id, user_id""", user_ids, hashes)
    token_id_by_user = {row["user_id"]: row["id"] for row in token_rows}
    return [(uid, name, f"hb.{token_id_by_user[uid]}.{secret}")
            for uid, name, secret in zip(user_ids, names, token_secrets, strict=True)]


async def provision_rooms_txn(conn: asyncpg.Connection, *, community_name: str,
                              user_ids: list[int],
                              room_size: int) -> tuple[int, list[tuple[int, list[int]]]]:
    """A community owned by ``user_ids[0]`` with every user a member, split into rooms.

    Room ``i`` is a private text channel whose ``channel_members`` are exactly users
    ``i*room_size .. (i+1)*room_size - 1``, so each load-test client sees only its room.
    Returns (community id, [(channel id, member ids)] in room order). Set-based inserts
    throughout: four statements regardless of the number of users.
    """
    if not user_ids or room_size < 1:
        raise ValueError("provisioning needs at least one user and a positive room size")
    owner = user_ids[0]
    community_id: int = await conn.fetchval(
        "INSERT INTO communities (name, owner_id) VALUES ($1, $2) RETURNING id",
        community_name, owner)
    await conn.execute(
        """INSERT INTO community_members (community_id, user_id, role)
           SELECT $1, uid, CASE WHEN uid = $3 THEN 'owner' ELSE 'member' END
           FROM unnest($2::bigint[]) AS uid""", community_id, user_ids, owner)
    rooms = [user_ids[i:i + room_size] for i in range(0, len(user_ids), room_size)]
    channel_rows = await conn.fetch(
        """INSERT INTO channels (community_id, kind, name, private, position, created_by)
           SELECT $1, 'text', 'room-' || i, true, i, $3
           FROM generate_series(0, $2 - 1) AS i
           RETURNING id, position""", community_id, len(rooms), owner)
    channel_by_position = {row["position"]: row["id"] for row in channel_rows}
    channel_ids = [channel_by_position[i] for i in range(len(rooms))]
    member_channels = [cid for cid, room in zip(channel_ids, rooms, strict=True) for _ in room]
    await conn.execute(
        """INSERT INTO channel_members (channel_id, user_id)
           SELECT * FROM unnest($1::bigint[], $2::bigint[])""", member_channels, user_ids)
    return community_id, list(zip(channel_ids, rooms, strict=True))


async def ensure_system_user_txn(conn: asyncpg.Connection, username: str,
                                 display_name: str) -> int:
    """A bot-flagged account without credentials (owner of the starter community); it
    cannot log in: no password hash and no bot token."""
    user_id = await conn.fetchval(
        "INSERT INTO users (username, display_name, is_bot) VALUES ($1, $2, true) "
        "ON CONFLICT DO NOTHING RETURNING id", username, display_name)
    if user_id is None:
        user_id = await conn.fetchval(
            "SELECT id FROM users WHERE lower(username) = lower($1)", username)
    return int(user_id)
