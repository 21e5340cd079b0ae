"""The run report: one JSON document per run, Hearth and peers side by side.

Required keys (issue 3): ``scenario``, ``connections_peak``, ``duration_s``,
``messages_sent``, ``deliveries``, ``deliveries_per_s``, ``latency_ms`` (``p50``,
``p90``, ``p99``, ``p999``, ``max``), ``lost``, ``duplicated``, ``out_of_order``,
``errors``, ``server`` (``rss_bytes``, ``rss_per_connection_bytes``, ``cpu_percent``).
Values that were not measured are ``null``, never a made-up zero (e.g. server figures
for a remote target, latency in a scenario that sends nothing).

Definitions:
- ``duration_s``: the measured phase: the sending window for ``chat``/``broadcast``,
  the holding time for ``idle``, the connect phase for ``join-storm``.
- ``deliveries_per_s``: ``message_create`` frames received by all clients divided by
  ``duration_s``.
- ``latency_ms``: send (by the generator, monotonic clock) to receive (by each
  recipient, same clock), over every delivery.
- ``lost``: per channel, seqs a connected recipient skipped and never got, plus seqs
  at the end it never reached; ``duplicated``: a seq received twice by one recipient;
  ``out_of_order``: a skipped seq that arrived later.
- ``server.cpu_percent``: CPU of the server's processes over the measured phase, summed
  (100 = one core); ``server.rss_per_connection_bytes``: (RSS once connected - RSS
  before connecting) / connections.
- ``failover`` (that scenario only): ``dropped`` clients whose connection died at or
  after the kill; ``resume_success_rate``: of those, the share whose first successful
  reconnect was answered ``resumed`` (not ``invalid_session`` and a fresh ``ready``);
  ``kill_to_resumed_ms``: from the SIGKILL to each ``resumed``, as the client saw it
  (it includes the client's jittered back-off, ``reconnect_jitter_s``);
  ``drop_to_resumed_ms``: from each client noticing the drop to its ``resumed``.
  Lost / duplicated / out-of-order are the run's per-channel counts (the whole run,
  across the failover).
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import psutil

from loadtest.coordinator import RunResult
from loadtest.target import cpu_percent_between

MAX_CHANNELS_LISTED = 50


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def build_report(result: RunResult) -> dict[str, Any]:
    """The JSON report of one run."""
    opts = result.options
    ticks = [w.tick for w in result.workers if w.tick is not None]
    total = {name: sum(getattr(t, name) for t in ticks)
             for name in ("attempted", "ready", "failed", "sent", "acked", "deliveries",
                          "session_gaps", "connect_retries")}
    errors: dict[str, int] = {}
    for t in ticks:
        for code, n in t.errors.items():
            errors[code] = errors.get(code, 0) + n
    lost = sum(a.lost for a in result.anomalies.values())
    duplicated = sum(a.duplicated for a in result.anomalies.values())
    out_of_order = sum(a.out_of_order for a in result.anomalies.values())
    if opts.scenario == "join-storm":
        duration = result.phases.get("connect_s", 0.0)
    else:
        duration = result.phases.get("measure_s", opts.duration_s)
    connect_s = result.phases.get("connect_s") or None
    deliveries_per_s = round(total["deliveries"] / duration, 1) if duration else None

    samples = result.server_samples
    base, connected = samples.get("baseline"), samples.get("connected")
    m_start, m_end = samples.get("measure_start"), samples.get("measure_end")
    cpu = cpu_percent_between(m_start, m_end)
    server: dict[str, Any] = {
        "local": result.target.local,
        "pids": result.server_pids,
        "rss_bytes": last.rss_bytes if (last := m_end or connected) else None,
        "rss_baseline_bytes": base.rss_bytes if base else None,
        "rss_connected_bytes": connected.rss_bytes if connected else None,
        "rss_per_connection_bytes": None,
        "cpu_percent": round(sum(cpu.values()), 1) if cpu else None,
        "cpu_percent_per_process": {str(pid): pct for pid, pct in cpu.items()},
        "connect_phase_cpu_percent": round(sum(cpu_percent_between(base, connected).values()),
                                           1) if base and connected else None,
    }
    if base and connected and result.connections_peak:
        server["rss_per_connection_bytes"] = round(
            (connected.rss_bytes - base.rss_bytes) / result.connections_peak)
    db_cpu = cpu_percent_between(samples.get("database_start"), samples.get("database_end"))
    server["postgres_cpu_percent"] = round(sum(db_cpu.values()), 1) \
        if samples.get("database_start") else None
    """All postgres processes of the machine over the measured phase (the embedded
    database of a local Hearth, and any other PostgreSQL running there)."""
    redis_cpu = cpu_percent_between(samples.get("redis_start"), samples.get("redis_end"))
    server["redis_cpu_percent"] = round(sum(redis_cpu.values()), 1) if redis_cpu else None
    if deliveries_per_s and server["cpu_percent"]:
        server["deliveries_per_cpu_s"] = round(deliveries_per_s / (server["cpu_percent"] / 100))
    if opts.scenario == "join-storm" and connect_s and server["connect_phase_cpu_percent"]:
        server["ready_per_cpu_s"] = round(total["ready"] / connect_s
                                          / (server["connect_phase_cpu_percent"] / 100))

    gen_rss_delta = 0
    gen_ready = 0
    for t in ticks:
        if t.rss_connected_bytes:
            gen_rss_delta += t.rss_connected_bytes - t.rss_before_bytes
            gen_ready += t.ready
    gen_cpu_s = sum(t.cpu_s for t in ticks)
    wall = max(1e-6, time.time() - result.started_at)
    lag = result.send_lag.summary_ms()
    generator: dict[str, Any] = {
        "processes": len(result.workers),
        "rss_bytes": sum(t.rss_bytes for t in ticks),
        "rss_per_connection_bytes": round(gen_rss_delta / gen_ready) if gen_ready else None,
        "cpu_percent_avg": round(100 * gen_cpu_s / wall, 1),
        "cpu_percent": round(sum(cpu_percent_between(samples.get("generator_start"),
                                                     samples.get("generator_end")).values()), 1)
        if samples.get("generator_start") else None,
        "send_lag_ms": {"p99": lag["p99"], "max": lag["max"]},
        "behind_schedule": bool(lag["p99"] is not None and lag["p99"] > 50),
    }

    m_cpu = result.machine_cpu
    if "start" in m_cpu and "end" in m_cpu and m_cpu["end"][1] > m_cpu["start"][1]:
        busy = 100 * (m_cpu["end"][0] - m_cpu["start"][0]) / (m_cpu["end"][1] - m_cpu["start"][1])
        ours = (server["cpu_percent"] or 0) + (generator["cpu_percent"] or 0) \
            + (server["postgres_cpu_percent"] or 0) + (server["redis_cpu_percent"] or 0)
        generator["machine_cpu_busy_percent"] = round(busy, 1)
        generator["other_processes_cpu_percent"] = round(max(0.0, busy - ours), 1)
        if busy - ours > 20:
            result.notes.append(f"other processes used about {busy - ours:.0f}% CPU during the "
                                "measured phase: figures are disturbed")

    failover = failover_report(result, ticks) if opts.scenario == "failover" else None
    other_events: dict[str, int] = {}
    for t in ticks:
        for name, n in t.other_events.items():
            other_events[name] = other_events.get(name, 0) + n
    connect_phase = _connect_phase(result, server, samples)
    channels_listed = sorted(result.anomalies.items(),
                             key=lambda kv: -(kv[1].lost + kv[1].duplicated + kv[1].out_of_order))
    report: dict[str, Any] = {
        "scenario": opts.scenario,
        "target": {"name": result.target.name, "url": result.target.base_url,
                   "local": result.target.local, "notes": result.target.notes},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(result.started_at)),
        "machine": machine(),
        "options": result.options.as_dict(),
        "connections_target": opts.connections,
        "connections_peak": result.connections_peak,
        "connections_held": result.connections_held,
        "connections_failed": total["failed"],
        "connect_retries": total["connect_retries"],
        "connect_s": connect_s,
        "connect_rate_per_s": round(total["ready"] / connect_s, 1) if connect_s else None,
        "connect_ms": result.connect.summary_ms(),
        "duration_s": duration,
        "messages_sent": total["sent"],
        "messages_acked": total["acked"],
        # Over the send window plus the drain: acknowledgements that arrive after the
        # last send still count, and a backlog does not inflate the rate.
        "acked_per_s": round(total["acked"] / (duration + result.phases.get("drain_s", 0.0)), 1)
        if duration else None,
        "deliveries": total["deliveries"],
        "deliveries_per_s": deliveries_per_s,
        "latency_ms": result.latency.summary_ms(),
        "ack_latency_ms": result.ack.summary_ms(),
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "session_seq_gaps": total["session_gaps"],
        "other_events": other_events,
        "connect_phase": connect_phase,
        "channels": {
            "count": len(result.channels),
            "with_anomalies": sum(1 for a in result.anomalies.values() if a.any()),
            "worst": [{"channel_id": cid, "lost": a.lost, "duplicated": a.duplicated,
                       "out_of_order": a.out_of_order}
                      for cid, a in channels_listed[:MAX_CHANNELS_LISTED] if a.any()],
        },
        "errors": errors,
        "server": server,
        "generator": generator,
        "phases_s": result.phases,
        "timeseries": [p.__dict__ for p in result.series],
        "latency_histogram_ms": [[round(ub, 4), n] for ub, n in result.latency.bars_ms()],
        "notes": result.notes,
        "interrupted": result.interrupted,
    }
    if failover is not None:
        report["failover"] = failover
        failover["lost"], failover["duplicated"], failover["out_of_order"] = \
            lost, duplicated, out_of_order
    return report


def _connect_phase(result: RunResult, server: dict[str, Any],
                   samples: dict[str, Any]) -> dict[str, Any]:
    """CPU of everyone during the connect phase (where a join storm or a 100,000-connection
    ramp spends its time): server, its PostgreSQL and Redis, generator, and the rest."""
    out: dict[str, Any] = {"server_cpu_percent": server.get("connect_phase_cpu_percent")}
    for who in ("generator", "database", "redis"):
        cpu = cpu_percent_between(samples.get(f"{who}_connect_start"),
                                  samples.get(f"{who}_connect_end"))
        out[f"{who}_cpu_percent"] = round(sum(cpu.values()), 1) if cpu else None
    m = result.machine_cpu
    if "connect_start" in m and "connect_end" in m and m["connect_end"][1] > m["connect_start"][1]:
        busy = 100 * (m["connect_end"][0] - m["connect_start"][0]) \
            / (m["connect_end"][1] - m["connect_start"][1])
        ours = sum(v or 0 for k, v in out.items())
        out["machine_cpu_busy_percent"] = round(busy, 1)
        out["other_processes_cpu_percent"] = round(max(0.0, busy - ours), 1)
    return out


def failover_report(result: RunResult, ticks: list[Any]) -> dict[str, Any]:
    """The ``failover`` block (see the module docstring)."""
    from loadtest.accounting import Histogram

    fo = result.failover
    total = {name: sum(getattr(t, name) for t in ticks)
             for name in ("dropped", "reconnecting", "reconnect_attempts", "resumed",
                          "invalid_sessions", "reidentified", "retried",
                          "skipped_disconnected")}
    out: dict[str, Any] = {
        "killed": fo.kill_at is not None,
        "killed_pid": fo.killed_pid,
        "kill_after_s": fo.kill_after_s,
        "gateway_pids_before": fo.pids_before,
        "gateway_pids_after": fo.pids_after,
        "connections_per_pid_before": {str(k): v for k, v in fo.connections_per_pid.items()},
        "reconnect_jitter_s": result.options.reconnect_jitter_s,
    }
    kill_at = fo.kill_at
    if kill_at is None:
        return out
    dropped_at = [t for t in fo.dropped_at if t >= kill_at - 0.01]
    resumed_at = [t for t in fo.resumed_at if t >= kill_at]
    kill_to = Histogram()
    for t in resumed_at:
        kill_to.record(int((t - kill_at) * 1e6))
    dropped = len(dropped_at)
    out.update({
        "expected_dropped": fo.connections_per_pid.get(fo.killed_pid or 0),
        "dropped": dropped,
        "dropped_before_kill": len(fo.dropped_at) - dropped,
        "resumed": len(resumed_at),
        "resume_success_rate": round(len(resumed_at) / dropped, 4) if dropped else None,
        "invalid_sessions": total["invalid_sessions"],
        "reidentified": total["reidentified"],
        "not_recovered": total["reconnecting"],
        "reconnect_attempts": total["reconnect_attempts"],
        "kill_to_resumed_ms": kill_to.summary_ms(),
        "drop_to_resumed_ms": result.resume.summary_ms(),
        "requests_retried": total["retried"],
        "requests_unanswered": fo.unanswered,
        "sends_skipped_while_reconnecting": total["skipped_disconnected"],
        "worker_replaced": bool(set(fo.pids_after) - set(fo.pids_before)),
    })
    return out


RATIO_KEYS = (
    ("deliveries_per_s", ("deliveries_per_s",), "higher"),
    ("latency_p50_ms", ("latency_ms", "p50"), "lower"),
    ("latency_p99_ms", ("latency_ms", "p99"), "lower"),
    ("connect_rate_per_s", ("connect_rate_per_s",), "higher"),
    ("server_rss_per_connection_bytes", ("server", "rss_per_connection_bytes"), "lower"),
    ("server_cpu_percent", ("server", "cpu_percent"), "lower"),
    ("deliveries_per_cpu_s", ("server", "deliveries_per_cpu_s"), "higher"),
)

VOICE_RATIO_KEYS = (
    ("mouth_to_ear_p50_ms", ("latency_ms", "p50"), "lower"),
    ("mouth_to_ear_p99_ms", ("latency_ms", "p99"), "lower"),
    ("mouth_to_ear_mean_ms", ("latency_ms", "mean"), "lower"),
    ("frames_per_s_per_track_median", ("voice", "frames_per_s_per_track", "median"), "higher"),
    ("frames_per_s_per_track_min", ("voice", "frames_per_s_per_track", "min"), "higher"),
    ("join_to_connected_p50_ms", ("voice", "join_to_connected_ms", "p50"), "lower"),
    ("join_to_connected_p95_ms", ("voice", "join_to_connected_ms", "p95"), "lower"),
    ("lean_transit_p50_ms", ("voice", "transit_ms", "latency", "p50"), "lower"),
    ("lean_transit_p99_ms", ("voice", "transit_ms", "latency", "p99"), "lower"),
    ("generator_cpu_percent", ("generator", "cpu_percent"), "lower"),
)
"""The voice scenario against ``--peer direct`` (no server): the SFU's cost over the
client pipeline's floor. Server figures have no counterpart (the peer has no server);
a direct mesh's generators also carry the senders' side, so its generator CPU is the
whole mesh's client work."""


def _get(report: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = report
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def compare(hearth: dict[str, Any], peer: dict[str, Any],
            keys: tuple[tuple[str, tuple[str, ...], str], ...] = RATIO_KEYS) -> dict[str, Any]:
    """Hearth / peer for each headline figure (``keys``: name, path, which direction is
    better), so a reader sees at once who wins (a ratio > 1 on a "higher" figure
    favours Hearth)."""
    out: dict[str, Any] = {}
    for name, path, better in keys:
        h, p = _get(hearth, path), _get(peer, path)
        ratio = round(h / p, 3) if isinstance(h, int | float) and isinstance(p, int | float) \
            and p else None
        hearth_ahead = None
        if ratio is not None:
            hearth_ahead = ratio >= 1 if better == "higher" else ratio <= 1
        out[name] = {"hearth": h, "peer": p, "ratio": ratio, "better": better,
                     "hearth_ahead": hearth_ahead}
    return out
