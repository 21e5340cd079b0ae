"""Shared fixtures: a real PostgreSQL for every test, a fresh database per test.

PostgreSQL comes from ``HEARTH_TEST_DATABASE_URL`` (any server you can create databases
on, e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``) or, by default, an embedded
server started once per test session with ``pgserver``. Each test gets its own database
cloned from a migrated template, so tests never see each other's rows.

Randomness is seeded; the seed is printed so a failure can be replayed with
``HEARTH_TEST_SEED=<seed>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from persistence.database import Database
from persistence.embedded import EmbeddedPostgres
from persistence.migrate import migrate

if TYPE_CHECKING:
    from aiohttp import web

from tests.a11y import axe
from tests.redis_fixture import (
    make_redis_server_fixture,
    redis_cluster_fixture,
    redis_server_fixture,
    redis_url_fixture,
)

__all__ = ["axe", "make_redis_server_fixture", "redis_cluster_fixture", "redis_server_fixture",
           "redis_url_fixture"]

_SEED = int(os.environ.get("HEARTH_TEST_SEED", random.randrange(2**32)))


_SESSION_TMP: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Every temporary directory the tests and the servers they start make without
    naming a parent (data directories, recordings, sockets, the embedded PostgreSQL)
    goes under one directory per test run, removed when the run ends: the suite leaves
    nothing behind in /tmp."""
    global _SESSION_TMP
    if _SESSION_TMP is None and not hasattr(config, "workerinput"):
        _SESSION_TMP = Path(tempfile.mkdtemp(prefix="hearth-tests-"))
        tempfile.tempdir = str(_SESSION_TMP)
        os.environ["TMPDIR"] = str(_SESSION_TMP)  # for the server processes too
        # pgserver's own exit handler (registered later, so run earlier) writes its
        # runtime directory here once more: remove the tree again after it.
        import atexit
        import shutil

        atexit.register(shutil.rmtree, _SESSION_TMP, True)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _SESSION_TMP
    if _SESSION_TMP is not None:
        import shutil

        shutil.rmtree(_SESSION_TMP, ignore_errors=True)
        _SESSION_TMP = None


def pytest_report_header() -> str:
    return f"hearth: random seed {_SEED} (replay with HEARTH_TEST_SEED={_SEED})"


@pytest.fixture
def rng() -> random.Random:
    return random.Random(_SEED)


def _with_database(dsn: str, name: str) -> str:
    """``dsn`` pointed at database ``name`` (works for host and unix-socket DSNs)."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """A DSN with the right to CREATE DATABASE, for the whole test session."""
    url = os.environ.get("HEARTH_TEST_DATABASE_URL")
    if url:
        yield url
        return
    embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="hearth-test-pg-")))
    dsn = embedded.start()
    try:
        yield dsn
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def pg_template(pg_admin_dsn: str) -> str:
    """Name of a migrated template database; created once per session."""
    name = f"hearth_tpl_{uuid.uuid4().hex[:10]}"

    async def build() -> None:
        admin = await asyncpg.connect(pg_admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        pool = await asyncpg.create_pool(_with_database(pg_admin_dsn, name), min_size=1, max_size=1)
        try:
            await migrate(pool)
        finally:
            await pool.close()

    asyncio.run(build())
    return name


@pytest.fixture
async def database_url(pg_admin_dsn: str, pg_template: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test; dropped afterwards."""
    name = f"hearth_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    finally:
        await admin.close()
    yield _with_database(pg_admin_dsn, name)
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, min_size=1, max_size=5)
    try:
        yield database
    finally:
        await database.close()


# --------------------------------------------------------------------------- servers

TEST_SECRET = "hearth-test-secret-0123456789"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningServer:
    """Where a test server listens."""

    def __init__(self, host: str, port: int, database_url: str) -> None:
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self.ws_url = f"ws://{host}:{port}/gateway"
        self.database_url = database_url
        self._app: web.Application | None = None
        self.process: object | None = None

    @property
    def app(self) -> web.Application:
        """The application of a server running in the test's process (:func:`app_server`)."""
        assert self._app is not None, "a hearth serve process has no application to inspect"
        return self._app


@contextlib.asynccontextmanager
async def app_server(database_url: str, bus: object | None = None,
                     **overrides: object) -> AsyncIterator[RunningServer]:
    """Hearth in this test's event loop, on a real socket (fast; internals inspectable
    through ``.app``). ``overrides`` are configuration keys; ``bus`` a test's own bus."""
    from aiohttp import web

    from rooms.realtime.bus import Bus
    from server.app import build_app
    from server.config import load_config

    assert bus is None or isinstance(bus, Bus)
    config = load_config(overrides={"database_url": database_url, "secret": TEST_SECRET,
                                    "argon2_time_cost": 1, "argon2_memory_kib": 8192,
                                    "data_dir": tempfile.mkdtemp(prefix="hearth-data-"),
                                    **overrides}, environ={})
    app = build_app(config, bus=bus)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    server = RunningServer("127.0.0.1", port, database_url)
    server._app = app
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
async def live_server(database_url: str) -> AsyncIterator[RunningServer]:
    """Hearth in this test's event loop, on a real socket (fast; internals inspectable)."""
    async with app_server(database_url) as server:
        yield server


def start_server_process(database_url: str, **extra_env: str) -> RunningServer:
    """``hearth serve`` in its own process on a free port, ready when this returns.
    Stop it with :func:`stop_server_process`."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = int(extra_env.pop("port", free_port()))
    env = dict(os.environ, HEARTH_DATABASE_URL=database_url, HEARTH_SECRET=TEST_SECRET,
               HEARTH_LOADTEST_PROVISIONING="true", HEARTH_LOG_LEVEL="WARNING",
               HEARTH_ARGON2_TIME_COST="1", HEARTH_ARGON2_MEMORY_KIB="8192",
               HEARTH_DATA_DIR=tempfile.mkdtemp(prefix="hearth-data-"),
               # One process: a test that kills "the node" must kill the gateway itself,
               # not a supervisor (Redis would otherwise default to one worker per core).
               HEARTH_WORKERS="1")
    env.update(extra_env)
    log_path = Path(env["HEARTH_DATA_DIR"]) / "server.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--port", str(port)],
            env=env, stdout=log_file, stderr=subprocess.STDOUT)
    server = RunningServer("127.0.0.1", port, database_url)
    server.process = proc
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{server.url}/readyz", timeout=1) as reply:
                if reply.status == 200:
                    return server
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            output = log_path.read_text(errors="replace")
            raise RuntimeError(f"hearth serve did not become ready:\n{output}")
        time.sleep(0.1)


@contextlib.contextmanager
def server_nodes(database_url: str, count: int, **extra_env: str) -> Iterator[list[RunningServer]]:
    """``count`` server processes on one database (and one Redis, through ``extra_env``),
    all stopped on exit, including the ones started before a later one failed to start."""
    nodes: list[RunningServer] = []
    try:
        for _ in range(count):
            nodes.append(start_server_process(database_url, **extra_env))
        yield nodes
    finally:
        for node in reversed(nodes):
            stop_server_process(node)


def stop_server_process(server: RunningServer) -> None:
    import subprocess

    proc = server.process
    assert isinstance(proc, subprocess.Popen)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def hearth_server(database_url: str) -> Iterator[RunningServer]:
    """``hearth serve`` as a separate process, the way a user runs it (for browser and
    load-test tests, whose clients must not share the server's event loop)."""
    server = start_server_process(database_url)
    try:
        yield server
    finally:
        stop_server_process(server)
