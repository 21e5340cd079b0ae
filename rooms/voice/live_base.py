"""What the parts of a live session share: the checks and the stage state they publish.

:class:`LiveBase` is the common ground of :class:`rooms.voice.live.LiveService` (scheduling,
registration, reminders), :class:`rooms.voice.live_stage.LiveStage` (hands, speakers,
co-hosts) and :class:`rooms.voice.live_qa.LiveQa` (questions): reading a session row, the
member's bits, who manages a session, and publishing the session and its stage.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Protocol

from persistence import live as live_db
from persistence.database import Connection, Database
from persistence.live import LiveRow
from protocol.limits import Limits
from protocol.live import (
    LiveSessionState,
    LiveSessionUpdated,
    StageState,
    StageUpdated,
)
from protocol.models import Channel
from rooms.errors import forbidden, not_found
from rooms.realtime.access import session_channel_bits
from rooms.realtime.bus import channel_topic
from rooms.realtime.hub import Hub
from rooms.realtime.permissions import Permission
from rooms.realtime.sessions import Session

P = Permission
S = LiveSessionState


VoiceHook = Callable[[int, int, "dt.datetime | float"], None]
"""(channel id, user id, when: an aware datetime or ``time.time()`` seconds, as
``rooms/voice/voice.py`` passes them)."""


class Access(Protocol):
    """The part of ``rooms.realtime.access.AccessResolver`` used here."""

    async def community_permissions(self, community_id: int, user_id: int) -> Permission: ...

    async def channel_permissions(self, channel_id: int, user_id: int) -> Permission: ...


def has(bits: Permission, perm: Permission) -> bool:
    return bool(bits & P.ADMINISTRATOR) or (bits & perm) == perm


def speakers_of(row: LiveRow) -> list[int]:
    """Host, co-hosts, promoted speakers: each once, in that order."""
    out: list[int] = []
    for uid in ([row.session.host_id] if row.session.host_id else []) \
            + row.session.cohost_ids + row.speaker_ids:
        if uid not in out:
            out.append(uid)
    return out


class LiveBase:
    """The checks and publishing every part of a live session uses."""

    def __init__(self, db: Database, hub: Hub, limits: Limits, access: Access) -> None:
        self.db = db
        self.hub = hub
        self.limits = limits
        self.access = access

    # ------------------------------------------------------------------------- checks

    async def _session(self, conn: Connection, session_id: int, *,
                       for_update: bool = False) -> LiveRow:
        row = await live_db.get_session(conn, session_id, for_update=for_update)
        if row is None:
            raise not_found("unknown live session")
        return row

    async def _member_bits(self, community_id: int, user_id: int) -> Permission:
        bits = await self.access.community_permissions(community_id, user_id)
        if not bits:
            raise not_found("unknown community")
        return bits

    async def _viewable(self, row: LiveRow, user_id: int) -> Permission:
        """REST: the user's bits in the stage channel; not_found if they cannot see it
        (not a member, or below the required tier)."""
        bits = await self.access.channel_permissions(row.session.channel_id, user_id)
        if not bits & P.VIEW_CHANNEL:
            raise not_found("unknown live session")
        return bits

    @staticmethod
    def is_host(row: LiveRow, user_id: int) -> bool:
        return user_id == row.session.host_id or user_id in row.session.cohost_ids

    def _require_manager(self, row: LiveRow, user_id: int, bits: Permission) -> None:
        if not (self.is_host(row, user_id) or has(bits, P.MANAGE_CHANNELS)):
            raise forbidden("only the host, a co-host or a channel manager may do this")

    async def _check_manager(self, user_id: int, session_id: int) -> None:
        """Refuse a non-manager before any costly work: ``end`` and the attendance
        report flush the attendance queue (waiting on the writer), which nobody else
        may make the server do."""
        async with self.db.connection() as conn:
            row = await self._session(conn, session_id)
            bits = await self._member_bits(row.session.community_id, user_id)
        self._require_manager(row, user_id, bits)

    def _ws_stage(self, session: Session, row: LiveRow) -> Channel:
        """Gateway: the stage channel from the session's own view (no I/O)."""
        channel = session.channels.get(row.session.channel_id)
        if channel is None or not session_channel_bits(session, channel) & P.VIEW_CHANNEL:
            raise not_found("unknown live session")
        return channel

    # ---------------------------------------------------------------------- publishing

    async def _publish_session(self, row: LiveRow) -> None:
        await self.hub.publish(channel_topic(row.session.channel_id),
                               LiveSessionUpdated(session=row.session))

    def _stage_state(self, row: LiveRow) -> StageState:
        return StageState(session_id=row.id, channel_id=row.session.channel_id,
                          speakers=speakers_of(row), cohosts=list(row.session.cohost_ids),
                          hands=list(row.hand_ids))

    async def _publish_stage(self, row: LiveRow) -> StageState:
        stage = self._stage_state(row)
        await self.hub.publish(channel_topic(stage.channel_id), StageUpdated(
            session_id=stage.session_id, channel_id=stage.channel_id,
            speakers=stage.speakers, cohosts=stage.cohosts, hands=stage.hands))
        return stage
