"""The bus: how one gateway process tells the others (and itself) about an event.

A process publishes an encoded event to a *topic* (``ch.<channel id>``, ``u.<user id>``,
``c.<community id>``) and every process that has subscribed to the topic receives the
same bytes. A process subscribes to a topic only while it has local sessions that want
it, so the bus carries one copy per interested process, never one per connection.

The bus is a lossy wake-up, not the record: PostgreSQL is. Messages carry per-channel
sequence numbers so a receiver can detect a gap and catch up from the database.

:class:`InProcessBus` serves the single-process default. The Redis implementation
(scale-out) implements the same :class:`Bus` interface.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

BusHandler = Callable[[str, bytes], None]
"""Called with (topic, payload) for every message on a subscribed topic."""


def channel_topic(channel_id: int) -> str:
    return f"ch.{channel_id}"


def user_topic(user_id: int) -> str:
    return f"u.{user_id}"


def community_topic(community_id: int) -> str:
    return f"c.{community_id}"


def mod_topic(community_id: int) -> str:
    """The live moderator feed of a community (only sessions with MODERATE)."""
    return f"m.{community_id}"


def presence_topic(community_id: int) -> str:
    """A community's ``presence_update`` batches: separate from ``c.<id>`` so that a
    large community's presence reaches only the sessions that asked for it."""
    return f"p.{community_id}"


class Bus(abc.ABC):
    """Publish/subscribe between gateway processes. Handlers run on the event loop and
    must not block; the bus never awaits a handler."""

    def __init__(self) -> None:
        self._handler: BusHandler | None = None

    def set_handler(self, handler: BusHandler) -> None:
        self._handler = handler

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def publish(self, topic: str, payload: bytes) -> None:
        """Hand ``payload`` to every process subscribed to ``topic`` (this one too)."""

    @abc.abstractmethod
    async def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        """Publish several messages, in order, in one round-trip where the bus allows."""

    @abc.abstractmethod
    def subscribe(self, topic: str) -> None:
        """Start receiving ``topic`` (idempotent; may take effect asynchronously)."""

    @abc.abstractmethod
    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic`` (idempotent)."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the bus can carry messages (``/readyz``)."""

    async def sync_subscriptions(self, timeout: float | None = None) -> None:
        """Wait until every :meth:`subscribe` made so far is in effect: whatever is
        published from now on to those topics reaches this process. Here at once (the
        in-process bus subscribes synchronously); a bus that subscribes asynchronously
        waits for its server's confirmation and raises when it cannot get it."""
        return None


class InProcessBus(Bus):
    """The bus of a single process: publish calls the handler directly, in order."""

    def __init__(self) -> None:
        super().__init__()
        self._topics: set[str] = set()
        self.published = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._topics.clear()

    async def publish(self, topic: str, payload: bytes) -> None:
        self.published += 1
        if topic in self._topics and self._handler is not None:
            self._handler(topic, payload)

    async def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        for topic, payload in items:
            await self.publish(topic, payload)

    def subscribe(self, topic: str) -> None:
        self._topics.add(topic)

    def unsubscribe(self, topic: str) -> None:
        self._topics.discard(topic)

    async def ping(self) -> bool:
        return True
