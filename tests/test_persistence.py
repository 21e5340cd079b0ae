"""Repositories against a real PostgreSQL: group commit, history, reactions, read state,
communities, invites, channels and DMs."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from persistence import channels as channels_db
from persistence import communities as communities_db
from persistence import messages as messages_db
from persistence import reactions as reactions_db
from persistence import read_states as read_states_db
from persistence.accounts import create_user
from persistence.database import Database
from persistence.messages import NewMessage, Stored, insert_batch_txn
from protocol.models import Attachment, Channel, ChannelKind, Community, Role, User

# --------------------------------------------------------------------------- helpers


async def make_user(db: Database, name: str | None = None) -> User:
    async with db.connection() as conn:
        username = name or f"u{uuid.uuid4().hex[:10]}"
        return await create_user(conn, username=username, display_name=username.title(),
                                 password_hash=None)


async def make_community(db: Database, owner: User) -> Community:
    async with db.transaction("test") as conn:
        return await communities_db.create_community_txn(conn, name="Guild", owner_id=owner.id)


async def make_channel(db: Database, community: Community, owner: User,
                       name: str = "general", **kwargs: Any) -> Channel:
    async with db.transaction("test") as conn:
        return await channels_db.create_channel_txn(
            conn, kind=kwargs.pop("kind", ChannelKind.TEXT), name=name,
            community_id=community.id, created_by=owner.id, **kwargs)


def new(channel: Channel | int, author: User, content: str = "hi", *, nonce: str | None = None,
        **kwargs: Any) -> NewMessage:
    channel_id = channel if isinstance(channel, int) else channel.id
    return NewMessage(channel_id=channel_id, author=author, content=content, nonce=nonce,
                      reply_to_id=kwargs.pop("reply_to_id", None),
                      mention_user_ids=kwargs.pop("mention_user_ids", []),
                      mention_roles=kwargs.pop("mention_roles", []),
                      mention_everyone=kwargs.pop("mention_everyone", False),
                      attachments=kwargs.pop("attachments", []))


async def insert(db: Database, batch: list[NewMessage]) -> list[Stored]:
    async with db.transaction("test") as conn:
        return await insert_batch_txn(conn, batch)


async def last_seq(db: Database, channel_id: int) -> int:
    async with db.connection() as conn:
        return int(await conn.fetchval("SELECT last_seq FROM channels WHERE id = $1",
                                       channel_id))


async def stored_seqs(db: Database, channel_id: int) -> list[int]:
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT seq FROM messages WHERE channel_id = $1 ORDER BY seq",
                                channel_id)
        return [r["seq"] for r in rows]


@contextlib.asynccontextmanager
async def count_queries(conn: asyncpg.Connection) -> AsyncIterator[list[str]]:
    """Every statement ``conn`` sends while the block runs (one per round-trip).

    asyncpg's own type introspection is left out: it runs once per connection and type.
    """
    seen: list[str] = []

    def logger(record: Any) -> None:
        if "pg_catalog" not in record.query and "'jit'" not in record.query:
            seen.append(record.query)

    conn.add_query_logger(logger)
    try:
        yield seen
        await asyncio.sleep(0)  # loggers are called via call_soon
    finally:
        conn.remove_query_logger(logger)


@pytest.fixture
async def world(db: Database) -> dict[str, Any]:
    """An owner, a second user, a community and two text channels."""
    owner = await make_user(db, "owner")
    other = await make_user(db, "other")
    community = await make_community(db, owner)
    async with db.transaction("test") as conn:
        await communities_db.add_member_txn(conn, community.id, other.id)
    a = await make_channel(db, community, owner, "a")
    b = await make_channel(db, community, owner, "b")
    return {"owner": owner, "other": other, "community": community, "a": a, "b": b}


# ---------------------------------------------------------------------- group commit


async def test_batch_assigns_gap_free_seqs_per_channel_in_input_order(
        db: Database, world: dict[str, Any]) -> None:
    owner, other, a, b = world["owner"], world["other"], world["a"], world["b"]
    batch = [new(a, owner, "a1"), new(b, other, "b1"), new(a, other, "a2"),
             new(b, owner, "b2"), new(a, owner, "a3")]
    stored = await insert(db, batch)
    assert [s.created for s in stored] == [True] * 5
    got = [(s.message.channel_id, s.message.seq, s.message.content) for s in stored]
    assert got == [(a.id, 1, "a1"), (b.id, 1, "b1"), (a.id, 2, "a2"), (b.id, 2, "b2"),
                   (a.id, 3, "a3")]
    assert stored[1].message.author == other
    assert await last_seq(db, a.id) == 3 and await last_seq(db, b.id) == 2

    stored = await insert(db, [new(b, owner, "b3"), new(a, owner, "a4")])
    assert [(s.message.channel_id, s.message.seq) for s in stored] == [(b.id, 3), (a.id, 4)]
    assert await stored_seqs(db, a.id) == [1, 2, 3, 4]
    assert await stored_seqs(db, b.id) == [1, 2, 3]


async def test_batch_returns_every_field(db: Database, world: dict[str, Any]) -> None:
    owner, a = world["owner"], world["a"]
    first = (await insert(db, [new(a, owner, "root")]))[0].message
    files = [Attachment(url="https://x/y.png", filename="y.png", content_type="image/png",
                        size=10, width=2, height=3)]
    before_ms = int(time.time() * 1000)
    message = (await insert(db, [new(a, owner, "hello <@&admin> \"quoted\" \\", nonce="n1",
                                     reply_to_id=first.id, mention_user_ids=[7, 9],
                                     mention_roles=["admin", "member"], mention_everyone=True,
                                     attachments=files)]))[0].message
    assert message.content == "hello <@&admin> \"quoted\" \\"
    assert message.nonce == "n1" and message.reply_to_id == first.id
    assert message.mention_user_ids == [7, 9]
    assert message.mention_roles == [Role.ADMIN, Role.MEMBER]
    assert message.mention_everyone is True
    assert message.attachments == files
    assert message.author == owner and message.deleted is False and message.edited_at is None
    assert abs(message.created_at - before_ms) < 60_000
    async with db.connection() as conn:
        assert await messages_db.get_message(conn, message.id) == message


async def test_nonce_duplicates_inside_one_batch_collapse_without_consuming_seqs(
        db: Database, world: dict[str, Any]) -> None:
    owner, other, a = world["owner"], world["other"], world["a"]
    stored = await insert(db, [new(a, owner, "x", nonce="n"), new(a, owner, "x again", nonce="n"),
                               new(a, other, "same nonce, other author", nonce="n"),
                               new(a, owner, "y")])
    assert [s.created for s in stored] == [True, False, True, True]
    assert stored[1].message == stored[0].message
    assert stored[1].message.content == "x"
    assert stored[2].message.id != stored[0].message.id
    assert [s.message.seq for s in stored] == [1, 1, 2, 3]
    assert await last_seq(db, a.id) == 3
    assert await stored_seqs(db, a.id) == [1, 2, 3]


async def test_nonce_retry_in_a_later_batch_returns_the_stored_message(
        db: Database, world: dict[str, Any]) -> None:
    owner, a, b = world["owner"], world["a"], world["b"]
    first = (await insert(db, [new(a, owner, "once", nonce="retry-me")]))[0]
    async with db.connection() as conn:
        await reactions_db.add_reaction(conn, first.message.id, owner.id, "👍", max_distinct=5)
    # The retry names another channel even; the nonce alone decides.
    again = await insert(db, [new(b, owner, "twice", nonce="retry-me"), new(b, owner, "fresh")])
    assert again[0].created is False
    assert again[0].message.id == first.message.id and again[0].message.content == "once"
    assert [(r.emoji, r.count) for r in again[0].message.reactions] == [("👍", 1)]
    assert again[1].created is True and again[1].message.seq == 1
    assert await last_seq(db, a.id) == 1 and await last_seq(db, b.id) == 1
    async with db.connection() as conn:
        found = await messages_db.find_by_nonce(conn, owner.id, "retry-me")
        assert found is not None and found.id == first.message.id
        assert await messages_db.find_by_nonce(conn, owner.id, "never") is None


async def test_batch_of_only_duplicates_touches_no_channel(
        db: Database, world: dict[str, Any]) -> None:
    owner, a = world["owner"], world["a"]
    await insert(db, [new(a, owner, nonce="k")])
    stored = await insert(db, [new(a, owner, nonce="k"), new(a, owner, nonce="k")])
    assert [s.created for s in stored] == [False, False]
    assert await last_seq(db, a.id) == 1


async def test_large_batch_takes_a_handful_of_round_trips(
        db: Database, world: dict[str, Any]) -> None:
    owner, other, a, b = world["owner"], world["other"], world["a"], world["b"]
    batch = [new(a if i % 3 else b, owner if i % 2 else other, f"m{i}", nonce=f"n{i}",
                 mention_user_ids=[i], mention_roles=["member"] if i % 5 == 0 else [])
             for i in range(500)]
    async with db.transaction("test") as conn:
        async with count_queries(conn) as queries:
            stored = await insert_batch_txn(conn, batch)
    assert len(stored) == 500 and all(s.created for s in stored)
    assert len(queries) <= 5, queries
    assert [s.message.content for s in stored] == [f"m{i}" for i in range(500)]
    assert stored[5].message.mention_roles == [Role.MEMBER]
    assert await stored_seqs(db, a.id) == list(range(1, 334))
    assert await stored_seqs(db, b.id) == list(range(1, 168))


async def test_unknown_channel_fails_the_batch_and_consumes_nothing(
        db: Database, world: dict[str, Any]) -> None:
    owner, a = world["owner"], world["a"]
    with pytest.raises(LookupError):
        await insert(db, [new(a, owner), new(10**9, owner)])
    assert await last_seq(db, a.id) == 0


async def test_concurrent_batches_on_the_same_channels_are_gap_free(
        db: Database, world: dict[str, Any]) -> None:
    owner, other, a, b = world["owner"], world["other"], world["a"], world["b"]
    batches = []
    for k in range(12):
        # Channel order inside a batch alternates, to provoke lock-order deadlocks.
        first, second = (a, b) if k % 2 else (b, a)
        batches.append([new(first if i % 2 else second, owner if k % 3 else other,
                            f"{k}:{i}", nonce=f"{k}:{i}") for i in range(20)])

    results = await asyncio.gather(*(insert(db, batch) for batch in batches))
    for channel in (a, b):
        seqs = sorted(s.message.seq for r in results for s in r
                      if s.message.channel_id == channel.id)
        assert seqs == list(range(1, 121)), channel
        assert await stored_seqs(db, channel.id) == list(range(1, 121))
        assert await last_seq(db, channel.id) == 120
    # Within a batch, a channel's messages keep their input order.
    for result in results:
        per_channel: dict[int, list[int]] = {}
        for s in result:
            per_channel.setdefault(s.message.channel_id, []).append(s.message.seq)
        for seqs in per_channel.values():
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_racing_nonce_raises_unique_violation_and_retry_finds_it(
        db: Database, world: dict[str, Any]) -> None:
    """Two transactions store one nonce: the loser's insert fails whole (the caller
    retries), and no seq is lost."""
    owner, a = world["owner"], world["a"]
    async with db.connection() as c1, db.connection() as c2:
        t1 = c1.transaction()
        await t1.start()
        await insert_batch_txn(c1, [new(a, owner, "winner", nonce="race")])
        t2 = c2.transaction()
        await t2.start()
        loser = asyncio.create_task(insert_batch_txn(c2, [new(a, owner, "loser", nonce="race")]))
        await asyncio.sleep(0.2)  # c2 now waits on c1's channel row lock
        await t1.commit()
        with pytest.raises(asyncpg.UniqueViolationError):
            await loser
        await t2.rollback()
    retried = await insert(db, [new(a, owner, "loser", nonce="race")])
    assert retried[0].created is False and retried[0].message.content == "winner"
    assert await stored_seqs(db, a.id) == [1] and await last_seq(db, a.id) == 1


# --------------------------------------------------------------------------- history


async def _ten_messages(db: Database, world: dict[str, Any]) -> list[int]:
    stored = await insert(db, [new(world["a"], world["owner"], f"m{i}") for i in range(1, 11)])
    async with db.connection() as conn:
        deleted = await messages_db.delete_message(conn, stored[4].message.id)  # seq 5
    assert deleted is not None and deleted.deleted
    return [s.message.id for s in stored]


async def page(db: Database, channel: Channel, **kwargs: Any) -> tuple[list[int], bool]:
    args: dict[str, Any] = {"before": None, "after": None, "around": None, "limit": 50}
    args.update(kwargs)
    async with db.connection() as conn:
        messages, has_more = await messages_db.history(conn, channel.id, **args)
    return [m.seq for m in messages], has_more


async def test_history_pages_by_seq_and_skips_deleted(db: Database,
                                                      world: dict[str, Any]) -> None:
    a = world["a"]
    await _ten_messages(db, world)
    assert await page(db, a) == ([1, 2, 3, 4, 6, 7, 8, 9, 10], False)
    assert await page(db, a, limit=3) == ([8, 9, 10], True)
    assert await page(db, a, before=8, limit=3) == ([4, 6, 7], True)
    assert await page(db, a, before=4, limit=3) == ([1, 2, 3], False)
    assert await page(db, a, before=1, limit=3) == ([], False)
    assert await page(db, a, after=0, limit=4) == ([1, 2, 3, 4], True)
    assert await page(db, a, after=4, limit=4) == ([6, 7, 8, 9], True)
    assert await page(db, a, after=7, limit=5) == ([8, 9, 10], False)
    assert await page(db, a, after=10, limit=5) == ([], False)
    # around: limit // 2 before, the rest at or after.
    assert await page(db, a, around=7, limit=4) == ([4, 6, 7, 8], True)
    assert await page(db, a, around=2, limit=4) == ([1, 2, 3], True)  # no filling up
    assert await page(db, a, around=9, limit=4) == ([7, 8, 9, 10], True)  # older remain
    assert await page(db, a, around=5, limit=20) == ([1, 2, 3, 4, 6, 7, 8, 9, 10], False)
    # The other channel is untouched.
    assert await page(db, world["b"]) == ([], False)


async def test_history_includes_reaction_counts_in_one_extra_query(
        db: Database, world: dict[str, Any]) -> None:
    owner, other, a = world["owner"], world["other"], world["a"]
    ids = await _ten_messages(db, world)
    async with db.connection() as conn:
        for user in (owner, other):
            await reactions_db.add_reaction(conn, ids[8], user.id, "🔥", max_distinct=5)
        await reactions_db.add_reaction(conn, ids[8], owner.id, "✅", max_distinct=5)
        await reactions_db.add_reaction(conn, ids[9], other.id, "✅", max_distinct=5)
        async with count_queries(conn) as queries:
            messages, _ = await messages_db.history(conn, a.id, before=None, after=None,
                                                    around=None, limit=3)
    assert len(queries) <= 2
    counts = {m.seq: [(r.emoji, r.count) for r in m.reactions] for m in messages}
    assert counts == {8: [], 9: [("🔥", 2), ("✅", 1)], 10: [("✅", 1)]}


async def test_edit_and_delete(db: Database, world: dict[str, Any]) -> None:
    owner, a = world["owner"], world["a"]
    files = [Attachment(url="https://x/f.txt", filename="f.txt")]
    message = (await insert(db, [new(a, owner, "draft", mention_everyone=True,
                                     attachments=files)]))[0].message
    async with db.connection() as conn:
        edited = await messages_db.edit_message(conn, message.id, "final <@&admin>", [5],
                                                ["admin"], False)
        assert edited is not None
        assert edited.content == "final <@&admin>" and edited.edited_at is not None
        assert edited.mention_user_ids == [5] and edited.mention_roles == [Role.ADMIN]
        assert edited.mention_everyone is False and edited.attachments == files
        assert edited.seq == message.seq and edited.created_at == message.created_at

        deleted = await messages_db.delete_message(conn, message.id)
        assert deleted is not None and deleted.deleted
        assert deleted.content == "" and deleted.attachments == [] and deleted.seq == 1
        assert await messages_db.edit_message(conn, message.id, "zombie", [], [], False) is None
        assert await messages_db.delete_message(conn, message.id) is None
        again = await messages_db.get_message(conn, message.id)
        assert again is not None and again.deleted and again.content == ""
        assert await messages_db.edit_message(conn, 10**9, "x", [], [], False) is None
        assert await messages_db.get_message(conn, 10**9) is None
    assert await last_seq(db, a.id) == 1  # deleting leaves no hole to refill


# ------------------------------------------------------------------------- reactions


async def test_reaction_counts_duplicates_and_distinct_limit(
        db: Database, world: dict[str, Any]) -> None:
    owner, other, a = world["owner"], world["other"], world["a"]
    third = await make_user(db, "third")
    message = (await insert(db, [new(a, owner)]))[0].message
    async with db.connection() as conn:
        add = reactions_db.add_reaction
        assert await add(conn, message.id, owner.id, "👍", max_distinct=2) == (1, True)
        assert await add(conn, message.id, other.id, "👍", max_distinct=2) == (2, True)
        assert await add(conn, message.id, other.id, "👍", max_distinct=2) == (2, False)
        assert await add(conn, message.id, owner.id, "🎉", max_distinct=2) == (1, True)
        # A third distinct emoji is refused; more of an existing one is fine.
        assert await add(conn, message.id, owner.id, "🚀", max_distinct=2) is None
        assert await add(conn, message.id, third.id, "🎉", max_distinct=2) == (2, True)

        fetched = await messages_db.get_message(conn, message.id)
        assert fetched is not None
        assert {(r.emoji, r.count) for r in fetched.reactions} == {("👍", 2), ("🎉", 2)}

        users = await reactions_db.reaction_users(conn, message.id, "👍", 10)
        assert users == [owner, other]
        assert await reactions_db.reaction_users(conn, message.id, "👍", 1) == [owner]
        assert await reactions_db.reaction_users(conn, message.id, "🚀", 10) == []

        assert await reactions_db.remove_reaction(conn, message.id, owner.id, "👍") == (True, 1)
        assert await reactions_db.remove_reaction(conn, message.id, owner.id, "👍") == (False, 1)
        assert await reactions_db.remove_reaction(conn, message.id, other.id, "👍") == (True, 0)
        # With 👍 gone there is room for another distinct emoji.
        assert await add(conn, message.id, owner.id, "🚀", max_distinct=2) == (1, True)


# ------------------------------------------------------------------------ read state


async def test_mark_read_is_monotonic_and_clamped(db: Database, world: dict[str, Any]) -> None:
    owner, a = world["owner"], world["a"]
    await insert(db, [new(a, owner, f"m{i}") for i in range(5)])
    async with db.connection() as conn:
        assert await read_states_db.mark_read(conn, owner.id, a.id, 3) == 3
        assert await read_states_db.mark_read(conn, owner.id, a.id, 1) == 3
        assert await read_states_db.mark_read(conn, owner.id, a.id, 999) == 5
        state = await read_states_db.read_state(conn, owner.id, a.id, 5, "owner")
        assert state.last_read_seq == 5 and state.unread_count == 0
    await insert(db, [new(a, owner, "more")])
    async with db.connection() as conn:
        assert await read_states_db.mark_read(conn, owner.id, a.id, 999) == 6
        other_user = await read_states_db.mark_read(conn, world["other"].id, a.id, 2)
        assert other_user == 2


async def test_read_states_count_unread_and_mentions_in_one_query(
        db: Database, world: dict[str, Any]) -> None:
    owner, other, a, b = world["owner"], world["other"], world["a"], world["b"]
    empty = await make_channel(db, world["community"], owner, "empty")
    await insert(db, [
        new(a, owner, "1 names other", mention_user_ids=[other.id]),          # before marker
        new(a, owner, "2 plain"),                                             # before marker
        new(a, owner, "3 names other", mention_user_ids=[owner.id, other.id]),
        new(a, owner, "4 everyone", mention_everyone=True),
        new(a, owner, "5 admins", mention_roles=["admin"]),
        new(a, owner, "6 members", mention_roles=["member"]),
        new(a, owner, "7 someone else", mention_user_ids=[owner.id]),
        new(a, owner, "8 other and members", mention_user_ids=[other.id],
            mention_roles=["member"], mention_everyone=True),                  # counts once
        new(a, owner, "9 deleted mention", mention_user_ids=[other.id]),
        new(b, owner, "b1 names other", mention_user_ids=[other.id]),
        new(b, owner, "b2 plain"),
    ])
    async with db.connection() as conn:
        ninth = await conn.fetchval("SELECT id FROM messages WHERE channel_id = $1 AND seq = 9",
                                    a.id)
        await messages_db.delete_message(conn, ninth)
        await read_states_db.mark_read(conn, other.id, a.id, 2)
        channels = [(a.id, 9), (b.id, 2), (empty.id, 0)]
        async with count_queries(conn) as queries:
            states = await read_states_db.read_states(
                conn, other.id, channels, {a.id: "member", b.id: "member", empty.id: None})
        assert len(queries) == 1
        by_channel = {s.channel_id: s for s in states}
        assert set(by_channel) == {a.id, b.id, empty.id}
        # Unread counts seqs, deleted ones included (the marker only moves by seq).
        sa = by_channel[a.id]
        assert (sa.last_read_seq, sa.unread_count, sa.mention_count) == (2, 7, 4)  # 3,4,6,8
        sb = by_channel[b.id]
        assert (sb.last_read_seq, sb.unread_count, sb.mention_count) == (0, 2, 1)
        se = by_channel[empty.id]
        assert (se.last_read_seq, se.unread_count, se.mention_count) == (0, 0, 0)

        as_admin = await read_states_db.read_state(conn, other.id, a.id, 9, "admin")
        assert as_admin.mention_count == 4  # 3, 4, 5, 8
        no_role = await read_states_db.read_state(conn, other.id, a.id, 9, None)
        assert no_role.mention_count == 3  # 3, 4, 8
        assert await read_states_db.read_states(conn, other.id, []) == []


# ----------------------------------------------------------------------- communities


async def test_community_membership_and_roles(db: Database) -> None:
    owner = await make_user(db, "boss")
    users = [await make_user(db, f"member{i}") for i in range(4)]
    community = await make_community(db, owner)
    async with db.transaction("test") as conn:
        assert await communities_db.get_community(conn, community.id) == community
        assert await communities_db.get_community(conn, 10**9) is None
        assert await communities_db.get_role(conn, community.id, owner.id) is Role.OWNER
        for user in users:
            member = await communities_db.add_member_txn(conn, community.id, user.id)
            assert member is not None and member.user == user and member.role is Role.MEMBER
        again = await communities_db.add_member_txn(conn, community.id, users[0].id, Role.ADMIN)
        assert again is None
        assert await communities_db.get_role(conn, community.id, users[0].id) is Role.MEMBER

    async with db.connection() as conn:
        assert await communities_db.member_count(conn, community.id) == 5
        everyone = sorted([owner.id, *(u.id for u in users)])
        assert await communities_db.member_ids(conn, community.id) == everyone
        first = await communities_db.list_members(conn, community.id, limit=2)
        assert [m.user.id for m in first] == everyone[:2]
        rest = await communities_db.list_members(conn, community.id,
                                                 after_user_id=first[-1].user.id, limit=10)
        assert [m.user.id for m in rest] == everyone[2:]

        promoted = await communities_db.set_role(conn, community.id, users[1].id, Role.MODERATOR)
        assert promoted is not None and promoted.role is Role.MODERATOR
        fetched = await communities_db.get_member(conn, community.id, users[1].id)
        assert fetched == promoted
        assert await communities_db.set_role(conn, community.id, 10**9, Role.ADMIN) is None

        assert await communities_db.remove_member(conn, community.id, users[2].id) is True
        assert await communities_db.remove_member(conn, community.id, users[2].id) is False
        assert await communities_db.get_role(conn, community.id, users[2].id) is None
        assert await communities_db.get_member(conn, community.id, users[2].id) is None
        assert await communities_db.member_count(conn, community.id) == 4

        second = await make_community(db, users[1])
        listed = await communities_db.memberships(conn, users[1].id)
        assert listed == [(community, Role.MODERATOR), (second, Role.OWNER)]
        assert await communities_db.memberships(conn, users[2].id) == []


async def test_invite_uses_and_expiry(db: Database, world: dict[str, Any]) -> None:
    owner, community = world["owner"], world["community"]
    async with db.connection() as conn:
        made = await communities_db.create_invite(conn, community_id=community.id,
                                                  created_by=owner.id, code="two",
                                                  max_uses=2, expires_in_s=None)
        assert made == "two"
        await communities_db.create_invite(conn, community_id=community.id, created_by=owner.id,
                                           code="forever", max_uses=None, expires_in_s=None)
        await communities_db.create_invite(conn, community_id=community.id, created_by=owner.id,
                                           code="hour", max_uses=None, expires_in_s=3600)
        await communities_db.create_invite(conn, community_id=community.id, created_by=owner.id,
                                           code="stale", max_uses=None, expires_in_s=3600)
        await conn.execute("UPDATE invites SET expires_at = now() - interval '1 second' "
                           "WHERE code = 'stale'")
        expiry = await conn.fetchval(
            "SELECT extract(epoch FROM expires_at - created_at) FROM invites WHERE code='hour'")
        assert 3599 <= expiry <= 3601

        redeem = communities_db.redeem_invite_txn
        assert await redeem(conn, "two") == community.id
        assert await redeem(conn, "two") == community.id
        assert await redeem(conn, "two") is None
        assert await conn.fetchval("SELECT uses FROM invites WHERE code = 'two'") == 2
        assert await redeem(conn, "stale") is None
        assert await redeem(conn, "hour") == community.id
        assert await redeem(conn, "nope") is None
        for _ in range(5):
            assert await redeem(conn, "forever") == community.id


async def test_concurrent_redemptions_never_exceed_max_uses(
        db: Database, world: dict[str, Any]) -> None:
    owner, community = world["owner"], world["community"]
    async with db.connection() as conn:
        await communities_db.create_invite(conn, community_id=community.id, created_by=owner.id,
                                           code="last", max_uses=2, expires_in_s=None)

    async def attempt() -> int | None:
        async with db.transaction("test") as conn:
            result = await communities_db.redeem_invite_txn(conn, "last")
            await asyncio.sleep(0.05)  # hold the row lock a moment
            return result

    results = await asyncio.gather(*(attempt() for _ in range(5)))
    assert sorted(results, key=lambda r: r is None) == [community.id] * 2 + [None] * 3


async def test_instance_settings_round_trip(db: Database) -> None:
    async with db.connection() as conn:
        assert await communities_db.get_instance_setting(conn, "starter") is None
        await communities_db.set_instance_setting(conn, "starter", 42)
        assert await communities_db.get_instance_setting(conn, "starter") == 42
        await communities_db.set_instance_setting(conn, "starter", {"id": 7, "on": [True]})
        assert await communities_db.get_instance_setting(conn, "starter") == {"id": 7,
                                                                              "on": [True]}


# -------------------------------------------------------------------------- channels


async def test_channels_positions_threads_and_membership(
        db: Database, world: dict[str, Any]) -> None:
    owner, other, community, a, b = (world[k] for k in ("owner", "other", "community", "a", "b"))
    assert (a.position, b.position) == (0, 1)
    secret = await make_channel(db, community, owner, "secret", private=True,
                                member_ids=[owner.id])
    assert secret.private and secret.position == 2 and secret.member_ids == []
    root = (await insert(db, [new(a, owner, "let's discuss")]))[0].message
    async with db.transaction("test") as conn:
        thread = await channels_db.create_channel_txn(
            conn, kind=ChannelKind.THREAD, name="discussion", community_id=community.id,
            created_by=owner.id, parent_id=a.id, thread_root_message_id=root.id,
            member_ids=[owner.id])
    assert thread.kind is ChannelKind.THREAD and thread.parent_id == a.id
    assert thread.thread_root_message_id == root.id and thread.member_ids == [owner.id]

    async with db.connection() as conn:
        root_now = await messages_db.get_message(conn, root.id)
        assert root_now is not None and root_now.thread_id == thread.id
        assert await channels_db.get_channel(conn, thread.id) == thread
        assert await channels_db.get_channel(conn, 10**9) is None

        listed = await channels_db.community_channels(conn, community.id)
        assert [c.id for c in listed] == [a.id, b.id, secret.id, thread.id]

        assert await channels_db.add_channel_member(conn, thread.id, other.id) is True
        assert await channels_db.add_channel_member(conn, thread.id, other.id) is False
        assert await channels_db.is_channel_member(conn, thread.id, other.id) is True
        assert await channels_db.channel_member_ids(conn, thread.id) == sorted(
            [owner.id, other.id])
        fetched = await channels_db.get_channel(conn, thread.id)
        assert fetched is not None and fetched.member_ids == sorted([owner.id, other.id])
        assert await channels_db.private_channel_ids_for_user(conn, owner.id) == {secret.id,
                                                                                 thread.id}
        assert await channels_db.remove_channel_member(conn, thread.id, other.id) is True
        assert await channels_db.remove_channel_member(conn, thread.id, other.id) is False
        assert await channels_db.is_channel_member(conn, thread.id, other.id) is False

        archived = await channels_db.set_archived(conn, thread.id, True)
        assert archived is not None and archived.archived
        listed = await channels_db.community_channels(conn, community.id)
        assert thread.id not in [c.id for c in listed]
        assert await channels_db.set_archived(conn, 10**9, True) is None
        unarchived = await channels_db.set_archived(conn, thread.id, False)
        assert unarchived is not None and not unarchived.archived


async def test_dm_get_or_create_is_idempotent(db: Database) -> None:
    alice, bob, carol = [await make_user(db, n) for n in ("alice", "bob", "carol")]
    async with db.transaction("test") as conn:
        dm, created = await channels_db.get_or_create_dm_txn(conn, bob.id, alice.id)
    assert created is True and dm.kind is ChannelKind.DM and dm.community_id is None
    assert dm.member_ids == sorted([alice.id, bob.id])
    async with db.transaction("test") as conn:
        again, created = await channels_db.get_or_create_dm_txn(conn, alice.id, bob.id)
    assert created is False and again == dm

    async def open_dm() -> tuple[Channel, bool]:
        async with db.transaction("test") as conn:
            return await channels_db.get_or_create_dm_txn(conn, alice.id, carol.id)

    results = await asyncio.gather(*(open_dm() for _ in range(4)))
    assert len({channel.id for channel, _ in results}) == 1
    assert sum(created for _, created in results) == 1

    async with db.transaction("test") as conn:
        group = await channels_db.create_channel_txn(
            conn, kind=ChannelKind.GROUP_DM, name="", community_id=None, created_by=alice.id,
            member_ids=[alice.id, bob.id, carol.id])
        direct = await channels_db.direct_channels(conn, alice.id)
        assert [c.id for c in direct] == [dm.id, results[0][0].id, group.id]
        assert [c.id for c in await channels_db.direct_channels(conn, bob.id)] == [dm.id,
                                                                                  group.id]
        assert group.member_ids == sorted([alice.id, bob.id, carol.id])
