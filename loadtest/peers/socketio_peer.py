"""Peer for ``hearth loadtest --peer python-socketio``: what a Python team would pick
instead of Hearth, python-socketio on aiohttp with its Redis manager (so that it could
scale out the same way), speaking the subset of Hearth's JSON protocol the scenarios use.

Each Hearth frame travels as the one argument of a Socket.IO event named ``"f"``. A
message is emitted once to the channel's Socket.IO room through the Redis manager (the
idiomatic fan-out), so every recipient gets the same payload: dispatches carry no
per-session ``s`` (the harness then checks only per-channel seqs). Nothing is persisted.

Run: ``python -m loadtest.peers.socketio_peer --port P --redis redis://127.0.0.1:R``.
Needs the optional extra ``loadtest`` (python-socketio).
"""

from __future__ import annotations

import argparse
import itertools
import secrets
import time
from typing import Any

import socketio  # type: ignore[import-not-found, import-untyped, unused-ignore]
from aiohttp import web

HELLO = {"op": "hello", "heartbeat_interval_ms": 30_000, "protocol_version": 1,
         "limits": {"requests_per_window": 1_000_000, "rate_window_ms": 10_000,
                    "heartbeat_interval_ms": 30_000}}


def build(redis_url: str) -> web.Application:
    manager = socketio.AsyncRedisManager(redis_url)
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager,
                               cors_allowed_origins=[], max_http_buffer_size=65_536)
    app = web.Application()
    sio.attach(app)
    ids = itertools.count(1)
    users: dict[str, dict[str, Any]] = {}
    channels: dict[int, dict[str, Any]] = {}
    sessions: dict[str, dict[str, Any]] = {}

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def provision(request: web.Request) -> web.Response:
        body = await request.json()
        n, k = int(body["users"]), int(body["room_size"])
        if not (1 <= k <= n):
            return web.json_response({"error": {"code": "invalid_argument",
                                                "message": "users/room_size"}}, status=400)
        out: dict[str, Any] = {"community_id": next(ids), "users": [], "channels": []}
        room: dict[str, Any] = {}
        for i in range(n):
            if i % k == 0:
                room = {"id": next(ids), "seq": 0, "member_ids": []}
                channels[room["id"]] = room
                out["channels"].append({"id": room["id"], "member_ids": room["member_ids"]})
            uid = next(ids)
            token = f"pw.{uid}.{secrets.token_urlsafe(9)}"
            users[token] = {"id": uid, "username": f"lt{uid}", "channel": room["id"]}
            room["member_ids"].append(uid)
            out["users"].append({"id": uid, "username": f"lt{uid}", "token": token})
        return web.json_response(out, status=201)

    @sio.event  # type: ignore[untyped-decorator, unused-ignore]
    async def connect(sid: str, environ: dict[str, Any]) -> None:
        sessions[sid] = {}
        await sio.emit("f", HELLO, to=sid)

    @sio.event  # type: ignore[untyped-decorator, unused-ignore]
    async def disconnect(sid: str, *args: Any) -> None:
        sessions.pop(sid, None)

    @sio.on("f")  # type: ignore[untyped-decorator, unused-ignore]
    async def frame(sid: str, f: dict[str, Any]) -> None:
        op = f.get("op")
        session = sessions.get(sid)
        if session is None:
            return
        if op == "heartbeat":
            await sio.emit("f", {"op": "heartbeat_ack"}, to=sid)
        elif op == "identify":
            user = users.get(f.get("token", ""))
            if user is None:
                await sio.disconnect(sid)
                return
            session["user"] = user
            channel = channels[user["channel"]]
            await sio.enter_room(sid, f"ch.{channel['id']}")
            await sio.emit("f", {
                "op": "ready", "session_id": sid,
                "user": {"id": user["id"], "username": user["username"],
                         "display_name": user["username"], "bot": True},
                "communities": [{"community": {"id": 1, "name": "loadtest", "owner_id": 1},
                                 "role": "member",
                                 "channels": [{"id": channel["id"], "kind": "text",
                                               "name": "room", "private": True,
                                               "last_seq": channel["seq"]}]}],
                "private_channels": [], "read_states": []}, to=sid)
        elif op == "send_message":
            user = session.get("user")
            if user is None or f.get("channel_id") != user["channel"]:
                await sio.emit("f", {"op": "error", "id": f.get("id"), "code": "not_found",
                                     "message": "no such channel"}, to=sid)
                return
            channel = channels[user["channel"]]
            channel["seq"] += 1
            message = {"id": next(ids), "channel_id": channel["id"], "seq": channel["seq"],
                       "author": {"id": user["id"], "username": user["username"],
                                  "display_name": user["username"], "bot": True},
                       "content": f.get("content", ""), "created_at": int(time.time() * 1000),
                       "nonce": f.get("nonce")}
            await sio.emit("f", {"op": "dispatch", "d": {"t": "message_create",
                                                         "message": message}},
                           room=f"ch.{channel['id']}")
            await sio.emit("f", {"op": "ok", "id": f.get("id"),
                                 "data": {"type": "message", "message": message}}, to=sid)

    app.router.add_get("/readyz", readyz)
    app.router.add_post("/api/v1/loadtest/provision", provision)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    args = parser.parse_args()
    web.run_app(build(args.redis), host=args.host, port=args.port, print=None,
                backlog=4096)


if __name__ == "__main__":
    main()
