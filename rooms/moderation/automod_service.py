"""Automod around the pure rules: rule CRUD, the per-process cache, the send-path gate.

* CRUD (REST, ``server/api_automod.py``): every change needs ``MANAGE_AUTOMOD`` in the
  community, is compiled first (a rule that does not compile is refused with the
  reason, nothing stored) and is written with its audit entry in one transaction.
* Cache: each process keeps the compiled :class:`~rooms.moderation.automod.RuleSet` of the
  communities it has served messages for. A change drops the entry here and, through
  the bus topic ``x.automod`` (payload: the community id), on every other node, so the
  next message is checked against the new rules without a restart. The bus is lossy,
  so an entry also expires after :data:`CACHE_TTL_S` and the whole cache is dropped
  when the bus reconnects.
* Gate (``rooms/chat/chat.py``): :meth:`AutomodService.check` evaluates before a message is
  accepted; :meth:`AutomodService.enforce` runs the flag/alert/timeout actions through
  ``rooms/moderation/moderation.py`` (after the commit when the message was accepted, so a flag
  carries its id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from persistence import audit
from persistence import automod as automod_db
from persistence import channels as channels_db
from persistence import communities as communities_db
from persistence.database import Connection, Database
from protocol.automod import (
    MAX_LIST_CHARS_PER_COMMUNITY,
    MAX_RULES_PER_COMMUNITY,
    AutomodAction,
    AutomodRule,
    AutomodRuleBody,
)
from protocol.codes import ErrorCode
from protocol.models import Channel, ChannelKind, Role, User
from rooms.errors import RequestError, forbidden, not_found
from rooms.moderation.automod import (
    Author,
    RuleError,
    RuleSet,
    SpamState,
    Verdict,
    compile_rule,
    list_chars,
)
from rooms.realtime.access import session_channel_bits
from rooms.realtime.hub import Hub
from rooms.realtime.permissions import Permission, outranks_or_equal
from rooms.realtime.sessions import Session

log = logging.getLogger(__name__)

INVALIDATION_TOPIC = "x.automod"
"""Bus topic whose payload (an ASCII community id) drops that community's cached rules."""
CACHE_TTL_S = 60.0
"""Longest a cached rule set is used without re-reading (covers a lost invalidation)."""
ALERT_COOLDOWN_S = 10.0
"""One ``automod_alert`` per rule and member in this long: a member hammering a blocked
message does not flood the moderators' feed (the blocks and flags still all happen)."""
_MODERATOR_BITS = Permission.MANAGE_MESSAGES | Permission.MODERATE | Permission.ADMINISTRATOR


class Access(Protocol):
    """The part of ``rooms.realtime.access.AccessResolver`` automod uses."""

    async def require(self, community_id: int, user_id: int, perm: Permission) -> None: ...


class Moderation(Protocol):
    """The hooks of ``rooms.moderation.moderation.ModerationService`` automod calls."""

    async def flag(self, *, community_id: int, channel_id: int, message_id: int | None,
                   author_id: int, content: str, rule: str, reason: str) -> int: ...

    async def timeout_member(self, *, community_id: int, user_id: int, duration_s: int,
                             reason: str | None, actor_id: int | None = None,
                             item_id: int | None = None) -> int: ...

    async def alert(self, *, community_id: int, rule: str, summary: str,
                    user_id: int | None = None, channel_id: int | None = None,
                    message_id: int | None = None, actions: list[str] | None = None) -> None: ...


RoleIds = Callable[[int, int], Awaitable[frozenset[int]]]
"""(community id, user id) -> the member's custom role ids; only asked when the
session's access view lacks the community."""


