"""Versioned SQL migrations: ``migrations/NNNN_name.sql`` applied in order, once each.

A PostgreSQL advisory lock serializes concurrent starters (several gateway processes
booting at once); each file runs in its own transaction together with its row in
``schema_migrations``, so a failed migration leaves nothing half-applied.

Sidecars (``sidecars/<name>/migrations``) have their own namespaces: their versions are
recorded as ``<name>/NNNN_x``, applied after the core's, so two sidecars (or a sidecar
and the core) can never collide on a version name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

_LOCK_KEY = 0x4E4152544800  # arbitrary, constant: "HEARTH" advisory lock


def available(folder: Path | None = None, prefix: str = "") -> list[tuple[str, str]]:
    """(version, sql) for every migration in ``folder`` (default: the core's), in order."""
    folder = folder or Path(__file__).parent / "migrations"
    files = sorted(folder.glob("*.sql"))
    return [(prefix + f.name.removesuffix(".sql"), f.read_text(encoding="utf-8"))
            for f in files]


async def migrate(pool: asyncpg.Pool, namespaces: Mapping[str, Path] = {}) -> list[str]:
    """Apply pending migrations (the core's, then each namespace's folder, by name);
    returns the versions applied now."""
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            pending = available()
            for name in sorted(namespaces):
                pending += available(namespaces[name], f"{name}/")
            for version, sql in pending:
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", version
                    )
                log.info("applied migration %s", version)
                applied_now.append(version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
