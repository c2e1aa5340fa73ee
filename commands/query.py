"""Querying and aggregating records: the service methods behind `POST .../records/query`,
`POST .../records/aggregate`, `rekor records query` and the `query_records` MCP tool.

The filter DSL, its semantics and the SQL it compiles to live in `projections.query`; this
module checks the caller, validates and compiles the request before touching the database,
resolves `as_of`, and runs it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from commands.principal import Principal
from commands.validation import check_workspace_id
from events.errors import ValidationError
from projections import query as engine
from projections import reads


def _json_arg(value: Any, name: str) -> Any:
    """Interfaces that carry text (CLI flags, some MCP clients) may send JSON as a string."""
    if isinstance(value, str) and name != "cursor":
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError:
            raise ValidationError(
                f"{name} is not valid JSON",
                [{"path": f"$.{name}", "message": "send a JSON object or list"}],
            ) from None
    return value


class QueryMixin:
    """Filtered, sorted, paged reads and aggregates over a collection (mixed into
    RekorService, which provides `pool`)."""

    pool: Any

    async def query_records(
        self,
        principal: Principal,
        workspace_id: str,
        collection: str,
        *,
        filter: Any = None,
        sort: Any = None,
        limit: Any = None,
        cursor: Any = None,
        offset: Any = None,
        fields: Any = None,
        as_of: Any = None,
        count: Any = False,
    ) -> dict[str, Any]:
        """Records of a collection matching `filter` (the filter DSL), ordered by `sort`
        (default: creation order, or best `search` match first), `limit` per page (1-1000,
        default 50) with an opaque keyset `cursor` (or `offset`), optionally only some
        `fields`, optionally as the collection was at `as_of` (a seq or an ISO-8601 instant).
        `count=true` adds `meta.total`. Needs `read`."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        at = reads.parse_as_of(as_of)
        plan = engine.compile_query(
            ws,
            collection,
            filter=_json_arg(filter, "filter"),
            sort=_json_arg(sort, "sort"),
            limit=limit,
            cursor=cursor,
            offset=offset,
            fields=_json_arg(fields, "fields"),
            count=count,
            as_of=as_of,
        )
        # One transaction: the read's settings (timeout, custom plans, the walk's fallback)
        # are transaction-local, and the pool hands out autocommit connections. Pipeline mode
        # sends BEGIN and settings along with the statement that follows them.
        async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            cut = await reads.resolve_as_of(conn, ws, at) if at is not None else None
            await engine.prepare_read(conn, ws, collection, cut)
            return await engine.run_query(conn, ws, collection, plan, cut)

    async def aggregate_records(
        self,
        principal: Principal,
        workspace_id: str,
        collection: str,
        *,
        filter: Any = None,
        group_by: Any = None,
        aggregations: Any = None,
        as_of: Any = None,
    ) -> dict[str, Any]:
        """Aggregates (`count sum avg min max`) over the records matching `filter`, one row
        per distinct combination of the `group_by` fields (at most 1000 groups;
        `meta.truncated` says when there were more). sum/avg/min/max of a data field use its
        numeric values only. Needs `read`."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        at = reads.parse_as_of(as_of)
        plan = engine.compile_aggregate(
            _json_arg(filter, "filter"),
            _json_arg(group_by, "group_by"),
            _json_arg(aggregations, "aggregations"),
        )
        # One transaction: the read's settings (timeout, custom plans, the walk's fallback)
        # are transaction-local, and the pool hands out autocommit connections. Pipeline mode
        # sends BEGIN and settings along with the statement that follows them.
        async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            cut = await reads.resolve_as_of(conn, ws, at) if at is not None else None
            schema = await engine.prepare_read(conn, ws, collection, cut)
            return await engine.run_aggregate(conn, ws, collection, plan, cut, schema)
