"""Service principals: what a service key may do, and the checks every use goes through.

A billing service must change a member's tier without being a member, let alone a
moderator who outranks them; a course sidecar needs to read tiers without being staff.
A service key belongs to one community, carries scopes (``protocol.sidecar.Scope``),
may expire, can be revoked, is rate-limited per key, and every action taken with it is
audited with the key named (actor NULL, the key in ``after``), in the transaction of the
change, together with the key's ``last_used_at``.

Only a community's owner or an admin creates, lists or revokes keys (audited too), and
a key never does more than its creator still may: it stops working once they are no
longer owner or admin of its community, and an admin's key cannot change the owner's or
another admin's tier (an owner's can). A
secret is ``hsk_`` + 43 url-safe characters (256 random bits), shown once; its SHA-256
is what PostgreSQL keeps.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from persistence import audit as audit_db
from persistence import communities as communities_db
from persistence import roles as roles_db
from persistence import service_keys as keys_db
from persistence.database import Connection, Database
from protocol.codes import ErrorCode
from protocol.frames import Event
from protocol.models import Member, Role
from protocol.moderation import ModActionTaken
from protocol.roles import PermissionsUpdated
from protocol.sidecar import (
    SERVICE_KEY_PREFIX,
    CreateServiceKey,
    Scope,
    ServiceKey,
    ServiceKeyCreated,
    ServiceSetTier,
    SidecarEvent,
)
from rooms.errors import RequestError, forbidden, not_found
from rooms.moderation.moderation import wire_entry
from rooms.realtime.bus import community_topic, mod_topic, user_topic
from rooms.realtime.hub import Hub
from rooms.realtime.rate_limit import RateLimiter

log = logging.getLogger(__name__)

MAX_KEYS_PER_COMMUNITY = 100


@dataclass(frozen=True)
class Principal:
    """An authenticated service key, for one request."""

    key_id: int
    community_id: int
    name: str
    scopes: frozenset[Scope]
    creator_role: Role = Role.ADMIN
    """The creator's role now (owner or admin): what the key may not outrank."""


