"""Enforcement in the send path: timeouts, locked channels, lockdown and slow mode.

The hot path must stay cheap, so every check but slow mode reads only the session's own
view (:class:`rooms.moderation.moderation_view.ModerationView`), loaded at identify and kept current
by
control events (``member_sanctioned``, ``community_moderation_update``,
``channel_update``) that reach the session's process through the bus on every node:
a timeout given on node A blocks the next send on node B as soon as the event lands.

Slow mode must hold across every connection of a member on every node, so it is a key
per (channel, member) that lives ``slowmode_s`` seconds: ``SET NX PX`` in Redis when
processes share Redis (one round-trip, Redis's clock), a dictionary otherwise. Like the
message rate limiter it fails open: with Redis unreachable, slow mode is not enforced
rather than nobody being able to post.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from protocol.codes import ErrorCode
from protocol.models import Channel, ChannelKind
from rooms.errors import RequestError
from rooms.moderation.moderation_view import MODERATION
from rooms.realtime.access import session_community_bits
from rooms.realtime.outages import CircuitBreaker
from rooms.realtime.permissions import (
    ADMIN_BITS,
    ALL_BITS,
    FIXED_ROLE_BITS,
    MEMBER_BITS,
    MODERATOR_BITS,
    Permission,
)
from rooms.realtime.redis_client import FAIL_OPEN_TIMEOUT_S, RedisClients, blocking_client
from rooms.realtime.sessions import Session

log = logging.getLogger(__name__)

P = Permission

# The fixed roles' default bits live with the rules (rooms/realtime/permissions.py); re-exported
# here for the callers that imported them from this module.
__all__ = ["ADMIN_BITS", "ALL_BITS", "FIXED_ROLE_BITS", "MEMBER_BITS", "MODERATOR_BITS"]

TIMEOUT_REMOVES = (P.SEND_MESSAGES | P.ADD_REACTIONS | P.SPEAK | P.CONNECT_VOICE
                   | P.CREATE_THREADS | P.SEND_IN_THREADS)
"""What a timed-out member loses until the timeout ends."""


def session_bits(session: Session, community_id: int | None) -> Permission:
    """The member's community-level bits (fixed role and custom roles) from the
    session's cached access view (rooms/realtime/access.py); no I/O."""
    if community_id is None:
        return MEMBER_BITS
    return session_community_bits(session, community_id)


def _now_ms() -> int:
    return int(time.time() * 1000)


def timeout_remaining_ms(session: Session, community_id: int, now_ms: int | None = None) -> int:
    """How long the member stays timed out in the community (0: not timed out)."""
    view = session.peek(MODERATION)
    until = None if view is None else view.timeouts.get(community_id)
    if until is None:
        return 0
    left = until - (now_ms if now_ms is not None else _now_ms())
    if left <= 0:
        del session.view(MODERATION).timeouts[community_id]  # expired: forget it
        return 0
    return left


def check_not_timed_out(session: Session, channel: Channel) -> None:
    """Sending, reacting, creating threads, typing: refused while timed out."""
    cid = channel.community_id
    if cid is None:
        return
    left = timeout_remaining_ms(session, cid)
    if left:
        raise RequestError(ErrorCode.TIMED_OUT, "you are timed out in this community",
                           retry_after_ms=left)


def check_can_post(session: Session, channel: Channel, target: Channel | None = None) -> None:
    """Everything but slow mode, from the session's view alone (no I/O).

    ``target`` is where the lock is read: the parent of a thread (locking a channel
    locks its threads too)."""
    cid = channel.community_id
    if cid is None:
        return
    check_not_timed_out(session, channel)
    bits = session_bits(session, cid)
    staff = bool(bits & (P.MANAGE_MESSAGES | P.MODERATE))
    lock_from = target or channel
    if (lock_from.locked or channel.locked) and not staff:
        raise RequestError(ErrorCode.CHANNEL_LOCKED, "the channel is locked")
    view = session.peek(MODERATION)
    lockdown = None if view is None else view.lockdowns.get(cid)
    if view is not None and lockdown is not None and not staff:
        member_age_s, account_age_s = lockdown
        now = _now_ms()
        joined = view.joined_ms.get(cid, 0)
        if now - joined < member_age_s * 1000 or \
                now - view.account_created_ms < account_age_s * 1000:
            raise RequestError(ErrorCode.LOCKDOWN,
                               "the community is in lockdown: new members cannot post yet")


