"""A self-contained HTML report: tables, a latency histogram and time series, inline SVG.

No scripts, no CDN, no fonts: the file opens anywhere, offline, years later, and can be
attached to an issue. Charts are generated here as SVG from the JSON report.
"""

from __future__ import annotations

import html
import math
from typing import Any

W, H, PAD_L, PAD_B, PAD_T, PAD_R = 640, 200, 64, 32, 24, 16
COLORS = ("#d9480f", "#1c7ed6", "#2b8a3e", "#862e9c", "#e67700")


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * exp:
            return step * exp
    return 10.0 * exp


def line_chart(title: str, unit: str, series: list[tuple[str, list[tuple[float, float]]]]) -> str:
    """A line chart of one or more (name, [(t, y)]) series sharing axes."""
    pts = [p for _, s in series for p in s]
    if not pts:
        return f"<figure><figcaption>{_esc(title)}: no data</figcaption></figure>"
    x_max = max(p[0] for p in pts) or 1.0
    x_min = min(p[0] for p in pts)
    y_max = _nice_max(max(p[1] for p in pts))
    iw, ih = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def sx(x: float) -> float:
        return PAD_L + (x - x_min) / max(1e-9, x_max - x_min) * iw

    def sy(y: float) -> float:
        return PAD_T + ih - y / y_max * ih

    parts = [f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img">',
             f'<text x="{PAD_L}" y="16" class="t">{_esc(title)} ({_esc(unit)})</text>']
    for i in range(5):
        y = y_max * i / 4
        parts.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
                     'class="g"/>')
        parts.append(f'<text x="{PAD_L - 6}" y="{sy(y) + 4:.1f}" class="a" '
                     f'text-anchor="end">{y:,.4g}</text>')
    for i in range(5):
        x = x_min + (x_max - x_min) * i / 4
        label = f"{x:.0f}" if x_max - x_min >= 8 else f"{x:.1f}"
        parts.append(f'<text x="{sx(x):.1f}" y="{H - 10}" class="a" '
                     f'text-anchor="middle">{label}s</text>')
    for k, (name, points) in enumerate(series):
        if not points:
            continue
        color = COLORS[k % len(COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                     f'points="{path}"/>')
        parts.append(f'<text x="{W - PAD_R - 4}" y="{PAD_T + 14 * (k + 1)}" fill="{color}" '
                     f'class="a" text-anchor="end">{_esc(name)}</text>')
    parts.append("</svg>")
    return "<figure>" + "".join(parts) + "</figure>"


def histogram_chart(title: str, bars: list[tuple[str, list[list[float]]]]) -> str:
    """Latency histogram(s) on a log-scale x axis: [(name, [[upper_ms, count], ...])],
    each normalised to its share of deliveries so Hearth and a peer compare directly."""
    all_bars = [b for _, bs in bars for b in bs]
    if not all_bars:
        return f"<figure><figcaption>{_esc(title)}: no deliveries</figcaption></figure>"
    lo = math.log10(max(1e-3, min(b[0] for b in all_bars)) / 1.1)
    hi = math.log10(max(b[0] for b in all_bars) * 1.1)
    iw, ih = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    shares: list[tuple[str, list[tuple[float, float]]]] = []
    for name, bs in bars:
        total = sum(b[1] for b in bs) or 1
        shares.append((name, [(b[0], b[1] / total) for b in bs]))
    y_max = _nice_max(max(s for _, bs in shares for _, s in bs) * 100)

    def sx(ms: float) -> float:
        return PAD_L + (math.log10(max(ms, 1e-3)) - lo) / max(1e-9, hi - lo) * iw

    parts = [f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img">',
             f'<text x="{PAD_L}" y="16" class="t">{_esc(title)} (% of deliveries, '
             'log-scale ms)</text>']
    for i in range(5):
        y = y_max * i / 4
        yy = PAD_T + ih - y / y_max * ih
        parts.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{yy:.1f}" y2="{yy:.1f}" '
                     'class="g"/>')
        parts.append(f'<text x="{PAD_L - 6}" y="{yy + 4:.1f}" class="a" '
                     f'text-anchor="end">{y:g}%</text>')
    decade = math.floor(lo)
    while decade <= hi:
        for mult in (1, 2, 5):
            v = mult * 10**decade
            if lo <= math.log10(v) <= hi:
                parts.append(f'<text x="{sx(v):.1f}" y="{H - 10}" class="a" '
                             f'text-anchor="middle">{v:g}</text>')
        decade += 1
    width = max(1.5, iw / 32 / max(1e-9, hi - lo) * math.log10(2) * 0.9)
    for k, (name, normalised) in enumerate(shares):
        color = COLORS[k % len(COLORS)]
        for upper, share in normalised:
            h = share * 100 / y_max * ih
            parts.append(f'<rect x="{sx(upper) - width:.1f}" y="{PAD_T + ih - h:.1f}" '
                         f'width="{width:.1f}" height="{h:.1f}" fill="{color}" '
                         f'fill-opacity="0.6"><title>≤{upper:.3g} ms: {share * 100:.2f}%'
                         f'</title></rect>')
        parts.append(f'<text x="{W - PAD_R - 4}" y="{PAD_T + 14 * (k + 1)}" fill="{color}" '
                     f'class="a" text-anchor="end">{_esc(name)}</text>')
    parts.append("</svg>")
    return "<figure>" + "".join(parts) + "</figure>"


