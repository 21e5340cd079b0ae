"""Moderation state in PostgreSQL: sanctions, channel and community switches, purges,
the review queue with its reports, and appeals.

Every write that is a moderation *action* is a ``*_txn`` function: the caller runs it in
the transaction that also writes the audit entry (``persistence/audit.py``), so an
action and its entry commit together. Times come from PostgreSQL's clock (``now()``),
never from a gateway process's, so nodes with skewed clocks agree on when a timeout or
ban ends.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from persistence import outbox
from persistence._rows import millis
from protocol.domain_events import MemberLeft, MessageDeleted
from protocol.models import Role
from protocol.moderation import (
    Appeal,
    AppealStatus,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
)

# ----------------------------------------------------------------------------- members


class MemberState(msgspec.Struct, frozen=True, kw_only=True):
    """A membership as moderation needs it."""

    role: Role
    joined_at: dt.datetime
    timeout_until: dt.datetime | None
    timeout_audit_id: int | None


async def member_state(conn: asyncpg.Connection, community_id: int, user_id: int, *,
                       for_update: bool = False) -> MemberState | None:
    row = await conn.fetchrow(
        "SELECT role, joined_at, timeout_until, timeout_audit_id FROM community_members"
        " WHERE community_id = $1 AND user_id = $2" + (" FOR UPDATE" if for_update else ""),
        community_id, user_id)
    if row is None:
        return None
    return MemberState(role=Role(row["role"]), joined_at=row["joined_at"],
                       timeout_until=row["timeout_until"],
                       timeout_audit_id=row["timeout_audit_id"])


async def db_now(conn: asyncpg.Connection, plus_s: int = 0) -> dt.datetime:
    """PostgreSQL's ``now()`` (the transaction's time) plus ``plus_s`` seconds."""
    value = await conn.fetchval("SELECT now() + make_interval(secs => $1)", float(plus_s))
    assert isinstance(value, dt.datetime)
    return value


async def set_timeout_txn(conn: asyncpg.Connection, community_id: int, user_id: int,
                          until: dt.datetime | None, audit_id: int | None) -> None:
    """Set (or with ``until`` None, clear) a member's timeout."""
    await conn.execute(
        "UPDATE community_members SET timeout_until = $3, timeout_audit_id = $4"
        " WHERE community_id = $1 AND user_id = $2",
        community_id, user_id, until, audit_id)


async def active_timeout_until(conn: asyncpg.Connection, community_id: int,
                               user_id: int) -> dt.datetime | None:
    """When the member's timeout ends, or None if they are not timed out."""
    value = await conn.fetchval(
        "SELECT timeout_until FROM community_members WHERE community_id = $1"
        " AND user_id = $2 AND timeout_until > now()", community_id, user_id)
    return value if isinstance(value, dt.datetime) else None


async def remove_member_txn(conn: asyncpg.Connection, community_id: int,
                            user_id: int) -> bool:
    """Kick: the membership goes, and with it the member's place in the community's
    private channels and threads (a rejoin starts from the public channels)."""
    status = await conn.execute(
        "DELETE FROM community_members WHERE community_id = $1 AND user_id = $2",
        community_id, user_id)
    await conn.execute(
        "DELETE FROM channel_members cm USING channels c WHERE c.id = cm.channel_id"
        " AND c.community_id = $1 AND cm.user_id = $2", community_id, user_id)
    if status == "DELETE 1":
        await outbox.append_txn(conn, [MemberLeft(community_id=community_id, user_id=user_id)])
    return bool(status == "DELETE 1")


class SessionModeration(msgspec.Struct, frozen=True, kw_only=True):
    """What a gateway session keeps to enforce sanctions without a query per send."""

    account_created_ms: int
    joined_ms: dict[int, int]
    timeouts: dict[int, int]
    """community id -> timeout end (ms), only for timeouts still running."""
    lockdowns: dict[int, tuple[int, int]]
    """community id -> (member_age_s, account_age_s) for communities in lockdown."""


