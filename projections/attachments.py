"""Projections of attachment events: the live attachments of each record and their versions.

`attachments` holds one row per live (record, filename) with its current version;
`attachment_versions` holds every stored version of it since it was last deleted (each with its
object key, so an older version stays downloadable). A delete removes both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from events.attachments import AttachmentAdded, AttachmentDeleted
from events.errors import ValidationError
from events.migrations import register
from events.registry import event_to_dict
from events.store import StoredEvent, read_stream
from projections.projector import projection_table, projects
from projections.reads import decode_cursor, keyset_page

register(
    "0601_attachments",
    """
    CREATE TABLE IF NOT EXISTS attachments (
        workspace_id text NOT NULL,
        collection text NOT NULL,
        record_id uuid NOT NULL,
        filename text COLLATE "C" NOT NULL,
        stream text NOT NULL,
        version integer NOT NULL,
        key text NOT NULL,
        size bigint NOT NULL,
        content_type text NOT NULL,
        etag text NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        updated_seq bigint NOT NULL,
        PRIMARY KEY (workspace_id, record_id, filename)
    );
    CREATE TABLE IF NOT EXISTS attachment_versions (
        workspace_id text NOT NULL,
        record_id uuid NOT NULL,
        filename text COLLATE "C" NOT NULL,
        version integer NOT NULL,
        key text NOT NULL,
        size bigint NOT NULL,
        content_type text NOT NULL,
        etag text NOT NULL,
        created_at timestamptz NOT NULL,
        seq bigint NOT NULL,
        PRIMARY KEY (workspace_id, record_id, filename, version)
    );
    CREATE UNIQUE INDEX IF NOT EXISTS attachment_versions_key_idx
        ON attachment_versions (workspace_id, key);
    """,
)

projection_table("attachments")
projection_table("attachment_versions")


@projects("attachment.added")
async def _attachment_added(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    e = s.event
    assert isinstance(e, AttachmentAdded)
    await conn.execute(
        "INSERT INTO attachments (workspace_id, collection, record_id, filename, stream, version,"
        " key, size, content_type, etag, created_at, updated_at, updated_seq)"
        " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
        " ON CONFLICT (workspace_id, record_id, filename) DO UPDATE SET"
        " version = excluded.version, key = excluded.key, size = excluded.size,"
        " content_type = excluded.content_type, etag = excluded.etag,"
        " updated_at = excluded.updated_at, updated_seq = excluded.updated_seq",
        (
            s.workspace_id,
            e.collection,
            e.record_id,
            e.filename,
            s.stream,
            e.version,
            e.key,
            e.size,
            e.content_type,
            e.etag,
            s.recorded_at,
            s.recorded_at,
            s.seq,
        ),
    )
    await conn.execute(
        "INSERT INTO attachment_versions (workspace_id, record_id, filename, version, key, size,"
        " content_type, etag, created_at, seq) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        (
            s.workspace_id,
            e.record_id,
            e.filename,
            e.version,
            e.key,
            e.size,
            e.content_type,
            e.etag,
            s.recorded_at,
            s.seq,
        ),
    )


@projects("attachment.deleted")
async def _attachment_deleted(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    e = s.event
    assert isinstance(e, AttachmentDeleted)
    for table in ("attachments", "attachment_versions"):
        await conn.execute(
            f"DELETE FROM {table} WHERE workspace_id = %s AND record_id = %s AND filename = %s",
            (s.workspace_id, e.record_id, e.filename),
        )


# -- reads ------------------------------------------------------------------------------------

_COLUMNS = (
    "collection, record_id::text AS record_id, filename, stream, version, key, size,"
    " content_type, etag, created_at, updated_at, updated_seq"
)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def attachment_json(row: dict[str, Any]) -> dict[str, Any]:
    """The public JSON of a live attachment (storage keys stay internal)."""
    return {
        "filename": row["filename"],
        "size": row["size"],
        "content_type": row["content_type"],
        "etag": row["etag"],
        "version": row["version"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
    }


async def find_attachment(
    conn: psycopg.AsyncConnection, workspace_id: str, record_id: str, filename: str
) -> dict[str, Any] | None:
    """The live attachment row, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM attachments WHERE workspace_id = %s AND record_id = %s"
            " AND filename = %s",
            (workspace_id, record_id, filename),
        )
        return await cur.fetchone()


