"""Moderation actions: delete, purge, warn, timeout, kick, ban, unban, slow mode, lock,
lockdown; the audit log; and the live moderator feed they report to.

Every action follows one shape:

1. **Check** the actor's permission bits in the community (or channel) with the one
   resolver (:class:`Access`, ``rooms/realtime/access.py``) — a community or channel the actor
   cannot see is ``not_found`` — and that the actor outranks the target.
2. **Change and audit in one transaction**: the change, its audit entry
   (``persistence/audit.py: record``), and the review item it resolves (``item_id``).
3. **Publish** after the commit, through the bus so every node acts on it: the
   target's sessions (``u.<user>``: timeouts and removals are *control* events the hub
   applies to each session's view, so enforcement needs no query per send), the viewers
   (``ch.<channel>``: deletes), the community (``c.<community>``: member left, lockdown)
   and the moderator feed (``m.<community>``: the audit entry as ``mod_action``, the
   review item as ``review_item``).

Reports, the review queue and appeals are in :mod:`rooms.moderation.review`; raid signals in
:mod:`rooms.moderation.raid`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from persistence import accounts as accounts_db
from persistence import audit as audit_db
from persistence import channels as channels_db
from persistence import messages as messages_db
from persistence import moderation as moderation_db
from persistence import roles as roles_db
from persistence._rows import millis
from persistence.database import Connection, Database
from protocol.base import Request
from protocol.chat import (
    ChannelResult,
    ChannelUpdated,
    DeleteMessage,
    MessageDeleted,
    MessagesDeleted,
)
from protocol.codes import ErrorCode
from protocol.communities import CommunityUnavailable, MemberLeft
from protocol.frames import Empty, Event, Result
from protocol.limits import Limits
from protocol.models import ROLE_RANK, Channel, ChannelKind, Role
from protocol.moderation import (
    AuditEntry,
    AuditLogResult,
    AutomodAlert,
    BanMember,
    CommunityModerationUpdated,
    FetchAuditLog,
    KickMember,
    MemberSanctioned,
    ModActionResult,
    ModActionTaken,
    PurgeMessages,
    RemoveTimeout,
    ReviewItem,
    ReviewItemUpdated,
    ReviewKind,
    Sanction,
    SanctionKind,
    SetChannelLocked,
    SetLockdown,
    SetSlowmode,
    SubscribeModFeed,
    TimeoutMember,
    UnbanMember,
    UnsubscribeModFeed,
    WarnMember,
)
from rooms.chat.chat import check_text
from rooms.errors import RequestError, forbidden, not_found
from rooms.moderation.moderation_view import MODERATION, ModerationControl
from rooms.realtime.bus import channel_topic, community_topic, mod_topic, user_topic
from rooms.realtime.hub import Hub
from rooms.realtime.permissions import Permission
from rooms.realtime.sessions import Session

log = logging.getLogger(__name__)

P = Permission

BULK_DELETE_BATCH = 100
"""Ids per ``message_delete_bulk`` event."""
_MAX_MS = 253_402_300_799_000
"""9999-12-31T23:59:59Z in milliseconds: the last instant a datetime can hold."""
BAN_PURGE_MAX = 5_000
"""Most messages one ban-with-purge deletes (a raider rarely posts more in 7 days)."""


class Access(Protocol):
    """The permission resolver (``rooms/realtime/access.py: AccessResolver`` satisfies it)."""

    async def community_permissions(self, community_id: int, user_id: int) -> Permission: ...

    async def channel_permissions(self, channel_id: int, user_id: int) -> Permission: ...


async def sanction_rank(conn: Connection, community_id: int,
                        user_id: int) -> tuple[int, int] | None:
    """Who may sanction whom: the fixed role first (owner > admin > moderator >
    member), then the highest custom role's position (-1 with none), compared as a
    pair. An actor must be strictly above the target, so a member holding a custom
    "helper" role with TIMEOUT_MEMBERS may time out plain members but not moderators or
    other helpers of the same position. None: not a member."""
    access = await roles_db.member_access(conn, community_id, user_id)
    if access is None:
        return None
    positions = {r.id: r.position for r in await roles_db.list_roles(conn, community_id)}
    highest = max((positions[r] for r in access.role_ids if r in positions), default=-1)
    return ROLE_RANK[access.role], highest


def has(bits: Permission, perm: Permission) -> bool:
    """All of ``perm``, or ADMINISTRATOR."""
    return bool(bits & P.ADMINISTRATOR) or (bits & perm) == perm


def has_any(bits: Permission, perm: Permission) -> bool:
    return bool(bits & P.ADMINISTRATOR) or bool(bits & perm)


def wire_entry(entry: audit_db.AuditEntry) -> AuditEntry:
    return AuditEntry(id=entry.id, community_id=entry.community_id, actor_id=entry.actor_id,
                      action=entry.action, target_type=entry.target_type,
                      target_id=entry.target_id, reason=entry.reason, before=entry.before,
                      after=entry.after, created_at=millis(entry.created_at) or 0)


def _reason(reason: str | None, limits: Limits) -> str | None:
    if reason is None:
        return None
    reason = reason.strip()
    check_text(reason)
    if len(reason) > limits.max_reason_chars:
        raise RequestError(ErrorCode.INVALID_ARGUMENT,
                           f"a reason is at most {limits.max_reason_chars} characters")
    return reason or None


class Outcome:
    """What a committed action publishes: events by topic, the audit entry, the item."""

    __slots__ = ("count", "entry", "events", "item")

    def __init__(self) -> None:
        self.events: list[tuple[str, Event]] = []
        self.entry: audit_db.AuditEntry | None = None
        self.item: ReviewItem | None = None
        self.count = 0


class ModerationService:
    """Serves the moderation actions (WS and REST) and the hooks automod calls."""

    def __init__(self, db: Database, hub: Hub, limits: Limits, access: Access) -> None:
        self.db = db
        self.hub = hub
        self.limits = limits
        self.access = access
        self.control = ModerationControl(hub, hub.control)
        """Keeps every session's timeouts, lockdowns and moderator feeds current."""

    # ---------------------------------------------------------------------- checks

    async def require(self, community_id: int, user_id: int, perm: Permission, *,
                      any_of: bool = False) -> Permission:
        """The actor's bits in the community; not_found if not a member, forbidden if
        ``perm`` (all of it, or one bit with ``any_of``) is missing."""
        bits = await self.access.community_permissions(community_id, user_id)
        if not bits:
            raise not_found("unknown community")
        if not (has_any(bits, perm) if any_of else has(bits, perm)):
            raise forbidden("you lack the permission for this")
        return bits

    async def require_channel(self, channel_id: int, user_id: int, perm: Permission, *,
                              any_of: bool = False) -> Channel:
        """The community channel, if the actor sees it and holds ``perm`` there."""
        bits = await self.access.channel_permissions(channel_id, user_id)
        async with self.db.connection() as conn:
            channel = await channels_db.get_channel(conn, channel_id)
        if channel is None or channel.community_id is None or not has(bits, P.VIEW_CHANNEL):
            raise not_found("unknown channel")
        if not (has_any(bits, perm) if any_of else has(bits, perm)):
            raise forbidden("you lack the permission for this")
        return channel

    async def _target(self, conn: Connection, community_id: int, actor_id: int | None,
                      user_id: int, *, must_be_member: bool = True,
                      ) -> moderation_db.MemberState | None:
        """The target's membership (locked for the transaction), checked against the
        actor: nobody sanctions themselves, the owner, or someone of equal rank."""
        if actor_id is not None and actor_id == user_id:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "you cannot sanction yourself")
        target = await moderation_db.member_state(conn, community_id, user_id, for_update=True)
        if target is None and must_be_member:
            raise not_found("unknown member")
        if actor_id is None:  # automod: never against staff
            if target is not None and target.role is not Role.MEMBER:
                raise forbidden("automod does not sanction moderators")
            return target
        if target is not None and target.role is Role.OWNER:
            raise forbidden("nobody sanctions the owner")
        actor_rank = await sanction_rank(conn, community_id, actor_id)
        if actor_rank is None:
            raise not_found("unknown community")
        target_rank = await sanction_rank(conn, community_id, user_id)
        if target_rank is not None and not actor_rank > target_rank:
            raise forbidden("you can only sanction members below your role")
        return target

    async def _audit(self, conn: Connection, out: Outcome, *, community_id: int,
                     actor_id: int | None, action: str, target_type: str,
                     target_id: int | None, reason: str | None,
                     before: dict[str, Any] | None, after: dict[str, Any] | None) -> int:
        audit_id = await audit_db.record(
            conn, community_id=community_id, actor_id=actor_id, action=action,
            target_type=target_type, target_id=target_id, reason=reason, before=before,
            after=after)
        out.entry = await audit_db.get(conn, audit_id)
        return audit_id

    async def _resolve_item(self, conn: Connection, out: Outcome, item_id: int | None,
                            community_id: int, actor_id: int | None, decision: str,
                            reason: str | None) -> None:
        """Acting on a review item resolves it with the action as its decision (if
        someone resolved it first, the action still stands)."""
        if item_id is None:
            return
        item = await moderation_db.get_item(conn, item_id)
        if item is None or item.community_id != community_id:
            raise not_found("unknown review item")
        out.item = await moderation_db.resolve_item_txn(conn, item_id, actor_id, decision,
                                                        reason)

    async def publish_outcome(self, community_id: int, out: Outcome) -> None:
        """Publish what a committed action produced (events, audit entry, item)."""
        events = list(out.events)
        if out.entry is not None:
            events.append((mod_topic(community_id), ModActionTaken(entry=wire_entry(out.entry))))
        if out.item is not None:
            events.append((mod_topic(community_id), ReviewItemUpdated(item=out.item)))
        if events:
            await self.hub.publish_many(events)

    def _result(self, out: Outcome) -> ModActionResult:
        return ModActionResult(audit_id=out.entry.id if out.entry else None, count=out.count)

    # ------------------------------------------------------------------------ deletes

    async def delete_message(self, actor_id: int, channel_id: int, message_id: int,
                             reason: str | None = None, item_id: int | None = None) -> None:
        """Delete a message: the author their own; anyone else needs MANAGE_MESSAGES in
        the channel, and that delete is audited (``message.delete``)."""
        reason = _reason(reason, self.limits)
        channel_bits = await self.access.channel_permissions(channel_id, actor_id)
        async with self.db.connection() as conn:
            message = await messages_db.get_message(conn, message_id)
            channel = await channels_db.get_channel(conn, channel_id)
        if channel is None or (channel.community_id is not None
                               and not has(channel_bits, P.VIEW_CHANNEL)):
            raise not_found("unknown channel")
        if channel.community_id is None and actor_id not in channel.member_ids:
            raise not_found("unknown channel")
        if message is None or message.channel_id != channel_id or message.deleted:
            raise not_found("unknown message")
        own = message.author.id == actor_id
        if own and item_id is None:
            async with self.db.connection() as conn:
                deleted = await messages_db.delete_message(conn, message.id)
            if deleted is None:
                raise not_found("unknown message")
            await self.hub.publish(channel_topic(channel.id), MessageDeleted(
                channel_id=channel.id, message_id=message.id, seq=message.seq))
            return
        cid = channel.community_id
        if cid is None or not has(channel_bits, P.MANAGE_MESSAGES):
            raise forbidden("you can delete only your own messages")
        out = Outcome()
        async with self.db.transaction("message.delete") as conn:
            deleted = await messages_db.delete_message(conn, message.id)
            if deleted is None:
                raise not_found("unknown message")
            await self._audit(conn, out, community_id=cid, actor_id=actor_id,
                              action="message.delete", target_type="message",
                              target_id=message.id, reason=reason,
                              before={"channel_id": channel.id, "author_id": message.author.id,
                                      "seq": message.seq},
                              after=None)
            await self._resolve_item(conn, out, item_id, cid, actor_id, "message.delete",
                                     reason)
        out.events.append((channel_topic(channel.id), MessageDeleted(
            channel_id=channel.id, message_id=message.id, seq=message.seq)))
        await self.publish_outcome(cid, out)

    @staticmethod
    def _bulk_events(deleted: list[tuple[int, int]]) -> list[tuple[str, Event]]:
        """``message_delete_bulk`` per channel, at most BULK_DELETE_BATCH ids each."""
        by_channel: dict[int, list[int]] = {}
        for channel_id, message_id in deleted:
            by_channel.setdefault(channel_id, []).append(message_id)
        events: list[tuple[str, Event]] = []
        for channel_id, ids in by_channel.items():
            for i in range(0, len(ids), BULK_DELETE_BATCH):
                events.append((channel_topic(channel_id), MessagesDeleted(
                    channel_id=channel_id, message_ids=ids[i:i + BULK_DELETE_BATCH])))
        return events

    async def purge(self, actor_id: int, req: PurgeMessages) -> ModActionResult:
        """Bulk delete: the last ``count`` of a channel, or a member's last ``hours``."""
        reason = _reason(req.reason, self.limits)
        cid = req.community_id
        if req.count is not None:
            if req.channel_id is None or req.hours is not None:
                raise RequestError(ErrorCode.INVALID_ARGUMENT,
                                   "purge by count needs channel_id (and no hours)")
            if req.count > self.limits.max_purge_messages:
                raise RequestError(ErrorCode.INVALID_ARGUMENT,
                                   f"count is at most {self.limits.max_purge_messages}")
        elif req.user_id is None or req.hours is None:
            raise RequestError(ErrorCode.INVALID_ARGUMENT,
                               "purge needs count (with channel_id) or user_id and hours")
        if req.channel_id is not None:
            channel = await self.require_channel(req.channel_id, actor_id, P.MANAGE_MESSAGES)
            if channel.community_id != cid:
                raise not_found("unknown channel")
        else:
            await self.require(cid, actor_id, P.MANAGE_MESSAGES)
        out = Outcome()
        async with self.db.transaction("message.purge") as conn:
            if req.count is not None:
                assert req.channel_id is not None
                deleted = await moderation_db.purge_last_txn(conn, req.channel_id, req.count,
                                                             req.user_id)
            else:
                assert req.user_id is not None and req.hours is not None
                deleted = await moderation_db.purge_author_txn(
                    conn, cid, req.user_id, req.hours, req.channel_id,
                    self.limits.max_purge_messages)
            out.count = len(deleted)
            target_type, target_id = ("user", req.user_id) if req.user_id is not None \
                else ("channel", req.channel_id)
            await self._audit(conn, out, community_id=cid, actor_id=actor_id,
                              action="message.purge", target_type=target_type,
                              target_id=target_id, reason=reason, before=None,
                              after={"count": len(deleted), "channel_id": req.channel_id,
                                     "hours": req.hours, "requested": req.count,
                                     "message_ids": [m for _, m in deleted]})
        out.events.extend(self._bulk_events(deleted))
        await self.publish_outcome(cid, out)
        return self._result(out)

    # ---------------------------------------------------------------------- sanctions

    async def warn(self, actor_id: int, req: WarnMember) -> ModActionResult:
        reason = _reason(req.reason, self.limits)
        if reason is None:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "a warning needs a reason")
        cid = req.community_id
        await self.require(cid, actor_id, P.MODERATE)
        out = Outcome()
        async with self.db.transaction("member.warn") as conn:
            await self._target(conn, cid, actor_id, req.user_id)
            audit_id = await self._audit(conn, out, community_id=cid, actor_id=actor_id,
                                         action="member.warn", target_type="user",
                                         target_id=req.user_id, reason=reason, before=None,
                                         after=None)
            await self._resolve_item(conn, out, req.item_id, cid, actor_id, "member.warn",
                                     reason)
        out.events.append((user_topic(req.user_id), MemberSanctioned(sanction=Sanction(
            community_id=cid, kind=SanctionKind.WARN, reason=reason, audit_id=audit_id))))
        await self.publish_outcome(cid, out)
        return self._result(out)

    async def timeout_member(self, *, community_id: int, user_id: int, duration_s: int,
                             reason: str | None, actor_id: int | None = None,
                             item_id: int | None = None) -> int:
        """Time ``user_id`` out for ``duration_s`` (``actor_id`` None: automod, which
        never times out staff). Audited; every session of the member, on every node,
        refuses sends from the moment the event lands. Returns the audit entry id."""
        reason = _reason(reason, self.limits)
        if not 1 <= duration_s <= self.limits.max_timeout_s:
            raise RequestError(ErrorCode.INVALID_ARGUMENT,
                               f"a timeout lasts 1 to {self.limits.max_timeout_s} s")
        cid = community_id
        if actor_id is not None:
            await self.require(cid, actor_id, P.TIMEOUT_MEMBERS)
        out = Outcome()
        async with self.db.transaction("member.timeout") as conn:
            target = await self._target(conn, cid, actor_id, user_id)
            assert target is not None
            until = await moderation_db.db_now(conn, duration_s)
            running = target.timeout_until is not None and target.timeout_until > \
                await moderation_db.db_now(conn)
            audit_id = await self._audit(
                conn, out, community_id=cid, actor_id=actor_id, action="member.timeout",
                target_type="user", target_id=user_id, reason=reason,
                before={"timeout_until": millis(target.timeout_until)} if running else None,
                after={"timeout_until": millis(until), "duration_s": duration_s})
            await moderation_db.set_timeout_txn(conn, cid, user_id, until, audit_id)
            await self._resolve_item(conn, out, item_id, cid, actor_id, "member.timeout",
                                     reason)
        out.events.append((user_topic(user_id), MemberSanctioned(sanction=Sanction(
            community_id=cid, kind=SanctionKind.TIMEOUT, reason=reason,
            expires_at=millis(until), audit_id=audit_id))))
        await self.publish_outcome(cid, out)
        return audit_id

    async def remove_timeout(self, actor_id: int | None, community_id: int, user_id: int,
                             reason: str | None, *, conn: Connection | None = None,
                             out: Outcome | None = None) -> ModActionResult:
        """Lift a timeout early. With ``conn``/``out`` it joins the caller's transaction
        (an accepted appeal) and the caller publishes."""
        reason = _reason(reason, self.limits)
        cid = community_id
        if actor_id is not None and conn is None:
            await self.require(cid, actor_id, P.TIMEOUT_MEMBERS)
        own = out is None
        out = out if out is not None else Outcome()
        if conn is None:
            async with self.db.transaction("member.untimeout") as tx:
                lifted = await self._lift_timeout_txn(tx, out, actor_id, cid, user_id, reason)
        else:
            lifted = await self._lift_timeout_txn(conn, out, actor_id, cid, user_id, reason)
        if lifted:
            out.events.append((user_topic(user_id), MemberSanctioned(sanction=Sanction(
                community_id=cid, kind=SanctionKind.TIMEOUT, reason=reason), lifted=True)))
        if own:
            await self.publish_outcome(cid, out)
        return self._result(out)

    async def _lift_timeout_txn(self, conn: Connection, out: Outcome, actor_id: int | None,
                                cid: int, user_id: int, reason: str | None) -> bool:
        target = await moderation_db.member_state(conn, cid, user_id, for_update=True)
        if target is None:
            raise not_found("unknown member")
        if target.timeout_until is None:
            return False
        await self._audit(conn, out, community_id=cid, actor_id=actor_id,
                          action="member.untimeout", target_type="user", target_id=user_id,
                          reason=reason, before={"timeout_until": millis(target.timeout_until)},
                          after={"timeout_until": None})
        await moderation_db.set_timeout_txn(conn, cid, user_id, None, None)
        return True

    def _removal_events(self, cid: int, user_id: int, sanction: Sanction) -> list[
            tuple[str, Event]]:
        """The member's sessions lose the community (control event: channels, topics and
        the moderator feed go, sends there fail as not_found); the others see them leave."""
        return [(user_topic(user_id), CommunityUnavailable(community_id=cid, sanction=sanction)),
                (community_topic(cid), MemberLeft(community_id=cid, user_id=user_id))]

    async def kick(self, actor_id: int, req: KickMember) -> ModActionResult:
        reason = _reason(req.reason, self.limits)
        cid = req.community_id
        await self.require(cid, actor_id, P.KICK_MEMBERS)
        out = Outcome()
        async with self.db.transaction("member.kick") as conn:
            target = await self._target(conn, cid, actor_id, req.user_id)
            assert target is not None
            audit_id = await self._audit(conn, out, community_id=cid, actor_id=actor_id,
                                         action="member.kick", target_type="user",
                                         target_id=req.user_id, reason=reason,
                                         before={"role": target.role.value}, after=None)
            await moderation_db.remove_member_txn(conn, cid, req.user_id)
            await self._resolve_item(conn, out, req.item_id, cid, actor_id, "member.kick",
                                     reason)
        out.events.extend(self._removal_events(cid, req.user_id, Sanction(
            community_id=cid, kind=SanctionKind.KICK, reason=reason, audit_id=audit_id)))
        await self.publish_outcome(cid, out)
        return self._result(out)

    async def ban(self, actor_id: int, req: BanMember) -> ModActionResult:
        """Kick (if a member) and keep out until the ban expires or is lifted; with
        ``purge_hours``, also delete what they posted in the community lately."""
        reason = _reason(req.reason, self.limits)
        cid = req.community_id
        await self.require(cid, actor_id, P.BAN_MEMBERS)
        if req.purge_hours > self.limits.max_purge_hours:
            raise RequestError(ErrorCode.INVALID_ARGUMENT,
                               f"purge_hours is at most {self.limits.max_purge_hours}")
        out = Outcome()
        async with self.db.transaction("member.ban") as conn:
            if await accounts_db.get_user(conn, req.user_id) is None:
                raise not_found("unknown user")
            target = await self._target(conn, cid, actor_id, req.user_id, must_be_member=False)
            expires = await moderation_db.db_now(conn, req.duration_s) \
                if req.duration_s is not None else None
            audit_id = await self._audit(
                conn, out, community_id=cid, actor_id=actor_id, action="member.ban",
                target_type="user", target_id=req.user_id, reason=reason,
                before={"role": target.role.value} if target is not None else None,
                after={"expires_at": millis(expires), "purge_hours": req.purge_hours})
            await moderation_db.upsert_ban_txn(conn, community_id=cid, user_id=req.user_id,
                                               actor_id=actor_id, reason=reason,
                                               audit_id=audit_id, expires_at=expires)
            removed = await moderation_db.remove_member_txn(conn, cid, req.user_id)
            deleted: list[tuple[int, int]] = []
            if req.purge_hours:
                deleted = await moderation_db.purge_author_txn(
                    conn, cid, req.user_id, req.purge_hours, None, BAN_PURGE_MAX)
            out.count = len(deleted)
            await self._resolve_item(conn, out, req.item_id, cid, actor_id, "member.ban",
                                     reason)
        if removed:
            out.events.extend(self._removal_events(cid, req.user_id, Sanction(
                community_id=cid, kind=SanctionKind.BAN, reason=reason,
                expires_at=millis(expires), audit_id=audit_id)))
        out.events.extend(self._bulk_events(deleted))
        await self.publish_outcome(cid, out)
        return self._result(out)

    async def unban(self, actor_id: int | None, community_id: int, user_id: int,
                    reason: str | None, *, conn: Connection | None = None,
                    out: Outcome | None = None) -> ModActionResult:
        reason = _reason(reason, self.limits)
        cid = community_id
        if actor_id is not None and conn is None:
            await self.require(cid, actor_id, P.BAN_MEMBERS)
        own = out is None
        out = out if out is not None else Outcome()

        async def lift(tx: Connection) -> None:
            ban = await moderation_db.active_ban(tx, cid, user_id)
            if await moderation_db.delete_ban_txn(tx, cid, user_id):
                await self._audit(tx, out, community_id=cid, actor_id=actor_id,
                                  action="member.unban", target_type="user",
                                  target_id=user_id, reason=reason,
                                  before={"expires_at": millis(ban.expires_at) if ban else None},
                                  after=None)

        if conn is None:
            async with self.db.transaction("member.unban") as tx:
                await lift(tx)
        else:
            await lift(conn)
        if own:
            await self.publish_outcome(cid, out)
        return self._result(out)

    # ------------------------------------------------------------ channels, community

    async def _set_channel(self, actor_id: int, channel_id: int, *, action: str,
                           reason: str | None, slowmode_s: int | None = None,
                           locked: bool | None = None) -> ChannelResult:
        reason = _reason(reason, self.limits)
        channel = await self.require_channel(channel_id, actor_id,
                                             P.MODERATE | P.MANAGE_CHANNELS, any_of=True)
        if channel.kind in (ChannelKind.CATEGORY, ChannelKind.DM, ChannelKind.GROUP_DM):
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "not a channel members post in")
        assert channel.community_id is not None
        cid = channel.community_id
        out = Outcome()
        async with self.db.transaction(action) as conn:
            await moderation_db.set_channel_moderation(conn, channel.id, slowmode_s=slowmode_s,
                                                       locked=locked)
            field, old, new = ("slowmode_s", channel.slowmode_s, slowmode_s) \
                if slowmode_s is not None else ("locked", channel.locked, locked)
            await self._audit(conn, out, community_id=cid, actor_id=actor_id, action=action,
                              target_type="channel", target_id=channel.id, reason=reason,
                              before={field: old}, after={field: new})
            updated = await channels_db.get_channel(conn, channel.id)
        assert updated is not None
        # A control event: every viewer's session (on every node) now enforces it.
        out.events.append((channel_topic(channel.id), ChannelUpdated(channel=updated)))
        await self.publish_outcome(cid, out)
        return ChannelResult(channel=updated)

    async def set_slowmode(self, actor_id: int, req: SetSlowmode) -> ChannelResult:
        if req.seconds > self.limits.max_slowmode_s:
            raise RequestError(ErrorCode.INVALID_ARGUMENT,
                               f"slow mode is at most {self.limits.max_slowmode_s} s")
        return await self._set_channel(actor_id, req.channel_id, action="channel.slowmode",
                                       reason=req.reason, slowmode_s=req.seconds)

    async def set_locked(self, actor_id: int, req: SetChannelLocked) -> ChannelResult:
        return await self._set_channel(actor_id, req.channel_id, action="channel.lock",
                                       reason=req.reason, locked=req.locked)

    async def set_lockdown(self, actor_id: int, req: SetLockdown) -> ModActionResult:
        """Raid mode on or off, in one action."""
        reason = _reason(req.reason, self.limits)
        cid = req.community_id
        await self.require(cid, actor_id, P.MANAGE_COMMUNITY | P.MODERATE, any_of=True)
        new = moderation_db.Lockdown(enabled=req.enabled,
                                     member_age_s=req.member_age_s if req.enabled else 0,
                                     account_age_s=req.account_age_s if req.enabled else 0)
        out = Outcome()
        async with self.db.transaction("community.lockdown") as conn:
            old = await moderation_db.get_lockdown(conn, cid, for_update=True)
            if old is None:
                raise not_found("unknown community")
            await moderation_db.set_lockdown_txn(conn, cid, new)
            await self._audit(conn, out, community_id=cid, actor_id=actor_id,
                              action="community.lockdown", target_type="community",
                              target_id=cid, reason=reason,
                              before={"lockdown": old.enabled,
                                      "member_age_s": old.member_age_s,
                                      "account_age_s": old.account_age_s},
                              after={"lockdown": new.enabled, "member_age_s": new.member_age_s,
                                     "account_age_s": new.account_age_s})
        out.events.append((community_topic(cid), CommunityModerationUpdated(
            community_id=cid, lockdown=new.enabled, member_age_s=new.member_age_s,
            account_age_s=new.account_age_s)))
        await self.publish_outcome(cid, out)
        return self._result(out)

    # ----------------------------------------------------------------------- audit log

    def audit_filter(self, req: FetchAuditLog) -> audit_db.AuditFilter:
        def when(ms: int | None) -> dt.datetime | None:
            # Clamped to what a datetime holds: a far-future bound means "no bound".
            if ms is None:
                return None
            return dt.datetime.fromtimestamp(min(ms, _MAX_MS) / 1000, dt.UTC)

        return audit_db.AuditFilter(
            community_id=req.community_id, actor_id=req.actor_id, target_type=req.target_type,
            target_id=req.target_id, action=req.action, since=when(req.since),
            until=when(req.until), before_id=req.before_id)

    async def fetch_audit_log(self, actor_id: int, req: FetchAuditLog) -> AuditLogResult:
        await self.require(req.community_id, actor_id, P.VIEW_AUDIT_LOG)
        limit = min(req.limit, self.limits.moderation_page_size)
        async with self.db.connection() as conn:
            entries = await audit_db.query(conn, self.audit_filter(req), limit=limit + 1)
        return AuditLogResult(entries=[wire_entry(e) for e in entries[:limit]],
                              has_more=len(entries) > limit)

    # --------------------------------------------------------------------- automod hooks

    async def alert(self, *, community_id: int, rule: str, summary: str,
                    user_id: int | None = None, channel_id: int | None = None,
                    message_id: int | None = None, actions: list[str] | None = None) -> None:
        """Tell the community's live moderator feed (``automod_alert``), on every node."""
        await self.hub.publish(mod_topic(community_id), AutomodAlert(
            community_id=community_id, rule=rule, summary=summary[:500], user_id=user_id,
            channel_id=channel_id, message_id=message_id, actions=list(actions or [])))

    async def flag(self, *, community_id: int, channel_id: int, message_id: int | None,
                   author_id: int, content: str, rule: str, reason: str) -> int:
        """Put a message in the review queue as flagged by automod rule ``rule``
        (``message_id`` None: it was blocked, never stored; the item keeps ``content``).
        One unresolved item per message, however many flags and reports. Returns the
        item id; the feed gets ``review_item``."""
        async with self.db.transaction("review.flag") as conn:
            item_id = await moderation_db.open_item_txn(
                conn, community_id=community_id, kind=ReviewKind.MESSAGE,
                channel_id=channel_id, message_id=message_id, target_user_id=author_id,
                content=content[:self.limits.max_message_chars], reason=reason[:512])
            await moderation_db.add_flag_txn(conn, item_id, rule)
            item = await moderation_db.get_item(conn, item_id)
        assert item is not None
        await self.hub.publish(mod_topic(community_id), ReviewItemUpdated(item=item))
        return item_id

    async def publish_feed(self, community_id: int, event: Event) -> None:
        await self.hub.publish(mod_topic(community_id), event)

    # ---------------------------------------------------------------------- moderator feed

    async def subscribe_feed(self, session: Session, community_id: int) -> None:
        """Start the live feed for this session (MODERATE, checked now; losing the role
        ends it, see rooms/moderation/moderation_view.py)."""
        await self.require(community_id, session.user.id, P.MODERATE)
        if community_id not in session.roles:
            raise not_found("unknown community")
        session.view(MODERATION).feeds.add(community_id)
        self.hub.subscribe(session, mod_topic(community_id))

    def unsubscribe_feed(self, session: Session, community_id: int) -> None:
        view = session.peek(MODERATION)
        if view is not None and community_id in view.feeds:
            view.feeds.discard(community_id)
            self.hub.unsubscribe(session, mod_topic(community_id))

    # ------------------------------------------------------------------- gateway glue

    def handlers(self) -> dict[type[Request], Callable[[Session, Any], Awaitable[Result]]]:
        """WS request type -> handler, registered on the chat service."""
        async def delete(session: Session, req: DeleteMessage) -> Result:
            if req.channel_id not in session.channels:  # the session's view first
                raise not_found("unknown channel")
            await self.delete_message(session.user.id, req.channel_id, req.message_id,
                                      req.reason, req.item_id)
            return Empty()

        async def purge(session: Session, req: PurgeMessages) -> Result:
            return await self.purge(session.user.id, req)

        async def warn(session: Session, req: WarnMember) -> Result:
            return await self.warn(session.user.id, req)

        async def timeout(session: Session, req: TimeoutMember) -> Result:
            audit_id = await self.timeout_member(
                community_id=req.community_id, user_id=req.user_id, duration_s=req.duration_s,
                reason=req.reason, actor_id=session.user.id, item_id=req.item_id)
            return ModActionResult(audit_id=audit_id)

        async def untimeout(session: Session, req: RemoveTimeout) -> Result:
            return await self.remove_timeout(session.user.id, req.community_id, req.user_id,
                                             req.reason)

        async def kick(session: Session, req: KickMember) -> Result:
            return await self.kick(session.user.id, req)

        async def ban(session: Session, req: BanMember) -> Result:
            return await self.ban(session.user.id, req)

        async def unban(session: Session, req: UnbanMember) -> Result:
            return await self.unban(session.user.id, req.community_id, req.user_id, req.reason)

        async def slowmode(session: Session, req: SetSlowmode) -> Result:
            return await self.set_slowmode(session.user.id, req)

        async def lock(session: Session, req: SetChannelLocked) -> Result:
            return await self.set_locked(session.user.id, req)

        async def lockdown(session: Session, req: SetLockdown) -> Result:
            return await self.set_lockdown(session.user.id, req)

        async def audit_log(session: Session, req: FetchAuditLog) -> Result:
            return await self.fetch_audit_log(session.user.id, req)

        async def subscribe(session: Session, req: SubscribeModFeed) -> Result:
            await self.subscribe_feed(session, req.community_id)
            return Empty()

        async def unsubscribe(session: Session, req: UnsubscribeModFeed) -> Result:
            self.unsubscribe_feed(session, req.community_id)
            return Empty()

        return {
            DeleteMessage: delete, PurgeMessages: purge, WarnMember: warn,
            TimeoutMember: timeout, RemoveTimeout: untimeout, KickMember: kick, BanMember: ban,
            UnbanMember: unban, SetSlowmode: slowmode, SetChannelLocked: lock,
            SetLockdown: lockdown, FetchAuditLog: audit_log, SubscribeModFeed: subscribe,
            UnsubscribeModFeed: unsubscribe,
        }