class _FixedRoleAccess:
    """Fallback while no resolver is wired: the fixed roles' default bits (admins manage
    automod; moderators moderate). Used only when ``access`` is not given."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def require(self, community_id: int, user_id: int, perm: Permission) -> None:
        async with self.db.connection() as conn:
            role = await communities_db.get_role(conn, community_id, user_id)
        if role is None:
            raise not_found("unknown community")
        minimum = Role.ADMIN if perm & Permission.MANAGE_AUTOMOD else Role.MODERATOR
        if not outranks_or_equal(role, minimum):
            raise forbidden("you cannot manage automod in this community")


class _Entry:
    __slots__ = ("loaded_at", "rules")

    def __init__(self, rules: RuleSet, loaded_at: float) -> None:
        self.rules = rules
        self.loaded_at = loaded_at


class AutomodService:
    """See the module docstring. One per process."""

    def __init__(self, db: Database, hub: Hub, *, access: Access | None = None,
                 moderation: Moderation | None = None, role_ids: RoleIds | None = None,
                 state: SpamState | None = None, clock: Callable[[], float] = time.monotonic,
                 ) -> None:
        self.db = db
        self.hub = hub
        self.access: Access = access or _FixedRoleAccess(db)
        self.moderation = moderation
        self.role_ids = role_ids
        self.state = state or SpamState()
        self.clock = clock
        self._cache: dict[int, _Entry] = {}
        self._loading: dict[int, asyncio.Future[RuleSet]] = {}
        self._generation: dict[int, int] = {}
        self.loads = 0
        hub.listen(INVALIDATION_TOPIC, self._on_invalidation)

    # --------------------------------------------------------------------------- cache

    def _on_invalidation(self, payload: bytes) -> None:
        try:
            community_id = int(payload)
        except ValueError:
            log.warning("bad automod invalidation %r", payload[:40])
            return
        self.invalidate(community_id)

    def invalidate(self, community_id: int) -> None:
        """Forget a community's compiled rules (a load in flight is not cached)."""
        self._cache.pop(community_id, None)
        self._generation[community_id] = self._generation.get(community_id, 0) + 1

    def invalidate_all(self) -> None:
        """After a bus reconnect: invalidations may have been lost."""
        for community_id in list(self._cache):
            self.invalidate(community_id)

    async def rules_for(self, community_id: int) -> RuleSet:
        """The compiled rules of a community, from the cache or loaded once (concurrent
        callers share one load)."""
        entry = self._cache.get(community_id)
        if entry is not None and self.clock() - entry.loaded_at < CACHE_TTL_S:
            return entry.rules
        loading = self._loading.get(community_id)
        if loading is None:
            loading = asyncio.ensure_future(self._load(community_id))
            self._loading[community_id] = loading
            loading.add_done_callback(self._loaded)
        if entry is not None:
            # Only the safety expiry ran out (an invalidation removes the entry): keep
            # using it while it is re-read, so no message waits on that query.
            return entry.rules
        return await asyncio.shield(loading)

    def _loaded(self, done: asyncio.Future[RuleSet]) -> None:
        for community_id, future in list(self._loading.items()):
            if future is done:
                del self._loading[community_id]
        if not done.cancelled() and done.exception() is not None:
            log.error("automod rules not loaded", exc_info=done.exception())

    async def _load(self, community_id: int) -> RuleSet:
        generation = self._generation.get(community_id, 0)
        started = self.clock()
        async with self.db.connection() as conn:
            rules = await automod_db.list_rules(conn, community_id)
        # Compiling is CPU work (RE2 programs, the regex safety check, DFA warm-up:
        # up to a few hundred ms for 50 large rules): in a thread, so the event loop
        # keeps serving everyone else while this community's next message waits.
        ruleset, broken = await asyncio.to_thread(RuleSet.compile, rules)
        for rule_id, why in broken:
            log.error("automod rule %d of community %d no longer compiles: %s",
                      rule_id, community_id, why)
        self.loads += 1
        if self._generation.get(community_id, 0) == generation:  # not invalidated meanwhile
            self._cache[community_id] = _Entry(ruleset, started)
        return ruleset

    async def _changed(self, community_id: int) -> None:
        self.invalidate(community_id)
        try:
            await self.hub.bus.publish(INVALIDATION_TOPIC, str(community_id).encode())
        except Exception:  # the change is committed; other nodes catch up by TTL
            log.exception("automod invalidation of community %d not published", community_id)

    # ---------------------------------------------------------------------------- gate

    async def check(self, session: Session, channel: Channel, content: str, *,
                    new_message: bool = True) -> Verdict:
        """Evaluate a message about to be accepted (DMs are not moderated). A message
        with attachments only is still counted by the rate rules."""
        community_id = channel.community_id
        if community_id is None:
            return Verdict()
        rules = await self.rules_for(community_id)
        if not rules:
            return Verdict()
        # Exemptions come from the session's access view (custom roles, overrides): a
        # dictionary lookup, no query, on the hot path. A session whose view lacks the
        # community falls back to its fixed role and asks for its custom roles.
        role = session.role_in(channel)
        member = session.access.members.get(community_id)
        role_ids: frozenset[int] = frozenset()
        if member is not None:
            moderator = bool(session_channel_bits(session, channel) & _MODERATOR_BITS)
            role_ids = member.role_ids
        else:
            moderator = outranks_or_equal(role, Role.MODERATOR)
            if rules.needs_role_ids and self.role_ids is not None:
                role_ids = await self.role_ids(community_id, session.user.id)
        author = Author(session.user.id, role, role_ids, moderator)
        parent_id = channel.parent_id if channel.kind is ChannelKind.THREAD else None
        return rules.evaluate(content, author, channel.id, parent_id, self.clock(), self.state,
                              new_message=new_message)

    async def enforce(self, verdict: Verdict, user: User, channel: Channel, content: str,
                      message_id: int | None) -> None:
        """Run the non-block actions of every hit. A failure is logged, not raised: the
        message's fate (accepted or blocked) is already decided."""
        community_id = channel.community_id
        if not verdict.hits or community_id is None or self.moderation is None:
            return
        moderation = self.moderation
        for hit in verdict.hits:
            try:
                if AutomodAction.FLAG in hit.actions:  # blocked by another rule: no id
                    await moderation.flag(
                        community_id=community_id, channel_id=channel.id,
                        message_id=message_id, author_id=user.id, content=content,
                        rule=hit.rule_name, reason=hit.reason)
                if AutomodAction.ALERT in hit.actions and not self.state.count(
                        (hit.rule_id, user.id, b"alert"), self.clock(), ALERT_COOLDOWN_S, 1):
                    done = "blocked" if message_id is None else "posted"
                    await moderation.alert(
                        community_id=community_id, rule=hit.rule_name,
                        summary=f"{user.username} {done} a message: {hit.reason}",
                        user_id=user.id, channel_id=channel.id, message_id=message_id,
                        actions=sorted(a.value for a in hit.actions))
            except Exception:
                log.exception("automod action of rule %d failed", hit.rule_id)
        timeouts = verdict.wants(AutomodAction.TIMEOUT)
        if timeouts:
            longest = max(timeouts, key=lambda h: h.timeout_s)
            try:
                await moderation.timeout_member(
                    community_id=community_id, user_id=user.id, duration_s=longest.timeout_s,
                    reason=f"automod rule {longest.rule_name!r}: {longest.reason}")
            except Exception:
                log.exception("automod timeout of rule %d failed", longest.rule_id)

    @staticmethod
    def blocked_error(verdict: Verdict) -> RequestError | None:
        hit = verdict.blocked_by
        if hit is None:
            return None
        return RequestError(ErrorCode.AUTOMOD_BLOCKED,
                            f"blocked by automod rule {hit.rule_name!r}")

    # ---------------------------------------------------------------------------- CRUD

    async def list_rules(self, user: User, community_id: int) -> list[AutomodRule]:
        await self.access.require(community_id, user.id, Permission.MANAGE_AUTOMOD)
        async with self.db.connection() as conn:
            return await automod_db.list_rules(conn, community_id)

    async def get_rule(self, user: User, community_id: int, rule_id: int) -> AutomodRule:
        await self.access.require(community_id, user.id, Permission.MANAGE_AUTOMOD)
        async with self.db.connection() as conn:
            rule = await automod_db.get_rule(conn, rule_id)
        if rule is None or rule.community_id != community_id:
            raise not_found("unknown automod rule")
        return rule

    async def _validate(self, community_id: int, body: AutomodRuleBody) -> None:
        rule = AutomodRule(id=0, community_id=community_id, **_fields(body))
        try:
            await asyncio.to_thread(compile_rule, rule)  # CPU work: off the event loop
        except RuleError as exc:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, str(exc)) from None
        channel_ids = {*body.exempt_channel_ids,
                       *([body.channel_id] if body.channel_id is not None else [])}
        async with self.db.connection() as conn:
            for channel_id in channel_ids:
                channel = await channels_db.get_channel(conn, channel_id)
                if channel is None or channel.community_id != community_id:
                    raise RequestError(ErrorCode.INVALID_ARGUMENT,
                                       f"channel {channel_id} is not in this community")

    async def create_rule(self, user: User, community_id: int,
                          body: AutomodRuleBody) -> AutomodRule:
        await self.access.require(community_id, user.id, Permission.MANAGE_AUTOMOD)
        await self._validate(community_id, body)
        async with self.db.transaction("automod_rule_create") as conn:
            count = await automod_db.lock_community_rules_txn(conn, community_id)
            if count >= MAX_RULES_PER_COMMUNITY:
                raise RequestError(ErrorCode.INVALID_ARGUMENT,
                                   f"at most {MAX_RULES_PER_COMMUNITY} automod rules per "
                                   "community")
            await _check_list_chars(conn, community_id, body, replacing=None)
            rule = await automod_db.create_rule_txn(conn, community_id, user.id, body)
            await audit.record(conn, community_id=community_id, actor_id=user.id,
                               action="automod.rule.create", target_type="automod_rule",
                               target_id=rule.id, reason=None, before=None,
                               after=_audited(rule))
        await self._changed(community_id)
        return rule

    async def update_rule(self, user: User, community_id: int, rule_id: int,
                          body: AutomodRuleBody) -> AutomodRule:
        before = await self.get_rule(user, community_id, rule_id)
        await self._validate(community_id, body)
        async with self.db.transaction("automod_rule_update") as conn:
            await automod_db.lock_community_rules_txn(conn, community_id)
            await _check_list_chars(conn, community_id, body, replacing=rule_id)
            rule = await automod_db.update_rule_txn(conn, rule_id, body)
            if rule is None:
                raise not_found("unknown automod rule")
            await audit.record(conn, community_id=community_id, actor_id=user.id,
                               action="automod.rule.update", target_type="automod_rule",
                               target_id=rule.id, reason=None, before=_audited(before),
                               after=_audited(rule))
        await self._changed(community_id)
        return rule

    async def delete_rule(self, user: User, community_id: int, rule_id: int) -> None:
        before = await self.get_rule(user, community_id, rule_id)
        async with self.db.transaction("automod_rule_delete") as conn:
            await automod_db.lock_community_rules_txn(conn, community_id)
            if not await automod_db.delete_rule_txn(conn, rule_id):
                raise not_found("unknown automod rule")
            await audit.record(conn, community_id=community_id, actor_id=user.id,
                               action="automod.rule.delete", target_type="automod_rule",
                               target_id=rule_id, reason=None, before=_audited(before),
                               after=None)
        await self._changed(community_id)


async def _check_list_chars(conn: Connection, community_id: int, body: AutomodRuleBody,
                            replacing: int | None) -> None:
    """The community's lists together stay within ``MAX_LIST_CHARS_PER_COMMUNITY``
    (checked under the community's rule lock)."""
    others = await automod_db.list_rules(conn, community_id)
    total = list_chars(body.trigger) + sum(
        list_chars(r.trigger) for r in others if r.id != replacing)
    if total > MAX_LIST_CHARS_PER_COMMUNITY:
        raise RequestError(
            ErrorCode.INVALID_ARGUMENT,
            f"the community's keyword, allow and pattern lists would hold {total} "
            f"characters; at most {MAX_LIST_CHARS_PER_COMMUNITY} (the per-message budget)")


def _fields(body: AutomodRuleBody) -> dict[str, Any]:
    return {f: getattr(body, f) for f in body.__struct_fields__}


def _audited(rule: AutomodRule) -> dict[str, Any]:
    """The rule as the audit log keeps it (without timestamps: they are the entry's)."""
    data: dict[str, Any] = msgspec.to_builtins(rule)
    for key in ("created_at", "updated_at", "created_by"):
        data.pop(key, None)
    return data
