"""Peer servers Hearth is measured against, in the same run with the same clients.

Every peer implements the subset of Hearth's JSON protocol the scenarios use (hello,
identify -> ready, heartbeat -> heartbeat_ack, send_message -> ok, dispatch
message_create with the channel's ``seq``) and the provisioning route
``POST /api/v1/loadtest/provision``, so the harness drives it exactly as it drives
Hearth. Peers keep everything in memory and persist nothing; Hearth commits every
message to PostgreSQL before it acknowledges it. The report says so.

- ``node-ws``: ``peers/node_ws/server.js``, Node.js with the ``ws`` package, installed
  from npm at run time into a cache directory (``$HEARTH_LOADTEST_CACHE`` or
  ``~/.cache/hearth-loadtest``), never into the repository.
- ``python-socketio``: ``peers/socketio_peer.py``, python-socketio on aiohttp with its
  Redis manager (a private ``redis-server`` on a loopback port is started for the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from loadtest.target import (
    Target,
    TargetError,
    child_env,
    free_port,
    spawn_logged,
    stop_process,
    wait_ready,
)

HERE = Path(__file__).resolve().parent
PEER_NOTE = "peer keeps messages in memory only (no persistence); Hearth commits each " \
            "message to PostgreSQL before acknowledging it"


def cache_dir() -> Path:
    root = os.environ.get("HEARTH_LOADTEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hearth-loadtest")
    return Path(root)


def install_node_ws() -> Path:
    """The node-ws peer in the cache, ``npm install``-ed once per package.json version."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise TargetError("--peer node-ws needs node and npm on PATH")
    source = HERE / "node_ws"
    package = (source / "package.json").read_bytes()
    directory = cache_dir() / ("node-ws-" + hashlib.sha256(package).hexdigest()[:12])
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "server.js", directory / "server.js")
    if not (directory / "node_modules" / "ws" / "package.json").exists():
        (directory / "package.json").write_bytes(package)
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--omit=dev",
                               "--loglevel=error"], cwd=directory, capture_output=True,
                              text=True, timeout=300)
        if done.returncode != 0:
            raise TargetError(f"npm install for the node-ws peer failed:\n{done.stderr[-2000:]}")
    return directory


@contextlib.asynccontextmanager
async def _process_target(name: str, command: list[str], port: int, cwd: Path | None,
                          framing: str, ws_path: str) -> AsyncIterator[Target]:
    log_path = Path(tempfile.mkdtemp(prefix=f"hearth-lt-{name}-")) / "peer.log"
    process = spawn_logged(command, log_path, child_env(), cwd)
    target = Target(name=name, base_url=f"http://127.0.0.1:{port}", host="127.0.0.1",
                    port=port, ws_path=ws_path, framing=framing, process=process,
                    log_path=log_path, notes=[PEER_NOTE])
    try:
        await wait_ready(target.base_url, 60.0, process, log_path)
        yield target
    finally:
        await asyncio.to_thread(stop_process, process, 10.0)
        shutil.rmtree(log_path.parent, ignore_errors=True)


@contextlib.asynccontextmanager
async def start_peer(name: str) -> AsyncIterator[Target]:
    """Start peer ``name`` on a free loopback port; stop it (and its helpers) after."""
    if name == "node-ws":
        directory = await asyncio.to_thread(install_node_ws)
        port = free_port()
        node = shutil.which("node") or "node"
        async with _process_target(name, [node, "server.js", str(port), "127.0.0.1"], port,
                                   directory, "hearth", "/gateway") as target:
            yield target
        return
    if name == "python-socketio":
        if importlib.util.find_spec("socketio") is None:
            raise TargetError("--peer python-socketio needs the optional extra: "
                              "pip install 'hearth[loadtest]' (python-socketio)")
        redis_server = shutil.which("redis-server")
        if not redis_server:
            raise TargetError("--peer python-socketio needs redis-server on PATH "
                              "(its Redis manager)")
        redis_port = free_port()
        redis = spawn_logged([redis_server, "--port", str(redis_port), "--bind",
                              "127.0.0.1", "--save", "", "--appendonly", "no"], None,
                             child_env())
        try:
            port = free_port()
            command = [sys.executable, "-m", "loadtest.peers.socketio_peer", "--port",
                       str(port), "--redis", f"redis://127.0.0.1:{redis_port}"]
            async with _process_target(name, command, port, None, "socketio",
                                       "/socket.io/?EIO=4&transport=websocket") as target:
                target.notes.append("python-socketio with AsyncRedisManager (redis-server "
                                    f"on 127.0.0.1:{redis_port}); dispatches carry no "
                                    "per-session s (one room emit)")
                yield target
        finally:
            await asyncio.to_thread(stop_process, redis, 5.0)
        return
    raise TargetError(f"unknown peer {name!r}")
