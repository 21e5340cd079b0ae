"""Voice rooms across gateway processes and nodes, end to end (issue #6): real
``hearth serve`` processes, real Redis, real media workers, real aiortc participants
on 127.0.0.1 (``media_ice=loopback``).

* ``hearth serve --workers 2``: the supervisor owns the media worker; two members
  connected to DIFFERENT gateway processes (found from the kernel's socket table) hear
  each other's tone; every ``voice_speaking`` change reaches each client once; a
  SIGKILL of the media worker disconnects both (``media``), the supervisor restarts it,
  and a re-join works (they hear each other again).
* two ``hearth serve`` nodes with ``media_listen``: a member on each node, one room on
  one worker reached over authenticated TCP; each hears the other.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import psutil
import pytest

from rooms.media import passthrough
from tests.conftest import RunningServer, server_nodes
from tests.helpers import GatewayClient
from tests.media_peers import ClientPeer
from tests.mod_helpers import make_crew
from tests.test_voice import create_channel

pytestmark = pytest.mark.slow

TONES = [440.0, 660.0]
MEDIA_ENV = {"HEARTH_MEDIA_WORKERS": "1", "HEARTH_MEDIA_ICE": "loopback"}


@pytest.fixture(autouse=True)
def loopback_ice() -> Iterator[None]:
    passthrough.set_host_address_mode("loopback")
    yield
    passthrough.set_host_address_mode("default")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def children(server: RunningServer, mark: str) -> list[psutil.Process]:
    proc = server.process
    assert isinstance(proc, subprocess.Popen)
    return [c for c in psutil.Process(proc.pid).children()
            if mark in " ".join(c.cmdline())]


def serving_pid(client: GatewayClient, gateways: list[psutil.Process]) -> int | None:
    """Which gateway process holds this client's TCP connection."""
    port = client.ws.get_extra_info("sockname")[1]
    for gw in gateways:
        for conn in gw.net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == port:
                return int(gw.pid)
    return None


async def client_on(http: aiohttp.ClientSession, server: RunningServer, token: str,
                    gateways: list[psutil.Process], avoid: int | None) -> tuple[GatewayClient, int]:
    """A client identified on a gateway process other than ``avoid`` (the kernel picks
    the process per connection: retry until it is another one)."""
    for _ in range(40):
        client = await GatewayClient.identified(http, server.ws_url, token)
        pid = serving_pid(client, gateways)
        if pid is not None and pid != avoid:
            return client, pid
        await client.ws.close()
    raise AssertionError("never landed on another gateway process")


async def join(client: GatewayClient, channel_id: int, peer: ClientPeer,
               timeout: float = 5.0) -> dict[str, Any]:
    reply = await client.request("voice_join", timeout=timeout, channel_id=channel_id,
                                 sdp=await peer.offer())
    assert reply["op"] == "ok", reply
    await peer.accept(reply["data"]["sdp"])
    return dict(reply["data"])


