"""The `relationships` projection: one row per live relationship, its projectors, and the read
side (get, list, traversal), both now and at a past log position (`as_of`, read from the log).

Traversal is a breadth-first search with one SQL statement per level: the statement itself
excludes records already reached and keeps one edge per newly reached record, so each record
appears once, at its shortest depth, and cycles end the walk instead of looping it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from events.errors import NotFound, ValidationError
from events.migrations import register
from events.registry import event_to_dict
from events.relationships import RelationshipCreated, RelationshipDeleted, RelationshipUpdated
from events.store import StoredEvent, read_stream
from projections.projector import projection_table, projects
from projections.reads import decode_cursor, encode_cursor, keyset_page, page

register(
    "0101_relationships",
    """
    CREATE TABLE IF NOT EXISTS relationships (
        workspace_id text NOT NULL,
        id uuid NOT NULL,
        type text NOT NULL,
        source_collection text NOT NULL,
        source_id uuid NOT NULL,
        target_collection text NOT NULL,
        target_id uuid NOT NULL,
        data jsonb NOT NULL,
        version integer NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        created_seq bigint NOT NULL,
        updated_seq bigint NOT NULL,
        PRIMARY KEY (workspace_id, id)
    );
    -- The upsert key; its (workspace_id, source_id, type) prefix serves outgoing traversal.
    CREATE UNIQUE INDEX IF NOT EXISTS relationships_key_idx
        ON relationships (workspace_id, source_id, type, target_id);
    CREATE INDEX IF NOT EXISTS relationships_target_idx
        ON relationships (workspace_id, target_id, type);
    """,
)

projection_table("relationships")

REL_EVENT_TYPES = ["relationship.created", "relationship.updated", "relationship.deleted"]

REL_COLUMNS = (
    "id::text AS id, type, source_collection, source_id::text AS source_id, target_collection,"
    " target_id::text AS target_id, data, version, created_at, updated_at, updated_seq"
)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


# -- projectors -------------------------------------------------------------------------------


@projects("relationship.created")
async def _relationship_created(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    e = s.event
    assert isinstance(e, RelationshipCreated)
    await conn.execute(
        "INSERT INTO relationships (workspace_id, id, type, source_collection, source_id,"
        " target_collection, target_id, data, version, created_at, updated_at, created_seq,"
        " updated_seq) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        (
            s.workspace_id,
            e.id,
            e.rel_type,
            e.source_collection,
            e.source_id,
            e.target_collection,
            e.target_id,
            Jsonb(e.data),
            e.version,
            s.recorded_at,
            s.recorded_at,
            s.seq,
            s.seq,
        ),
    )


@projects("relationship.updated")
async def _relationship_updated(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    e = s.event
    assert isinstance(e, RelationshipUpdated)
    await conn.execute(
        "UPDATE relationships SET data = %s, version = %s, updated_at = %s, updated_seq = %s"
        " WHERE workspace_id = %s AND id = %s",
        (Jsonb(e.data), e.version, s.recorded_at, s.seq, s.workspace_id, e.id),
    )


@projects("relationship.deleted")
async def _relationship_deleted(conn: psycopg.AsyncConnection, s: StoredEvent) -> None:
    e = s.event
    assert isinstance(e, RelationshipDeleted)
    await conn.execute(
        "DELETE FROM relationships WHERE workspace_id = %s AND id = %s", (s.workspace_id, e.id)
    )


# -- shapes -----------------------------------------------------------------------------------


def relationship_json(row: dict[str, Any]) -> dict[str, Any]:
    """The public shape of a relationship (from a projection row)."""
    return {
        "id": row["id"],
        "type": row["type"],
        "source": {"collection": row["source_collection"], "id": row["source_id"]},
        "target": {"collection": row["target_collection"], "id": row["target_id"]},
        "data": row["data"],
        "version": row["version"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "seq": row["updated_seq"],
    }


def relationship_from_event(
    data: dict[str, Any], seq: int, created_at: datetime, updated_at: datetime
) -> dict[str, Any]:
    """The public shape of a relationship from its latest event (time travel)."""
    return {
        "id": data["id"],
        "type": data["rel_type"],
        "source": {"collection": data["source_collection"], "id": data["source_id"]},
        "target": {"collection": data["target_collection"], "id": data["target_id"]},
        "data": data.get("data") or {},
        "version": data["version"],
        "created_at": _iso(created_at),
        "updated_at": _iso(updated_at),
        "seq": seq,
    }


def _record_from_event(
    data: dict[str, Any], seq: int, created_at: datetime, updated_at: datetime
) -> dict[str, Any]:
    return {
        "id": data["id"],
        "collection": data["collection"],
        "external_id": data.get("external_id"),
        "external_source": data.get("external_source"),
        "data": data["data"],
        "version": data["version"],
        "created_at": _iso(created_at),
        "updated_at": _iso(updated_at),
        "seq": seq,
    }


def relationship_not_found(
    workspace_id: str, relationship_id: str, at: int | None = None
) -> NotFound:
    """The NOT_FOUND error for a relationship."""
    when = f" at seq {at}" if at is not None else ""
    return NotFound(
        f"relationship '{relationship_id}' not found in workspace '{workspace_id}'{when}",
        [{"path": "id", "message": "list relationships to find their ids"}],
    )


# -- current state ----------------------------------------------------------------------------


async def find_relationship(
    conn: psycopg.AsyncConnection, workspace_id: str, relationship_id: str
) -> dict[str, Any] | None:
    """The live relationship row, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {REL_COLUMNS} FROM relationships WHERE workspace_id = %s AND id = %s",
            (workspace_id, relationship_id),
        )
        return await cur.fetchone()


