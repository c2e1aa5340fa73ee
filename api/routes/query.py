"""REST routes for querying and aggregating records: thin adapters over RekorService."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, post

from commands.principal import Principal
from commands.service import RekorService

Doc = msgspec.Meta

_FILTER_DOC = (
    'A condition {"field": "data.severity", "op": "in", "value": ["p0", "p1"]} or a group'
    ' {"and": [...]}, {"or": [...]}, {"not": {...}}. Ops: eq neq gt gte lt lte in not_in like'
    " ilike is_null is_not_null has search. Fields: data.<path> (dot-separated keys; digits"
    " index arrays) and id external_id external_source version created_at updated_at."
    " ISO-8601 datetimes with a time zone compare as instants. At most 8 levels and 100"
    " conditions."
)


class QueryBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Loosely typed on purpose: the service validates each part and names the failing JSON
    # path (e.g. $.filter.and[2].op), the same for REST, CLI and MCP.
    filter: Annotated[Any, Doc(description=_FILTER_DOC)] = None
    sort: Annotated[
        Any,
        Doc(
            description='[{"field": "created_at", "direction": "desc"}] (up to 5; id breaks'
            " ties; a missing field sorts last). Default: creation order, or best search match"
            " first."
        ),
    ] = None
    limit: Annotated[Any, Doc(description="Page size 1-1000, default 50")] = None
    cursor: Annotated[Any, Doc(description="meta.next_cursor of the previous page")] = None
    offset: Annotated[Any, Doc(description="Skip this many rows (0-10000); not with cursor")] = None
    fields: Annotated[
        Any,
        Doc(description='Only these fields, e.g. ["id", "data.title"]; id is always included'),
    ] = None
    as_of: Annotated[
        Any, Doc(description="Query the collection as it was at a seq or an ISO-8601 instant")
    ] = None
    count: Annotated[Any, Doc(description="true adds the exact meta.total (costs a count)")] = False


class AggregateBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    filter: Annotated[Any, Doc(description=_FILTER_DOC)] = None
    group_by: Annotated[Any, Doc(description='Fields to group by, e.g. ["data.status"]')] = None
    aggregations: Annotated[
        Any,
        Doc(
            description='[{"fn": "count|sum|avg|min|max", "field": "data.amount", "alias":'
            ' "total"}]; count needs no field; the alias defaults to "count" or "<fn>_<field>".'
            ' Default [{"fn": "count"}].'
        ),
    ] = None
    as_of: Annotated[
        Any, Doc(description="Aggregate the collection as it was at a seq or ISO-8601 instant")
    ] = None


class QueryController(Controller):
    path = "/v1/{ws:str}/collections/{collection:str}/records"
    tags = ["records"]

    @post("/query", operation_id="queryRecords", status_code=200)
    async def query_records(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        collection: str,
        data: QueryBody,
    ) -> dict[str, Any]:
        """Query records with the filter DSL, sort, keyset paging (`meta.next_cursor`), field
        projection, an optional exact `meta.total` (`count: true`) and time travel (`as_of`).
        A `search` condition ranks by trigram similarity and adds `_search_score`."""
        return await service.query_records(
            principal,
            ws,
            collection,
            filter=data.filter,
            sort=data.sort,
            limit=data.limit,
            cursor=data.cursor,
            offset=data.offset,
            fields=data.fields,
            as_of=data.as_of,
            count=data.count,
        )

    @post("/aggregate", operation_id="aggregateRecords", status_code=200)
    async def aggregate_records(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        collection: str,
        data: AggregateBody,
    ) -> dict[str, Any]:
        """Aggregate the records matching a filter: count / sum / avg / min / max, grouped by
        fields; returns `{"data": [{"<group_by field>": value, ..., "<alias>": number}]}`."""
        return await service.aggregate_records(
            principal,
            ws,
            collection,
            filter=data.filter,
            group_by=data.group_by,
            aggregations=data.aggregations,
            as_of=data.as_of,
        )
