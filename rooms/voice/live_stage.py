"""The stage of a live session: who speaks, and how its voice room opens.

Speakers are the host, the co-hosts and promoted members, at most
``limits.max_stage_speakers`` together. The stage state lives on the session row and
changes under its row lock, so two hosts promoting at once on two nodes cannot exceed
the limit. Promotion tells the voice room (:meth:`StageVoice.set_role`) so the member's
microphone is forwarded; every change is ``stage_update`` on the stage.

:class:`StageRoomOptions` answers, on whichever process the first member joins a
stage, whether its room must mix for a large audience and record
(``rooms/voice/voice.py: StageOptions``); it needs only PostgreSQL, so the voice rooms and
the live sessions can both be given it without needing each other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from persistence import live as live_db
from persistence import roles as roles_db
from persistence.database import Database
from persistence.live import LiveRow
from protocol.base import Request
from protocol.codes import ErrorCode
from protocol.frames import Result
from protocol.limits import Limits
from protocol.live import (
    LiveSessionState,
    StageFetch,
    StageRaiseHand,
    StageResult,
    StageSetCohost,
    StageSetSpeaker,
)
from protocol.models import Channel
from rooms.errors import RequestError, forbidden, not_found
from rooms.moderation.enforcement import check_not_timed_out
from rooms.realtime.access import session_community_bits
from rooms.realtime.hub import Hub
from rooms.realtime.permissions import Permission
from rooms.realtime.sessions import Session
from rooms.voice.live_base import Access, LiveBase, has, speakers_of

log = logging.getLogger(__name__)

P = Permission
S = LiveSessionState


class StageRoomOptions:
    """Mix threshold and recording path of live sessions' stage rooms."""

    def __init__(self, db: Database, data_dir: Path, mix_listeners_above: int = 25) -> None:
        self.db = db
        self.data_dir = data_dir
        self.mix_listeners_above = mix_listeners_above
        """Listeners above which a stage's audience gets the server-side mix."""

    def recording_path(self, session_id: int) -> Path:
        """Where a recorded session's WAV goes: ``<data_dir>/recordings/<id>.wav``."""
        return self.data_dir / "recordings" / f"{session_id}.wav"

    async def stage_room_options(self, channel_id: int
                                 ) -> tuple[int | None, str | None] | None:
        """How a stage's room opens while its session is live, on whichever process the
        first member joins (:class:`rooms.voice.voice_media.StageOptions`); None for a channel that
        is not a live session's stage."""
        async with self.db.connection() as conn:
            session_id = (await live_db.sessions_of_channels(conn, [channel_id])).get(
                channel_id)
            row = None if session_id is None else await live_db.get_session(conn, session_id)
        if row is None or row.session.state is not LiveSessionState.LIVE:
            return None
        record = str(self.recording_path(row.id)) if row.session.recorded else None
        return self.mix_listeners_above, record


class StageVoice(Protocol):
    """What LiveService needs of the voice rooms (``rooms/voice/voice.py: VoiceService``)."""

    async def set_role(self, channel_id: int, user_id: int, speaker: bool) -> None: ...


class StageRooms(Protocol):
    """How a stage's voice room is opened for recording and closed at the end
    (``rooms/voice/voice.py: VoiceService`` satisfies it; ``close_room`` returns the media
    worker's ``RoomClosed``: ``recording_path``, ``recording_s``)."""

    def configure_room(self, channel_id: int, *, mix_listeners_above: int | None = None,
                       record_path: str | None = None) -> None: ...

    async def apply_room_options(self, channel_id: int) -> None: ...

    async def close_room(self, channel_id: int) -> object: ...


