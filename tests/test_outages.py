"""PostgreSQL and Redis outages: a retryable error, bounded waits, quiet logs, fast /readyz,
and a drain whose clients are back within a second.

The outage tests run real server processes against a PostgreSQL or a Redis of their own,
which they stop and start again; the server's log is captured and counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from persistence.database import Database, DatabaseUnavailable
from persistence.embedded import EmbeddedPostgres
from rooms.realtime.outages import CircuitBreaker, ThrottledLog, outage_of, unavailable
from tests.conftest import RunningServer, start_server_process, stop_server_process
from tests.helpers import GatewayClient, bearer, register
from tests.redis_fixture import RedisServer

# ------------------------------------------------------------------------ unit: helpers


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttled_log_writes_one_line_per_cause_per_interval_with_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    throttled = ThrottledLog(logging.getLogger("hearth.test.outages"), interval_s=10,
                             clock=clock)
    with caplog.at_level(logging.WARNING, logger="hearth.test.outages"):
        assert throttled.warning("database", "send failed: %s", "refused")
        for _ in range(299):  # a refused send every 10 ms for 3 s: counted, not logged
            clock.now += 0.01
            assert not throttled.warning("database", "send failed: %s", "refused")
        assert throttled.warning("redis", "presence failed")  # another cause: its own line
        clock.now += 10
        assert throttled.warning("database", "send failed: %s", "refused")
        throttled.resolved("database")
        throttled.resolved("database")  # over already: nothing more
        throttled.resolved("never-seen")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "send failed: refused",
        "presence failed",
        "send failed: refused (299 more like this in the last 13 s)",
        "database: recovered after 13.0 s (301 occurrences)",
    ]
    assert all(r.exc_info is None for r in caplog.records)
    assert throttled.active() == ["redis"]


def test_throttled_log_keeps_the_traceback_of_a_bug_once_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    throttled = ThrottledLog(logging.getLogger("hearth.test.outages"), clock=clock)
    with caplog.at_level(logging.WARNING, logger="hearth.test.outages"):
        for _ in range(5):
            try:
                raise KeyError("bug")
            except KeyError as exc:
                assert throttled.failure(exc, "request send_message") is None
        down = DatabaseUnavailable("cannot connect to PostgreSQL: ConnectionRefusedError")
        assert throttled.failure(down, "request send_message") == "database"
    assert [(r.levelname, r.exc_info is not None) for r in caplog.records] == [
        ("ERROR", True), ("WARNING", False)]
    assert "the database is unavailable" in caplog.records[1].getMessage()


def test_outage_of_tells_store_outages_from_bugs() -> None:
    assert outage_of(DatabaseUnavailable("no socket")) == "database"
    assert outage_of(asyncpg.exceptions.ConnectionDoesNotExistError("closed")) == "database"
    assert outage_of(asyncpg.exceptions.CannotConnectNowError("starting up")) == "database"
    assert outage_of(asyncpg.exceptions.AdminShutdownError("terminating")) == "database"
    assert outage_of(RedisConnectionError("Error 111 connecting")) == "redis"
    wrapped = RuntimeError("could not store")
    wrapped.__cause__ = asyncpg.exceptions.ConnectionDoesNotExistError("closed")
    assert outage_of(wrapped) == "database"
    # leaving a transaction whose connection died: raised while handling the real error
    assert outage_of(asyncpg.InterfaceError("cannot call Transaction.__aexit__(): the "
                                            "underlying connection is closed")) == "database"
    assert outage_of(asyncpg.InterfaceError("cannot perform operation: another operation "
                                            "is in progress")) is None  # a bug
    assert outage_of(asyncpg.exceptions.UniqueViolationError("dup")) is None
    assert outage_of(KeyError("bug")) is None
    assert outage_of(OSError("a socket somewhere")) is None  # not said to be a store
    handling = ValueError("raised while handling")
    handling.__context__ = RedisConnectionError("down")  # context is not a cause
    assert outage_of(handling) is None
    error = unavailable("database", "could not store the message")
    assert error.code.value == "unavailable" and error.retry_after_ms is not None
    assert 500 <= error.retry_after_ms <= 1500


def test_circuit_breaker_skips_the_store_for_a_growing_pause_after_failures() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(pause_s=1.0, max_pause_s=3.0, clock=clock)
    assert not breaker.is_open()
    breaker.trip()
    assert breaker.is_open()
    clock.now += 1.01
    assert not breaker.is_open()  # try the store again...
    breaker.trip()  # ...it fails again: twice the pause
    clock.now += 1.5
    assert breaker.is_open()
    clock.now += 0.51
    assert not breaker.is_open()
    breaker.trip()
    breaker.trip()  # at most max_pause_s
    clock.now += 3.01
    assert not breaker.is_open()
    breaker.reset()  # a success: the next failure pauses briefly again
    breaker.trip()
    clock.now += 1.01
    assert not breaker.is_open()
    assert breaker.skipped == 2


async def test_database_ping_answers_at_once_while_the_pool_is_saturated(
        database_url: str) -> None:
    """Readiness must not wait in the pool's queue: with every pooled connection held
    (a resume storm), ping answers on its own connection, well inside the check's
    budget; after the probe connection is killed it reconnects."""
    db = await Database.connect(database_url, min_size=1, max_size=1)
    try:
        async with db.connection():  # the pool's only connection, held
            started = time.monotonic()
            assert await db.ping()
            assert await db.ping()
            assert time.monotonic() - started < Database.PROBE_TIMEOUT_S
            assert db._probe is not None
            db._probe.terminate()  # as if PostgreSQL dropped it
            assert await db.ping()  # found closed: reconnected
    finally:
        await db.close()
    assert not await db.ping()


# --------------------------------------------------------------- a PostgreSQL to stop


class OwnPostgres:
    """A PostgreSQL of this test's own (pgserver's binaries; a unix socket in its data
    directory, so the DSN survives a restart), stopped the way an operator's
    ``pg_ctl stop -m immediate`` does and started again."""

    def __init__(self, data_dir: Path) -> None:
        self.embedded = EmbeddedPostgres(data_dir)
        self.data_dir = data_dir
        self.dsn = ""
        # pgserver runs PostgreSQL as its own system user when we are root
        self._user = "pgserver" if os.geteuid() == 0 else None

    def start(self) -> str:
        self.dsn = self.embedded.start()
        return self.dsn

    def _pg_ctl(self, *args: str) -> None:
        # loaded (its warnings silenced) by EmbeddedPostgres.start; the package makes its
        # command functions at import time, so they are reached through their factory
        from pgserver._commands import create_command_function

        pg_ctl = create_command_function("pg_ctl")
        pg_ctl(list(args), pgdata=self.data_dir, user=self._user, timeout=30)

    def stop_immediately(self) -> None:
        self._pg_ctl("-w", "-m", "immediate", "stop")

    def start_again(self) -> None:
        socket_dir = parse_qs(urlsplit(self.dsn).query)["host"][0]
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {socket_dir}",
                     "-l", str(self.data_dir / "log"), "start")

    def close(self) -> None:
        try:  # pgserver stops only the postmaster it started, not a restarted one
            self._pg_ctl("-w", "-m", "fast", "stop")
        except subprocess.CalledProcessError:
            pass  # not running
        self.embedded.stop()


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    pg = OwnPostgres(Path(tempfile.mkdtemp(prefix="hearth-own-pg-")) / "pg")
    pg.start()
    try:
        yield pg
    finally:
        pg.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _node(database_url: str, **env: str) -> tuple[RunningServer, Path]:
    """A server process and the file its log goes to."""
    data_dir = Path(tempfile.mkdtemp(prefix="hearth-data-"))
    node = start_server_process(database_url, HEARTH_DATA_DIR=str(data_dir),
                                HEARTH_LOG_LEVEL="INFO", **env)
    return node, data_dir / "server.log"


async def _send_until_acked(client: GatewayClient, channel_id: int, nonce: str,
                            refusals: list[dict[str, Any]]) -> int:
    """Send with ``nonce`` until acknowledged, honouring ``unavailable``; the seq."""
    while True:
        reply = await client.request("send_message", channel_id=channel_id,
                                     content=nonce, nonce=nonce, timeout=30)
        if reply["op"] == "ok":
            return int(reply["data"]["message"]["seq"])
        assert reply["code"] == "unavailable", reply
        refusals.append(reply)
        await asyncio.sleep(reply["retry_after_ms"] / 1000)


async def test_postgres_stopped_and_restarted_under_traffic(
        own_postgres: OwnPostgres, http: aiohttp.ClientSession) -> None:
    """PostgreSQL stopped immediately mid-traffic and started again: senders are told
    ``unavailable`` (retryable, with ``retry_after_ms``; REST 503 + Retry-After), every
    acknowledged message is stored and delivered once, in order, and the log holds a
    handful of lines and no traceback."""
    node, log_path = _node(own_postgres.dsn)
    try:
        people = [await register(http, node.url) for _ in range(4)]
        clients = [await GatewayClient.identified(http, node.ws_url, p["access_token"])
                   for p in people]
        reader, senders = clients[0], clients[1:]
        general = reader.channel_named("general")["id"]
        acked: list[int] = []
        refusals: list[dict[str, Any]] = []
        stop_sending = asyncio.Event()

        async def send_forever(index: int, client: GatewayClient) -> None:
            n = 0
            while not stop_sending.is_set():
                acked.append(await _send_until_acked(client, general, f"s{index}-{n}",
                                                     refusals))
                n += 1

        async def wait_for(condition: Any, what: str, timeout: float = 30) -> None:
            deadline = time.monotonic() + timeout
            while not condition():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.02)

        sending = [asyncio.create_task(send_forever(i, c)) for i, c in enumerate(senders)]
        try:
            await wait_for(lambda: len(acked) >= 15, "traffic")
            await asyncio.to_thread(own_postgres.stop_immediately)
            await wait_for(lambda: len(refusals) >= 9, "refused sends")
            async with http.get(f"{node.url}/api/v1/channels/{general}/messages",
                                headers=bearer(people[0]["access_token"])) as reply:
                body = await reply.json()
                assert reply.status == 503, body
                assert body["error"]["code"] == "unavailable"
                assert 1 <= int(reply.headers["Retry-After"]) <= 2
            # identify needs the database: a resumable close that says "try again later"
            newcomer = await GatewayClient.connect(http, node.ws_url)
            await newcomer.send({"op": "identify", "token": people[0]["access_token"]})
            assert await newcomer.closed(timeout=10) == 1013
            await asyncio.sleep(2.0)  # an outage of a few seconds under traffic
            await asyncio.to_thread(own_postgres.start_again)
            recovered_at = len(acked)
            await wait_for(lambda: len(acked) >= recovered_at + 15, "sends after restart")
        finally:
            stop_sending.set()
            await asyncio.gather(*sending)
        assert all(500 <= r["retry_after_ms"] <= 1500 for r in refusals)
        # Every acknowledged message reaches the reader once, in seq order...
        got: list[int] = []
        while len(got) < len(acked):
            got.append((await reader.event("message_create", timeout=15))["message"]["seq"])
        assert got == sorted(acked) and len(set(got)) == len(got)
        await reader.no_event("message_create", wait=0.3)
        # ...and is in PostgreSQL.
        async with http.get(f"{node.url}/api/v1/channels/{general}/messages?limit=100",
                            headers=bearer(people[0]["access_token"])) as reply:
            stored = [m["seq"] for m in (await reply.json())["messages"]]
        assert set(acked) <= set(stored)
    except BaseException:
        print(log_path.read_text(errors="replace")[-8000:])  # shown with the failure
        raise
    finally:
        stop_server_process(node)
    log_text = log_path.read_text(errors="replace")
    assert "Traceback" not in log_text, log_text[-4000:]
    lines = [line for line in log_text.splitlines() if "unavailable" in line]
    # One line per store per interval and logger, not one per refused send.
    assert 1 <= len(lines) <= 8, f"{len(refusals)} refusals, log lines:\n" + "\n".join(lines)


# ------------------------------------------------------------------ Redis outage, /readyz


async def test_readyz_and_sends_stay_fast_while_redis_is_down(
        database_url: str, redis_server: RedisServer, http: aiohttp.ClientSession) -> None:
    """With Redis stopped, /readyz answers within 100 ms (503 once the checks see it),
    sends are acknowledged in well under the bus's 5 s publish timeout, and presence and
    raid counters do not log a traceback per tick."""
    node, log_path = _node(database_url, HEARTH_REDIS_URL=redis_server.url)
    try:
        account = await register(http, node.url)
        client = await GatewayClient.identified(http, node.ws_url, account["access_token"])
        general = client.channel_named("general")["id"]
        await client.ok("send_message", channel_id=general, content="before")

        async def readyz() -> tuple[int, float, dict[str, Any]]:
            started = time.monotonic()
            async with http.get(f"{node.url}/readyz",
                                timeout=aiohttp.ClientTimeout(total=2)) as reply:
                body = await reply.json()
            return reply.status, time.monotonic() - started, body

        status, _, _ = await readyz()
        assert status == 200
        await asyncio.to_thread(redis_server.stop)
        latencies: list[float] = []
        ack_times: list[float] = []
        statuses: list[int] = []
        outage_ends = time.monotonic() + 6

        async def poll_readyz() -> None:  # a load balancer's probe, every 50 ms
            while time.monotonic() < outage_ends:
                status, elapsed, body = await readyz()
                latencies.append(elapsed)
                statuses.append(status)
                if status == 503:
                    assert body["checks"]["bus"] is False, body
                await asyncio.sleep(0.05)

        async def send() -> None:
            n = 0
            while time.monotonic() < outage_ends:
                started = time.monotonic()
                reply = await client.request("send_message", channel_id=general,
                                             content=f"during {n}", nonce=f"during-{n}",
                                             timeout=10)
                assert reply["op"] == "ok", reply  # PostgreSQL is up: committed means ok
                ack_times.append(time.monotonic() - started)
                n += 1

        await asyncio.gather(poll_readyz(), send())
        assert 503 in statuses, "readyz never reported the bus down"
        assert statuses[-1] == 503, statuses
        assert len(latencies) > 30 and max(latencies) < 0.1, latencies
        assert max(ack_times) < 1.5, ack_times  # the ack waits at most ~0.5 s for the bus
        await asyncio.to_thread(redis_server.start)
        deadline = time.monotonic() + 15
        while (await readyz())[0] != 200:
            assert time.monotonic() < deadline, "readyz did not recover"
            await asyncio.sleep(0.1)
    finally:
        stop_server_process(node)
    log_text = log_path.read_text(errors="replace")
    assert log_text.count("Traceback") <= 1, log_text[-4000:]
    for what in ("presence", "raid counters"):
        lines = [line for line in log_text.splitlines() if what in line]
        assert len(lines) <= 3, "\n".join(lines)


async def test_sends_and_readyz_stay_fast_while_redis_hangs(
        database_url: str, redis_server: RedisServer, http: aiohttp.ClientSession) -> None:
    """A Redis that hangs (SIGSTOP: connections open, no replies) holds a send at most
    about a second (the rate limit fails open after its 1 s timeout, then skips Redis
    for a second; the ack waits at most 0.5 s for the bus), and /readyz still answers
    at once."""
    node, _ = _node(database_url, HEARTH_REDIS_URL=redis_server.url)
    try:
        account = await register(http, node.url)
        client = await GatewayClient.identified(http, node.ws_url, account["access_token"])
        general = client.channel_named("general")["id"]
        await client.ok("send_message", channel_id=general, content="before")
        redis_server.pause()
        try:
            ack_times: list[float] = []
            for n in range(6):
                started = time.monotonic()
                reply = await client.request("send_message", channel_id=general,
                                             content=f"hung {n}", nonce=f"hung-{n}",
                                             timeout=15)
                assert reply["op"] == "ok", reply
                ack_times.append(time.monotonic() - started)
            started = time.monotonic()
            async with http.get(f"{node.url}/readyz",
                                timeout=aiohttp.ClientTimeout(total=2)) as ready:
                assert time.monotonic() - started < 0.1
                assert ready.status == 503  # the checks timed out meanwhile
        finally:
            redis_server.resume()
        assert max(ack_times) < 2.0, ack_times
        assert statistics.median(ack_times) < 1.0, ack_times
    finally:
        stop_server_process(node)


# ------------------------------------------------------------------------------ drain


async def test_drained_nodes_clients_are_back_within_a_second(
        database_url: str, redis_url: str, http: aiohttp.ClientSession) -> None:
    """SIGTERM one of two nodes: every client follows ``reconnect.retry_after_ms`` and
    resumes on the other node; half of them are back within a second."""
    node_a = start_server_process(database_url, HEARTH_REDIS_URL=redis_url)
    node_b = start_server_process(database_url, HEARTH_REDIS_URL=redis_url)
    try:
        accounts = [await register(http, node_a.url) for _ in range(12)]
        clients = [await GatewayClient.identified(http, node_a.ws_url, a["access_token"])
                   for a in accounts]

        async def follow(client: GatewayClient, token: str) -> tuple[int, float]:
            frame = await client.recv(timeout=10)
            while frame["op"] == "dispatch":
                frame = await client.recv(timeout=10)
            told_at = time.monotonic()
            assert frame["op"] == "reconnect", frame
            await asyncio.sleep(frame["retry_after_ms"] / 1000)
            again = await GatewayClient.connect(http, node_b.ws_url)
            await again.send({"op": "resume", "token": token,
                              "session_id": client.ready["session_id"],
                              "seq": client.last_seq})
            resumed = await again.recv(timeout=10)
            assert resumed["op"] == "resumed", resumed
            await again.close()
            return frame["retry_after_ms"], time.monotonic() - told_at

        following = [asyncio.create_task(follow(c, a["access_token"]))
                     for c, a in zip(clients, accounts, strict=True)]
        assert isinstance(node_a.process, subprocess.Popen)
        node_a.process.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*following)
        assert all(0 <= delay <= 1000 for delay, _ in results), results
        back = [elapsed for _, elapsed in results]
        assert statistics.median(back) <= 1.0, back
        assert max(back) <= 2.0, back
        assert await asyncio.to_thread(node_a.process.wait, 20) == 0
    finally:
        stop_server_process(node_a)
        stop_server_process(node_b)


# ------------------------------------------- PostgreSQL outage: the REST error model


ORIGIN = "https://app.example"


async def _assert_unavailable_with_cors(http: aiohttp.ClientSession, method: str, url: str,
                                        **kwargs: Any) -> None:
    async with http.request(method, url, headers={"Origin": ORIGIN, **kwargs.pop(
            "headers", {})}, **kwargs) as reply:
        body = await reply.json()
        assert reply.status == 503, body
        assert body["error"]["code"] == "unavailable", body
        assert 1 <= int(reply.headers["Retry-After"]) <= 2
        # the error middleware answers inside the CORS middleware: a browser can read it
        assert reply.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert reply.headers["X-Request-Id"]


async def test_a_postgres_outage_is_a_503_with_cors_on_the_gateway_and_an_only_app(
        own_postgres: OwnPostgres, http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL stopped: REST requests of the gateway app and of a ``--only`` sidecar
    app are answered by the one error middleware, 503 ``unavailable`` with Retry-After
    and CORS headers, logged without a traceback (not aiohttp's text 500)."""
    from aiohttp import web

    from server.config import load_config
    from server.sidecar_host import build_sidecar_app
    from tests.conftest import TEST_SECRET, app_server, free_port

    caplog.set_level(logging.INFO)
    config = load_config(overrides={"database_url": own_postgres.dsn, "secret": TEST_SECRET,
                                    "allowed_origins": [ORIGIN],
                                    "data_dir": tempfile.mkdtemp(prefix="hearth-data-")},
                         environ={})
    sidecar_runner = web.AppRunner(build_sidecar_app(config, ["activity"]),
                                   handle_signals=False, shutdown_timeout=2)
    await sidecar_runner.setup()
    port = free_port()
    await web.TCPSite(sidecar_runner, "127.0.0.1", port).start()
    sidecar_url = f"http://127.0.0.1:{port}/api/v1/communities/1/members/1/activity"
    try:
        async with app_server(own_postgres.dsn, allowed_origins=[ORIGIN]) as node:
            await asyncio.to_thread(own_postgres.stop_immediately)
            try:
                # the first use of a pooled connection finds it closed; the next ones
                # cannot connect at all (DatabaseUnavailable, a ConnectionError)
                for i in range(4):
                    await _assert_unavailable_with_cors(
                        http, "POST", f"{node.url}/api/v1/auth/register",
                        json={"username": f"outage{i}", "password": "correct horse battery"})
                    await _assert_unavailable_with_cors(
                        http, "GET", sidecar_url, headers={"Authorization": "Bearer hsk_x"})
            finally:
                await asyncio.to_thread(own_postgres.start_again)
    finally:
        await sidecar_runner.cleanup()
    tracebacks = [r for r in caplog.records if r.exc_info and r.exc_info[1] is not None
                  and outage_of(r.exc_info[1]) is not None
                  and r.name != "asyncpg.pool"]  # its filter is set by setup_logging
    assert not tracebacks, [r.getMessage() for r in tracebacks]


