"""Presence: online / idle / dnd / offline with last-seen, across every process and node.

A user is *connected* while any of their sessions, on any process, has a live socket
(a detached session waiting for ``resume`` does not count). What others see is then the
status the user chose with ``set_presence`` (``online`` by default; ``invisible`` looks
``offline``), and ``offline`` with ``last_seen`` once no socket is left.

Two layers:

:class:`PresenceStore` (the shared state; one interface, two implementations, like
    :mod:`rooms.realtime.bus`). :class:`MemoryPresenceStore` serves a single process (no Redis);
    :class:`rooms.realtime.redis_presence.RedisPresenceStore` serves many processes and nodes. A
    store keeps, per user, how many sessions each process holds, the chosen status, the
    visible status and last-seen; per community, the set of members visible online (so
    an online count is one ``SCARD``: exact and O(1) to read, kept on transitions); and
    per community, the changes waiting for the next batch. Every transition is computed
    inside the store, atomically (a Lua script in Redis), so exactly one change is queued
    however many processes race.

:class:`PresenceService` (one per process). Tracks the sessions connected *here* and
    writes each user's absolute local state (session count, communities) to the store:
    writes are batched (every dirty user in one round-trip) and serialized, so the
    newest write always carries the newest local state. Background work, on one loop:

    - every ``batch_s / 6`` (0.25 s by default): take the communities whose batch is
      due and publish one ``presence_update`` per community to the hub (topic
      ``c.<id>``, encoded once, delivered as an ephemeral event);
    - every ``reap_s`` (1 s): process the users of dead processes (below);
    - every ``heartbeat_s`` (``ttl_s / 3``, 15 s by default): renew this process's
      lease, and pick up community joins and leaves of connected users.

Coalescing
    The first change in a community schedules its batch ``batch_s`` later (1.5 s by
    default); changes until then join it (a user appears once, with their latest
    presence). After a batch is taken the next change schedules the next one, so a
    community gets at most one ``presence_update`` per ``batch_s`` from the whole
    cluster, whatever the churn, carrying at most :data:`MAX_BATCH` users (the rest go
    in the next batch). A 100,000-member community costs each of its connected members
    one small event per 1.5 s at most, instead of one per change.

Dead processes
    A process holds a *lease* in the store, renewed every ``heartbeat_s`` for ``ttl_s``
    (45 s by default; ``HEARTH_PRESENCE_TTL_S``). One lease covers the presence of every
    connection of the process (one write per heartbeat, not one per user). Every live
    process looks for expired leases every ``reap_s`` and removes the dead process's
    sessions from its users, in chunks; users with no other connection go ``offline``
    (last-seen: the time of the reaping). So the users of a killed process are shown
    offline within ``ttl_s + reap_s + batch_s + tick_s`` (:meth:`PresenceService.bound_s`):
    48.25 s by default, at most 57.75 s (``ttl_s`` is capped at 55 s). A process that
    finds its own lease lapsed (paused, or cut off from Redis for longer than ``ttl_s``)
    registers under a new identity and writes all its users again.

Community membership
    A user's communities come from their connected sessions' view (kept current by the
    hub's control events). Joins and leaves reach the store at the next heartbeat
    (``heartbeat_s``); the online count of a community the user just joined includes
    them from then on.

Typing indicators are not presence: they cross nodes as ordinary hub events, are never
stored, and expire on the client (``expires_at``, ``limits.typing_ttl_ms``).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import msgspec

from persistence import communities as communities_db
from persistence.database import Database
from protocol.base import Request
from protocol.codes import ErrorCode
from protocol.communities import CommunityAvailable, CommunityUnavailable
from protocol.frames import Empty, Result
from protocol.models import Presence, PresenceStatus
from protocol.presence import (
    FetchMembers,
    MembersResult,
    PresenceUpdated,
    SetPresence,
    SubscribePresence,
)
from rooms.errors import RequestError, not_found
from rooms.realtime.bus import presence_topic
from rooms.realtime.control import ViewKey
from rooms.realtime.hub import Hub
from rooms.realtime.outages import ThrottledLog
from rooms.realtime.redis_client import RedisClients
from rooms.realtime.sessions import Session

log = logging.getLogger(__name__)

MAX_BATCH = 500
"""Most users in one ``presence_update`` (about 25 KB of JSON); more changes wait for the
next batch, so a client's presence traffic stays bounded even in a reconnect storm."""
MAX_TTL_S = 55.0
"""Largest lease TTL accepted, so that the offline bound stays under 60 s."""
KEEP_OFFLINE_MS = 30 * 24 * 3600 * 1000
"""How long a disconnected user's last-seen and chosen status are kept (Redis)."""
INSTALLATION_KEY = "installation_id"
"""``instance_settings`` key of the id that namespaces this installation's presence."""


