"""Security properties of real media worker processes: what a worker inherits from
its parent, and which remote ICE candidates it will send connectivity checks to."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator

import pytest

from rooms.media import passthrough
from rooms.media.pool import MediaPool


@pytest.fixture
async def sock_dir() -> AsyncIterator[str]:
    # AF_UNIX paths are limited to ~100 bytes: pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="hm-", dir="/tmp")
    passthrough.set_host_address_mode("loopback")
    yield path
    passthrough.set_host_address_mode("default")
    shutil.rmtree(path, ignore_errors=True)


def _environ_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    pairs = (item.decode().partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_spawned_worker_does_not_inherit_the_gateway_secrets(
    sock_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEARTH_SECRET", "s3cret-signing-key")
    monkeypatch.setenv("HEARTH_DATABASE_URL", "postgresql://hearth:pw@db/hearth")
    monkeypatch.setenv("HEARTH_REDIS_URL", "redis://:pw@redis:6379/0")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    key = os.urandom(32)
    pool = await MediaPool.start(1, sock_dir, ice="loopback", key=key)
    try:
        env = _environ_of(pool.pids[0])
        assert "HEARTH_SECRET" not in env
        assert "HEARTH_DATABASE_URL" not in env
        assert "HEARTH_REDIS_URL" not in env
        # What it needs to run (and the proof that it did: it answered with the key).
        assert env["PATH"] == os.environ["PATH"]
        assert env["LC_ALL"] == "C.UTF-8"
        assert env["HEARTH_MEDIA_KEY"] == key.hex()
        stats = await pool.stats()
        assert [s.rooms for s in stats.values()] == [0]
    finally:
        await pool.close()
