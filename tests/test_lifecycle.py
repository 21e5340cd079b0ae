"""Background-task supervision and teardown (server/lifecycle.py): a crashed task is
logged the moment it dies and the running server's ``/readyz`` answers 503; teardown
runs every step, in reverse, when one of them fails, and reports each failure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from rooms.realtime.bus import InProcessBus
from server.app import SERVICES
from server.lifecycle import TaskSupervisor, Teardown
from tests.conftest import RunningServer, app_server


class Boom(Exception):
    pass


async def _crash_after(event: asyncio.Event) -> None:
    await event.wait()
    raise Boom("the committer fell over")


def _crash_logged(caplog: pytest.LogCaptureFixture, name: str) -> bool:
    return any(r.levelno == logging.ERROR and name in r.getMessage()
               and r.exc_info is not None and isinstance(r.exc_info[1], Boom)
               for r in caplog.records)


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_crash_is_logged_at_once_not_at_shutdown(
        caplog: pytest.LogCaptureFixture) -> None:
    supervisor = TaskSupervisor()
    go = asyncio.Event()
    task = supervisor.start("group-commit", _crash_after(go))
    forever = supervisor.start("sweeper", asyncio.Event().wait())  # type: ignore[arg-type]
    assert supervisor.healthy
    with pytest.raises(ValueError):
        supervisor.start("sweeper", asyncio.sleep(0))
    go.set()
    await asyncio.wait([task])
    await _until(lambda: not supervisor.healthy, "the supervisor to notice")
    assert _crash_logged(caplog, "group-commit")  # before close() was ever called
    assert isinstance(supervisor.failed["group-commit"], Boom)
    assert not forever.done()
    failures = await supervisor.close()
    assert forever.cancelled()
    assert [name for name, _ in failures] == ["group-commit"]
    assert sum(1 for r in caplog.records if "group-commit" in r.getMessage()) == 1


async def test_a_task_that_returns_is_a_failure_too() -> None:
    supervisor = TaskSupervisor()
    task = supervisor.start("presence", asyncio.sleep(0))
    await asyncio.wait([task])
    await _until(lambda: "presence" in supervisor.failed, "the supervisor to notice")
    assert await supervisor.close() == []


async def test_teardown_runs_every_step_in_reverse_and_reports_each_failure(
        caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []
    teardown = Teardown()

    def step(name: str, fail: bool = False) -> object:
        async def run() -> None:
            ran.append(name)
            if fail:
                raise Boom(name)
        return run

    teardown.push("redis", step("redis"))  # type: ignore[arg-type]
    teardown.push("bus", step("bus", fail=True))  # type: ignore[arg-type]
    teardown.push("presence", step("presence"))  # type: ignore[arg-type]
    teardown.push("media", step("media", fail=True))  # type: ignore[arg-type]
    failures = await teardown.run()
    assert ran == ["media", "presence", "bus", "redis"]
    assert [name for name, _ in failures] == ["media", "bus"]
    for name in ("media", "bus"):
        assert any(name in r.getMessage() and r.levelno == logging.ERROR
                   for r in caplog.records), name


async def test_a_crashed_background_task_makes_readyz_fail(
        live_server: RunningServer, http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    services = live_server.app[SERVICES]
    assert {"group-commit", "gateway-sweeper", "presence", "live-attendance",
            "live-reminders", "voice-attendance"} <= set(services.tasks.names())
    async with http.get(f"{live_server.url}/readyz") as reply:
        assert reply.status == 200, await reply.text()
    go = asyncio.Event()
    services.tasks.start("doomed", _crash_after(go))
    go.set()
    await _until(lambda: _crash_logged(caplog, "doomed"), "the crash to be logged")
    async with http.get(f"{live_server.url}/readyz") as reply:
        body = await reply.json()
        assert reply.status == 503, body
        assert body["checks"]["background"] is False, body


class BusThatFailsToClose(InProcessBus):
    async def close(self) -> None:
        raise Boom("the bus would not close")


async def test_the_server_tears_down_every_step_after_one_fails(
        database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="server.lifecycle")
    async with app_server(database_url, bus=BusThatFailsToClose()) as server:
        services = server.app[SERVICES]
    # No exception escaped the shutdown; the failure was reported by name...
    assert any(r.levelno == logging.ERROR and "teardown step bus failed" in r.getMessage()
               for r in caplog.records)
    steps = [r.getMessage().removeprefix("teardown: ") for r in caplog.records
             if r.getMessage().startswith("teardown: ") and "media" not in r.getMessage()]
    # ...and every step ran, newest first, those after the failing one included (the
    # media workers' step is there only where they are configured).
    assert steps == ["background-tasks", "voice", "presence", "hub", "bus",
                     "voice-join-limiter", "question-limiter", "report-limiter",
                     "user-limiter", "slowmode", "raid"]
    assert services.db.pool_or_none() is None  # the database closed after it


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# ------------------------------------------------------------------- sidecar tasks


@pytest.fixture
def crashing_sidecar_task(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """The activity sidecar given one task more, which crashes once the event is set."""
    from sidecars.activity import ActivitySidecar

    go = asyncio.Event()
    monkeypatch.setattr(ActivitySidecar, "tasks", lambda self: [lambda: _crash_after(go)])
    return go


async def _readyz_fails_once_the_sidecar_task_crashed(
        url: str, go: asyncio.Event, http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    deadline = time.monotonic() + 10
    while True:  # the first readiness round may still be under way
        async with http.get(f"{url}/readyz") as reply:
            if reply.status == 200:
                break
        assert time.monotonic() < deadline, await reply.text()
        await asyncio.sleep(0.05)
    go.set()
    await _until(lambda: _crash_logged(caplog, "activity.task0"), "the crash to be logged")
    async with http.get(f"{url}/readyz") as reply:
        body = await reply.json()
        assert reply.status == 503, body
        assert body["checks"]["background"] is False, body


async def test_a_crashed_sidecar_task_makes_the_gateway_apps_readyz_fail(
        database_url: str, http: aiohttp.ClientSession, crashing_sidecar_task: asyncio.Event,
        caplog: pytest.LogCaptureFixture) -> None:
    async with app_server(database_url) as server:
        tasks = server.app[SERVICES].tasks
        assert {"outbox-listener", "outbox-retention", "activity.task0"} <= set(tasks.names())
        await _readyz_fails_once_the_sidecar_task_crashed(server.url, crashing_sidecar_task,
                                                          http, caplog)


async def test_a_crashed_sidecar_task_makes_an_only_apps_readyz_fail(
        database_url: str, http: aiohttp.ClientSession, crashing_sidecar_task: asyncio.Event,
        caplog: pytest.LogCaptureFixture) -> None:
    from aiohttp import web

    from server.config import load_config
    from server.sidecar_host import SIDECAR_CORE, build_sidecar_app
    from tests.conftest import TEST_SECRET, free_port

    config = load_config(overrides={"database_url": database_url, "secret": TEST_SECRET},
                         environ={})
    app = build_sidecar_app(config, ["activity"])
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        assert {"readiness", "outbox-listener", "activity.task0"} <= set(
            app[SIDECAR_CORE].tasks.names())
        await _readyz_fails_once_the_sidecar_task_crashed(f"http://127.0.0.1:{port}",
                                                          crashing_sidecar_task, http, caplog)
    finally:
        await runner.cleanup()


async def _swallows_one_cancellation(stopped: asyncio.Event) -> None:
    """What a lost cancellation looks like (asyncio.wait_for on Python 3.11 can lose
    one): the first cancel is absorbed and the loop goes on."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        pass
    try:
        await asyncio.Event().wait()
    finally:
        stopped.set()


async def test_a_lost_cancellation_does_not_hang_the_shutdown() -> None:
    supervisor = TaskSupervisor()
    stopped = asyncio.Event()
    supervisor.start("outbox-consumer", _swallows_one_cancellation(stopped))
    await asyncio.sleep(0)  # let it reach its first wait
    assert await supervisor.close() == []
    assert stopped.is_set()


async def test_a_task_that_never_stops_is_reported_and_left_behind(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import server.lifecycle as lifecycle

    monkeypatch.setattr(lifecycle, "CANCEL_AGAIN_S", 0.01)
    monkeypatch.setattr(lifecycle, "CANCEL_LIMIT_S", 0.05)

    refusing = True

    async def stubborn() -> None:
        while refusing:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()

    supervisor = TaskSupervisor()
    task = supervisor.start("stubborn", stubborn())
    await asyncio.sleep(0)
    failures = await supervisor.close()
    assert [name for name, _ in failures] == ["stubborn"]
    assert "did not stop" in caplog.text
    assert not task.done()
    refusing = False  # let it end, so the test leaves no task behind
    task.cancel()
    await task