class LeaseLost(Exception):
    """This process's lease expired (it may already be reaped): register anew."""


class UserSync(msgspec.Struct, frozen=True):
    """One user's state on this process, as written to the store."""

    user_id: int
    sessions: int
    """Connected sessions of the user on this process (0: none left)."""
    communities: frozenset[int] | None
    """The user's communities; None when unchanged since the last write."""


class PresenceBatch(msgspec.Struct, frozen=True):
    """One community's coalesced changes, ready to publish."""

    community_id: int
    presences: list[Presence]
    online_count: int


def visible_status(chosen: PresenceStatus, connected: bool) -> PresenceStatus:
    """What others see: the chosen status while connected, invisible as offline."""
    if not connected or chosen in (PresenceStatus.INVISIBLE, PresenceStatus.OFFLINE):
        return PresenceStatus.OFFLINE
    return chosen


def _now_ms() -> int:
    return int(time.time() * 1000)


def _check_cancelled() -> None:
    """Raise if this task was cancelled even though the await that got the cancellation
    returned normally: on Python 3.11, ``asyncio.wait_for`` (which redis-py uses for
    socket timeouts) swallows a cancellation that races with a reply (CPython
    gh-86296). Background loops call this after each round so shutdown never hangs."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


# --------------------------------------------------------------------------- the store


class PresenceStore(abc.ABC):
    """Presence state shared by every process. See the module docstring."""

    def __init__(self, *, ttl_s: float, batch_s: float) -> None:
        self.ttl_s = ttl_s
        self.batch_s = batch_s

    async def start(self, namespace: str) -> None:
        """Register this process (``namespace``: the installation, so installations
        sharing a Redis never mix)."""
        return None

    async def close(self) -> None:
        """Withdraw this process's sessions (their users go offline unless connected
        elsewhere) and release resources."""
        return None

    @abc.abstractmethod
    async def sync(self, users: Sequence[UserSync]) -> None:
        """Write the local state of ``users``. Raises :class:`LeaseLost`."""

    @abc.abstractmethod
    async def renew(self) -> None:
        """Extend this process's lease by ``ttl_s``. Raises :class:`LeaseLost`."""

    @abc.abstractmethod
    async def rejoin(self) -> None:
        """After :class:`LeaseLost`: register under a new identity (then sync all)."""

    @abc.abstractmethod
    async def reap(self) -> int:
        """Remove the sessions of processes whose lease expired; returns how many users
        were processed (0: nothing to do)."""

    @abc.abstractmethod
    async def set_status(self, user_id: int, status: PresenceStatus) -> None:
        """Record the user's chosen status (kept between sessions)."""

    @abc.abstractmethod
    async def snapshot(self, user_id: int, community_ids: Sequence[int]) -> tuple[
            PresenceStatus, dict[int, int]]:
        """The user's chosen status and the online count of each community (identify)."""

    @abc.abstractmethod
    async def presences(self, user_ids: Sequence[int]) -> list[Presence]:
        """What others see of each user, in order."""

    @abc.abstractmethod
    async def online_counts(self, community_ids: Sequence[int]) -> dict[int, int]:
        """Members visible online per community (O(1) each)."""

    @abc.abstractmethod
    async def take_due(self, limit: int) -> list[PresenceBatch]:
        """Take the batches that are due (at most ``limit`` communities)."""

    async def ping(self) -> bool:
        return True


class _UserState:
    __slots__ = ("chosen", "communities", "seen", "sessions", "visible")

    def __init__(self) -> None:
        self.chosen = PresenceStatus.ONLINE
        self.visible = PresenceStatus.OFFLINE
        self.seen: int | None = None
        self.sessions = 0
        self.communities: set[int] = set()


