"""Reports, the review queue, and appeals.

Members report a message or a member; automod flags messages
(:meth:`rooms.moderation.moderation.ModerationService.flag`). Both land in one review item per
message (per reported member for user reports) while it is unresolved: more reports
raise its ``report_count``, never add rows to the queue. An item goes
open -> claimed -> resolved; every change is published to the community's moderator
feed on every node, so a moderator acting on an item sees it taken or resolved by
another at once, and a claim races safely (one conditional UPDATE wins, the other gets
``conflict``).

Appeals: a member under a ban or timeout appeals that action (its audit entry) once.
Banned members are no longer in the community and may have no gateway session, so
appeals also come over REST. Accepting an appeal lifts the sanction in the same
transaction that records the decision.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from persistence import audit as audit_db
from persistence import channels as channels_db
from persistence import communities as communities_db
from persistence import messages as messages_db
from persistence import moderation as moderation_db
from persistence.database import Database
from protocol.base import Request
from protocol.codes import ErrorCode
from protocol.frames import Result
from protocol.limits import Limits
from protocol.moderation import (
    Appeal,
    AppealResult,
    AppealsResult,
    AppealUpdated,
    ClaimReviewItem,
    FetchAppeals,
    FetchReviewQueue,
    ReportMessage,
    ReportUser,
    ResolveAppeal,
    ResolveReviewItem,
    ReviewItem,
    ReviewItemResult,
    ReviewItemUpdated,
    ReviewKind,
    ReviewQueueResult,
    SubmitAppeal,
)
from rooms.chat.chat import check_text
from rooms.errors import RequestError, forbidden, not_found
from rooms.moderation.moderation import ModerationService, Outcome
from rooms.realtime.bus import mod_topic, user_topic
from rooms.realtime.hub import Hub
from rooms.realtime.permissions import Permission
from rooms.realtime.rate_limit import RateLimiter
from rooms.realtime.sessions import Session

P = Permission


def _for_reporter(item: ReviewItem, reason: str) -> ReviewItem:
    """What a reporter is told: that the report landed, not who else reported or which
    moderator handles it."""
    return ReviewItem(id=item.id, community_id=item.community_id, kind=item.kind,
                      status=item.status, channel_id=item.channel_id,
                      message_id=item.message_id, target_user_id=item.target_user_id,
                      first_reason=reason, created_at=item.created_at)


class ReviewService:
    """Reports, the review queue and appeals (WS and REST)."""

    def __init__(self, db: Database, hub: Hub, limits: Limits, moderation: ModerationService,
                 report_limiter: RateLimiter) -> None:
        self.db = db
        self.hub = hub
        self.limits = limits
        self.moderation = moderation
        self.report_limiter = report_limiter

    def _text(self, text: str, limit: int, what: str) -> str:
        text = text.strip()
        check_text(text)
        if not text:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, f"{what} is required")
        if len(text) > limit:
            raise RequestError(ErrorCode.INVALID_ARGUMENT,
                               f"{what} is at most {limit} characters")
        return text

    async def _rate(self, reporter_id: int) -> None:
        wait = await self.report_limiter.check(f"report:{reporter_id}")
        if wait is not None:
            raise RequestError(ErrorCode.RATE_LIMITED,
                               f"at most {self.limits.reports_per_window} reports per "
                               f"{self.limits.report_window_ms // 60_000} minutes",
                               retry_after_ms=wait)

    # ------------------------------------------------------------------------- reports

    async def report_message(self, reporter_id: int, channel_id: int, message_id: int,
                             reason: str) -> ReviewItem:
        """Report a message the reporter can see (in a community: DMs have no
        moderators). Reporting one message twice counts once."""
        reason = self._text(reason, self.limits.max_reason_chars, "a reason")
        bits = await self.moderation.access.channel_permissions(channel_id, reporter_id)
        if not bits & P.VIEW_CHANNEL and not bits & P.ADMINISTRATOR:
            raise not_found("unknown channel")
        async with self.db.connection() as conn:
            message = await messages_db.get_message(conn, message_id)
            channel = await channels_db.get_channel(conn, channel_id)
        if channel is None or channel.community_id is None:
            raise not_found("unknown channel")
        if message is None or message.channel_id != channel_id or message.deleted:
            raise not_found("unknown message")
        await self._rate(reporter_id)
        cid = channel.community_id
        async with self.db.transaction("review.report") as conn:
            item_id = await moderation_db.open_item_txn(
                conn, community_id=cid, kind=ReviewKind.MESSAGE, channel_id=channel_id,
                message_id=message_id, target_user_id=message.author.id,
                content=message.content, reason=reason)
            counted = await moderation_db.add_report_txn(
                conn, item_id=item_id, community_id=cid, reporter_id=reporter_id,
                message_id=message_id, target_user_id=message.author.id, reason=reason)
            item = await moderation_db.get_item(conn, item_id)
        assert item is not None
        if counted:
            await self.hub.publish(mod_topic(cid), ReviewItemUpdated(item=item))
        return _for_reporter(item, reason)

    async def report_user(self, reporter_id: int, community_id: int, user_id: int,
                          reason: str) -> ReviewItem:
        reason = self._text(reason, self.limits.max_reason_chars, "a reason")
        async with self.db.connection() as conn:
            reporter = await communities_db.get_role(conn, community_id, reporter_id)
            target = await communities_db.get_role(conn, community_id, user_id)
        if reporter is None:
            raise not_found("unknown community")
        if target is None:
            raise not_found("unknown member")
        await self._rate(reporter_id)
        async with self.db.transaction("review.report") as conn:
            item_id = await moderation_db.open_item_txn(
                conn, community_id=community_id, kind=ReviewKind.USER, channel_id=None,
                message_id=None, target_user_id=user_id, content="", reason=reason)
            counted = await moderation_db.add_report_txn(
                conn, item_id=item_id, community_id=community_id, reporter_id=reporter_id,
                message_id=None, target_user_id=user_id, reason=reason)
            item = await moderation_db.get_item(conn, item_id)
        assert item is not None
        if counted:
            await self.hub.publish(mod_topic(community_id), ReviewItemUpdated(item=item))
        return _for_reporter(item, reason)

    # -------------------------------------------------------------------- review queue

    async def fetch_queue(self, actor_id: int, req: FetchReviewQueue) -> ReviewQueueResult:
        await self.moderation.require(req.community_id, actor_id, P.MODERATE)
        limit = min(req.limit, self.limits.moderation_page_size)
        async with self.db.connection() as conn:
            items = await moderation_db.list_items(conn, req.community_id, req.status,
                                                   req.before_id, limit + 1)
        return ReviewQueueResult(items=items[:limit], has_more=len(items) > limit)

    async def _item_for(self, actor_id: int, item_id: int) -> ReviewItem:
        async with self.db.connection() as conn:
            item = await moderation_db.get_item(conn, item_id)
        if item is None:
            raise not_found("unknown review item")
        bits = await self.moderation.access.community_permissions(item.community_id, actor_id)
        if not bits:
            raise not_found("unknown review item")
        if not bits & (P.MODERATE | P.ADMINISTRATOR):
            raise forbidden("you lack the permission for this")
        return item

    async def claim(self, actor_id: int, item_id: int) -> ReviewItem:
        item = await self._item_for(actor_id, item_id)
        async with self.db.transaction("review.claim") as conn:
            claimed = await moderation_db.claim_item_txn(conn, item_id, actor_id)
        if claimed is None:
            raise RequestError(ErrorCode.CONFLICT, "the item is no longer open")
        await self.hub.publish(mod_topic(item.community_id), ReviewItemUpdated(item=claimed))
        return claimed

    async def resolve(self, actor_id: int, item_id: int, decision: str,
                      reason: str | None) -> ReviewItem:
        """Close an item without acting (``dismissed``) or after acting elsewhere;
        audited as ``review.resolve``."""
        item = await self._item_for(actor_id, item_id)
        decision = self._text(decision, 200, "a decision")
        reason = reason.strip() if reason else None
        if reason:
            check_text(reason)
        out = Outcome()
        async with self.db.transaction("review.resolve") as conn:
            resolved = await moderation_db.resolve_item_txn(conn, item_id, actor_id, decision,
                                                            reason)
            if resolved is None:
                raise RequestError(ErrorCode.CONFLICT, "the item is already resolved")
            audit_id = await audit_db.record(
                conn, community_id=item.community_id, actor_id=actor_id,
                action="review.resolve", target_type="review_item", target_id=item_id,
                reason=reason, before={"status": item.status.value},
                after={"status": "resolved", "decision": decision})
            out.entry = await audit_db.get(conn, audit_id)
        out.item = resolved
        await self.moderation.publish_outcome(item.community_id, out)
        return resolved

    # ------------------------------------------------------------------------- appeals

    async def submit_appeal(self, user_id: int, community_id: int, text: str) -> Appeal:
        """Appeal the ban or timeout in force (one appeal per action)."""
        text = self._text(text, self.limits.max_appeal_chars, "an appeal")
        async with self.db.connection() as conn:
            ban = await moderation_db.active_ban(conn, community_id, user_id)
            if ban is not None:
                audit_id, action = ban.audit_id, "member.ban"
            else:
                member = await moderation_db.member_state(conn, community_id, user_id)
                until = await moderation_db.active_timeout_until(conn, community_id, user_id)
                if member is None or until is None or member.timeout_audit_id is None:
                    raise not_found("you have no ban or timeout to appeal here")
                audit_id, action = member.timeout_audit_id, "member.timeout"
            appeal = await moderation_db.insert_appeal(
                conn, community_id=community_id, user_id=user_id, audit_id=audit_id,
                action=action, text=text)
        if appeal is None:
            raise RequestError(ErrorCode.ALREADY_EXISTS, "you already appealed this action")
        await self.hub.publish(mod_topic(community_id), AppealUpdated(appeal=appeal))
        return appeal

    async def fetch_appeals(self, actor_id: int, req: FetchAppeals) -> AppealsResult:
        await self.moderation.require(req.community_id, actor_id,
                                      P.BAN_MEMBERS | P.TIMEOUT_MEMBERS, any_of=True)
        limit = min(req.limit, self.limits.moderation_page_size)
        async with self.db.connection() as conn:
            appeals = await moderation_db.list_appeals(conn, req.community_id, req.status,
                                                       req.before_id, limit + 1)
        return AppealsResult(appeals=appeals[:limit], has_more=len(appeals) > limit)

    async def resolve_appeal(self, actor_id: int, appeal_id: int, accept: bool,
                             reason: str | None) -> Appeal:
        """Accept (lift the sanction, if it is still the one appealed) or reject."""
        async with self.db.connection() as conn:
            found = await moderation_db.get_appeal(conn, appeal_id)
        if found is None:
            raise not_found("unknown appeal")
        perm = P.BAN_MEMBERS if found.action == "member.ban" else P.TIMEOUT_MEMBERS
        bits = await self.moderation.access.community_permissions(found.community_id, actor_id)
        if not bits:
            raise not_found("unknown appeal")
        if not bits & (perm | P.ADMINISTRATOR):
            raise forbidden("you lack the permission for this")
        reason = reason.strip() if reason else None
        if reason:
            check_text(reason)
        cid = found.community_id
        out = Outcome()
        async with self.db.transaction("appeal.resolve") as conn:
            appeal = await moderation_db.resolve_appeal_txn(conn, appeal_id, actor_id, accept,
                                                            reason)
            if appeal is None:
                raise RequestError(ErrorCode.CONFLICT, "the appeal is already decided")
            lift_reason = f"appeal accepted{': ' + reason if reason else ''}"
            if accept and appeal.action == "member.ban":
                ban = await moderation_db.active_ban(conn, cid, appeal.user_id)
                if ban is not None and ban.audit_id == appeal.audit_id:
                    await self.moderation.unban(actor_id, cid, appeal.user_id, lift_reason,
                                                conn=conn, out=out)
            elif accept:
                member = await moderation_db.member_state(conn, cid, appeal.user_id)
                if member is not None and member.timeout_audit_id == appeal.audit_id:
                    await self.moderation.remove_timeout(actor_id, cid, appeal.user_id,
                                                         lift_reason, conn=conn, out=out)
            if out.entry is None:  # rejected, or the sanction had already ended
                audit_id = await audit_db.record(
                    conn, community_id=cid, actor_id=actor_id, action="appeal.resolve",
                    target_type="user", target_id=appeal.user_id, reason=reason,
                    before={"appeal_id": appeal.id, "status": "open"},
                    after={"status": appeal.status.value})
                out.entry = await audit_db.get(conn, audit_id)
        out.events.append((mod_topic(cid), AppealUpdated(appeal=appeal)))
        out.events.append((user_topic(appeal.user_id), AppealUpdated(appeal=appeal)))
        await self.moderation.publish_outcome(cid, out)
        return appeal

    # ------------------------------------------------------------------- gateway glue

    def handlers(self) -> dict[type[Request], Callable[[Session, Any], Awaitable[Result]]]:
        async def report_message(session: Session, req: ReportMessage) -> Result:
            if req.channel_id not in session.channels:
                raise not_found("unknown channel")
            return ReviewItemResult(item=await self.report_message(
                session.user.id, req.channel_id, req.message_id, req.reason))

        async def report_user(session: Session, req: ReportUser) -> Result:
            return ReviewItemResult(item=await self.report_user(
                session.user.id, req.community_id, req.user_id, req.reason))

        async def queue(session: Session, req: FetchReviewQueue) -> Result:
            return await self.fetch_queue(session.user.id, req)

        async def claim(session: Session, req: ClaimReviewItem) -> Result:
            return ReviewItemResult(item=await self.claim(session.user.id, req.item_id))

        async def resolve(session: Session, req: ResolveReviewItem) -> Result:
            return ReviewItemResult(item=await self.resolve(
                session.user.id, req.item_id, req.decision, req.reason))

        async def appeal(session: Session, req: SubmitAppeal) -> Result:
            return AppealResult(appeal=await self.submit_appeal(
                session.user.id, req.community_id, req.text))

        async def appeals(session: Session, req: FetchAppeals) -> Result:
            return await self.fetch_appeals(session.user.id, req)

        async def decide(session: Session, req: ResolveAppeal) -> Result:
            return AppealResult(appeal=await self.resolve_appeal(
                session.user.id, req.appeal_id, req.accept, req.reason))

        return {
            ReportMessage: report_message, ReportUser: report_user, FetchReviewQueue: queue,
            ClaimReviewItem: claim, ResolveReviewItem: resolve, SubmitAppeal: appeal,
            FetchAppeals: appeals, ResolveAppeal: decide,
        }


__all__ = ["ReviewService"]
