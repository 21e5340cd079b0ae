"""Live sessions (issue 6): scheduling, the stage, Q&A, attendance, reminders.

* **Scheduling.** A session is created with its stage channel (kind ``stage``, same
  required tier as the session, so members below the tier neither see it nor join its
  voice room) and moves ``scheduled`` -> ``live`` -> ``ended`` or ``scheduled`` ->
  ``cancelled``; any other transition is ``conflict``. The host, a co-host or a member
  with ``MANAGE_CHANNELS`` starts, ends, cancels and edits it. Every change reaches
  everyone who sees the stage as ``live_session_update``.
* **Stage** (``rooms/voice/live_stage.py``). Speakers are the host, the co-hosts and promoted
  members, at most ``limits.max_stage_speakers`` together, changed under the session's
  row lock; promotion tells the voice room; every change is ``stage_update``.
* **Q&A** (``rooms/voice/live_qa.py``). ``qa_ask`` is moderated like a chat message: the same
  gate, the same automod rules, and a per-member rate limit of its own.
* **Attendance** (``rooms/voice/live_attendance.py``). The voice room's join/leave hooks
  only enqueue; a writer task turns each batch into three statements. Totals are the
  stretches clipped to the session's live window, overlaps counted once.
* **Reminders.** A task claims sessions starting within the lead time (10 minutes by
  default) with one ``UPDATE ... RETURNING`` (exactly one node wins each) and sends
  ``live_session_reminder`` to each registered member's own topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from persistence import audit as audit_db
from persistence import channels as channels_db
from persistence import live as live_db
from persistence import roles as roles_db
from persistence.database import Database
from persistence.live import LiveRow
from protocol.base import Request
from protocol.chat import ChannelCreated, ChannelUpdated
from protocol.codes import ErrorCode
from protocol.frames import Event, Result
from protocol.limits import Limits
from protocol.live import (
    AttendanceReport,
    LiveSession,
    LiveSessionCreate,
    LiveSessionPatch,
    LiveSessionReminder,
    LiveSessionState,
    LiveSessionUpdated,
    QuestionsResult,
)
from protocol.models import ChannelKind
from rooms.chat.chat import check_text
from rooms.errors import RequestError, forbidden, not_found
from rooms.moderation.automod_service import AutomodService
from rooms.moderation.enforcement import PostGate
from rooms.realtime.bus import channel_topic, community_topic, user_topic
from rooms.realtime.hub import Hub
from rooms.realtime.outages import ThrottledLog
from rooms.realtime.permissions import STAFF_SEES_TIERS, Permission
from rooms.realtime.rate_limit import RateLimiter
from rooms.realtime.sessions import Session
from rooms.voice.live_attendance import AttendanceLog
from rooms.voice.live_base import Access, LiveBase, VoiceHook, has, speakers_of
from rooms.voice.live_qa import LiveQa
from rooms.voice.live_stage import LiveStage, StageRoomOptions, StageRooms, StageVoice

log = logging.getLogger(__name__)

P = Permission
S = LiveSessionState

PrerequisiteCheck = Callable[[int, int, str], Awaitable[str | None]]
"""(community id, user id, reference) -> None when the prerequisite is met, else the
reason shown to the member. Registered by whoever provides that kind of prerequisite
(the courses sidecar provides ``course``, see ``sidecars/api.py``)."""

REMINDER_FANOUT_BATCH = 500
"""Reminder events handed to the bus per call."""


class LiveService(LiveBase):
    """Serves live sessions (REST and gateway) and runs their background work: the
    schedule here, the stage (:attr:`stage`), Q&A (:attr:`qa`) and attendance
    (:attr:`attendance_log`) in their own modules."""

    def __init__(self, db: Database, hub: Hub, limits: Limits, access: Access, *,
                 data_dir: Path, gate: PostGate | None = None,
                 automod: AutomodService | None = None,
                 question_limiter: RateLimiter | None = None,
                 reminder_lead_s: float = 600.0, reminder_every_s: float = 15.0,
                 stage_rooms: StageRoomOptions | None = None,
                 attendance: AttendanceLog | None = None,
                 voice: StageVoice | None = None,
                 rooms: StageRooms | None = None) -> None:
        super().__init__(db, hub, limits, access)
        self.stage = LiveStage(db, hub, limits, access,
                               stage_rooms=stage_rooms or StageRoomOptions(db, data_dir),
                               voice=voice, rooms=rooms)
        self.qa = LiveQa(db, hub, limits, access, gate=gate, automod=automod,
                         question_limiter=question_limiter)
        self.attendance_log = attendance or AttendanceLog(db)
        """Fed by the voice rooms' join/leave hooks (wired by whoever builds both)."""
        self.reminder_lead_s = reminder_lead_s
        self.reminder_every_s = reminder_every_s
        self.reminders_sent = 0
        self.prerequisite_checks: dict[str, PrerequisiteCheck] = {}
        """Kind -> check; ``course`` answers for ``prerequisite_course`` (wired by
        ``server/app.py`` from the mounted sidecars)."""

    def handlers(self) -> dict[type[Request], Callable[[Session, Any], Awaitable[Result]]]:
        return self.stage.handlers() | self.qa.handlers()

    async def questions_rest(self, user_id: int, session_id: int) -> QuestionsResult:
        return await self.qa.questions_rest(user_id, session_id)

    # ---------------------------------------------------------------------- scheduling

    async def create(self, user_id: int, community_id: int,
                     body: LiveSessionCreate) -> LiveSession:
        """Schedule a session and create its stage channel (``MANAGE_CHANNELS``)."""
        bits = await self._member_bits(community_id, user_id)
        if not has(bits, P.MANAGE_CHANNELS):
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
            manager = has(bits, P.MANAGE_CHANNELS)
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
            await self.stage.configure_room(row)
            await self.stage.set_roles(row.session.channel_id, [], before_speakers)
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
        if self.stage.rooms is not None:
            try:
                closed = await self.stage.rooms.close_room(row.session.channel_id)
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
                if not bits & STAFF_SEES_TIERS:
                    await self._check_prerequisite(cid, user_id, row.session.prerequisite_course)
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

    # --------------------------------------------------------------------- attendance

    async def _check_prerequisite(self, community_id: int, user_id: int,
                                  ref: str | None) -> None:
        """``prerequisite_course`` is checked when it is a course id (decimal digits,
        e.g. ``"42"``): ``prerequisite_not_met`` until the member completed it. Any
        other text is a label from before courses existed: shown, not checked. A
        course id with no course check mounted in this process fails closed
        (``unavailable``) rather than letting everyone in."""
        if ref is None or not ref.strip().isdecimal():
            return
        check = self.prerequisite_checks.get("course")
        if check is None:
            raise RequestError(ErrorCode.UNAVAILABLE,
                               "course prerequisites cannot be checked here (no courses "
                               "service is mounted)")
        reason = await check(community_id, user_id, ref.strip())
        if reason is not None:
            raise RequestError(ErrorCode.PREREQUISITE_NOT_MET, reason)

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
        failures = ThrottledLog(log, interval_s=60.0)  # a database outage: no traceback
        while True:
            try:
                await self.send_due_reminders()
            except Exception as exc:
                failures.failure(exc, "live session reminders (retrying)")
            else:
                failures.resolved("database")
            await asyncio.sleep(self.reminder_every_s)

    async def run(self) -> None:
        """The reminders (the attendance writer is :meth:`AttendanceLog.run`, a task
        of its own). Cancel to stop."""
        await self._reminder_loop()


__all__ = ["LiveService", "StageRooms", "StageVoice", "VoiceHook", "speakers_of"]
