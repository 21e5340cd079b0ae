"""Service keys: scoped, expiring, revocable API keys of one community (``0009``).

Only the SHA-256 of a secret is stored; :func:`find_by_hash` is the one lookup a request
costs, and :func:`touch_txn` records the use in the transaction of what it did.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from persistence._rows import millis
from protocol.models import Role
from protocol.sidecar import Scope, ServiceKey

_COLUMNS = ("id, community_id, name, scopes, created_by, created_at, expires_at, revoked_at,"
            " last_used_at")


def _key(row: asyncpg.Record) -> ServiceKey:
    return ServiceKey(
        id=row["id"], community_id=row["community_id"], name=row["name"],
        scopes=[Scope(s) for s in row["scopes"] if s in Scope._value2member_map_],
        created_by=row["created_by"], created_at=millis(row["created_at"]) or 0,
        expires_at=millis(row["expires_at"]), revoked_at=millis(row["revoked_at"]),
        last_used_at=millis(row["last_used_at"]))


async def create_txn(conn: asyncpg.Connection, *, community_id: int, name: str,
                     scopes: Sequence[Scope], key_hash: bytes, created_by: int,
                     expires_in_s: int | None) -> ServiceKey:
    row = await conn.fetchrow(
        "INSERT INTO service_keys (community_id, name, scopes, key_hash, created_by,"
        " expires_at) VALUES ($1, $2, $3, $4, $5,"
        " CASE WHEN $6::bigint IS NULL THEN NULL"
        "      ELSE now() + make_interval(secs => $6::bigint) END)"
        f" RETURNING {_COLUMNS}",
        community_id, name, [s.value for s in scopes], key_hash, created_by, expires_in_s)
    assert row is not None
    return _key(row)


async def list_keys(conn: asyncpg.Connection, community_id: int) -> list[ServiceKey]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM service_keys WHERE community_id = $1"
                            " ORDER BY id DESC", community_id)
    return [_key(r) for r in rows]


async def revoke_txn(conn: asyncpg.Connection, community_id: int,
                     key_id: int) -> ServiceKey | None:
    """Revoke (idempotent: an already revoked key keeps its first revocation time)."""
    row = await conn.fetchrow(
        "UPDATE service_keys SET revoked_at = coalesce(revoked_at, now())"
        f" WHERE id = $1 AND community_id = $2 RETURNING {_COLUMNS}", key_id, community_id)
    return _key(row) if row is not None else None


@dataclass(frozen=True)
class FoundKey:
    key: ServiceKey
    now: dt.datetime
    """The database's clock: expiry is judged by it."""
    creator_role: Role | None
    """The creator's role in the key's community now; None once they left it."""


async def find_by_hash(conn: asyncpg.Connection, key_hash: bytes) -> FoundKey | None:
    """The key with this hash, with the role its creator holds now (one query: a key
    may do no more than the member who made it still may)."""
    row = await conn.fetchrow(
        f"SELECT {', '.join('k.' + c.strip() for c in _COLUMNS.split(','))},"
        " now() AS now, m.role AS creator_role FROM service_keys k"
        " LEFT JOIN community_members m"
        "   ON m.community_id = k.community_id AND m.user_id = k.created_by"
        " WHERE k.key_hash = $1", key_hash)
    if row is None:
        return None
    role = row["creator_role"]
    return FoundKey(_key(row), row["now"], Role(role) if role is not None else None)


async def touch_txn(conn: asyncpg.Connection, key_id: int) -> None:
    await conn.execute("UPDATE service_keys SET last_used_at = now() WHERE id = $1", key_id)