def slowmode_of(session: Session, channel: Channel) -> int:
    """Slow-mode seconds that apply to this member here (0: none). Threads follow their
    own setting; a member with BYPASS_SLOWMODE is exempt."""
    seconds = channel.slowmode_s
    if not seconds or channel.kind in (ChannelKind.DM, ChannelKind.GROUP_DM):
        return 0
    if session_bits(session, channel.community_id) & P.BYPASS_SLOWMODE:
        return 0
    return seconds


class SlowMode(abc.ABC):
    """One message per ``seconds`` per (channel, member), across every node."""

    @abc.abstractmethod
    async def take(self, channel_id: int, user_id: int, seconds: int) -> int | None:
        """None if the member may post now (the interval starts); else ms to wait."""

    async def close(self) -> None:
        return None


class LocalSlowMode(SlowMode):
    """For one process: a dictionary of when each (channel, member) may post again."""

    def __init__(self, max_keys: int = 200_000) -> None:
        self._next: dict[tuple[int, int], float] = {}
        self._max_keys = max_keys

    async def take(self, channel_id: int, user_id: int, seconds: int) -> int | None:
        now = time.monotonic()
        key = (channel_id, user_id)
        at = self._next.get(key, 0.0)
        if at > now:
            return max(int((at - now) * 1000), 1)
        if len(self._next) >= self._max_keys:
            self._next = {k: v for k, v in self._next.items() if v > now}
        self._next[key] = now + seconds
        return None


_TAKE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local left = redis.call('PTTL', KEYS[1])
if left < 1 then left = 1 end
return left
"""


class RedisSlowMode(SlowMode):
    """Shared by every process and node: one Lua call (SET NX PX, else PTTL)."""

    def __init__(self, url: str) -> None:
        self._redis: aioredis.Redis = blocking_client(
            url, socket_timeout=FAIL_OPEN_TIMEOUT_S, socket_connect_timeout=FAIL_OPEN_TIMEOUT_S)
        self._script = self._redis.register_script(_TAKE)
        self._breaker = CircuitBreaker()
        self.failures = 0

    async def take(self, channel_id: int, user_id: int, seconds: int) -> int | None:
        if self._breaker.is_open():  # Redis failed a moment ago: fail open at once
            return None
        try:
            left = await self._script(keys=[f"hearth:slow:{channel_id}:{user_id}"],
                                      args=[seconds * 1000])
        except Exception as exc:
            self._breaker.trip()
            self.failures += 1
            if self.failures % 100 == 1:
                log.warning("slow mode store unavailable, allowing: %s", exc)
            return None
        self._breaker.reset()
        return int(left) or None

    async def close(self) -> None:
        await self._redis.aclose()


def make_slowmode(redis: RedisClients | None) -> SlowMode:
    return RedisSlowMode(redis.url) if redis is not None else LocalSlowMode()


class PostGate:
    """What the chat service asks before it accepts a message, a reaction or a thread."""

    def __init__(self, slowmode: SlowMode,
                 on_message: Callable[[int], None] | None = None) -> None:
        self.slowmode = slowmode
        self.on_message = on_message
        """Counts a message per community for raid signals (rooms/moderation/raid.py); no I/O."""

    def check(self, session: Session, channel: Channel, target: Channel | None = None) -> None:
        check_can_post(session, channel, target)

    async def take_slowmode(self, session: Session, channel: Channel) -> None:
        """Slow mode (the last check before a message is accepted), and the message
        counted for raid signals."""
        if self.on_message is not None and channel.community_id is not None:
            self.on_message(channel.community_id)
        seconds = slowmode_of(session, channel)
        if not seconds:
            return
        wait = await self.slowmode.take(channel.id, session.user.id, seconds)
        if wait is not None:
            raise RequestError(ErrorCode.SLOWMODE,
                               f"slow mode: one message every {seconds} s",
                               retry_after_ms=wait)