async def find_relationship_by_key(
    conn: psycopg.AsyncConnection, workspace_id: str, rel_type: str, source_id: str, target_id: str
) -> dict[str, Any] | None:
    """The live relationship with this (type, source, target), or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {REL_COLUMNS} FROM relationships WHERE workspace_id = %s AND source_id = %s"
            " AND type = %s AND target_id = %s",
            (workspace_id, source_id, rel_type, target_id),
        )
        return await cur.fetchone()


async def relationships_touching(
    conn: psycopg.AsyncConnection, workspace_id: str, record_id: str
) -> list[dict[str, Any]]:
    """Every live relationship with this record at either end (a self-loop once), by id."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {REL_COLUMNS} FROM relationships WHERE workspace_id = %s AND source_id = %s"
            f" UNION SELECT {REL_COLUMNS} FROM relationships WHERE workspace_id = %s"
            " AND target_id = %s ORDER BY id",
            (workspace_id, record_id, workspace_id, record_id),
        )
        return await cur.fetchall()


async def get_relationship(
    conn: psycopg.AsyncConnection, workspace_id: str, relationship_id: str
) -> dict[str, Any]:
    """One live relationship, or NOT_FOUND."""
    row = await find_relationship(conn, workspace_id, relationship_id)
    if row is None:
        raise relationship_not_found(workspace_id, relationship_id)
    return relationship_json(row)


async def list_relationships(
    conn: psycopg.AsyncConnection,
    workspace_id: str,
    *,
    rel_type: str | None,
    source: tuple[str, str] | None,
    target: tuple[str, str] | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """Live relationships in creation (id) order, filtered by type and endpoints
    (`(collection, id)` pairs)."""
    sql = f"SELECT {REL_COLUMNS} FROM relationships WHERE workspace_id = %s"
    params: list[Any] = [workspace_id]
    if rel_type is not None:
        sql += " AND type = %s"
        params.append(rel_type)
    if source is not None:
        sql += " AND source_collection = %s AND source_id = %s"
        params.extend(source)
    if target is not None:
        sql += " AND target_collection = %s AND target_id = %s"
        params.extend(target)
    if cursor:
        sql += " AND id > %s"
        params.append(_cursor_after(cursor))
    sql += " ORDER BY id LIMIT %s"
    params.append(limit + 1)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        rows = await cur.fetchall()
    return keyset_page(rows, limit, "rel", "id", relationship_json)


def _cursor_after(cursor: str) -> str:
    after = decode_cursor(cursor, "rel").get("after")
    try:
        return str(uuid.UUID(str(after)))
    except ValueError as exc:
        raise ValidationError(
            "cursor is not valid: pass back the next_cursor of a previous page unchanged",
            [{"path": "$.cursor", "message": "malformed cursor"}],
        ) from exc


# -- as of a log position ---------------------------------------------------------------------
# Type and endpoints never change during a relationship's life, so filtering its events on them
# before picking the latest one per stream is exact.

_LATEST_RELS = (
    "SELECT * FROM (SELECT DISTINCT ON (stream) type AS event_type, data, seq, recorded_at,"
    " min(recorded_at) OVER (PARTITION BY stream) AS created_at FROM events"
    " WHERE workspace_id = %s AND type = ANY(%s) AND seq <= %s{where}"
    " ORDER BY stream, seq DESC) latest WHERE event_type <> 'relationship.deleted'"
)


async def get_relationship_as_of(
    conn: psycopg.AsyncConnection, workspace_id: str, relationship_id: str, cut: int
) -> dict[str, Any]:
    """The relationship as it was at seq `cut`, read from the log."""
    events = await read_stream(conn, workspace_id, f"relationship:{relationship_id}", up_to_seq=cut)
    if not events or events[-1].type == "relationship.deleted":
        raise relationship_not_found(workspace_id, relationship_id, cut)
    last = events[-1]
    out = relationship_from_event(
        event_to_dict(last.event), last.seq, events[0].recorded_at, last.recorded_at
    )
    out["as_of_seq"] = cut
    return out


async def list_relationships_as_of(
    conn: psycopg.AsyncConnection,
    workspace_id: str,
    cut: int,
    *,
    rel_type: str | None,
    source: tuple[str, str] | None,
    target: tuple[str, str] | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """The relationships live at seq `cut`, in id order, read from the log."""
    where = ""
    params: list[Any] = [workspace_id, REL_EVENT_TYPES, cut]
    if rel_type is not None:
        where += " AND data->>'rel_type' = %s"
        params.append(rel_type)
    if source is not None:
        where += " AND data->>'source_collection' = %s AND data->>'source_id' = %s"
        params.extend(source)
    if target is not None:
        where += " AND data->>'target_collection' = %s AND data->>'target_id' = %s"
        params.extend(target)
    sql = _LATEST_RELS.format(where=where)
    if cursor:
        sql += " AND (data->>'id')::uuid > %s"
        params.append(_cursor_after(cursor))
    sql += " ORDER BY (data->>'id')::uuid LIMIT %s"
    params.append(limit + 1)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        relationship_from_event(r["data"], r["seq"], r["created_at"], r["recorded_at"])
        for r in rows
    ]
    nxt = encode_cursor({"k": "rel", "after": items[-1]["id"]}) if more else None
    out = page(items, limit, nxt)
    out["meta"]["as_of_seq"] = cut
    return out


# -- traversal --------------------------------------------------------------------------------


def _ts(column: str) -> str:
    # The same text as Python's `datetime.isoformat()` in UTC with a trailing Z (the format of
    # every other response), made by Postgres: formatting in Python dominated a wide hop.
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS')"
        f" || CASE WHEN date_part('microseconds', {utc})::bigint %% 1000000 = 0 THEN ''"
        f" ELSE to_char({utc}, '.US') END || 'Z'"
    )


