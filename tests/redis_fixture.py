"""Redis for the tests: never skipped.

``redis_url`` (session): ``HEARTH_REDIS_URL`` when set, otherwise a throwaway
``redis-server`` on a free port (``--save "" --appendonly no``), stopped at the end.
``redis_server`` (function): a throwaway server of the test's own, which the test may
stop and start again on the same port. ``make_redis_server`` builds more of them, and
``redis_cluster`` starts a three-primary Redis Cluster.

``redis-server`` comes from Debian's package; :func:`ensure_redis_server` installs it
when it is missing. A CI step can call it ahead of the tests::

    python -m tests.redis_fixture        # prints the path of redis-server

``tests/conftest.py`` imports them::

    from tests.redis_fixture import (
        make_redis_server_fixture, redis_cluster_fixture, redis_server_fixture,
        redis_url_fixture)

Each is registered under its name without ``_fixture`` (``redis_url`` and so on), so the
import does not clash with the test functions' parameters.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_DEBIAN_PACKAGE = "redis-server"


def ensure_redis_server() -> str:
    """Path of ``redis-server``; installs Debian's ``redis-server`` package when missing
    (as root, or with password-less sudo). Raises if it cannot: Redis tests never skip."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if found:
        return found
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise RuntimeError("redis-server is missing and cannot be installed without root: "
                               "apt-get install -y redis-server, or set HEARTH_REDIS_URL")
        prefix = ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", _DEBIAN_PACKAGE]):
        result = subprocess.run(prefix + command, env=env, capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    # The package's post-install starts a system service on 6379; the tests do not use it.
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).exists():
        raise RuntimeError("redis-server still missing after installing the package")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port P <= 55535 whose cluster bus port P + 10000 is free too."""
    for _ in range(200):
        port = free_port()
        if port > 55535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def redis_cli(port: int, *args: str, timeout: float = 10) -> str:
    """Run ``redis-cli`` against a local port (the Debian package ships it)."""
    cli = shutil.which("redis-cli") or str(Path(ensure_redis_server()).with_name("redis-cli"))
    result = subprocess.run([cli, "-h", "127.0.0.1", "-p", str(port), *args],
                            capture_output=True, text=True, timeout=timeout, check=True)
    return result.stdout


class RedisServer:
    """A throwaway ``redis-server`` on 127.0.0.1; ``stop()`` and ``start()`` keep the port.

    ``port_chooser`` picks the port (a new one if the first start finds it taken by
    another process); an explicit ``port`` is used as it is."""

    def __init__(self, port: int | None = None, extra_args: tuple[str, ...] = (),
                 port_chooser: Callable[[], int] = free_port) -> None:
        self._port_chooser: Callable[[], int] | None = None if port else port_chooser
        self.port = port or port_chooser()
        self.dir = Path(tempfile.mkdtemp(prefix="hearth-redis-"))
        self.log = self.dir / "redis.log"
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15) -> None:
        for _ in range(5):
            if self._start_once(timeout):
                self._port_chooser = None  # restarts keep the port
                return
            assert self._port_chooser is not None
            self.port = self._port_chooser()  # another process took the port meanwhile
        raise RuntimeError("redis-server found every port it tried taken")

    def _log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _start_once(self, timeout: float) -> bool:
        """True when started; False when the port was taken (and may be changed)."""
        if self.process is not None:
            raise RuntimeError("already running")
        ready_before = self._log_text().count("Ready to accept connections")
        args = [ensure_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", str(self.dir), "--logfile", str(self.log), *self.extra_args]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        # Ready when *this* server says so in its own log (a ping could reach another
        # process holding the port) and answers.
        while not (self._log_text().count("Ready to accept connections") > ready_before
                   and _answers_ping(self.port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop(kill=True)
                log = self._log_text()
                if "Address already in use" in log and self._port_chooser is not None:
                    return False
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.02)
        return True

    def stop(self, kill: bool = False) -> None:
        """Stop the server: SIGTERM (clean shutdown), or SIGKILL with ``kill=True``."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            process.send_signal(signal.SIGCONT)  # in case it was paused
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def pause(self) -> None:
        """SIGSTOP: the server hangs with its connections open (a stuck Redis)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cli(self, *args: str) -> str:
        return redis_cli(self.port, *args)


class RedisCluster:
    """A Redis Cluster of throwaway primaries (no replicas) on 127.0.0.1."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = [RedisServer(port_chooser=free_cluster_port,
                                  extra_args=("--cluster-enabled", "yes",
                                              "--cluster-config-file", "nodes.conf",
                                              "--cluster-node-timeout", "2000"))
                      for _ in range(size)]
        self._moved: dict[int, RedisServer] = {}

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """All the nodes, comma-separated (the ``HEARTH_REDIS_URL`` spelling)."""
        return ",".join(self.urls)

    def start(self, timeout: float = 30) -> None:
        for node in self.nodes:
            node.start()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            first.cli("CLUSTER", "MEET", "127.0.0.1", str(node.port))
        size = len(self.nodes)
        for i, node in enumerate(self.nodes):
            low, high = i * 16384 // size, (i + 1) * 16384 // size - 1
            node.cli("CLUSTER", "ADDSLOTSRANGE", str(low), str(high))
        deadline = time.monotonic() + timeout
        while True:
            infos = [node.cli("CLUSTER", "INFO") for node in self.nodes]
            known = [node.cli("CLUSTER", "NODES").count("master") for node in self.nodes]
            if all("cluster_state:ok" in i for i in infos) and all(k == size for k in known):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis Cluster did not form: {infos}")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(kill=True)

    def owner_of(self, slot: int) -> RedisServer:
        """The primary that serves ``slot`` (as assigned by :meth:`start`/:meth:`move_slot`)."""
        moved = self._moved.get(slot)
        if moved is not None:
            return moved
        size = len(self.nodes)
        return next(node for i, node in enumerate(self.nodes)
                    if i * 16384 // size <= slot <= (i + 1) * 16384 // size - 1)

    def node_id(self, node: RedisServer) -> str:
        return node.cli("CLUSTER", "MYID").strip()

    def move_slot(self, slot: int, source: RedisServer, target: RedisServer) -> None:
        """Give an (empty) hash slot to another primary, the way resharding does."""
        source_id, target_id = self.node_id(source), self.node_id(target)
        target.cli("CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        source.cli("CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        for node in (target, source, *[n for n in self.nodes if n not in (source, target)]):
            node.cli("CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
        self._moved[slot] = target


@pytest.fixture(scope="session", name="redis_url")
def redis_url_fixture() -> Iterator[str]:
    """A Redis for the whole session (shared: tests use unique topic names)."""
    url = os.environ.get("HEARTH_REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(name="make_redis_server")
def make_redis_server_fixture() -> Iterator[Callable[..., RedisServer]]:
    """Factory of throwaway servers of this test's own (positional arguments are extra
    ``redis-server`` options); all stopped at the end."""
    servers: list[RedisServer] = []

    def make(*extra_args: str) -> RedisServer:
        server = RedisServer(extra_args=extra_args)
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop(kill=True)


@pytest.fixture(name="redis_server")
def redis_server_fixture(make_redis_server: Callable[..., RedisServer]) -> RedisServer:
    """A throwaway ``redis-server`` of this test's own (``.url``, ``.stop()``, ``.start()``)."""
    return make_redis_server()


@pytest.fixture(name="redis_cluster")
def redis_cluster_fixture() -> Iterator[RedisCluster]:
    cluster = RedisCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


if __name__ == "__main__":
    print(ensure_redis_server())
