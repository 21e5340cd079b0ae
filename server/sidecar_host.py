"""Mounting sidecars: in ``hearth serve`` (all of them) or alone (``--only NAME``).

:class:`CoreHost` implements :class:`sidecars.api.Host` over the core's collaborators;
:func:`load_sidecars` makes the chosen sidecars; :class:`SidecarRequests` is their
gateway requests as one domain of the routing table (``rooms/realtime/routing.py``),
given to the :class:`~rooms.realtime.routing.Router` when a gateway process builds it;
:func:`mount_sidecars` adds the service-key routes and every sidecar's routes to the
REST route table (so they are in the OpenAPI document), and one cleanup context that
applies the sidecars' migrations (each in its own namespace) and runs their outbox
subscribers, tasks, the outbox listener and the retention purge.
:func:`build_sidecar_app` is the whole process for ``--only``: PostgreSQL, the bus (to
reach users connected to the gateway processes), health checks and the chosen
sidecars, without a gateway.

Sidecars are found by package: every ``sidecars/<name>/`` exposing ``SIDECAR``. A
gateway mounts them all unless ``sidecars`` (``HEARTH_SIDECARS``) names which
(comma-separated; ``none`` for none: the deployment that runs them as their own
processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import pkgutil
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import asyncpg
from aiohttp import web

import sidecars
from persistence import channels as channels_db
from persistence import communities as communities_db
from persistence import roles as roles_db
from persistence.database import Database
from persistence.migrate import migrate
from persistence.outbox import Consumer, OutboxNotifier, retention_forever
from protocol.base import Request
from protocol.chat import ChannelCreated, ChannelDeleted
from protocol.codes import ErrorCode
from protocol.frames import Result
from protocol.models import ChannelKind, Role
from protocol.sidecar import Scope, SidecarEvent
from rooms.errors import RequestError
from rooms.moderation.principals import Principal, PrincipalRefused, PrincipalService
from rooms.realtime.bus import Bus, InProcessBus, community_topic, user_topic
from rooms.realtime.hub import Hub
from rooms.realtime.outages import ThrottledLog
from rooms.realtime.permissions import FIXED_ROLE_BITS, Permission, base_bits
from rooms.realtime.rate_limit import RateLimiter, make_limiter
from rooms.realtime.redis_client import RedisClients, redis_clients
from rooms.realtime.routing import Handler
from rooms.realtime.sessions import Session
from server.api_auth import bearer_token, require_user
from server.api_service_keys import add_service_key_routes
from server.auth import Authenticator
from server.config import Config, secret_for
from server.cors import cors_middleware
from server.lifecycle import TaskSupervisor
from server.logs import request_id_middleware
from server.readiness import Readiness
from server.rest import decoding
from server.rest.errors import ApiError, retry_after_header
from server.rest.openapi import RestApi, add_openapi_route, rest_api
from sidecars.api import (
    GatewayHandler,
    Host,
    MemberInfo,
    PrincipalInfo,
    Route,
    RouteHandler,
    Sidecar,
    SidecarError,
)

log = logging.getLogger(__name__)

SERVICE_KEY_BURST = 120
SERVICE_KEY_WINDOW_MS = 12_000.0
"""Per key: 120 requests at once, then 10 per second."""

T = TypeVar("T")


def discover() -> dict[str, type[Sidecar]]:
    """Every sidecar package, by name."""
    found: dict[str, type[Sidecar]] = {}
    for info in pkgutil.iter_modules(sidecars.__path__):
        if not info.ispkg:
            continue
        module = importlib.import_module(f"sidecars.{info.name}")
        cls = getattr(module, "SIDECAR", None)
        if isinstance(cls, type) and issubclass(cls, Sidecar):
            found[cls.name] = cls
    return found


def selected_sidecars(config: Config) -> list[str] | None:
    """``config.sidecars`` (``HEARTH_SIDECARS``): None for every sidecar (unset or
    ``all``), ``[]`` for ``none``, else the names listed."""
    names = config.sidecars
    if names is None or names == ["all"]:
        return None
    if names == ["none"]:
        return []
    return list(names)


def make_key_limiter(redis: RedisClients | None) -> RateLimiter:
    """The per-key rate of service keys (shared through Redis when there is one)."""
    return make_limiter(redis, SERVICE_KEY_BURST, SERVICE_KEY_WINDOW_MS)


@dataclass
class SidecarCore:
    """What the host needs of a serving process (the gateway's Services, or --only's)."""

    config: Config
    db: Database
    hub: Hub
    auth: Authenticator
    principals: PrincipalService
    tasks: TaskSupervisor
    """The process's supervised background tasks: the sidecars' run there, so one that
    dies is logged at once and makes ``/readyz`` fail."""


class CoreHost(Host):
    """:class:`sidecars.api.Host` over the core."""

    def __init__(self, core: SidecarCore) -> None:
        self.core = core

    def transaction(self, name: str) -> AbstractAsyncContextManager[asyncpg.Connection]:
        return self.core.db.transaction(name)

    def connection(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        return self.core.db.connection()

    async def publish_to_user(self, user_id: int, event: SidecarEvent) -> None:
        await self.core.hub.publish(user_topic(user_id), event)

    async def publish_to_community(self, community_id: int, event: SidecarEvent) -> None:
        await self.core.hub.publish(community_topic(community_id), event)

    async def member(self, community_id: int, user_id: int) -> MemberInfo | None:
        async with self.core.db.connection() as conn:
            access = await roles_db.member_access(conn, community_id, user_id)
        if access is None:
            return None
        return MemberInfo(community_id, user_id, access.role, access.tier,
                          tuple(access.role_ids),
                          int(base_bits(access.role, access.custom_bits)))

    async def members_with(self, community_id: int, bit: Permission) -> list[int]:
        # Staff are few: the fixed roles whose defaults carry the bit, plus members
        # holding a custom role; each candidate's bits are resolved like member().
        fixed = [r.value for r, bits in FIXED_ROLE_BITS.items() if bits & bit]
        async with self.core.db.connection() as conn:
            rows = await conn.fetch(
                "SELECT m.user_id, m.role,"
                " coalesce(array_agg(r.permissions) FILTER (WHERE r.id IS NOT NULL), '{}')"
                " AS bits FROM community_members m"
                " LEFT JOIN member_roles mr ON mr.community_id = m.community_id"
                " AND mr.user_id = m.user_id"
                " LEFT JOIN community_roles r ON r.id = mr.role_id"
                " WHERE m.community_id = $1 AND (m.role = ANY($2::text[])"
                " OR mr.role_id IS NOT NULL) GROUP BY m.user_id, m.role", community_id, fixed)
        return sorted(r["user_id"] for r in rows
                      if base_bits(Role(r["role"]), r["bits"]) & bit)

    async def create_private_channel(self, community_id: int, name: str, created_by: int,
                                     member_ids: list[int]) -> int:
        async with self.core.db.transaction("sidecar.channel") as conn:
            allowed = set(await communities_db.member_ids(conn, community_id))
            members = sorted(set(member_ids) & allowed)
            channel = await channels_db.create_channel_txn(
                conn, kind=ChannelKind.TEXT, name=name[:100], community_id=community_id,
                created_by=created_by if created_by in allowed else None, private=True,
                member_ids=members)
        await self.core.hub.publish_many(
            [(user_topic(m), ChannelCreated(channel=channel)) for m in members])
        return channel.id

    async def set_channel_member(self, channel_id: int, user_id: int, listed: bool) -> bool:
        async with self.core.db.transaction("sidecar.channel.member") as conn:
            channel = await channels_db.get_channel(conn, channel_id)
            if channel is None or channel.community_id is None or not channel.private:
                return False
            if listed:
                if await roles_db.member_access(conn, channel.community_id, user_id) is None:
                    return False
                changed = await channels_db.add_channel_member(conn, channel_id, user_id)
            else:
                changed = await channels_db.remove_channel_member(conn, channel_id, user_id)
        if changed:
            event: ChannelCreated | ChannelDeleted = ChannelCreated(channel=channel) \
                if listed else ChannelDeleted(channel_id=channel_id,
                                              community_id=channel.community_id)
            await self.core.hub.publish(user_topic(user_id), event)
        return changed

    async def user_id(self, request: web.Request) -> int:
        return (await require_user(request, self.core.auth)).id

    async def principal(self, request: web.Request, community_id: int,
                        scope: Scope) -> PrincipalInfo:
        p = await authenticate_principal(self.core.principals, request, community_id, scope)
        return PrincipalInfo(p.key_id, p.community_id, p.name, p.scopes)

    async def audit_use(self, principal: PrincipalInfo, action: str,
                        detail: dict[str, object]) -> None:
        await self.core.principals.record_use(
            Principal(principal.key_id, principal.community_id, principal.name,
                      principal.scopes), action, dict(detail))

    def path_params(self, request: web.Request, model: type[T]) -> T:
        return decoding.path_params(request, model)

    def query_params(self, request: web.Request, model: type[T]) -> T:
        return decoding.query_params(request, model)

    async def read_body(self, request: web.Request, model: type[T]) -> T:
        return await decoding.read_body(request, model)


async def authenticate_principal(principals: PrincipalService, request: web.Request,
                                 community_id: int, scope: Scope) -> Principal:
    """The request's service key for ``scope``; a refusal is raised for the error
    middleware (a 401 names the scheme, a 429 says when to retry)."""
    try:
        return await principals.authenticate(bearer_token(request), scope, community_id)
    except PrincipalRefused as exc:
        headers = retry_after_header(exc.retry_after_ms)
        if exc.code is ErrorCode.UNAUTHORIZED:
            headers["WWW-Authenticate"] = "Bearer"
        raise ApiError(exc.code, exc.message, headers=headers) from None


def load_sidecars(core: SidecarCore, only: Sequence[str] | None = None) -> list[Sidecar]:
    """The sidecars (all, or those named in ``only``), made over ``core``; no I/O."""
    available = discover()
    names = list(available) if only is None else list(only)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"unknown sidecar(s): {', '.join(unknown)}; "
                         f"available: {', '.join(sorted(available)) or 'none'}")
    host = CoreHost(core)
    return [available[n](host) for n in names]


class SidecarRequests:
    """The gateway requests of the mounted sidecars, as one domain of the routing
    table: a gateway process hands it to its ``Router`` with the core's domains."""

    def __init__(self, sidecars: Sequence[Sidecar]) -> None:
        self.sidecars = list(sidecars)

    def handlers(self) -> Mapping[type[Request], Handler]:
        served: dict[type[Request], Handler] = {}
        for sidecar in self.sidecars:
            for request_type, handler in sidecar.gateway_handlers().items():
                if request_type in served:
                    raise ValueError(f"{request_type.__name__} is served by two sidecars")
                served[request_type] = _gateway(handler)
        return served


