"""Who is in which voice room, across every process and node (issue 6).

A participant's media connection and gateway session live on one node, but everyone
who views the channel, on any node, must see the same room: the list ``voice_join``
returns, the capacity check, the stage's speaker list. So the roster is shared, with
two implementations behind one interface, like presence (``rooms/realtime/presence.py``):

:class:`MemoryRoster`
    One process (no Redis): dictionaries.
:class:`RedisRoster`
    Many processes and nodes. Per room a hash ``hearth:voice:room:<channel_id>``
    (user id -> the participant and the node holding it); the capacity check and the
    insert are one Lua script, so two nodes cannot both take the last place. Every node
    holds a lease (``hearth:voice:node:<id>``, renewed every ``ttl_s / 3``); entries of
    a node whose lease expired (the node died without leaving its rooms) are dropped
    the next time the room is read, so a crashed node's participants vanish from every
    list within ``ttl_s`` (30 s by default).

Stage speakers (``set_role``, live sessions) are a set per channel in the same store,
so a member promoted on one node is a speaker when they join on another.
"""

from __future__ import annotations

import abc
import logging

import msgspec
import redis.asyncio as aioredis

from protocol.voice import VoiceParticipant
from rooms.realtime.redis_client import RedisClients, blocking_client

log = logging.getLogger(__name__)


class RosterEntry(msgspec.Struct, frozen=True):
    """A participant, the node whose VoiceService holds their connection, and the
    token of that one participation: a late leave from an older connection of the same
    member (another session, another node) removes nothing but its own entry."""

    participant: VoiceParticipant
    node: str
    token: str


TOKEN_LEN = 32
"""Participation tokens are 32 ASCII characters (``uuid4().hex``)."""
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(RosterEntry).decode


def _pack(entry: RosterEntry) -> bytes:
    """The token first, so a Lua script can compare it without decoding msgpack."""
    assert len(entry.token) == TOKEN_LEN
    return entry.token.encode() + _encode(entry)


class VoiceRoster(abc.ABC):
    """The shared room lists. Every method is one round-trip at most."""

    def __init__(self, node: str, ttl_s: float = 30.0) -> None:
        self.node = node
        self.ttl_s = ttl_s

    @abc.abstractmethod
    async def add(self, channel_id: int, participant: VoiceParticipant, token: str,
                  max_participants: int) -> bool:
        """Put (or replace) the participant; False when the room is full."""

    @abc.abstractmethod
    async def update(self, channel_id: int, participant: VoiceParticipant,
                     token: str) -> None:
        """Replace the participant's state if this participation is still there."""

    @abc.abstractmethod
    async def remove(self, channel_id: int, user_id: int, token: str) -> None:
        """Remove the participant if ``token`` is still theirs."""

    @abc.abstractmethod
    async def entries(self, channel_id: int) -> list[RosterEntry]:
        """The room's live entries, by user id (a dead node's are dropped)."""

    async def participants(self, channel_id: int) -> list[VoiceParticipant]:
        return [e.participant for e in await self.entries(channel_id)]

    @abc.abstractmethod
    async def set_speaker(self, channel_id: int, user_id: int, speaker: bool) -> None: ...

    @abc.abstractmethod
    async def is_speaker(self, channel_id: int, user_id: int) -> bool: ...

    @abc.abstractmethod
    async def clear_speakers(self, channel_id: int) -> None: ...

    async def renew(self) -> None:
        """Extend this node's lease (Redis); nothing in memory."""
        return None

    async def close(self) -> None:
        return None


class MemoryRoster(VoiceRoster):
    """For one process: the same rules in dictionaries."""

    def __init__(self, node: str = "local", ttl_s: float = 30.0) -> None:
        super().__init__(node, ttl_s)
        self._rooms: dict[int, dict[int, RosterEntry]] = {}
        self._speakers: dict[int, set[int]] = {}

    async def add(self, channel_id: int, participant: VoiceParticipant, token: str,
                  max_participants: int) -> bool:
        room = self._rooms.setdefault(channel_id, {})
        if participant.user_id not in room and len(room) >= max_participants:
            return False
        room[participant.user_id] = RosterEntry(participant, self.node, token)
        return True

    async def update(self, channel_id: int, participant: VoiceParticipant,
                     token: str) -> None:
        room = self._rooms.get(channel_id)
        entry = room.get(participant.user_id) if room is not None else None
        if room is not None and entry is not None and entry.token == token:
            room[participant.user_id] = RosterEntry(participant, self.node, token)

    async def remove(self, channel_id: int, user_id: int, token: str) -> None:
        room = self._rooms.get(channel_id)
        if room is None:
            return
        entry = room.get(user_id)
        if entry is not None and entry.token == token:
            del room[user_id]
        if not room:
            del self._rooms[channel_id]

    async def entries(self, channel_id: int) -> list[RosterEntry]:
        room = self._rooms.get(channel_id, {})
        return [room[u] for u in sorted(room)]

    async def set_speaker(self, channel_id: int, user_id: int, speaker: bool) -> None:
        speakers = self._speakers.setdefault(channel_id, set())
        if speaker:
            speakers.add(user_id)
        else:
            speakers.discard(user_id)
            if not speakers:
                del self._speakers[channel_id]

    async def is_speaker(self, channel_id: int, user_id: int) -> bool:
        return user_id in self._speakers.get(channel_id, ())

    async def clear_speakers(self, channel_id: int) -> None:
        self._speakers.pop(channel_id, None)


