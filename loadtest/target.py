"""The server under test: where it is, starting it when asked, provisioning, and /proc.

A target is a base URL. The harness targets only loopback addresses, or an address the
user names with ``--url`` *and* allows with ``--allow-remote``: a load test is a denial
of service to whoever is on the other end, so a typo must not aim it at a stranger.
Nothing the server returns can redirect the load elsewhere (the gateway URL is derived
from the base URL, never read from a reply).

When the target is local, the server's processes are found by who listens on its port
(every ``--workers`` process listens with SO_REUSEPORT) or by being the harness's own
child, and their CPU and RSS are read from /proc through psutil.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import msgspec
import psutil


class TargetError(Exception):
    """The target cannot be used; the message says why and what to do."""


class ProvisionedUser(msgspec.Struct):
    id: int
    username: str
    token: str


class ProvisionedChannel(msgspec.Struct):
    id: int
    member_ids: list[int]


class Provisioned(msgspec.Struct):
    """Reply of ``POST /api/v1/loadtest/provision`` (docs/CONTRACTS.md)."""

    community_id: int
    users: list[ProvisionedUser]
    channels: list[ProvisionedChannel]


def is_loopback_host(host: str) -> bool:
    """True for localhost and any address of 127.0.0.0/8 or ::1 (resolved if a name)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_target_url(url: str, allow_remote: list[str]) -> tuple[str, int]:
    """(host, port) of ``url`` if it may be targeted; raises :class:`TargetError` if not."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError(f"--url must be http(s)://host:port, not {url!r}")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if parts.scheme == "https":
        raise TargetError("https targets are not supported by the generator yet; use the "
                          "plain port behind your TLS terminator")
    if not is_loopback_host(host) and host not in allow_remote:
        raise TargetError(f"{host} is not a loopback address: name it with "
                          f"--allow-remote {host} to confirm you mean to load it")
    return host, port


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a process the harness starts: this checkout first on PYTHONPATH
    (so ``python -m loadtest.worker`` runs this code, installed or not)."""
    env = dict(os.environ, **extra)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]]
                                                  if env.get("PYTHONPATH") else []))
    return env


def spawn_logged(command: list[str], log_path: Path | None, env: dict[str, str],
                 cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a helper process with its output in ``log_path`` (or discarded)."""
    if log_path is None:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def listening_pids(port: int) -> list[int]:
    """PIDs of the processes listening on TCP ``port`` (local servers only)."""
    pids: set[int] = set()
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return []
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port \
                and conn.pid:
            pids.add(conn.pid)
    return sorted(pids)


@dataclass
class ProcSample:
    t: float
    rss_bytes: int
    cpu_s: dict[int, float]


@dataclass
class ServerProbe:
    """CPU and RSS of the server's processes, read from /proc."""

    pids: list[int]
    _procs: dict[int, psutil.Process] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(psutil.Error):
                self._procs[pid] = psutil.Process(pid)

    def add(self, pids: list[int]) -> None:
        """Also sample these processes from now on (a restarted worker)."""
        for pid in pids:
            if pid not in self._procs:
                with contextlib.suppress(psutil.Error):
                    self._procs[pid] = psutil.Process(pid)
                    self.pids.append(pid)

    def sample(self) -> ProcSample | None:
        if not self._procs:
            return None
        rss = 0
        cpu: dict[int, float] = {}
        for pid, proc in list(self._procs.items()):
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
                cpu[pid] = times.user + times.system
            except psutil.Error:
                self._procs.pop(pid, None)
        return ProcSample(t=time.monotonic(), rss_bytes=rss, cpu_s=cpu)


def cpu_percent_between(a: ProcSample | None, b: ProcSample | None) -> dict[int, float]:
    """Per-process CPU % between two samples (100 = one core busy)."""
    if a is None or b is None or b.t <= a.t:
        return {}
    wall = b.t - a.t
    # A process in b but not in a was added to the probe in between (a worker started
    # to replace a dead one): all of its CPU time falls in the interval.
    return {pid: round(100.0 * (b.cpu_s[pid] - a.cpu_s.get(pid, 0.0)) / wall, 1)
            for pid in b.cpu_s}


@dataclass
class Target:
    """A running server to load: Hearth or a peer."""

    name: str
    """``hearth`` or the peer's name."""
    base_url: str
    host: str
    port: int
    ws_path: str = "/gateway"
    framing: str = "hearth"
    local: bool = True
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    redis_pid: int | None = None
    """A throwaway ``redis-server`` the harness started for this server (its CPU is
    reported as ``server.redis_cpu_percent``)."""

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}{self.ws_path}"

    def probe(self) -> ServerProbe | None:
        if not self.local:
            return None
        pids = hearth_pids(self.process) if self.process is not None and \
            self.name == "hearth" else []
        if not pids:
            pids = listening_pids(self.port)
        if not pids and self.process is not None:
            pids = [self.process.pid]
        return ServerProbe(pids) if pids else None


