"""``hearth loadtest SCENARIO [options]`` (also ``python -m loadtest``).

Runs one scenario against Hearth (a running server with ``--url``, or one it starts
itself), then against each ``--peer`` with the same clients and the same workload, and
writes the report (``--json``, ``--html``). Every run is bounded: counts are capped, and
each phase has a deadline after which the generators stop by themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtest.coordinator import SCENARIOS, Coordinator, RunOptions
from loadtest.target import (
    Target,
    TargetError,
    check_target_url,
    is_loopback_host,
    local_hearth,
    wait_ready,
)

if TYPE_CHECKING:  # aiortc and numpy load only for the voice scenario
    from loadtest.voice_plan import VoiceOptions

MAX_CONNECTIONS = 200_000
MAX_DURATION_S = 3_600.0
DEFAULT_RATE = {"chat": 0.1, "broadcast": 10.0}
CONNECTIONS_PER_PROCESS = 15_000
"""Default generator processes: one per this many connections (each process must stay
well under the per-process open-files limit and under one core)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hearth loadtest",
        description="Load-test a Hearth server over real websockets with the public protocol.",
        epilog="Scenarios: idle (open and hold N connections), chat (rooms of k, each member "
               "sending --rate msg/s), broadcast (one channel of N, --rate msg/s in), "
               "join-storm (connect+identify+ready as fast as admitted), failover (chat "
               "while one of several gateway processes is killed with SIGKILL; its clients "
               "reconnect and resume), voice (a voice room of --participants aiortc peers, "
               "--speakers of them talking, or --stage; mouth-to-ear audio latency).")
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument("--url", help="base URL of a running server (default: start one)")
    p.add_argument("--allow-remote", action="append", default=[], metavar="HOST",
                   help="allow a non-loopback --url host (repeatable)")
    p.add_argument("--workers", type=int, default=None,
                   help="server processes when the harness starts the server (default 1; "
                        "failover: 2); more than 1 uses Redis (--redis-url or a throwaway "
                        "redis-server)")
    p.add_argument("--data-dir", help="data directory of the server it starts (default: temp)")
    p.add_argument("--database-url", help="PostgreSQL database for the server it starts, "
                   "used as is (default: embedded)")
    p.add_argument("--postgres", metavar="URL",
                   help="a PostgreSQL server the harness may create databases on (e.g. "
                        "postgresql://postgres@127.0.0.1:5432/postgres): each run gets a "
                        "fresh database, dropped afterwards")
    p.add_argument("--server-log", metavar="PATH",
                   help="keep the log of the server the harness starts here (default: it is "
                        "deleted with its temporary directory)")
    p.add_argument("--redis-url", help="Redis for the server it starts with --workers > 1 "
                   "(default: a throwaway redis-server on a free loopback port)")
    p.add_argument("--connections", "-n", type=int, default=1000)
    p.add_argument("--duration", type=float, default=None,
                   help="seconds of measurement (default 10); join-storm: most seconds for "
                        "the storm (default 60 + N/500)")
    p.add_argument("--rate", type=float, default=None,
                   help="chat: msg/s per member (default 0.1); broadcast: msg/s into the "
                        "channel (default 10)")
    p.add_argument("--room-size", "-k", type=int, default=10)
    p.add_argument("--processes", type=int, default=0,
                   help=f"generator processes (default: one per {CONNECTIONS_PER_PROCESS:,} "
                        "connections)")
    p.add_argument("--connect-rate", type=float, default=0.0,
                   help="connection attempts/s in total (default: as fast as admitted)")
    p.add_argument("--connect-concurrency", type=int, default=512,
                   help="attempts in flight at once, in total")
    p.add_argument("--connect-timeout", type=float, default=None,
                   help="most seconds for the connect phase (default 60 + N/500)")
    p.add_argument("--connect-retries", type=int, default=0,
                   help="retry a failed connect+identify this many times (jittered back-off "
                        "from 1-2 s, doubling; a 503's Retry-After is honoured); every failed "
                        "attempt is still reported under errors (default 0)")
    p.add_argument("--message-bytes", type=int, default=64)
    p.add_argument("--drain", type=float, default=None,
                   help="most seconds to wait for in-flight deliveries after the sends stop "
                        "(default 5; failover 30)")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds between the connect phase and the measured phase (what the "
                        "last joins set off, e.g. a presence batch, is not measured; default 2)")
    p.add_argument("--kill-after", type=float, default=None,
                   help="failover: seconds into the measured phase at which the gateway "
                        "process with the most connections is killed (default: a third)")
    p.add_argument("--reconnect-jitter", type=float, default=1.0,
                   help="failover: a dropped client first waits a random delay up to this "
                        "many seconds, doubling per failed attempt (default 1, as "
                        "docs/protocol.md recommends)")
    p.add_argument("--no-spread-sources", action="store_true",
                   help="do not bind source addresses over 127.0.0.0/8")
    p.add_argument("--peer", action="append", default=[],
                   choices=("node-ws", "python-socketio", "direct"),
                   help="also run the same workload against this peer (repeatable); voice: "
                        "direct = no server, every speaker sends to every listener over a "
                        "peer connection of its own (the client pipeline's floor)")
    v = p.add_argument_group("voice", "options of the voice scenario (loadtest/voice.py)")
    v.add_argument("--participants", type=int, default=10,
                   help="voice: members of each room (default 10)")
    v.add_argument("--speakers", type=int, default=None,
                   help="voice: members who talk (default: all of them; --stage: 3)")
    v.add_argument("--stage", action="store_true",
                   help="voice: a stage (--speakers talk, the rest may not speak and "
                        "listen) instead of an all-talk room")
    v.add_argument("--rooms", type=int, default=1,
                   help="voice: independent rooms of --participants each (default 1)")
    v.add_argument("--slots", type=int, default=None,
                   help="voice: receive slots in every offer (default: one per speaker "
                        "to hear, at most the server's voice_receive_slots)")
    v.add_argument("--media-workers", type=int, default=None,
                   help="voice: media workers per server process when the harness starts "
                        "the server (HEARTH_MEDIA_WORKERS; default: the server's)")
    v.add_argument("--join-concurrency", type=int, default=4,
                   help="voice: joins in flight at once per generator process (default 4)")
    v.add_argument("--listeners-mode", choices=("auto", "lean", "decode"), default="auto",
                   help="voice: lean = speakers send pre-encoded Opus and listeners count "
                        "and recognise RTP packets without decoding (transit, not "
                        "mouth-to-ear), except --decode-listeners per room; decode = every "
                        "listener decodes; auto (default) = lean above 16 received tracks")
    v.add_argument("--decode-listeners", type=int, default=None,
                   help="voice, lean mode: participants per room that still decode and "
                        "time mouth-to-ear (default: ~12 decoded tracks' worth, e.g. 1 "
                        "in an all-talk room of 10, 4 on a stage of 3 speakers; 0 = none)")
    v.add_argument("--mix-listeners-above", type=int, default=None,
                   help="voice: the started server serves listeners its mix above this "
                        "many (HEARTH_VOICE_MIX_LISTENERS_ABOVE; default: the server's)")
    v.add_argument("--media-capacity-tracks", type=int, default=None,
                   help="voice: outbound tracks a media worker of the started server "
                        "admits (HEARTH_MEDIA_CAPACITY_TRACKS; default: the worker's)")
    p.add_argument("--json", dest="json_path", help="write the JSON report here")
    p.add_argument("--html", dest="html_path", help="write the HTML report here")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def voice_options_from(args: argparse.Namespace) -> VoiceOptions:
    """The voice scenario's options (bounds checked by :meth:`VoiceOptions.validate`)."""
    from loadtest.voice_plan import VoiceOptions

    speakers = args.speakers if args.speakers is not None else \
        (min(3, args.participants) if args.stage else args.participants)
    opts = VoiceOptions(participants=args.participants, speakers=speakers,
                        duration_s=args.duration if args.duration is not None else 10.0,
                        stage=args.stage, rooms=args.rooms, slots=args.slots,
                        processes=args.processes, join_concurrency=max(1, args.join_concurrency),
                        listeners_mode=args.listeners_mode,
                        decode_listeners=args.decode_listeners,
                        mix_listeners_above=args.mix_listeners_above,
                        media_capacity_tracks=args.media_capacity_tracks,
                        progress=not args.quiet)
    try:
        opts.validate()
    except ValueError as exc:
        raise SystemExit(f"hearth loadtest: {exc}") from None
    if set(args.peer) - {"direct"}:
        raise SystemExit("hearth loadtest: the chat peers have no voice rooms; the voice "
                         "scenario's peer is --peer direct")
    if "direct" in args.peer:
        from loadtest.voice_direct import MAX_DIRECT_TRACKS

        edges = opts.direct_tracks()
        if edges > MAX_DIRECT_TRACKS:
            raise SystemExit(f"hearth loadtest: --peer direct would set up {edges} direct "
                             f"speaker->listener tracks (a full mesh); at most "
                             f"{MAX_DIRECT_TRACKS} are allowed (fewer --participants, "
                             "--speakers or --rooms)")
    if args.workers is None:
        args.workers = 1
    return opts