async def session_moderation(conn: asyncpg.Connection, user_id: int) -> SessionModeration:
    """One query at identify: joins, timeouts and lockdowns of every membership."""
    rows = await conn.fetch(
        "SELECT m.community_id, m.joined_at, m.timeout_until > now() AS timed_out,"
        " m.timeout_until, c.lockdown, c.lockdown_member_age_s, c.lockdown_account_age_s,"
        " u.created_at AS account_created_at"
        " FROM users u LEFT JOIN community_members m ON m.user_id = u.id"
        " LEFT JOIN communities c ON c.id = m.community_id WHERE u.id = $1", user_id)
    created = millis(rows[0]["account_created_at"]) if rows else 0
    joined: dict[int, int] = {}
    timeouts: dict[int, int] = {}
    lockdowns: dict[int, tuple[int, int]] = {}
    for r in rows:
        cid = r["community_id"]
        if cid is None:
            continue
        joined[cid] = millis(r["joined_at"]) or 0
        if r["timed_out"]:
            timeouts[cid] = millis(r["timeout_until"]) or 0
        if r["lockdown"]:
            lockdowns[cid] = (r["lockdown_member_age_s"], r["lockdown_account_age_s"])
    return SessionModeration(account_created_ms=created or 0, joined_ms=joined,
                             timeouts=timeouts, lockdowns=lockdowns)


# -------------------------------------------------------------------------------- bans


class Ban(msgspec.Struct, frozen=True, kw_only=True):
    community_id: int
    user_id: int
    reason: str | None
    audit_id: int
    expires_at: dt.datetime | None


async def active_ban(conn: asyncpg.Connection, community_id: int, user_id: int) -> Ban | None:
    """The ban in force, if any (an expired row counts as no ban; it is cleaned later)."""
    row = await conn.fetchrow(
        "SELECT community_id, user_id, reason, audit_id, expires_at FROM community_bans"
        " WHERE community_id = $1 AND user_id = $2"
        " AND (expires_at IS NULL OR expires_at > now())", community_id, user_id)
    return None if row is None else Ban(**dict(row))


async def upsert_ban_txn(conn: asyncpg.Connection, *, community_id: int, user_id: int,
                         actor_id: int | None, reason: str | None, audit_id: int,
                         expires_at: dt.datetime | None) -> None:
    await conn.execute(
        "INSERT INTO community_bans (community_id, user_id, actor_id, reason, audit_id,"
        " expires_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (community_id, user_id)"
        " DO UPDATE SET actor_id = $3, reason = $4, audit_id = $5, expires_at = $6,"
        " created_at = now()",
        community_id, user_id, actor_id, reason, audit_id, expires_at)


async def delete_ban_txn(conn: asyncpg.Connection, community_id: int, user_id: int) -> bool:
    status = await conn.execute(
        "DELETE FROM community_bans WHERE community_id = $1 AND user_id = $2",
        community_id, user_id)
    return bool(status == "DELETE 1")


async def join_refusal(conn: asyncpg.Connection, community_id: int,
                       user_id: int) -> tuple[str, dt.datetime | None] | None:
    """Why ``user_id`` may not join now: ("banned", until) or ("lockdown", None)."""
    ban = await active_ban(conn, community_id, user_id)
    if ban is not None:
        return "banned", ban.expires_at
    locked = await conn.fetchval("SELECT lockdown FROM communities WHERE id = $1", community_id)
    if locked:
        return "lockdown", None
    return None


# ------------------------------------------------------------------ channels, community


async def set_channel_moderation(conn: asyncpg.Connection, channel_id: int, *,
                                 slowmode_s: int | None = None,
                                 locked: bool | None = None) -> None:
    await conn.execute(
        "UPDATE channels SET slowmode_s = COALESCE($2, slowmode_s),"
        " locked = COALESCE($3, locked) WHERE id = $1", channel_id, slowmode_s, locked)


class Lockdown(msgspec.Struct, frozen=True, kw_only=True):
    enabled: bool
    member_age_s: int
    account_age_s: int


