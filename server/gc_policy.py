"""Keep CPython's cyclic garbage collector from pausing a busy gateway for a second.

Measured (docs/BENCHMARKS.md, "The cyclic garbage collector"): at 10,000 connections the
process holds about 850,000 GC-tracked objects, almost all of them long-lived
(connections, sessions, channel views). Every full (generation 2) collection walks all
of them: 0.8–0.95 s with the event loop stopped, every 5–10 s under chat load, which
*was* the p99 of chat and broadcast at 10,000.

Policy:

- no automatic full collections: the oldest generation's threshold is set out of
  reach. Freezing alone was not enough: under chat load some 60,000 objects a second
  still reached the old generation between freezes and CPython collected it every few
  seconds (150–600 ms at 10,000 connections, measured with ``gc.callbacks``). The young
  generations keep CPython's thresholds: a young generation of 10,000 was tried and made
  each young collection 20–65 ms.
- every ``freeze_interval_s``: collect the young generations (cheap: they are small),
  then ``gc.freeze()``, so the startup objects and long-lived connections sit in the
  permanent generation.
- every ``full_interval_s``: ``gc.unfreeze()`` and one full collection. Reference cycles
  that became garbage since (a closed connection's protocol ↔ transport cycle, for
  instance) are reclaimed here and nowhere else. This is the one long pause left (about
  0.9 s at 10,000 connections per process), once per ``full_interval_s``.

Reference counting still frees all acyclic garbage at once; only cycles wait for the
full collection. ``freeze_interval_s`` 0 turns the policy off (CPython's defaults).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 700
"""Allocations (minus deallocations) between young collections (CPython's default)."""
MIDDLE_THRESHOLD = 10
OLD_THRESHOLD = 1_000_000_000
"""Out of reach: full collections happen only when this policy runs one."""


class GcPolicy:
    def __init__(self, *, freeze_interval_s: float, full_interval_s: float) -> None:
        self.freeze_interval_s = freeze_interval_s
        self.full_interval_s = max(full_interval_s, freeze_interval_s)
        self.freezes = 0
        self.full_collections = 0
        self.last_full_pause_s = 0.0

    @property
    def enabled(self) -> bool:
        return self.freeze_interval_s > 0

    def freeze(self) -> None:
        gc.collect(1)
        gc.freeze()
        self.freezes += 1

    def full_collection(self) -> int:
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        self.last_full_pause_s = time.perf_counter() - started
        self.full_collections += 1
        log.info("gc: full collection freed %d objects in %.0f ms", found,
                 self.last_full_pause_s * 1000)
        self.freeze()
        return found

    def install(self) -> None:
        gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)

    async def run(self) -> None:
        if not self.enabled:
            return
        previous = gc.get_threshold()
        self.install()
        try:
            await self._run()
        finally:
            gc.set_threshold(*previous)

    async def _run(self) -> None:
        self.freeze()  # the modules, the app, the pools
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(self.freeze_interval_s)
            if time.monotonic() - last_full >= self.full_interval_s:
                self.full_collection()
                last_full = time.monotonic()
            else:
                self.freeze()
