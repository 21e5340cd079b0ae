"""The domain-event outbox on a real PostgreSQL: transactional writes, subscriber
positions, the visibility horizon, failure and retention; and the core's changes
writing their events."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import asyncpg
import pytest

from persistence import outbox
from persistence.database import Database, DatabaseUnavailable
from protocol.domain_events import (
    LoggedIn,
    MemberJoined,
    MemberLeft,
    MessageDeleted,
    MessageSent,
    ReactionAdded,
)
from rooms.realtime.outages import ThrottledLog
from tests.conftest import app_server
from tests.helpers import GatewayClient, bearer, register


def _left(n: int) -> MemberLeft:
    return MemberLeft(community_id=1, user_id=n)


async def _collect(db: Database, name: str, expect: int = 0) -> list[outbox.Delivered]:
    """Handle rounds until ``expect`` events came (or one round when 0). Polls: the
    horizon is cluster-wide, so any transaction still open on this PostgreSQL (another
    test run's) may hold events back for a moment."""
    seen: list[outbox.Delivered] = []

    async def handle(conn: asyncpg.Connection, item: outbox.Delivered) -> None:
        seen.append(item)

    deadline = time.monotonic() + 20
    await outbox.handle_batch(db, name, handle)
    while len(seen) < expect:
        assert time.monotonic() < deadline, seen
        await asyncio.sleep(0.05)
        await outbox.handle_batch(db, name, handle)
    return seen


async def test_a_rolled_back_event_is_never_delivered(db: Database) -> None:
    async with db.transaction("t") as conn:
        await outbox.register_subscriber(conn, "t.sub")
    with pytest.raises(RuntimeError):
        async with db.transaction("t") as conn:
            await outbox.append_txn(conn, [_left(1)])
            raise RuntimeError("the change fails")
    async with db.transaction("t") as conn:
        await outbox.append_txn(conn, [_left(2), _left(3)])
    seen = await _collect(db, "t.sub", 2)
    assert [d.event for d in seen] == [_left(2), _left(3)]
    assert len({d.event_id for d in seen}) == 2
    assert await _collect(db, "t.sub") == []  # the position moved past them


async def test_each_subscriber_has_its_own_position(db: Database) -> None:
    async with db.transaction("t") as conn:
        await outbox.register_subscriber(conn, "a")
        await outbox.append_txn(conn, [_left(1)])
    assert [d.event for d in await _collect(db, "a", 1)] == [_left(1)]
    async with db.transaction("t") as conn:
        await outbox.register_subscriber(conn, "b")  # a newcomer reads what is kept
    assert [d.event for d in await _collect(db, "b", 1)] == [_left(1)]


async def test_an_older_open_transaction_holds_back_newer_events(db: Database) -> None:
    """A row id alone is not an order: a slow transaction can commit a smaller id after
    a faster one was consumed. The reader waits for every older transaction instead."""
    async with db.transaction("t") as conn:
        await outbox.register_subscriber(conn, "h")
    async with db.connection() as slow:
        tx = slow.transaction()
        await tx.start()
        await outbox.append_txn(slow, [_left(1)])  # older xid, not committed yet
        async with db.transaction("t") as conn:
            await outbox.append_txn(conn, [_left(2)])  # newer, committed
        assert await _collect(db, "h") == []  # would skip #1 forever if delivered now
        await tx.commit()
    assert [d.event for d in await _collect(db, "h", 2)] == [_left(1), _left(2)]


async def test_a_failing_handler_rolls_back_its_writes_and_its_position(db: Database) -> None:
    async with db.transaction("t") as conn:
        await outbox.register_subscriber(conn, "f")
        await outbox.append_txn(conn, [_left(1), _left(2)])
        await conn.execute("CREATE TABLE handled (user_id bigint)")
    calls = 0

    async def flaky(conn: asyncpg.Connection, item: outbox.Delivered) -> None:
        nonlocal calls
        calls += 1
        assert isinstance(item.event, MemberLeft)
        await conn.execute("INSERT INTO handled VALUES ($1)", item.event.user_id)
        if calls == 2:
            raise RuntimeError("crash in the middle of the batch")

    deadline = time.monotonic() + 20
    with pytest.raises(RuntimeError):
        while not await outbox.handle_batch(db, "f", flaky):  # [] while held back
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM handled") == 0
    while not (done := await outbox.handle_batch(db, "f", flaky)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert [d.event for d in done] == [_left(1), _left(2)]
    async with db.connection() as conn:
        assert sorted(r[0] for r in await conn.fetch("SELECT user_id FROM handled")) == [1, 2]


async def test_retention_deletes_only_old_events_every_subscriber_consumed(db: Database) -> None:
    async with db.transaction("t") as conn:
        await outbox.register_subscriber(conn, "fast")
        await outbox.register_subscriber(conn, "slow")
        await outbox.append_txn(conn, [_left(1), _left(2)])
    await _collect(db, "fast", 2)
    async with db.transaction("t") as conn:
        assert await outbox.purge(conn, 0) == 0  # "slow" has not read them
        assert await outbox.purge(conn, 1) == 0
    await _collect(db, "slow", 2)
    async with db.transaction("t") as conn:
        assert await outbox.purge(conn, 1) == 0  # consumed, but younger than a day
        assert await outbox.purge(conn, 0) == 2


async def _listener_pid(db: Database, other_than: int | None = None,
                        timeout_s: float = 10.0) -> int:
    """The backend pid of the notifier's LISTEN connection, once there is one (other
    than ``other_than``): waits for the condition, not for a time."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with db.connection() as conn:
            pids = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()")
        found = [r["pid"] for r in pids if r["pid"] != other_than]
        if len(found) == 1:
            return int(found[0])
        assert time.monotonic() < deadline, f"no LISTEN connection: {pids}"
        await asyncio.sleep(0.05)


async def test_a_consumer_wakes_on_notify(db: Database) -> None:
    seen: list[outbox.Delivered] = []

    async def handle(conn: asyncpg.Connection, item: outbox.Delivered) -> None:
        seen.append(item)

    notifier = outbox.OutboxNotifier(db, retry_s=0.2)
    consumer = outbox.Consumer(db, "w", handle, notifier=notifier, poll_s=30.0)
    tasks = [asyncio.create_task(notifier.run()), asyncio.create_task(consumer.run())]
    try:
        deadline = time.monotonic() + 10
        while True:  # registered and listening
            async with db.connection() as conn:
                if "w" in await outbox.positions(conn):
                    break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        first = await _listener_pid(db)
        async with db.transaction("t") as conn:
            await outbox.append_txn(conn, [_left(9)])
        started = time.monotonic()
        while not seen:  # far sooner than the 30 s poll
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.02)
        assert [d.event for d in seen] == [_left(9)]
        # the listening connection dies: the notifier listens again on a new one
        async with db.connection() as conn:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", first)
        assert await _listener_pid(db, other_than=first) != first  # listening again
        async with db.transaction("t") as conn:
            await outbox.append_txn(conn, [_left(10)])
        started = time.monotonic()
        while len(seen) < 2:
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.02)
        assert seen[1].event == _left(10)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_core_writes_its_events(database_url: str) -> None:
    """Registering, logging in, creating a community, posting and reacting each leave
    their event, committed with the change."""
    async with app_server(database_url, starter_community=False) as server, \
            aiohttp.ClientSession() as http:
        owner = await register(http, server.url, password="correct horse battery")
        async with http.post(f"{server.url}/api/v1/auth/login", json={
                "username": owner["user"]["username"],
                "password": "correct horse battery"}) as reply:
            assert reply.status == 200, await reply.text()
        token = owner["access_token"]
        async with http.post(f"{server.url}/api/v1/communities", json={"name": "ev"},
                             headers=bearer(token)) as reply:
            created = await reply.json()
            assert reply.status == 201, created
        community_id = created["community"]["id"]
        channel_id = created["channels"][0]["id"]
        client = await GatewayClient.identified(http, server.ws_url, token)
        sent = await client.ok("send_message", channel_id=channel_id, content="hi", nonce="n1")
        message_id = sent["message"]["id"]
        await client.ok("add_reaction", channel_id=channel_id, message_id=message_id,
                        emoji="👍")
        await client.ok("delete_message", channel_id=channel_id, message_id=message_id)
        await client.close()
    db = await Database.connect(database_url, min_size=1, max_size=1)
    try:
        async with db.transaction("t") as conn:
            await outbox.register_subscriber(conn, "check")
        events = [d.event for d in await _collect(db, "check", 5)]
    finally:
        await db.close()
    user_id = owner["user"]["id"]
    assert LoggedIn(user_id=user_id) in events
    assert any(isinstance(e, MemberJoined) and e.community_id == community_id
               and e.user_id == user_id for e in events)
    assert any(isinstance(e, MessageSent) and e.message_id == message_id
               and e.community_id == community_id and e.author_id == user_id
               for e in events)
    assert ReactionAdded(message_id=message_id, channel_id=channel_id,
                         community_id=community_id, user_id=user_id, emoji="👍") in events
    assert MessageDeleted(message_id=message_id, channel_id=channel_id,
                          community_id=community_id, author_id=user_id) in events


async def test_voice_room_joins_and_leaves_become_events(db: Database) -> None:
    from persistence.accounts import create_user
    from persistence.channels import create_channel_txn
    from persistence.communities import create_community_txn
    from protocol.domain_events import AttendanceChange, VoiceAttended
    from protocol.models import ChannelKind
    from rooms.voice.voice_attendance import VoiceAttendanceRecorder

    async with db.transaction("t") as conn:
        user = await create_user(conn, username="v1", display_name="v1", password_hash=None)
        community = await create_community_txn(conn, name="v", owner_id=user.id)
        room = await create_channel_txn(conn, kind=ChannelKind.VOICE, name="room",
                                        community_id=community.id, created_by=user.id)
        await outbox.register_subscriber(conn, "v")
    await _collect(db, "v", 1)  # the owner's member_joined
    recorder = VoiceAttendanceRecorder(db, flush_every_s=0.01)
    task = asyncio.create_task(recorder.run())
    try:
        recorder.joined(room.id, user.id, 1_700_000_000.5)
        recorder.left(room.id, user.id, 1_700_000_060.0)
        recorder.left(10**12, user.id, 1_700_000_060.0)  # a room since deleted: skipped
        got = [d.event for d in await _collect(db, "v", 2)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert got == [
        VoiceAttended(channel_id=room.id, community_id=community.id, user_id=user.id,
                      change=AttendanceChange.JOINED, at=1_700_000_000_500),
        VoiceAttended(channel_id=room.id, community_id=community.id, user_id=user.id,
                      change=AttendanceChange.LEFT, at=1_700_000_060_000)]


async def test_message_events_carry_the_channels_community_or_null(db: Database) -> None:
    from persistence.accounts import create_user
    from persistence.channels import create_channel_txn
    from persistence.communities import create_community_txn
    from protocol.models import ChannelKind, Message

    async with db.transaction("t") as conn:
        user = await create_user(conn, username="m1", display_name="m1", password_hash=None)
        community = await create_community_txn(conn, name="m", owner_id=user.id)
        text = await create_channel_txn(conn, kind=ChannelKind.TEXT, name="t",
                                        community_id=community.id, created_by=user.id)
        dm = await create_channel_txn(conn, kind=ChannelKind.DM, name="", community_id=None,
                                      created_by=user.id, member_ids=[user.id])
        await outbox.register_subscriber(conn, "m")
    await _collect(db, "m", 1)
    messages = [Message(id=10 + i, channel_id=ch, seq=1, author=user, content="x",
                        created_at=5, reply_to_id=None) for i, ch in enumerate((text.id, dm.id))]
    async with db.transaction("t") as conn:
        await outbox.append_messages_txn(conn, messages)
    got = [d.event for d in await _collect(db, "m", 2)]
    assert got == [
        MessageSent(message_id=10, channel_id=text.id, community_id=community.id,
                    author_id=user.id, seq=1, at=5),
        MessageSent(message_id=11, channel_id=dm.id, community_id=None, author_id=user.id,
                    seq=1, at=5)]


async def test_a_poison_event_is_set_aside_and_the_rest_handled_once(db: Database) -> None:
    async with db.transaction("t") as conn:
        await conn.execute("CREATE TABLE handled (user_id bigint)")
        await outbox.append_txn(conn, [_left(n) for n in range(1, 6)])

    async def handle(conn: asyncpg.Connection, item: outbox.Delivered) -> None:
        assert isinstance(item.event, MemberLeft)
        await conn.execute("INSERT INTO handled VALUES ($1)", item.event.user_id)
        if item.event.user_id == 3:
            raise ValueError("cannot handle member 3")

    consumer = outbox.Consumer(db, "p", handle, backoff_s=0.01, poll_s=0.1)
    task = asyncio.create_task(consumer.run())
    try:
        deadline = time.monotonic() + 20
        while consumer.dead_lettered < 1 or consumer.handled < 4:
            assert time.monotonic() < deadline, (consumer.handled, consumer.dead_lettered)
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    async with db.connection() as conn:
        handled = sorted(r[0] for r in await conn.fetch("SELECT user_id FROM handled"))
        dead = await conn.fetch("SELECT subscriber, type, payload::text, error, attempts"
                                " FROM outbox_dead_letters")
    assert handled == [1, 2, 4, 5]  # the failed attempts rolled back their writes
    assert len(dead) == 1
    assert dead[0]["subscriber"] == "p" and dead[0]["type"] == "member_left"
    assert '"user_id": 3' in dead[0]["payload"]
    assert "cannot handle member 3" in dead[0]["error"]
    assert dead[0]["attempts"] == 3


async def test_an_outage_sets_no_event_aside(db: Database) -> None:
    """PostgreSQL out of reach fails every batch the same way; with the core's failure
    log that is waited out: every event is handled once it is back, none set aside."""
    async with db.transaction("t") as conn:
        await outbox.append_txn(conn, [_left(n) for n in range(1, 4)])
    outages_left = 10  # far more than isolate_after + dead_letter_after
    seen: list[int] = []

    async def handle(conn: asyncpg.Connection, item: outbox.Delivered) -> None:
        nonlocal outages_left
        assert isinstance(item.event, MemberLeft)
        if outages_left:
            outages_left -= 1
            raise DatabaseUnavailable("PostgreSQL is restarting")
        seen.append(item.event.user_id)

    failures = ThrottledLog(logging.getLogger("test.outbox"))
    consumer = outbox.Consumer(db, "o", handle, backoff_s=0.001, poll_s=0.1,
                               failure_log=failures)
    task = asyncio.create_task(consumer.run())
    try:
        deadline = time.monotonic() + 20
        while consumer.handled < 3:
            assert time.monotonic() < deadline, (consumer.handled, outages_left)
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert seen == [1, 2, 3] and outages_left == 0
    assert consumer.dead_lettered == 0 and consumer.failures == 0
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM outbox_dead_letters") == 0
