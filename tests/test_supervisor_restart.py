"""The supervisor's restart policy for gateway workers (server/supervisor.py).

A worker killed by a signal after it settled is restarted at once, so the reconnect
storm of its clients is shared by two processes again; one that crashes soon after
start (a crash loop) or exits on its own waits :data:`RESTART_DELAY_S`. Fake processes
and an explicit clock: no processes, no sleeps.
"""

from __future__ import annotations

import signal
import subprocess
from typing import cast

from server.supervisor import (
    RESTART_DELAY_S,
    SETTLED_AFTER_S,
    GatewayWorkers,
    restart_delay,
)


class FakeProc:
    """What :class:`GatewayWorkers` uses of a ``Popen``: ``poll``, ``returncode``, ``pid``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


def _workers(count: int, now: float) -> tuple[GatewayWorkers, list[tuple[int, FakeProc]]]:
    spawned: list[tuple[int, FakeProc]] = []

    def spawn(index: int) -> subprocess.Popen[bytes]:
        proc = FakeProc(1000 + len(spawned))
        spawned.append((index, proc))
        return cast(subprocess.Popen[bytes], proc)

    return GatewayWorkers(count, spawn, now), spawned


def test_restart_delay_policy() -> None:
    assert restart_delay(-signal.SIGKILL, SETTLED_AFTER_S) == 0.0
    assert restart_delay(-signal.SIGKILL, SETTLED_AFTER_S - 0.1) == RESTART_DELAY_S
    assert restart_delay(1, 3600.0) == RESTART_DELAY_S  # exited on its own: a bug
    assert restart_delay(0, 3600.0) == RESTART_DELAY_S


def test_a_settled_worker_killed_by_a_signal_is_restarted_in_the_same_poll() -> None:
    workers, spawned = _workers(2, now=0.0)
    assert [index for index, _ in spawned] == [0, 1]
    victim = spawned[0][1]
    victim.returncode = -signal.SIGKILL
    workers.poll(now=SETTLED_AFTER_S + 5)
    assert [index for index, _ in spawned] == [0, 1, 0]
    assert workers.procs[0] is cast(subprocess.Popen[bytes], spawned[2][1])
    assert workers.procs[1] is cast(subprocess.Popen[bytes], spawned[1][1])
    assert not workers.restart_at


def test_a_crash_loop_keeps_the_restart_delay() -> None:
    workers, spawned = _workers(2, now=0.0)
    spawned[1][1].returncode = -signal.SIGSEGV
    workers.poll(now=1.0)  # died one second after start: not settled
    assert len(spawned) == 2
    workers.poll(now=1.0 + RESTART_DELAY_S / 2)
    assert len(spawned) == 2
    workers.poll(now=1.0 + RESTART_DELAY_S)
    assert [index for index, _ in spawned] == [0, 1, 1]
    # The replacement dies at once too: delayed again, measured from its own start.
    spawned[2][1].returncode = -signal.SIGKILL
    workers.poll(now=1.5 + RESTART_DELAY_S)
    assert len(spawned) == 3
    workers.poll(now=1.5 + 2 * RESTART_DELAY_S)
    assert [index for index, _ in spawned] == [0, 1, 1, 1]


def test_a_worker_that_exits_on_its_own_waits_the_delay() -> None:
    workers, spawned = _workers(1, now=0.0)
    spawned[0][1].returncode = 1
    workers.poll(now=100.0)
    assert len(spawned) == 1
    workers.poll(now=100.0 + RESTART_DELAY_S)
    assert len(spawned) == 2
