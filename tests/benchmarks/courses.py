"""Courses budget checks (docs/courses.md "Numbers"): run by hand, not a test.

    .venv/bin/python -m tests.benchmarks.courses \\
        --dsn postgresql://postgres@127.0.0.1:5432/postgres \\
        [--learners 10000] [--connected 2000] [--seconds 10]

Starts ``hearth serve`` (one process) on a fresh database, provisions ``learners`` bot
accounts in one community (the first made owner), a published course of 10 modules x 20
lessons, every learner enrolled (SQL), and one learner with every lesson completed.
Then, from this process (the client shares the machine's cores with the server):

1. **outline**: ``GET .../courses/{id}`` as the learner with full progress, open loop at
   200 requests/s for ``seconds``: latency p50/p99 (budget p99 <= 20 ms);
2. **heartbeats**: every learner beats every 10 s (``learners``/10 requests/s, open
   loop) for ``seconds``: latency p50/p99 (budget p99 <= 50 ms) and a check that every
   acknowledged beat's time is in the database (nothing lost);
3. **drip**: ``connected`` learners on the gateway; a module dripping at now + 3 s is
   added (a schedule row for every enrolled learner); the time from the drip time to
   each connected learner's ``lesson_unlocked`` (budget: all within 5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from tests.conftest import start_server_process, stop_server_process
from tests.helpers import GatewayClient, bearer


def _db(dsn: str, name: str) -> str:
    p = urlsplit(dsn)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def open_loop(rate: float, seconds: float, call: Any) -> list[float]:
    """``call(i)`` at ``rate`` per second for ``seconds`` (not waiting for replies):
    the latency of each, in ms."""
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []

    async def one(i: int) -> None:
        t = time.perf_counter()
        await call(i)
        latencies.append((time.perf_counter() - t) * 1000)

    total = int(rate * seconds)
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return latencies


async def run(dsn: str, learners: int, connected: int, seconds: float) -> None:
    name = f"hearth_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = _db(dsn, name)
    server = start_server_process(url, HEARTH_LOG_LEVEL="WARNING")
    try:
        await bench(server.url, server.ws_url, url, learners, connected, seconds)
    finally:
        stop_server_process(server)
        admin = await asyncpg.connect(dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def bench(base: str, ws_url: str, db_url: str, learners: int, connected: int,
                seconds: float) -> None:
    api = base + "/api/v1"
    connector = aiohttp.TCPConnector(limit=400)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(api + "/loadtest/provision",
                             json={"users": learners + 1, "room_size": 1}) as reply:
            provisioned = await reply.json()
            assert reply.status == 201, provisioned
        cid = provisioned["community_id"]
        users = provisioned["users"]
        owner, people = users[0], users[1:]
        conn = await asyncpg.connect(db_url)
        await conn.execute("UPDATE community_members SET role = 'owner' WHERE"
                           " community_id = $1 AND user_id = $2", cid, owner["id"])

        async def post(path: str, body: Any, token: str = owner["token"]) -> Any:
            async with http.post(api + path, json=body, headers=bearer(token)) as reply:
                got = await reply.json()
                assert reply.status in (200, 201), got
                return got

        courses = f"/communities/{cid}/courses"
        course = (await post(courses, {"title": "Bench"}))["course"]["id"]
        async with http.patch(api + f"{courses}/{course}", json={"status": "published"},
                              headers=bearer(owner["token"])) as reply:
            assert reply.status == 200
        lessons = []
        for m in range(10):
            module = (await post(f"{courses}/{course}/modules",
                                 {"title": f"M{m}", "position": m}))["module"]["id"]
            for i in range(20):
                lessons.append((await post(f"{courses}/{course}/lessons", {
                    "module_id": module, "title": f"L{m}.{i}", "kind": "video",
                    "duration_s": 600, "position": i}))["lesson"]["id"])
        await conn.execute(
            "INSERT INTO enrolments (course_id, community_id, user_id, state, activated_at)"
            " SELECT $1, $2, u, 'active', now() FROM unnest($3::bigint[]) AS u",
            course, cid, [p["id"] for p in people])
        star = people[0]
        enrolment = await conn.fetchval("SELECT id FROM enrolments WHERE user_id = $1",
                                        star["id"])
        await conn.execute(
            "INSERT INTO lesson_progress (enrolment_id, lesson_id, state, watched_s,"
            " completed_at) SELECT $1, l, 'completed', 600, now() FROM unnest($2::bigint[])"
            " AS l", enrolment, lessons)
        await conn.execute("ANALYZE")

        # 1. the outline
        async def outline(i: int) -> None:
            async with http.get(api + f"{courses}/{course}",
                                headers=bearer(star["token"])) as reply:
                body = await reply.read()
                assert reply.status == 200 and len(body) > 1000
        await open_loop(50, 2, outline)  # warm-up
        alone = []
        for _ in range(200):  # one at a time: the service time without queueing
            t = time.perf_counter()
            await outline(0)
            alone.append((time.perf_counter() - t) * 1000)
        print(f"outline one at a time: p50={pct(alone, .5):.1f} ms "
              f"p99={pct(alone, .99):.1f} ms")

        async def me(i: int) -> None:
            async with http.get(api + "/users/@me", headers=bearer(star["token"])) as reply:
                await reply.read()
        lat = await open_loop(200, seconds, me)
        print(f"baseline GET /users/@me at 200/s: p50={pct(lat, .5):.1f} ms "
              f"p99={pct(lat, .99):.1f} ms (what this machine gives any route)")
        lat = await open_loop(200, seconds, outline)
        print(f"outline (200 lessons, full progress) at 200/s for {seconds:.0f}s: "
              f"n={len(lat)} p50={pct(lat, .5):.1f} ms p99={pct(lat, .99):.1f} ms "
              f"max={max(lat):.1f} ms")

        # 2. heartbeats
        rate = len(people) / 10
        first = lessons[0]
        acked = 0

        async def beat(i: int) -> None:
            nonlocal acked
            who = people[i % len(people)]
            async with http.post(api + f"{courses}/{course}/progress", headers=bearer(
                    who["token"]), json={"items": [{"lesson_id": first, "watched_s": i % 600,
                                                    "position_s": i % 600,
                                                    "time_spent_s": 10}]}) as reply:
                await reply.read()
                if reply.status == 200:
                    acked += 1
        lat = await open_loop(rate, seconds, beat)
        stored = await conn.fetchval(
            "SELECT coalesce(sum(time_spent_s), 0) FROM lesson_progress WHERE lesson_id = $1",
            first)
        print(f"heartbeats ({len(people)} learners every 10 s = {rate:.0f}/s) for "
              f"{seconds:.0f}s: n={len(lat)} acked={acked} p50={pct(lat, .5):.1f} ms "
              f"p99={pct(lat, .99):.1f} ms max={max(lat):.1f} ms; stored time "
              f"{stored} s = acked x 10: {stored == acked * 10}")

        # 3. drip to connected learners (their own session: a websocket holds its
        # connection, so the REST session's connection limit must not apply)
        clients: list[GatewayClient] = []
        sem = asyncio.Semaphore(50)
        sockets = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

        async def connect(person: dict[str, Any]) -> None:
            async with sem:
                clients.append(await GatewayClient.identified(sockets, ws_url,
                                                              person["token"]))
        await asyncio.gather(*(connect(p) for p in people[:connected]))
        now = int(await conn.fetchval("SELECT extract(epoch FROM now()) * 1000"))
        at = now + 3000
        module = (await post(f"{courses}/{course}/modules",
                             {"title": "Drip", "position": 99, "drip": "at_date",
                              "drip_at": at}))["module"]["id"]
        await post(f"{courses}/{course}/lessons",
                   {"module_id": module, "title": "Dripped", "kind": "text"})
        rows = await conn.fetchval("SELECT count(*) FROM module_unlocks WHERE module_id = $1",
                                   module)

        async def wait(client: GatewayClient) -> float:
            await client.event("lesson_unlocked", timeout=30, module_id=module)
            return time.time() * 1000 - at
        delays = await asyncio.gather(*(wait(c) for c in clients), return_exceptions=True)
        got = [d for d in delays if isinstance(d, float)]
        print(f"drip: {rows} scheduled unlocks, {len(clients)} connected learners, "
              f"{len(got)} got lesson_unlocked; after the drip time p50="
              f"{pct(got, .5):.0f} ms p99={pct(got, .99):.0f} ms max="
              f"{max(got) if got else float('nan'):.0f} ms")
        lag = await conn.fetchrow(
            "SELECT max(notified_at - unlock_at) AS worst, count(*) AS n FROM module_unlocks"
            " WHERE module_id = $1 AND notified_at IS NOT NULL", module)
        assert lag is not None
        print(f"drip, server side: {lag['n']} unlocks claimed, the last "
              f"{lag['worst'].total_seconds() * 1000:.0f} ms after its time")
        for client in clients:
            await client.close()
        await sockets.close()
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--learners", type=int, default=10_000)
    parser.add_argument("--connected", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    asyncio.run(run(args.dsn, args.learners, args.connected, args.seconds))


if __name__ == "__main__":
    main()
