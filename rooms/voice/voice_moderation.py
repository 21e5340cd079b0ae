"""Voice moderation: server mute, disconnect and move, and the bus commands that carry
them (and stage roles) to the node holding the participant.

``voice_server_mute`` needs ``MUTE_MEMBERS`` at community level (the mute is stored per
community and holds in every voice room, so a channel override granting the bit does
not suffice); ``voice_disconnect`` and ``voice_move`` need ``MOVE_MEMBERS`` in the
channel. Each is checked like the other sanctions (the actor must outrank the target,
``rooms/moderation/moderation.py: sanction_rank``), audited in the same transaction as its change,
then published as a command on the process-internal bus topic ``x.voice``; the node
holding the target applies it (``rooms/voice/voice.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from persistence import audit as audit_db
from persistence import moderation as moderation_db
from persistence import voice as voice_db
from persistence.database import Database
from protocol.base import Request
from protocol.codes import ErrorCode
from protocol.frames import Result
from protocol.limits import Limits
from protocol.models import Channel, ChannelKind, Role
from protocol.moderation import ModActionResult, ModActionTaken
from protocol.voice import (
    VoiceDisconnect,
    VoiceLeaveReason,
    VoiceMove,
    VoiceParticipant,
    VoiceServerMute,
)
from rooms.errors import RequestError, forbidden, not_found
from rooms.moderation.moderation import Access, has, sanction_rank, wire_entry
from rooms.moderation.moderation import _reason as check_reason
from rooms.realtime.access import session_channel_bits, session_community_bits
from rooms.realtime.bus import mod_topic
from rooms.realtime.hub import Hub
from rooms.realtime.permissions import Permission
from rooms.realtime.sessions import Session
from rooms.voice.voice_roster import VoiceRoster

P = Permission
VOICE_KINDS = (ChannelKind.VOICE, ChannelKind.STAGE)
COMMAND_TOPIC = "x.voice"
"""Process-internal bus topic: voice commands every node receives (never sessions)."""

Handler = Callable[[Session, Any], Awaitable[Result]]


def voice_channel(session: Session, channel_id: int) -> Channel:
    """A voice or stage channel of a community, from the session's own view."""
    channel = session.channels.get(channel_id)
    if channel is None or channel.community_id is None:
        raise not_found("unknown channel")
    if channel.kind not in VOICE_KINDS:
        raise RequestError(ErrorCode.INVALID_ARGUMENT, "not a voice or stage channel")
    return channel


class Command(msgspec.Struct, frozen=True, tag_field="k"):
    """A change every node hears on ``x.voice``; the node holding the participant
    applies it."""


class DropCommand(Command, frozen=True, tag="drop"):
    user_id: int
    channel_id: int | None
    """None: whatever room the member is in."""
    reason: VoiceLeaveReason
    keep_token: str | None = None
    """Do not drop this participation (the one that caused the drop)."""
    to_channel_id: int | None = None
    """A move: the dropped session gets ``voice_move_request`` to here."""
    joining_channel_id: int | None = None
    """The room the replacing participation joins: if it is the dropped one's room,
    the joiner has already replaced it at the media worker (same participant id), so
    the dropped side must not send the worker a ``leave`` that would cut the new one."""


class MuteCommand(Command, frozen=True, tag="mute"):
    community_id: int
    user_id: int
    muted: bool


class RoleCommand(Command, frozen=True, tag="role"):
    channel_id: int
    user_id: int
    speaker: bool


AnyCommand = DropCommand | MuteCommand | RoleCommand
encode_command = msgspec.msgpack.Encoder().encode
decode_command = msgspec.msgpack.Decoder(AnyCommand).decode


async def publish_command(hub: Hub, command: AnyCommand) -> None:
    """Tell every node (the one holding ``command.user_id`` applies it)."""
    await hub.bus.publish(COMMAND_TOPIC, encode_command(command))


