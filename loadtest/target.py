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
    return {pid: round(100.0 * (b.cpu_s[pid] - a.cpu_s.get(pid, b.cpu_s[pid])) / wall, 1)
            for pid in b.cpu_s if pid in a.cpu_s}


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

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}{self.ws_path}"

    def probe(self) -> ServerProbe | None:
        if not self.local:
            return None
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


@contextlib.asynccontextmanager
async def local_hearth(workers: int, data_dir: str | None, database_url: str | None,
                       ready_timeout_s: float = 120.0) -> AsyncIterator[Target]:
    """``hearth serve`` on a free loopback port with provisioning on, stopped afterwards.

    The data directory is a fresh temporary one unless given (the embedded PostgreSQL
    is created there on first start, which takes a few seconds)."""
    port = free_port()
    own_dir = data_dir is None
    directory = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="hearth-lt-"))
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "hearth-serve.log"
    env = child_env(HEARTH_LOADTEST_PROVISIONING="true", HEARTH_DATA_DIR=str(directory),
                    HEARTH_LOG_LEVEL=os.environ.get("HEARTH_LOG_LEVEL", "WARNING"))
    if database_url:
        env["HEARTH_DATABASE_URL"] = database_url
        env.setdefault("HEARTH_SECRET", "hearth-loadtest-" + os.urandom(8).hex())
    command = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1",
               "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    process = spawn_logged(command, log_path, env)
    target = Target(name="hearth", base_url=f"http://127.0.0.1:{port}", host="127.0.0.1",
                    port=port, process=process, log_path=log_path)
    try:
        await wait_ready(target.base_url, ready_timeout_s, process, log_path)
        yield target
    finally:
        await asyncio.to_thread(stop_process, process)
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)


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