def options_from(args: argparse.Namespace) -> RunOptions:
    n = args.connections
    storm = args.scenario == "join-storm"
    failover = args.scenario == "failover"
    if args.duration is None:
        args.duration = 60 + n / 500 if storm else (20.0 if failover else 10.0)
    if args.drain is None:
        args.drain = 30.0 if failover else 5.0
    kill_after = args.kill_after if args.kill_after is not None else args.duration / 3
    if failover and not 0 <= kill_after < args.duration:
        raise SystemExit("hearth loadtest: --kill-after must be within --duration")
    if "direct" in args.peer:
        raise SystemExit("hearth loadtest: --peer direct is the voice scenario's peer")
    if failover and args.peer:
        raise SystemExit("hearth loadtest: the peers have no resume; failover runs against "
                         "Hearth only")
    if args.workers is None:
        args.workers = 2 if failover else 1
    if failover and not args.url and args.workers < 2:
        raise SystemExit("hearth loadtest: failover needs --workers 2 or more")
    if not 1 <= n <= MAX_CONNECTIONS:
        raise SystemExit(f"hearth loadtest: --connections must be 1-{MAX_CONNECTIONS:,}")
    if not 0 < args.duration <= MAX_DURATION_S:
        raise SystemExit(f"hearth loadtest: --duration must be in (0, {MAX_DURATION_S:g}]")
    if args.room_size < 1:
        raise SystemExit("hearth loadtest: --room-size must be at least 1")
    rate = args.rate if args.rate is not None else DEFAULT_RATE.get(
        "chat" if failover else args.scenario, 0.0)
    if rate < 0 or rate * (n if args.scenario in ("chat", "failover") else 1) > 1_000_000:
        raise SystemExit("hearth loadtest: --rate is negative or above 1,000,000 msg/s in")
    processes = args.processes or max(1, math.ceil(n / CONNECTIONS_PER_PROCESS))
    return RunOptions(
        scenario=args.scenario, connections=n, duration_s=args.duration, rate=rate,
        room_size=args.room_size, processes=processes, connect_rate=args.connect_rate,
        connect_concurrency=max(1, args.connect_concurrency),
        message_bytes=max(24, args.message_bytes), drain_s=max(0.5, args.drain),
        connect_timeout_s=args.duration if storm else (args.connect_timeout or 60 + n / 500),
        spread_sources=not args.no_spread_sources, progress=not args.quiet,
        kill_after_s=kill_after if failover else 0.0,
        reconnect_jitter_s=max(0.0, args.reconnect_jitter),
        connect_retries=max(0, args.connect_retries), settle_s=max(0.0, args.settle))


