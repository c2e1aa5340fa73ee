"""Read side for workspaces, collections and records: the projection tables, and the log for
time travel (`as_of`) and history."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from psycopg.rows import dict_row

from events.errors import NotFound, ValidationError
from events.registry import event_to_dict
from events.store import StoredEvent, read_stream, seq_at_time
from events.types import RecordDeleted

RECORD_COLUMNS = (
    "id::text AS id, collection, external_id, external_source, data, version, created_at,"
    " updated_at, created_seq, updated_seq"
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def record_json(row: dict[str, Any]) -> dict[str, Any]:
    """The public shape of a record."""
    return {
        "id": row["id"],
        "collection": row["collection"],
        "external_id": row["external_id"],
        "external_source": row["external_source"],
        "data": row["data"],
        "version": row["version"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "seq": row["updated_seq"],
    }


def collection_json(row: dict[str, Any]) -> dict[str, Any]:
    """The public shape of a collection."""
    return {
        "id": row["name"],
        "name": row["name"],
        "version": row["version"],
        "json_schema": row["json_schema"],
        "description": row["description"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "seq": row["updated_seq"],
    }


def workspace_json(row: dict[str, Any]) -> dict[str, Any]:
    """The public shape of a workspace."""
    return {
        "id": row["workspace_id"],
        "name": row["name"],
        "parent": row["parent_id"],
        "base_seq": row["base_seq"],
        "head_seq": row["head"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "seq": row["updated_seq"],
    }


# -- cursors ----------------------------------------------------------------------------------
# Opaque to clients; a tampered cursor fails to decode and is a VALIDATION_ERROR, never a 500.


def encode_cursor(payload: dict[str, Any]) -> str:
    """Make an opaque pagination cursor."""
    return base64.urlsafe_b64encode(msgspec.json.encode(payload)).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str) -> dict[str, Any]:
    """Decode a cursor made by `encode_cursor` for the same kind of listing."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = msgspec.json.decode(raw)
    except Exception as exc:
        raise ValidationError(
            "cursor is not valid: pass back the next_cursor of a previous page unchanged",
            [{"path": "$.cursor", "message": "malformed cursor"}],
        ) from exc
    if not isinstance(payload, dict) or payload.get("k") != kind:
        raise ValidationError(
            "cursor belongs to a different listing",
            [{"path": "$.cursor", "message": "cursor kind mismatch"}],
        )
    return payload


def page(items: list[dict[str, Any]], limit: int, next_cursor: str | None) -> dict[str, Any]:
    """The contract's list shape."""
    return {"data": items, "meta": {"limit": limit, "next_cursor": next_cursor}}


def keyset_page(
    rows: list[dict[str, Any]],
    limit: int,
    kind: str,
    field: str,
    to_json: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    name: str = "after",
) -> dict[str, Any]:
    """The list shape for rows fetched with `LIMIT limit + 1`: the extra row only says there is
    a next page, whose cursor (`{"k": kind, name: ...}`) names the last row returned."""
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor({"k": kind, name: rows[-1][field]}) if more else None
    return page([to_json(r) for r in rows], limit, nxt)


# -- workspaces -------------------------------------------------------------------------------

_WS_SELECT = (
    "SELECT workspace_id, head, name, parent_id, base_seq, created_at, updated_at,"
    " updated_seq FROM workspaces WHERE created_at IS NOT NULL AND deleted_at IS NULL"
)


async def get_workspace(conn: psycopg.AsyncConnection, workspace_id: str) -> dict[str, Any]:
    """One live workspace, or NOT_FOUND."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_WS_SELECT + " AND workspace_id = %s", (workspace_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound(
            f"workspace '{workspace_id}' not found",
            [{"path": "workspace_id", "message": "list workspaces to see the ids you can use"}],
        )
    return workspace_json(row)


async def list_workspaces(
    conn: psycopg.AsyncConnection,
    *,
    allowed: list[str] | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """Live workspaces visible to the caller (`allowed` None = all), ordered by id."""
    sql = _WS_SELECT
    params: list[Any] = []
    if allowed is not None:
        sql += " AND (workspace_id = ANY(%s) OR split_part(workspace_id, '--', 1) = ANY(%s))"
        params += [allowed, allowed]
    if cursor:
        sql += " AND workspace_id > %s"
        params.append(decode_cursor(cursor, "ws")["after"])
    sql += " ORDER BY workspace_id LIMIT %s"
    params.append(limit + 1)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        rows = await cur.fetchall()
    return keyset_page(rows, limit, "ws", "workspace_id", workspace_json)


async def workspace_exists(conn: psycopg.AsyncConnection, workspace_id: str) -> bool:
    """True when the workspace is live."""
    cur = await conn.execute(
        "SELECT 1 FROM workspaces WHERE workspace_id = %s AND created_at IS NOT NULL"
        " AND deleted_at IS NULL",
        (workspace_id,),
    )
    return await cur.fetchone() is not None


# -- collections ------------------------------------------------------------------------------


async def find_collection(
    conn: psycopg.AsyncConnection, workspace_id: str, name: str
) -> dict[str, Any] | None:
    """The collection row, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM collections WHERE workspace_id = %s AND name = %s",
            (workspace_id, name),
        )
        return await cur.fetchone()


