"""A community with people in every role, connected over real websockets, for the
moderation tests."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.helpers import GatewayClient, bearer, register


class Person:
    def __init__(self, reply: dict[str, Any], client: GatewayClient | None = None) -> None:
        self.reply = reply
        self.id: int = reply["user"]["id"]
        self.token: str = reply["access_token"]
        self.client = client

    @property
    def ws(self) -> GatewayClient:
        assert self.client is not None
        return self.client


class Crew:
    """owner, admin, two moderators, members; ``general`` is their text channel."""

    def __init__(self) -> None:
        self.community_id = 0
        self.general = 0
        self.invite = ""
        self.owner: Person
        self.admin: Person
        self.mods: list[Person] = []
        self.members: list[Person] = []

    @property
    def mod(self) -> Person:
        return self.mods[0]

    @property
    def member(self) -> Person:
        return self.members[0]

    def everyone(self) -> list[Person]:
        return [self.owner, self.admin, *self.mods, *self.members]


async def join(http: aiohttp.ClientSession, base: str, code: str,
               token: str) -> aiohttp.ClientResponse:
    async with http.post(f"{base}/api/v1/invites/{code}/join", headers=bearer(token)) as reply:
        await reply.read()
        return reply


async def make_crew(http: aiohttp.ClientSession, base: str, ws_url: str, *, members: int = 2,
                    mods: int = 2, connect: bool = True) -> Crew:
    crew = Crew()
    owner = await register(http, base)
    async with http.post(f"{base}/api/v1/communities", json={"name": "modtest"},
                         headers=bearer(owner["access_token"])) as reply:
        body = await reply.json()
        assert reply.status == 201, body
    crew.community_id = body["community"]["id"]
    crew.general = next(c["id"] for c in body["channels"] if c["name"] == "general")
    async with http.post(f"{base}/api/v1/communities/{crew.community_id}/invites", json={},
                         headers=bearer(owner["access_token"])) as reply:
        crew.invite = (await reply.json())["code"]
    crew.owner = Person(owner)

    async def add(role: str | None) -> Person:
        person = Person(await register(http, base))
        reply = await join(http, base, crew.invite, person.token)
        assert reply.status == 200
        if role is not None:
            async with http.patch(
                    f"{base}/api/v1/communities/{crew.community_id}/members/{person.id}",
                    json={"role": role}, headers=bearer(owner["access_token"])) as r:
                assert r.status == 200, await r.text()
        return person

    crew.admin = await add("admin")
    crew.mods = [await add("moderator") for _ in range(mods)]
    crew.members = [await add(None) for _ in range(members)]
    if connect:
        for person in crew.everyone():
            person.client = await GatewayClient.identified(http, ws_url, person.token)
    return crew


async def rest(http: aiohttp.ClientSession, base: str, token: str, op: str,
               **fields: Any) -> tuple[int, dict[str, Any]]:
    """POST /api/v1/moderation/{op}."""
    async with http.post(f"{base}/api/v1/moderation/{op}", json=fields,
                         headers=bearer(token)) as reply:
        return reply.status, dict(await reply.json())