async def _run_against(opts: RunOptions | VoiceOptions, target: Target) -> dict[str, Any]:
    from loadtest.report import build_report

    if opts.scenario == "voice":
        from loadtest.voice import run_voice
        from loadtest.voice_plan import VoiceOptions

        assert isinstance(opts, VoiceOptions)
        return await run_voice(opts, target)

    assert isinstance(opts, RunOptions)
    result = await Coordinator(opts, target).run()
    return build_report(result)


async def _run(args: argparse.Namespace, opts: RunOptions | VoiceOptions) -> dict[str, Any]:
    from loadtest.peers import start_peer
    from loadtest.report import VOICE_RATIO_KEYS, compare

    if args.url:
        host, port = check_target_url(args.url, args.allow_remote)
        target = Target(name="hearth", base_url=args.url.rstrip("/"), host=host, port=port,
                        local=is_loopback_host(host))
        if opts.scenario == "failover" and not target.local:
            raise TargetError("failover kills a gateway process: it needs a server on this "
                              "machine (a loopback --url)")
        await wait_ready(target.base_url, 10.0)
        report = await _run_against(opts, target)
    else:
        async with local_hearth(args.workers, args.data_dir, args.database_url,
                                postgres_url=args.postgres, redis_url=args.redis_url,
                                keep_log=args.server_log) as target:
            report = await _run_against(opts, target)
    report["peers"] = {}
    report["ratios"] = {}
    if (report.get("interrupted") or "").startswith(("interrupted", "stopped early")):
        return report  # no peers after an interrupted run
    for name in args.peer:
        if name == "direct":
            from loadtest.voice import run_voice
            from loadtest.voice_plan import VoiceOptions, direct_target

            assert isinstance(opts, VoiceOptions)
            limit = int((report.get("voice") or {}).get("server_voice_receive_slots") or 9)
            peer_report = await run_voice(opts.for_direct(limit), direct_target())
            report["peers"][name] = peer_report
            report["ratios"][name] = compare(report, peer_report, VOICE_RATIO_KEYS)
            continue
        async with start_peer(name) as peer:
            peer_report = await _run_against(opts, peer)
        report["peers"][name] = peer_report
        report["ratios"][name] = compare(report, peer_report)
    return report


