"""The GC policy: frozen objects are out of the collector's reach until the periodic
full collection, which reclaims cycles that died meanwhile."""

from __future__ import annotations

import asyncio
import gc
import weakref

from server.gc_policy import GcPolicy


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_a_frozen_cycle_survives_collections_until_the_full_one() -> None:
    policy = GcPolicy(freeze_interval_s=30, full_interval_s=900)
    try:
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        policy.freeze()
        assert gc.get_freeze_count() > 0
        del a, b
        gc.collect()  # an ordinary full collection does not walk the frozen objects
        assert alive() is not None
        policy.full_collection()
        assert alive() is None
        assert policy.full_collections == 1 and policy.freezes == 2
        assert gc.get_freeze_count() > 0  # frozen again after the full collection
    finally:
        gc.unfreeze()


def test_disabled_policy_does_nothing() -> None:
    assert not GcPolicy(freeze_interval_s=0, full_interval_s=900).enabled


async def test_running_policy_turns_off_automatic_full_collections_and_restores() -> None:
    before = gc.get_threshold()
    policy = GcPolicy(freeze_interval_s=30, full_interval_s=900)
    task = asyncio.get_running_loop().create_task(policy.run())
    try:
        await asyncio.sleep(0.05)
        _, _, old = gc.get_threshold()
        assert old >= 10**9 > before[2]
        assert policy.freezes == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        gc.unfreeze()
    assert gc.get_threshold() == before
