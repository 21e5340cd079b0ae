"""The published surface: everything a sidecar may use of the core, and nothing more.

A sidecar is a package ``sidecars/<name>/`` whose ``__init__`` exposes ``SIDECAR``, a
:class:`Sidecar` subclass. It brings its own migrations (``migrations/*.sql``, recorded
as ``<name>/NNNN_x``), REST routes, outbox subscribers and background tasks; the host
(``server/sidecar_host.py``) mounts it in ``hearth serve`` (every sidecar, by default)
or alone (``hearth serve --only <name>``, against the same PostgreSQL and Redis).

A sidecar imports ``protocol``, this module and its own modules: never ``rooms/``,
``server/`` or another sidecar. What it needs of the core is on :class:`Host`:

- PostgreSQL connections and transactions (its own tables; core tables read-only);
- publishing typed events (``protocol.sidecar.SidecarEvent``) to a user, on every
  node, or to a community's members;
- reading a member's role, tier and community-level permission bits
  (:attr:`MemberInfo.permissions`, :class:`Permission`), and listing the members
  holding a bit (:meth:`Host.members_with`);
- writing domain events (``protocol.domain_events``, e.g. ``LearnerStatement``) to the
  outbox in the sidecar's own transaction (:meth:`Host.append_events`);
- a private channel whose member list the sidecar keeps
  (:meth:`Host.create_private_channel`, :meth:`Host.set_channel_member`);
- answering the core's prerequisite questions (:meth:`Sidecar.prerequisite_checks`:
  a live session's ``prerequisite_course`` asks the ``course`` check);
- telling a service key from a user's token (:meth:`Host.is_service_key`), and
  authenticating a request as a user (bearer token) or as a service key with a scope;
- REST routes (:class:`Route`): the host adds each to the REST route table, so it is
  in ``/api/v1/openapi.json`` and ``docs/rest.md``, decodes paths, queries and bodies
  with the shared decoder (:meth:`Host.path_params`, :meth:`Host.query_params`,
  :meth:`Host.read_body`: bounded types, the text check) and answers a
  :class:`SidecarError` with the documented error body and its code's HTTP status;
- consuming the domain-event outbox (:class:`Subscriber`, see ``docs/events.md``);
- serving gateway requests (``protocol.sidecar.SidecarRequest``) on the gateway
  processes that mount it (:meth:`Sidecar.gateway_handlers`; errors as
  :class:`SidecarError`).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import asyncpg
from aiohttp import web

from persistence.outbox import AfterCommit, BatchHandler, Delivered, Handler, append_txn
from protocol.base import Request, ResultBase
from protocol.codes import ErrorCode
from protocol.domain_events import DomainEvent
from protocol.models import Role
from protocol.sidecar import SERVICE_KEY_PREFIX, Scope, SidecarEvent
from rooms.realtime.permissions import Permission

__all__ = ["AfterCommit", "BatchHandler", "Delivered", "GatewayHandler", "Handler", "Host",
           "MemberInfo", "Permission", "PrerequisiteCheck", "PrincipalInfo", "Route",
           "RouteHandler", "Scope", "Sidecar", "SidecarError", "Subscriber", "Task"]

T = TypeVar("T")

Task = Callable[[], Coroutine[Any, Any, None]]
"""A background task: runs until cancelled; an exception is logged at once."""


GatewayHandler = Callable[[int, Any], Coroutine[Any, Any, ResultBase]]
"""(the caller's user id, the request) -> the ``ok`` result; raise :class:`SidecarError`."""


PrerequisiteCheck = Callable[[int, int, str], Coroutine[Any, Any, str | None]]
"""(community id, user id, reference) -> None when met, else the reason the member is
shown (the core answers ``prerequisite_not_met`` with it)."""


class SidecarError(Exception):
    """A gateway or REST request refused with a documented error code (over REST, the
    status is the code's, from the core's one table)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, kw_only=True)
class Route:
    """A REST route of a sidecar, as the OpenAPI route table records it: the handler
    decodes with exactly the types named here (``body``, ``query``, path parameters
    ending in ``_id`` are ids), so the contract cannot drift from the code."""

    method: str
    path: str
    """Under ``/api/v1`` (``/communities/{community_id}/...``)."""
    handler: RouteHandler
    summary: str
    reply: Any
    """The success reply's type (a msgspec Struct)."""
    body: Any = None
    query: Any = None
    status: int = 200
    auth: bool = True
    service_key: bool = False
    """Whether a service key (:meth:`Host.principal`) is taken too, besides a user's
    bearer token."""
    media_type: str = "application/json"
    """The success reply's media type (e.g. ``application/pdf``: documented as a string
    body)."""
    path_types: Mapping[str, Any] = field(default_factory=dict)
    """Types of path parameters not ending in ``_id`` (e.g. a certificate's serial)."""


@dataclass(frozen=True)
class MemberInfo:
    """A member as a sidecar sees them (re-read on every call: never cached here)."""

    community_id: int
    user_id: int
    role: Role
    tier: int
    role_ids: tuple[int, ...]
    permissions: int = 0
    """Community-level bits (:class:`Permission`): the fixed role's defaults united
    with the custom roles' (every bit with ``ADMINISTRATOR``); channel overrides do not
    apply at this level."""

    def has(self, bit: Permission) -> bool:
        return bool(self.permissions & (bit | Permission.ADMINISTRATOR))


@dataclass(frozen=True)
class PrincipalInfo:
    """A service key that passed the checks for one request."""

    key_id: int
    community_id: int
    name: str
    scopes: frozenset[Scope]


@dataclass(frozen=True)
class Subscriber:
    """A named outbox subscriber: ``handle`` runs in the subscriber's transaction (write
    only with the connection it is given), ``after_commit`` once the batch committed.
    The name is the position's key: keep it stable, and unique across sidecars
    (``<sidecar>.<purpose>``)."""

    name: str
    handle: Handler | None
    after_commit: AfterCommit | None = None
    handle_batch: BatchHandler | None = None
    """Optional: the whole batch at once, after ``handle`` ran for each event (one
    statement for a batch instead of one per event)."""


class Host(abc.ABC):
    """The core, as a sidecar sees it (implemented by ``server/sidecar_host.py``)."""

    @abc.abstractmethod
    def transaction(self, name: str) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A connection in a transaction (commit on exit, roll back on error)."""

    @abc.abstractmethod
    def connection(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A connection for reads."""

    @abc.abstractmethod
    async def publish_to_user(self, user_id: int, event: SidecarEvent) -> None:
        """Deliver ``event`` to every session of the user, on every node."""

    @abc.abstractmethod
    async def publish_to_community(self, community_id: int, event: SidecarEvent) -> None:
        """Deliver ``event`` to every connected member of the community."""

    @abc.abstractmethod
    async def member(self, community_id: int, user_id: int) -> MemberInfo | None:
        """The member's role and tier now; None for a non-member."""

    @abc.abstractmethod
    async def members_with(self, community_id: int, bit: Permission) -> list[int]:
        """The members whose community-level bits include ``bit`` (staff lists: who
        gets a course's change)."""

    async def append_events(self, conn: asyncpg.Connection,
                            events: list[DomainEvent]) -> None:
        """Write domain events to the outbox in the caller's transaction (the one of
        :meth:`transaction`), so they commit with the change they describe."""
        await append_txn(conn, events)

    @abc.abstractmethod
    async def create_private_channel(self, community_id: int, name: str, created_by: int,
                                     member_ids: list[int]) -> int:
        """A new private text channel of the community listing ``member_ids`` (members
        only; the creator is not added); each listed member's sessions get it at once.
        Returns its id."""

    @abc.abstractmethod
    async def set_channel_member(self, channel_id: int, user_id: int, listed: bool) -> bool:
        """List (``listed``) or unlist a member of a private channel the sidecar made;
        their sessions gain or lose it at once. False when nothing changed (already
        so, not a member of its community, or not a private channel)."""

    @abc.abstractmethod
    async def user_id(self, request: web.Request) -> int:
        """The caller's user id from their bearer token; raises the 401 reply."""

    def is_service_key(self, request: web.Request) -> bool:
        """Whether the request's bearer credential is a service key (then use
        :meth:`principal`) rather than a user's token (:meth:`user_id`). Says nothing
        of its validity: each of those checks it."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token.strip().startswith(SERVICE_KEY_PREFIX)

    @abc.abstractmethod
    async def principal(self, request: web.Request, community_id: int,
                        scope: Scope) -> PrincipalInfo:
        """The service key of the request if it may use ``scope`` in the community;
        raises the 401/403/429 reply. The caller audits what it does with it through
        :meth:`audit_use`."""

    @abc.abstractmethod
    async def audit_use(self, principal: PrincipalInfo, action: str,
                        detail: dict[str, object]) -> None:
        """Record a service key's use in the community's audit log (not pushed to the
        moderators' live feed: a sidecar's use of the core is a read)."""

    @abc.abstractmethod
    def path_params(self, request: web.Request, model: type[T]) -> T:
        """The path's parameters as ``model``; one that does not decode: 404."""

    @abc.abstractmethod
    def query_params(self, request: web.Request, model: type[T]) -> T:
        """The query string as ``model``, every value checked as text; else 400."""

    @abc.abstractmethod
    async def read_body(self, request: web.Request, model: type[T]) -> T:
        """The JSON body as ``model``, every string and integer checked; else 400
        (413 too large, 415 not JSON)."""


class Sidecar(abc.ABC):
    """One sidecar; subclass it in ``sidecars/<name>/`` and expose it as ``SIDECAR``."""

    name: ClassVar[str]
    migrations: ClassVar[Path | None] = None
    """Folder of ``NNNN_x.sql`` files, applied in the ``<name>/`` namespace."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def routes(self) -> list[Route]:
        """REST routes (under ``/api/v1``), mounted on the serving application."""
        return []

    def subscribers(self) -> list[Subscriber]:
        return []

    def tasks(self) -> list[Task]:
        return []

    def gateway_handlers(self) -> dict[type[Request], GatewayHandler]:
        """Gateway requests this sidecar serves (each type in ``SidecarRequest``)."""
        return {}

    def prerequisite_checks(self) -> dict[str, PrerequisiteCheck]:
        """Kinds of prerequisite this sidecar answers for the core (``course``: a live
        session's ``prerequisite_course``), wired into the gateway process that
        mounts it. One sidecar per kind."""
        return {}
