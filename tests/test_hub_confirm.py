"""The hub confirms every channel it newly subscribes, without sockets.

``Store`` stands in for the channel's log in PostgreSQL (what ``fetch_missing`` and
``read_heads`` read): a message can be committed there without ever being published,
which is what a message committed before a new subscription was live looks like.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec
import pytest

from protocol.chat import MessageCreated, MessageUpdated
from protocol.codec import JSON
from protocol.codes import CloseCode
from protocol.frames import ServerFrame
from protocol.models import Channel, ChannelKind, Message, User
from rooms.realtime.bus import InProcessBus, channel_topic
from rooms.realtime.hub import Hub
from rooms.realtime.sessions import Session

ALICE = User(id=1, username="alice", display_name="Alice")


class RecordingSink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write(self, frame: bytes) -> None:
        self.frames.append(frame)

    def fail(self, code: CloseCode, reason: str) -> None:
        raise AssertionError(f"unexpected close {code}")

    def congested(self) -> bool:
        return False

    def kinds(self) -> list[str]:
        """Each frame's event as ``create <seq>`` or ``update <seq>``."""
        out = []
        for frame in self.frames:
            event = msgspec.json.decode(frame, type=ServerFrame).d  # type: ignore[union-attr]
            assert isinstance(event, MessageCreated | MessageUpdated)
            word = "create" if isinstance(event, MessageCreated) else "update"
            out.append(f"{word} {event.message.seq}")
        return out

    def seqs(self) -> list[int]:
        out = []
        for frame in self.frames:
            event = msgspec.json.decode(frame, type=ServerFrame).d  # type: ignore[union-attr]
            assert isinstance(event, MessageCreated)
            out.append(event.message.seq)
        return out


class Store:
    """One channel's committed messages; ``gate`` (when set) holds every fetch."""

    def __init__(self, channel_id: int) -> None:
        self.channel_id = channel_id
        self.messages: list[Message] = []
        self.gate: asyncio.Event | None = None
        self.fetches: list[tuple[int, int]] = []
        self.head_failures = 0
        self.fetch_failures = 0
        self.head_reads: list[list[int]] = []

    def commit(self) -> Message:
        seq = len(self.messages) + 1
        message = Message(id=100 + seq, channel_id=self.channel_id, seq=seq, author=ALICE,
                          content=f"m{seq}", created_at=0)
        self.messages.append(message)
        return message

    async def fetch_missing(self, channel_id: int, after: int, upto: int) -> list[Message]:
        self.fetches.append((after, upto))
        if self.fetch_failures:
            self.fetch_failures -= 1
            raise ConnectionError("PostgreSQL is away")
        if self.gate is not None:
            await self.gate.wait()
        return [m for m in self.messages if after < m.seq <= upto]

    async def read_heads(self, channel_ids: list[int]) -> dict[int, int]:
        self.head_reads.append(channel_ids)
        if self.head_failures:
            self.head_failures -= 1
            raise ConnectionError("PostgreSQL is away")
        return {c: len(self.messages) for c in channel_ids if c == self.channel_id}