async def hear_each_other(peers: list[ClientPeer], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if peers[0].heard(1.0, TONES) == {660.0} and peers[1].heard(1.0, TONES) == {440.0}:
            return
        await asyncio.sleep(0.2)
    raise AssertionError([p.heard(1.0, TONES) for p in peers])


async def collect(client: GatewayClient, t: str, seconds: float) -> list[dict[str, Any]]:
    """Every ``t`` event seen so far and during the next ``seconds`` (in order)."""
    found = [f["d"] for f in client.backlog if f.get("op") == "dispatch"
             and f["d"].get("t") == t]
    client.backlog = [f for f in client.backlog if not (
        f.get("op") == "dispatch" and f["d"].get("t") == t)]
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            frame = await client.recv(left)
        except TimeoutError:
            break
        if frame.get("op") == "dispatch" and frame["d"].get("t") == t:
            found.append(frame["d"])
        else:
            client.backlog.append(frame)
    return found


async def test_workers_2_share_the_media_worker(database_url: str, redis_url: str,
                                                http: aiohttp.ClientSession) -> None:
    peers: list[ClientPeer] = []
    with server_nodes(database_url, 1, HEARTH_REDIS_URL=redis_url, HEARTH_WORKERS="2",
                      **MEDIA_ENV) as (server,):
        try:
            crew = await make_crew(http, server.url, server.ws_url, members=2, mods=0)
            channel = (await create_channel(http, server, crew, "lounge", "voice"))["id"]
            gateways = children(server, "server.cli")
            [media] = children(server, "rooms.media.worker")
            assert len(gateways) == 2
            a, pid_a = await client_on(http, server, crew.members[0].token, gateways, None)
            b, pid_b = await client_on(http, server, crew.members[1].token, gateways, pid_a)
            assert pid_a != pid_b
            peers += [ClientPeer(440.0, slots=2), ClientPeer(660.0, slots=2)]
            await join(a, channel, peers[0])
            await join(b, channel, peers[1])
            await hear_each_other(peers)

            # voice_speaking: every change once per client (two gateway processes
            # each publishing would show each change twice in a row)
            seen = [await collect(c, "voice_speaking", 3.0) for c in (a, b)]
            for events in seen:
                ids = [e["user_ids"] for e in events]
                assert ids, "no voice_speaking at all"
                assert all(x != y for x, y in itertools.pairwise(ids)), ids
                assert ids[-1] == sorted([crew.members[0].id, crew.members[1].id])
            assert [e["user_ids"] for e in seen[0]] == [e["user_ids"] for e in seen[1]]

            # SIGKILL of the media worker: both are out cleanly, the supervisor
            # restarts it, and joining again works
            os.kill(media.pid, signal.SIGKILL)
            for c in (a, b):
                event = await c.event("voice_disconnected", timeout=10)
                assert event["reason"] == "media" and event["channel_id"] == channel
            states = await a.ok("voice_fetch_states", channel_id=channel)
            assert states["participants"] == []
            for p in peers:
                await p.close()
            peers.clear()
            peers += [ClientPeer(440.0, slots=2), ClientPeer(660.0, slots=2)]
            deadline = time.monotonic() + 30
            while True:  # the restarted worker needs a moment to import aiortc
                reply = await a.request("voice_join", timeout=15, channel_id=channel,
                                        sdp=await peers[0].offer())
                if reply["op"] == "ok" or time.monotonic() > deadline:
                    break
                assert reply["code"] == "voice_unavailable", reply
                await peers[0].close()
                peers[0] = ClientPeer(440.0, slots=2)
                await asyncio.sleep(0.5)
            assert reply["op"] == "ok", reply
            await peers[0].accept(reply["data"]["sdp"])
            await join(b, channel, peers[1], timeout=15)
            [restarted] = children(server, "rooms.media.worker")
            assert restarted.pid != media.pid
            await hear_each_other(peers)
        finally:
            for p in peers:
                await p.close()


async def test_two_nodes_one_room_over_tcp(database_url: str, redis_url: str,
                                           http: aiohttp.ClientSession) -> None:
    peers: list[ClientPeer] = []
    with server_nodes(database_url, 2, HEARTH_REDIS_URL=redis_url,
                      HEARTH_MEDIA_LISTEN="127.0.0.1:0", **MEDIA_ENV) as (one, two):
        try:
            crew = await make_crew(http, one.url, one.ws_url, members=2, mods=0)
            channel = (await create_channel(http, one, crew, "lounge", "voice"))["id"]
            a = await GatewayClient.identified(http, one.ws_url, crew.members[0].token)
            b = await GatewayClient.identified(http, two.ws_url, crew.members[1].token)
            peers += [ClientPeer(440.0, slots=2), ClientPeer(660.0, slots=2)]
            await join(a, channel, peers[0])
            await join(b, channel, peers[1], timeout=15)
            await hear_each_other(peers)
            # one room on one worker: node two's own worker holds nothing
            [worker_one] = children(one, "rooms.media.worker")
            [worker_two] = children(two, "rooms.media.worker")
            assert worker_one.pid != worker_two.pid
            seen = await collect(b, "voice_speaking", 2.0)
            ids = [e["user_ids"] for e in seen]
            assert all(x != y for x, y in itertools.pairwise(ids)), ids
        finally:
            for p in peers:
                await p.close()
