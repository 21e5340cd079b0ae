"""``hearth serve --workers N``: N gateway processes sharing one port.

The supervisor owns what the workers share: the embedded PostgreSQL (if no external
one is configured), the migrations (run once, before any worker starts), the token
secret, and the prometheus multiprocess directory. Each worker is ``hearth serve`` in
single-process mode with ``SO_REUSEPORT``, so the kernel spreads connections across
them; they exchange events through Redis. A worker that dies is started again after a
short pause (its clients reconnect to the others meanwhile and resume), or at once when
it was killed by a signal after running a while (:func:`restart_delay`). SIGTERM/SIGINT
are passed on, so every worker drains its clients (close 1001) before exiting.

The supervisor also owns the node's media workers (voice rooms, ``rooms/media/``):
``media_workers`` processes (default one per core), spawned once, their unix sockets in
a private run directory, restarted like gateway workers when they die (same socket
path; a new instance id, so stale room placements are recognized). Every gateway
process gets the socket paths (``HEARTH_MEDIA_SOCKETS``) and connects to all of them,
so a room lives on ONE worker whichever process its members are connected to. Why not
per gateway process: members of one channel reaching different processes would land
in different SFU rooms and not hear each other. The workers get the IPC key (derived
from the secret) in their environment, never on the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from server.config import Config, media_worker_count, secret_for, worker_count
from server.metrics import MULTIPROC_ENV, mark_process_dead

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0
"""Pause before restarting a worker that exited on its own or crashed soon after start:
a worker in a crash loop must not spin the CPU its siblings need."""
SETTLED_AFTER_S = 10.0
"""A worker killed by a signal after running this long is restarted at once: it was
killed (OOM killer, an operator's kill -9), not crash-looping, and its clients are
reconnecting to the survivors right now. The sooner it listens again, the sooner the
kernel (``SO_REUSEPORT``) spreads the reconnect storm over two processes instead of one."""


def restart_delay(returncode: int | None, ran_for_s: float) -> float:
    """Seconds to wait before restarting a worker that exited with ``returncode`` after
    running ``ran_for_s``: none for a signal kill (negative return code) of a worker that
    had settled, :data:`RESTART_DELAY_S` otherwise."""
    if returncode is not None and returncode < 0 and ran_for_s >= SETTLED_AFTER_S:
        return 0.0
    return RESTART_DELAY_S
MEDIA_READY_S = 30.0
"""How long the media workers may take to open their sockets (they import aiortc)."""


def supervise(config: Config) -> int:
    from persistence.embedded import EmbeddedPostgres

    count = worker_count(config)
    embedded: EmbeddedPostgres | None = None
    dsn = config.database_url
    if not dsn:
        embedded = EmbeddedPostgres(config.data_path() / "postgres")
        dsn = embedded.start()
    try:
        asyncio.run(_migrate(dsn))
        metrics_dir = tempfile.mkdtemp(prefix="hearth-metrics-")
        env = dict(os.environ, HEARTH_DATABASE_URL=dsn, HEARTH_SECRET=secret_for(config),
                   HEARTH_HOST=config.host, HEARTH_PORT=str(config.port),
                   HEARTH_WORKERS="1", HEARTH_SUPERVISED="1", **{MULTIPROC_ENV: metrics_dir})
        if config.redis_url:
            env["HEARTH_REDIS_URL"] = config.redis_url
        media = MediaWorkers(config)
        try:
            media.start()
            if media.paths:
                env["HEARTH_MEDIA_SOCKETS"] = ",".join(media.paths)
            return _run(count, env, config, media.poll)
        finally:
            media.stop()
    finally:
        if embedded is not None:
            embedded.stop()


class MediaWorkers:
    """The node's media worker processes: spawned once, restarted when they die."""

    def __init__(self, config: Config) -> None:
        from protocol.media_ipc import derive_key

        self.config = config
        self.count = media_worker_count(config, supervised=True)
        self.key = derive_key(secret_for(config))
        self.run_dir: Path | None = None
        self.paths: list[str] = []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._died_at: dict[int, float] = {}

    def start(self) -> None:
        """Spawn every worker and wait until each socket exists (so gateway processes
        find them at once; a gateway also reconnects lazily, so this is a courtesy)."""
        if self.count <= 0:
            return
        # A short private directory: sun_path holds 108 bytes, mkdtemp makes it 0700.
        self.run_dir = Path(tempfile.mkdtemp(prefix="hearth-media-"))
        self.paths = [str(self.run_dir / f"media-{i}.sock") for i in range(self.count)]
        for i in range(self.count):
            self.procs[i] = self._spawn(i)
        deadline = time.monotonic() + MEDIA_READY_S
        while not all(os.path.exists(p) for p in self.paths):
            for i, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"media worker {i} exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("media workers did not open their sockets in time")
            time.sleep(0.05)
        print(f"{self.count} media worker processes (pids "
              f"{', '.join(str(p.pid) for p in self.procs.values())}), sockets in "
              f"{self.run_dir}.", flush=True)

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        from rooms.media.pool import listen_for, worker_command, worker_env

        config = self.config
        args = worker_command(self.paths[index], parent_pid=os.getpid(),
                              capacity_tracks=config.media_capacity_tracks,
                              max_slots=config.limits.voice_receive_slots,
                              ice=config.media_ice,
                              listen=listen_for(config.media_listen, index),
                              advertise=config.media_advertise,
                              private_candidates=config.media_private_candidates)
        return subprocess.Popen(args, env=worker_env(self.key),
                                preexec_fn=_die_with_parent if sys.platform == "linux"
                                else None)

    def poll(self) -> None:
        """Restart dead workers after :data:`RESTART_DELAY_S` (same socket path)."""
        for index, proc in list(self.procs.items()):
            if proc.poll() is None:
                continue
            if index not in self._died_at:
                log.warning("media worker %d (pid %d) exited with %s; restarting", index,
                            proc.pid, proc.returncode)
                self._died_at[index] = time.monotonic()
            elif time.monotonic() - self._died_at[index] >= RESTART_DELAY_S:
                del self._died_at[index]
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.paths[index])
                self.procs[index] = self._spawn(index)

    def stop(self) -> None:
        """SIGTERM (they close their rooms and recordings), SIGKILL after 10 s."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)


async def _migrate(dsn: str) -> None:
    from persistence.database import Database
    from persistence.migrate import migrate

    db = await Database.connect(dsn, min_size=1, max_size=1)
    try:
        await migrate(db.pool)
    finally:
        await db.close()


def _die_with_parent() -> None:
    """In the child, before exec: if the supervisor dies (even kill -9), the kernel
    sends this worker SIGTERM, so no worker outlives it as an orphan (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _spawn(index: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "server.cli", "serve"],
                            env=dict(env, HEARTH_WORKER_ID=str(index)),
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)


