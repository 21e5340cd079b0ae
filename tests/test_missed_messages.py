"""The catch-up reads' single flight (rooms/realtime/gap_repair.py): in a resume storm
many sessions ask for the same (channel, after, upto) at once; one query serves them
all, each gets its own list, and a later call reads afresh. The read itself is replaced
by a counted one that the test releases (no database, no sleeps)."""

from __future__ import annotations

import asyncio
from typing import cast

from persistence.database import Database
from protocol.models import Message
from rooms.realtime.gap_repair import MissedMessages


class CountedReads(MissedMessages):
    def __init__(self) -> None:
        super().__init__(cast(Database, None))
        self.reads: list[tuple[int, int, int]] = []
        self.go = asyncio.Event()

    async def _read(self, channel_id: int, after: int, upto: int) -> list[Message]:
        self.reads.append((channel_id, after, upto))
        await self.go.wait()
        return [cast(Message, ("message", channel_id, seq)) for seq in range(after + 1, upto + 1)]


async def test_identical_ranges_in_flight_share_one_read() -> None:
    missed = CountedReads()
    same = [asyncio.create_task(missed(7, 10, 13)) for _ in range(5)]
    other = asyncio.create_task(missed(7, 11, 13))
    for _ in range(3):
        await asyncio.sleep(0)
    assert sorted(missed.reads) == [(7, 10, 13), (7, 11, 13)]
    missed.go.set()
    results = await asyncio.gather(*same)
    assert all(r == results[0] for r in results) and len(results[0]) == 3
    assert len({id(r) for r in results}) == 5  # each caller its own list
    assert len(await other) == 2
    assert missed.coalesced == 4
    await missed(7, 10, 13)  # nothing in flight any more: read again
    assert missed.reads.count((7, 10, 13)) == 2