def _summary(report: dict[str, Any]) -> str:
    if report["scenario"] == "voice":
        from loadtest.voice_report import summary

        return summary(report)
    lat = report["latency_ms"]
    srv = report["server"]
    lines = [f"{report['scenario']} @ hearth: {report['connections_peak']:,} connections peak, "
             f"{report['messages_sent']:,} sent, {report['deliveries']:,} deliveries "
             f"({report['deliveries_per_s'] or 0:,.0f}/s), latency p50 {lat['p50']} p99 "
             f"{lat['p99']} max {lat['max']} ms, lost {report['lost']} dup "
             f"{report['duplicated']} ooo {report['out_of_order']}, errors {report['errors']}, "
             f"server cpu {srv['cpu_percent']}% rss/conn {srv['rss_per_connection_bytes']} B"]
    if report.get("interrupted"):
        lines.append(f"  {report['interrupted']}")
    fo = report.get("failover")
    if fo and fo.get("killed"):
        k = fo["kill_to_resumed_ms"]
        lines.append(f"  failover: killed pid {fo['killed_pid']} at {fo['kill_after_s']} s, "
                     f"{fo['dropped']:,} dropped, {fo['resumed']:,} resumed "
                     f"({(fo['resume_success_rate'] or 0) * 100:.1f}%), kill->resumed p50 "
                     f"{k['p50']} p99 {k['p99']} max {k['max']} ms, lost/dup/ooo "
                     f"{fo['lost']}/{fo['duplicated']}/{fo['out_of_order']}")
    elif fo:
        lines.append("  failover: nothing was killed (see notes)")
    if report.get("connect_rate_per_s"):
        lines.append(f"  connect: {report['connect_rate_per_s']:,.0f}/s, p99 "
                     f"{report['connect_ms']['p99']} ms")
    for name, ratios in (report.get("ratios") or {}).items():
        parts = [f"{k} x{v['ratio']}" for k, v in ratios.items() if v["ratio"] is not None]
        lines.append(f"  hearth/{name}: " + ", ".join(parts))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    opts: RunOptions | VoiceOptions
    if args.scenario == "voice":
        opts = voice_options_from(args)
        if args.media_workers is not None and not args.url:
            if not 0 <= args.media_workers <= 64:
                raise SystemExit("hearth loadtest: --media-workers must be 0-64")
            os.environ["HEARTH_MEDIA_WORKERS"] = str(args.media_workers)  # the server's env
        if args.url and (args.mix_listeners_above is not None
                         or args.media_capacity_tracks is not None):
            raise SystemExit("hearth loadtest: --mix-listeners-above and "
                             "--media-capacity-tracks configure a server the harness starts; "
                             "with --url set them on that server")
        if args.mix_listeners_above is not None:
            os.environ["HEARTH_VOICE_MIX_LISTENERS_ABOVE"] = str(args.mix_listeners_above)
        if args.media_capacity_tracks is not None:
            os.environ["HEARTH_MEDIA_CAPACITY_TRACKS"] = str(args.media_capacity_tracks)
    else:
        opts = options_from(args)
    from loadtest.worker import raise_nofile_limit

    raise_nofile_limit()
    try:
        try:
            import uvloop

            report = uvloop.run(_run(args, opts))
        except ImportError:  # pragma: no cover
            report = asyncio.run(_run(args, opts))
    except TargetError as exc:
        print(f"hearth loadtest: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hearth loadtest: interrupted", file=sys.stderr)
        return 130
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.html_path:
        from loadtest.html import render_html

        Path(args.html_path).write_text(render_html(report), encoding="utf-8")
    print(_summary(report))
    return 0
