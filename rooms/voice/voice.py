"""Voice rooms on the gateway (issue 6): join, leave, state, moderation, sanctions.

The gateway signals; a media worker (SFU, ``rooms/media/``) carries the audio. This
service owns everything in between:

Who may join
    A ``voice`` or ``stage`` channel the session can view, with ``CONNECT_VOICE``
    there; never while timed out (``timed_out``) or banned (``banned``). The role
    follows ``SPEAK``: without it a member joins as a listener, never forwarded. On a
    stage only members promoted with :meth:`VoiceService.set_role` (live sessions) speak.
    A server mute (``voice_server_mute``, a row in PostgreSQL) keeps a member unheard
    until lifted, across re-joins. All checks but the ban and server-mute lookups read
    the session's cached view (``rooms/realtime/access.py``): no query per check.

One participation per member
    The media participant id is the user id, so a member is in one room at a time:
    joining from a second session (or node) takes the first out (``voice_disconnected``
    with ``replaced``). Each participation carries a random token, so a late leave of
    the old one never removes the new one (``rooms/voice/voice_roster.py``).

Sanctions and permission changes, on every node
    A participant lives on the node of its session. Timeouts, kicks, bans, lost
    channels and changed roles already reach every session of the member through the
    hub's control events (``rooms/realtime/control.py``); the hub then calls
    :meth:`VoiceService.session_changed` (a view listener), which re-checks the participant from the
    session's updated view: no view or no ``CONNECT_VOICE`` or timed out -> out at once
    (``sanctioned`` / ``permission``); ``SPEAK`` lost -> muted at the media worker at
    once (its packets are dropped there), role ``listener``.

Moderation (``rooms/voice/voice_moderation.py``)
    ``voice_server_mute``, ``voice_disconnect`` and ``voice_move`` are checked like the
    other sanctions, audited, then carried to the node holding the target by a command
    on the process-internal bus topic ``x.voice``; that node applies it here.

Events
    ``voice_state_update`` goes to the channel topic (every session that can view the
    channel, on every node, resumable like any event); ``voice_speaking`` is ephemeral
    (skipped for a congested client). ``voice_move_request`` and ``voice_disconnected``
    go to the one session concerned.

Media (``rooms/voice/voice_media.py``)
    Coded against :class:`MediaBackend` (``rooms/media/pool.py`` satisfies it). Room
    ids are the channel id in decimal. Media events arrive through
    :meth:`VoiceService.media_speaking` and :meth:`VoiceService.media_participant_state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import msgspec

from persistence import moderation as moderation_db
from persistence import voice as voice_db
from persistence.database import Database
from protocol.base import Request
from protocol.codes import ErrorCode
from protocol.communities import CommunityUnavailable
from protocol.frames import Empty, Event, Result
from protocol.limits import Limits
from protocol.models import Channel, ChannelKind
from protocol.moderation import MemberSanctioned
from protocol.voice import (
    VoiceDisconnected,
    VoiceFetchStates,
    VoiceIceCandidate,
    VoiceJoin,
    VoiceJoined,
    VoiceLeave,
    VoiceLeaveReason,
    VoiceMoveRequested,
    VoiceParticipant,
    VoiceRole,
    VoiceSetState,
    VoiceSpeaking,
    VoiceStatesResult,
    VoiceStateUpdated,
)
from rooms.errors import RequestError, forbidden, not_found
from rooms.moderation.enforcement import timeout_remaining_ms
from rooms.moderation.moderation import Access
from rooms.realtime.access import session_channel_bits
from rooms.realtime.bus import channel_topic
from rooms.realtime.hub import Hub
from rooms.realtime.permissions import Permission
from rooms.realtime.rate_limit import RateLimiter
from rooms.realtime.sessions import Session
from rooms.voice.voice_media import (
    MediaBackend,
    MediaLink,
    StageOptions,
    check_offer,
    media_code,
    room_id,
)
from rooms.voice.voice_moderation import (
    COMMAND_TOPIC,
    VOICE_KINDS,
    AnyCommand,
    DropCommand,
    MuteCommand,
    RoleCommand,
    VoiceModeration,
    decode_command,
    publish_command,
    voice_channel,
)
from rooms.voice.voice_roster import VoiceRoster

log = logging.getLogger(__name__)

P = Permission
ROOM_IDLE_CLOSE_S = 30.0
"""An empty room is closed on its media worker this long after its last participant
left (unless someone joined meanwhile), so a quick re-join finds it still open."""
MAX_PENDING_TASKS = 10_000
"""Media calls started from bus commands and media events, in flight at once; beyond
it new ones are refused (logged) rather than queued without bound."""

Handler = Callable[[Session, Any], Awaitable[Result]]
PresenceCallback = Callable[[int, int, float], None]
"""(channel_id, user_id, at: unix seconds) -> nothing; must not block (live sessions
batch their attendance writes)."""


# --------------------------------------------------------------------- participants


class LocalParticipant:
    """A participant whose session (and media connection) is on this process."""

    __slots__ = ("candidates", "channel", "session", "state", "token")

    def __init__(self, session: Session, channel: Channel, state: VoiceParticipant,
                 token: str) -> None:
        self.session = session
        self.channel = channel
        self.state = state
        self.token = token
        self.candidates = 0

    @property
    def channel_id(self) -> int:
        return self.channel.id

    @property
    def community_id(self) -> int:
        assert self.channel.community_id is not None
        return self.channel.community_id

    def heard(self) -> bool:
        """Forwarded by the media worker: a speaker, not muted by anyone."""
        s = self.state
        return s.role is VoiceRole.SPEAKER and not s.server_mute and not s.self_mute


class VoiceService:
    """Serves the voice requests and keeps this process's participants in line."""

    def __init__(self, db: Database, hub: Hub, limits: Limits, access: Access,
                 roster: VoiceRoster, media: MediaLink | None = None, *,
                 enabled: bool = True, mix_listeners_above: int | None = None,
                 join_limiter: RateLimiter | None = None,
                 stage_options: StageOptions | None = None,
                 on_join: Sequence[PresenceCallback] = (),
                 on_leave: Sequence[PresenceCallback] = ()) -> None:
        self.db = db
        self.hub = hub
        self.limits = limits
        self.access = access
        self.roster = roster
        self.moderation = VoiceModeration(db, hub, limits, access, roster)
        """Server mute, disconnect and move (``rooms/voice/voice_moderation.py``)."""
        self.workers = media or MediaLink()
        """The node's media workers, once the server has reached them."""
        self.enabled = enabled
        self.mix_listeners_above = mix_listeners_above
        self.join_limiter = join_limiter
        """Per-member ``voice_join`` rate (``limits.voice_joins_per_window``), shared by
        every node through Redis: the connection's token bucket alone lets one member
        with many connections make the media workers handshake without end."""
        """Default for rooms without :meth:`configure_room` options (config
        ``voice_mix_listeners_above``)."""
        self._local: dict[int, LocalParticipant] = {}
        """user id -> their participation held by this process."""
        self._locks: dict[int, asyncio.Lock] = {}
        self._speaking: dict[int, list[int]] = {}
        """channel id -> who the media worker last said is talking."""
        self._room_options: dict[int, tuple[int | None, str | None]] = {}
        self.stage_options = stage_options
        """Where a stage's room options come from on every process (live sessions),
        not only on the one that started the session."""
        self._room_community: dict[int, int] = {}
        """channel id -> community id of rooms this process joined someone to."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_join = list(on_join)
        """Told whenever a member enters a room on this process (live sessions:
        attendance); ``(channel_id, user_id, at)``, must not block."""
        self._on_leave = list(on_leave)
        """Told whenever a member leaves a room on this process, for whatever reason."""
        hub.listen(COMMAND_TOPIC, self._on_command)
        hub.control.on_view_changed(self.session_changed)
        hub.control.ephemeral(VoiceSpeaking)

    @property
    def media(self) -> MediaBackend | None:
        """The media workers, or None while there are none (see :class:`MediaLink`)."""
        return self.workers.backend

    # ---------------------------------------------------------------- live sessions

    async def set_role(self, channel_id: int, user_id: int, speaker: bool) -> None:
        """Promote (``speaker``) or demote a member on a stage, wherever they are
        connected, now or when they join later. The caller checks who may do it. A
        member without ``SPEAK`` in the channel stays a listener."""
        await self.roster.set_speaker(channel_id, user_id, speaker)
        await self._command(RoleCommand(channel_id=channel_id, user_id=user_id,
                                        speaker=speaker))

    def configure_room(self, channel_id: int, *, mix_listeners_above: int | None = None,
                       record_path: str | None = None) -> None:
        """Options for the room when this process opens it on a media worker (a
        stage's mixing and recording). A room with a ``record_path`` is not closed when
        it empties: its owner closes it with :meth:`close_room`."""
        self._room_options[channel_id] = (mix_listeners_above, record_path)

    async def apply_room_options(self, channel_id: int) -> None:
        """Send the room's options (:meth:`configure_room`) to the media side now.

        Members may have joined a stage before its session started (the host testing
        sound): the room is then already open on a worker without a recorder or mix,
        and options set only here would never reach it. ``OpenRoom`` is idempotent,
        and on an open room without audio the worker attaches the mix and recorder.
        Without media nothing happens: the first join opens the room with them."""
        if self.media is None:
            return
        mix, record = self._room_options.get(channel_id, (self.mix_listeners_above, None))
        await self.media.open_room(room_id(channel_id), mix_listeners_above=mix,
                                   record_path=record)

    async def close_room(self, channel_id: int) -> object:
        """Everyone out, then close the media room; returns the media's result
        (recording path and duration) or None without media."""
        for entry in await self.roster.entries(channel_id):
            await self._command(DropCommand(user_id=entry.participant.user_id,
                                            channel_id=channel_id,
                                            reason=VoiceLeaveReason.MODERATOR))
        self._room_options.pop(channel_id, None)
        await self.roster.clear_speakers(channel_id)
        if self.media is None:
            return None
        return await self.media.close_room(room_id(channel_id))

    def participant(self, user_id: int) -> VoiceParticipant | None:
        """The member's state if their participation is on this process."""
        local = self._local.get(user_id)
        return local.state if local is not None else None

    async def participants(self, channel_id: int) -> list[VoiceParticipant]:
        """Everyone in the room, on every node."""
        return await self._with_speaking(channel_id, await self.roster.participants(channel_id))

    # --------------------------------------------------------------------- running

    async def run(self) -> None:
        """Background: renew this node's roster lease (a dead node's participants
        vanish from every list once it lapses)."""
        interval = self.roster.ttl_s / 3
        while True:
            try:
                await self.roster.renew()
            except Exception as exc:
                log.warning("voice roster lease not renewed: %s", exc)
            await asyncio.sleep(interval)

    async def close(self) -> None:
        """Shutdown: take this process's participants out (others see them leave)."""
        for user_id in list(self._local):
            local = self._local.get(user_id)
            if local is not None:
                with contextlib.suppress(Exception):
                    await self._drop(local, VoiceLeaveReason.SESSION)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.roster.close()

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        if len(self._tasks) >= MAX_PENDING_TASKS:
            log.error("voice: too much pending work, %s dropped", what)
            coro.close()
            return
        # The coroutine itself is the task (not wrapped): a task cancelled at shutdown
        # before it ever ran still closes its coroutine.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(t, what))

    def _task_done(self, task: asyncio.Task[None], what: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("voice: %s failed", what, exc_info=task.exception())

    def _lock(self, user_id: int) -> asyncio.Lock:
        lock = self._locks.get(user_id)
        if lock is None:
            lock = self._locks[user_id] = asyncio.Lock()
        return lock

    def _release_lock(self, user_id: int) -> None:
        lock = self._locks.get(user_id)
        if lock is not None and not lock.locked() and user_id not in self._local:
            del self._locks[user_id]

    # ------------------------------------------------------------------ join/leave

    async def _not_visible(self, session: Session, channel_id: int) -> RequestError:
        """A channel the session does not see: ``banned`` if the member is banned
        from its community (they know it), else ``not_found``."""
        async with self.db.connection() as conn:
            community_id = await conn.fetchval(
                "SELECT community_id FROM channels WHERE id = $1", channel_id)
            ban = await moderation_db.active_ban(conn, community_id, session.user.id) \
                if community_id is not None else None
        if ban is not None:
            left = None
            if ban.expires_at is not None:
                left = max(int(ban.expires_at.timestamp() * 1000 - time.time() * 1000), 1)
            return RequestError(ErrorCode.BANNED, "you are banned from this community",
                                retry_after_ms=left)
        return not_found("unknown channel")

    async def join(self, session: Session, req: VoiceJoin) -> VoiceJoined:
        if not self.enabled:
            raise RequestError(ErrorCode.VOICE_UNAVAILABLE, "voice is disabled here")
        if req.channel_id not in session.channels:
            raise await self._not_visible(session, req.channel_id)
        channel = voice_channel(session, req.channel_id)
        assert channel.community_id is not None
        left = timeout_remaining_ms(session, channel.community_id)
        if left:
            raise RequestError(ErrorCode.TIMED_OUT, "you are timed out in this community",
                               retry_after_ms=left)
        bits = session_channel_bits(session, channel)
        if not bits & P.CONNECT_VOICE:
            raise forbidden("you may not connect to this voice channel")
        if len(req.sdp) > self.limits.max_sdp_chars:
            # The wire schema caps an SDP at the protocol's default; an operator who
            # lowers the limit (sent in hello) is held to it here.
            raise RequestError(ErrorCode.INVALID_FRAME,
                               f"the offer is over {self.limits.max_sdp_chars} characters "
                               "(limits.max_sdp_chars)")
        check_offer(req.sdp, self.limits.voice_receive_slots)
        if self.join_limiter is not None:
            wait = await self.join_limiter.check(f"voice_join:{session.user.id}")
            if wait is not None:
                raise RequestError(ErrorCode.RATE_LIMITED,
                                   f"at most {self.limits.voice_joins_per_window} voice joins "
                                   f"per {self.limits.voice_join_window_ms // 1000} s",
                                   retry_after_ms=wait)
        if self.media is None:
            raise RequestError(ErrorCode.VOICE_UNAVAILABLE, "no media workers")
        user_id = session.user.id
        try:
            async with self._lock(user_id):
                return await self._join_locked(session, channel, bits, req)
        finally:
            # After the block: inside it the lock is still held, so it could never be
            # forgotten and every failed join would leave one behind.
            self._release_lock(user_id)

    async def _join_locked(self, session: Session, channel: Channel, bits: Permission,
                           req: VoiceJoin) -> VoiceJoined:
        assert self.media is not None and channel.community_id is not None
        user_id = session.user.id
        token = uuid.uuid4().hex
        # One participation per member: this process's first, then every other node's.
        old = self._local.get(user_id)
        if old is not None:
            await self._drop(old, VoiceLeaveReason.LEFT if old.session is session
                             else VoiceLeaveReason.REPLACED)
        await self._command(DropCommand(user_id=user_id, channel_id=None,
                                        reason=VoiceLeaveReason.REPLACED, keep_token=token,
                                        joining_channel_id=channel.id))
        if any(e.participant.user_id == user_id for e in await self.roster.entries(channel.id)):
            # Still in this room from another session or node: out of the worker first.
            with contextlib.suppress(Exception):
                await self.media.leave(room_id(channel.id), user_id)
        async with self.db.connection() as conn:
            server_mute = await voice_db.is_server_muted(conn, channel.community_id, user_id)
        role = await self._role_for(channel, bits, user_id)
        state = VoiceParticipant(user_id=user_id, self_mute=req.self_mute,
                                 self_deaf=req.self_deaf, server_mute=server_mute, role=role)
        if not await self.roster.add(channel.id, state, token,
                                     self.limits.max_voice_room_participants):
            raise RequestError(ErrorCode.VOICE_CAPACITY,
                               f"the room is full ({self.limits.max_voice_room_participants})")
        local = LocalParticipant(session, channel, state, token)
        try:
            mix, record = await self._options(channel.id, channel.kind)
            await self.media.open_room(room_id(channel.id), mix_listeners_above=mix,
                                       record_path=record)
            answer = (await self.media.join(room_id(channel.id), user_id, req.sdp,
                                            can_speak=local.heard(),
                                            deafened=state.self_deaf)).sdp
        except Exception as exc:
            await self.roster.remove(channel.id, user_id, token)
            if media_code(exc) == "capacity":
                raise RequestError(ErrorCode.VOICE_CAPACITY,
                                   "the media workers are full; try again later") from exc
            if media_code(exc) == "invalid_offer":
                raise RequestError(ErrorCode.INVALID_ARGUMENT,
                                   "the media worker cannot use this offer") from exc
            log.exception("media join failed in room %d", channel.id)
            raise RequestError(ErrorCode.VOICE_UNAVAILABLE,
                               "the media worker did not accept the connection") from exc
        if session.is_superseded or channel.id not in session.channels:
            # The session went away or lost the channel while the worker answered.
            await self._cleanup_media(channel.id, user_id, token, kind=channel.kind)
            raise not_found("unknown channel")
        self._local[user_id] = local
        self._room_community[channel.id] = channel.community_id
        participants = await self.roster.participants(channel.id)
        await self._announce(local, joined=True)
        at = time.time()
        for callback in self._on_join:
            self._call(callback, channel.id, user_id, at)
        return VoiceJoined(channel_id=channel.id, sdp=answer,
                           participants=await self._with_speaking(channel.id, participants))

    async def _role_for(self, channel: Channel, bits: Permission, user_id: int) -> VoiceRole:
        if not bits & P.SPEAK:
            return VoiceRole.LISTENER
        if channel.kind is ChannelKind.STAGE and \
                not await self.roster.is_speaker(channel.id, user_id):
            return VoiceRole.LISTENER
        return VoiceRole.SPEAKER

    async def _with_speaking(self, channel_id: int,
                             participants: list[VoiceParticipant]) -> list[VoiceParticipant]:
        talking = set(self._speaking.get(channel_id, ()))
        if not talking:
            return participants
        return [msgspec.structs.replace(p, speaking=p.user_id in talking)
                for p in participants]

    def _call(self, callback: PresenceCallback, channel_id: int, user_id: int,
              at: float) -> None:
        try:
            callback(channel_id, user_id, at)
        except Exception:
            log.exception("voice join/leave callback failed")

    async def _cleanup_media(self, channel_id: int, user_id: int, token: str, *,
                             kind: ChannelKind, leave_media: bool = True) -> None:
        await self.roster.remove(channel_id, user_id, token)
        if self.media is None:
            return
        if leave_media:
            try:
                await self.media.leave(room_id(channel_id), user_id)
            except Exception as exc:
                log.warning("media leave of %d in room %d failed: %s", user_id, channel_id,
                            exc)
        if self._room_options.get(channel_id, (None, None))[1] is None:
            self._spawn(self._close_if_idle(channel_id, kind), "idle room close")

    async def _options(self, channel_id: int, kind: ChannelKind
                       ) -> tuple[int | None, str | None]:
        """(mix_listeners_above, record_path) of a room: as configured here, else as
        its live session says (the session may have been started on another node),
        else this service's default mix threshold (config
        ``voice_mix_listeners_above``; None: pure forwarding). Only a stage can have a
        live session: plain voice rooms never cost a query here."""
        options = self._room_options.get(channel_id)
        if options is not None:
            return options
        if kind is ChannelKind.STAGE and self.stage_options is not None:
            found = await self.stage_options.stage_room_options(channel_id)
            if found is not None:
                return found
        return self.mix_listeners_above, None

    async def _close_if_idle(self, channel_id: int, kind: ChannelKind) -> None:
        await asyncio.sleep(ROOM_IDLE_CLOSE_S)
        if self.media is None or await self.roster.entries(channel_id):
            return
        if (await self._options(channel_id, kind))[1] is not None:
            return  # a recorded stage: closed by its session's end, not when empty
        # Again after the awaits above, right before closing: a member who joined
        # meanwhile must not lose the room they were just admitted to.
        if await self.roster.entries(channel_id):
            return
        self._room_community.pop(channel_id, None)
        self._speaking.pop(channel_id, None)
        try:
            await self.media.close_room(room_id(channel_id))
        except Exception as exc:
            log.warning("media close of room %d failed: %s", channel_id, exc)

    async def _drop(self, local: LocalParticipant, reason: VoiceLeaveReason,
                    to_channel_id: int | None = None, *, leave_media: bool = True) -> None:
        """Take a local participant out: state, roster, media, events, callbacks."""
        user_id = local.state.user_id
        if self._local.get(user_id) is not local:
            return
        del self._local[user_id]
        session = local.session
        if reason is not VoiceLeaveReason.LEFT or to_channel_id is not None:
            if to_channel_id is not None:
                session.deliver(session.codec.encode_event(VoiceMoveRequested(
                    channel_id=local.channel_id, to_channel_id=to_channel_id)))
            session.deliver(session.codec.encode_event(VoiceDisconnected(
                channel_id=local.channel_id, reason=reason)))
        at = time.time()
        for callback in self._on_leave:
            self._call(callback, local.channel_id, user_id, at)
        try:
            await self._cleanup_media(local.channel_id, user_id, local.token,
                                      kind=local.channel.kind,
                                      leave_media=leave_media)
        finally:
            await self._announce(local, joined=False)
            self._release_lock(user_id)

    async def _announce(self, local: LocalParticipant, *, joined: bool) -> None:
        s = local.state
        await self.hub.publish(channel_topic(local.channel_id), VoiceStateUpdated(
            community_id=local.community_id, channel_id=local.channel_id, user_id=s.user_id,
            joined=joined, self_mute=s.self_mute, self_deaf=s.self_deaf,
            server_mute=s.server_mute, role=s.role))

    async def _restate(self, local: LocalParticipant, state: VoiceParticipant) -> None:
        """Apply a new state: the media first (a mute takes effect at once), then the
        roster and everyone's view."""
        if state == local.state:
            return
        was_heard, was_deaf = local.heard(), local.state.self_deaf
        local.state = state
        if self.media is not None and (local.heard() != was_heard
                                       or state.self_deaf != was_deaf):
            await self.media.set_participant(room_id(local.channel_id), state.user_id,
                                             can_speak=local.heard(),
                                             deafened=state.self_deaf)
        await self.roster.update(local.channel_id, state, local.token)
        await self._announce(local, joined=True)

    def _mine(self, session: Session, channel_id: int) -> LocalParticipant:
        local = self._local.get(session.user.id)
        if local is None or local.session is not session or local.channel_id != channel_id:
            raise not_found("you are not in this voice room")
        return local

    async def leave(self, session: Session, req: VoiceLeave) -> Empty:
        local = self._local.get(session.user.id)
        if local is not None and local.session is session \
                and local.channel_id == req.channel_id:
            await self._drop(local, VoiceLeaveReason.LEFT)
        return Empty()

    async def ice_candidate(self, session: Session, req: VoiceIceCandidate) -> Empty:
        local = self._mine(session, req.channel_id)
        if local.candidates >= self.limits.max_voice_ice_candidates:
            raise RequestError(ErrorCode.RATE_LIMITED,
                               f"at most {self.limits.max_voice_ice_candidates} "
                               "ICE candidates per join")
        if req.candidate and not req.candidate.startswith(("candidate:", "a=candidate:")):
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "not an ICE candidate line")
        local.candidates += 1
        assert self.media is not None
        try:
            await self.media.add_candidate(room_id(local.channel_id), session.user.id,
                                           req.candidate, req.sdp_mid, req.sdp_mline_index)
        except Exception as exc:
            if media_code(exc) in ("bad_frame", "invalid_argument"):
                raise RequestError(ErrorCode.INVALID_ARGUMENT,
                                   "the media worker refused the candidate") from exc
            log.warning("media add_candidate failed: %s", exc)
            raise RequestError(ErrorCode.VOICE_UNAVAILABLE,
                               "the media worker did not take the candidate") from exc
        return Empty()

    async def set_state(self, session: Session, req: VoiceSetState) -> Empty:
        local = self._mine(session, req.channel_id)
        await self._restate(local, msgspec.structs.replace(
            local.state, self_mute=req.self_mute, self_deaf=req.self_deaf))
        return Empty()

    async def fetch_states(self, session: Session, req: VoiceFetchStates) -> VoiceStatesResult:
        channel = voice_channel(session, req.channel_id)
        return VoiceStatesResult(channel_id=channel.id,
                                 participants=await self.participants(channel.id))

    # ----------------------------------------------------------------- commands

    async def _command(self, command: AnyCommand) -> None:
        await publish_command(self.hub, command)

    def _on_command(self, payload: bytes) -> None:
        try:
            command = decode_command(payload)
        except msgspec.DecodeError:
            log.exception("undecodable voice command")
            return
        local = self._local.get(command.user_id)
        if local is None:
            return
        if isinstance(command, DropCommand):
            if command.keep_token == local.token or (
                    command.channel_id is not None and command.channel_id != local.channel_id):
                return
            self._spawn(self._drop(local, command.reason, command.to_channel_id,
                                   leave_media=command.joining_channel_id != local.channel_id),
                        "drop")
        elif isinstance(command, MuteCommand):
            if local.community_id == command.community_id:
                self._spawn(self._restate(local, msgspec.structs.replace(
                    local.state, server_mute=command.muted)), "server mute")
        elif local.channel_id == command.channel_id:
            self._spawn(self._reevaluate(local), "stage role")

    async def _reevaluate(self, local: LocalParticipant) -> None:
        """Re-derive the role from the session's view and the stage's speakers."""
        if self._local.get(local.state.user_id) is not local:
            return
        bits = session_channel_bits(local.session, local.channel)
        role = await self._role_for(local.channel, bits, local.state.user_id)
        await self._restate(local, msgspec.structs.replace(local.state, role=role))

    # ------------------------------------------------- sanctions and view changes

    def session_changed(self, session: Session, event: Event | None) -> None:
        """The hub changed ``session``'s view (a control event, or an access refresh:
        ``event`` None). If the session is in a room here, check it may still be:
        out at once when it cannot view the channel, lost ``CONNECT_VOICE`` or is timed
        out; re-derived role when ``SPEAK`` may have changed. No I/O here."""
        local = self._local.get(session.user.id)
        if local is None or local.session is not session:
            return
        channel = session.channels.get(local.channel_id)
        cid = local.community_id
        sanctioned = (isinstance(event, CommunityUnavailable) and event.sanction is not None
                      and event.community_id == cid) or (
            isinstance(event, MemberSanctioned) and event.sanction.community_id == cid
            and not event.lifted and timeout_remaining_ms(session, cid) > 0)
        if channel is None or channel.kind not in VOICE_KINDS:
            reason = VoiceLeaveReason.SANCTIONED if sanctioned \
                else VoiceLeaveReason.PERMISSION
            self._spawn(self._drop(local, reason), "sanction drop")
            return
        local.channel = channel
        if timeout_remaining_ms(session, cid) > 0:
            self._spawn(self._drop(local, VoiceLeaveReason.SANCTIONED), "timeout drop")
            return
        bits = session_channel_bits(session, channel)
        if not bits & P.CONNECT_VOICE:
            self._spawn(self._drop(local, VoiceLeaveReason.PERMISSION), "permission drop")
            return
        speaks = bool(bits & P.SPEAK)
        if not speaks and local.state.role is VoiceRole.SPEAKER:
            # Muted at the worker before anything else happens.
            self._spawn(self._restate(local, msgspec.structs.replace(
                local.state, role=VoiceRole.LISTENER)), "speak revoked")
        elif speaks and local.state.role is VoiceRole.LISTENER:
            self._spawn(self._reevaluate(local), "speak granted")

    def session_closed(self, session: Session) -> None:
        """The session is gone for good here: its participation ends."""
        local = self._local.get(session.user.id)
        if local is not None and local.session is session:
            self._spawn(self._drop(local, VoiceLeaveReason.SESSION), "session closed")

    # --------------------------------------------------------------- media events

    def media_speaking(self, media_room_id: str, participant_ids: list[int]) -> None:
        """The media worker's ``Speaking`` event: publish ``voice_speaking`` to the
        channel's viewers (ephemeral).

        No de-duplication here: the worker sends a room's changes to ONE gateway
        connection (``rooms/media/worker.py: Worker._speaking_target``), only on change,
        so each change is published once on the bus whatever the number of gateway
        processes. (Comparing with this process's last value would be wrong anyway:
        when the routing moves to another process, this process's copy is stale.)"""
        try:
            channel_id = int(media_room_id)
        except ValueError:
            return
        ids = sorted(set(participant_ids))
        if ids:
            self._speaking[channel_id] = ids
        else:
            self._speaking.pop(channel_id, None)
        community_id = self._community_of(channel_id)
        if community_id is None:
            return
        self._spawn(self.hub.publish(channel_topic(channel_id), VoiceSpeaking(
            community_id=community_id, channel_id=channel_id, user_ids=ids)), "speaking")

    def _community_of(self, channel_id: int) -> int | None:
        return self._room_community.get(channel_id)

    def media_participant_state(self, media_room_id: str, participant_id: int,
                                state: str) -> None:
        """The media worker's ``ParticipantState``: a failed or closed connection takes
        the participant out (``voice_disconnected`` with ``media``)."""
        local = self._local.get(participant_id)
        if local is None or room_id(local.channel_id) != media_room_id:
            return
        if state in ("failed", "closed"):
            self._spawn(self._drop(local, VoiceLeaveReason.MEDIA), "media closed")

    def media_worker_gone(self, worker: str, media_room_ids: list[str]) -> None:
        """A media worker's link ended (``MediaPool.on_worker_gone``): the rooms this
        process had placed there are gone, so their participants here are out at once
        (``voice_disconnected`` with ``media``; viewers see ``joined: false``). Their
        clients join again with a new offer; the pool has cleared the placement, so
        that join lands on a live worker."""
        gone = set(media_room_ids)
        for local in list(self._local.values()):
            if room_id(local.channel_id) in gone:
                self._spawn(self._drop(local, VoiceLeaveReason.MEDIA, leave_media=False),
                            f"worker {worker} gone")
        for media_room in gone:
            with contextlib.suppress(ValueError):
                self._speaking.pop(int(media_room), None)

    # ------------------------------------------------------------------ gateway

    def handlers(self) -> dict[type[Request], Handler]:
        """WS request type -> handler, registered on the chat service."""
        async def join(session: Session, req: VoiceJoin) -> Result:
            return await self.join(session, req)

        async def leave(session: Session, req: VoiceLeave) -> Result:
            return await self.leave(session, req)

        async def candidate(session: Session, req: VoiceIceCandidate) -> Result:
            return await self.ice_candidate(session, req)

        async def set_state(session: Session, req: VoiceSetState) -> Result:
            return await self.set_state(session, req)

        async def states(session: Session, req: VoiceFetchStates) -> Result:
            return await self.fetch_states(session, req)

        return {VoiceJoin: join, VoiceLeave: leave, VoiceIceCandidate: candidate,
                VoiceSetState: set_state, VoiceFetchStates: states,
                **self.moderation.handlers()}