async def test_database_unavailable_is_a_503_not_a_client_that_went_away(
        http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    """:class:`DatabaseUnavailable` is a ``ConnectionError``, like a client that went
    away: the error middleware still answers it 503 ``unavailable`` (CORS included),
    with one line and no traceback, whichever route raises it."""
    from aiohttp import web

    from server.cors import cors_middleware
    from server.logs import request_id_middleware
    from server.rest.openapi import add_openapi_route
    from tests.conftest import free_port

    async def down(request: web.Request) -> web.StreamResponse:
        raise DatabaseUnavailable("cannot connect to PostgreSQL: refused")

    app = web.Application(middlewares=[request_id_middleware, cors_middleware([ORIGIN])])
    app.router.add_get("/api/v1/down", down)
    add_openapi_route(app)  # adds the error middleware, as on every Hearth app
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        for _ in range(3):
            await _assert_unavailable_with_cors(http, "GET",
                                                f"http://127.0.0.1:{port}/api/v1/down")
    finally:
        await runner.cleanup()
    assert not [r for r in caplog.records if r.exc_info is not None]
    # one line per store and interval (none if an earlier test's outage is that recent)
    lines = [r for r in caplog.records if "DatabaseUnavailable" in r.getMessage()]
    assert len(lines) <= 1, [r.getMessage() for r in lines]
