"""Rebuild projections from the log: the same projector code that runs inline replays every
event of a workspace, in seq order, into emptied tables. A rebuild must yield identical tables
(tests/test_rebuild.py proves it after a random workload)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from events.store import lock_workspace, read_workspace
from projections import projector

_BATCH = 2000


async def rebuild_workspace(
    conn: psycopg.AsyncConnection,
    workspace_id: str,
    progress: Callable[[str, int], None] | None = None,
) -> int:
    """Rebuild one workspace's projections in one transaction that holds the workspace lock
    (writers wait; readers keep seeing the old tables until commit). Returns events replayed."""
    replayed = 0
    async with conn.transaction():
        tx = await lock_workspace(conn, workspace_id)
        if tx is None:
            return 0
        await projector.purge_workspace(conn, workspace_id)
        await conn.execute(
            "UPDATE workspaces SET name = '', parent_id = NULL, base_seq = NULL,"
            " created_at = NULL, updated_at = NULL, deleted_at = NULL, created_seq = NULL,"
            " updated_seq = NULL WHERE workspace_id = %s",
            (workspace_id,),
        )
        after = 0
        while True:
            batch = await read_workspace(conn, workspace_id, after, _BATCH)
            if not batch:
                break
            for stored in batch:
                await projector.apply(conn, stored)
            replayed += len(batch)
            after = batch[-1].seq
            if progress is not None:
                progress(workspace_id, replayed)
    return replayed


async def rebuild_all(
    conn: psycopg.AsyncConnection,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Rebuild every workspace; returns events replayed per workspace."""
    cur = await conn.execute("SELECT workspace_id FROM workspaces ORDER BY workspace_id")
    ids = [row[0] for row in await cur.fetchall()]
    return {ws: await rebuild_workspace(conn, ws, progress) for ws in ids}
