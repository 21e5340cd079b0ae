"""Prometheus metrics (``GET /metrics``), safe with several worker processes.

With ``--workers N`` the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` so every worker
writes its samples to files there and any worker's ``/metrics`` reports the sum (gauges:
``livesum``, so a dead worker's values vanish). Hot paths never touch prometheus: they
bump plain integer attributes, and one collector task per process copies the deltas
every :data:`COLLECT_INTERVAL_S`. The only per-event observation is the
publish-to-deliver latency histogram, once per bus message (not per recipient).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Final

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

COLLECT_INTERVAL_S = 2.0
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5)


class Metrics:
    """Every metric of one process, and the collector that feeds them."""

    def __init__(self) -> None:
        # One registry per instance: tests build several apps in one process.
        self.registry = CollectorRegistry()
        r = self.registry
        mode: Final = "livesum"  # a Literal for prometheus_client's typed multiprocess_mode
        self.connections = Gauge("hearth_connections", "Open gateway websockets",
                                 multiprocess_mode=mode, registry=r)
        self.sessions_detached = Gauge("hearth_sessions_detached",
                                       "Sessions waiting to be resumed", multiprocess_mode=mode,
            registry=r)
        self.topics = Gauge("hearth_bus_topics", "Bus topics this process subscribes to",
                            multiprocess_mode=mode, registry=r)
        self.outbound_bytes = Gauge("hearth_outbound_buffer_bytes",
                                    "Bytes queued to clients, all sockets",
                                    multiprocess_mode=mode, registry=r)
        self.db_pool_in_use = Gauge("hearth_db_pool_in_use", "Database connections in use",
                                    multiprocess_mode=mode, registry=r)
        self.db_pool_size = Gauge("hearth_db_pool_size", "Database connections open",
                                  multiprocess_mode=mode, registry=r)
        self.pending_commits = Gauge("hearth_group_commit_pending",
                                     "Messages waiting for the next group commit",
                                     multiprocess_mode=mode, registry=r)
        self.bus_roundtrip = Gauge("hearth_bus_roundtrip_seconds",
                                   "Last bus publish round-trip", multiprocess_mode="max",
            registry=r)
        self.frames_in = Counter("hearth_frames_in", "Websocket frames received", registry=r)
        self.events_in = Counter("hearth_events_in", "Bus events received by this process",
            registry=r)
        self.deliveries = Counter("hearth_deliveries", "Events written to sessions", registry=r)
        self.messages_committed = Counter("hearth_messages_committed",
                                          "Messages committed to PostgreSQL", registry=r)
        self.commit_batches = Counter("hearth_group_commit_batches", "Group-commit transactions",
            registry=r)
        self.drops = Counter("hearth_drops", "Connections or events dropped, by class",
                             ["kind"], registry=r)
        self.resume_attempts = Counter("hearth_resume_attempts", "Resume requests", registry=r)
        self.resume_successes = Counter("hearth_resume_successes", "Resumes that replayed",
            registry=r)
        self.gaps_repaired = Counter("hearth_bus_gaps_repaired",
                                     "Messages the bus lost, delivered from PostgreSQL", registry=r)
        self.duplicates_dropped = Counter("hearth_bus_duplicates_dropped",
                                          "Repeated bus messages dropped", registry=r)
        self.publish_to_deliver = Histogram(
            "hearth_publish_to_deliver_seconds",
            "From publish on any process to delivery here", buckets=_LATENCY_BUCKETS, registry=r)
        self.loop_lag = Histogram("hearth_event_loop_lag_seconds",
                                  "How late a 0.5 s timer fires", buckets=_LATENCY_BUCKETS,
            registry=r)
        self._last: dict[str, int] = {}

    def observe_latency_ms(self, ms: float) -> None:
        self.publish_to_deliver.observe(max(ms, 0.0) / 1000.0)

    def add_delta(self, counter: Counter, name: str, value: int) -> None:
        delta = value - self._last.get(name, 0)
        if delta > 0:
            counter.inc(delta)
        self._last[name] = value

    async def run(self, sample: Callable[[Metrics], None]) -> None:
        """Every interval: measure loop lag, then let ``sample`` copy the counters."""
        loop = asyncio.get_running_loop()
        ticks = 0
        while True:
            start = loop.time()
            await asyncio.sleep(0.5)
            self.loop_lag.observe(max(loop.time() - start - 0.5, 0.0))
            ticks += 1
            if ticks * 0.5 >= COLLECT_INTERVAL_S:
                ticks = 0
                sample(self)


def render(metrics: Metrics) -> web.Response:
    """The exposition: this process's registry, or every worker's with --workers."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def mark_process_dead(pid: int) -> None:
    """The supervisor calls this when a worker exits, so its live gauges vanish."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


__all__ = ["Metrics", "mark_process_dead", "render"]
