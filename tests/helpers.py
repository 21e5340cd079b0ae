"""A raw gateway test client: frames as plain dicts, so tests assert the wire itself."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from typing import Any

import aiohttp


async def register(http: aiohttp.ClientSession, base: str, username: str | None = None,
                   password: str = "correct horse battery") -> dict[str, Any]:
    """Register a fresh account; returns the JSON reply (user, access_token, ...)."""
    username = username or f"u{uuid.uuid4().hex[:10]}"
    async with http.post(f"{base}/api/v1/auth/register",
                         json={"username": username, "password": password}) as reply:
        body = await reply.json()
        assert reply.status == 201, body
        return dict(body)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class GatewayClient:
    """One websocket to /gateway with helpers to identify, request and await events."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.hello: dict[str, Any] = {}
        self.ready: dict[str, Any] = {}
        self.last_seq = 0
        self.positions: dict[int, int] = {}
        """Per channel, the newest message seq received (sent with ``resume``)."""
        self.positions_at_ready: dict[int, int] = {}
        self._jump_allowed = False
        self._ids = itertools.count(1)
        self.backlog: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, ws_url: str,
                      **kwargs: Any) -> GatewayClient:
        ws = await http.ws_connect(ws_url, autoping=True, **kwargs)
        client = cls(ws)
        client.hello = await client.recv()
        assert client.hello["op"] == "hello", client.hello
        return client

    @classmethod
    async def identified(cls, http: aiohttp.ClientSession, ws_url: str,
                         token: str) -> GatewayClient:
        client = await cls.connect(http, ws_url)
        await client.identify(token)
        return client

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            await self.ws.send_str(json.dumps(frame))
        elif isinstance(frame, str):
            await self.ws.send_str(frame)
        else:
            await self.ws.send_bytes(frame)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING):
            return {"op": "__closed__", "code": self.ws.close_code}
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        if frame.get("op") == "dispatch":
            # Consecutive, except that a resume on another node may number its replay
            # after a jump (never backwards).
            if self._jump_allowed:
                assert frame["s"] > self.last_seq, (frame["s"], self.last_seq)
            else:
                assert frame["s"] == self.last_seq + 1, (frame["s"], self.last_seq)
            self._jump_allowed = False
            self.last_seq = frame["s"]
            self.track(frame["d"])
        elif frame.get("op") == "resumed":
            self._jump_allowed = True
        elif frame.get("op") == "ready":
            for snapshot in frame["communities"]:
                self.bring(snapshot["channels"])
            self.bring(frame["private_channels"])
            self.positions_at_ready = dict(self.positions)
        return dict(frame)

    def bring(self, channels: list[dict[str, Any]]) -> None:
        for channel in channels:
            self.positions.setdefault(channel["id"], channel["last_seq"])

    def track(self, event: dict[str, Any]) -> None:
        """Keep ``positions`` as a client must for an exactly-once resume elsewhere."""
        kind = event.get("t")
        if kind == "message_create":
            message = event["message"]
            channel_id = message["channel_id"]
            if message["seq"] > self.positions.get(channel_id, 0):
                self.positions[channel_id] = message["seq"]
        elif kind in ("channel_create", "channel_update"):
            self.bring([event["channel"]])
        elif kind == "community_available":
            self.bring(event["snapshot"]["channels"])

    def resume_frame(self, token: str, session_id: str | None = None,
                     seq: int | None = None) -> dict[str, Any]:
        """A ``resume`` continuing this client's session, with its positions."""
        return {"op": "resume", "token": token,
                "session_id": session_id or self.ready["session_id"],
                "seq": self.last_seq if seq is None else seq,
                "positions": {str(c): s for c, s in self.positions.items()}}

    def continue_from(self, old: GatewayClient) -> None:
        """This new connection resumes ``old``'s session: take over what it knows."""
        self.last_seq = old.last_seq
        self.ready = old.ready
        self.positions = dict(old.positions)

    async def identify(self, token: str) -> dict[str, Any]:
        await self.send({"op": "identify", "token": token})
        self.ready = await self.recv()
        assert self.ready["op"] == "ready", self.ready
        return self.ready

    async def request(self, op: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """Send a request and return its reply; dispatches seen meanwhile are kept."""
        rid = next(self._ids)
        await self.send({"op": op, "id": rid, **fields})
        while True:
            frame = await self.recv(timeout)
            if frame.get("op") in ("ok", "error") and frame.get("id") == rid:
                return frame
            assert frame["op"] != "__closed__", frame
            self.backlog.append(frame)

    async def ok(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request(op, **fields)
        assert reply["op"] == "ok", reply
        return dict(reply["data"])

    async def event(self, t: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The next dispatched event of type ``t`` (whose fields match ``match``)."""
        def matches(frame: dict[str, Any]) -> bool:
            d = frame.get("d", {})
            return frame.get("op") == "dispatch" and d.get("t") == t and all(
                d.get(k) == v for k, v in match.items())

        for i, frame in enumerate(self.backlog):
            if matches(frame):
                del self.backlog[i]
                return dict(frame["d"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.recv(max(deadline - loop.time(), 0.01))
            assert frame["op"] != "__closed__", frame
            if matches(frame):
                return dict(frame["d"])
            self.backlog.append(frame)

    async def no_event(self, t: str, wait: float = 0.3) -> None:
        """Assert no ``t`` event arrives within ``wait`` seconds."""
        try:
            got = await self.event(t, timeout=wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected {t}: {got}")

    async def closed(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to close; returns the close code."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.recv(max(deadline - loop.time(), 0.01))
            if frame["op"] == "__closed__":
                return self.ws.close_code
            self.backlog.append(frame)

    def channel_named(self, name: str) -> dict[str, Any]:
        for snapshot in self.ready["communities"]:
            for channel in snapshot["channels"]:
                if channel["name"] == name:
                    return dict(channel)
        raise KeyError(name)

    async def close(self) -> None:
        await self.ws.close()