SUMMARY_ROWS = (
    ("connections peak", ("connections_peak",)),
    ("connections failed", ("connections_failed",)),
    ("connect rate (/s)", ("connect_rate_per_s",)),
    ("connect p99 (ms)", ("connect_ms", "p99")),
    ("duration (s)", ("duration_s",)),
    ("messages sent", ("messages_sent",)),
    ("deliveries", ("deliveries",)),
    ("deliveries/s", ("deliveries_per_s",)),
    ("latency p50 (ms)", ("latency_ms", "p50")),
    ("latency p90 (ms)", ("latency_ms", "p90")),
    ("latency p99 (ms)", ("latency_ms", "p99")),
    ("latency p99.9 (ms)", ("latency_ms", "p999")),
    ("latency max (ms)", ("latency_ms", "max")),
    ("lost", ("lost",)),
    ("duplicated", ("duplicated",)),
    ("out of order", ("out_of_order",)),
    ("server CPU (%)", ("server", "cpu_percent")),
    ("server RSS (bytes)", ("server", "rss_bytes")),
    ("server RSS / connection (bytes)", ("server", "rss_per_connection_bytes")),
    ("deliveries per server CPU-second", ("server", "deliveries_per_cpu_s")),
    ("generator RSS / connection (bytes)", ("generator", "rss_per_connection_bytes")),
    ("generator send lag p99 (ms)", ("generator", "send_lag_ms", "p99")),
)


FAILOVER_ROWS = (
    ("killed pid", ("killed_pid",)),
    ("killed at (s into the measured phase)", ("kill_after_s",)),
    ("connections it held", ("expected_dropped",)),
    ("clients dropped", ("dropped",)),
    ("resumed", ("resumed",)),
    ("resume success rate", ("resume_success_rate",)),
    ("invalid_session answers", ("invalid_sessions",)),
    ("re-identified instead", ("reidentified",)),
    ("not recovered by the end", ("not_recovered",)),
    ("reconnect attempts", ("reconnect_attempts",)),
    ("kill → resumed p50 (ms)", ("kill_to_resumed_ms", "p50")),
    ("kill → resumed p99 (ms)", ("kill_to_resumed_ms", "p99")),
    ("kill → resumed max (ms)", ("kill_to_resumed_ms", "max")),
    ("drop → resumed p50 (ms)", ("drop_to_resumed_ms", "p50")),
    ("drop → resumed p99 (ms)", ("drop_to_resumed_ms", "p99")),
    ("requests re-sent after resume", ("requests_retried",)),
    ("requests never answered", ("requests_unanswered",)),
    ("lost / duplicated / out of order", ()),
    ("worker replaced by the supervisor", ("worker_replaced",)),
)