_EDGE_COLUMNS = "r.id AS rel_id, r.target_id, r.source_id"
_ITEM = (
    "json_build_object("
    "'record', json_build_object('id', rec.id, 'collection', rec.collection,"
    " 'external_id', rec.external_id, 'external_source', rec.external_source,"
    " 'data', rec.data, 'version', rec.version,"
    f" 'created_at', {_ts('rec.created_at')}, 'updated_at', {_ts('rec.updated_at')},"
    " 'seq', rec.updated_seq),"
    "'relationship', json_build_object('id', r.id, 'type', r.type,"
    " 'source', json_build_object('collection', r.source_collection, 'id', r.source_id),"
    " 'target', json_build_object('collection', r.target_collection, 'id', r.target_id),"
    " 'data', r.data, 'version', r.version,"
    f" 'created_at', {_ts('r.created_at')}, 'updated_at', {_ts('r.updated_at')},"
    " 'seq', r.updated_seq))"
)


def _level_sql(direction: str, with_type: bool) -> str:
    """One BFS level: edges leaving the frontier (either way) to records not yet visited, one
    edge per newly reached record (the smallest id), in edge-id order, each row the finished
    JSON item."""
    type_filter = " AND r.type = %(type)s" if with_type else ""
    parts = []
    if direction in ("outgoing", "both"):
        parts.append(
            f"SELECT {_EDGE_COLUMNS}, r.target_id AS other FROM relationships r"
            " WHERE r.workspace_id = %(ws)s AND r.source_id = ANY(%(frontier)s::uuid[])"
            f"{type_filter}"
        )
    if direction in ("incoming", "both"):
        parts.append(
            f"SELECT {_EDGE_COLUMNS}, r.source_id AS other FROM relationships r"
            " WHERE r.workspace_id = %(ws)s AND r.target_id = ANY(%(frontier)s::uuid[])"
            f"{type_filter}"
        )
    return (
        f"WITH edges AS ({' UNION ALL '.join(parts)}),"
        " firsts AS (SELECT DISTINCT ON (other) rel_id, other FROM edges"
        " WHERE other <> ALL(%(visited)s::uuid[]) ORDER BY other, rel_id)"
        f" SELECT f.other::text AS id, {_ITEM} AS item FROM firsts f"
        " JOIN relationships r ON r.workspace_id = %(ws)s AND r.id = f.rel_id"
        " JOIN records rec ON rec.workspace_id = %(ws)s AND rec.id = f.other"
        " ORDER BY f.rel_id LIMIT %(limit)s"
    )


