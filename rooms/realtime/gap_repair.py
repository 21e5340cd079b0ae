"""What the bus lost, read back from the record (PostgreSQL).

The bus is a lossy wake-up. The hub (``rooms/realtime/hub.py``) notices a gap in a channel's
seq and asks :class:`MissedMessages` for the messages in between; after the bus
reconnects, :func:`catch_up_after_reconnect` compares every channel the hub follows
with its newest seq in PostgreSQL, and the hub repairs the ones that moved on.
"""

from __future__ import annotations

import asyncio

from persistence import channels as channels_db
from persistence import messages as messages_db
from persistence.database import Database
from protocol.models import Message
from rooms.realtime.hub import Hub

MAX_CATCH_UP = 1000
"""Most messages one channel catch-up reads from PostgreSQL."""


class MissedMessages:
    """The hub's and the session opener's ``fetch_missing``: (channel id, after seq, up
    to seq inclusive) -> the messages, in order."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._in_flight: dict[tuple[int, int, int], asyncio.Future[list[Message]]] = {}
        self.coalesced = 0
        """Calls that shared another's query instead of running their own."""

    async def __call__(self, channel_id: int, after: int, upto: int) -> list[Message]:
        """Messages of ``channel_id`` after ``after`` up to ``upto``. Single flight: in a
        resume storm the clients of a channel mostly stopped at the same message and
        the channel's head is the same for all, so the same range is asked for by
        hundreds at once; they share one query instead of each queueing for the pool.
        Every caller gets its own list."""
        key = (channel_id, after, upto)
        shared = self._in_flight.get(key)
        if shared is None:
            shared = asyncio.ensure_future(self._read(channel_id, after, upto))
            self._in_flight[key] = shared
            shared.add_done_callback(lambda _: self._in_flight.pop(key, None))
        else:
            self.coalesced += 1
        return list(await asyncio.shield(shared))

    async def _read(self, channel_id: int, after: int, upto: int) -> list[Message]:
        """Messages the bus lost, from the record (bounded: a longer gap is left to the
        clients, who see it by seq and page history themselves)."""
        found: list[Message] = []
        async with self.db.connection() as conn:
            while after < upto and len(found) < MAX_CATCH_UP:
                page, _ = await messages_db.history(
                    conn, channel_id, before=None, after=after, around=None,
                    limit=min(500, upto - after))
                page = [m for m in page if m.seq <= upto]
                if not page:
                    break
                found.extend(page)
                after = page[-1].seq
        return found


class ChannelHeads:
    """The hub's ``read_heads``: (channel ids) -> each channel's newest committed seq,
    how far a catch-up must reach (a new subscription's confirmation, a reconnect)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def __call__(self, channel_ids: list[int]) -> dict[int, int]:
        if not channel_ids:
            return {}
        async with self.db.connection() as conn:
            return await channels_db.last_seqs(conn, channel_ids)


async def catch_up_after_reconnect(heads: ChannelHeads, hub: Hub) -> None:
    """The bus came back: every followed channel that moved on is repaired."""
    hub.catch_up_all(await heads(hub.subscribed_channels()))
