"""Per-user limits: a burst, then an even rate; shared by every process via Redis."""

from __future__ import annotations

import asyncio

import pytest

from rooms.realtime.rate_limit import LocalRateLimiter, RateLimiter, RedisRateLimiter


async def _burst_then_wait(limiter: RateLimiter, key: str) -> None:
    allowed = [await limiter.check(key) for _ in range(5)]
    assert allowed == [None] * 5
    wait = await limiter.check(key)
    assert wait is not None and 0 < wait <= 100
    await asyncio.sleep((wait + 20) / 1000)
    assert await limiter.check(key) is None
    assert await limiter.check("someone-else") is None


async def test_local_limiter() -> None:
    await _burst_then_wait(LocalRateLimiter(burst=5, interval_ms=100), "u1")


async def test_redis_limiter_is_shared_between_processes(redis_url: str) -> None:
    # Two limiters stand for two gateway processes: the allowance is one.
    a = RedisRateLimiter(redis_url, burst=5, interval_ms=100)
    b = RedisRateLimiter(redis_url, burst=5, interval_ms=100)
    try:
        key = f"shared-{id(a)}"
        results = [await (a if i % 2 else b).check(key) for i in range(5)]
        assert results == [None] * 5
        assert await a.check(key) is not None
        assert await b.check(key) is not None
        await _burst_then_wait(a, f"again-{id(a)}")
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("burst", [1, 3])
async def test_steady_rate_after_the_burst(burst: int) -> None:
    limiter = LocalRateLimiter(burst=burst, interval_ms=50)
    assert [await limiter.check("k") for _ in range(burst)] == [None] * burst
    assert await limiter.check("k") is not None