_ADD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
   or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""
_UPDATE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and string.sub(old, 1, 32) == string.sub(ARGV[2], 1, 32) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 0
"""
_REMOVE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and string.sub(old, 1, 32) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class RedisRoster(VoiceRoster):
    """Shared by every process and node through Redis (see the module docstring)."""

    PREFIX = "hearth:voice:"

    def __init__(self, url: str, node: str, ttl_s: float = 30.0) -> None:
        super().__init__(node, ttl_s)
        self._redis: aioredis.Redis = blocking_client(url)
        self._add = self._redis.register_script(_ADD)
        self._update = self._redis.register_script(_UPDATE)
        self._remove = self._redis.register_script(_REMOVE)

    def _room(self, channel_id: int) -> str:
        return f"{self.PREFIX}room:{channel_id}"

    def _lease(self, node: str) -> str:
        return f"{self.PREFIX}node:{node}"

    async def renew(self) -> None:
        await self._redis.set(self._lease(self.node), b"1", px=int(self.ttl_s * 1000))

    async def add(self, channel_id: int, participant: VoiceParticipant, token: str,
                  max_participants: int) -> bool:
        args: list[bytes | int] = [
            participant.user_id, _pack(RosterEntry(participant, self.node, token)),
            max_participants]
        if await self._add(keys=[self._room(channel_id)], args=args):
            return True
        await self.entries(channel_id)  # drops a dead node's entries, then one retry
        return bool(await self._add(keys=[self._room(channel_id)], args=args))

    async def update(self, channel_id: int, participant: VoiceParticipant,
                     token: str) -> None:
        await self._update(keys=[self._room(channel_id)], args=[
            participant.user_id, _pack(RosterEntry(participant, self.node, token))])

    async def remove(self, channel_id: int, user_id: int, token: str) -> None:
        await self._remove(keys=[self._room(channel_id)], args=[user_id, token])

    async def entries(self, channel_id: int) -> list[RosterEntry]:
        raw = await self._redis.hgetall(self._room(channel_id))
        found: dict[int, RosterEntry] = {}
        for key, value in raw.items():
            try:
                assert isinstance(value, bytes)  # the client does not decode responses
                found[int(key)] = _decode(value[TOKEN_LEN:])
            except (ValueError, msgspec.DecodeError):
                log.warning("unreadable voice roster entry %r in room %d", key, channel_id)
        nodes = sorted({e.node for e in found.values()} - {self.node})
        if nodes:
            pipe = self._redis.pipeline(transaction=False)
            for n in nodes:
                pipe.exists(self._lease(n))
            live = {n for n, ok in zip(nodes, await pipe.execute(), strict=True) if ok}
            dead = [u for u, e in found.items() if e.node != self.node and e.node not in live]
            if dead:
                await self._redis.hdel(self._room(channel_id), *[str(u) for u in dead])
                for u in dead:
                    del found[u]
        return [found[u] for u in sorted(found)]

    async def set_speaker(self, channel_id: int, user_id: int, speaker: bool) -> None:
        key = f"{self.PREFIX}speakers:{channel_id}"
        if speaker:
            await self._redis.sadd(key, str(user_id))
        else:
            await self._redis.srem(key, str(user_id))

    async def is_speaker(self, channel_id: int, user_id: int) -> bool:
        return bool(await self._redis.sismember(f"{self.PREFIX}speakers:{channel_id}",
                                                str(user_id)))

    async def clear_speakers(self, channel_id: int) -> None:
        await self._redis.delete(f"{self.PREFIX}speakers:{channel_id}")

    async def close(self) -> None:
        try:
            await self._redis.delete(self._lease(self.node))
        except Exception as exc:  # shutting down: the lease expires anyway
            log.warning("voice roster lease not released: %s", exc)
        await self._redis.aclose()


def make_roster(redis: RedisClients | None, node: str) -> VoiceRoster:
    return RedisRoster(redis.url, node) if redis is not None else MemoryRoster(node)
