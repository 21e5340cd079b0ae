"""A bound on the identify/resume work a gateway process does at once.

After a process dies, its clients reconnect to the survivors and resume all at once.
Unbounded, every accepted resume starts at once: thousands of them interleave in the
database pool's and Redis's queues, each advancing a step per round, so they all finish
late together (the p50 close to the p99) and attempts their clients gave up on still
run to the end. Here at most ``limit`` sessions are started at a time, each served whole
(authentication, claim, view, replay, catch-up) before the next waiting one begins, in
arrival order: throughput is the same, but completions are spread from the first second
on instead of bunched at the end.

When the queue is longer than ``max_queue_s`` of work (estimated from how long recent
holders held a slot), a newcomer is refused at once instead of waiting: the gateway
answers it with the retryable path (``reconnect`` with ``retry_after_ms``, then close
1013; before the upgrade HTTP 503 with ``Retry-After``), the delay jittered between the
time until the queue is back at its limit and the whole backlog, so the retries arrive
as room opens.

FIFO is kept by a queue of futures rather than :class:`asyncio.Semaphore`, whose order
among waiters is not a documented guarantee and which does not count its waiters.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable


class GateBusy(Exception):
    """The queue is over its limit: retry after ``retry_after_ms``."""

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(f"busy; retry after {retry_after_ms} ms")
        self.retry_after_ms = retry_after_ms


class SessionGate:
    """At most ``limit`` holders at once, first come first served; refuses newcomers
    while the estimated wait exceeds ``max_queue_s``."""

    INITIAL_HOLD_S = 0.05
    """Assumed hold time before any was measured (a resume's few round trips)."""
    MIN_RETRY_MS = 1000
    MAX_RETRY_MS = 30_000
    """The client's ``retry_after_ms`` stays within these (jittered in between)."""

    def __init__(self, limit: int, max_queue_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1:
            raise ValueError("the session gate needs a limit of at least 1")
        self.limit = limit
        self.max_queue_s = max_queue_s
        self._clock = clock
        self.active = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.hold_s = self.INITIAL_HOLD_S
        """Moving average of how long a holder keeps its slot."""
        self.refused = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def backlog_s(self) -> float:
        """Estimated wait of a newcomer: the queue ahead of it, ``limit`` at a time."""
        return len(self._waiters) * self.hold_s / self.limit

    def refusal(self) -> int | None:
        """``retry_after_ms`` for a newcomer if the queue is over its limit, else None.

        Uniform between the excess (``backlog - max_queue_s``: when the queue will be
        back at its limit) and the whole backlog: the refused come back as room opens
        over the next ``max_queue_s``, rather than all at once or after the queue has
        run dry (a delay of the whole backlog or more leaves the process idle while
        they wait, and they finish later than if they had queued)."""
        backlog = self.backlog_s()
        if not self._waiters or backlog <= self.max_queue_s:
            return None
        ms = int(random.uniform(backlog - self.max_queue_s, backlog) * 1000)
        return min(max(ms, self.MIN_RETRY_MS), self.MAX_RETRY_MS)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body; raises :class:`GateBusy` instead of queueing
        when the queue is over its limit."""
        retry_after = self.refusal()
        if retry_after is not None:
            self.refused += 1
            raise GateBusy(retry_after)
        await self._acquire()
        started = self._clock()
        try:
            yield
        finally:
            held = self._clock() - started
            self.hold_s += (held - self.hold_s) * 0.05
            self._release()

    async def _acquire(self) -> None:
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot in the same pass: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        """Hand the slot to the first waiter (``active`` unchanged), else free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1