def add_sidecar_route(api: RestApi, sidecar: Sidecar, route: Route) -> None:
    """One sidecar route into the REST route table (documented like the core's)."""
    api.route(route.method, route.path, _rest(route.handler), summary=route.summary,
              tag=sidecar.name, body=route.body, query=route.query, reply=route.reply,
              status=route.status, auth=route.auth, media_type=route.media_type,
              path_types=dict(route.path_types),
              credentials=("bearer", "serviceKey") if route.service_key else ("bearer",))


def mount_sidecars(app: web.Application, core: SidecarCore,
                   mounted: Sequence[Sidecar]) -> None:
    """Add the service-key routes and the sidecars' routes to ``app``; their I/O starts
    with the app (after the core's cleanup contexts). Their gateway requests are not
    here: a gateway process gives :class:`SidecarRequests` to its routing table."""
    add_service_key_routes(app, core.auth, core.principals, authenticate_principal)
    api = rest_api(app)
    for sidecar in mounted:
        for route in sidecar.routes():
            add_sidecar_route(api, sidecar, route)

    async def run(app: web.Application) -> AsyncIterator[None]:
        namespaces = {s.name: s.migrations for s in mounted if s.migrations is not None}
        applied = await migrate(core.db.pool, namespaces)
        if applied:
            log.info("sidecar migrations applied: %s", ", ".join(applied))
        failures = ThrottledLog(log)  # a PostgreSQL outage: one line, not a traceback each
        notifier = OutboxNotifier(core.db, failures=failures)
        tasks = core.tasks
        names = ["outbox-listener", "outbox-retention"]
        tasks.start("outbox-listener", notifier.run())
        tasks.start("outbox-retention", retention_forever(
            core.db, core.config.outbox_retention_days, failures=failures))
        for sidecar in mounted:
            for sub in sidecar.subscribers():
                consumer = Consumer(core.db, sub.name, sub.handle, sub.after_commit, notifier,
                                    failure_log=failures, batch_handler=sub.handle_batch)
                tasks.start(sub.name, consumer.run())
                names.append(sub.name)
            for i, task in enumerate(sidecar.tasks()):
                name = f"{sidecar.name}.task{i}"
                tasks.start(name, task())
                names.append(name)
        try:
            yield
        finally:
            # before the stores they use close (cleanup contexts end in reverse)
            await tasks.stop(names)
            await core.principals.limiter.close()

    app.cleanup_ctx.append(run)


