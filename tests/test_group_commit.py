"""The group-commit writer: batching, acknowledgement after commit, order, isolation."""

from __future__ import annotations

import asyncio

import pytest

from persistence.database import Database
from protocol.codes import ErrorCode
from protocol.models import Message
from rooms.chat.group_commit import GroupCommitWriter
from rooms.errors import RequestError
from tests.test_persistence import make_channel, make_community, make_user, new


async def test_batches_publish_in_seq_order_and_isolate_a_bad_message(db: Database) -> None:
    owner = await make_user(db)
    community = await make_community(db, owner)
    channel = await make_channel(db, community, owner)
    published: list[Message] = []

    async def on_committed(messages: list[Message]) -> None:
        published.extend(messages)

    writer = GroupCommitWriter(db, on_committed)
    runner = asyncio.create_task(writer.run())
    try:
        # Submitted together, these land in one batch; the one aimed at a channel that
        # does not exist must fail alone.
        results = await asyncio.gather(
            writer.submit(new(channel, owner, "one")),
            writer.submit(new(2**40, owner, "nowhere")),
            writer.submit(new(channel, owner, "two")),
            return_exceptions=True)
        ok = [r for r in results if isinstance(r, Message)]
        failed = [r for r in results if isinstance(r, RequestError)]
        assert [m.content for m in ok] == ["one", "two"]
        assert [m.seq for m in ok] == [1, 2]
        assert len(failed) == 1 and failed[0].code is ErrorCode.INTERNAL
        assert [m.content for m in published] == ["one", "two"]

        many = await asyncio.gather(*[writer.submit(new(channel, owner, f"m{i}"))
                                      for i in range(200)])
        assert [m.seq for m in many] == list(range(3, 203))
        assert writer.batches < 60  # natural batching: far fewer commits than messages
        assert [m.seq for m in published] == list(range(1, 203))
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def test_full_queue_refuses_fast(db: Database) -> None:
    owner = await make_user(db)
    community = await make_community(db, owner)
    channel = await make_channel(db, community, owner)

    async def on_committed(messages: list[Message]) -> None:
        return None

    writer = GroupCommitWriter(db, on_committed, max_pending=2)  # not running: queue fills
    waiting = [asyncio.create_task(writer.submit(new(channel, owner))) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(RequestError) as refused:
        await writer.submit(new(channel, owner))
    assert refused.value.code is ErrorCode.RATE_LIMITED
    runner = asyncio.create_task(writer.run())
    assert [m.seq for m in await asyncio.gather(*waiting)] == [1, 2]
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
