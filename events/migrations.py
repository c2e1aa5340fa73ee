"""Named, idempotent schema migrations, applied once each, in registration order, on start.

Each package registers the DDL of the tables it owns. Migrations are named, not numbered, so two
packages can add theirs without colliding; a name is never reused or edited once released.
"""

from __future__ import annotations

import psycopg

_MIGRATIONS: list[tuple[str, str]] = []

# Any constant works; it only has to be the same for every Rekor process sharing the database.
_ADVISORY_LOCK_KEY = 0x5245_4B4F


def register(name: str, sql: str) -> None:
    """Register a migration. Calling it twice with the same name and SQL is harmless."""
    for existing, existing_sql in _MIGRATIONS:
        if existing == name:
            if existing_sql != sql:
                raise RuntimeError(f"migration {name!r} registered twice with different SQL")
            return
    _MIGRATIONS.append((name, sql))


async def migrate(conn: psycopg.AsyncConnection) -> list[str]:
    """Apply every registered migration not yet applied; returns the names applied now.

    Runs under a transaction-scoped advisory lock so that several processes starting at once
    apply each migration exactly once.
    """
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT name FROM schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for name, sql in _MIGRATIONS:
            if name in done:
                continue
            await conn.execute(sql)  # type: ignore[arg-type]
            await conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
            applied_now.append(name)
    return applied_now
