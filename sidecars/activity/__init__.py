"""The activity sidecar: the smallest real sidecar, proving the seam end to end.

It consumes the domain-event outbox (messages, reactions, live attendance, joins),
keeps each member's recent activity and totals in its own tables, tells the member
(``activity_recorded``, to all their sessions on every node) and serves a REST read.
"""

from __future__ import annotations

from pathlib import Path

from protocol.base import Request
from protocol.sidecar import ActivityResult, FetchActivity
from sidecars.activity import http
from sidecars.activity.service import ActivityService
from sidecars.api import GatewayHandler, Host, Route, Sidecar, Subscriber


class ActivitySidecar(Sidecar):
    name = "activity"
    migrations = Path(__file__).parent / "migrations"

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.service = ActivityService(host)

    def routes(self) -> list[Route]:
        return http.routes(self.host, self.service)

    def subscribers(self) -> list[Subscriber]:
        return [self.service.subscriber()]

    def gateway_handlers(self) -> dict[type[Request], GatewayHandler]:
        async def fetch(user_id: int, req: FetchActivity) -> ActivityResult:
            return await self.service.fetch(user_id, req)

        return {FetchActivity: fetch}


SIDECAR = ActivitySidecar
