"""Small typed helpers for Hearth's REST API (``/api/v1``), over aiohttp.

Enough to set up what a bot or a test needs before it connects to the gateway: accounts,
bot tokens, communities, invites and channels::

    async with HearthRest("http://127.0.0.1:8080") as rest:
        owner = await rest.register("ada", "correct horse battery")
        as_ada = rest.as_user(owner.access_token)
        bot = await as_ada.create_bot("echo")
        created = await as_ada.create_community("Makers")
        code = await as_ada.create_invite(created.community.id)
        await rest.as_user(bot.token).join_invite(code)

Replies decode into the records of :mod:`protocol.models`; a refusal raises
:class:`RestError` with the documented ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import msgspec

from protocol.models import Channel, ChannelKind, CommunitySnapshot, Member, User
from protocol.rest import BotCreated, CommunityCreated, TokenPair

__all__ = [
    "BotCreated",
    "CommunityCreated",
    "HearthRest",
    "RestError",
    "TokenPair",
]

T = TypeVar("T")


class RestError(Exception):
    """A non-2xx reply."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message








class _Invite(msgspec.Struct, frozen=True):
    code: str


class _Joined(msgspec.Struct, frozen=True):
    snapshot: CommunitySnapshot


class _ChannelReply(msgspec.Struct, frozen=True):
    channel: Channel


class _Members(msgspec.Struct, frozen=True):
    members: list[Member]


class _Me(msgspec.Struct, frozen=True):
    user: User


class _ErrorBody(msgspec.Struct):
    code: str = "unknown"
    message: str = ""


class _ErrorReply(msgspec.Struct):
    error: _ErrorBody = msgspec.field(default_factory=_ErrorBody)


class HearthRest:
    """A REST client for one server; ``token`` authenticates the calls that need it.

    Pass your own ``session`` to share a connection pool; otherwise one is created and
    closed by :meth:`close` (or ``async with``).
    """

    def __init__(self, base_url: str, token: str | None = None, *,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> HearthRest:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    def as_user(self, token: str) -> HearthRest:
        """A client acting with ``token`` that shares this one's connection pool."""
        return HearthRest(self.base_url, token, session=self._http())

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    async def _call(self, method: str, path: str, reply: type[T] | None,
                    body: dict[str, Any] | None = None, *, auth: bool = True) -> T | None:
        headers = {"Content-Type": "application/json"}
        if auth:
            if not self.token:
                raise ValueError(f"{method} {path} needs a token (use as_user(token))")
            headers["Authorization"] = f"Bearer {self.token}"
        data = msgspec.json.encode(body) if body is not None else None
        async with self._http().request(method, f"{self.base_url}/api/v1{path}", data=data,
                                        headers=headers) as response:
            raw = await response.read()
            if response.status >= 300:
                try:
                    error = msgspec.json.decode(raw, type=_ErrorReply).error
                except msgspec.DecodeError:
                    error = _ErrorBody(code="http_error", message=raw.decode(errors="replace"))
                raise RestError(response.status, error.code, error.message)
            if reply is None:
                return None
            return msgspec.json.decode(raw, type=reply)

    async def _get(self, method: str, path: str, reply: type[T],
                   body: dict[str, Any] | None = None, *, auth: bool = True) -> T:
        result = await self._call(method, path, reply, body, auth=auth)
        assert result is not None
        return result

    # --------------------------------------------------------------------- accounts

    async def register(self, username: str, password: str,
                       display_name: str | None = None) -> TokenPair:
        body: dict[str, Any] = {"username": username, "password": password}
        if display_name is not None:
            body["display_name"] = display_name
        return await self._get("POST", "/auth/register", TokenPair, body, auth=False)

    async def login(self, username: str, password: str) -> TokenPair:
        return await self._get("POST", "/auth/login", TokenPair,
                               {"username": username, "password": password}, auth=False)

    async def refresh(self, refresh_token: str) -> TokenPair:
        return await self._get("POST", "/auth/refresh", TokenPair,
                               {"refresh_token": refresh_token}, auth=False)

    async def me(self) -> User:
        return (await self._get("GET", "/users/@me", _Me)).user

    async def create_bot(self, username: str, display_name: str | None = None) -> BotCreated:
        body: dict[str, Any] = {"username": username}
        if display_name is not None:
            body["display_name"] = display_name
        return await self._get("POST", "/bots", BotCreated, body)

    # ------------------------------------------------------------------ communities

    async def create_community(self, name: str) -> CommunityCreated:
        return await self._get("POST", "/communities", CommunityCreated, {"name": name})

    async def create_invite(self, community_id: int, max_uses: int | None = None,
                            expires_in_s: int | None = None) -> str:
        body: dict[str, Any] = {}
        if max_uses is not None:
            body["max_uses"] = max_uses
        if expires_in_s is not None:
            body["expires_in_s"] = expires_in_s
        return (await self._get("POST", f"/communities/{community_id}/invites", _Invite,
                                body)).code

    async def join_invite(self, code: str) -> CommunitySnapshot:
        return (await self._get("POST", f"/invites/{code}/join", _Joined)).snapshot

    async def create_channel(self, community_id: int, name: str,
                             kind: ChannelKind | str = ChannelKind.TEXT, *,
                             private: bool = False, parent_id: int | None = None,
                             topic: str = "", member_ids: list[int] | None = None) -> Channel:
        body: dict[str, Any] = {"name": name, "kind": str(kind), "private": private,
                                "topic": topic, "member_ids": member_ids or []}
        if parent_id is not None:
            body["parent_id"] = parent_id
        return (await self._get("POST", f"/communities/{community_id}/channels",
                                _ChannelReply, body)).channel

    async def members(self, community_id: int) -> list[Member]:
        return (await self._get("GET", f"/communities/{community_id}/members",
                                _Members)).members
