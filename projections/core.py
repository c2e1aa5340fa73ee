"""Projection tables and projectors for workspaces, collections and records."""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

from events.migrations import register
from events.store import StoredEvent
from events.types import (
    CollectionCreated,
    CollectionDeleted,
    CollectionUpdated,
    RecordCreated,
    RecordDeleted,
    RecordUpdated,
    WorkspaceCreated,
)
from projections.projector import (
    Statement,
    projection_table,
    projects,
    projects_statement,
    purge_workspace,
)

register(
    "0002_core_projections",
    """
    CREATE TABLE IF NOT EXISTS collections (
        workspace_id text NOT NULL,
        name text NOT NULL,
        version integer NOT NULL,
        stream_version bigint NOT NULL,
        json_schema jsonb NOT NULL,
        description text NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        created_seq bigint NOT NULL,
        updated_seq bigint NOT NULL,
        PRIMARY KEY (workspace_id, name)
    );
    CREATE TABLE IF NOT EXISTS records (
        workspace_id text NOT NULL,
        collection text NOT NULL,
        id uuid NOT NULL,
        external_id text NULL,
        external_source text NULL,
        data jsonb NOT NULL,
        version integer NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        created_seq bigint NOT NULL,
        updated_seq bigint NOT NULL,
        PRIMARY KEY (workspace_id, id)
    );
    CREATE UNIQUE INDEX IF NOT EXISTS records_external_idx
        ON records (workspace_id, collection, external_id, coalesce(external_source, ''))
        WHERE external_id IS NOT NULL;
    CREATE INDEX IF NOT EXISTS records_collection_idx ON records (workspace_id, collection, id);
    """,
)

projection_table("records")
projection_table("collections")


@projects("workspace.created")
async def _workspace_created(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    e = s.event
    assert isinstance(e, WorkspaceCreated)
    await conn.execute(
        "UPDATE workspaces SET name = %s, parent_id = %s, base_seq = %s, created_at = %s,"
        " updated_at = %s, deleted_at = NULL, created_seq = %s, updated_seq = %s"
        " WHERE workspace_id = %s",
        (e.name, e.parent, e.base_seq, s.recorded_at, s.recorded_at, s.seq, s.seq, s.workspace_id),
    )


@projects("workspace.deleted")
async def _workspace_deleted(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    await purge_workspace(conn, s.workspace_id)
    await conn.execute(
        "UPDATE workspaces SET deleted_at = %s, updated_at = %s, updated_seq = %s"
        " WHERE workspace_id = %s",
        (s.recorded_at, s.recorded_at, s.seq, s.workspace_id),
    )


@projects("collection.created", "collection.updated")
async def _collection_upserted(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    e = s.event
    assert isinstance(e, CollectionCreated | CollectionUpdated)
    await conn.execute(
        "INSERT INTO collections (workspace_id, name, version, stream_version, json_schema,"
        " description, created_at, updated_at, created_seq, updated_seq)"
        " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
        " ON CONFLICT (workspace_id, name) DO UPDATE SET version = excluded.version,"
        " stream_version = excluded.stream_version, json_schema = excluded.json_schema,"
        " description = excluded.description, updated_at = excluded.updated_at,"
        " updated_seq = excluded.updated_seq",
        (
            s.workspace_id,
            e.name,
            e.version,
            s.stream_version,
            Jsonb(e.json_schema),
            e.description,
            s.recorded_at,
            s.recorded_at,
            s.seq,
            s.seq,
        ),
    )


@projects("collection.deleted")
async def _collection_deleted(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    e = s.event
    assert isinstance(e, CollectionDeleted)
    # Its records were tombstoned one by one just before this event.
    await conn.execute(
        "DELETE FROM collections WHERE workspace_id = %s AND name = %s", (s.workspace_id, e.name)
    )


@projects_statement("record.created")
def _record_created(s: StoredEvent) -> Statement:
    e = s.event
    assert isinstance(e, RecordCreated)
    return (
        "INSERT INTO records (workspace_id, collection, id, external_id, external_source, data,"
        " version, created_at, updated_at, created_seq, updated_seq)"
        " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        (
            s.workspace_id,
            e.collection,
            e.id,
            e.external_id,
            e.external_source,
            Jsonb(e.data),
            e.version,
            s.recorded_at,
            s.recorded_at,
            s.seq,
            s.seq,
        ),
    )


@projects_statement("record.updated")
def _record_updated(s: StoredEvent) -> Statement:
    e = s.event
    assert isinstance(e, RecordUpdated)
    return (
        "UPDATE records SET data = %s, version = %s, external_id = %s, external_source = %s,"
        " updated_at = %s, updated_seq = %s WHERE workspace_id = %s AND id = %s",
        (
            Jsonb(e.data),
            e.version,
            e.external_id,
            e.external_source,
            s.recorded_at,
            s.seq,
            s.workspace_id,
            e.id,
        ),
    )


@projects("record.deleted")
async def _record_deleted(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    e = s.event
    assert isinstance(e, RecordDeleted)
    await conn.execute(
        "DELETE FROM records WHERE workspace_id = %s AND id = %s", (s.workspace_id, e.id)
    )
