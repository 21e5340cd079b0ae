"""Live sessions (issue 6): scheduling, the stage, Q&A, attendance, reminders.

* **Scheduling.** A session is created with its stage channel (kind ``stage``, same
  required tier as the session, so members below the tier neither see it nor join its
  voice room) and moves ``scheduled`` -> ``live`` -> ``ended`` or ``scheduled`` ->
  ``cancelled``; any other transition is ``conflict``. The host, a co-host or a member
  with ``MANAGE_CHANNELS`` starts, ends, cancels and edits it. Every change reaches
  everyone who sees the stage as ``live_session_update``.
* **Stage.** Speakers are the host, the co-hosts and promoted members, at most
  ``limits.max_stage_speakers`` together. The stage state lives on the session row
  and changes under its row lock, so two hosts promoting at once on two nodes cannot
  exceed the limit. Promotion tells the voice room (``StageVoice.set_role``) so the
  member's microphone is forwarded; every change is ``stage_update`` on the stage.
* **Q&A.** ``qa_ask`` is moderated like a chat message (``rooms/chat.py``): the same
  gate (timeouts, channel lock, lockdown: ``rooms/enforcement.py``), the same automod
  rules (``rooms/automod_service.py``: a blocking rule refuses the question and its
  alert/timeout actions run), and a per-member rate limit of its own.
* **Attendance** (``rooms/live_attendance.py``). The voice room's join/leave hooks
  only enqueue; a writer task turns each batch into three statements. Totals are the
  stretches clipped to the session's live window, overlaps counted once.
* **Reminders.** A task claims sessions starting within the lead time (10 minutes by
  default) with one ``UPDATE ... RETURNING`` (exactly one node wins each) and sends
  ``live_session_reminder`` to each registered member's own topic.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from persistence import audit as audit_db
from persistence import channels as channels_db
from persistence import live as live_db
from persistence import roles as roles_db
from persistence.database import Connection, Database
from persistence.live import LiveRow
from protocol.codes import ErrorCode
from protocol.frames import ChannelCreated, ChannelUpdated, Event, Request, Result
from protocol.limits import Limits
from protocol.live import (
    AttendanceReport,
    LiveSession,
    LiveSessionCreate,
    LiveSessionPatch,
    LiveSessionReminder,
    LiveSessionState,
    LiveSessionUpdated,
    QaAsk,
    QaFetch,
    QaSetState,
    QaUpdated,
    QaVote,
    Question,
    QuestionResult,
    QuestionsResult,
    QuestionState,
    StageFetch,
    StageRaiseHand,
    StageResult,
    StageSetCohost,
    StageSetSpeaker,
    StageState,
    StageUpdated,
)
from protocol.models import Channel, ChannelKind
from rooms.access import session_channel_bits, session_community_bits
from rooms.automod_service import AutomodService
from rooms.bus import channel_topic, community_topic, user_topic
from rooms.chat import check_text
from rooms.enforcement import PostGate, check_can_post, check_not_timed_out
from rooms.errors import RequestError, forbidden, not_found
from rooms.hub import Hub
from rooms.live_attendance import AttendanceLog
from rooms.live_stage import StageRoomOptions
from rooms.permissions import STAFF_SEES_TIERS, Permission
from rooms.rate_limit import RateLimiter
from rooms.sessions import Session

log = logging.getLogger(__name__)

P = Permission
S = LiveSessionState

ATTENDANCE_QUEUE_MAX = 50_000
"""Join/leave notes waiting for the writer. Beyond it notes are dropped (counted and
logged): the voice path never waits for PostgreSQL."""
ATTENDANCE_BATCH_MAX = 2_000
"""Most notes one write takes."""
REMINDER_FANOUT_BATCH = 500
"""Reminder events handed to the bus per call."""
_CHANNEL_CACHE_MAX = 10_000


VoiceHook = Callable[[int, int, "dt.datetime | float"], None]
"""(channel id, user id, when: an aware datetime or ``time.time()`` seconds, as
``rooms/voice.py`` passes them)."""


class StageVoice(Protocol):
    """What LiveService needs of the voice rooms (``rooms/voice.py: VoiceService``)."""

    async def set_role(self, channel_id: int, user_id: int, speaker: bool) -> None: ...


class StageRooms(Protocol):
    """How a stage's voice room is opened for recording and closed at the end
    (``rooms/voice.py: VoiceService`` satisfies it; ``close_room`` returns the media
    worker's ``RoomClosed``: ``recording_path``, ``recording_s``)."""

    def configure_room(self, channel_id: int, *, mix_listeners_above: int | None = None,
                       record_path: str | None = None) -> None: ...

    async def apply_room_options(self, channel_id: int) -> None: ...

    async def close_room(self, channel_id: int) -> object: ...


class Access(Protocol):
    """The part of ``rooms.access.AccessResolver`` used here."""

    async def community_permissions(self, community_id: int, user_id: int) -> Permission: ...

    async def channel_permissions(self, channel_id: int, user_id: int) -> Permission: ...


def _has(bits: Permission, perm: Permission) -> bool:
    return bool(bits & P.ADMINISTRATOR) or (bits & perm) == perm


def speakers_of(row: LiveRow) -> list[int]:
    """Host, co-hosts, promoted speakers: each once, in that order."""
    out: list[int] = []
    for uid in ([row.session.host_id] if row.session.host_id else []) \
            + row.session.cohost_ids + row.speaker_ids:
        if uid not in out:
            out.append(uid)
    return out


class LiveService:
    """Serves live sessions (REST and gateway) and runs their background work."""

    def __init__(self, db: Database, hub: Hub, limits: Limits, access: Access, *,
                 data_dir: Path, gate: PostGate | None = None,
                 automod: AutomodService | None = None,
                 question_limiter: RateLimiter | None = None,
                 reminder_lead_s: float = 600.0, reminder_every_s: float = 15.0,
                 stage_rooms: StageRoomOptions | None = None,
                 attendance: AttendanceLog | None = None,
                 voice: StageVoice | None = None,
                 rooms: StageRooms | None = None) -> None:
        self.db = db
        self.hub = hub
        self.limits = limits
        self.access = access
        self.stage_rooms = stage_rooms or StageRoomOptions(db, data_dir)
        """How stage rooms open: the mix threshold and where recordings go."""
        self.attendance_log = attendance or AttendanceLog(db)
        """Fed by the voice rooms' join/leave hooks (wired by whoever builds both)."""
        self.gate = gate
        self.automod = automod
        self.question_limiter = question_limiter
        self.reminder_lead_s = reminder_lead_s
        self.reminder_every_s = reminder_every_s
        self.voice = voice
        """Drives who may talk on a stage."""
        self.rooms = rooms
        """Opens recorded stages with their ``record_path`` and closes stages at the end."""
        self.reminders_sent = 0

    def handlers(self) -> dict[type[Request], Callable[[Session, Any], Awaitable[Result]]]:
        return {StageRaiseHand: self.raise_hand, StageSetSpeaker: self.set_speaker,
                StageSetCohost: self.set_cohost, StageFetch: self.fetch_stage,
                QaAsk: self.ask, QaVote: self.vote, QaSetState: self.set_question_state,
                QaFetch: self.fetch_questions}

    async def _configure_stage_room(self, row: LiveRow) -> None:
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
        if not (self.is_host(row, user_id) or _has(bits, P.MANAGE_CHANNELS)):
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

    async def _set_roles(self, channel_id: int, before: list[int], after: list[int]) -> None:
        """Tell the voice room who may talk now (only the changes)."""
        if self.voice is None:
            return
        for uid in after:
            if uid not in before:
                await self.voice.set_role(channel_id, uid, True)
        for uid in before:
            if uid not in after:
                await self.voice.set_role(channel_id, uid, False)

    # ---------------------------------------------------------------------- scheduling

    async def create(self, user_id: int, community_id: int,
                     body: LiveSessionCreate) -> LiveSession:
        """Schedule a session and create its stage channel (``MANAGE_CHANNELS``)."""
        bits = await self._member_bits(community_id, user_id)
        if not _has(bits, P.MANAGE_CHANNELS):
            raise forbidden("scheduling a live session needs MANAGE_CHANNELS")
        check_text(body.title, body.description, body.prerequisite_course or "")
        host_id = body.host_id or user_id
        async with self.db.transaction("live.create") as conn:
            if host_id != user_id and await roles_db.member_access(
                    conn, community_id, host_id) is None:
                raise RequestError(ErrorCode.INVALID_ARGUMENT, "the host must be a member")
            channel = await channels_db.create_channel_txn(
                conn, kind=ChannelKind.STAGE, name=body.title[:100],
                community_id=community_id, created_by=user_id, topic=body.description[:1024])
            if body.required_tier:
                await roles_db.set_channel_tier(conn, channel.id, body.required_tier)
                channel = await channels_db.get_channel(conn, channel.id) or channel
            row = await live_db.create_session_txn(
                conn, community_id=community_id, channel_id=channel.id, created_by=user_id,
                host_id=host_id, title=body.title, description=body.description,
                starts_at=body.starts_at, duration_s=body.duration_s, capacity=body.capacity,
                required_tier=body.required_tier,
                prerequisite_course=body.prerequisite_course, recorded=body.recorded)
            await audit_db.record(conn, community_id=community_id, actor_id=user_id,
                                  action="live_session.create", target_type="live_session",
                                  target_id=row.id, reason=None, before=None,
                                  after={"title": body.title, "channel_id": channel.id,
                                         "starts_at": body.starts_at})
        self.attendance_log.stage_created(channel.id, row.id)
        # The channel first: it subscribes viewers' sessions to the stage's topic.
        await self.hub.publish_many([
            (community_topic(community_id), ChannelCreated(channel=channel)),
            (channel_topic(channel.id), LiveSessionUpdated(session=row.session))])
        return row.session

    async def list_sessions(self, user_id: int, community_id: int,
                            state: LiveSessionState | None = None) -> list[LiveSession]:
        """Every session of the community (members), by start time. Sessions above
        the member's tier are listed too, so members see what a tier opens."""
        await self._member_bits(community_id, user_id)
        async with self.db.connection() as conn:
            rows = await live_db.list_sessions(
                conn, community_id, [state.value] if state is not None else None)
        return [r.session for r in rows]

    async def get(self, user_id: int, session_id: int) -> LiveSession:
        async with self.db.connection() as conn:
            row = await self._session(conn, session_id)
        await self._member_bits(row.session.community_id, user_id)
        return row.session

    async def patch(self, user_id: int, session_id: int, body: LiveSessionPatch) -> LiveSession:
        check_text(body.title or "", body.description or "", body.prerequisite_course or "")
        async with self.db.transaction("live.patch") as conn:
            row = await self._session(conn, session_id, for_update=True)
            cid = row.session.community_id
            bits = await self._member_bits(cid, user_id)
            self._require_manager(row, user_id, bits)
            fields: dict[str, Any] = {}
            for name in ("title", "description", "starts_at", "duration_s", "host_id",
                         "capacity", "required_tier", "prerequisite_course", "recorded"):
                value = getattr(body, name)
                if value is not None:
                    fields[name] = value
            if body.clear_capacity:
                fields["capacity"] = None
            manager = _has(bits, P.MANAGE_CHANNELS)
            # A co-host runs the session; they must not take it over (a new host names
            # co-hosts) nor change what the stage channel is: its tier gate and
            # recording are channel management.
            if "host_id" in fields and not (manager or user_id == row.session.host_id):
                raise forbidden("only the host or a channel manager hands the session over")
            if {"required_tier", "recorded"} & set(fields) and not manager:
                raise forbidden("changing required_tier or recorded needs MANAGE_CHANNELS")
            if row.state in (S.ENDED, S.CANCELLED):
                raise RequestError(ErrorCode.CONFLICT, f"the session is {row.state.value}")
            if row.state is S.LIVE and set(fields) - {"title", "description"}:
                raise RequestError(ErrorCode.CONFLICT,
                                   "only the title and description change while live")
            if "host_id" in fields and await roles_db.member_access(
                    conn, cid, fields["host_id"]) is None:
                raise RequestError(ErrorCode.INVALID_ARGUMENT, "the host must be a member")
            await live_db.update_session(conn, session_id, fields)
            if "required_tier" in fields:
                await roles_db.set_channel_tier(conn, row.session.channel_id,
                                                fields["required_tier"])
            channel = await channels_db.get_channel(conn, row.session.channel_id)
            row = await self._session(conn, session_id)
        events: list[tuple[str, Event]] = []
        if "required_tier" in fields and channel is not None:
            # A control event: sessions re-check who may see the stage.
            events.append((community_topic(row.session.community_id),
                           ChannelUpdated(channel=channel)))
        events.append((channel_topic(row.session.channel_id),
                       LiveSessionUpdated(session=row.session)))
        await self.hub.publish_many(events)
        return row.session

    async def _transition(self, user_id: int, session_id: int, allowed: tuple[S, ...],
                          to: S) -> LiveRow:
        async with self.db.transaction(f"live.{to.value}") as conn:
            row = await self._session(conn, session_id, for_update=True)
            bits = await self._member_bits(row.session.community_id, user_id)
            self._require_manager(row, user_id, bits)
            if row.state not in allowed:
                raise RequestError(ErrorCode.CONFLICT,
                                   f"a {row.state.value} session cannot become {to.value}")
            before_speakers = speakers_of(row)
            await live_db.set_state(conn, session_id, to)
            if to is not S.LIVE:
                await live_db.close_open_attendance(conn, session_id, await live_db.db_now(conn))
            await audit_db.record(conn, community_id=row.session.community_id,
                                  actor_id=user_id, action=f"live_session.{to.value}",
                                  target_type="live_session", target_id=session_id,
                                  reason=None, before={"state": row.state.value},
                                  after={"state": to.value})
            row = await self._session(conn, session_id)
        if to is S.LIVE:
            await self._configure_stage_room(row)
            await self._set_roles(row.session.channel_id, [], before_speakers)
        return row

    async def start(self, user_id: int, session_id: int) -> LiveSession:
        row = await self._transition(user_id, session_id, (S.SCHEDULED,), S.LIVE)
        await self._publish_session(row)
        await self._publish_stage(row)
        return row.session

    async def end(self, user_id: int, session_id: int) -> LiveSession:
        """End a live session: open attendance stretches close now, everyone leaves
        the stage's voice room, and a recording's path and length are stored."""
        await self._check_manager(user_id, session_id)
        await self.attendance_log.flush()  # queued stretches land before they are closed
        row = await self._transition(user_id, session_id, (S.LIVE,), S.ENDED)
        if self.rooms is not None:
            try:
                closed = await self.rooms.close_room(row.session.channel_id)
            except Exception:
                log.exception("closing the stage of live session %d failed", session_id)
            else:
                path = getattr(closed, "recording_path", None)
                seconds = getattr(closed, "recording_s", None)
                if row.session.recorded and isinstance(path, str):
                    async with self.db.connection() as conn:
                        await live_db.set_recording(
                            conn, session_id, path,
                            float(seconds) if isinstance(seconds, int | float) else None)
                        row = await self._session(conn, session_id)
        await self._publish_session(row)
        await self._publish_stage(row)
        return row.session

    async def cancel(self, user_id: int, session_id: int) -> LiveSession:
        row = await self._transition(user_id, session_id, (S.SCHEDULED,), S.CANCELLED)
        await self._publish_session(row)
        return row.session

    # ------------------------------------------------------------------- registration

    async def register(self, user_id: int, session_id: int, registered: bool = True,
                       ) -> LiveSession:
        """Register for a session (any member at the required tier; staff with
        ``MANAGE_CHANNELS`` regardless), or withdraw. ``limit_exceeded`` when full."""
        async with self.db.transaction("live.register") as conn:
            row = await self._session(conn, session_id, for_update=True)
            cid = row.session.community_id
            access = await roles_db.member_access(conn, cid, user_id)
            if access is None:
                raise not_found("unknown live session")
            if row.state not in (S.SCHEDULED, S.LIVE):
                raise RequestError(ErrorCode.CONFLICT, f"the session is {row.state.value}")
            if not registered:
                await live_db.unregister(conn, session_id, user_id)
            else:
                bits = await self._member_bits(cid, user_id)
                if access.tier < row.session.required_tier and not bits & STAFF_SEES_TIERS:
                    raise forbidden(f"this session needs tier {row.session.required_tier}")
                if not await live_db.register(conn, session_id, user_id, row.session.capacity):
                    raise RequestError(ErrorCode.LIMIT_EXCEEDED,
                                       f"the session is full ({row.session.capacity})")
            row = await self._session(conn, session_id)
            # The reminders went out before this member registered (a late registration,
            # or a session scheduled inside the lead time): remind them now. The row lock
            # held here orders this against the reminder claim, so nobody gets none.
            late = registered and row.state is S.SCHEDULED \
                and await live_db.was_reminded(conn, session_id)
            now_ms = int((await live_db.db_now(conn)).timestamp() * 1000) if late else 0
        if late:
            await self.hub.publish(user_topic(user_id), LiveSessionReminder(
                session=row.session, starts_in_s=max(0, (row.session.starts_at - now_ms) // 1000)))
            self.reminders_sent += 1
        return row.session

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
            await self._set_roles(row.session.channel_id, speakers_of(row), speakers_of(new))
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
            if session.user.id != row.session.host_id and not _has(bits, P.MANAGE_CHANNELS):
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

    # ---------------------------------------------------------------------------- Q&A

    async def ask(self, session: Session, req: QaAsk) -> Result:
        """A question, moderated like a chat message (see the module docstring)."""
        async with self.db.connection() as conn:
            row = await self._session(conn, req.session_id)
        channel = self._ws_stage(session, row)
        if row.state not in (S.SCHEDULED, S.LIVE):
            raise RequestError(ErrorCode.CONFLICT, f"the session is {row.state.value}")
        text = req.text.strip()
        check_text(text)
        if not text:
            raise RequestError(ErrorCode.EMPTY_MESSAGE, "a question needs text")
        if len(text) > self.limits.max_question_chars:
            raise RequestError(ErrorCode.CONTENT_TOO_LONG,
                               f"at most {self.limits.max_question_chars} characters")
        if self.gate is not None:
            self.gate.check(session, channel)
        else:
            check_can_post(session, channel)
        if self.question_limiter is not None:
            wait = await self.question_limiter.check(f"qa:{session.user.id}")
            if wait is not None:
                raise RequestError(ErrorCode.RATE_LIMITED, "you are asking too fast",
                                   retry_after_ms=wait)
        verdict = None
        if self.automod is not None:
            verdict = await self.automod.check(session, channel, text, new_message=True)
            blocked = self.automod.blocked_error(verdict)
            if blocked is not None:
                await self.automod.enforce(verdict, session.user, channel, text, None)
                raise blocked
        async with self.db.connection() as conn:
            question = await live_db.add_question(conn, row.id, session.user.id, text)
        await self.hub.publish(channel_topic(channel.id), QaUpdated(question=question))
        if verdict is not None and verdict.hits and self.automod is not None:
            await self.automod.enforce(verdict, session.user, channel, text, None)
        return QuestionResult(question=question)

    async def _question_and_session(self, question_id: int) -> tuple[Question, LiveRow]:
        async with self.db.connection() as conn:
            question = await live_db.get_question(conn, question_id)
            if question is None:
                raise not_found("unknown question")
            row = await self._session(conn, question.session_id)
        return question, row

    async def vote(self, session: Session, req: QaVote) -> Result:
        question, row = await self._question_and_session(req.question_id)
        channel = self._ws_stage(session, row)
        if question.state is QuestionState.DISMISSED:
            raise not_found("unknown question")
        if row.state not in (S.SCHEDULED, S.LIVE):
            raise RequestError(ErrorCode.CONFLICT, f"the session is {row.state.value}")
        check_not_timed_out(session, channel)  # a vote is like a reaction
        async with self.db.connection() as conn:
            updated = await live_db.vote(conn, question.id, session.user.id, req.vote)
        if updated is None:
            raise not_found("unknown question")
        if updated.votes != question.votes:
            await self.hub.publish(channel_topic(channel.id), QaUpdated(question=updated))
        return QuestionResult(question=updated, voted=req.vote)

    def _may_moderate_qa(self, session: Session, row: LiveRow) -> bool:
        bits = session_community_bits(session, row.session.community_id)
        return self.is_host(row, session.user.id) or _has(bits, P.MODERATE) \
            or _has(bits, P.MANAGE_CHANNELS)

    async def set_question_state(self, session: Session, req: QaSetState) -> Result:
        question, row = await self._question_and_session(req.question_id)
        channel = self._ws_stage(session, row)
        if not self._may_moderate_qa(session, row):
            raise forbidden("only the hosts and moderators answer or dismiss questions")
        async with self.db.connection() as conn:
            updated = await live_db.set_question_state(conn, question.id, req.state,
                                                       session.user.id)
            voted = await live_db.has_voted(conn, question.id, session.user.id)
        if updated is None:
            raise not_found("unknown question")
        # A dismissed question leaves every member's list: its text is not sent again
        # (hosts and moderators still read it with qa_fetch).
        shown = msgspec.structs.replace(updated, text="") \
            if updated.state is QuestionState.DISMISSED else updated
        await self.hub.publish(channel_topic(channel.id), QaUpdated(question=shown))
        return QuestionResult(question=updated, voted=voted)

    async def fetch_questions(self, session: Session, req: QaFetch) -> Result:
        async with self.db.connection() as conn:
            row = await self._session(conn, req.session_id)
        self._ws_stage(session, row)
        return await self._questions(row, session.user.id, self._may_moderate_qa(session, row))

    async def questions_rest(self, user_id: int, session_id: int) -> QuestionsResult:
        async with self.db.connection() as conn:
            row = await self._session(conn, session_id)
        await self._viewable(row, user_id)
        bits = await self.access.community_permissions(row.session.community_id, user_id)
        staff = self.is_host(row, user_id) or _has(bits, P.MODERATE) \
            or _has(bits, P.MANAGE_CHANNELS)
        return await self._questions(row, user_id, staff)

    async def _questions(self, row: LiveRow, user_id: int, staff: bool) -> QuestionsResult:
        async with self.db.connection() as conn:
            questions = await live_db.list_questions(conn, row.id, include_dismissed=staff)
            voted = await live_db.voted_ids(conn, row.id, user_id)
        return QuestionsResult(session_id=row.id, questions=questions, voted_ids=voted)

    # --------------------------------------------------------------------- attendance

    async def attendance(self, user_id: int, session_id: int) -> AttendanceReport:
        """Who attended (host, co-host or ``MANAGE_CHANNELS``)."""
        await self._check_manager(user_id, session_id)
        async with self.db.connection() as conn:
            row = await self._session(conn, session_id)
        return await self.attendance_log.report(row)

    # ---------------------------------------------------------------------- reminders

    async def send_due_reminders(self) -> int:
        """Remind registered members of sessions starting within the lead time; returns
        how many reminders went out."""
        async with self.db.connection() as conn:
            due = await live_db.claim_due_reminders(conn, self.reminder_lead_s)
            recipients = {row.id: await live_db.registered_ids(conn, row.id) for row in due}
            now_ms = int((await live_db.db_now(conn)).timestamp() * 1000)
        sent = 0
        for row in due:
            event = LiveSessionReminder(
                session=row.session,
                starts_in_s=max(0, (row.session.starts_at - now_ms) // 1000))
            users = recipients[row.id]
            for i in range(0, len(users), REMINDER_FANOUT_BATCH):
                await self.hub.publish_many([(user_topic(u), event)
                                             for u in users[i:i + REMINDER_FANOUT_BATCH]])
            sent += len(users)
        self.reminders_sent += sent
        return sent

    async def _reminder_loop(self) -> None:
        while True:
            try:
                await self.send_due_reminders()
            except Exception:
                log.exception("live session reminders failed; retrying")
            await asyncio.sleep(self.reminder_every_s)

    async def run(self) -> None:
        """Background work: the attendance writer and the reminders. Cancel to stop;
        queued attendance is written before it returns."""
        tasks = [asyncio.create_task(self.attendance_log.run(), name="live-attendance"),
                 asyncio.create_task(self._reminder_loop(), name="live-reminders")]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await self.attendance_log.flush()
            except Exception:
                log.exception("attendance not written at shutdown")


__all__ = ["LiveService", "StageRooms", "StageVoice", "VoiceHook", "speakers_of"]
