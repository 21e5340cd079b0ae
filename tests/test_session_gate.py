"""The bound on concurrent identify/resume work (server/session_gate.py): never more
than ``limit`` holders, every one served in arrival order, newcomers refused with a
retry delay proportional to the backlog once the queue is over its limit. Holders are
released by the test (events), never by sleeps; the clock is explicit."""

from __future__ import annotations

import asyncio

import pytest

from server.session_gate import GateBusy, SessionGate


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_n_concurrent_holders_never_exceed_the_bound_and_all_are_served_fifo() -> None:
    limit, n = 3, 20
    gate = SessionGate(limit, max_queue_s=3600.0)
    inside = 0
    most = 0
    entered: list[int] = []
    release = [asyncio.Event() for _ in range(n)]
    came_in = [asyncio.Event() for _ in range(n)]

    async def start(i: int) -> None:
        nonlocal inside, most
        async with gate.slot():
            inside += 1
            most = max(most, inside)
            entered.append(i)
            came_in[i].set()
            await release[i].wait()
            inside -= 1

    tasks = [asyncio.create_task(start(i)) for i in range(n)]
    for _ in range(3):
        await asyncio.sleep(0)  # let them all arrive
    assert entered == [0, 1, 2] and gate.waiting == n - limit
    for i in range(n):  # finish them one by one, in the order they entered
        await came_in[i].wait()
        release[i].set()
        await tasks[i]
        assert inside <= limit
    assert entered == list(range(n))  # first come, first served
    assert most == limit
    assert gate.active == 0 and gate.waiting == 0


async def test_a_cancelled_waiter_leaves_the_queue_and_loses_no_slot() -> None:
    gate = SessionGate(1, max_queue_s=3600.0)
    holder_done = asyncio.Event()

    async def hold() -> None:
        async with gate.slot():
            await holder_done.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert gate.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.waiting == 0
    holder_done.set()
    await holder
    assert gate.active == 0
    async with gate.slot():  # the slot is free again
        assert gate.active == 1


async def test_over_the_queue_limit_newcomers_are_refused_with_a_backlog_retry() -> None:
    clock = Clock()
    gate = SessionGate(2, max_queue_s=5.0, clock=clock)
    gate.hold_s = 1.0  # measured: a holder keeps its slot one second
    done = asyncio.Event()

    async def start() -> None:
        async with gate.slot():
            await done.wait()

    # 2 holders + 10 waiters: 10 x 1 s / 2 = 5 s of queue, at the limit: still queued.
    tasks = [asyncio.create_task(start()) for _ in range(12)]
    await asyncio.sleep(0)
    assert gate.active == 2 and gate.waiting == 10
    assert gate.refusal() is None
    tasks.append(asyncio.create_task(start()))  # 5.5 s: the next one is refused
    await asyncio.sleep(0)
    assert gate.waiting == 11
    for _ in range(50):
        retry = gate.refusal()
        assert retry is not None
        assert 1000 <= retry <= 5500  # between the excess (0.5 s, at least 1 s) and all
    with pytest.raises(GateBusy) as refused:
        async with gate.slot():
            raise AssertionError("a refused newcomer must not enter")
    assert SessionGate.MIN_RETRY_MS <= refused.value.retry_after_ms <= SessionGate.MAX_RETRY_MS
    assert gate.refused == 1
    done.set()
    await asyncio.gather(*tasks)  # everyone queued was served
    assert gate.active == 0 and gate.waiting == 0
    assert gate.refusal() is None


async def test_hold_time_follows_what_holders_measure() -> None:
    clock = Clock()
    gate = SessionGate(4, max_queue_s=5.0, clock=clock)
    for _ in range(200):
        async with gate.slot():
            clock.now += 0.2
    assert gate.hold_s == pytest.approx(0.2, rel=0.01)
