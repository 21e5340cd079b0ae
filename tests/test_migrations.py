"""Migrations apply once, are recorded, and re-running them is a no-op."""

from __future__ import annotations

from persistence.database import Database
from persistence.migrate import available, migrate


async def test_template_is_migrated_and_rerun_is_noop(db: Database) -> None:
    applied = await migrate(db.pool)
    assert applied == []  # the template already holds every migration
    async with db.connection() as conn:
        versions = [r["version"] for r in await conn.fetch(
            "SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == [v for v, _ in available()]
        assert await conn.fetchval("SELECT count(*) FROM users") == 0