async def wait_ready(base_url: str, timeout_s: float,
                     process: subprocess.Popen[bytes] | None = None,
                     log_path: Path | None = None) -> None:
    """Poll ``GET /readyz`` until 200; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{base_url}/readyz",
                                       timeout=aiohttp.ClientTimeout(total=2)) as reply:
                    if reply.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            if process is not None and process.poll() is not None:
                raise TargetError(f"the server exited with code {process.returncode} before "
                                  f"it was ready:\n{tail(log_path)}")
            if time.monotonic() > deadline:
                raise TargetError(f"{base_url}/readyz did not answer 200 within "
                                  f"{timeout_s:.0f} s\n{tail(log_path)}")
            await asyncio.sleep(0.2)


def tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop_process(process: subprocess.Popen[bytes] | None, timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``: only the process the harness started."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


PG_CONNECTION_HEADROOM = 10
"""PostgreSQL connections left free when sizing the server's pools (psql, the
migration connection, other clients of a shared server)."""
DEFAULT_POOL_SIZE = 20
"""Hearth's own default ``db_pool_size`` (per process)."""


def fresh_database_name() -> str:
    return "hearth_lt_" + os.urandom(6).hex()


def _dsn_with_database(dsn: str, name: str) -> str:
    """``dsn`` pointed at database ``name`` (host and unix-socket DSNs alike)."""
    from urllib.parse import urlunsplit

    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def create_database(admin_dsn: str) -> tuple[str, int]:
    """Create a fresh, empty database on the server of ``admin_dsn``; return its DSN and
    how many more connections that server admits (max_connections minus those open)."""
    import asyncpg

    name = fresh_database_name()
    try:
        admin = await asyncpg.connect(admin_dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise TargetError(f"--postgres {admin_dsn}: cannot connect ({exc})") from exc
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        max_conn = int(await admin.fetchval("SHOW max_connections"))
        in_use = int(await admin.fetchval("SELECT count(*) FROM pg_stat_activity"))
    finally:
        await admin.close()
    return _dsn_with_database(admin_dsn, name), max(0, max_conn - in_use)


async def drop_database(admin_dsn: str, database_dsn: str) -> None:
    import asyncpg

    name = urlsplit(database_dsn).path.lstrip("/")
    if not name.startswith("hearth_lt_"):  # only ever a database this module created
        return
    admin = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def pool_size_for(workers: int, free_connections: int | None) -> int:
    """Per-process pool so that every worker's pool fits the PostgreSQL server: at most
    Hearth's default, at least 2 (identify and a group commit at once)."""
    budget = (100 if free_connections is None else free_connections) - PG_CONNECTION_HEADROOM
    return max(2, min(DEFAULT_POOL_SIZE, budget // max(1, workers)))


def stop_tree(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Stop a server the harness started and every process it started (a supervisor's
    workers; the embedded PostgreSQL stops itself): SIGTERM, then SIGKILL after
    ``timeout_s`` to whatever is left of that tree."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        children = []
    stop_process(process, timeout_s)
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


@contextlib.asynccontextmanager
async def throwaway_redis(maxclients: int = 10_000) -> AsyncIterator[tuple[str, int]]:
    """A private ``redis-server`` on a free loopback port (no persistence), stopped
    afterwards: runs never share Redis keys with anything else."""
    redis_server = shutil.which("redis-server")
    if not redis_server:
        raise TargetError("more than one Hearth process needs Redis: install redis-server or "
                          "pass --redis-url")
    port = free_port()
    process = spawn_logged([redis_server, "--port", str(port), "--bind", "127.0.0.1",
                            "--save", "", "--appendonly", "no",
                            "--maxclients", str(maxclients)], None, child_env())
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise TargetError("redis-server did not start")
            await asyncio.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process.pid
    finally:
        await asyncio.to_thread(stop_process, process, 5.0)


def hearth_pids(process: subprocess.Popen[bytes]) -> list[int]:
    """The gateway processes of a ``hearth serve`` the harness started: the process
    itself, or its ``server.cli`` children when it supervises workers (not the embedded
    PostgreSQL it may also have started)."""
    try:
        parent = psutil.Process(process.pid)
        children = [c for c in parent.children()
                    if "server.cli" in " ".join(c.cmdline())]
    except psutil.Error:
        return []
    return sorted(c.pid for c in children) or [process.pid]


@contextlib.asynccontextmanager
async def local_hearth(workers: int, data_dir: str | None, database_url: str | None,
                       ready_timeout_s: float = 120.0, *, postgres_url: str | None = None,
                       redis_url: str | None = None,
                       keep_log: str | None = None) -> AsyncIterator[Target]:
    """``hearth serve`` on a free loopback port with provisioning on, stopped afterwards.

    Database: ``database_url`` as is; or, with ``postgres_url`` (a server the harness may
    create databases on), a fresh database for this run, dropped afterwards; or the
    embedded PostgreSQL in a fresh temporary data directory (created on first start,
    which takes a few seconds). With more than one worker the processes need Redis:
    ``redis_url`` or a throwaway ``redis-server``; and each worker's pool is sized so
    that all of them fit the PostgreSQL server (``HEARTH_DB_POOL_SIZE`` overrides)."""
    own_dir = data_dir is None
    directory = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="hearth-lt-"))
    directory.mkdir(parents=True, exist_ok=True)
    created: str | None = None
    free_conns: int | None = None
    try:
        if postgres_url and not database_url:
            created, free_conns = await create_database(postgres_url)
            database_url = created
        async with contextlib.AsyncExitStack() as stack:
            redis_pid = None
            if workers > 1 and not redis_url:
                redis_url, redis_pid = await stack.enter_async_context(
                    throwaway_redis(maxclients=max(10_000, 64 * workers)))
            target = await stack.enter_async_context(
                _serve(workers, directory, database_url, redis_url, free_conns,
                       ready_timeout_s, created is not None))
            target.redis_pid = redis_pid
            yield target
    finally:
        if created and postgres_url:
            with contextlib.suppress(Exception):
                await drop_database(postgres_url, created)
        if keep_log and (directory / "hearth-serve.log").exists():
            with contextlib.suppress(OSError):
                shutil.copyfile(directory / "hearth-serve.log", keep_log)
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def _serve(workers: int, directory: Path, database_url: str | None,
                 redis_url: str | None, free_conns: int | None, ready_timeout_s: float,
                 fresh_database: bool) -> AsyncIterator[Target]:
    port = free_port()
    log_path = directory / "hearth-serve.log"
    env = child_env(HEARTH_LOADTEST_PROVISIONING="true", HEARTH_DATA_DIR=str(directory),
                    HEARTH_LOG_LEVEL=os.environ.get("HEARTH_LOG_LEVEL", "WARNING"))
    if database_url:
        env["HEARTH_DATABASE_URL"] = database_url
        env.setdefault("HEARTH_SECRET", "hearth-loadtest-" + os.urandom(8).hex())
    pool_size: int | None = None
    if workers > 1 and "HEARTH_DB_POOL_SIZE" not in os.environ:
        pool_size = pool_size_for(workers, free_conns)
        env["HEARTH_DB_POOL_SIZE"] = str(pool_size)
    if redis_url:
        env["HEARTH_REDIS_URL"] = redis_url
    command = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1",
               "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    process = spawn_logged(command, log_path, env)
    target = Target(name="hearth", base_url=f"http://127.0.0.1:{port}", host="127.0.0.1",
                    port=port, process=process, log_path=log_path)
    where = ("a fresh database on --postgres" if fresh_database else
             "HEARTH_DATABASE_URL" if database_url else "embedded PostgreSQL")
    target.notes.append(f"hearth serve started by the harness: {workers} process(es), "
                        f"{where}, " + ("Redis bus" if redis_url else "in-process bus")
                        + (f", HEARTH_DB_POOL_SIZE={pool_size}" if pool_size else ""))
    try:
        await wait_ready(target.base_url, ready_timeout_s, process, log_path)
        if workers > 1:  # /readyz answers as soon as one worker is up: wait for all
            deadline = time.monotonic() + ready_timeout_s
            while len(hearth_pids(process)) < workers or \
                    len(listening_pids(port)) < workers:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise TargetError(f"only {len(listening_pids(port))} of {workers} "
                                      f"workers listen on {port}\n{tail(log_path)}")
                await asyncio.sleep(0.2)
        yield target
    finally:
        await asyncio.to_thread(stop_tree, process, 30.0)


async def provision(base_url: str, users: int, room_size: int,
                    timeout_s: float = 900.0) -> Provisioned:
    """Bulk-create ``users`` bot users in rooms of ``room_size`` (one REST call)."""
    body = {"users": users, "room_size": room_size}
    async with aiohttp.ClientSession() as session:
        try:
            async with session.post(f"{base_url}/api/v1/loadtest/provision", json=body,
                                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as reply:
                raw = await reply.read()
                if reply.status == 404:
                    raise TargetError("provisioning is off on the server: start it with "
                                      "HEARTH_LOADTEST_PROVISIONING=true")
                if reply.status != 201:
                    raise TargetError(f"provisioning failed: HTTP {reply.status} "
                                      f"{raw[:500]!r}")
        except aiohttp.ClientError as exc:
            raise TargetError(f"provisioning failed: {exc}") from exc
    return msgspec.json.decode(raw, type=Provisioned)
