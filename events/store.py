"""The Postgres event store: one append-only `events` table, a per-workspace gapless `seq`.

Guarantee (see DESIGN.md §3): `seq` is assigned while holding the workspace row lock, and the lock
is held until commit. So commits of one workspace happen in `seq` order, and a reader that has
seen `seq = n` committed can never later see a new event with `seq <= n` appear. Consumers can
therefore page with `seq > checkpoint` and never skip an event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
import psycopg
import uuid_utils
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from events.migrations import register
from events.registry import event_from_dict, event_to_dict
from events.types import Event

register(
    "0001_event_store",
    """
    CREATE TABLE IF NOT EXISTS workspaces (
        workspace_id text PRIMARY KEY,
        head bigint NOT NULL DEFAULT 0,
        name text NOT NULL DEFAULT '',
        parent_id text NULL,
        base_seq bigint NULL,
        created_at timestamptz NULL,
        updated_at timestamptz NULL,
        deleted_at timestamptz NULL,
        created_seq bigint NULL,
        updated_seq bigint NULL
    );
    CREATE TABLE IF NOT EXISTS events (
        workspace_id text NOT NULL,
        seq bigint NOT NULL,
        event_id uuid NOT NULL,
        type text NOT NULL,
        stream text NOT NULL,
        stream_version bigint NOT NULL,
        data jsonb NOT NULL,
        metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
        recorded_at timestamptz NOT NULL,
        PRIMARY KEY (workspace_id, seq),
        UNIQUE (workspace_id, stream, stream_version)
    );
    CREATE INDEX IF NOT EXISTS events_type_idx ON events (workspace_id, type, seq);
    CREATE INDEX IF NOT EXISTS events_recorded_at_idx ON events (workspace_id, recorded_at);
    """,
)

NOTIFY_CHANNEL = "rekor_events"


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One committed (or about-to-commit) event with its log position."""

    workspace_id: str
    seq: int
    event_id: str
    type: str
    stream: str
    stream_version: int
    event: Event
    metadata: dict[str, Any]
    recorded_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The public JSON form of a log entry (audit log, change feed, NATS payload)."""
        return {
            "seq": self.seq,
            "id": self.event_id,
            "type": self.type,
            "workspace": self.workspace_id,
            "stream": self.stream,
            "stream_version": self.stream_version,
            "data": {k: v for k, v in event_to_dict(self.event).items() if k != "type"},
            "metadata": self.metadata,
            "recorded_at": self.recorded_at.isoformat(),
        }


class StreamVersionConflict(Exception):
    """Another writer appended to the stream first (a unique `(stream, stream_version)` hit)."""


def new_event_id() -> str:
    """A UUIDv7: time-ordered, so ids sort roughly by creation."""
    return str(uuid_utils.uuid7())


class WorkspaceTx:
    """An open transaction holding one workspace's row lock: the only way to append events.

    Created by `lock_workspace`; the caller commits the surrounding transaction after
    `finish()`. Every appended event is visible to reads in the same transaction at once.
    """

    def __init__(
        self,
        conn: psycopg.AsyncConnection,
        workspace_id: str,
        head: int,
        now: datetime,
        exists: bool,
    ) -> None:
        self.conn = conn
        self.workspace_id = workspace_id
        self.head = head
        self.start_head = head
        self.now = now
        self.exists = exists
        self.appended: list[StoredEvent] = []
        # Per-transaction memo for lookups that many commands of one group repeat (e.g. the
        # collection schema). Whoever emits an event that changes a memoised thing clears it.
        self.memo: dict[Any, Any] = {}

    async def append(
        self,
        stream: str,
        event: Event,
        stream_version: int,
        metadata: dict[str, Any] | None = None,
        *,
        also: Callable[[StoredEvent], tuple[str, tuple[Any, ...]]] | None = None,
    ) -> StoredEvent:
        """Append one event at the next `seq`. `stream_version` is the version the stream has
        after this event (1 for the first); the unique index rejects a concurrent duplicate.
        `also` gives a statement (its projection) that runs in the same SQL statement as the
        INSERT, one round of statement handling instead of two."""
        self.head += 1
        stored = StoredEvent(
            workspace_id=self.workspace_id,
            seq=self.head,
            event_id=new_event_id(),
            type=event.__struct_config__.tag,  # type: ignore[arg-type]
            stream=stream,
            stream_version=stream_version,
            event=event,
            metadata=metadata or {},
            recorded_at=self.now,
        )
        sql = (
            "INSERT INTO events (workspace_id, seq, event_id, type, stream, stream_version,"
            " data, metadata, recorded_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
        )
        params: tuple[Any, ...] = (
            stored.workspace_id,
            stored.seq,
            stored.event_id,
            stored.type,
            stored.stream,
            stored.stream_version,
            Jsonb(event_to_dict(event)),
            Jsonb(stored.metadata),
            stored.recorded_at,
        )
        if also is not None:
            extra_sql, extra_params = also(stored)
            sql = f"WITH appended AS ({sql}) {extra_sql}"
            params = (*params, *extra_params)
        try:
            await self.conn.execute(sql, params)
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.table_name != "events":
                raise
            raise StreamVersionConflict(f"{stream} already has version {stream_version}") from exc
        self.appended.append(stored)
        return stored

    async def finish(self) -> None:
        """Move the workspace head and wake listeners; call just before commit."""
        if self.head == self.start_head:
            return
        await self.conn.execute(
            "UPDATE workspaces SET head = %s WHERE workspace_id = %s",
            (self.head, self.workspace_id),
        )
        await self.conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, self.workspace_id))


async def lock_workspace(
    conn: psycopg.AsyncConnection, workspace_id: str, *, create: bool = False
) -> WorkspaceTx | None:
    """Take the workspace row lock inside the caller's transaction; held until commit, which
    is what makes `seq` gapless and commit-ordered. With `create`, the row is made on first
    use; without it, an unknown workspace gives None (and nothing is written)."""
    sql = (
        "SELECT head, deleted_at IS NULL AND created_at IS NOT NULL"
        " FROM workspaces WHERE workspace_id = %s FOR UPDATE"
    )
    cur = await conn.execute(sql, (workspace_id,))
    row = await cur.fetchone()
    if row is None:
        if not create:
            return None
        await conn.execute(
            "INSERT INTO workspaces (workspace_id) VALUES (%s) ON CONFLICT DO NOTHING",
            (workspace_id,),
        )
        cur = await conn.execute(sql, (workspace_id,))
        row = await cur.fetchone()
        assert row is not None
    # clock_timestamp() is read in its own statement once the lock is held, so recorded_at
    # grows with seq across transactions.
    cur = await conn.execute("SELECT clock_timestamp()")
    now = await cur.fetchone()
    assert now is not None
    return WorkspaceTx(conn, workspace_id, int(row[0]), now[0], bool(row[1]))


_SELECT = (
    "SELECT workspace_id, seq, event_id::text AS event_id, type, stream, stream_version, data,"
    " metadata, recorded_at FROM events"
)


def _row_to_stored(row: dict[str, Any]) -> StoredEvent:
    return StoredEvent(
        workspace_id=row["workspace_id"],
        seq=row["seq"],
        event_id=row["event_id"],
        type=row["type"],
        stream=row["stream"],
        stream_version=row["stream_version"],
        event=event_from_dict(row["data"]),
        metadata=row["metadata"],
        recorded_at=row["recorded_at"],
    )


async def read_workspace(
    conn: psycopg.AsyncConnection,
    workspace_id: str,
    after_seq: int = 0,
    limit: int = 1000,
    *,
    types: list[str] | None = None,
    streams: list[str] | None = None,
    collection: str | None = None,
    up_to_seq: int | None = None,
) -> list[StoredEvent]:
    """Events of one workspace with `seq > after_seq`, in `seq` order."""
    where = ["workspace_id = %s", "seq > %s"]
    params: list[Any] = [workspace_id, after_seq]
    if types:
        where.append("type = ANY(%s)")
        params.append(types)
    if streams:
        where.append("stream = ANY(%s)")
        params.append(streams)
    if collection:
        where.append(
            "(data->>'collection' = %s OR (type LIKE 'collection.%%' AND data->>'name' = %s))"
        )
        params.extend([collection, collection])
    if up_to_seq is not None:
        where.append("seq <= %s")
        params.append(up_to_seq)
    params.append(limit)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY seq LIMIT %s",
            params,
        )
        return [_row_to_stored(r) for r in await cur.fetchall()]


async def read_stream(
    conn: psycopg.AsyncConnection,
    workspace_id: str,
    stream: str,
    *,
    up_to_seq: int | None = None,
    up_to_time: datetime | None = None,
) -> list[StoredEvent]:
    """Every event of one stream (e.g. `record:<uuid>`), oldest first, optionally cut at a seq
    or a time (time travel)."""
    where = ["workspace_id = %s", "stream = %s"]
    params: list[Any] = [workspace_id, stream]
    if up_to_seq is not None:
        where.append("seq <= %s")
        params.append(up_to_seq)
    if up_to_time is not None:
        where.append("recorded_at <= %s")
        params.append(up_to_time)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY stream_version",
            params,
        )
        return [_row_to_stored(r) for r in await cur.fetchall()]


async def seq_at_time(conn: psycopg.AsyncConnection, workspace_id: str, at: datetime) -> int:
    """The last seq recorded at or before `at` (0 if none): turns a timestamp into a log cut."""
    cur = await conn.execute(
        "SELECT coalesce(max(seq), 0) FROM events WHERE workspace_id = %s AND recorded_at <= %s",
        (workspace_id, at),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0