class MemoryPresenceStore(PresenceStore):
    """The store of a single process (no Redis): the same rules, in dictionaries. State
    is lost when the process stops, like everything else of a single process."""

    def __init__(self, *, ttl_s: float, batch_s: float) -> None:
        super().__init__(ttl_s=ttl_s, batch_s=batch_s)
        self._users: dict[int, _UserState] = {}
        self._online: dict[int, set[int]] = {}
        self._pending: dict[int, dict[int, Presence]] = {}
        self._due: dict[int, float] = {}

    def _announce(self, community_id: int, presence: Presence) -> None:
        self._pending.setdefault(community_id, {})[presence.user_id] = presence
        self._due.setdefault(community_id, time.monotonic() + self.batch_s)

    def _refresh(self, user_id: int, state: _UserState) -> None:
        new = visible_status(state.chosen, state.sessions > 0)
        if new is state.visible:
            return
        state.visible = new
        if new is PresenceStatus.OFFLINE:
            state.seen = _now_ms()
        presence = self._presence(user_id, state)
        for community_id in state.communities:
            online = self._online.setdefault(community_id, set())
            if new is PresenceStatus.OFFLINE:
                online.discard(user_id)
            else:
                online.add(user_id)
            self._announce(community_id, presence)

    @staticmethod
    def _presence(user_id: int, state: _UserState | None) -> Presence:
        if state is None:
            return Presence(user_id=user_id, status=PresenceStatus.OFFLINE)
        offline = state.visible is PresenceStatus.OFFLINE
        return Presence(user_id=user_id, status=state.visible,
                        last_seen=state.seen if offline else None)

    async def sync(self, users: Sequence[UserSync]) -> None:
        for entry in users:
            state = self._users.setdefault(entry.user_id, _UserState())
            state.sessions = entry.sessions
            if entry.communities is not None:
                online = state.visible is not PresenceStatus.OFFLINE
                for gone in state.communities - entry.communities:
                    if online:
                        self._online.get(gone, set()).discard(entry.user_id)
                        self._announce(gone, Presence(user_id=entry.user_id,
                                                      status=PresenceStatus.OFFLINE,
                                                      last_seen=_now_ms()))
                for added in entry.communities - state.communities:
                    if online:
                        self._online.setdefault(added, set()).add(entry.user_id)
                        self._announce(added, self._presence(entry.user_id, state))
                state.communities = set(entry.communities)
            self._refresh(entry.user_id, state)

    async def renew(self) -> None:
        return None

    async def rejoin(self) -> None:
        return None

    async def reap(self) -> int:
        return 0

    async def set_status(self, user_id: int, status: PresenceStatus) -> None:
        state = self._users.setdefault(user_id, _UserState())
        state.chosen = status
        self._refresh(user_id, state)

    async def snapshot(self, user_id: int, community_ids: Sequence[int]) -> tuple[
            PresenceStatus, dict[int, int]]:
        state = self._users.get(user_id)
        chosen = state.chosen if state is not None else PresenceStatus.ONLINE
        return chosen, await self.online_counts(community_ids)

    async def presences(self, user_ids: Sequence[int]) -> list[Presence]:
        return [self._presence(u, self._users.get(u)) for u in user_ids]

    async def online_counts(self, community_ids: Sequence[int]) -> dict[int, int]:
        return {c: len(self._online.get(c, ())) for c in community_ids}

    async def take_due(self, limit: int) -> list[PresenceBatch]:
        now = time.monotonic()
        due = [c for c, at in self._due.items() if at <= now][:limit]
        batches: list[PresenceBatch] = []
        for community_id in due:
            pending = self._pending.pop(community_id, {})
            del self._due[community_id]
            presences = list(pending.values())
            if len(presences) > MAX_BATCH:
                rest = presences[MAX_BATCH:]
                presences = presences[:MAX_BATCH]
                self._pending[community_id] = {p.user_id: p for p in rest}
                self._due[community_id] = now + self.batch_s
            if presences:
                batches.append(PresenceBatch(
                    community_id=community_id, presences=presences,
                    online_count=len(self._online.get(community_id, ()))))
        return batches


# ------------------------------------------------------------------------- the service


async def installation_id(db: Database) -> str:
    """The id of this installation (stored in PostgreSQL, created on first use), shared
    by all its processes: it namespaces presence keys in Redis."""
    async with db.transaction("installation_id") as conn:
        await communities_db.lock_instance_settings_txn(conn)
        existing = await communities_db.get_instance_setting(conn, INSTALLATION_KEY)
        if isinstance(existing, str) and existing:
            return existing
        value = uuid.uuid4().hex[:16]
        await communities_db.set_instance_setting(conn, INSTALLATION_KEY, value)
        return value


