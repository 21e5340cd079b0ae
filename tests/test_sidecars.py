"""Sidecars across processes on real PostgreSQL and Redis: ``hearth serve --only``, the
outbox consumed at least once and handled once through a kill, and a sidecar's event
reaching a member's session on a gateway process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from persistence import outbox
from persistence.database import Database
from protocol.domain_events import MessageSent
from protocol.sidecar import ActivityKind, ActivityRecorded
from rooms.realtime.hub import Hub
from rooms.realtime.redis_bus import RedisBus
from server.config import load_config
from server.lifecycle import TaskSupervisor
from server.sidecar_host import CoreHost, SidecarCore, discover, selected_sidecars
from tests.conftest import TEST_SECRET, free_port, start_server_process, stop_server_process
from tests.helpers import GatewayClient, bearer, register

pytestmark = pytest.mark.slow


def _env(database_url: str, **extra: str) -> dict[str, str]:
    return dict(os.environ, HEARTH_DATABASE_URL=database_url, HEARTH_SECRET=TEST_SECRET,
                HEARTH_LOG_LEVEL="WARNING", HEARTH_ARGON2_TIME_COST="1",
                HEARTH_ARGON2_MEMORY_KIB="8192", HEARTH_WORKERS="1",
                HEARTH_DATA_DIR=tempfile.mkdtemp(prefix="hearth-sidecar-"), **extra)


class SidecarProcess:
    def __init__(self, database_url: str, name: str, **extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = _env(database_url, **extra)
        self.log = Path(env["HEARTH_DATA_DIR"]) / "sidecar.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "serve", "--port", str(self.port),
                 "--only", name], env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("sidecar did not start:\n" + self.log.read_text())
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def sidecars_started() -> Iterator[list[SidecarProcess]]:
    started: list[SidecarProcess] = []
    try:
        yield started
    finally:
        for p in started:
            p.stop()


async def test_only_serves_just_that_sidecar(database_url: str,
                                             sidecars_started: list[SidecarProcess]) -> None:
    assert "activity" in discover()
    side = SidecarProcess(database_url, "activity")
    sidecars_started.append(side)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{side.url}/healthz") as reply:
            assert (await reply.json())["sidecars"] == ["activity"]
        async with http.get(f"{side.url}/gateway") as reply:
            assert reply.status == 404  # no gateway in a sidecar process
        async with http.get(f"{side.url}/api/v1/communities/1/members/1/activity") as reply:
            assert reply.status == 401
            assert (await reply.json())["error"]["code"] == "unauthorized"
    # an unknown name is refused before anything starts
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--only", "nope",
        env=_env(database_url), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"unknown sidecar" in stderr
    def selected(value: str | None) -> list[str] | None:
        environ = {} if value is None else {"HEARTH_SIDECARS": value}
        return selected_sidecars(load_config(overrides={}, environ=environ))

    assert selected("none") == []
    assert selected("a, b") == ["a", "b"]
    assert selected(None) is None and selected("all") is None


async def _counts(db: Database) -> tuple[int, int, int]:
    """(rows, distinct events, events handled more than once) in the activity table."""
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT event_id) AS d, "
            "(SELECT count(*) FROM (SELECT event_id FROM activity_items GROUP BY event_id"
            " HAVING count(*) > 1) x) AS dup FROM activity_items")
        assert row is not None
        return int(row["n"]), int(row["d"]), int(row["dup"])


async def test_backlog_is_handled_once_through_a_kill_and_two_consumers(
        database_url: str, sidecars_started: list[SidecarProcess]) -> None:
    total = 3000
    db = await Database.connect(database_url, min_size=1, max_size=3)
    try:
        # a rolled-back change: its events must never show up
        with pytest.raises(RuntimeError):
            async with db.transaction("t") as conn:
                await outbox.append_txn(conn, [MessageSent(
                    message_id=999_999, channel_id=1, community_id=1, author_id=1, seq=1,
                    at=1)])
                raise RuntimeError("rolled back")
        for start in range(0, total, 500):
            async with db.transaction("t") as conn:
                await outbox.append_txn(conn, [
                    MessageSent(message_id=i + 1, channel_id=1, community_id=1,
                                author_id=1 + i % 7, seq=i + 1, at=1_700_000_000_000)
                    for i in range(start, start + 500)])
        first = SidecarProcess(database_url, "activity")
        sidecars_started.append(first)
        deadline = time.monotonic() + 60
        while (await _counts(db))[0] == 0:  # it started handling: kill it mid-way
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        first.kill()
        after_kill = (await _counts(db))[0]
        # two consumers of the same subscriber at once, in two processes
        sidecars_started.append(SidecarProcess(database_url, "activity"))
        sidecars_started.append(SidecarProcess(database_url, "activity"))
        while (await _counts(db))[1] < total:
            assert time.monotonic() < deadline, await _counts(db)
            await asyncio.sleep(0.1)
        rows, distinct, duplicated = await _counts(db)
        assert (rows, distinct, duplicated) == (total, total, 0)
        assert after_kill < total  # the kill really was mid-way
        async with db.connection() as conn:
            assert await conn.fetchval(
                "SELECT count(*) FROM activity_items WHERE object_id = 999999") == 0
            totals = await conn.fetch("SELECT user_id, total FROM activity_totals "
                                      "WHERE kind = 'message' ORDER BY user_id")
        assert sum(r["total"] for r in totals) == total  # counted once each
    finally:
        await db.close()


async def test_a_sidecar_event_reaches_the_member_on_a_gateway_process(
        database_url: str, redis_url: str, sidecars_started: list[SidecarProcess]) -> None:
    """The gateway runs no sidecar (HEARTH_SIDECARS=none); the activity sidecar runs as
    its own process. A message sent through the gateway reaches the sidecar through the
    outbox, and the sidecar's ``activity_recorded`` reaches the author's session on the
    gateway through Redis. Then the publish API itself, from this (third) process."""
    gateway = start_server_process(database_url, HEARTH_REDIS_URL=redis_url,
                                   HEARTH_SIDECARS="none")
    try:
        side = SidecarProcess(database_url, "activity", HEARTH_REDIS_URL=redis_url)
        sidecars_started.append(side)
        async with aiohttp.ClientSession() as http:
            me = await register(http, gateway.url)
            token = me["access_token"]
            async with http.post(f"{gateway.url}/api/v1/communities", json={"name": "sc"},
                                 headers=bearer(token)) as reply:
                created = await reply.json()
                assert reply.status == 201, created
            community_id = created["community"]["id"]
            channel_id = created["channels"][0]["id"]
            client = await GatewayClient.identified(http, gateway.ws_url, token)
            await client.ok("send_message", channel_id=channel_id, content="hello", nonce="a")
            event = await client.event("activity_recorded", timeout=20, kind="message")
            assert event["community_id"] == community_id
            assert event["total"] == 1
            # the REST read on the sidecar process
            url = (f"{side.url}/api/v1/communities/{community_id}/members/"
                   f"{me['user']['id']}/activity")
            async with http.get(url, headers=bearer(token)) as reply:
                body = await reply.json()
                assert reply.status == 200, body
            kinds = [a["kind"] for a in body["activity"]]
            assert "message" in kinds and "joined" in kinds
            assert body["totals"]["message"] == 1
            # an outsider cannot read it
            other = await register(http, gateway.url)
            async with http.get(url, headers=bearer(other["access_token"])) as reply:
                assert reply.status == 404

            # service keys made on the gateway process, used on the sidecar process
            keys = f"{gateway.url}/api/v1/communities/{community_id}/service-keys"
            made = {}
            for name, scope in (("reader", "members:read"), ("wrong", "tiers:read")):
                async with http.post(keys, headers=bearer(token),
                                     json={"name": name, "scopes": [scope]}) as reply:
                    made[name] = await reply.json()
                    assert reply.status == 201, made[name]
            async with http.get(url, headers=bearer(made["reader"]["secret"])) as reply:
                assert reply.status == 200, await reply.text()
            async with http.get(url, headers=bearer(made["wrong"]["secret"])) as reply:
                assert reply.status == 403
                assert (await reply.json())["error"]["code"] == "forbidden"
            async with http.delete(f"{keys}/{made['reader']['key']['id']}",
                                   headers=bearer(token)) as reply:
                assert reply.status == 200
            async with http.get(url, headers=bearer(made["reader"]["secret"])) as reply:
                assert reply.status == 401  # revoked on one process, refused on the other

            # publish_to_user from another process through the published surface
            config = load_config(overrides={"database_url": database_url,
                                            "secret": TEST_SECRET, "redis_url": redis_url},
                                 environ={})
            bus = RedisBus(redis_url)
            await bus.start()
            try:
                hub = Hub(bus)
                host = CoreHost(SidecarCore(config, Database(), hub, None, None,  # type: ignore[arg-type]
                                            TaskSupervisor()))
                await host.publish_to_user(me["user"]["id"], ActivityRecorded(
                    community_id=community_id, kind=ActivityKind.LIVE, total=7, at=1))
                got = await client.event("activity_recorded", timeout=10, kind="live")
                assert got["total"] == 7
                # and to the community's members (the transport; the activity sidecar
                # itself only ever tells the member concerned)
                await host.publish_to_community(community_id, ActivityRecorded(
                    community_id=community_id, kind=ActivityKind.JOINED, total=9, at=1))
                got = await client.event("activity_recorded", timeout=10, kind="joined",
                                         total=9)
                assert got["community_id"] == community_id
            finally:
                await bus.close()
            await client.close()
    finally:
        stop_server_process(gateway)


async def test_courses_alone_beside_a_gateway_without_sidecars(
        database_url: str, sidecars_started: list[SidecarProcess]) -> None:
    """``hearth serve --only courses`` serves the course routes against the gateway's
    database; the gateway (``HEARTH_SIDECARS=none``) has no course check, so a live
    session whose prerequisite is a course id refuses registration with
    ``unavailable`` (fails closed) rather than letting everyone in."""
    gateway = start_server_process(database_url, HEARTH_SIDECARS="none")
    try:
        side = SidecarProcess(database_url, "courses")
        sidecars_started.append(side)
        async with aiohttp.ClientSession() as http:
            owner = await register(http, gateway.url)
            learner = await register(http, gateway.url)
            api, courses_api = gateway.url + "/api/v1", side.url + "/api/v1"

            async def call(base: str, who: dict[str, Any], method: str, path: str,
                           body: Any = None) -> tuple[int, Any]:
                async with http.request(method, base + path, json=body,
                                        headers=bearer(who["access_token"])) as reply:
                    return reply.status, await reply.json()

            status, made = await call(api, owner, "POST", "/communities", {"name": "c"})
            cid = made["community"]["id"]
            _, invite = await call(api, owner, "POST", f"/communities/{cid}/invites", {})
            await call(api, learner, "POST", f"/invites/{invite['code']}/join", {})
            status, course = await call(courses_api, owner, "POST",
                                        f"/communities/{cid}/courses", {"title": "Solo"})
            assert status == 201, course
            course_id = course["course"]["id"]
            status, _ = await call(courses_api, owner, "PATCH",
                                   f"/communities/{cid}/courses/{course_id}",
                                   {"status": "published"})
            assert status == 200
            status, got = await call(courses_api, learner, "POST",
                                     f"/communities/{cid}/courses/{course_id}/enrolment")
            assert status == 200 and got["enrolment"]["state"] == "active", got
            status, _ = await call(api, owner, "GET", f"/communities/{cid}/courses")
            assert status == 404  # not mounted on the gateway
            status, live = await call(api, owner, "POST", f"/communities/{cid}/live-sessions",
                                      {"title": "t", "starts_at": 4_000_000_000_000,
                                       "prerequisite_course": str(course_id)})
            assert status == 201, live
            status, refused = await call(
                api, learner, "POST",
                f"/communities/{cid}/live-sessions/{live['session']['id']}/register")
            assert status == 503 and refused["error"]["code"] == "unavailable", refused
    finally:
        stop_server_process(gateway)
