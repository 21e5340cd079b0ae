"""The ``hearth`` command: ``serve``, ``migrate``, ``docs``, ``loadtest``, ``grant-owner``.

``hearth serve`` with no configuration runs the embedded default: PostgreSQL from the
``pgserver`` package in ``.hearth/postgres`` and the in-process bus.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from server.config import Config, ConfigError, load_config, worker_count
from server.logs import setup_logging

log = logging.getLogger("hearth")


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return "asyncio"
    uvloop.install()
    return "uvloop"


def _setup_logging(config: Config) -> None:
    setup_logging(config.log_level, config.log_format, os.environ.get("HEARTH_WORKER_ID"))


async def _serve(config: Config, only: list[str] | None = None) -> None:
    if only:
        from server.sidecar_host import build_sidecar_app

        app = build_sidecar_app(config, only)
    else:
        from server.app import build_app

        app = build_app(config)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=10)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_port=True, backlog=4096)
    await site.start()
    where = "embedded PostgreSQL in " + str(config.data_path() / "postgres") \
        if not config.database_url else "PostgreSQL at HEARTH_DATABASE_URL"
    if not os.environ.get("HEARTH_SUPERVISED"):
        bus = "Redis bus" if config.redis_url else "in-process bus"
        if only:
            bus += ", only the sidecar(s) " + ", ".join(only)
        print(f"Hearth is running at http://{config.host}:{config.port}/  ({where}, {bus}). "
              "Press Ctrl+C to stop.", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        print("Hearth is shutting down (clients are told to reconnect)...", flush=True)
        await runner.cleanup()


async def _migrate(config: Config) -> list[str]:
    from persistence.database import Database
    from persistence.embedded import EmbeddedPostgres
    from persistence.migrate import migrate

    embedded = None
    dsn = config.database_url
    if not dsn:
        embedded = EmbeddedPostgres(config.data_path() / "postgres")
        dsn = embedded.start()
    try:
        db = await Database.connect(dsn, min_size=1, max_size=1)
        try:
            return await migrate(db.pool)
        finally:
            await db.close()
    finally:
        if embedded is not None:
            embedded.stop()


async def _grant_owner(config: Config, community_id: int, username: str) -> int:
    """``hearth grant-owner``: make an account the owner of a community (e.g. the
    starter community of an install that had people before owners were bootstrapped).
    Writes PostgreSQL directly; members see the new roles when they next connect."""
    from persistence.database import Database
    from persistence.embedded import EmbeddedPostgres
    from persistence.migrate import migrate
    from server.ownership import GrantError, grant_owner

    embedded = None
    dsn = config.database_url
    if not dsn:
        embedded = EmbeddedPostgres(config.data_path() / "postgres")
        dsn = await asyncio.to_thread(embedded.start)
    try:
        db = await Database.connect(dsn, min_size=1, max_size=1)
        try:
            await migrate(db.pool)
            granted = await grant_owner(db, community_id, username)
        except GrantError as exc:
            print(f"hearth: grant-owner: {exc}", file=sys.stderr)
            return 1
        finally:
            await db.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    if granted.previous_owner_id is None:
        print(f"{username} already owns {granted.community_name!r} "
              f"(community {granted.community_id}); nothing changed")
    else:
        print(f"{username} now owns {granted.community_name!r} "
              f"(community {granted.community_id}); the previous owner "
              f"(user {granted.previous_owner_id}) is an admin")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "loadtest":
        from loadtest.cli import main as loadtest_main

        return loadtest_main(argv[1:])

    parser = argparse.ArgumentParser(prog="hearth", description="Hearth community server")
    parser.add_argument("--config", help="TOML configuration file (or HEARTH_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.add_argument("--data-dir", help="embedded PostgreSQL and secret (default .hearth)")
    serve.add_argument("--workers", type=int,
                       help="processes sharing the port (default: one per core with Redis)")
    serve.add_argument("--only", action="append", metavar="SIDECAR",
                       help="serve only this sidecar (repeatable), no gateway; same "
                            "PostgreSQL and Redis as the gateway processes")
    sub.add_parser("migrate", help="apply database migrations and exit")
    docs = sub.add_parser("docs", help="regenerate docs/protocol.md and docs/rest.md")
    docs.add_argument("--out", default="docs/protocol.md")
    docs.add_argument("--rest-out", default="docs/rest.md")
    sub.add_parser("loadtest", help="run the load-test harness (see hearth loadtest --help)")
    grant = sub.add_parser("grant-owner", help="make an account the owner of a community")
    grant.add_argument("--community", type=int, required=True, help="the community's id")
    grant.add_argument("--user", required=True, help="the account's username")
    args = parser.parse_args(argv)

    if args.command == "docs":
        from protocol.docgen import render_protocol_markdown
        from server.rest.docs import current_document, render_rest_markdown

        Path(args.out).write_text(render_protocol_markdown(), encoding="utf-8")
        Path(args.rest_out).write_text(render_rest_markdown(current_document()),
                                       encoding="utf-8")
        print(f"wrote {args.out} and {args.rest_out}")
        return 0

    overrides = {}
    if args.command == "serve":
        overrides = {"host": args.host, "port": args.port, "data_dir": args.data_dir,
                     "workers": args.workers}
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"hearth: configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config)
    if args.command == "grant-owner":
        return asyncio.run(_grant_owner(config, args.community, args.user))
    if args.command == "migrate":
        applied = asyncio.run(_migrate(config))
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
        return 0
    only: list[str] | None = getattr(args, "only", None)
    if only:
        from server.sidecar_host import discover

        unknown = sorted(set(only) - set(discover()))
        if unknown:
            print(f"hearth: unknown sidecar(s): {', '.join(unknown)}; available: "
                  f"{', '.join(sorted(discover()))}", file=sys.stderr)
            return 2
    if worker_count(config) > 1 and not only:
        from server.supervisor import supervise

        return supervise(config)
    loop_name = _install_uvloop()
    log.info("event loop: %s", loop_name)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, only))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
