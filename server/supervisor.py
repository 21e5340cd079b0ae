"""``hearth serve --workers N``: N gateway processes sharing one port.

The supervisor owns what the workers share: the embedded PostgreSQL (if no external
one is configured), the migrations (run once, before any worker starts), the token
secret, and the prometheus multiprocess directory. Each worker is ``hearth serve`` in
single-process mode with ``SO_REUSEPORT``, so the kernel spreads connections across
them; they exchange events through Redis. A worker that dies is started again after a
short pause (its clients reconnect to the others meanwhile and resume). SIGTERM/SIGINT
are passed on, so every worker drains its clients (close 1001) before exiting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time

from server.config import Config, secret_for, worker_count
from server.metrics import MULTIPROC_ENV, mark_process_dead

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0


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
        return _run(count, env, config)
    finally:
        if embedded is not None:
            embedded.stop()


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


def _run(count: int, env: dict[str, str], config: Config) -> int:
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workers = {i: _spawn(i, env) for i in range(count)}
    print(f"Hearth is running at http://{config.host}:{config.port}/ with {count} worker "
          f"processes (pids {', '.join(str(p.pid) for p in workers.values())}).", flush=True)
    died_at: dict[int, float] = {}
    while not stopping:
        time.sleep(0.2)
        for index, proc in list(workers.items()):
            if proc.poll() is None:
                continue
            if index not in died_at:
                log.warning("worker %d (pid %d) exited with %s; restarting", index, proc.pid,
                            proc.returncode)
                mark_process_dead(proc.pid)
                died_at[index] = time.monotonic()
            elif time.monotonic() - died_at[index] >= RESTART_DELAY_S:
                del died_at[index]
                workers[index] = _spawn(index, env)
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
