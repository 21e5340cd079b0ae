"""Raid signals: a spike of joins or messages in a community, told to its moderators.

Counting must not cost the send path anything: :meth:`RaidMonitor.note` bumps a local
counter (a dictionary increment). Once a second the process adds its counts to a
shared counter per (community, kind, fixed window) — Redis ``INCRBY`` when processes
share Redis, so joins spread over many nodes add up; a dictionary otherwise. The one
process whose addition carries a window's count across the threshold publishes a
``raid_signal`` to the moderator feed, so a spike is signalled once per window however
many nodes see it.

Thresholds are simple and documented (``docs/moderation.md``): by default 20 joins in
60 s, or 300 messages in 30 s, per community.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time

import redis.asyncio as aioredis

from protocol.moderation import RaidSignal, RaidSignalKind
from rooms.realtime.bus import mod_topic
from rooms.realtime.hub import Hub
from rooms.realtime.outages import ThrottledLog
from rooms.realtime.redis_client import RedisClients, blocking_client

log = logging.getLogger(__name__)


class WindowCounter(abc.ABC):
    @abc.abstractmethod
    async def add(self, items: list[tuple[str, int, int]]) -> list[int]:
        """For each (key, n, ttl_s): add n, return the new total."""

    async def close(self) -> None:
        return None


class LocalWindowCounter(WindowCounter):
    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}

    async def add(self, items: list[tuple[str, int, int]]) -> list[int]:
        now = time.monotonic()
        self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        totals = []
        for key, n, ttl in items:
            total = self._counts.get(key, (0, 0.0))[0] + n
            self._counts[key] = (total, now + ttl)
            totals.append(total)
        return totals


class RedisWindowCounter(WindowCounter):
    def __init__(self, url: str) -> None:
        self._redis: aioredis.Redis = blocking_client(url)

    async def add(self, items: list[tuple[str, int, int]]) -> list[int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, n, ttl in items:
                pipe.incrby(key, n)
                pipe.expire(key, ttl)
            replies = await pipe.execute()
        return [int(replies[i]) for i in range(0, len(replies), 2)]

    async def close(self) -> None:
        await self._redis.aclose()


class RaidMonitor:
    """Counts joins and messages per community; signals spikes to the moderator feed."""

    def __init__(self, hub: Hub, counter: WindowCounter, *, joins: int = 20,
                 joins_window_s: int = 60, messages: int = 300,
                 messages_window_s: int = 30) -> None:
        self.hub = hub
        self.counter = counter
        self.thresholds = {RaidSignalKind.JOINS: (joins, joins_window_s),
                           RaidSignalKind.MESSAGES: (messages, messages_window_s)}
        self._pending: dict[tuple[int, RaidSignalKind], int] = {}
        self._failures = ThrottledLog(log)
        self.signals = 0

    def note(self, community_id: int, kind: RaidSignalKind, n: int = 1) -> None:
        """Count a join or a message (no I/O)."""
        key = (community_id, kind)
        self._pending[key] = self._pending.get(key, 0) + n

    async def flush(self, now: float | None = None) -> list[RaidSignal]:
        """Add what was counted to the shared windows; publish crossed thresholds."""
        if not self._pending:
            return []
        pending, self._pending = self._pending, {}
        now = time.time() if now is None else now
        items: list[tuple[str, int, int]] = []
        keys = list(pending.items())
        for (cid, kind), n in keys:
            threshold, window = self.thresholds[kind]
            index = int(now // window)
            items.append((f"hearth:raid:{kind.value}:{cid}:{index}", n, window * 2))
        totals = await self.counter.add(items)
        signals: list[RaidSignal] = []
        for ((cid, kind), n), total in zip(keys, totals, strict=True):
            threshold, window = self.thresholds[kind]
            if threshold > 0 and total - n < threshold <= total:
                signals.append(RaidSignal(community_id=cid, kind=kind, count=total,
                                          window_s=window, threshold=threshold))
        if signals:
            self.signals += len(signals)
            await self.hub.publish_many([(mod_topic(s.community_id), s) for s in signals])
        return signals

    async def run(self, interval_s: float = 1.0) -> None:
        """The periodic flush (a background task of the app)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.flush()
            except Exception as exc:  # a Redis outage: one line per interval, no traceback
                self._failures.failure(exc, "flushing the raid counters")
            else:
                self._failures.resolved("redis")

    async def close(self) -> None:
        await self.counter.close()


def make_counter(redis: RedisClients | None) -> WindowCounter:
    return RedisWindowCounter(redis.url) if redis is not None else LocalWindowCounter()