async def get_collection(
    conn: psycopg.AsyncConnection, workspace_id: str, name: str
) -> dict[str, Any]:
    """One collection, or NOT_FOUND."""
    row = await find_collection(conn, workspace_id, name)
    if row is None:
        raise NotFound(
            f"collection '{name}' not found in workspace '{workspace_id}'",
            [{"path": "collection", "message": "list collections to see what exists"}],
        )
    return collection_json(row)


async def list_collections(conn: psycopg.AsyncConnection, workspace_id: str) -> dict[str, Any]:
    """Every collection of a workspace, by name (workspaces hold few; no paging needed)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT c.*, (SELECT count(*) FROM records r WHERE r.workspace_id = c.workspace_id"
            " AND r.collection = c.name) AS record_count"
            " FROM collections c WHERE workspace_id = %s ORDER BY name",
            (workspace_id,),
        )
        rows = await cur.fetchall()
    items = []
    for r in rows:
        item = collection_json(r)
        item["record_count"] = r["record_count"]
        items.append(item)
    return page(items, len(items), None)


# -- records ----------------------------------------------------------------------------------


async def find_record(
    conn: psycopg.AsyncConnection, workspace_id: str, record_id: str
) -> dict[str, Any] | None:
    """The live record row by id (any collection), or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {RECORD_COLUMNS} FROM records WHERE workspace_id = %s AND id = %s",
            (workspace_id, record_id),
        )
        return await cur.fetchone()


async def find_record_by_external_id(
    conn: psycopg.AsyncConnection,
    workspace_id: str,
    collection: str,
    external_id: str,
    external_source: str | None,
) -> dict[str, Any] | None:
    """The live record with this external id (and source, '' = none) in a collection."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {RECORD_COLUMNS} FROM records WHERE workspace_id = %s AND collection = %s"
            " AND external_id = %s AND coalesce(external_source, '') = %s",
            (workspace_id, collection, external_id, external_source or ""),
        )
        return await cur.fetchone()


def record_not_found(workspace_id: str, collection: str, record_id: str) -> NotFound:
    """The NOT_FOUND error for a record."""
    return NotFound(
        f"record '{record_id}' not found in collection '{collection}' of workspace"
        f" '{workspace_id}'",
        [{"path": "id", "message": "query the collection to find record ids"}],
    )


async def get_record(
    conn: psycopg.AsyncConnection, workspace_id: str, collection: str, record_id: str
) -> dict[str, Any]:
    """The current state of a record, or NOT_FOUND."""
    row = await find_record(conn, workspace_id, record_id)
    if row is None or row["collection"] != collection:
        raise record_not_found(workspace_id, collection, record_id)
    return record_json(row)


async def list_records(
    conn: psycopg.AsyncConnection,
    workspace_id: str,
    collection: str,
    *,
    external_id: str | None,
    external_source: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """Records of a collection in id (creation) order, optionally by external id/source."""
    sql = f"SELECT {RECORD_COLUMNS} FROM records WHERE workspace_id = %s AND collection = %s"
    params: list[Any] = [workspace_id, collection]
    if external_id is not None:
        sql += " AND external_id = %s"
        params.append(external_id)
    if external_source is not None:
        sql += " AND external_source = %s"
        params.append(external_source)
    if cursor:
        sql += " AND id > %s"
        params.append(decode_cursor(cursor, "rec")["after"])
    sql += " ORDER BY id LIMIT %s"
    params.append(limit + 1)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        rows = await cur.fetchall()
    return keyset_page(rows, limit, "rec", "id", record_json)


# -- time travel and history -------------------------------------------------------------------


def parse_as_of(value: str | int | None) -> int | datetime | None:
    """`as_of` is a log position (integer seq) or an ISO-8601 instant."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        if value < 0:
            raise ValidationError("as_of must be a seq >= 0 or an ISO-8601 timestamp")
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationError(
            f"as_of '{text}' is neither a seq (integer) nor an ISO-8601 timestamp",
            [{"path": "as_of", "message": "use e.g. 42 or 2026-11-28T12:00:00Z"}],
        ) from exc
    if at.tzinfo is None:
        raise ValidationError(
            "as_of timestamp needs a time zone (e.g. a trailing Z for UTC)",
            [{"path": "as_of", "message": "use e.g. 2026-11-28T12:00:00Z"}],
        )
    return at


