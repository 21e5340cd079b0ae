"""Automod rules: the rows behind ``protocol.automod.AutomodRule``.

Plain functions over a connection. The writes are ``*_txn``: the caller opens the
transaction so the audit entry (``persistence/audit.py``) commits with the change and
the community's rule count is checked under a lock (:func:`lock_community_rules_txn`).
Validation and compilation are not done here; ``rooms/moderation/automod.py`` does both before a
rule is written and again when rules are loaded.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from persistence._rows import millis
from protocol.automod import AutomodAction, AutomodRule, AutomodRuleBody, Trigger
from protocol.models import Role

_trigger_decoder = msgspec.json.Decoder(Trigger)

_COLUMNS = ("id, community_id, channel_id, name, config::text AS config, actions, timeout_s,"
            " exempt_roles, exempt_role_ids, exempt_channel_ids, exempt_moderators, enabled,"
            " created_by, created_at, updated_at")


def _rule(row: asyncpg.Record) -> AutomodRule:
    return AutomodRule(
        id=row["id"], community_id=row["community_id"], channel_id=row["channel_id"],
        name=row["name"], trigger=_trigger_decoder.decode(row["config"]),
        actions=[AutomodAction(a) for a in row["actions"]], timeout_s=row["timeout_s"],
        exempt_roles=[Role(r) for r in row["exempt_roles"]],
        exempt_role_ids=list(row["exempt_role_ids"]),
        exempt_channel_ids=list(row["exempt_channel_ids"]),
        exempt_moderators=row["exempt_moderators"], enabled=row["enabled"],
        created_by=row["created_by"], created_at=millis(row["created_at"]) or 0,
        updated_at=millis(row["updated_at"]) or 0)


def _values(body: AutomodRuleBody) -> list[Any]:
    return [body.channel_id, body.name, body.trigger.__struct_config__.tag,
            msgspec.json.encode(body.trigger).decode(), [a.value for a in body.actions],
            body.timeout_s, [r.value for r in body.exempt_roles], body.exempt_role_ids,
            body.exempt_channel_ids, body.exempt_moderators, body.enabled]


async def list_rules(conn: asyncpg.Connection, community_id: int) -> list[AutomodRule]:
    """Every rule of a community, oldest first (the order they are evaluated in)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM automod_rules WHERE community_id = $1 ORDER BY id",
        community_id)
    return [_rule(row) for row in rows]


async def get_rule(conn: asyncpg.Connection, rule_id: int) -> AutomodRule | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM automod_rules WHERE id = $1", rule_id)
    return _rule(row) if row is not None else None


async def lock_community_rules_txn(conn: asyncpg.Connection, community_id: int) -> int:
    """Serialise rule changes of one community (so two creates cannot both pass the
    per-community limit); returns the current number of rules."""
    await conn.execute("SELECT pg_advisory_xact_lock(4242005, $1::integer)",
                       community_id % 2**31)
    value = await conn.fetchval(
        "SELECT count(*) FROM automod_rules WHERE community_id = $1", community_id)
    return int(value)


async def create_rule_txn(conn: asyncpg.Connection, community_id: int, created_by: int,
                          body: AutomodRuleBody) -> AutomodRule:
    row = await conn.fetchrow(
        f"""INSERT INTO automod_rules (community_id, created_by, channel_id, name, kind, config,
                actions, timeout_s, exempt_roles, exempt_role_ids, exempt_channel_ids,
                exempt_moderators, enabled)
            VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9, $10, $11, $12, $13)
            RETURNING {_COLUMNS}""",
        community_id, created_by, *_values(body))
    assert row is not None  # INSERT ... RETURNING: one row
    return _rule(row)


async def update_rule_txn(conn: asyncpg.Connection, rule_id: int,
                          body: AutomodRuleBody) -> AutomodRule | None:
    row = await conn.fetchrow(
        f"""UPDATE automod_rules SET channel_id = $2, name = $3, kind = $4,
                config = $5::text::jsonb, actions = $6, timeout_s = $7, exempt_roles = $8,
                exempt_role_ids = $9, exempt_channel_ids = $10, exempt_moderators = $11,
                enabled = $12, updated_at = now()
             WHERE id = $1
         RETURNING {_COLUMNS}""",
        rule_id, *_values(body))
    return _rule(row) if row is not None else None


async def delete_rule_txn(conn: asyncpg.Connection, rule_id: int) -> bool:
    status = await conn.execute("DELETE FROM automod_rules WHERE id = $1", rule_id)
    return bool(status == "DELETE 1")