class LiveStage(LiveBase):
    """Serves the stage requests and drives the stage's voice room."""

    def __init__(self, db: Database, hub: Hub, limits: Limits, access: Access, *,
                 stage_rooms: StageRoomOptions, voice: StageVoice | None = None,
                 rooms: StageRooms | None = None) -> None:
        super().__init__(db, hub, limits, access)
        self.stage_rooms = stage_rooms
        self.voice = voice
        """Drives who may talk on a stage."""
        self.rooms = rooms
        """Opens recorded stages with their ``record_path`` and closes stages at the end."""

    def handlers(self) -> dict[type[Request], Callable[[Session, Any], Awaitable[Result]]]:
        return {StageRaiseHand: self.raise_hand, StageSetSpeaker: self.set_speaker,
                StageSetCohost: self.set_cohost, StageFetch: self.fetch_stage}

    async def configure_room(self, row: LiveRow) -> None:
        """At the start: the stage room mixes for a large audience and, for a recorded
        session, records the mix to ``recording_path`` (it then stays open until the
        end)."""
        if self.rooms is None:
            return
        record_path: str | None = None
        if row.session.recorded:
            path = self.stage_rooms.recording_path(row.id)
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            record_path = str(path)
        self.rooms.configure_room(row.session.channel_id,
                                  mix_listeners_above=self.stage_rooms.mix_listeners_above,
                                  record_path=record_path)
        # A room opened before the start (members already on the stage) gets its
        # recorder and mix now, not only rooms opened from here on.
        try:
            await self.rooms.apply_room_options(row.session.channel_id)
        except Exception:
            log.exception("stage room of live session %d not configured on the media "
                          "side", row.id)

    async def set_roles(self, channel_id: int, before: list[int], after: list[int]) -> None:
        """Tell the voice room who may talk now (only the changes)."""
        if self.voice is None:
            return
        for uid in after:
            if uid not in before:
                await self.voice.set_role(channel_id, uid, True)
        for uid in before:
            if uid not in after:
                await self.voice.set_role(channel_id, uid, False)

    # -------------------------------------------------------------------------- stage

    async def _stage_change(self, session: Session, session_id: int,
                            change: Callable[[LiveRow, Channel], LiveRow | None],
                            ) -> StageResult:
        """Apply ``change`` (returns the new row, or None for no change) under the
        session's row lock, store it, then tell the voice room and the viewers."""
        async with self.db.transaction("live.stage") as conn:
            row = await self._session(conn, session_id, for_update=True)
            channel = self._ws_stage(session, row)
            new = change(row, channel)
            if new is not None:
                await live_db.set_stage(conn, session_id, cohost_ids=new.session.cohost_ids,
                                        speaker_ids=new.speaker_ids, hand_ids=new.hand_ids)
        if new is None:
            return StageResult(stage=self._stage_state(row))
        if new.state is S.LIVE:
            await self.set_roles(row.session.channel_id, speakers_of(row), speakers_of(new))
        return StageResult(stage=await self._publish_stage(new))

    @staticmethod
    def _replace(row: LiveRow, *, cohosts: list[int] | None = None,
                 speakers: list[int] | None = None, hands: list[int] | None = None) -> LiveRow:
        session = row.session if cohosts is None else msgspec.structs.replace(
            row.session, cohost_ids=cohosts)
        return msgspec.structs.replace(
            row, session=session,
            speaker_ids=row.speaker_ids if speakers is None else speakers,
            hand_ids=row.hand_ids if hands is None else hands)

    def _manager_ws(self, session: Session, row: LiveRow, channel: Channel) -> None:
        bits = session_community_bits(session, row.session.community_id)
        self._require_manager(row, session.user.id, bits)

    async def raise_hand(self, session: Session, req: StageRaiseHand) -> Result:
        uid = session.user.id

        def change(row: LiveRow, channel: Channel) -> LiveRow | None:
            if row.state is not S.LIVE:
                raise RequestError(ErrorCode.CONFLICT, "the session is not live")
            if req.raised:
                check_not_timed_out(session, channel)
                if uid in speakers_of(row) or uid in row.hand_ids:
                    return None
                if len(row.hand_ids) >= self.limits.max_stage_hands:
                    raise RequestError(ErrorCode.LIMIT_EXCEEDED,
                                       f"at most {self.limits.max_stage_hands} hands up")
                return self._replace(row, hands=[*row.hand_ids, uid])
            if uid not in row.hand_ids:
                return None
            return self._replace(row, hands=[h for h in row.hand_ids if h != uid])

        return await self._stage_change(session, req.session_id, change)

    async def set_speaker(self, session: Session, req: StageSetSpeaker) -> Result:
        uid = req.user_id
        if req.speaker:
            async with self.db.connection() as conn:
                row0 = await self._session(conn, req.session_id)
                if await roles_db.member_access(conn, row0.session.community_id, uid) is None:
                    raise not_found("unknown member")

        def change(row: LiveRow, channel: Channel) -> LiveRow | None:
            if not (uid == session.user.id and not req.speaker):  # stepping down: anyone
                self._manager_ws(session, row, channel)
            if row.state is not S.LIVE:
                raise RequestError(ErrorCode.CONFLICT, "the session is not live")
            if req.speaker:
                if uid in speakers_of(row):
                    return None
                if len(speakers_of(row)) >= self.limits.max_stage_speakers:
                    raise RequestError(
                        ErrorCode.LIMIT_EXCEEDED,
                        f"at most {self.limits.max_stage_speakers} on stage, hosts included")
                return self._replace(row, speakers=[*row.speaker_ids, uid],
                                     hands=[h for h in row.hand_ids if h != uid])
            if uid == row.session.host_id or uid in row.session.cohost_ids:
                raise RequestError(ErrorCode.INVALID_ARGUMENT,
                                   "hosts stay on stage; remove the co-host first")
            if uid not in row.speaker_ids:
                return None
            return self._replace(row, speakers=[s for s in row.speaker_ids if s != uid])

        return await self._stage_change(session, req.session_id, change)

    async def set_cohost(self, session: Session, req: StageSetCohost) -> Result:
        uid = req.user_id
        if req.cohost:
            async with self.db.connection() as conn:
                row0 = await self._session(conn, req.session_id)
                if await roles_db.member_access(conn, row0.session.community_id, uid) is None:
                    raise not_found("unknown member")

        def change(row: LiveRow, channel: Channel) -> LiveRow | None:
            bits = session_community_bits(session, row.session.community_id)
            if session.user.id != row.session.host_id and not has(bits, P.MANAGE_CHANNELS):
                raise forbidden("only the host or a channel manager names co-hosts")
            if row.state in (S.ENDED, S.CANCELLED):
                raise RequestError(ErrorCode.CONFLICT, f"the session is {row.state.value}")
            cohosts = list(row.session.cohost_ids)
            if req.cohost:
                if uid in cohosts or uid == row.session.host_id:
                    return None
                if uid not in speakers_of(row) and \
                        len(speakers_of(row)) >= self.limits.max_stage_speakers:
                    raise RequestError(
                        ErrorCode.LIMIT_EXCEEDED,
                        f"at most {self.limits.max_stage_speakers} on stage, hosts included")
                return self._replace(row, cohosts=[*cohosts, uid],
                                     speakers=[s for s in row.speaker_ids if s != uid],
                                     hands=[h for h in row.hand_ids if h != uid])
            if uid not in cohosts:
                return None
            return self._replace(row, cohosts=[c for c in cohosts if c != uid])

        return await self._stage_change(session, req.session_id, change)

    async def fetch_stage(self, session: Session, req: StageFetch) -> Result:
        async with self.db.connection() as conn:
            row = await self._session(conn, req.session_id)
        self._ws_stage(session, row)
        return StageResult(stage=self._stage_state(row))
