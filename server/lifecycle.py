"""Supervised background tasks and a teardown that runs every step.

A long-running task (the group committer, the gateway sweeper, presence...) that dies
must not go unnoticed until shutdown: :class:`TaskSupervisor` logs the exception the
moment the task ends and remembers it, and ``/readyz`` answers 503 while any
supervised task has failed, so a load balancer stops sending clients to a process
that can no longer, say, commit messages (the orchestrator then replaces it).

:class:`Teardown` closes what was opened, in reverse, on top of
:class:`contextlib.AsyncExitStack`: every step runs even when an earlier one raised,
and every failure is logged with the step's name (an exit stack alone would chain
them into one exception and a plain sequence of awaits would skip the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

log = logging.getLogger(__name__)

CANCEL_AGAIN_S = 1.0
"""How often shutdown repeats the cancellation of a background task still running."""
CANCEL_LIMIT_S = 10.0
"""How long shutdown waits for a cancelled background task before leaving it behind."""


class TaskSupervisor:
    """Owns the process's background tasks: started by name, watched, cancelled."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.failed: dict[str, BaseException] = {}
        """Task name -> what ended it (an exception, or a ``RuntimeError`` for a task
        that returned although it should run until cancelled)."""
        self._closing = False

    def start(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as the supervised task ``name`` (names are unique)."""
        if name in self._tasks:
            coro.close()
            raise ValueError(f"a task named {name!r} is already supervised")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks[name] = task
        task.add_done_callback(self._done)
        return task

    @property
    def healthy(self) -> bool:
        """No supervised task has died."""
        return not self.failed

    def names(self) -> list[str]:
        return list(self._tasks)

    def _done(self, task: asyncio.Task[None]) -> None:
        name = task.get_name()
        if self._closing or task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            exc = RuntimeError(f"background task {name} returned")
            log.error("background task %s stopped; the process is not ready", name)
        else:
            log.error("background task %s crashed; the process is not ready", name,
                      exc_info=exc)
        self.failed[name] = exc

    async def stop(self, names: Iterable[str]) -> list[tuple[str, BaseException]]:
        """Cancel the named tasks and wait for them (a part of the process shutting
        down before the rest, like the sidecars before the stores they use); returns
        (and logs) the failures not already reported."""
        tasks = [self._tasks.pop(name) for name in names if name in self._tasks]
        for task in tasks:
            task.remove_done_callback(self._done)
        return await self._cancel(tasks)

    async def close(self) -> list[tuple[str, BaseException]]:
        """Cancel every task and wait for them; returns (and logs) the failures that
        were not already reported when they happened."""
        self._closing = True
        failures = await self._cancel(list(self._tasks.values()))
        self._tasks.clear()
        return failures

    async def _cancel(self, tasks: list[asyncio.Task[None]]) -> list[tuple[str, BaseException]]:
        """Cancel ``tasks`` and wait for them, cancelling again every
        :data:`CANCEL_AGAIN_S` a task that is still running (a cancellation can be lost,
        e.g. by ``asyncio.wait_for`` on Python 3.11), for at most :data:`CANCEL_LIMIT_S`:
        a task that will not stop is reported and left behind rather than hanging the
        shutdown."""
        pending = set(tasks)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CANCEL_LIMIT_S
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=min(
                CANCEL_AGAIN_S, max(deadline - loop.time(), 0.0)))
            if pending and loop.time() >= deadline:
                break
        failures: list[tuple[str, BaseException]] = []
        for task in tasks:
            name = task.get_name()
            if not task.done():
                log.error("background task %s did not stop within %.0f s of its "
                          "cancellation; left behind", name, CANCEL_LIMIT_S)
                failures.append((name, TimeoutError("did not stop when cancelled")))
                continue
            result = None if task.cancelled() else task.exception()
            if result is not None:
                failures.append((name, result))
                if name not in self.failed:
                    log.error("background task %s failed at shutdown", name,
                              exc_info=result)
        return failures


class Teardown:
    """Steps to undo, run in reverse order of registration; see the module docstring."""

    def __init__(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        self.failures: list[tuple[str, BaseException]] = []

    def push(self, name: str, step: Callable[[], Awaitable[object]]) -> None:
        """Run ``step`` at :meth:`run` (after every step pushed later)."""

        async def logged() -> None:
            log.debug("teardown: %s", name)
            try:
                await step()
            except Exception as exc:
                log.error("teardown step %s failed", name, exc_info=exc)
                self.failures.append((name, exc))

        self._stack.push_async_callback(logged)

    async def run(self) -> list[tuple[str, BaseException]]:
        """Run every step (newest first); returns the failures, each already logged."""
        await self._stack.aclose()
        return self.failures
