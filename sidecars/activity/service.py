"""The activity sidecar's rules: count what members do, tell them (no HTTP here)."""

from __future__ import annotations

import asyncpg

from protocol.codes import ErrorCode
from protocol.models import Role
from protocol.sidecar import ActivityEntry, ActivityRecorded, ActivityResult, FetchActivity
from sidecars.activity import store
from sidecars.activity.events import Activity, activity_of
from sidecars.api import Delivered, Host, SidecarError, Subscriber

SUBSCRIBER = "activity.recorder"
STAFF = frozenset({Role.OWNER, Role.ADMIN, Role.MODERATOR})
"""Who reads another member's activity."""


class ActivityService:
    """Outbox subscriber ``activity.recorder`` and the reads behind the REST route."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._pending: dict[str, tuple[Activity, int]] = {}
        """event id -> (activity, total) of the batch being handled; published (and
        dropped) after its commit. A rolled-back batch's entries are overwritten when
        the same events come again."""

    def subscriber(self) -> Subscriber:
        return Subscriber(SUBSCRIBER, None, self.after_commit, handle_batch=self.handle)

    async def handle(self, conn: asyncpg.Connection, batch: list[Delivered]) -> None:
        """Record a batch of events in the subscriber's transaction (one statement)."""
        found = [(item, activity) for item in batch
                 if (activity := activity_of(item.event)) is not None]
        totals = await store.record_batch_txn(
            conn, [(item.event_id, activity, item.created_at_ms) for item, activity in found])
        for (item, activity), total in zip(found, totals, strict=True):
            self._pending[item.event_id] = (activity, total)

    async def after_commit(self, batch: list[Delivered]) -> None:
        for item in batch:
            found = self._pending.pop(item.event_id, None)
            if found is None:
                continue
            activity, total = found
            await self.host.publish_to_user(activity.user_id, ActivityRecorded(
                community_id=activity.community_id, kind=activity.kind, total=total,
                at=activity.at_ms or item.created_at_ms))

    async def require_reader(self, community_id: int, caller_id: int, user_id: int) -> None:
        """A member reads their own activity; only staff read another's, since it names
        messages (ids, times, totals) in private and tier-gated channels the caller may
        not see. Not a member: ``not_found`` (the community is not disclosed)."""
        caller = await self.host.member(community_id, caller_id)
        if caller is None:
            raise SidecarError(ErrorCode.NOT_FOUND, "unknown community")
        if user_id != caller_id and caller.role not in STAFF:
            raise SidecarError(ErrorCode.FORBIDDEN,
                               "only staff read another member's activity")

    async def recent(self, community_id: int, user_id: int,
                     limit: int) -> list[ActivityEntry]:
        async with self.host.connection() as conn:
            return await store.recent(conn, community_id, user_id, limit)

    async def totals(self, community_id: int, user_id: int) -> dict[str, int]:
        async with self.host.connection() as conn:
            return await store.totals(conn, community_id, user_id)

    async def fetch(self, caller_id: int, req: FetchActivity) -> ActivityResult:
        """``fetch_activity`` over the gateway: the REST read's rule
        (:meth:`require_reader`)."""
        user_id = req.user_id or caller_id
        await self.require_reader(req.community_id, caller_id, user_id)
        if await self.host.member(req.community_id, user_id) is None:
            raise SidecarError(ErrorCode.NOT_FOUND, "unknown member")
        return ActivityResult(items=await self.recent(req.community_id, user_id, req.limit),
                              totals=await self.totals(req.community_id, user_id))
