"""Shared set-up of the courses tests: a community with an owner (staff), members, and
REST calls returning (status, body)."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.conftest import RunningServer
from tests.helpers import bearer, register


class Api:
    """One server, many people: ``await api.call("owner", "POST", path, body)``."""

    def __init__(self, http: aiohttp.ClientSession, server: RunningServer) -> None:
        self.http = http
        self.server = server
        self.base = f"{server.url}/api/v1"
        self.people: dict[str, dict[str, Any]] = {}
        self.cid = 0

    def uid(self, who: str) -> int:
        return int(self.people[who]["user"]["id"])

    def token(self, who: str) -> str:
        return str(self.people[who]["access_token"])

    async def call(self, who: str | None, method: str, path: str,
                   body: Any = None, token: str | None = None) -> tuple[int, Any]:
        headers = bearer(token) if token else (bearer(self.token(who)) if who else {})
        async with self.http.request(method, self.base + path, headers=headers,
                                     json=body) as reply:
            raw = await reply.read()
            if reply.content_type == "application/json" and raw:
                return reply.status, await reply.json()
            return reply.status, raw

    async def ok(self, who: str | None, method: str, path: str, body: Any = None,
                 want: int | tuple[int, ...] = (200, 201)) -> Any:
        status, reply = await self.call(who, method, path, body)
        wanted = (want,) if isinstance(want, int) else want
        assert status in wanted, (method, path, status, reply)
        return reply

    async def setup(self, members: tuple[str, ...] = ("learner",),
                    outsiders: tuple[str, ...] = ()) -> None:
        for name in ("owner", *members, *outsiders):
            self.people[name] = await register(self.http, self.server.url)
        created = await self.ok("owner", "POST", "/communities", {"name": "School"})
        self.cid = created["community"]["id"]
        code = (await self.ok("owner", "POST", f"/communities/{self.cid}/invites", {}))["code"]
        for name in members:
            await self.ok(name, "POST", f"/invites/{code}/join", {})

    def courses(self, suffix: str = "") -> str:
        return f"/communities/{self.cid}/courses{suffix}"

    async def course(self, **fields: Any) -> int:
        """A published course of one module (immediate) made by the owner."""
        body = {"title": "Course", **fields}
        course = (await self.ok("owner", "POST", self.courses(), body))["course"]
        await self.ok("owner", "PATCH", self.courses(f"/{course['id']}"),
                      {"status": "published"})
        return int(course["id"])

    async def module(self, course_id: int, **fields: Any) -> int:
        body = {"title": "Module", **fields}
        reply = await self.ok("owner", "POST", self.courses(f"/{course_id}/modules"), body)
        return int(reply["module"]["id"])

    async def lesson(self, course_id: int, module_id: int, **fields: Any) -> int:
        body = {"module_id": module_id, "title": "Lesson", "kind": "text", **fields}
        reply = await self.ok("owner", "POST", self.courses(f"/{course_id}/lessons"), body)
        return int(reply["lesson"]["id"])
