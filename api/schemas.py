"""Request bodies as msgspec structs: litestar validates them (unknown fields are refused) and
they document the API in OpenAPI. Deeper checks (slugs, schemas, data) live in commands/."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

Doc = msgspec.Meta


class Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base for request bodies."""


class WorkspaceCreate(Body):
    id: Annotated[
        str,
        Doc(
            description="Slug: lowercase letters, digits, '-', '_' (1-63), no '--'",
            examples=["ws_ops"],
        ),
    ]
    name: Annotated[str | None, Doc(description="Human-readable name; defaults to the id")] = None


class CollectionUpsert(Body):
    json_schema: Annotated[
        dict[str, Any],
        Doc(description="JSON Schema (Draft 2020-12) every record must satisfy; local $refs only"),
    ]
    description: str | None = None


class RecordUpsert(Body):
    data: Annotated[dict[str, Any], Doc(description="The record's data; must fit the schema")]
    id: Annotated[str | None, Doc(description="Record UUID to update or create")] = None
    external_id: Annotated[
        str | None, Doc(description="Your own key; upserts find the record by it")
    ] = None
    external_source: Annotated[
        str | None, Doc(description="Namespace of external_id, e.g. 'pagerduty'")
    ] = None
    expected_version: Annotated[
        int | None,
        Doc(description="Optimistic concurrency: 0 = must not exist; n = must be at version n"),
    ] = None


class ApiKeyCreate(Body):
    name: str
    permissions: Annotated[list[str], Doc(description="Any of read, write, admin, promote")] = (
        msgspec.field(default_factory=lambda: ["read", "write"])
    )
    workspaces: Annotated[
        list[str], Doc(description='Workspace ids the key may touch; ["*"] for all')
    ] = msgspec.field(default_factory=lambda: ["*"])
