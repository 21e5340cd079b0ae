"""The aiohttp application: every resource opened in one place, closed in reverse.

``build_app(config)`` constructs every collaborator (passing each its dependencies) and
registers every route. ``cleanup_ctx`` then opens what needs I/O in order (PostgreSQL,
embedded or external; migrations; the bus; background tasks) and tears it down in
reverse. ``on_shutdown`` drains the gateway first, so clients are told to reconnect
elsewhere (a ``reconnect`` frame, then close 1001) before anything they use goes away.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import argon2
from aiohttp import web

import web as web_pages
from persistence.database import Connection, Database
from persistence.embedded import EmbeddedPostgres
from persistence.migrate import migrate
from protocol.models import User
from protocol.moderation import RaidSignalKind
from rooms.chat.chat import ChatService, CommittedPublisher
from rooms.chat.communities import CommunityService
from rooms.chat.group_commit import GroupCommitWriter
from rooms.chat.settings import CommunitySettings
from rooms.moderation.automod_service import AutomodService
from rooms.moderation.enforcement import PostGate, make_slowmode
from rooms.moderation.moderation import ModerationService
from rooms.moderation.principals import PrincipalService
from rooms.moderation.raid import RaidMonitor, make_counter
from rooms.moderation.review import ReviewService
from rooms.moderation.roles import RoleService
from rooms.realtime.access import AccessResolver
from rooms.realtime.bus import Bus, InProcessBus
from rooms.realtime.gap_repair import ChannelHeads, MissedMessages, catch_up_after_reconnect
from rooms.realtime.hub import Hub
from rooms.realtime.presence import PresenceService, make_store
from rooms.realtime.rate_limit import RateLimiter, make_limiter
from rooms.realtime.ready import SessionOpener
from rooms.realtime.redis_client import redis_clients
from rooms.realtime.routing import Router
from rooms.realtime.session_mirror import SessionMirror
from rooms.realtime.sessions import SessionRegistry
from rooms.voice.live import LiveService
from rooms.voice.live_attendance import AttendanceLog
from rooms.voice.live_stage import StageRoomOptions
from rooms.voice.voice import VoiceService
from rooms.voice.voice_attendance import VoiceAttendanceRecorder
from rooms.voice.voice_media import MediaLink
from rooms.voice.voice_roster import make_roster
from server.api_auth import add_auth_routes
from server.api_automod import add_automod_routes
from server.api_communities import add_community_routes
from server.api_live import add_live_routes
from server.api_moderation import add_moderation_routes, audit_retention
from server.api_roles import add_role_routes
from server.api_settings import add_settings_routes
from server.api_web_auth import add_web_auth_routes
from server.auth import Authenticator
from server.config import Config, media_worker_count, secret_for
from server.cors import cors_middleware
from server.gateway import Gateway
from server.gc_policy import GcPolicy
from server.lifecycle import TaskSupervisor, Teardown
from server.logs import request_id_middleware
from server.metrics import Metrics, render
from server.ownership import claim_starter_txn
from server.readiness import Check, Readiness
from server.rest.openapi import add_openapi_route
from server.sidecar_host import (
    SidecarCore,
    SidecarRequests,
    load_sidecars,
    make_key_limiter,
    mount_sidecars,
    selected_sidecars,
)
from server.web_files import web_files_middleware

log = logging.getLogger(__name__)

WEB_ROOT = Path(web_pages.__file__).resolve().parent  # package data: found when installed too


class Services:
    """Every long-lived collaborator of one gateway process."""

    def __init__(self, config: Config, bus: Bus | None = None) -> None:
        self.config = config
        self.db = Database()
        self.metrics = Metrics()
        self.redis = redis_clients(config.redis_url)
        """Every plain Redis client comes from here (None: no Redis configured)."""
        self.bus: Bus = bus or self._make_bus(config)
        # permissions: the one resolver; permissions_update re-reads sessions through it
        self.access = AccessResolver(self.db)
        # gap repair (rooms/realtime/gap_repair.py): what the bus lost, read back from PostgreSQL
        self.missed = MissedMessages(self.db)
        self.heads = ChannelHeads(self.db)
        self.hub = Hub(self.bus, fetch_missing=self.missed,
                       observe_latency=self.metrics.observe_latency_ms,
                       refresh_access=self.access.refresh_session,
                       read_heads=self.heads)
        # moderation (issue 5): raid counters, slow mode, the resolver, the services
        self.raid = RaidMonitor(self.hub, make_counter(self.redis),
                                joins=config.raid_joins,
                                joins_window_s=config.raid_joins_window_s,
                                messages=config.raid_messages,
                                messages_window_s=config.raid_messages_window_s)
        self.communities = CommunityService(
            self.db, self.hub, config.limits, access=self.access,
            on_join=lambda cid: self.raid.note(cid, RaidSignalKind.JOINS))
        self.settings = CommunitySettings(self.db, self.hub, self.access)
        self.slowmode = make_slowmode(self.redis)
        self.gate = PostGate(self.slowmode,
                             on_message=lambda cid: self.raid.note(cid, RaidSignalKind.MESSAGES))
        self.moderation = ModerationService(self.db, self.hub, config.limits, self.access)
        self.starter_community_id: int | None = None
        hasher = None
        if config.argon2_time_cost or config.argon2_memory_kib:
            defaults = argon2.PasswordHasher()
            hasher = argon2.PasswordHasher(
                time_cost=config.argon2_time_cost or defaults.time_cost,
                memory_cost=config.argon2_memory_kib or defaults.memory_cost)
        self.auth = Authenticator(self.db, secret_for(config), password_hasher=hasher,
                                  access_ttl_s=config.access_token_ttl_s,
                                  loadtest_provisioning=config.loadtest_provisioning,
                                  on_register=self._on_register)
        self.writer = GroupCommitWriter(self.db, CommittedPublisher(self.hub),
                                        window_ms=config.group_commit_window_ms)
        limits = config.limits
        self.user_limiter: RateLimiter = make_limiter(
            self.redis, limits.user_messages_per_window, limits.rate_window_ms)
        # automod (issue 5): the resolver, B's moderation service, members' custom roles
        self.automod = AutomodService(self.db, self.hub, access=self.access,
                                      moderation=self.moderation,
                                      role_ids=self.access.member_role_ids)
        self.chat = ChatService(self.db, self.hub, self.writer, config.limits,
                                user_limiter=self.user_limiter, automod=self.automod,
                                gate=self.gate)
        self.report_limiter: RateLimiter = make_limiter(
            self.redis, limits.reports_per_window, limits.report_window_ms)
        self.review = ReviewService(self.db, self.hub, config.limits, self.moderation,
                                    self.report_limiter)
        self.roles = RoleService(self.db, self.hub, config.limits, self.access)
        self.registry = SessionRegistry(config.limits.resume_window_ms)
        self.mirror: SessionMirror | None = None
        if self.redis is not None:
            self.mirror = SessionMirror(
                self.redis.url,
                owner=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
                ttl_ms=config.limits.resume_window_ms,
                max_frames=config.limits.replay_buffer_events)
        # presence (rooms/realtime/presence.py): Redis with HEARTH_REDIS_URL, else in memory
        self.presence = PresenceService(make_store(
            self.redis, ttl_s=config.presence_ttl_s,
            batch_s=config.presence_batch_ms / 1000), self.hub, self.db,
            max_subscriptions=limits.max_presence_subscriptions,
            auto_max_members=limits.presence_auto_max_members)
        # voice rooms and live sessions (issue 6): the roster is shared like presence; the
        # media workers are reached with the other I/O (_realtime) through media_link.
        # Voice needs of live sessions only what reads PostgreSQL (stage room options,
        # the attendance log), so live sessions can be given the voice rooms.
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.media_link = MediaLink()
        self.stage_rooms = StageRoomOptions(self.db, config.data_path(),
                                            mix_listeners_above=config.stage_mix_listeners_above)
        self.attendance = AttendanceLog(self.db)
        self.voice_attendance = VoiceAttendanceRecorder(self.db)
        """Voice joins and leaves as ``voice_attended`` domain events (the outbox)."""
        self.voice_join_limiter: RateLimiter = make_limiter(
            self.redis, limits.voice_joins_per_window, limits.voice_join_window_ms)
        self.voice = VoiceService(self.db, self.hub, config.limits, self.access,
                                  make_roster(self.redis, self.node_id), self.media_link,
                                  enabled=config.voice_enabled,
                                  mix_listeners_above=config.voice_mix_listeners_above,
                                  join_limiter=self.voice_join_limiter,
                                  stage_options=self.stage_rooms,
                                  on_join=[self.attendance.note_join,
                                           self.voice_attendance.joined],
                                  on_leave=[self.attendance.note_leave,
                                            self.voice_attendance.left])
        self.question_limiter: RateLimiter = make_limiter(
            self.redis, limits.questions_per_window, limits.rate_window_ms)
        self.live = LiveService(self.db, self.hub, limits, self.access,
                                data_dir=config.data_path(), gate=self.gate,
                                automod=self.automod, question_limiter=self.question_limiter,
                                reminder_lead_s=config.live_reminder_lead_s,
                                reminder_every_s=config.live_reminder_every_s,
                                stage_rooms=self.stage_rooms, attendance=self.attendance,
                                voice=self.voice, rooms=self.voice)
        self.opener = SessionOpener(self.db, self.hub, self.registry, config.limits,
                                    mirror=self.mirror, fetch_missing=self.missed,
                                    presence=self.presence, access=self.access,
                                    on_close=[self.voice.session_closed])
        self._reconnects: set[asyncio.Task[None]] = set()
        self.tasks = TaskSupervisor()
        """The process's background tasks; one that dies makes ``/readyz`` fail."""
        self.gc_policy = GcPolicy(freeze_interval_s=config.gc_freeze_interval_s,
                                  full_interval_s=config.gc_full_interval_s)
        # sidecars (server/sidecar_host.py): made here, so that their gateway requests
        # are in the routing table; their routes and tasks are mounted by build_app.
        self.principals = PrincipalService(self.db, self.hub, make_key_limiter(self.redis))
        self.sidecar_core = SidecarCore(config, self.db, self.hub, self.auth, self.principals,
                                       self.tasks)
        self.sidecars = load_sidecars(self.sidecar_core, selected_sidecars(config))
        # The core asks the mounted sidecars about prerequisites (a live session's
        # prerequisite_course asks the "course" check) without importing any of them.
        for sidecar in self.sidecars:
            self.live.prerequisite_checks.update(sidecar.prerequisite_checks())
        # The gateway's routing table: each domain lists the requests it serves.
        self.router = Router([self.chat, self.moderation, self.review, self.roles,
                              self.presence, self.live, self.voice,
                              SidecarRequests(self.sidecars)])
        self.gateway = Gateway(auth=self.auth, opener=self.opener, router=self.router,
                               limits=config.limits, allowed_origins=config.allowed_origins,
                               admission_per_s=config.admission_per_s,
                               session_start_concurrency=config.session_start_concurrency,
                               session_start_max_queue_s=config.session_start_max_queue_s)
        checks: dict[str, Check] = {"database": self.db.ping, "bus": self.bus.ping}
        if self.mirror is not None:
            checks["sessions"] = self.mirror.ping
        self.readiness = Readiness(checks)

    def _make_bus(self, config: Config) -> Bus:
        if self.redis is None:
            return InProcessBus()
        from rooms.realtime.redis_bus import RedisBus

        return RedisBus(self.redis.urls, on_reconnect=self._bus_reconnected)

    def _bus_reconnected(self) -> None:
        task = asyncio.get_running_loop().create_task(self.on_bus_reconnect())
        self._reconnects.add(task)
        task.add_done_callback(self._reconnect_done)

    def _reconnect_done(self, task: asyncio.Task[None]) -> None:
        """A catch-up after a reconnect is one-off work: a failure is logged at once."""
        self._reconnects.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("catch-up after a bus reconnect failed", exc_info=exc)

    def sample_metrics(self, m: Metrics) -> None:
        """Copy this process's counters into prometheus (every few seconds)."""
        gateway, hub, writer = self.gateway, self.hub, self.writer
        m.connections.set(len(gateway.connections))
        m.sessions_detached.set(self.registry.detached_count())
        m.topics.set(hub.topic_count())
        m.outbound_bytes.set(sum(c.transport.get_write_buffer_size()
                                 for c in gateway.connections))
        m.pending_commits.set(writer.pending)
        pool = self.db.pool_or_none()
        if pool is not None:
            m.db_pool_size.set(pool.get_size())
            m.db_pool_in_use.set(pool.get_size() - pool.get_idle_size())
        roundtrip = getattr(self.bus, "last_roundtrip_s", None)
        if isinstance(roundtrip, float):
            m.bus_roundtrip.set(roundtrip)
        m.add_delta(m.frames_in, "frames_in", gateway.stats["frames_in"])
        m.add_delta(m.events_in, "events_in", hub.events_in)
        m.add_delta(m.deliveries, "deliveries", hub.deliveries)
        m.add_delta(m.messages_committed, "committed", writer.committed)
        m.add_delta(m.commit_batches, "batches", writer.batches)
        m.add_delta(m.drops.labels("slow_consumer"), "slow", gateway.stats["slow_consumers"])
        m.add_delta(m.resume_attempts, "resume_attempts", gateway.stats["resume_attempts"])
        m.add_delta(m.resume_successes, "resume_successes", gateway.stats["resume_successes"])
        m.add_delta(m.gaps_repaired, "gaps", hub.gaps_repaired)
        m.add_delta(m.drops.labels("ephemeral"), "ephemeral", hub.ephemeral_dropped)
        m.add_delta(m.drops.labels("admission"), "admission",
                    gateway.stats["admission_refused"])
        m.add_delta(m.drops.labels("session_start_busy"), "starts_refused",
                    gateway.stats["starts_refused"])
        m.add_delta(m.drops.labels("session_start_abandoned"), "starts_abandoned",
                    gateway.stats["starts_abandoned"])
        m.add_delta(m.duplicates_dropped, "dups", hub.duplicates_dropped)

    async def on_bus_reconnect(self) -> None:
        """The bus came back: whatever it dropped meanwhile is read from PostgreSQL."""
        self.automod.invalidate_all()  # rule-change notices may have been lost too
        await catch_up_after_reconnect(self.heads, self.hub)

    async def _on_register(self, conn: Connection, user: User) -> None:
        """New people land in the starter community, so they have somewhere to talk;
        the first of them becomes its owner.
        Runs inside the registration transaction; the new account has no session yet,
        so there is nobody to notify but the community's member list, which is read
        from the database on demand."""
        if self.starter_community_id is not None and not user.bot:
            # The first person on a fresh install owns it (server/ownership.py). Claimed
            # before joining: the join's member-count trigger locks the community row,
            # which the claim must take first (else two first registrations deadlock).
            await claim_starter_txn(conn, self.starter_community_id, user.id)
            await self.communities.add_starter_member_txn(conn, self.starter_community_id,
                                                          user.id)


