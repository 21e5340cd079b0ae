"""Messages: group-committed inserts with gap-free per-channel seqs, edits, deletes, history.

Seqs: ``channels.last_seq`` is bumped by the number of new messages in the same
transaction that inserts them, with the channel rows locked in id order (so concurrent
batches from several processes cannot deadlock). A rolled-back batch leaves no hole.

Idempotency: ``(author_id, nonce)`` is unique. A batch first looks up nonces already
stored and returns those messages instead of inserting (consuming no seq); duplicates
inside one batch collapse onto the first. A concurrent batch elsewhere can still store
the same nonce between the look-up and the insert: the unique index then aborts this
transaction whole, and the caller retries it (``rooms/chat/group_commit.py`` does).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from persistence import outbox
from persistence._rows import MESSAGE_COLUMNS, message_from, millis
from protocol.domain_events import MessageDeleted
from protocol.models import Attachment, Message, ReactionCount, Role, User

_attachments_json = msgspec.json.Encoder()


class NewMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message to store, as checked and parsed by the chat service."""

    channel_id: int
    author: User
    """The author as the session knows them: the stored message is built from this
    struct plus what PostgreSQL assigns (id, created_at), not read back."""
    content: str
    nonce: str | None = None
    reply_to_id: int | None = None
    mention_user_ids: list[int] = []
    mention_roles: list[str] = []
    mention_everyone: bool = False
    attachments: list[Attachment] = []


    @property
    def author_id(self) -> int:
        return self.author.id


class Stored(msgspec.Struct, frozen=True):
    """One result of :func:`insert_batch_txn`: the message, and whether this batch
    created it (False: an earlier message with the same author and nonce)."""

    message: Message
    created: bool


def _pg_array(values: Sequence[object]) -> str:
    """A PostgreSQL array literal, cast to ``bigint[]``/``text[]`` in the INSERT.

    Per-row arrays cannot travel as one multidimensional array (rows differ in length),
    so each row's array goes as a literal inside a ``text[]``. Strings are always quoted
    and escaped, so a role name can never break the literal.
    """
    def element(value: object) -> str:
        if isinstance(value, int):
            return str(value)
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'

    return "{" + ",".join(element(v) for v in values) + "}"


