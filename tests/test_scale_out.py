"""Several real gateway processes sharing one PostgreSQL and one Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator

import aiohttp
import psutil
import pytest

from tests.conftest import (
    TEST_SECRET,
    RunningServer,
    free_port,
    server_nodes,
    start_server_process,
    stop_server_process,
)
from tests.helpers import GatewayClient, register
from tests.redis_fixture import RedisServer


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def three_nodes(database_url: str, redis_url: str) -> Iterator[list[RunningServer]]:
    with server_nodes(database_url, 3, HEARTH_REDIS_URL=redis_url) as nodes:
        yield nodes


async def test_message_on_node_a_reaches_b_and_c_in_order_once(
        three_nodes: list[RunningServer], http: aiohttp.ClientSession) -> None:
    a, b, c = three_nodes
    people = [await register(http, a.url) for _ in range(3)]
    clients = [await GatewayClient.identified(http, node.ws_url, person["access_token"])
               for node, person in zip(three_nodes, people, strict=True)]
    general = clients[0].channel_named("general")["id"]
    sent = [(await clients[0].ok("send_message", channel_id=general,
                                 content=f"m{i}"))["message"]["seq"] for i in range(50)]
    for receiver in clients[1:]:
        got = [(await receiver.event("message_create"))["message"]["seq"] for _ in range(50)]
        assert got == sent
        await receiver.no_event("message_create")
    # A typing indicator and an edit cross nodes too.
    await clients[1].ok("typing", channel_id=general)
    assert (await clients[2].event("typing_start"))["user"]["id"] == people[1]["user"]["id"]
    for node in (b, c):
        async with http.get(f"{node.url}/metrics") as reply:
            text = await reply.text()
            assert "hearth_deliveries_total" in text


def _start_supervisor(env: dict[str, str], port: int, workers: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(port),
         "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _children(pid: int) -> list[int]:
    """The supervisor's gateway processes (it also owns the node's media workers)."""
    return [child.pid for child in psutil.Process(pid).children()
            if child.status() != psutil.STATUS_ZOMBIE
            and "server.cli" in " ".join(child.cmdline())]


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        assert proc.poll() is None, "supervisor exited"
        time.sleep(0.1)
    raise TimeoutError(url)


async def test_workers_share_one_port_and_a_dead_worker_is_replaced(
        database_url: str, redis_url: str, http: aiohttp.ClientSession) -> None:
    port = free_port()
    env = dict(os.environ, HEARTH_DATABASE_URL=database_url, HEARTH_SECRET=TEST_SECRET,
               HEARTH_REDIS_URL=redis_url, HEARTH_ARGON2_TIME_COST="1",
               HEARTH_ARGON2_MEMORY_KIB="8192", HEARTH_LOG_LEVEL="WARNING",
               HEARTH_DATA_DIR=tempfile.mkdtemp(prefix="hearth-data-"))
    supervisor = _start_supervisor(env, port, workers=2)
    url, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/gateway"
    try:
        await asyncio.to_thread(_wait_ready, url, supervisor)
        people = [await register(http, url) for _ in range(8)]
        clients = [await GatewayClient.identified(http, ws_url, p["access_token"])
                   for p in people]
        general = clients[0].channel_named("general")["id"]
        await clients[0].ok("send_message", channel_id=general, content="to all workers")
        for client in clients[1:]:
            assert (await client.event("message_create"))["message"]["content"] == \
                "to all workers"
        workers = _children(supervisor.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            alive = _children(supervisor.pid)
            if len(alive) == 2 and workers[0] not in alive:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the dead worker was not replaced")
        # New connections work whichever worker the kernel picks.
        fresh = [await GatewayClient.identified(http, ws_url, p["access_token"])
                 for p in people[:4]]
        await fresh[0].ok("send_message", channel_id=general, content="after the crash")
        for client in fresh[1:]:
            assert (await client.event("message_create"))["message"]["content"] == \
                "after the crash"
    finally:
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(timeout=20)
        except subprocess.TimeoutExpired:
            supervisor.kill()
            supervisor.wait()


async def test_kill_9_under_traffic_then_resume_on_another_node(
        database_url: str, redis_url: str, http: aiohttp.ClientSession) -> None:
    """Clients of a node killed with SIGKILL resume on another node: what each received
    before and after has no gap and no duplicate, and every acknowledged message is in
    PostgreSQL."""
    node_a = start_server_process(database_url, HEARTH_REDIS_URL=redis_url)
    node_b = start_server_process(database_url, HEARTH_REDIS_URL=redis_url)
    try:
        sender_account = await register(http, node_b.url)
        readers = [await register(http, node_a.url) for _ in range(3)]
        sender = await GatewayClient.identified(http, node_b.ws_url,
                                                sender_account["access_token"])
        clients = [await GatewayClient.identified(http, node_a.ws_url, r["access_token"])
                   for r in readers]
        general = sender.channel_named("general")["id"]
        acked: list[int] = []
        received: list[list[int]] = [[] for _ in clients]

        async def send(n: int) -> None:
            for i in range(n):
                reply = await sender.ok("send_message", channel_id=general, content=f"m{i}",
                                        nonce=f"kill-{len(acked)}")
                acked.append(reply["message"]["seq"])

        async def drain(index: int, until: int) -> None:
            client = clients[index]
            while len(received[index]) < until:
                event = await client.event("message_create", timeout=10)
                received[index].append(event["message"]["seq"])

        await send(20)
        await asyncio.gather(*[drain(i, 10) for i in range(len(clients))])
        sending = asyncio.create_task(send(40))
        await asyncio.sleep(0.3)
        assert isinstance(node_a.process, subprocess.Popen)
        node_a.process.send_signal(signal.SIGKILL)  # mid-traffic, no goodbye
        node_a.process.wait()
        # Each reader reconnects to node B and resumes where its socket stopped.
        for index, client in enumerate(clients):
            session_id, seq = client.ready["session_id"], client.last_seq
            pending = [f["d"]["message"]["seq"] for f in client.backlog
                       if f.get("op") == "dispatch" and f["d"].get("t") == "message_create"]
            received[index].extend(pending)
            again = await GatewayClient.connect(http, node_b.ws_url)
            again.continue_from(client)
            await again.send(client.resume_frame(readers[index]["access_token"],
                                                 session_id, seq))
            resumed = await again.recv()
            assert resumed["op"] == "resumed", resumed
            clients[index] = again
        await sending
        await asyncio.gather(*[drain(i, len(acked)) for i in range(len(clients))])
        for index, seqs in enumerate(received):
            assert seqs == sorted(seqs), f"reader {index} out of order"
            assert len(seqs) == len(set(seqs)), f"reader {index} got duplicates"
            assert seqs == acked, f"reader {index}: missing {sorted(set(acked) - set(seqs))}"
        for client in clients:
            await client.no_event("message_create", wait=0.5)
        # Every acknowledged message is in PostgreSQL.
        history = await sender.ok("fetch_history", channel_id=general, limit=100)
        assert [m["seq"] for m in history["messages"]] == acked
    finally:
        stop_server_process(node_a)
        stop_server_process(node_b)


async def test_redis_restart_under_traffic_loses_nothing_acknowledged(
        database_url: str, redis_server: RedisServer, http: aiohttp.ClientSession) -> None:
    """The bus reconnects by itself; messages published while Redis was away reach the
    other node's clients from PostgreSQL, in order, once."""
    node_a = start_server_process(database_url, HEARTH_REDIS_URL=redis_server.url,
                                  HEARTH_LOG_LEVEL="INFO")
    node_b = start_server_process(database_url, HEARTH_REDIS_URL=redis_server.url,
                                  HEARTH_LOG_LEVEL="INFO")
    try:
        sender_account = await register(http, node_a.url)
        reader_account = await register(http, node_b.url)
        sender = await GatewayClient.identified(http, node_a.ws_url,
                                                sender_account["access_token"])
        reader = await GatewayClient.identified(http, node_b.ws_url,
                                                reader_account["access_token"])
        general = sender.channel_named("general")["id"]
        acked: list[int] = []

        async def send(n: int) -> None:
            for _ in range(n):
                reply = await sender.request("send_message", channel_id=general,
                                             content=f"r{len(acked)}",
                                             nonce=f"r-{len(acked)}", timeout=30)
                assert reply["op"] == "ok", reply
                acked.append(reply["data"]["message"]["seq"])

        await send(5)
        await asyncio.to_thread(redis_server.stop)
        outage = asyncio.create_task(send(5))  # acknowledged once committed
        await asyncio.sleep(1.0)
        await asyncio.to_thread(redis_server.start)
        await outage
        await send(5)
        got: list[int] = []
        try:
            while len(got) < len(acked):
                got.append((await reader.event("message_create", timeout=15))["message"]["seq"])
        except TimeoutError:
            raise AssertionError(f"received {got}, acknowledged {acked}") from None
        assert got == acked
        await reader.no_event("message_create", wait=0.5)
    finally:
        stop_server_process(node_a)
        stop_server_process(node_b)


async def test_draining_node_tells_clients_to_reconnect(
        database_url: str, http: aiohttp.ClientSession) -> None:
    """SIGTERM (a deploy): clients get a ``reconnect`` frame with a jittered delay, then
    close 1001, and may resume elsewhere."""
    node = start_server_process(database_url)
    try:
        account = await register(http, node.url)
        client = await GatewayClient.identified(http, node.ws_url, account["access_token"])
        assert isinstance(node.process, subprocess.Popen)
        node.process.send_signal(signal.SIGTERM)
        frame = await client.recv(timeout=10)
        assert frame["op"] == "reconnect" and 0 <= frame["retry_after_ms"] <= 5000
        assert await client.closed(timeout=10) == 1001
        assert await asyncio.to_thread(node.process.wait, 20) == 0
    finally:
        stop_server_process(node)