async def record_attachments(
    conn: psycopg.AsyncConnection, workspace_id: str, record_id: str
) -> list[dict[str, Any]]:
    """Every live attachment of a record, by filename."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM attachments WHERE workspace_id = %s AND record_id = %s"
            " ORDER BY filename",
            (workspace_id, record_id),
        )
        return await cur.fetchall()


async def version_keys(
    conn: psycopg.AsyncConnection, workspace_id: str, record_id: str, filename: str
) -> list[str]:
    """The object keys of every stored version of a live attachment, oldest first."""
    cur = await conn.execute(
        "SELECT key FROM attachment_versions WHERE workspace_id = %s AND record_id = %s"
        " AND filename = %s ORDER BY version",
        (workspace_id, record_id, filename),
    )
    return [row[0] for row in await cur.fetchall()]


async def find_version(
    conn: psycopg.AsyncConnection, workspace_id: str, record_id: str, filename: str, version: int
) -> dict[str, Any] | None:
    """One stored version of a live attachment, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT version, key, size, content_type, etag, created_at FROM attachment_versions"
            " WHERE workspace_id = %s AND record_id = %s AND filename = %s AND version = %s",
            (workspace_id, record_id, filename, version),
        )
        return await cur.fetchone()


async def key_registered(conn: psycopg.AsyncConnection, workspace_id: str, key: str) -> bool:
    """True if an object key already holds a recorded version (in the log, deleted or not)."""
    cur = await conn.execute(
        "SELECT 1 FROM attachment_versions WHERE workspace_id = %s AND key = %s",
        (workspace_id, key),
    )
    return await cur.fetchone() is not None


async def list_attachments(
    conn: psycopg.AsyncConnection,
    workspace_id: str,
    record_id: str,
    *,
    prefix: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """Live attachments of a record ordered by filename, optionally under a folder prefix."""
    where = ["workspace_id = %s", "record_id = %s"]
    params: list[Any] = [workspace_id, record_id]
    if prefix:
        # starts_with, not LIKE: a filename may contain % and _.
        where.append("starts_with(filename, %s)")
        params.append(prefix)
    if cursor:
        after = decode_cursor(cursor, "attachments").get("after")
        if not isinstance(after, str):
            raise ValidationError(
                "cursor is not valid: pass back the next_cursor of a previous page unchanged",
                [{"path": "$.cursor", "message": "malformed cursor"}],
            )
        where.append("filename > %s")
        params.append(after)
    params.append(limit + 1)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM attachments WHERE {' AND '.join(where)}"
            " ORDER BY filename LIMIT %s",
            params,
        )
        rows = await cur.fetchall()
    return keyset_page(rows, limit, "attachments", "filename", attachment_json)


async def attachment_history(
    conn: psycopg.AsyncConnection, workspace_id: str, stream: str
) -> tuple[str | None, list[dict[str, Any]]]:
    """Every event of one attachment stream (uploads and deletes), oldest first, and the
    collection its record belongs to (None when the stream is empty)."""
    items: list[dict[str, Any]] = []
    collection: str | None = None
    for s in await read_stream(conn, workspace_id, stream):
        e = event_to_dict(s.event)
        collection = e["collection"]
        item: dict[str, Any] = {
            "version": e["version"],
            "seq": s.seq,
            "at": _iso(s.recorded_at),
            "actor": s.metadata.get("actor"),
            "interface": s.metadata.get("interface"),
            "event": s.type,
        }
        if s.type == "attachment.added":
            item.update(size=e["size"], content_type=e["content_type"], etag=e["etag"])
        else:
            item["reason"] = e.get("reason")
        items.append(item)
    return collection, items