class PrincipalRefused(RequestError):
    """A request with a service key that is refused (``unauthorized``, ``forbidden`` or
    ``rate_limited``; REST gives each code its one status)."""


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class PrincipalService:
    """Keys (create, list, revoke), authentication, and the actions principals take."""

    def __init__(self, db: Database, hub: Hub, limiter: RateLimiter) -> None:
        self.db = db
        self.hub = hub
        self.limiter = limiter

    # ------------------------------------------------------------------ managing keys

    @staticmethod
    async def _require_admin(conn: Connection, community_id: int, actor_id: int) -> None:
        access = await roles_db.member_access(conn, community_id, actor_id)
        if access is None:
            raise not_found("unknown community")
        if access.role not in (Role.OWNER, Role.ADMIN):
            raise forbidden("only the owner or an admin manages service keys")

    async def create(self, actor_id: int, community_id: int,
                     req: CreateServiceKey) -> ServiceKeyCreated:
        name = req.name.strip()
        if not name or any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in name):
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "a key needs a printable name")
        secret = SERVICE_KEY_PREFIX + secrets.token_urlsafe(32)
        async with self.db.transaction("service_key.create") as conn:
            await self._require_admin(conn, community_id, actor_id)
            count = await conn.fetchval("SELECT count(*) FROM service_keys WHERE "
                                        "community_id = $1 AND revoked_at IS NULL",
                                        community_id)
            if int(count) >= MAX_KEYS_PER_COMMUNITY:
                raise RequestError(ErrorCode.LIMIT_EXCEEDED,
                                   f"at most {MAX_KEYS_PER_COMMUNITY} active keys")
            key = await keys_db.create_txn(
                conn, community_id=community_id, name=name, scopes=sorted(set(req.scopes)),
                key_hash=hash_secret(secret), created_by=actor_id,
                expires_in_s=req.expires_in_s)
            events = await self._audit(conn, community_id, actor_id, "service_key.create",
                                       key.id, None, {"name": name,
                                                      "scopes": [s.value for s in key.scopes],
                                                      "expires_at": key.expires_at})
        await self.hub.publish_many(events)
        return ServiceKeyCreated(key=key, secret=secret)

    async def list_keys(self, actor_id: int, community_id: int) -> list[ServiceKey]:
        async with self.db.connection() as conn:
            await self._require_admin(conn, community_id, actor_id)
            return await keys_db.list_keys(conn, community_id)

    async def revoke(self, actor_id: int, community_id: int, key_id: int) -> ServiceKey:
        async with self.db.transaction("service_key.revoke") as conn:
            await self._require_admin(conn, community_id, actor_id)
            key = await keys_db.revoke_txn(conn, community_id, key_id)
            if key is None:
                raise not_found("unknown service key")
            events = await self._audit(conn, community_id, actor_id, "service_key.revoke",
                                       key.id, None, {"revoked_at": key.revoked_at})
        await self.hub.publish_many(events)
        return key

    # ------------------------------------------------------------------ authenticating

    async def authenticate(self, secret: str | None, scope: Scope,
                           community_id: int) -> Principal:
        """The principal behind ``secret`` if it may use ``scope`` in ``community_id``
        now; else :class:`PrincipalRefused`: ``unauthorized`` (unknown, expired,
        revoked, or its creator is no longer owner or admin there), ``forbidden``
        (another community, a missing scope), ``rate_limited`` (over the key's rate, with
        ``retry_after_ms``)."""
        if (secret is None or not secret.startswith(SERVICE_KEY_PREFIX)
                or len(secret) > 200):
            raise PrincipalRefused(ErrorCode.UNAUTHORIZED, "a valid service key is required")
        async with self.db.connection() as conn:
            found = await keys_db.find_by_hash(conn, hash_secret(secret))
        if found is None:
            raise PrincipalRefused(ErrorCode.UNAUTHORIZED, "a valid service key is required")
        key, now = found.key, found.now
        now_ms = int(now.timestamp() * 1000)
        if key.revoked_at is not None:
            raise PrincipalRefused(ErrorCode.UNAUTHORIZED, "this service key was revoked")
        if key.expires_at is not None and key.expires_at <= now_ms:
            raise PrincipalRefused(ErrorCode.UNAUTHORIZED, "this service key has expired")
        if found.creator_role not in (Role.OWNER, Role.ADMIN):
            # an admin who was demoted or left takes their keys' power with them
            raise PrincipalRefused(ErrorCode.UNAUTHORIZED,
                                   "this service key's creator no longer manages the community")
        if key.community_id != community_id:
            raise PrincipalRefused(ErrorCode.FORBIDDEN, "this key belongs to another community")
        if scope not in key.scopes:
            log.warning("service key %d (%s) refused: missing scope %s", key.id, key.name,
                        scope.value)
            raise PrincipalRefused(ErrorCode.FORBIDDEN, f"this key lacks the scope {scope.value}")
        wait_ms = await self.limiter.check(f"sk:{key.id}")
        if wait_ms is not None:
            raise PrincipalRefused(ErrorCode.RATE_LIMITED, "too many requests with this key",
                                   retry_after_ms=wait_ms)
        assert found.creator_role is not None
        return Principal(key.id, key.community_id, key.name, frozenset(key.scopes),
                         found.creator_role)

    # ------------------------------------------------------------------------ actions

    async def set_member_tier(self, principal: Principal, user_id: int,
                              req: ServiceSetTier) -> Member:
        """Set a member's tier as the service: the key's scope is the permission, with no
        rank rule among members, but a key never outranks its creator (an admin's key
        cannot touch the owner or an admin: ``forbidden``); audited as ``member.tier``
        naming the key, then the same live re-resolution as a moderator's change."""
        if Scope.TIERS_WRITE not in principal.scopes:
            raise forbidden(f"this key lacks the scope {Scope.TIERS_WRITE.value}")
        if req.reason is not None and "\x00" in req.reason:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "a reason cannot contain NUL")
        community_id = principal.community_id
        reason = f"service key {principal.name} (#{principal.key_id})"
        if req.reason:
            reason += f": {req.reason}"
        async with self.db.transaction("service.member.tier") as conn:
            target = await roles_db.member_access(conn, community_id, user_id)
            if target is None:
                raise not_found("unknown member")
            if (principal.creator_role is not Role.OWNER
                    and target.role in (Role.OWNER, Role.ADMIN)):
                raise forbidden("a key made by an admin cannot change the owner's or an "
                                "admin's tier")
            before = await roles_db.set_member_tier(conn, community_id, user_id, req.tier)
            if before is None:
                raise not_found("unknown member")
            member = await communities_db.get_member(conn, community_id, user_id)
            if member is None:
                raise not_found("unknown member")
            events = await self._audit(conn, community_id, None, "member.tier", user_id,
                                       {"tier": before},
                                       {"tier": req.tier, "service_key_id": principal.key_id},
                                       target_type="member", reason=reason[:1024])
            await keys_db.touch_txn(conn, principal.key_id)
        events.append((user_topic(user_id),
                       PermissionsUpdated(community_id=community_id, user_id=user_id)))
        await self.hub.publish_many(events)
        return member

    async def publish(self, principal: Principal, user_id: int | None,
                      event: SidecarEvent) -> None:
        """Deliver a sidecar event for the key's community: to one member, or to every
        connected member; audited as ``service.publish``."""
        if Scope.EVENTS_PUBLISH not in principal.scopes:
            raise forbidden(f"this key lacks the scope {Scope.EVENTS_PUBLISH.value}")
        community_id = principal.community_id
        if getattr(event, "community_id", community_id) != community_id:
            raise RequestError(ErrorCode.INVALID_ARGUMENT,
                               "the event names another community than the key's")
        if user_id is not None:
            async with self.db.connection() as conn:
                if await roles_db.member_access(conn, community_id, user_id) is None:
                    raise not_found("unknown member")
        tag = type(event).__struct_config__.tag
        await self.record_use(principal, "service.publish",
                              {"user_id": user_id, "type": tag}, live=True)
        topic = community_topic(community_id) if user_id is None else user_topic(user_id)
        await self.hub.publish(topic, event)

    async def record_use(self, principal: Principal, action: str,
                         detail: dict[str, Any], *, live: bool = False) -> None:
        """Audit a use that changes nothing in the core (a sidecar's read or publish).
        Only with ``live`` (a publish: members saw something) is the entry also pushed
        to the moderators' live feed; a read is just recorded, as a key polling a
        member's activity would otherwise flood the feed."""
        async with self.db.transaction("service_key.use") as conn:
            events = await self._audit(conn, principal.community_id, None, action,
                                       principal.key_id, None,
                                       detail | {"service_key_id": principal.key_id})
            await keys_db.touch_txn(conn, principal.key_id)
        if live:
            await self.hub.publish_many(events)

    async def _audit(self, conn: Connection, community_id: int, actor_id: int | None,
                     action: str, target_id: int, before: dict[str, Any] | None,
                     after: dict[str, Any] | None, *, target_type: str = "service_key",
                     reason: str | None = None) -> list[tuple[str, Event]]:
        audit_id = await audit_db.record(
            conn, community_id=community_id, actor_id=actor_id, action=action,
            target_type=target_type, target_id=target_id, reason=reason, before=before,
            after=after)
        entry = await audit_db.get(conn, audit_id)
        return [] if entry is None else [
            (mod_topic(community_id), ModActionTaken(entry=wire_entry(entry)))]