def _gateway(handler: GatewayHandler) -> Handler:
    """A sidecar's gateway handler as the routing table serves it: the session becomes
    the caller's id, a :class:`SidecarError` the documented error reply."""
    async def serve(session: Session, request: Any) -> Result:
        try:
            return cast(Result, await handler(session.user.id, request))
        except SidecarError as exc:
            raise RequestError(exc.code, exc.message) from None
    return serve


def _rest(handler: RouteHandler) -> RouteHandler:
    """A sidecar's REST handler: a :class:`SidecarError` becomes the error middleware's
    reply (its code, its code's status)."""
    async def serve(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except SidecarError as exc:
            raise ApiError(exc.code, exc.message) from None
    return serve


# ------------------------------------------------------------------- hearth serve --only

SIDECAR_CORE = web.AppKey("sidecar_core", SidecarCore)


def build_sidecar_app(config: Config, only: Sequence[str], bus: Bus | None = None,
                      ) -> web.Application:
    """A process serving only the named sidecars (no gateway): same PostgreSQL and Redis
    as the gateway processes, whose users it reaches through the bus."""
    db = Database()
    if bus is None:
        if config.redis_url:
            from rooms.realtime.redis_bus import RedisBus

            bus = RedisBus(config.redis_url)
        else:
            log.warning("--only without redis_url: events published to users reach no "
                        "gateway process")
            bus = InProcessBus()
    hub = Hub(bus)
    auth = Authenticator(db, secret_for(config), access_ttl_s=config.access_token_ttl_s)
    principals = PrincipalService(db, hub, make_key_limiter(redis_clients(config.redis_url)))
    tasks = TaskSupervisor()
    readiness = Readiness({"database": db.ping, "bus": hub.bus.ping})
    core = SidecarCore(config, db, hub, auth, principals, tasks)
    # the gateway app's middlewares (the error middleware is added with the routes)
    app = web.Application(middlewares=[request_id_middleware,
                                       cors_middleware(config.allowed_origins)],
                          client_max_size=1024 * 1024)
    app[SIDECAR_CORE] = core

    async def resources(app: web.Application) -> AsyncIterator[None]:
        from persistence.embedded import EmbeddedPostgres

        embedded: EmbeddedPostgres | None = None
        dsn = config.database_url
        if not dsn:
            embedded = EmbeddedPostgres(config.data_path() / "postgres")
            dsn = await asyncio.to_thread(embedded.start)
        try:
            await db.open(dsn, min_size=2, max_size=config.db_pool_size)
            await migrate(db.pool)  # the core's first: sidecars read its tables
            await hub.bus.start()
            tasks.start("readiness", readiness.run())
            try:
                yield
            finally:
                await tasks.close()
                with contextlib.suppress(Exception):
                    await hub.close()
                await hub.bus.close()
                await db.close()
        finally:
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sidecars": list(only)})

    async def readyz(request: web.Request) -> web.Response:
        """From the checks' latest results (server/readiness.py), so it answers at once
        while a store hangs; 503 too once a supervised task has died."""
        checks = dict(await readiness.state())
        checks["background"] = tasks.healthy
        ok = all(checks.values())
        return web.json_response({"status": "ok" if ok else "unavailable", "checks": checks,
                                  "sidecars": list(only)}, status=200 if ok else 503)

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    mount_sidecars(app, core, load_sidecars(core, only))
    add_openapi_route(app)  # last: it documents the routes above
    return app