async def resolve_as_of(
    conn: psycopg.AsyncConnection, workspace_id: str, as_of: int | datetime
) -> int:
    """Turn an `as_of` into a seq cut."""
    if isinstance(as_of, int):
        return as_of
    return await seq_at_time(conn, workspace_id, as_of)


def _record_from_event(s: StoredEvent, created: StoredEvent) -> dict[str, Any]:
    e = event_to_dict(s.event)
    return {
        "id": e["id"],
        "collection": e["collection"],
        "external_id": e.get("external_id"),
        "external_source": e.get("external_source"),
        "data": e["data"],
        "version": e["version"],
        "created_at": _iso(created.recorded_at),
        "updated_at": _iso(s.recorded_at),
        "seq": s.seq,
    }


async def get_record_as_of(
    conn: psycopg.AsyncConnection,
    workspace_id: str,
    collection: str,
    record_id: str,
    as_of: int | datetime,
) -> dict[str, Any]:
    """The record as it was at a seq or instant, read from the log."""
    cut = await resolve_as_of(conn, workspace_id, as_of)
    events = await read_stream(conn, workspace_id, f"record:{record_id}", up_to_seq=cut)
    if not events or isinstance(events[-1].event, RecordDeleted):
        raise NotFound(
            f"record '{record_id}' did not exist at seq {cut}",
            [{"path": "as_of", "message": "see the record's history for when it existed"}],
        )
    last = events[-1]
    if getattr(last.event, "collection", None) != collection:
        raise record_not_found(workspace_id, collection, record_id)
    out = _record_from_event(last, events[0])
    out["as_of_seq"] = cut
    return out


def json_diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """A JSON-Patch-like (RFC 6902 paths) list of what changed from `old` to `new`, each with
    the previous value so a reader needs no second lookup."""
    if isinstance(old, dict) and isinstance(new, dict):
        ops: list[dict[str, Any]] = []
        for key in old:
            p = f"{path}/{_escape(key)}"
            if key not in new:
                ops.append({"op": "remove", "path": p, "old_value": old[key]})
            else:
                ops.extend(json_diff(old[key], new[key], p))
        for key in new:
            if key not in old:
                ops.append({"op": "add", "path": f"{path}/{_escape(key)}", "value": new[key]})
        return ops
    if old == new and type(old) is type(new):
        return []
    return [{"op": "replace", "path": path or "/", "value": new, "old_value": old}]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


async def record_history(
    conn: psycopg.AsyncConnection,
    workspace_id: str,
    collection: str,
    record_id: str,
) -> dict[str, Any]:
    """Every version of a record: seq, time, actor, event type, data and the diff from the
    previous version. Works for deleted records too (their log remains)."""
    events = await read_stream(conn, workspace_id, f"record:{record_id}")
    if not events or getattr(events[0].event, "collection", None) != collection:
        raise record_not_found(workspace_id, collection, record_id)
    items: list[dict[str, Any]] = []
    previous: dict[str, Any] = {}
    for s in events:
        e = event_to_dict(s.event)
        data = e.get("data") if s.type != "record.deleted" else None
        items.append(
            {
                "version": e["version"],
                "seq": s.seq,
                "at": _iso(s.recorded_at),
                "actor": s.metadata.get("actor"),
                "interface": s.metadata.get("interface"),
                "event": s.type,
                "event_id": s.event_id,
                "data": data,
                "diff": json_diff(previous, data or {}),
            }
        )
        previous = data or {}
    return page(items, len(items), None)