class VoiceModeration:
    """Serves ``voice_server_mute``, ``voice_disconnect`` and ``voice_move``."""

    def __init__(self, db: Database, hub: Hub, limits: Limits, access: Access,
                 roster: VoiceRoster) -> None:
        self.db = db
        self.hub = hub
        self.limits = limits
        self.access = access
        self.roster = roster

    def handlers(self) -> dict[type[Request], Handler]:
        async def mute(session: Session, req: VoiceServerMute) -> Result:
            return await self.server_mute(session, req)

        async def disconnect(session: Session, req: VoiceDisconnect) -> Result:
            return await self.disconnect(session, req)

        async def move(session: Session, req: VoiceMove) -> Result:
            return await self.move(session, req)

        return {VoiceServerMute: mute, VoiceDisconnect: disconnect, VoiceMove: move}

    async def _command(self, command: AnyCommand) -> None:
        await publish_command(self.hub, command)

    async def _moderate(self, session: Session, channel_id: int, perm: Permission,
                        user_id: int, *, community_wide: bool = False) -> Channel:
        """The actor's right (``perm`` in the channel, from their view) and rank over
        the target (from PostgreSQL, like every sanction). ``community_wide``: the
        action's effect reaches every voice room of the community (a server mute), so
        ``perm`` must also come from the actor's community-level roles; a channel
        override granting it only makes them a moderator of that one channel."""
        channel = voice_channel(session, channel_id)
        assert channel.community_id is not None
        if not has(session_channel_bits(session, channel), perm):
            raise forbidden("you lack the permission for this")
        if community_wide and not has(
                session_community_bits(session, channel.community_id), perm):
            raise forbidden("a server mute holds in every voice room of the community: "
                            "it needs the permission community-wide, not in one channel")
        if user_id == session.user.id:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "not on yourself")
        async with self.db.connection() as conn:
            target = await moderation_db.member_state(conn, channel.community_id, user_id)
            if target is None:
                raise not_found("unknown member")
            if target.role is Role.OWNER:
                raise forbidden("nobody moderates the owner")
            actor_rank = await sanction_rank(conn, channel.community_id, session.user.id)
            target_rank = await sanction_rank(conn, channel.community_id, user_id)
        if actor_rank is None:
            raise not_found("unknown channel")
        if target_rank is not None and not actor_rank > target_rank:
            raise forbidden("you can only moderate members below your role")
        return channel

    async def _in_room(self, channel_id: int, user_id: int) -> VoiceParticipant:
        for p in await self.roster.participants(channel_id):
            if p.user_id == user_id:
                return p
        raise not_found("the member is not in this voice room")

    async def _audited(self, community_id: int, actor_id: int, action: str, target_id: int,
                       reason: str | None, before: dict[str, Any] | None,
                       after: dict[str, Any] | None,
                       change: Callable[[Any, int], Awaitable[None]] | None = None) -> int:
        async with self.db.transaction(action) as conn:
            audit_id = await audit_db.record(
                conn, community_id=community_id, actor_id=actor_id, action=action,
                target_type="user", target_id=target_id, reason=reason, before=before,
                after=after)
            if change is not None:
                await change(conn, audit_id)
            entry = await audit_db.get(conn, audit_id)
        if entry is not None:
            await self.hub.publish(mod_topic(community_id),
                                   ModActionTaken(entry=wire_entry(entry)))
        return audit_id

    async def server_mute(self, session: Session, req: VoiceServerMute) -> ModActionResult:
        reason = check_reason(req.reason, self.limits)
        channel = await self._moderate(session, req.channel_id, P.MUTE_MEMBERS, req.user_id,
                                       community_wide=True)
        assert channel.community_id is not None
        cid = channel.community_id

        async def change(conn: Any, audit_id: int) -> None:
            await voice_db.set_server_mute_txn(conn, community_id=cid, user_id=req.user_id,
                                               muted=req.muted, actor_id=session.user.id,
                                               audit_id=audit_id)

        audit_id = await self._audited(
            cid, session.user.id, "voice.mute" if req.muted else "voice.unmute",
            req.user_id, reason, before={"server_mute": not req.muted},
            after={"server_mute": req.muted, "channel_id": channel.id}, change=change)
        await self._command(MuteCommand(community_id=cid, user_id=req.user_id,
                                        muted=req.muted))
        return ModActionResult(audit_id=audit_id)

    async def disconnect(self, session: Session, req: VoiceDisconnect) -> ModActionResult:
        reason = check_reason(req.reason, self.limits)
        channel = await self._moderate(session, req.channel_id, P.MOVE_MEMBERS, req.user_id)
        assert channel.community_id is not None
        await self._in_room(channel.id, req.user_id)
        audit_id = await self._audited(channel.community_id, session.user.id,
                                       "voice.disconnect", req.user_id, reason, before=None,
                                       after={"channel_id": channel.id})
        await self._command(DropCommand(user_id=req.user_id, channel_id=channel.id,
                                        reason=VoiceLeaveReason.MODERATOR))
        return ModActionResult(audit_id=audit_id)

    async def move(self, session: Session, req: VoiceMove) -> ModActionResult:
        reason = check_reason(req.reason, self.limits)
        channel = await self._moderate(session, req.channel_id, P.MOVE_MEMBERS, req.user_id)
        if req.to_channel_id == channel.id:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "already in that channel")
        if req.to_channel_id not in session.channels:
            raise not_found("unknown channel")
        target = voice_channel(session, req.to_channel_id)
        if target.community_id != channel.community_id:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "move within one community")
        if not has(session_channel_bits(session, target), P.MOVE_MEMBERS):
            raise forbidden("you lack the permission for this in the target channel")
        target_bits = await self.access.channel_permissions(target.id, req.user_id)
        if not has(target_bits, P.VIEW_CHANNEL | P.CONNECT_VOICE):
            raise forbidden("the member may not connect to the target channel")
        await self._in_room(channel.id, req.user_id)
        assert channel.community_id is not None
        audit_id = await self._audited(channel.community_id, session.user.id, "voice.move",
                                       req.user_id, reason, before={"channel_id": channel.id},
                                       after={"channel_id": target.id})
        await self._command(DropCommand(user_id=req.user_id, channel_id=channel.id,
                                        reason=VoiceLeaveReason.MOVED,
                                        to_channel_id=target.id))
        return ModActionResult(audit_id=audit_id)
