"""Relationships: typed, directed links between two records of one workspace.

A relationship is keyed by `(type, source record, target record)`: upserting the same key again
changes only its `data` (a new version) or, when nothing changed, appends nothing. Endpoints are
looked up inside the writing workspace's transaction, so a link to another workspace's record is
impossible by construction. When a record is deleted, its relationships are deleted first, as
events in the same transaction: no reader ever sees a dangling edge.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import msgspec
import psycopg
import uuid_utils
from psycopg.rows import dict_row

from commands.handlers import RECORD_DELETE_HOOKS, Context, emit, route
from commands.principal import Principal
from commands.types import Command, CommandResult
from commands.validation import (
    check_data_object,
    check_expected_version,
    check_external,
    check_record_id,
    check_slug,
    check_workspace_id,
)
from events.errors import Conflict, NotFound, ValidationError
from events.registry import event_to_dict
from events.relationships import RelationshipCreated, RelationshipDeleted, RelationshipUpdated
from events.store import WorkspaceTx
from projections import reads
from projections import relationships as rel_reads

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

DIRECTIONS = ("outgoing", "incoming", "both")
MAX_DEPTH = 5
DEFAULT_RELATED_LIMIT = 100
MAX_RELATED_LIMIT = 1000


# -- record references ------------------------------------------------------------------------


class RecordRef(msgspec.Struct, frozen=True, kw_only=True):
    """A record named by id, by external id (+ source), or - inside a batch only - by `name`:
    a `ref` given to an earlier operation, else an external id in that collection."""

    collection: str
    id: str | None = None
    external_id: str | None = None
    external_source: str | None = None
    name: str | None = None

    def describe(self) -> str:
        """How the caller named the record, for error messages."""
        if self.id is not None:
            return f"{self.collection}/{self.id}"
        if self.external_id is not None:
            source = f" (source '{self.external_source}')" if self.external_source else ""
            return f"{self.collection} with external_id '{self.external_id}'{source}"
        return f"{self.collection}/{self.name}"


_REF_HELP = (
    'give "collection/<uuid>", {"collection", "id"} or {"collection", "external_id",'
    ' "external_source"}'
)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def parse_record_ref(value: Any, path: str, *, allow_names: bool = False) -> RecordRef:
    """Parse one of the three reference forms. With `allow_names` (batches), an id that is not
    a UUID is kept as a name to resolve against earlier operations, then external ids."""

    def bad(message: str) -> ValidationError:
        return ValidationError(
            f"{path} is not a valid record reference: {message}",
            [{"path": path, "message": f"{message}; {_REF_HELP}"}],
        )

    if isinstance(value, str):
        collection, sep, rest = value.partition("/")
        if not sep or not collection or not rest:
            raise bad(f"expected 'collection/<id>', got {value!r}")
        check_slug(collection, "collection name", path)
        if _is_uuid(rest):
            return RecordRef(collection=collection, id=str(uuid.UUID(rest)))
        if allow_names:
            return RecordRef(collection=collection, name=rest)
        raise bad(f"{rest!r} is not a record UUID")
    if not isinstance(value, dict):
        raise bad(f"expected a string or an object, got {type(value).__name__}")
    allowed = {"collection", "id", "external_id", "external_source"}
    if allow_names:
        allowed.add("ref")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise bad(f"unknown field(s) {unknown}")
    collection = value.get("collection")
    check_slug(collection, "collection name", f"{path}.collection")
    given = [k for k in ("id", "external_id", "ref") if value.get(k) is not None]
    if len(given) != 1:
        raise bad("give exactly one of id or external_id (+ external_source)")
    if value.get("external_source") is not None and given != ["external_id"]:
        raise bad("external_source goes with external_id")
    if given == ["id"]:
        raw = value["id"]
        if isinstance(raw, str) and _is_uuid(raw):
            return RecordRef(collection=collection, id=str(uuid.UUID(raw)))
        if allow_names and isinstance(raw, str) and raw:
            return RecordRef(collection=collection, name=raw)
        raise bad(f"id {raw!r} is not a record UUID")
    if given == ["ref"]:
        if not isinstance(value["ref"], str) or not value["ref"]:
            raise bad("ref must be a non-empty string")
        return RecordRef(collection=collection, name=value["ref"])
    try:
        check_external(value["external_id"], value.get("external_source"))
    except ValidationError as exc:
        raise bad(exc.message) from exc
    return RecordRef(
        collection=collection,
        external_id=value["external_id"],
        external_source=value.get("external_source"),
    )


async def resolve_record_ref(tx: WorkspaceTx, ref: RecordRef, path: str) -> dict[str, Any]:
    """The live record a reference names, in the writing workspace, or NOT_FOUND."""
    row = None
    if ref.id is not None:
        row = await reads.find_record(tx.conn, tx.workspace_id, ref.id)
        if row is not None and row["collection"] != ref.collection:
            row = None
    elif ref.external_id is not None:
        row = await reads.find_record_by_external_id(
            tx.conn, tx.workspace_id, ref.collection, ref.external_id, ref.external_source
        )
    else:
        raise RuntimeError("a named reference must be resolved by the batch first")
    if row is None:
        raise _not_found(tx, ref, path)
    return row


def _not_found(tx: WorkspaceTx, ref: RecordRef, path: str) -> NotFound:
    return NotFound(
        f"{path.removeprefix('$.')} record {ref.describe()} not found in workspace"
        f" '{tx.workspace_id}'",
        [
            {
                "path": path,
                "message": "create the record first (both ends of a relationship must exist"
                " in this workspace), or fix the reference",
            }
        ],
    )


_ENDS_AND_EDGE = (
    "SELECT s.collection AS source_found, t.collection AS target_found,"
    " rel.id::text AS id, rel.type, rel.source_collection, rel.source_id::text AS source_id,"
    " rel.target_collection, rel.target_id::text AS target_id, rel.data, rel.version,"
    " rel.created_at, rel.updated_at, rel.updated_seq FROM (SELECT 1) one"
    " LEFT JOIN records s ON s.workspace_id = %(ws)s AND s.id = %(src)s"
    " LEFT JOIN records t ON t.workspace_id = %(ws)s AND t.id = %(dst)s"
    " LEFT JOIN relationships rel ON rel.workspace_id = %(ws)s AND rel.source_id = %(src)s"
    " AND rel.type = %(type)s AND rel.target_id = %(dst)s"
)


async def _ends_and_edge(
    tx: WorkspaceTx, rel_type: str, source: RecordRef, target: RecordRef
) -> tuple[str, str, dict[str, Any] | None]:
    """Both ends' ids (checked to exist in their collections) and the live relationship with
    this key, if any: one query when both ends are given by id (always so in batches)."""
    src = source.id or (await resolve_record_ref(tx, source, "$.source"))["id"]
    dst = target.id or (await resolve_record_ref(tx, target, "$.target"))["id"]
    async with tx.conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _ENDS_AND_EDGE, {"ws": tx.workspace_id, "src": src, "dst": dst, "type": rel_type}
        )
        row = await cur.fetchone()
    assert row is not None
    if row["source_found"] != source.collection:
        raise _not_found(tx, source, "$.source")
    if row["target_found"] != target.collection:
        raise _not_found(tx, target, "$.target")
    return src, dst, (row if row["id"] is not None else None)


# -- commands and handlers --------------------------------------------------------------------


class UpsertRelationship(Command):
    rel_type: str
    source: RecordRef
    target: RecordRef
    data: dict[str, Any] | None = None
    expected_version: int | None = None


class DeleteRelationship(Command):
    id: str
    expected_version: int | None = None


def _check_version(expected: int | None, actual: int, what: str) -> None:
    if expected is not None and expected != actual:
        state = f"is at version {actual}" if actual else "does not exist"
        raise Conflict(
            f"version conflict: expected version {expected} but {what} {state}; re-read it and"
            " retry",
            {"expected_version": expected, "actual_version": actual},
        )


async def upsert_relationship(
    cmd: UpsertRelationship, tx: WorkspaceTx, ctx: Context
) -> CommandResult:
    check_slug(cmd.rel_type, "relationship type", "$.type")
    data = check_data_object(cmd.data, "$.data") if cmd.data is not None else None
    expected = check_expected_version(cmd.expected_version)
    source_id, target_id, existing = await _ends_and_edge(tx, cmd.rel_type, cmd.source, cmd.target)
    if existing is None:
        _check_version(expected, 0, "the relationship")
        new_id = str(uuid_utils.uuid7())
        stored = await emit(
            tx,
            ctx,
            f"relationship:{new_id}",
            RelationshipCreated(
                id=new_id,
                rel_type=cmd.rel_type,
                source_collection=cmd.source.collection,
                source_id=source_id,
                target_collection=cmd.target.collection,
                target_id=target_id,
                data=data or {},
            ),
            1,
        )
        body = rel_reads.relationship_from_event(
            event_to_dict(stored.event), stored.seq, stored.recorded_at, stored.recorded_at
        )
        return CommandResult(body=body, created=True)
    _check_version(expected, existing["version"], f"relationship '{existing['id']}'")
    # Omitted data keeps the current data: re-asserting that a link exists changes nothing.
    if data is None or data == existing["data"]:
        return CommandResult(body=rel_reads.relationship_json(existing))
    version = existing["version"] + 1
    stored = await emit(
        tx,
        ctx,
        f"relationship:{existing['id']}",
        RelationshipUpdated(
            id=existing["id"],
            rel_type=existing["type"],
            source_collection=existing["source_collection"],
            source_id=existing["source_id"],
            target_collection=existing["target_collection"],
            target_id=existing["target_id"],
            data=data,
            version=version,
        ),
        version,
    )
    body = rel_reads.relationship_from_event(
        event_to_dict(stored.event), stored.seq, existing["created_at"], stored.recorded_at
    )
    return CommandResult(body=body)


async def _tombstone_relationship(
    tx: WorkspaceTx, ctx: Context, row: dict[str, Any], cause: str | None
) -> int:
    version = row["version"] + 1
    stored = await emit(
        tx,
        ctx,
        f"relationship:{row['id']}",
        RelationshipDeleted(
            id=row["id"],
            rel_type=row["type"],
            source_collection=row["source_collection"],
            source_id=row["source_id"],
            target_collection=row["target_collection"],
            target_id=row["target_id"],
            data=row["data"],
            version=version,
            cause=cause,
        ),
        version,
    )
    return stored.seq


async def delete_relationship(
    cmd: DeleteRelationship, tx: WorkspaceTx, ctx: Context
) -> CommandResult:
    rel_id = check_relationship_id(cmd.id)
    expected = check_expected_version(cmd.expected_version)
    row = await rel_reads.find_relationship(tx.conn, tx.workspace_id, rel_id)
    if row is None:
        raise rel_reads.relationship_not_found(tx.workspace_id, rel_id)
    _check_version(expected, row["version"], f"relationship '{rel_id}'")
    seq = await _tombstone_relationship(tx, ctx, row, None)
    return CommandResult(
        body={"id": rel_id, "deleted": True, "version": row["version"] + 1, "seq": seq}
    )


async def delete_relationships_of_record(
    tx: WorkspaceTx, ctx: Context, record: dict[str, Any]
) -> None:
    """Record-delete hook: every relationship touching the record ends first."""
    for row in await rel_reads.relationships_touching(tx.conn, tx.workspace_id, record["id"]):
        await _tombstone_relationship(tx, ctx, row, "record.deleted")


route(UpsertRelationship, upsert_relationship)
route(DeleteRelationship, delete_relationship)
if delete_relationships_of_record not in RECORD_DELETE_HOOKS:
    RECORD_DELETE_HOOKS.append(delete_relationships_of_record)


# -- input checks -----------------------------------------------------------------------------


def check_relationship_id(value: Any, path: str = "id") -> str:
    """Relationship ids are UUIDs."""
    if isinstance(value, str) and _is_uuid(value):
        return str(uuid.UUID(value))
    raise ValidationError(
        f"relationship id {value!r} is not a UUID",
        [{"path": path, "message": "relationship ids are UUIDs; list relationships to find them"}],
    )


def _endpoint_filter(value: Any, path: str) -> tuple[str, str] | None:
    if value is None or value == "":
        return None
    ref = parse_record_ref(value, path)
    if ref.id is None:
        raise ValidationError(
            f"{path} filter must be 'collection/<uuid>'", [{"path": path, "message": "use ids"}]
        )
    return ref.collection, ref.id


def _type_filter(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return check_slug(value, "relationship type", "type")


def check_depth(value: Any) -> int:
    """Traversal depth is 1..MAX_DEPTH."""
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DEPTH:
        raise ValidationError(
            f"depth must be an integer from 1 to {MAX_DEPTH}",
            [{"path": "depth", "message": f"got {value!r}"}],
        )
    return value


# -- service ----------------------------------------------------------------------------------


class RelationshipsMixin:
    """RekorService methods for relationships and traversal."""

    if TYPE_CHECKING:
        pool: AsyncConnectionPool

        async def execute(
            self, principal: Principal, workspace_id: str, command: Command, **meta: Any
        ) -> CommandResult: ...

        async def _require_workspace(
            self, conn: psycopg.AsyncConnection, workspace_id: str
        ) -> None: ...

    async def upsert_relationship(
        self,
        principal: Principal,
        workspace_id: str,
        *,
        type: Any,
        source: Any,
        target: Any,
        data: Any = None,
        expected_version: Any = None,
        **meta: Any,
    ) -> CommandResult:
        """Create or update the relationship `(type, source, target)`. A repeat upsert
        replaces `data` and bumps `version`; unchanged (or omitted) data appends nothing.
        `created` tells 201 from 200. Both records must exist in this workspace."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "write")
        check_slug(type, "relationship type", "$.type")
        src = parse_record_ref(source, "$.source")
        dst = parse_record_ref(target, "$.target")
        if data is not None:
            check_data_object(data, "$.data")
        check_expected_version(expected_version)
        cmd = UpsertRelationship(
            rel_type=type, source=src, target=dst, data=data, expected_version=expected_version
        )
        return await self.execute(principal, ws, cmd, **meta)

    async def get_relationship(
        self, principal: Principal, workspace_id: str, relationship_id: str, as_of: Any = None
    ) -> dict[str, Any]:
        """One relationship now, or as it was at `as_of` (a seq or an ISO-8601 instant)."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        rid = check_relationship_id(relationship_id)
        at = reads.parse_as_of(as_of)
        async with self.pool.connection() as conn:
            await self._require_workspace(conn, ws)
            if at is not None:
                cut = await reads.resolve_as_of(conn, ws, at)
                return await rel_reads.get_relationship_as_of(conn, ws, rid, cut)
            return await rel_reads.get_relationship(conn, ws, rid)

    async def list_relationships(
        self,
        principal: Principal,
        workspace_id: str,
        *,
        type: Any = None,
        source: Any = None,
        target: Any = None,
        limit: Any = None,
        cursor: str | None = None,
        as_of: Any = None,
    ) -> dict[str, Any]:
        """Relationships in creation order, filtered by type and by `collection/<uuid>`
        endpoints; at `as_of`, as they were then."""
        from commands.validation import check_limit

        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        rel_type = _type_filter(type)
        src = _endpoint_filter(source, "source")
        dst = _endpoint_filter(target, "target")
        limit = check_limit(limit)
        at = reads.parse_as_of(as_of)
        async with self.pool.connection() as conn:
            await self._require_workspace(conn, ws)
            if at is not None:
                cut = await reads.resolve_as_of(conn, ws, at)
                return await rel_reads.list_relationships_as_of(
                    conn,
                    ws,
                    cut,
                    rel_type=rel_type,
                    source=src,
                    target=dst,
                    limit=limit,
                    cursor=cursor,
                )
            return await rel_reads.list_relationships(
                conn, ws, rel_type=rel_type, source=src, target=dst, limit=limit, cursor=cursor
            )

    async def delete_relationship(
        self,
        principal: Principal,
        workspace_id: str,
        relationship_id: str,
        expected_version: Any = None,
        **meta: Any,
    ) -> CommandResult:
        """Delete a relationship (a tombstone event; its history stays in the log)."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "write")
        rid = check_relationship_id(relationship_id)
        cmd = DeleteRelationship(id=rid, expected_version=expected_version)
        return await self.execute(principal, ws, cmd, **meta)

    async def related(
        self,
        principal: Principal,
        workspace_id: str,
        collection: str,
        record_id: str,
        *,
        direction: str = "outgoing",
        type: Any = None,
        depth: Any = 1,
        limit: Any = None,
        as_of: Any = None,
    ) -> dict[str, Any]:
        """Records related to one record within `depth` hops (1-5) following edges
        `outgoing`, `incoming` or `both` ways, optionally of one type. Each record appears
        once, at its shortest depth, with the edge that reached it (cycles are safe); at most
        `limit` (default 100, max 1000) results, `meta.truncated` says when more exist."""
        from commands.validation import check_limit

        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        rid = check_record_id(record_id)
        if direction not in DIRECTIONS:
            raise ValidationError(
                f"direction must be one of {', '.join(DIRECTIONS)}",
                [{"path": "direction", "message": f"got {direction!r}"}],
            )
        rel_type = _type_filter(type)
        hops = check_depth(depth)
        limit = check_limit(limit, DEFAULT_RELATED_LIMIT, MAX_RELATED_LIMIT)
        at = reads.parse_as_of(as_of)
        async with self.pool.connection() as conn:
            if at is not None:
                await self._require_workspace(conn, ws)
                cut = await reads.resolve_as_of(conn, ws, at)
                await reads.get_record_as_of(conn, ws, collection, rid, cut)
                items, truncated = await rel_reads.related_as_of(
                    conn,
                    ws,
                    rid,
                    cut,
                    direction=direction,
                    rel_type=rel_type,
                    depth=hops,
                    limit=limit,
                )
            else:
                start = await reads.find_record(conn, ws, rid)
                if start is None or start["collection"] != collection:
                    await self._require_workspace(conn, ws)
                    await reads.get_collection(conn, ws, collection)
                    raise reads.record_not_found(ws, collection, rid)
                items, truncated = await rel_reads.related(
                    conn, ws, rid, direction=direction, rel_type=rel_type, depth=hops, limit=limit
                )
        meta: dict[str, Any] = {
            "limit": limit,
            "depth": hops,
            "direction": direction,
            "truncated": truncated,
        }
        if at is not None:
            meta["as_of_seq"] = cut
        return {"data": items, "meta": meta}


async def find_by_external_id_any_source(
    conn: psycopg.AsyncConnection, workspace_id: str, collection: str, external_id: str
) -> list[dict[str, Any]]:
    """Live records of a collection with this external id, whatever their source."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id::text AS id, collection, external_source FROM records"
            " WHERE workspace_id = %s AND collection = %s AND external_id = %s LIMIT 3",
            (workspace_id, collection, external_id),
        )
        return await cur.fetchall()