async def get_lockdown(conn: asyncpg.Connection, community_id: int, *,
                       for_update: bool = False) -> Lockdown | None:
    row = await conn.fetchrow(
        "SELECT lockdown, lockdown_member_age_s, lockdown_account_age_s FROM communities"
        " WHERE id = $1" + (" FOR UPDATE" if for_update else ""), community_id)
    if row is None:
        return None
    return Lockdown(enabled=row[0], member_age_s=row[1], account_age_s=row[2])


async def set_lockdown_txn(conn: asyncpg.Connection, community_id: int,
                           lockdown: Lockdown) -> None:
    await conn.execute(
        "UPDATE communities SET lockdown = $2, lockdown_member_age_s = $3,"
        " lockdown_account_age_s = $4 WHERE id = $1", community_id, lockdown.enabled,
        lockdown.member_age_s, lockdown.account_age_s)


# ------------------------------------------------------------------------------ purges

_ERASE = ("deleted_at = now(), content = '', attachments = '[]', mention_user_ids = '{}',"
          " mention_roles = '{}', mention_everyone = false")


async def purge_last_txn(conn: asyncpg.Connection, channel_id: int, count: int,
                         author_id: int | None) -> list[tuple[int, int]]:
    """Soft-delete the newest ``count`` messages of a channel (of one author if given);
    returns (channel id, message id) of each, newest first."""
    rows = await conn.fetch(
        "WITH target AS (SELECT id FROM messages WHERE channel_id = $1"
        " AND deleted_at IS NULL AND ($3::bigint IS NULL OR author_id = $3)"
        " ORDER BY seq DESC LIMIT $2)"
        f" UPDATE messages m SET {_ERASE} FROM target WHERE m.id = target.id"
        " RETURNING m.channel_id, m.id, m.author_id", channel_id, count, author_id)
    await _deleted_events(conn, rows)
    return sorted(((r[0], r[1]) for r in rows), key=lambda x: -x[1])


async def purge_author_txn(conn: asyncpg.Connection, community_id: int, author_id: int,
                           hours: int, channel_id: int | None,
                           limit: int) -> list[tuple[int, int]]:
    """Soft-delete what ``author_id`` posted in the community (or one channel of it) in
    the last ``hours``, at most ``limit`` messages; index ``messages_author_created``."""
    rows = await conn.fetch(
        "WITH target AS (SELECT m.id FROM messages m JOIN channels c ON c.id = m.channel_id"
        " WHERE m.author_id = $2 AND m.created_at > now() - make_interval(hours => $3)"
        " AND m.deleted_at IS NULL AND c.community_id = $1"
        " AND ($4::bigint IS NULL OR m.channel_id = $4) ORDER BY m.created_at DESC LIMIT $5)"
        f" UPDATE messages m SET {_ERASE} FROM target WHERE m.id = target.id"
        " RETURNING m.channel_id, m.id, m.author_id", community_id, author_id, hours,
        channel_id, limit)
    await _deleted_events(conn, rows)
    return sorted(((r[0], r[1]) for r in rows), key=lambda x: -x[1])