def failover_table(fo: dict[str, Any]) -> str:
    rows = []
    for label, path in FAILOVER_ROWS:
        if not path:
            value = f"{_fmt(fo.get('lost'))} / {_fmt(fo.get('duplicated'))} / " \
                    f"{_fmt(fo.get('out_of_order'))}"
        else:
            raw = _get(fo, path)
            value = f"{raw * 100:.2f} %" if path == ("resume_success_rate",) and \
                isinstance(raw, float) else _fmt(raw)
        rows.append(f"<tr><th>{_esc(label)}</th><td>{_esc(value)}</td></tr>")
    return "<h2>Failover</h2><table>" + "".join(rows) + "</table>"


def _get(report: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = report
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


VOICE_ROWS = (
    ("mode", ("mode",)),
    ("joined / failed", ()),
    ("join → connected p50 / p95 / max (ms)", ("join_to_connected_ms",)),
    ("frames/s per received track min / median", ("frames_per_s_per_track",)),
    ("received tracks active / expected", ("received_tracks_active",)),
    ("outbound tracks", ("outbound_tracks",)),
    ("media workers", ("media_workers",)),
    ("media worker CPU (%)", ("media_worker_cpu_percent",)),
    ("RTP packets lost", ("packets_lost",)),
    ("listeners: mode / lean / decoding", ("listeners",)),
    ("lean transit p50 / p99 / max (ms, not mouth-to-ear)", ("transit_ms",)),
)


def voice_table(v: dict[str, Any], name: str = "hearth") -> str:
    """The ``voice`` scenario's own figures for run ``name`` (Hearth's or its peer's;
    latency above is mouth-to-ear)."""
    rows = []
    for label, path in VOICE_ROWS:
        if not path:
            value = f"{_fmt(v.get('joined'))} / {_fmt(v.get('failed'))}"
        elif path == ("join_to_connected_ms",):
            j = v.get("join_to_connected_ms") or {}
            value = f"{_fmt(j.get('p50'))} / {_fmt(j.get('p95'))} / {_fmt(j.get('max'))}"
        elif path == ("frames_per_s_per_track",):
            f = v.get("frames_per_s_per_track") or {}
            value = f"{_fmt(f.get('min'))} / {_fmt(f.get('median'))}"
        elif path == ("received_tracks_active",):
            value = f"{_fmt(v.get('received_tracks_active'))} / " \
                    f"{_fmt(v.get('received_tracks_expected'))}"
        elif path == ("listeners",):
            m = v.get("listeners") or {}
            value = f"{_fmt(m.get('mode'))} / {_fmt(m.get('lean_participants'))} / " \
                    f"{_fmt(m.get('decoding_participants'))}"
        elif path == ("transit_ms",):
            t = (v.get("transit_ms") or {}).get("latency") or {}
            value = f"{_fmt(t.get('p50'))} / {_fmt(t.get('p99'))} / {_fmt(t.get('max'))}"
        else:
            value = _fmt(_get(v, path))
        rows.append(f"<tr><th>{_esc(label)}</th><td>{_esc(value)}</td></tr>")
    return (f"<h2>Voice @ {_esc(name)} (latency = mouth to ear)</h2><table>" + "".join(rows)
            + "</table>")


def render_html(report: dict[str, Any]) -> str:
    """The whole page for a report (with its peers, if any)."""
    runs: list[tuple[str, dict[str, Any]]] = [("hearth", report)]
    runs += list((report.get("peers") or {}).items())
    head = "".join(f"<th>{_esc(name)}</th>" for name, _ in runs)
    rows = []
    for label, path in SUMMARY_ROWS:
        cells = "".join(f"<td>{_fmt(_get(r, path))}</td>" for _, r in runs)
        rows.append(f"<tr><th>{_esc(label)}</th>{cells}</tr>")
    ratio_html = ""
    for peer, ratios in (report.get("ratios") or {}).items():
        ratio_rows = []
        for name, r in ratios.items():
            cls = "" if r["hearth_ahead"] is None else ("win" if r["hearth_ahead"] else "lose")
            ratio_rows.append(f'<tr class="{cls}"><th>{_esc(name)}</th><td>{_fmt(r["hearth"])}'
                              f'</td><td>{_fmt(r["peer"])}</td><td>{_fmt(r["ratio"])}</td>'
                              f'<td>{_esc(r["better"])} is better</td></tr>')
        ratio_html += (f"<h2>Hearth / {_esc(peer)}</h2><table><tr><th></th><th>hearth</th>"
                       f"<th>{_esc(peer)}</th><th>ratio</th><th></th></tr>"
                       + "".join(ratio_rows) + "</table>")
    charts = [histogram_chart("Delivery latency",
                              [(name, r.get("latency_histogram_ms") or []) for name, r in runs])]
    for title, unit, key in (("Connections", "open", "connections"),
                             ("Deliveries per second", "/s", "deliveries_per_s"),
                             ("p99 latency per second", "ms", "p99_ms"),
                             ("Server CPU", "%", "server_cpu_percent")):
        series = []
        for name, r in runs:
            pts = [(p["t"], p[key]) for p in r.get("timeseries") or [] if p.get(key) is not None]
            series.append((name, pts))
        charts.append(line_chart(title, unit, series))
    errors = "".join(f"<tr><th>{_esc(name)}: {_esc(code)}</th><td>{_fmt(n)}</td></tr>"
                     for name, r in runs for code, n in sorted((r.get("errors") or {}).items()))
    notes = "".join(f"<li>{_esc(name)}: {_esc(n)}</li>" for name, r in runs
                    for n in r.get("notes") or [])
    m = report.get("machine") or {}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Hearth load test: {_esc(report.get("scenario"))}</title>
<style>
body{{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1340px;color:#212529}}
table{{border-collapse:collapse;margin:1em 0}} th,td{{padding:3px 10px;text-align:right;
border-bottom:1px solid #dee2e6}} th{{text-align:left;font-weight:500}}
tr.win td:nth-child(4){{color:#2b8a3e;font-weight:600}}
tr.lose td:nth-child(4){{color:#c92a2a;font-weight:600}}
figure{{display:inline-block;margin:8px}} .t{{font:600 13px system-ui}}
.a{{font:11px system-ui;fill:#495057}} .g{{stroke:#e9ecef}}
code{{background:#f1f3f5;padding:1px 4px}}
</style></head><body>
<h1>Hearth load test: <code>{_esc(report.get("scenario"))}</code></h1>
<p>Started {_esc(report.get("started_at"))} on {_esc(m.get("cores"))} cores,
{_fmt((m.get("memory_bytes") or 0) / 2**30)} GiB ({_esc(m.get("platform"))}).
Target {_esc((report.get("target") or {}).get("url"))}.
{("<b>Interrupted: " + _esc(report["interrupted"]) + "</b>") if report.get("interrupted") else ""}
</p>
<table><tr><th></th>{head}</tr>{"".join(rows)}</table>
{failover_table(report["failover"]) if report.get("failover") else ""}
{"".join(voice_table(r["voice"], name) for name, r in runs if r.get("voice"))}
{ratio_html}
<div>{"".join(charts)}</div>
<h2>Errors</h2><table>{errors or "<tr><td>none</td></tr>"}</table>
<h2>Notes</h2><ul>{notes}</ul>
<h2>Options</h2><pre>{_esc(report.get("options"))}</pre>
</body></html>
"""
