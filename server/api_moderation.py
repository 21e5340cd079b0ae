"""REST for moderation (``/api/v1``): every moderation op, the audit log (JSON and a
streamed CSV export), appeals, and the audit retention task.

``POST /api/v1/moderation/<op>`` (one route per op) takes the same fields as the
websocket op of that name (without ``op`` and ``id``, decoded with the same type) and
answers with the same result, so bots and tools that do not hold a gateway session can
moderate; the checks are the ones the gateway runs
(``rooms/moderation/moderation.py``, ``rooms/moderation/review.py``). Appeals have their own route
because a
banned member is no longer in the community and may hold no gateway session.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import msgspec
from aiohttp import web

from persistence import audit as audit_db
from persistence import moderation as moderation_db
from persistence.database import Database
from protocol.base import Request
from protocol.chat import ChannelResult, DeleteMessage
from protocol.frames import Empty, Result
from protocol.models import Id, User
from protocol.moderation import (
    AppealResult,
    AppealsResult,
    AuditLogResult,
    BanMember,
    ClaimReviewItem,
    FetchAppeals,
    FetchAuditLog,
    FetchReviewQueue,
    KickMember,
    ModActionResult,
    PurgeMessages,
    RemoveTimeout,
    ReportMessage,
    ReportUser,
    ResolveAppeal,
    ResolveReviewItem,
    ReviewItemResult,
    ReviewQueueResult,
    SetChannelLocked,
    SetLockdown,
    SetSlowmode,
    SubmitAppeal,
    TimeoutMember,
    UnbanMember,
    WarnMember,
)
from rooms.moderation.moderation import ModerationService
from rooms.moderation.review import ReviewService
from rooms.realtime.permissions import Permission
from server.api_auth import json_response, require_user
from server.auth import Authenticator
from server.rest.decoding import body_of, path_params, query_op, read_op
from server.rest.openapi import rest_api

log = logging.getLogger(__name__)

CSV_PAGE = 500
"""Audit entries read per query while streaming a CSV export."""
RETENTION_EVERY_S = 3600.0
"""How often the audit retention policy is applied."""

_CSV_COLUMNS = ["id", "created_at", "community_id", "actor_id", "action", "target_type",
                "target_id", "reason", "before", "after"]
_json = msgspec.json.Encoder()


def _cell(value: str) -> str:
    """Spreadsheets run cells that start with = + - @ as formulas: a reason typed by a
    member must never execute on a moderator's machine, so such text gets a quote."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _csv_row(entry: audit_db.AuditEntry) -> list[str]:
    return [str(entry.id), entry.created_at.astimezone(dt.UTC).isoformat(),
            "" if entry.community_id is None else str(entry.community_id),
            "" if entry.actor_id is None else str(entry.actor_id), _cell(entry.action),
            _cell(entry.target_type), "" if entry.target_id is None else str(entry.target_id),
            _cell(entry.reason or ""),
            "" if entry.before is None else _cell(_json.encode(entry.before).decode()),
            "" if entry.after is None else _cell(_json.encode(entry.after).decode())]


