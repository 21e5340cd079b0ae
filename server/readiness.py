"""Readiness from cached checks, so ``/readyz`` answers at once in every state.

A load balancer polls ``/readyz`` with a short timeout and takes a timeout for "down"
without the reason. Checking the stores inside the request made it as slow as the
slowest of them: while Redis is away the bus's ping waits for the publisher's back-off,
up to 2 s. Here each check runs in the background every ``interval_s`` with its own
``timeout_s`` (a check that does not answer in time has failed), and ``/readyz``
reports the latest results: it answers in well under 100 ms, and its answer is at most
``interval_s + timeout_s`` old.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[bool]]


class Readiness:
    """The latest result of every check; :meth:`run` keeps them current."""

    def __init__(self, checks: Mapping[str, Check], *, interval_s: float = 1.0,
                 timeout_s: float = 2.0) -> None:
        self._checks = dict(checks)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._results: dict[str, bool] = {}
        self._checked_at = 0.0
        self._first = asyncio.Event()
        self.changes = 0

    async def _one(self, name: str, check: Check) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await check()
        except TimeoutError:
            return False
        except Exception:
            log.warning("readiness check %s failed", name, exc_info=True)
            return False

    async def check_once(self) -> dict[str, bool]:
        """Run every check (concurrently) and keep the results."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._one(n, self._checks[n]) for n in names))
        fresh = dict(zip(names, results, strict=True))
        if self._results and fresh != self._results:
            self.changes += 1
            log.warning("readiness: %s", ", ".join(
                f"{name} {'up' if ok else 'down'}" for name, ok in fresh.items()
                if self._results.get(name) != ok))
        self._results = fresh
        self._checked_at = time.monotonic()
        self._first.set()
        return fresh

    async def run(self) -> None:
        """Check every ``interval_s`` until cancelled (a background task of the app)."""
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval_s)

    async def state(self, wait_s: float = 0.05) -> dict[str, bool]:
        """The latest results. Before the first round has finished, waits up to
        ``wait_s`` for it; results older than two rounds (the checks stopped running)
        count as failed, like checks never run."""
        if not self._first.is_set():
            try:
                async with asyncio.timeout(wait_s):
                    await self._first.wait()
            except TimeoutError:
                pass
        stale = time.monotonic() - self._checked_at > 2 * (self.interval_s + self.timeout_s)
        return {name: (not stale and self._results.get(name, False))
                for name in self._checks}