async def related(
    conn: psycopg.AsyncConnection,
    workspace_id: str,
    start_id: str,
    *,
    direction: str,
    rel_type: str | None,
    depth: int,
    limit: int,
) -> tuple[list[dict[str, Any]], bool]:
    """Records reachable from `start_id` within `depth` hops, each once at its shortest depth
    with the edge that first reached it; ordered by depth, then edge id. Returns the items and
    whether the limit cut the walk short."""
    sql = _level_sql(direction, rel_type is not None)
    visited = [start_id]
    frontier = [start_id]
    items: list[dict[str, Any]] = []
    truncated = False
    async with conn.cursor() as cur:
        for level in range(1, depth + 1):
            remaining = limit - len(items)
            # One row more than needed tells whether the limit truncated the result.
            params = {
                "ws": workspace_id,
                "frontier": frontier,
                "visited": visited,
                "type": rel_type,
                "limit": remaining + 1,
            }
            await cur.execute(sql, params)
            rows = await cur.fetchall()
            if len(rows) > remaining:
                rows = rows[:remaining]
                truncated = True
            frontier = [rid for rid, _ in rows]
            visited.extend(frontier)
            for _, item in rows:
                item["depth"] = level
                items.append(item)
            if truncated or not frontier:
                break
    return items, truncated


async def related_as_of(
    conn: psycopg.AsyncConnection,
    workspace_id: str,
    start_id: str,
    cut: int,
    *,
    direction: str,
    rel_type: str | None,
    depth: int,
    limit: int,
) -> tuple[list[dict[str, Any]], bool]:
    """`related` over the graph as it was at seq `cut`, reconstructed from the log."""
    visited = {start_id}
    frontier = [start_id]
    items: list[dict[str, Any]] = []
    truncated = False
    for level in range(1, depth + 1):
        edges = await _edges_as_of(conn, workspace_id, cut, frontier, direction, rel_type)
        first: dict[str, tuple[str, dict[str, Any]]] = {}
        for other, edge in edges:
            if other in visited:
                continue
            if other not in first or edge["id"] < first[other][1]["id"]:
                first[other] = (other, edge)
        records = await _records_as_of(conn, workspace_id, cut, list(first))
        reached = sorted(
            (edge["id"], other, edge) for other, edge in first.values() if other in records
        )
        remaining = limit - len(items)
        if len(reached) > remaining:
            reached = reached[:remaining]
            truncated = True
        frontier = [other for _, other, _ in reached]
        visited.update(frontier)
        items.extend(
            {"record": records[other], "relationship": edge, "depth": level}
            for _, other, edge in reached
        )
        if truncated or not frontier:
            break
    return items, truncated


async def _edges_as_of(
    conn: psycopg.AsyncConnection,
    workspace_id: str,
    cut: int,
    frontier: list[str],
    direction: str,
    rel_type: str | None,
) -> list[tuple[str, dict[str, Any]]]:
    ends = []
    if direction in ("outgoing", "both"):
        ends.append("data->>'source_id' = ANY(%s)")
    if direction in ("incoming", "both"):
        ends.append("data->>'target_id' = ANY(%s)")
    where = f" AND ({' OR '.join(ends)})"
    params: list[Any] = [workspace_id, REL_EVENT_TYPES, cut] + [frontier] * len(ends)
    if rel_type is not None:
        where += " AND data->>'rel_type' = %s"
        params.append(rel_type)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LATEST_RELS.format(where=where), params)
        rows = await cur.fetchall()
    members = set(frontier)
    out: list[tuple[str, dict[str, Any]]] = []
    for r in rows:
        edge = relationship_from_event(r["data"], r["seq"], r["created_at"], r["recorded_at"])
        src, dst = edge["source"]["id"], edge["target"]["id"]
        if direction in ("outgoing", "both") and src in members:
            out.append((dst, edge))
        if direction in ("incoming", "both") and dst in members:
            out.append((src, edge))
    return out


async def _records_as_of(
    conn: psycopg.AsyncConnection, workspace_id: str, cut: int, record_ids: list[str]
) -> dict[str, dict[str, Any]]:
    if not record_ids:
        return {}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM (SELECT DISTINCT ON (stream) type AS event_type, data, seq,"
            " recorded_at, min(recorded_at) OVER (PARTITION BY stream) AS created_at"
            " FROM events WHERE workspace_id = %s AND stream = ANY(%s) AND seq <= %s"
            " ORDER BY stream, seq DESC) latest WHERE event_type <> 'record.deleted'",
            (workspace_id, [f"record:{rid}" for rid in record_ids], cut),
        )
        rows = await cur.fetchall()
    return {
        r["data"]["id"]: _record_from_event(r["data"], r["seq"], r["created_at"], r["recorded_at"])
        for r in rows
    }
