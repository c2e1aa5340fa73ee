"""Tables of the event-stream domain.

Projections (rebuilt from the log, cleared on workspace delete): `triggers`, `hooks`,
`hook_receipts`.

Operational state (NOT projections; a rebuild keeps them, because they are not derived from the
log but record what happened outside it):
- `stream_secrets`: signing / verification secrets of triggers and hooks (never in the log).
- `relay_checkpoints`: per workspace, the last seq the relay has had acknowledged by JetStream.
- `trigger_deliveries`: the delivery log (attempts, status codes, latency, dead letters). A
  delivery attempt is an interaction with a third party, not a fact about the workspace's data,
  and it changes many times per event; keeping it out of the log keeps the log about the data.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from events.migrations import register
from events.store import StoredEvent
from events.streaming import (
    HookCreated,
    HookDeleted,
    HookPayloadApplied,
    HookPayloadFailed,
    HookPayloadReceived,
    HookPayloadRejected,
    TriggerCreated,
    TriggerDeleted,
)
from projections.projector import projection_table, projects

register(
    "0501_event_stream",
    """
    CREATE TABLE IF NOT EXISTS triggers (
        workspace_id text NOT NULL,
        id text NOT NULL,
        name text NOT NULL,
        collection text NULL,
        url text NOT NULL,
        events text[] NOT NULL,
        filter jsonb NULL,
        include_hook_writes boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL,
        created_seq bigint NOT NULL,
        PRIMARY KEY (workspace_id, id)
    );
    CREATE TABLE IF NOT EXISTS hooks (
        workspace_id text NOT NULL,
        id text NOT NULL,
        name text NOT NULL,
        collection text NOT NULL,
        external_id_path text NULL,
        external_source text NULL,
        signed boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL,
        created_seq bigint NOT NULL,
        PRIMARY KEY (workspace_id, id)
    );
    CREATE TABLE IF NOT EXISTS hook_receipts (
        workspace_id text NOT NULL,
        receipt_id text NOT NULL,
        hook_id text NOT NULL,
        status text NOT NULL,
        received_at timestamptz NOT NULL,
        received_seq bigint NOT NULL,
        finished_at timestamptz NULL,
        record_id text NULL,
        http_status integer NULL,
        error jsonb NULL,
        PRIMARY KEY (workspace_id, receipt_id)
    );
    CREATE INDEX IF NOT EXISTS hook_receipts_hook_idx
        ON hook_receipts (workspace_id, hook_id, received_seq);
    CREATE INDEX IF NOT EXISTS hook_receipts_pending_idx
        ON hook_receipts (received_seq) WHERE status = 'received';

    CREATE TABLE IF NOT EXISTS stream_secrets (
        owner_id text PRIMARY KEY,
        workspace_id text NOT NULL,
        secret text NOT NULL
    );
    CREATE TABLE IF NOT EXISTS relay_checkpoints (
        workspace_id text PRIMARY KEY,
        seq bigint NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS trigger_deliveries (
        n bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        workspace_id text NOT NULL,
        trigger_id text NOT NULL,
        event_id uuid NOT NULL,
        seq bigint NOT NULL,
        type text NOT NULL,
        record_id text NOT NULL,
        body text NOT NULL,
        replay boolean NOT NULL DEFAULT false,
        status text NOT NULL DEFAULT 'pending',
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL DEFAULT now(),
        last_status_code integer NULL,
        last_error text NULL,
        latency_ms double precision NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        first_attempt_at timestamptz NULL,
        last_attempt_at timestamptz NULL,
        delivered_at timestamptz NULL
    );
    CREATE UNIQUE INDEX IF NOT EXISTS trigger_deliveries_once_idx
        ON trigger_deliveries (trigger_id, event_id) WHERE NOT replay;
    CREATE INDEX IF NOT EXISTS trigger_deliveries_pending_idx
        ON trigger_deliveries (trigger_id, record_id, n) WHERE status = 'pending';
    CREATE INDEX IF NOT EXISTS trigger_deliveries_due_idx
        ON trigger_deliveries (next_attempt_at) WHERE status = 'pending';
    CREATE INDEX IF NOT EXISTS trigger_deliveries_list_idx
        ON trigger_deliveries (workspace_id, trigger_id, n);
    """,
)

projection_table("triggers")
projection_table("hooks")
projection_table("hook_receipts")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


# -- projectors -------------------------------------------------------------------------------


@projects("trigger.created")
async def _trigger_created(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    e = s.event
    assert isinstance(e, TriggerCreated)
    await conn.execute(
        "INSERT INTO triggers (workspace_id, id, name, collection, url, events, filter,"
        " include_hook_writes, created_at, created_seq) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        (
            s.workspace_id,
            e.id,
            e.name,
            e.collection,
            e.url,
            e.events,
            Jsonb(e.filter) if e.filter is not None else None,
            e.include_hook_writes,
            s.recorded_at,
            s.seq,
        ),
    )


@projects("trigger.deleted")
async def _trigger_deleted(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    e = s.event
    assert isinstance(e, TriggerDeleted)
    await conn.execute(
        "DELETE FROM triggers WHERE workspace_id = %s AND id = %s", (s.workspace_id, e.id)
    )


@projects("hook.created")
async def _hook_created(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    e = s.event
    assert isinstance(e, HookCreated)
    await conn.execute(
        "INSERT INTO hooks (workspace_id, id, name, collection, external_id_path,"
        " external_source, signed, created_at, created_seq) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        (
            s.workspace_id,
            e.id,
            e.name,
            e.collection,
            e.external_id_path,
            e.external_source,
            e.signed,
            s.recorded_at,
            s.seq,
        ),
    )


@projects("hook.deleted")
async def _hook_deleted(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    e = s.event
    assert isinstance(e, HookDeleted)
    await conn.execute(
        "DELETE FROM hooks WHERE workspace_id = %s AND id = %s", (s.workspace_id, e.id)
    )


@projects("hook.payload_received")
async def _payload_received(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    e = s.event
    assert isinstance(e, HookPayloadReceived)
    await conn.execute(
        "INSERT INTO hook_receipts (workspace_id, receipt_id, hook_id, status, received_at,"
        " received_seq) VALUES (%s,%s,%s,'received',%s,%s)",
        (s.workspace_id, e.receipt_id, e.hook_id, s.recorded_at, s.seq),
    )


@projects("hook.payload_applied", "hook.payload_failed")
async def _payload_finished(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    e = s.event
    if isinstance(e, HookPayloadApplied):
        status, record_id, error = "applied", e.record_id, None
    else:
        assert isinstance(e, HookPayloadFailed)
        status, record_id = "failed", None
        error = {"code": e.code, "message": e.message, "details": e.errors}
    await conn.execute(
        "UPDATE hook_receipts SET status = %s, record_id = %s, error = %s, finished_at = %s"
        " WHERE workspace_id = %s AND receipt_id = %s",
        (
            status,
            record_id,
            Jsonb(error) if error is not None else None,
            s.recorded_at,
            s.workspace_id,
            e.receipt_id,
        ),
    )


@projects("hook.payload_rejected")
async def _payload_rejected(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    e = s.event
    assert isinstance(e, HookPayloadRejected)
    await conn.execute(
        "INSERT INTO hook_receipts (workspace_id, receipt_id, hook_id, status, received_at,"
        " received_seq, finished_at, http_status, error)"
        " VALUES (%s,%s,%s,'rejected',%s,%s,%s,%s,%s)",
        (
            s.workspace_id,
            e.receipt_id,
            e.hook_id,
            s.recorded_at,
            s.seq,
            s.recorded_at,
            e.status,
            Jsonb({"code": e.code, "message": e.message, "details": []}),
        ),
    )


# -- reads ------------------------------------------------------------------------------------


def trigger_json(row: dict[str, Any]) -> dict[str, Any]:
    """The public shape of a trigger (never its secret)."""
    return {
        "id": row["id"],
        "name": row["name"],
        "collection": row["collection"],
        "url": row["url"],
        "events": list(row["events"]),
        "filter": row["filter"],
        "include_hook_writes": row["include_hook_writes"],
        "created_at": _iso(row["created_at"]),
        "seq": row["created_seq"],
    }


def hook_json(row: dict[str, Any]) -> dict[str, Any]:
    """The public shape of a hook (never its secret)."""
    return {
        "id": row["id"],
        "name": row["name"],
        "collection": row["collection"],
        "external_id_path": row["external_id_path"],
        "external_source": row["external_source"],
        "signed": row["signed"],
        "ingest_url": f"/v1/{row['workspace_id']}/hooks/{row['id']}/ingest",
        "created_at": _iso(row["created_at"]),
        "seq": row["created_seq"],
    }


def receipt_json(row: dict[str, Any]) -> dict[str, Any]:
    """The public shape of a hook receipt."""
    return {
        "id": row["receipt_id"],
        "hook_id": row["hook_id"],
        "status": row["status"],
        "received_at": _iso(row["received_at"]),
        "seq": row["received_seq"],
        "finished_at": _iso(row["finished_at"]),
        "record_id": row["record_id"],
        "http_status": row["http_status"],
        "error": row["error"],
    }


def delivery_json(row: dict[str, Any]) -> dict[str, Any]:
    """The public shape of one delivery-log entry."""
    return {
        "id": row["id"],
        "trigger_id": row["trigger_id"],
        "event_id": str(row["event_id"]),
        "seq": row["seq"],
        "type": row["type"],
        "record_id": row["record_id"],
        "replay": row["replay"],
        "status": row["status"],
        "attempts": row["attempts"],
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "latency_ms": row["latency_ms"],
        "created_at": _iso(row["created_at"]),
        "first_attempt_at": _iso(row["first_attempt_at"]),
        "last_attempt_at": _iso(row["last_attempt_at"]),
        "next_attempt_at": _iso(row["next_attempt_at"]) if row["status"] == "pending" else None,
        "delivered_at": _iso(row["delivered_at"]),
    }


async def fetch_one(
    conn: psycopg.AsyncConnection, sql: str, params: tuple[Any, ...]
) -> dict[str, Any] | None:
    """One row as a dict, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)  # type: ignore[arg-type]
        return await cur.fetchone()


async def fetch_all(
    conn: psycopg.AsyncConnection, sql: str, params: tuple[Any, ...] | list[Any]
) -> list[dict[str, Any]]:
    """All rows as dicts."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)  # type: ignore[arg-type]
        return await cur.fetchall()


async def find_trigger(
    conn: psycopg.AsyncConnection, workspace_id: str, trigger_id: str
) -> dict[str, Any] | None:
    """A live trigger's row."""
    return await fetch_one(
        conn,
        "SELECT * FROM triggers WHERE workspace_id = %s AND id = %s",
        (workspace_id, trigger_id),
    )


async def find_hook(
    conn: psycopg.AsyncConnection, workspace_id: str, hook_id: str
) -> dict[str, Any] | None:
    """A live hook's row."""
    return await fetch_one(
        conn, "SELECT * FROM hooks WHERE workspace_id = %s AND id = %s", (workspace_id, hook_id)
    )


async def get_secret(conn: psycopg.AsyncConnection, owner_id: str) -> str | None:
    """The secret of a trigger or hook."""
    cur = await conn.execute("SELECT secret FROM stream_secrets WHERE owner_id = %s", (owner_id,))
    row = await cur.fetchone()
    return str(row[0]) if row else None
