"""The group-commit writer: batching, acknowledgement after commit, order, isolation."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from persistence.database import Database
from protocol.chat import MessageDeleted, MessageUpdated
from protocol.codes import ErrorCode
from protocol.limits import Limits
from protocol.models import Message
from rooms.chat.chat import ChatService, CommittedPublisher
from rooms.chat.group_commit import GroupCommitWriter
from rooms.errors import RequestError
from rooms.realtime.bus import InProcessBus, channel_topic
from rooms.realtime.hub import Hub
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


class HeldBus(InProcessBus):
    """Records what reaches it, in order; the publish of a ``message_create`` waits for
    ``release`` (Redis slow), everything else goes through at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.holding = asyncio.Event()
        self.seen: list[tuple[str, str]] = []

    async def publish(self, topic: str, payload: bytes) -> None:
        event = msgspec.json.decode(payload[17:])
        kind = event["t"]
        if kind == "message_create":
            self.holding.set()
            await self.release.wait()
        self.seen.append((topic, kind))
        await super().publish(topic, payload)


async def test_nothing_overtakes_a_create_acknowledged_early(db: Database) -> None:
    owner = await make_user(db)
    community = await make_community(db, owner)
    channel = await make_channel(db, community, owner)
    topic = channel_topic(channel.id)
    bus = HeldBus()
    hub = Hub(bus)
    writer = GroupCommitWriter(db, CommittedPublisher(hub), ack_after_s=0.01)
    ChatService(db, hub, writer, Limits())  # wires the hub to the writer
    runner = asyncio.create_task(writer.run())
    try:
        message = await writer.submit(new(channel, owner, "hi"))
        assert bus.holding.is_set() and bus.seen == []  # acknowledged by the timer
        edit = asyncio.create_task(hub.publish(topic, MessageUpdated(
            message=msgspec.structs.replace(message, content="edited"))))
        delete = asyncio.create_task(hub.publish_many([(topic, MessageDeleted(
            channel_id=channel.id, message_id=message.id, seq=message.seq))]))
        elsewhere = channel_topic(channel.id + 1)
        # A task started after them runs after their first steps (tasks start in order).
        await asyncio.create_task(hub.publish(elsewhere, MessageUpdated(message=message)))
        # Another channel is not held; the edit and the delete had their turn and wait.
        assert bus.seen == [(elsewhere, "message_update")]
        assert not edit.done() and not delete.done()
        bus.release.set()
        await asyncio.gather(edit, delete)
        assert [kind for t, kind in bus.seen if t == topic] == [
            "message_create", "message_update", "message_delete"]
        # Nothing waiting any more: straight through.
        await hub.publish(topic, MessageUpdated(message=message))
        assert bus.seen[-1] == (topic, "message_update")
    finally:
        bus.release.set()
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