async def insert_batch_txn(conn: asyncpg.Connection, batch: Sequence[NewMessage]) -> list[Stored]:
    """Store a batch in the caller's transaction; one result per input, in input order.
    At most four round-trips whatever the batch size."""
    results: list[Stored | None] = [None] * len(batch)
    # 1. Nonces already stored, and duplicates inside the batch.
    keyed = [(i, m) for i, m in enumerate(batch) if m.nonce is not None]
    existing: dict[tuple[int, str], Message] = {}
    if keyed:
        # One index probe (messages_author_nonce) per key, whatever the plan: LIMIT 1
        # (the key is unique) keeps PostgreSQL from flattening the LATERAL into a join.
        # As a join, the plan for this prepared statement became a sort-merge over the
        # whole messages table: 40 ms batches turned into 1–3 s ones after 5,000 messages.
        rows = await conn.fetch(
            f"SELECT {MESSAGE_COLUMNS} "
            "FROM unnest($1::bigint[], $2::text[]) AS k(author_id, nonce) "
            "CROSS JOIN LATERAL (SELECT * FROM messages x WHERE x.author_id = k.author_id "
            "AND x.nonce = k.nonce AND x.nonce IS NOT NULL LIMIT 1) AS m "
            "JOIN users u ON u.id = m.author_id",
            [m.author_id for _, m in keyed], [m.nonce for _, m in keyed])
        if rows:
            # A retried send returns the message as it is now, reactions included.
            reactions = await _reactions_for(conn, [r["id"] for r in rows])
            existing = {(r["author_id"], r["nonce"]): message_from(r, reactions.get(r["id"]))
                        for r in rows}
    fresh: list[int] = []
    first_of: dict[tuple[int, str], int] = {}
    duplicates: list[tuple[int, int]] = []
    for i, m in enumerate(batch):
        if m.nonce is not None:
            key = (m.author_id, m.nonce)
            if key in existing:
                results[i] = Stored(existing[key], False)
                continue
            if key in first_of:
                duplicates.append((i, first_of[key]))
                continue
            first_of[key] = i
        fresh.append(i)
    if fresh:
        # 2. Lock the channels in id order, then reserve a block of seqs in each.
        per_channel: dict[int, int] = {}
        for i in fresh:
            per_channel[batch[i].channel_id] = per_channel.get(batch[i].channel_id, 0) + 1
        channel_ids = sorted(per_channel)
        await conn.execute(
            "SELECT id FROM channels WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
            channel_ids)
        rows = await conn.fetch(
            "UPDATE channels c SET last_seq = c.last_seq + d.n "
            "FROM unnest($1::bigint[], $2::bigint[]) AS d(id, n) WHERE c.id = d.id "
            "RETURNING c.id, c.last_seq",
            channel_ids, [per_channel[c] for c in channel_ids])
        next_seq = {r["id"]: r["last_seq"] - per_channel[r["id"]] + 1 for r in rows}
        if len(next_seq) != len(channel_ids):
            raise LookupError("a message names a channel that does not exist")
        seqs: list[int] = []
        for i in fresh:
            cid = batch[i].channel_id
            seqs.append(next_seq[cid])
            next_seq[cid] += 1
        # 3. One INSERT for the whole batch (array-valued columns travel as literals).
        ms = [batch[i] for i in fresh]
        inserted = await conn.fetch(
            """
            INSERT INTO messages (channel_id, seq, author_id, content, nonce, reply_to_id,
                                  mention_user_ids, mention_roles, mention_everyone, attachments)
            SELECT d.channel_id, d.seq, d.author_id, d.content, d.nonce, d.reply_to_id,
                   d.mu::bigint[], d.mr::text[], d.me, d.att::jsonb
            FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
                        $6::bigint[], $7::text[], $8::text[], $9::boolean[], $10::text[])
                 AS d(channel_id, seq, author_id, content, nonce, reply_to_id, mu, mr, me, att)
            RETURNING channel_id, seq, id, created_at
            """,
            [m.channel_id for m in ms], seqs, [m.author_id for m in ms],
            [m.content for m in ms], [m.nonce for m in ms], [m.reply_to_id for m in ms],
            [_pg_array(m.mention_user_ids) for m in ms], [_pg_array(m.mention_roles) for m in ms],
            [m.mention_everyone for m in ms],
            [_attachments_json.encode(m.attachments).decode() for m in ms])
        # Built here rather than selected back: reading every column back and decoding it
        # was an eighth of the server's CPU at 5,000 messages/s.
        assigned = {(r[0], r[1]): (r[2], r[3]) for r in inserted}
        for i, seq in zip(fresh, seqs, strict=True):
            m = batch[i]
            message_id, created_at = assigned[(m.channel_id, seq)]
            results[i] = Stored(Message(
                id=message_id, channel_id=m.channel_id, seq=seq, author=m.author,
                content=m.content, created_at=millis(created_at) or 0, nonce=m.nonce,
                reply_to_id=m.reply_to_id, mention_user_ids=list(m.mention_user_ids),
                mention_roles=[Role(r) for r in m.mention_roles],
                mention_everyone=m.mention_everyone, attachments=list(m.attachments)), True)
    for i, first in duplicates:
        stored = results[first]
        assert stored is not None
        results[i] = Stored(stored.message, False)
    return [r for r in results if r is not None]


async def _reactions_for(conn: asyncpg.Connection,
                         message_ids: list[int]) -> dict[int, list[ReactionCount]]:
    if not message_ids:
        return {}
    rows = await conn.fetch(
        "SELECT message_id, emoji, count(*) AS n FROM reactions WHERE message_id = ANY($1) "
        "GROUP BY message_id, emoji ORDER BY message_id, min(created_at), emoji", message_ids)
    found: dict[int, list[ReactionCount]] = {}
    for r in rows:
        found.setdefault(r["message_id"], []).append(ReactionCount(emoji=r["emoji"], count=r["n"]))
    return found


