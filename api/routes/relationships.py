"""REST routes for relationships and traversal: thin adapters over RekorService."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.params import Parameter

from api.routes.core import written
from commands.principal import Principal
from commands.service import RekorService

Doc = msgspec.Meta

RecordRefBody = Annotated[
    str | dict[str, Any],
    Doc(
        description='"collection/<uuid>", {"collection", "id"} or {"collection",'
        ' "external_id", "external_source"}',
        examples=["orders/0196f3c2-7a1e-7cc4-a0f5-2b1b5f0f5a11"],
    ),
]


class RelationshipUpsert(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Annotated[str, Doc(description="Relationship type (a slug)", examples=["contains"])]
    source: RecordRefBody
    target: RecordRefBody
    data: Annotated[
        dict[str, Any] | None,
        Doc(description="Data on the edge; omitted keeps the current data"),
    ] = None
    expected_version: Annotated[
        int | None,
        Doc(description="Optimistic concurrency: 0 = must not exist; n = must be at version n"),
    ] = None


class RelationshipController(Controller):
    path = "/v1/{ws:str}/relationships"
    tags = ["relationships"]

    @post("/", operation_id="upsertRelationship")
    async def upsert(
        self, service: RekorService, principal: Principal, ws: str, data: RelationshipUpsert
    ) -> Response[dict[str, Any]]:
        """Create or update the relationship `(type, source, target)`. 201 when created, 200
        otherwise; a repeat upsert replaces `data` and bumps `version`, and an unchanged one
        appends nothing. Both records must exist in this workspace (else 404)."""
        result = await service.upsert_relationship(
            principal,
            ws,
            type=data.type,
            source=data.source,
            target=data.target,
            data=data.data,
            expected_version=data.expected_version,
        )
        return written(result)

    @get("/", operation_id="listRelationships")
    async def list_relationships(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        type: str | None = Parameter(default=None, description="Only this relationship type"),
        source: str | None = Parameter(default=None, description="collection/<uuid>"),
        target: str | None = Parameter(default=None, description="collection/<uuid>"),
        limit: int | None = Parameter(default=None, description="1-1000, default 50"),
        cursor: str | None = Parameter(default=None, description="next_cursor of the last page"),
        as_of: str | None = Parameter(
            default=None, description="Time travel: a seq (e.g. 42) or an ISO-8601 instant"
        ),
    ) -> dict[str, Any]:
        """List relationships in creation order, filtered by type, source and target."""
        return await service.list_relationships(
            principal,
            ws,
            type=type,
            source=source,
            target=target,
            limit=limit,
            cursor=cursor,
            as_of=as_of,
        )

    @get("/{relationship_id:str}", operation_id="getRelationship")
    async def get_relationship(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        relationship_id: str,
        as_of: str | None = Parameter(
            default=None, description="Time travel: a seq (e.g. 42) or an ISO-8601 instant"
        ),
    ) -> dict[str, Any]:
        """Get a relationship now, or as it was at `as_of`."""
        return await service.get_relationship(principal, ws, relationship_id, as_of)

    @delete("/{relationship_id:str}", operation_id="deleteRelationship", status_code=200)
    async def delete_relationship(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        relationship_id: str,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Delete a relationship. Its history stays in the log."""
        result = await service.delete_relationship(principal, ws, relationship_id, expected_version)
        return result.body


class RelatedController(Controller):
    path = "/v1/{ws:str}/collections/{collection:str}/records/{record_id:str}/related"
    tags = ["relationships"]

    @get("/", operation_id="relatedRecords")
    async def related(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        collection: str,
        record_id: str,
        direction: str = Parameter(default="outgoing", description="outgoing, incoming or both"),
        type: str | None = Parameter(default=None, description="Only edges of this type"),
        depth: int = Parameter(default=1, description="Hops to follow, 1-5"),
        limit: int | None = Parameter(default=None, description="1-1000, default 100"),
        as_of: str | None = Parameter(
            default=None, description="Time travel: a seq (e.g. 42) or an ISO-8601 instant"
        ),
    ) -> dict[str, Any]:
        """Walk relationships from a record: `{"data": [{"record", "relationship",
        "depth"}]}`. Each related record appears once, at its shortest depth, with the edge
        that reached it; cycles are safe. `meta.truncated` is true when `limit` cut the walk."""
        return await service.related(
            principal,
            ws,
            collection,
            record_id,
            direction=direction,
            type=type,
            depth=depth,
            limit=limit,
            as_of=as_of,
        )