async def _deleted_events(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> None:
    """``message_deleted`` for every purged message, in the purge's transaction."""
    if not rows:
        return
    channels = await conn.fetch("SELECT id, community_id FROM channels"
                                " WHERE id = ANY($1::bigint[])", list({r[0] for r in rows}))
    community = {c["id"]: c["community_id"] for c in channels}
    await outbox.append_txn(conn, [MessageDeleted(
        message_id=r[1], channel_id=r[0], community_id=community.get(r[0]), author_id=r[2])
        for r in rows])


# ------------------------------------------------------------------------ review queue

_ITEM_COLUMNS = ("id, community_id, kind, status, channel_id, message_id, target_user_id,"
                 " content, first_reason, sources, report_count, flag_count, claimed_by,"
                 " resolved_by, decision, decision_reason, created_at, updated_at")


def _item(row: asyncpg.Record) -> ReviewItem:
    return ReviewItem(
        id=row["id"], community_id=row["community_id"], kind=ReviewKind(row["kind"]),
        status=ReviewStatus(row["status"]), channel_id=row["channel_id"],
        message_id=row["message_id"], target_user_id=row["target_user_id"],
        content=row["content"], first_reason=row["first_reason"], sources=list(row["sources"]),
        report_count=row["report_count"], flag_count=row["flag_count"],
        claimed_by=row["claimed_by"], resolved_by=row["resolved_by"], decision=row["decision"],
        decision_reason=row["decision_reason"], created_at=millis(row["created_at"]) or 0,
        updated_at=millis(row["updated_at"]) or 0)


async def open_item_txn(conn: asyncpg.Connection, *, community_id: int, kind: ReviewKind,
                        channel_id: int | None, message_id: int | None,
                        target_user_id: int | None, content: str, reason: str) -> int:
    """The unresolved item for this message (or reported user), created if there is
    none. Concurrent reports of one message meet on the partial unique index: the loser
    of the race updates the winner's row instead of creating a second item."""
    if kind is ReviewKind.MESSAGE and message_id is not None:
        conflict = "(message_id) WHERE status <> 'resolved' AND message_id IS NOT NULL"
    elif kind is ReviewKind.USER:
        conflict = "(community_id, target_user_id) WHERE status <> 'resolved' AND kind = 'user'"
    else:
        conflict = ""
    sql = ("INSERT INTO review_items (community_id, kind, channel_id, message_id,"
           " target_user_id, content, first_reason) VALUES ($1, $2, $3, $4, $5, $6, $7)")
    if conflict:
        sql += f" ON CONFLICT {conflict} DO UPDATE SET updated_at = now()"
    value = await conn.fetchval(sql + " RETURNING id", community_id, kind.value, channel_id,
                                message_id, target_user_id, content, reason)
    return int(value)


async def add_report_txn(conn: asyncpg.Connection, *, item_id: int, community_id: int,
                         reporter_id: int, message_id: int | None,
                         target_user_id: int | None, reason: str) -> bool:
    """Count ``reporter_id``'s report on the item once; False if they had reported it."""
    inserted = await conn.fetchval(
        "INSERT INTO reports (item_id, community_id, reporter_id, message_id, target_user_id,"
        " reason) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (item_id, reporter_id)"
        " DO NOTHING RETURNING id",
        item_id, community_id, reporter_id, message_id, target_user_id, reason)
    if inserted is None:
        return False
    await conn.execute(
        "UPDATE review_items SET report_count = report_count + 1, updated_at = now(),"
        " sources = CASE WHEN 'report' = ANY(sources) THEN sources"
        " ELSE array_append(sources, 'report') END WHERE id = $1", item_id)
    return True


async def add_flag_txn(conn: asyncpg.Connection, item_id: int, rule: str) -> None:
    source = f"automod:{rule}"
    await conn.execute(
        "UPDATE review_items SET flag_count = flag_count + 1, updated_at = now(),"
        " sources = CASE WHEN $2 = ANY(sources) THEN sources"
        " ELSE array_append(sources, $2) END WHERE id = $1", item_id, source)


async def get_item(conn: asyncpg.Connection, item_id: int) -> ReviewItem | None:
    row = await conn.fetchrow(f"SELECT {_ITEM_COLUMNS} FROM review_items WHERE id = $1",
                              item_id)
    return None if row is None else _item(row)


async def claim_item_txn(conn: asyncpg.Connection, item_id: int,
                         moderator_id: int) -> ReviewItem | None:
    """Open -> claimed; None if it is not open (someone else was faster)."""
    row = await conn.fetchrow(
        "UPDATE review_items SET status = 'claimed', claimed_by = $2, claimed_at = now(),"
        f" updated_at = now() WHERE id = $1 AND status = 'open' RETURNING {_ITEM_COLUMNS}",
        item_id, moderator_id)
    return None if row is None else _item(row)


async def resolve_item_txn(conn: asyncpg.Connection, item_id: int, moderator_id: int | None,
                           decision: str, reason: str | None) -> ReviewItem | None:
    """Open/claimed -> resolved; None if it was resolved already."""
    row = await conn.fetchrow(
        "UPDATE review_items SET status = 'resolved', resolved_by = $2, resolved_at = now(),"
        " decision = $3, decision_reason = $4, updated_at = now()"
        f" WHERE id = $1 AND status <> 'resolved' RETURNING {_ITEM_COLUMNS}",
        item_id, moderator_id, decision, reason)
    return None if row is None else _item(row)


async def list_items(conn: asyncpg.Connection, community_id: int, status: ReviewStatus | None,
                     before_id: int | None, limit: int) -> list[ReviewItem]:
    statuses = [status.value] if status else ["open", "claimed"]
    rows = await conn.fetch(
        f"SELECT {_ITEM_COLUMNS} FROM review_items WHERE community_id = $1"
        " AND status = ANY($2::text[]) AND ($3::bigint IS NULL OR id < $3)"
        " ORDER BY id DESC LIMIT $4", community_id, statuses, before_id, limit)
    return [_item(r) for r in rows]


# ----------------------------------------------------------------------------- appeals

_APPEAL_COLUMNS = ("id, community_id, user_id, audit_id, action, text, status, resolved_by,"
                   " decision_reason, created_at, resolved_at")


def _appeal(row: asyncpg.Record) -> Appeal:
    return Appeal(id=row["id"], community_id=row["community_id"], user_id=row["user_id"],
                  audit_id=row["audit_id"], action=row["action"], text=row["text"],
                  status=AppealStatus(row["status"]), resolved_by=row["resolved_by"],
                  decision_reason=row["decision_reason"],
                  created_at=millis(row["created_at"]) or 0,
                  resolved_at=millis(row["resolved_at"]))


async def insert_appeal(conn: asyncpg.Connection, *, community_id: int, user_id: int,
                        audit_id: int, action: str, text: str) -> Appeal | None:
    """None when this action was appealed already (one appeal per action)."""
    row = await conn.fetchrow(
        "INSERT INTO appeals (community_id, user_id, audit_id, action, text)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (audit_id) DO NOTHING"
        f" RETURNING {_APPEAL_COLUMNS}", community_id, user_id, audit_id, action, text)
    return None if row is None else _appeal(row)


async def get_appeal(conn: asyncpg.Connection, appeal_id: int, *,
                     for_update: bool = False) -> Appeal | None:
    row = await conn.fetchrow(
        f"SELECT {_APPEAL_COLUMNS} FROM appeals WHERE id = $1"
        + (" FOR UPDATE" if for_update else ""), appeal_id)
    return None if row is None else _appeal(row)


async def resolve_appeal_txn(conn: asyncpg.Connection, appeal_id: int, moderator_id: int,
                             accept: bool, reason: str | None) -> Appeal | None:
    row = await conn.fetchrow(
        "UPDATE appeals SET status = $3, resolved_by = $2, resolved_at = now(),"
        f" decision_reason = $4 WHERE id = $1 AND status = 'open' RETURNING {_APPEAL_COLUMNS}",
        appeal_id, moderator_id, "accepted" if accept else "rejected", reason)
    return None if row is None else _appeal(row)


async def list_appeals(conn: asyncpg.Connection, community_id: int,
                       status: AppealStatus | None, before_id: int | None,
                       limit: int) -> list[Appeal]:
    rows = await conn.fetch(
        f"SELECT {_APPEAL_COLUMNS} FROM appeals WHERE community_id = $1"
        " AND ($2::text IS NULL OR status = $2) AND ($3::bigint IS NULL OR id < $3)"
        " ORDER BY id DESC LIMIT $4",
        community_id, status.value if status else None, before_id, limit)
    return [_appeal(r) for r in rows]


# ------------------------------------------------------------------------------- misc


async def purge_expired_bans(conn: asyncpg.Connection) -> int:
    """Forget bans that have ended (they no longer refuse anything)."""
    status = await conn.execute(
        "DELETE FROM community_bans WHERE expires_at IS NOT NULL AND expires_at < now()")
    return int(status.split()[-1])