_SELECT = f"SELECT {MESSAGE_COLUMNS} FROM messages m JOIN users u ON u.id = m.author_id"


async def get_message(conn: asyncpg.Connection, message_id: int) -> Message | None:
    row = await conn.fetchrow(_SELECT + " WHERE m.id = $1", message_id)
    if row is None:
        return None
    reactions = await _reactions_for(conn, [message_id])
    return message_from(row, reactions.get(message_id))


async def find_by_nonce(conn: asyncpg.Connection, author_id: int, nonce: str) -> Message | None:
    row = await conn.fetchrow(_SELECT + " WHERE m.author_id = $1 AND m.nonce = $2",
                              author_id, nonce)
    if row is None:
        return None
    reactions = await _reactions_for(conn, [row["id"]])
    return message_from(row, reactions.get(row["id"]))


async def edit_message(conn: asyncpg.Connection, message_id: int, content: str,
                       mention_user_ids: list[int], mention_roles: list[str],
                       mention_everyone: bool) -> Message | None:
    updated = await conn.fetchval(
        "UPDATE messages SET content = $2, mention_user_ids = $3, mention_roles = $4, "
        "mention_everyone = $5, edited_at = now() WHERE id = $1 AND deleted_at IS NULL "
        "RETURNING id", message_id, content, mention_user_ids, mention_roles, mention_everyone)
    return await get_message(conn, message_id) if updated else None


async def delete_message(conn: asyncpg.Connection, message_id: int) -> Message | None:
    """Soft delete: the row keeps its seq (no hole), its content and files are erased."""
    async with conn.transaction():  # the change and its outbox event, together
        updated = await conn.fetchrow(
            "UPDATE messages m SET deleted_at = now(), content = '', attachments = '[]', "
            "mention_user_ids = '{}', mention_roles = '{}', mention_everyone = false "
            "FROM channels c WHERE m.id = $1 AND m.deleted_at IS NULL AND c.id = m.channel_id "
            "RETURNING m.channel_id, m.author_id, c.community_id", message_id)
        if updated is None:
            return None
        await outbox.append_txn(conn, [MessageDeleted(
            message_id=message_id, channel_id=updated["channel_id"],
            community_id=updated["community_id"], author_id=updated["author_id"])])
    return await get_message(conn, message_id)


async def history(conn: asyncpg.Connection, channel_id: int, *, before: int | None,
                  after: int | None, around: int | None,
                  limit: int) -> tuple[list[Message], bool]:
    """A page by seq, oldest first, without deleted messages. ``has_more``: more exist
    beyond the page in the paging direction (older for the default and ``before``, newer
    for ``after``, either side for ``around``)."""
    base = _SELECT + " WHERE m.channel_id = $1 AND m.deleted_at IS NULL"
    if after is not None:
        rows = list(await conn.fetch(base + " AND m.seq > $2 ORDER BY m.seq LIMIT $3",
                                     channel_id, after, limit + 1))
        has_more = len(rows) > limit
        rows = rows[:limit]
    elif around is not None:
        half = limit // 2
        older = list(await conn.fetch(base + " AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3",
                                      channel_id, around, half + 1))
        newer = list(await conn.fetch(base + " AND m.seq >= $2 ORDER BY m.seq LIMIT $3",
                                      channel_id, around, limit - half + 1))
        has_more = len(older) > half or len(newer) > limit - half
        rows = list(reversed(older[:half])) + newer[: limit - half]
    else:
        if before is not None:
            rows = list(await conn.fetch(base + " AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3",
                                         channel_id, before, limit + 1))
        else:
            rows = list(await conn.fetch(base + " ORDER BY m.seq DESC LIMIT $2",
                                         channel_id, limit + 1))
        has_more = len(rows) > limit
        rows = list(reversed(rows[:limit]))
    reactions = await _reactions_for(conn, [r["id"] for r in rows])
    return [message_from(r, reactions.get(r["id"])) for r in rows], has_more


async def set_thread_id(conn: asyncpg.Connection, message_id: int, thread_id: int) -> None:
    await conn.execute("UPDATE messages SET thread_id = $2 WHERE id = $1", message_id, thread_id)