Handler = Callable[[Session, Any], Awaitable[Result]]


class PresenceView:
    """The presence batches a session receives."""

    __slots__ = ("communities", "requested")

    def __init__(self) -> None:
        self.communities: set[int] = set()
        """Communities whose ``presence_update`` batches this session receives."""
        self.requested: set[int] = set()
        """Of those, the large ones it subscribed to (counted against the limit)."""

    def topics(self, session: Session) -> Iterable[str]:
        return (presence_topic(c) for c in self.communities if c in session.roles)


PRESENCE = ViewKey("presence", PresenceView)


class PresenceService:
    """This process's side of presence. See the module docstring."""

    def __init__(self, store: PresenceStore, hub: Hub, db: Database, *,
                 connect_timeout_s: float = 2.0, max_subscriptions: int = 10,
                 auto_max_members: int = 1_000) -> None:
        if not 0 < store.ttl_s <= MAX_TTL_S:
            raise ValueError(f"HEARTH_PRESENCE_TTL_S must be in (0, {MAX_TTL_S:g}] so that "
                             f"users of a dead process go offline within 60 s; got "
                             f"{store.ttl_s:g}")
        if not 0 < store.batch_s <= 10:
            raise ValueError(f"HEARTH_PRESENCE_BATCH_MS must be in (0, 10000]; got "
                             f"{store.batch_s * 1000:g}")
        self.store = store
        self.hub = hub
        self.db = db
        self.heartbeat_s = store.ttl_s / 3
        self.reap_s = min(1.0, self.heartbeat_s)
        self.tick_s = min(0.25, store.batch_s / 6)
        self.connect_timeout_s = connect_timeout_s
        self.max_subscriptions = max_subscriptions
        self.auto_max_members = auto_max_members
        """A community joined live sends its presence unasked up to this size."""
        hub.control.ephemeral(PresenceUpdated)
        hub.control.on(CommunityAvailable, self._community_available)
        hub.control.on(CommunityUnavailable, self._community_unavailable)
        self._sessions: dict[int, set[Session]] = {}
        self._synced: dict[int, frozenset[int]] = {}
        self._dirty: dict[int, None] = {}
        self._lock = asyncio.Lock()
        self._writes_started = 0
        self._write_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.connects_without_presence = 0
        self._wake = asyncio.Event()
        self.batches_published = 0
        self.changes_published = 0
        self.sync_failures = 0
        self.leases_lost = 0
        self._failures = ThrottledLog(log)
        """Failed background steps: a Redis outage is one line per interval, not a
        traceback per tick (four a second)."""

    @property
    def bound_s(self) -> float:
        """Longest time before the users of a killed process are shown offline."""
        return self.store.ttl_s + self.reap_s + self.store.batch_s + self.tick_s

    def handlers(self) -> dict[type[Request], Handler]:
        """The gateway requests served here (registered with the chat service)."""
        return {SetPresence: self.set_presence, FetchMembers: self.fetch_members,
                SubscribePresence: self.subscribe_presence}

    # -------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        namespace = await installation_id(self.db)
        try:
            await self.store.start(namespace)
        except Exception:  # Redis down: the first heartbeat registers again
            log.warning("presence: registering this process failed; retrying",
                        exc_info=True)

    async def close(self) -> None:
        try:
            await self.store.close()
        except Exception:
            log.warning("presence: withdrawing this process's sessions failed; they go "
                        "offline when its lease expires", exc_info=True)

    async def run(self) -> None:
        """The background work (supervised by the app): syncing and housekeeping. If
        either dies, this raises at once, so the supervisor reports it."""
        tasks = [asyncio.create_task(self._sync_forever(), name="presence-sync"),
                 asyncio.create_task(self._housekeep_forever(), name="presence-housekeeping")]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a crash propagates; a loop that returned is a bug too
            raise RuntimeError("a presence loop returned")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=5.0)

    # ---------------------------------------------------------- local sessions (sync)

    def attach(self, session: Session) -> None:
        """``session`` has a live socket (identify or resume)."""
        sessions = self._sessions.setdefault(session.user.id, set())
        if session not in sessions:
            sessions.add(session)
            self._mark(session.user.id)

    def detach(self, session: Session) -> None:
        """``session`` lost its socket or ended (idempotent)."""
        user_id = session.user.id
        sessions = self._sessions.get(user_id)
        if sessions is not None and session in sessions:
            sessions.discard(session)
            self._mark(user_id)

    def connected_users(self) -> int:
        return sum(1 for s in self._sessions.values() if s)

    def _mark(self, user_id: int) -> None:
        self._dirty[user_id] = None
        self._wake.set()

    async def connect(self, session: Session) -> tuple[PresenceStatus, dict[int, int]]:
        """Identify: attach, write the user's state at once, and return their chosen
        status and the online count of each of their communities (for ``ready``). If the
        store does not answer within ``connect_timeout_s`` identify goes on without."""
        self.attach(session)
        # Wait for the next write to *start* after our mark (it carries this user) and
        # finish; not for the writer to run out of work, which in a join storm it never
        # does (waiting for that timed every identify out at 70,000 connections).
        written = asyncio.get_running_loop().create_future()
        self._write_waiters.append((self._writes_started + 1, written))
        self._wake.set()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await written
                return await self.store.snapshot(session.user.id, list(session.roles))
        except asyncio.CancelledError:
            self.detach(session)
            raise
        except Exception as exc:
            self.connects_without_presence += 1
            if self.connects_without_presence % 100 == 1:  # a storm must not flood the log
                log.warning("presence: identify went on without presence (%d so far): %r",
                            self.connects_without_presence, exc)
            return PresenceStatus.ONLINE, {}

    # ---------------------------------------------------------------------- writing

    def _entry(self, user_id: int) -> UserSync:
        sessions = self._sessions.get(user_id)
        if not sessions:
            self._sessions.pop(user_id, None)
            self._synced.pop(user_id, None)
            return UserSync(user_id=user_id, sessions=0, communities=None)
        communities = frozenset(c for s in sessions for c in s.roles)
        changed = communities != self._synced.get(user_id)
        self._synced[user_id] = communities
        return UserSync(user_id=user_id, sessions=len(sessions),
                        communities=communities if changed else None)

    async def _flush(self) -> None:
        """Write every dirty user's local state in one call; serialized, so the last
        write of a user always carries their newest local state."""
        async with self._lock:
            while self._dirty:
                self._writes_started += 1
                write = self._writes_started
                users = list(self._dirty)
                self._dirty.clear()
                synced_before = {u: self._synced.get(u) for u in users}
                batch = [self._entry(u) for u in users]
                try:
                    await self.store.sync(batch)
                except BaseException as exc:
                    # Not written: mark them again (with communities resent).
                    for user_id, before in synced_before.items():
                        if before is None:
                            self._synced.pop(user_id, None)
                        else:
                            self._synced[user_id] = before
                        self._dirty[user_id] = None
                    self._wake.set()
                    if isinstance(exc, LeaseLost):
                        await self._rejoin()
                        continue
                    raise
                self._written(write)

    def _written(self, write: int) -> None:
        """Wake the identifies whose user was marked before write number ``write``."""
        waiting = []
        for target, future in self._write_waiters:
            if future.done():
                continue
            if target <= write:
                future.set_result(None)
            else:
                waiting.append((target, future))
        self._write_waiters = waiting

    async def _rejoin(self) -> None:
        """Our lease lapsed: new identity, and every local user written again."""
        self.leases_lost += 1
        log.warning("presence: this process's lease expired; registering again")
        await self.store.rejoin()
        self._synced.clear()
        for user_id in self._sessions:
            self._dirty[user_id] = None

    async def _sync_forever(self) -> None:
        backoff = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
                backoff = 0.1
            except Exception as exc:
                _check_cancelled()
                self.sync_failures += 1
                self._failures.failure(exc, f"presence: writing {len(self._dirty)} users")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                self._wake.set()
            _check_cancelled()

    # ------------------------------------------------------------------ housekeeping

    async def _housekeep_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_reap = next_heartbeat = loop.time()
        while True:
            await asyncio.sleep(self.tick_s)
            await self._step(self.publish_due, "publishing")
            now = loop.time()
            if now >= next_reap:
                next_reap = now + self.reap_s
                await self._step(self.reap, "reaping")
            if now >= next_heartbeat:
                next_heartbeat = now + self.heartbeat_s
                await self._step(self.heartbeat, "renewing the lease")

    async def _step(self, step: Callable[[], Awaitable[Any]], what: str) -> None:
        try:
            await step()
        except Exception as exc:  # a Redis outage: one line per interval, no traceback
            _check_cancelled()
            self._failures.failure(exc, f"presence: {what}")
        else:
            self._failures.resolved("redis")
        _check_cancelled()

    async def publish_due(self) -> int:
        """Publish the batches that are due; returns how many."""
        batches = await self.store.take_due(limit=200)
        if not batches:
            return 0
        await self.hub.publish_many([
            (presence_topic(b.community_id),
             PresenceUpdated(community_id=b.community_id, presences=b.presences,
                             online_count=b.online_count))
            for b in batches])
        self.batches_published += len(batches)
        self.changes_published += sum(len(b.presences) for b in batches)
        return len(batches)

    async def reap(self) -> int:
        total = 0
        for _ in range(100):  # bounded work per tick; the rest next time
            done = await self.store.reap()
            if not done:
                break
            total += done
        return total

    async def heartbeat(self) -> None:
        """Renew the lease; queue users whose communities changed since written."""
        try:
            await self.store.renew()
        except LeaseLost:
            async with self._lock:
                await self._rejoin()
        for user_id, sessions in self._sessions.items():
            if sessions and frozenset(c for s in sessions for c in s.roles) \
                    != self._synced.get(user_id):
                self._dirty[user_id] = None
        if self._dirty:
            self._wake.set()

    # ---------------------------------------------------------------- control events

    def _community_available(self, session: Session, topic: str,
                             event: CommunityAvailable) -> bool:
        snapshot = event.snapshot
        if snapshot.member_count <= self.auto_max_members:
            cid = snapshot.community.id
            session.view(PRESENCE).communities.add(cid)
            self.hub.subscribe(session, presence_topic(cid))
        return True

    def _community_unavailable(self, session: Session, topic: str,
                               event: CommunityUnavailable) -> bool:
        view = session.peek(PRESENCE)
        if view is not None:
            cid = event.community_id
            view.requested.discard(cid)
            if cid in view.communities:
                view.communities.discard(cid)
                self.hub.unsubscribe(session, presence_topic(cid))
        return True

    # --------------------------------------------------------------------- requests

    async def set_presence(self, session: Session, req: SetPresence) -> Result:
        status = req.status
        if status is PresenceStatus.OFFLINE:
            status = PresenceStatus.INVISIBLE
        await self.store.set_status(session.user.id, status)
        return Empty()

    async def subscribe_presence(self, session: Session, req: SubscribePresence) -> Result:
        """Opt in to (or out of) a community's presence batches; see the frame's doc."""
        cid = req.community_id
        if cid not in session.roles:
            raise not_found("unknown community")
        topic = presence_topic(cid)
        view = session.view(PRESENCE)
        if not req.subscribed:  # also opts out of a small community's presence
            view.requested.discard(cid)
            if cid in view.communities:
                view.communities.discard(cid)
                self.hub.unsubscribe(session, topic)
            return Empty()
        if cid not in view.communities:
            if len(view.requested) >= self.max_subscriptions:
                raise RequestError(ErrorCode.LIMIT_EXCEEDED,
                                   f"at most {self.max_subscriptions} presence "
                                   "subscriptions per session")
            view.communities.add(cid)
            view.requested.add(cid)
            self.hub.subscribe(session, topic)
        return Empty()

    async def fetch_members(self, session: Session, req: FetchMembers) -> Result:
        if req.community_id not in session.roles:
            raise not_found("unknown community")
        async with self.db.connection() as conn:
            members = await communities_db.list_members(
                conn, req.community_id, after_user_id=req.after, limit=req.limit + 1)
        has_more = len(members) > req.limit
        members = members[:req.limit]
        presences = await self.store.presences([m.user.id for m in members])
        counts = await self.store.online_counts([req.community_id])
        return MembersResult(community_id=req.community_id, members=members,
                             presences=presences, online_count=counts.get(req.community_id, 0),
                             has_more=has_more)


def make_store(redis: RedisClients | None, *, ttl_s: float, batch_s: float) -> PresenceStore:
    """The Redis store when the process has Redis, else in memory."""
    if redis is None:
        return MemoryPresenceStore(ttl_s=ttl_s, batch_s=batch_s)
    from rooms.realtime.redis_presence import RedisPresenceStore

    return RedisPresenceStore(redis.url, ttl_s=ttl_s, batch_s=batch_s)


__all__ = [
    "LeaseLost",
    "MemoryPresenceStore",
    "PresenceBatch",
    "PresenceService",
    "PresenceStore",
    "UserSync",
    "installation_id",
    "make_store",
    "visible_status",
]