def _csv(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode()


async def audit_retention(db: Database, days: int, every_s: float = RETENTION_EVERY_S) -> None:
    """Background task: delete audit entries older than ``days`` (0: keep everything)
    and ban rows that have expired, once at start and then every ``every_s``."""
    while True:
        try:
            if days > 0:
                cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
                async with db.connection() as conn:
                    purged = await audit_db.purge_older_than(conn, cutoff)
                if purged:
                    log.info("audit retention: deleted %d entries older than %d days",
                             purged, days)
            async with db.connection() as conn:
                await moderation_db.purge_expired_bans(conn)
        except Exception:
            log.exception("audit retention failed; retrying later")
        await asyncio.sleep(every_s)


Action = Callable[[User, Any], Awaitable[Result]]
AUDIT_QUERY = body_of(FetchAuditLog, frozenset({"community_id"}))
"""The audit-log filters as query parameters: the fields of ``fetch_audit_log``."""


class CommunityPath(msgspec.Struct):
    community_id: Id


def add_moderation_routes(app: web.Application, auth: Authenticator,
                          moderation: ModerationService, review: ReviewService) -> None:
    async def delete(u: User, r: DeleteMessage) -> Result:
        await moderation.delete_message(u.id, r.channel_id, r.message_id, r.reason, r.item_id)
        return Empty()

    async def timeout(u: User, r: TimeoutMember) -> Result:
        return ModActionResult(audit_id=await moderation.timeout_member(
            community_id=r.community_id, user_id=r.user_id, duration_s=r.duration_s,
            reason=r.reason, actor_id=u.id, item_id=r.item_id))

    async def purge(u: User, r: PurgeMessages) -> Result:
        return await moderation.purge(u.id, r)

    async def warn(u: User, r: WarnMember) -> Result:
        return await moderation.warn(u.id, r)

    async def untimeout(u: User, r: RemoveTimeout) -> Result:
        return await moderation.remove_timeout(u.id, r.community_id, r.user_id, r.reason)

    async def kick(u: User, r: KickMember) -> Result:
        return await moderation.kick(u.id, r)

    async def ban(u: User, r: BanMember) -> Result:
        return await moderation.ban(u.id, r)

    async def unban(u: User, r: UnbanMember) -> Result:
        return await moderation.unban(u.id, r.community_id, r.user_id, r.reason)

    async def slowmode(u: User, r: SetSlowmode) -> Result:
        return await moderation.set_slowmode(u.id, r)

    async def lock(u: User, r: SetChannelLocked) -> Result:
        return await moderation.set_locked(u.id, r)

    async def lockdown(u: User, r: SetLockdown) -> Result:
        return await moderation.set_lockdown(u.id, r)

    async def audit_log(u: User, r: FetchAuditLog) -> Result:
        return await moderation.fetch_audit_log(u.id, r)

    async def report_message(u: User, r: ReportMessage) -> Result:
        return ReviewItemResult(item=await review.report_message(
            u.id, r.channel_id, r.message_id, r.reason))

    async def report_user(u: User, r: ReportUser) -> Result:
        return ReviewItemResult(item=await review.report_user(
            u.id, r.community_id, r.user_id, r.reason))

    async def queue(u: User, r: FetchReviewQueue) -> Result:
        return await review.fetch_queue(u.id, r)

    async def claim(u: User, r: ClaimReviewItem) -> Result:
        return ReviewItemResult(item=await review.claim(u.id, r.item_id))

    async def resolve(u: User, r: ResolveReviewItem) -> Result:
        return ReviewItemResult(item=await review.resolve(u.id, r.item_id, r.decision,
                                                          r.reason))

    async def appeal(u: User, r: SubmitAppeal) -> Result:
        return AppealResult(appeal=await review.submit_appeal(u.id, r.community_id, r.text))

    async def appeals(u: User, r: FetchAppeals) -> Result:
        return await review.fetch_appeals(u.id, r)

    async def decide(u: User, r: ResolveAppeal) -> Result:
        return AppealResult(appeal=await review.resolve_appeal(u.id, r.appeal_id, r.accept,
                                                               r.reason))

    def op_handler(kind: type[Request], fn: Action) -> Callable[[web.Request],
                                                                  Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            """POST /api/v1/moderation/<op>: the websocket op's fields in, its result out."""
            user = await require_user(request, auth)
            return json_response(await fn(user, await read_op(request, kind)))
        return handler

    def audit_request(request: web.Request) -> FetchAuditLog:
        path = path_params(request, CommunityPath)
        return query_op(request, FetchAuditLog, msgspec.structs.asdict(path))

    async def get_audit_log(request: web.Request) -> web.StreamResponse:
        """GET /api/v1/communities/{id}/audit-log?filters: one page, newest first."""
        user = await require_user(request, auth)
        return json_response(await moderation.fetch_audit_log(user.id, audit_request(request)))

    async def export_audit_log(request: web.Request) -> web.StreamResponse:
        """GET /api/v1/communities/{id}/audit-log.csv?filters: every matching entry,
        newest first, streamed page by page (constant memory, one pooled connection per
        page, none held while the client reads)."""
        user = await require_user(request, auth)
        req = audit_request(request)
        await moderation.require(req.community_id, user.id, Permission.VIEW_AUDIT_LOG)
        response = web.StreamResponse(headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition":
                f'attachment; filename="audit-log-{req.community_id}.csv"'})
        await response.prepare(request)
        filters = moderation.audit_filter(req)
        try:
            await response.write(_csv([_CSV_COLUMNS]))
            while True:
                async with moderation.db.connection() as conn:
                    page = await audit_db.query(conn, filters, limit=CSV_PAGE)
                if page:
                    await response.write(_csv([_csv_row(e) for e in page]))
                if len(page) < CSV_PAGE:
                    break
                filters = msgspec.structs.replace(filters, before_id=page[-1].id)
            await response.write_eof()
        except ConnectionError:
            # The client stopped reading (closed the tab, cancelled the download): no
            # one is left to answer, and it is not the server's failure.
            log.info("audit export of community %d: the client went away", req.community_id)
        return response

    async def post_appeal(request: web.Request) -> web.StreamResponse:
        """POST /api/v1/communities/{id}/appeals {text}: works while banned."""
        user = await require_user(request, auth)
        path = path_params(request, CommunityPath)
        req = await read_op(request, SubmitAppeal, msgspec.structs.asdict(path))
        appeal_ = await review.submit_appeal(user.id, req.community_id, req.text)
        return json_response(AppealResult(appeal=appeal_), status=201)

    api = rest_api(app)
    tag = "moderation"
    mod_result, channel_result = ModActionResult, ChannelResult
    for kind, fn, reply in (
            (DeleteMessage, delete, Empty), (PurgeMessages, purge, mod_result),
            (WarnMember, warn, mod_result), (TimeoutMember, timeout, mod_result),
            (RemoveTimeout, untimeout, mod_result), (KickMember, kick, mod_result),
            (BanMember, ban, mod_result), (UnbanMember, unban, mod_result),
            (SetSlowmode, slowmode, channel_result), (SetChannelLocked, lock, channel_result),
            (SetLockdown, lockdown, mod_result), (FetchAuditLog, audit_log, AuditLogResult),
            (ReportMessage, report_message, ReviewItemResult),
            (ReportUser, report_user, ReviewItemResult),
            (FetchReviewQueue, queue, ReviewQueueResult),
            (ClaimReviewItem, claim, ReviewItemResult),
            (ResolveReviewItem, resolve, ReviewItemResult),
            (SubmitAppeal, appeal, AppealResult), (FetchAppeals, appeals, AppealsResult),
            (ResolveAppeal, decide, AppealResult)):
        tag_ = cast(str, kind.__struct_config__.tag)
        doc = " ".join((kind.__doc__ or tag_).split())
        api.route("POST", f"/moderation/{tag_}", op_handler(kind, fn), tag=tag,
                  summary=doc.split(". ")[0].rstrip(".") + ".",
                  description=f"The websocket op `{tag_}` over HTTP. {doc}",
                  body=body_of(kind), reply=reply)
    api.route("GET", "/communities/{community_id}/audit-log", get_audit_log, tag=tag,
              summary="One page of the audit log, newest first (VIEW_AUDIT_LOG).",
              query=AUDIT_QUERY, reply=AuditLogResult)
    api.route("GET", "/communities/{community_id}/audit-log.csv", export_audit_log, tag=tag,
              summary="Every matching audit entry as CSV, newest first (VIEW_AUDIT_LOG).",
              query=AUDIT_QUERY, reply=str, media_type="text/csv")
    api.route("POST", "/communities/{community_id}/appeals", post_appeal, tag=tag,
              summary="Appeal a moderation action (works while banned).",
              body=body_of(SubmitAppeal, frozenset({"community_id"})), reply=AppealResult,
              status=201)
