"""`rekor admin rebuild-projections` and `rekor admin migrate`: operator commands that work on
the database directly (REKOR_DATABASE_URL), not through REST."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Annotated

from cyclopts import Parameter

from cli.core import admin_app


def _database_url(database_url: str | None) -> str:
    url = database_url or os.environ.get("REKOR_DATABASE_URL")
    if not url:
        print(
            "rekor admin needs the database: pass --database-url or set REKOR_DATABASE_URL"
            " (for the embedded stack, `rekor serve` prints it at start)",
            file=sys.stderr,
        )
        sys.exit(1)
    return url


@admin_app.command(name="rebuild-projections")
def rebuild_projections(
    *,
    workspace: Annotated[
        str | None, Parameter(help="Rebuild only this workspace (default: all).")
    ] = None,
    database_url: Annotated[str | None, Parameter(help="PostgreSQL URL.")] = None,
) -> None:
    """Rebuild the queryable tables from the event log.

    Each workspace is rebuilt in one transaction holding its write lock: writers to that
    workspace wait, readers keep seeing the old tables until the rebuild commits.

    Examples:
        rekor admin rebuild-projections --database-url postgresql://.../rekor
        REKOR_DATABASE_URL=... rekor admin rebuild-projections --workspace ws_ops
    """
    url = _database_url(database_url)

    async def run() -> dict[str, int]:
        import psycopg

        from commands.bootstrap import migrate_only
        from projections.rebuild import rebuild_all, rebuild_workspace

        await migrate_only(url)
        last = [0.0]

        def progress(ws: str, n: int) -> None:
            if time.monotonic() - last[0] > 0.5:
                last[0] = time.monotonic()
                print(f"  {ws}: {n} events replayed", file=sys.stderr, flush=True)

        async with await psycopg.AsyncConnection.connect(url) as conn:
            if workspace:
                return {workspace: await rebuild_workspace(conn, workspace, progress)}
            return await rebuild_all(conn, progress)

    started = time.monotonic()
    done = asyncio.run(run())
    for ws, n in done.items():
        print(f"{ws}: rebuilt from {n} events")
    print(f"rebuilt {len(done)} workspace(s) in {time.monotonic() - started:.1f}s", file=sys.stderr)


@admin_app.command
def migrate(
    *, database_url: Annotated[str | None, Parameter(help="PostgreSQL URL.")] = None
) -> None:
    """Apply pending schema migrations (`rekor serve` does this on start).

    Example:
        rekor admin migrate --database-url postgresql://.../rekor
    """
    from commands.bootstrap import migrate_only

    applied = asyncio.run(migrate_only(_database_url(database_url)))
    print("\n".join(applied) if applied else "schema is up to date")