class LateBus(InProcessBus):
    """Subscriptions are confirmed only once ``live`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.live = asyncio.Event()

    async def sync_subscriptions(self, timeout: float | None = None) -> None:
        await self.live.wait()


def member(channel: Channel) -> tuple[Session, RecordingSink]:
    session = Session(User(id=2, username="bob", display_name="Bob"), JSON, replay_size=100)
    session.channels[channel.id] = channel
    session.set_cursor(channel.id, channel.last_seq)
    sink = RecordingSink()
    session.sink = sink
    return session, sink


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


def channel_at(store: Store) -> Channel:
    """The channel as a snapshot read now sees it."""
    return Channel(id=store.channel_id, kind=ChannelKind.DM, name="dm", community_id=None,
                   last_seq=len(store.messages))


async def test_messages_committed_before_the_subscription_was_live_arrive() -> None:
    store = Store(7)
    store.commit()
    bus = LateBus()
    hub = Hub(bus, fetch_missing=store.fetch_missing, read_heads=store.read_heads)
    session, sink = member(channel_at(store))  # snapshot: seq 1
    hub.attach(session)
    store.commit()  # published to nobody: the subscription is not live
    store.commit()
    await asyncio.sleep(0.01)
    assert sink.frames == [] and store.fetches == []  # nothing before the bus confirms
    bus.live.set()
    await until(lambda: len(sink.frames) == 2)
    assert sink.seqs() == [2, 3]
    # Live from then on, once each.
    await hub.publish(channel_topic(7), MessageCreated(message=store.commit()))
    assert sink.seqs() == [2, 3, 4]
    assert hub.gaps_repaired == 2
    await hub.close()


async def test_a_channel_already_confirmed_is_not_read_again() -> None:
    store = Store(7)
    hub = Hub(InProcessBus(), fetch_missing=store.fetch_missing, read_heads=store.read_heads)
    first, _ = member(channel_at(store))
    hub.attach(first)
    await until(lambda: store.head_reads == [[7]])
    second, _ = member(channel_at(store))
    hub.attach(second)
    await asyncio.sleep(0.01)
    assert store.head_reads == [[7]]  # the hub already carried it, confirmed
    assert store.fetches == []  # the head was where the snapshot said: nothing to repair
    await hub.close()


async def test_confirmation_is_retried_when_postgresql_cannot_answer() -> None:
    store = Store(7)
    store.head_failures = 2
    hub = Hub(InProcessBus(), fetch_missing=store.fetch_missing, read_heads=store.read_heads)
    session, sink = member(channel_at(store))
    hub.attach(session)
    store.commit()
    await until(lambda: len(sink.frames) == 1)
    assert sink.seqs() == [1] and store.head_failures == 0
    await hub.close()


async def test_a_head_seen_while_a_repair_runs_is_reached_after_it() -> None:
    """A repair of (1, 2] is running when a check finds the head at 5: the channel is
    repaired again after it, not skipped (the last messages would wait for a next one)."""
    store = Store(7)
    store.commit()
    hub = Hub(InProcessBus(), fetch_missing=store.fetch_missing, read_heads=store.read_heads)
    session, sink = member(channel_at(store))
    hub.attach(session)
    await until(lambda: store.head_reads == [[7]])  # confirmed at seq 1
    store.commit()  # 2: lost by the bus
    store.gate = asyncio.Event()
    await hub.publish(channel_topic(7), MessageCreated(message=store.commit()))  # 3: a gap
    await until(lambda: store.fetches == [(1, 2)])
    store.commit()  # 4 and 5: committed, never published
    store.commit()
    hub.catch_up_all({7: 5})
    store.gate.set()
    await until(lambda: len(sink.frames) == 4)
    assert sink.seqs() == [2, 3, 4, 5]
    assert store.fetches == [(1, 2), (3, 5)]
    await hub.close()


async def test_a_gap_repair_waits_out_postgresql_without_spinning(
        caplog: pytest.LogCaptureFixture) -> None:
    """While the read of the missing messages fails, the channel stays held and the read
    is retried with back-off, one log line for the outage: not a new repair (and a
    traceback) per failure, found again at once in what was held."""
    store = Store(7)
    hub = Hub(InProcessBus(), fetch_missing=store.fetch_missing, read_heads=store.read_heads)
    session, sink = member(channel_at(store))
    hub.attach(session)
    await until(lambda: store.head_reads == [[7]])
    await until(lambda: not hub._confirming)
    store.commit()  # 1: lost by the bus
    store.fetch_failures = 3
    with caplog.at_level(logging.WARNING, logger="rooms.realtime.hub"):
        await hub.publish(channel_topic(7), MessageCreated(message=store.commit()))  # 2
        await until(lambda: len(store.fetches) == 2)
        # Arriving during the outage: waits behind the repair.
        await hub.publish(channel_topic(7), MessageCreated(message=store.commit()))  # 3
        assert sink.frames == []
        await until(lambda: len(sink.frames) == 3)
    assert sink.seqs() == [1, 2, 3]
    assert store.fetches == [(0, 1)] * 4  # one repair, retried; nothing else spawned
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is None
    await hub.close()


async def test_an_edit_arriving_during_a_repair_waits_behind_it() -> None:
    """While the hub repairs a gap, an edit of the message being repaired (no seq of its
    own) is held with the creates: clients never get an update for a message they do
    not have."""
    store = Store(7)
    hub = Hub(InProcessBus(), fetch_missing=store.fetch_missing, read_heads=store.read_heads)
    session, sink = member(channel_at(store))
    hub.attach(session)
    await until(lambda: store.head_reads == [[7]])
    lost = store.commit()  # 1: lost by the bus
    store.gate = asyncio.Event()
    await hub.publish(channel_topic(7), MessageCreated(message=store.commit()))  # 2: a gap
    await until(lambda: store.fetches == [(0, 1)])
    edited = msgspec.structs.replace(lost, content="edited")
    await hub.publish(channel_topic(7), MessageUpdated(message=edited))
    assert sink.frames == []  # held behind the repair, not delivered ahead of it
    store.gate.set()
    await until(lambda: len(sink.frames) == 3)
    assert sink.kinds() == ["create 1", "create 2", "update 1"]
    await hub.close()