SERVICES = web.AppKey("services", Services)


async def _database(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    config = services.config
    embedded: EmbeddedPostgres | None = None
    dsn = config.database_url
    if not dsn:
        embedded = EmbeddedPostgres(config.data_path() / "postgres")
        dsn = await asyncio.to_thread(embedded.start)
    try:
        await services.db.open(dsn, min_size=2, max_size=config.db_pool_size)
        try:
            applied = await migrate(services.db.pool)
            if applied:
                log.info("migrations applied: %s", ", ".join(applied))
            yield
        finally:
            await services.db.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def _realtime(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    teardown = Teardown()
    # Pushed in opening order, run in reverse: each step runs even if one before failed.
    teardown.push("raid", services.raid.close)
    teardown.push("slowmode", services.slowmode.close)
    teardown.push("user-limiter", services.user_limiter.close)
    teardown.push("report-limiter", services.report_limiter.close)
    teardown.push("question-limiter", services.question_limiter.close)
    teardown.push("voice-join-limiter", services.voice_join_limiter.close)
    if services.mirror is not None:
        teardown.push("session-mirror", services.mirror.close)
    try:
        if services.config.starter_community:
            services.starter_community_id = \
                await services.communities.ensure_starter_community()
        await services.bus.start()
        teardown.push("bus", services.bus.close)
        teardown.push("hub", services.hub.close)
        await services.presence.start()
        # this process's users go offline (or elsewhere)
        teardown.push("presence", services.presence.close)
        media_close = await _start_media(services)
        if media_close is not None:
            teardown.push("media", media_close)
        # this process's participants leave their rooms
        teardown.push("voice", services.voice.close)
        tasks = services.tasks
        teardown.push("background-tasks", tasks.close)
        tasks.start("group-commit", services.writer.run())
        tasks.start("gateway-sweeper", services.gateway.sweep_forever())
        tasks.start("metrics", services.metrics.run(services.sample_metrics))
        tasks.start("presence", services.presence.run())
        tasks.start("raid-signals", services.raid.run())
        tasks.start("audit-retention",
                    audit_retention(services.db, services.config.audit_retention_days))
        tasks.start("gc-policy", services.gc_policy.run())
        tasks.start("live-attendance", services.attendance.run())
        tasks.start("voice-attendance", services.voice_attendance.run())
        tasks.start("live-reminders", services.live.run())
        tasks.start("voice-roster", services.voice.run())
        tasks.start("readiness", services.readiness.run())
        yield
    finally:
        await teardown.run()


MEDIA_SOCKETS_ENV = "HEARTH_MEDIA_SOCKETS"
"""Set by the ``--workers N`` supervisor: comma-separated unix socket paths of the
node's media workers, which every gateway process connects to instead of spawning."""


async def _start_media(services: Services) -> Callable[[], Awaitable[None]] | None:
    """Reach this node's media workers (``rooms/media/pool.py``) for voice rooms;
    returns how to stop. Under the supervisor (``HEARTH_MEDIA_SOCKETS``) the workers
    are the node's, shared by every gateway process; a single process spawns its own.
    Without workers (``media_workers`` 0 or voice disabled) voice joins answer
    ``voice_unavailable``.

    Placement is in Redis whenever ``redis_url`` is set (every process and node finds
    a room's one worker there), else in this process. Every IPC connection is
    authenticated with a key derived from the shared ``secret``. Spawned workers'
    sockets go in a short temporary directory: a unix socket path must fit in 108
    bytes, which a data directory may not."""
    config = services.config
    shared = [p for p in os.environ.get(MEDIA_SOCKETS_ENV, "").split(",") if p]
    count = media_worker_count(config, supervised=False)
    if not config.voice_enabled or (not shared and count <= 0):
        return None
    from protocol.media_ipc import ParticipantState, Speaking, WorkerEvent, derive_key
    from rooms.media.pool import (
        LocalPlacement,
        MediaPool,
        PlacementStore,
        RedisLike,
        RedisPlacement,
    )

    voice = services.voice

    def on_event(_worker: str, event: WorkerEvent) -> None:
        if isinstance(event, Speaking):
            voice.media_speaking(event.room_id, list(event.participant_ids))
        elif isinstance(event, ParticipantState):
            voice.media_participant_state(event.room_id, event.participant_id, event.state)

    key = derive_key(secret_for(config))
    redis_client = None
    store: PlacementStore = LocalPlacement()
    if services.redis is not None:
        redis_client = services.redis.client()
        # redis-py's stubs type every command as sync-or-async; the client is async.
        store = RedisPlacement(cast("RedisLike", redis_client))
    socket_dir: Path | None = None
    try:
        if shared:
            pool = await MediaPool.connect(shared, store, key=key)
        else:
            socket_dir = Path(tempfile.mkdtemp(prefix="hearth-media-"))
            pool = await MediaPool.start(count, socket_dir,
                                         capacity_tracks=config.media_capacity_tracks,
                                         max_slots=config.limits.voice_receive_slots,
                                         ice=config.media_ice, placement_store=store,
                                         key=key, listen=config.media_listen,
                                         advertise=config.media_advertise,
                                         private_candidates=config.media_private_candidates)
    except BaseException:
        if redis_client is not None:
            await redis_client.aclose()
        raise
    pool.on_event(on_event)
    pool.on_worker_gone(voice.media_worker_gone)
    services.media_link.connected(pool)

    async def stop() -> None:
        services.media_link.disconnected()
        await pool.close()
        if redis_client is not None:
            await redis_client.aclose()
        if socket_dir is not None:
            await asyncio.to_thread(shutil.rmtree, socket_dir, True)

    return stop


async def _drain_gateway(app: web.Application) -> None:
    await app[SERVICES].gateway.drain()


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database and the bus answer, and the node is not draining. From
    the checks' latest results (server/readiness.py), so it answers at once even while
    a store hangs."""
    services = request.app[SERVICES]
    checks = dict(await services.readiness.state())
    checks["background"] = services.tasks.healthy
    ok = all(checks.values()) and not services.gateway.draining
    return web.json_response({"status": "ok" if ok else "unavailable", "checks": checks},
                             status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition (all workers' samples with --workers)."""
    return render(request.app[SERVICES].metrics)


async def gateway_handler(request: web.Request) -> web.StreamResponse:
    return await request.app[SERVICES].gateway.handle(request)


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(WEB_ROOT / "index.html")


async def mod_console(request: web.Request) -> web.StreamResponse:
    """The moderator console page (web/mod.html); every action it takes is checked
    server-side, so the page itself is public like the chat page."""
    return web.FileResponse(WEB_ROOT / "mod.html")


async def voice_page(request: web.Request) -> web.StreamResponse:
    """The voice rooms page (web/voice.html): joins voice and stage channels over WebRTC;
    every op it sends is checked on the server like any client's."""
    return web.FileResponse(WEB_ROOT / "voice.html")


async def settings_page(request: web.Request) -> web.StreamResponse:
    """The owner's settings page (web/settings.html): community, channels, roles,
    automod, invites and live sessions through the REST routes, each checked there."""
    return web.FileResponse(WEB_ROOT / "settings.html")


async def courses_page(request: web.Request) -> web.StreamResponse:
    """The courses pages (web/courses.html for learners, web/course-build.html for
    staff): every read and action is a courses REST route, checked there."""
    name = "course-build.html" if request.path.rstrip("/").endswith("/build") else "courses.html"
    return web.FileResponse(WEB_ROOT / name)


def build_app(config: Config, bus: Bus | None = None) -> web.Application:
    """The whole server as an aiohttp application (``bus``: a test may bring its own)."""
    services = Services(config, bus)
    app = web.Application(middlewares=[request_id_middleware,
                                       cors_middleware(config.allowed_origins),
                                       web_files_middleware],
                          client_max_size=1024 * 1024)
    app[SERVICES] = services
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_realtime)
    app.on_shutdown.append(_drain_gateway)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/gateway", gateway_handler)
    app.router.add_get("/metrics", metrics)
    add_auth_routes(app, services.auth)
    add_web_auth_routes(app, services.auth)
    add_community_routes(app, services.auth, services.communities)
    add_automod_routes(app, services.auth, services.automod)
    add_moderation_routes(app, services.auth, services.moderation, services.review)
    add_role_routes(app, services.auth, services.roles)
    add_settings_routes(app, services.auth, services.settings)
    add_live_routes(app, services.auth, services.live)
    # sidecars (server/sidecar_host.py): service keys, every sidecar's routes and tasks
    mount_sidecars(app, services.sidecar_core, services.sidecars)
    add_openapi_route(app)  # last: it documents every REST route added above
    if (WEB_ROOT / "index.html").is_file():
        app.router.add_get("/", index)
        app.router.add_get("/mod", mod_console)
        app.router.add_get("/voice", voice_page)
        app.router.add_get("/settings", settings_page)
        if any(sidecar.name == "courses" for sidecar in services.sidecars):
            app.router.add_get("/courses", courses_page)
            app.router.add_get("/courses/build", courses_page)
        app.router.add_static("/static/", WEB_ROOT, show_index=False)
    return app