class GatewayWorkers:
    """The gateway processes and their restarts (spawning injected, so the restart
    policy is testable without processes or sleeps)."""

    def __init__(self, count: int, spawn: Callable[[int], subprocess.Popen[bytes]],
                 now: float) -> None:
        self.spawn = spawn
        self.procs = {i: spawn(i) for i in range(count)}
        self.started_at = dict.fromkeys(self.procs, now)
        self.restart_at: dict[int, float] = {}

    def poll(self, now: float) -> None:
        """Notice dead workers; restart each when its :func:`restart_delay` is over."""
        for index, proc in list(self.procs.items()):
            if proc.poll() is None:
                continue
            if index not in self.restart_at:
                delay = restart_delay(proc.returncode, now - self.started_at[index])
                log.warning("worker %d (pid %d) exited with %s; restarting in %.1f s", index,
                            proc.pid, proc.returncode, delay)
                mark_process_dead(proc.pid)
                self.restart_at[index] = now + delay
            if now >= self.restart_at[index]:
                del self.restart_at[index]
                self.procs[index] = self.spawn(index)
                self.started_at[index] = now


def _run(count: int, env: dict[str, str], config: Config,
         tick: Callable[[], None] | None = None) -> int:
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    gateways = GatewayWorkers(count, lambda i: _spawn(i, env), time.monotonic())
    workers = gateways.procs
    print(f"Hearth is running at http://{config.host}:{config.port}/ with {count} worker "
          f"processes (pids {', '.join(str(p.pid) for p in workers.values())}).", flush=True)
    while not stopping:
        # Polled often while a restart is pending, so a killed worker is back quickly.
        time.sleep(0.05 if gateways.restart_at else 0.2)
        if tick is not None:
            tick()
        gateways.poll(time.monotonic())
    for proc in workers.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in workers.values():
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0
