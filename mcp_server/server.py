"""The 11 MCP tools: thin adapters from a tool call to one RekorService operation.

Each tool takes an `action` and inputs named as in REST, and hands the call to a `Backend`
(in-process service for HTTP, REST for stdio). Failures are raised as the SDK's `ToolError`
with the text `CODE: message` plus the details as JSON, so the agent sees `isError` and can
correct itself; nothing is ever returned as a successful error string.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import msgspec
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from events.errors import RekorError
from mcp_server.backend import Backend

log = logging.getLogger("rekor.mcp")

MAX_ARGUMENT_BYTES = 2 * 1024 * 1024
"""The same limit as a REST body: bigger arguments are refused before anything runs."""

BackendFor = Callable[[Context], Awaitable[Backend]]

INSTRUCTIONS = """\
Rekor is a data layer for agents: workspaces hold collections (record types defined by a JSON
Schema), records (JSON documents, found by id or by your external_id + external_source),
typed relationships between records, file attachments, and webhooks. Every write is an event
in the workspace's log; history and time travel (as_of) are always available.

Discover before you write: manage_workspace {action: "list"} shows the workspaces your key can
use; manage_collection {action: "list", workspace_id} shows their collections and schemas.
Then read with manage_record / query_records and write with manage_record {action: "upsert"}.
Upsert by external_id + external_source to make a write safe to repeat.

Errors arrive as tool errors "CODE: message" (VALIDATION_ERROR, NOT_FOUND, CONFLICT,
FORBIDDEN, UNAUTHORIZED, PAYLOAD_TOO_LARGE, NOT_IMPLEMENTED, ...) followed by details that name
each failing JSON path; fix the named input and call again.
"""

FILTER_DSL = """\
Filter DSL: a condition {"field": F, "op": OP, "value": V} or a group {"and": [...]},
{"or": [...]}, {"not": {...}}. Fields: "data.<path>" (e.g. "data.severity",
"data.owner.email") and the system fields id, external_id, external_source, version,
created_at, updated_at. Ops: eq neq gt gte lt lte (compare), in not_in (value is a list),
like ilike (SQL patterns with %), is_null is_not_null (no value), has (array contains value),
search (full-text-ish match on a text field). Examples:
  {"field": "data.severity", "op": "in", "value": ["p0", "p1"]}
  {"and": [{"field": "data.status", "op": "neq", "value": "resolved"},
           {"field": "created_at", "op": "gte", "value": "2025-01-01T00:00:00Z"}]}
  {"or": [{"field": "data.title", "op": "ilike", "value": "%latency%"},
          {"field": "data.assignee", "op": "is_null"}]}
Sort: [{"field": "data.severity", "direction": "asc"}, {"field": "created_at",
"direction": "desc"}]."""

QUERY_DESCRIPTION = (
    "Find records by content. action 'query' (default): filter, sort, limit, cursor, fields,"
    ' as_of, count -> {"data": [records], "meta": {"limit", "next_cursor"}} (pass next_cursor'
    " back as cursor for the next page). action 'aggregate': filter, group_by, aggregations"
    ' -> {"data": [{"<group_by field>": value, ..., "<alias>": number}]}.\n' + FILTER_DSL
)

WorkspaceId = Annotated[
    str,
    Field(description="Workspace id, e.g. 'ws_ops' (manage_workspace list shows them)."),
]
OptWorkspaceId = Annotated[
    str | None,
    Field(description="Workspace id, e.g. 'ws_ops'. Required by every action except list."),
]
Collection = Annotated[str, Field(description="Collection name, e.g. 'incidents'.")]
OptCollection = Annotated[str | None, Field(description="Collection name, e.g. 'incidents'.")]
Limit = Annotated[int | None, Field(description="Page size 1-1000 (default 50).")]
Cursor = Annotated[
    str | None, Field(description="meta.next_cursor from the previous page, to read the next.")
]
AsOf = Annotated[
    int | str | None,
    Field(
        description="Time travel: a log position (seq, e.g. 42) or an ISO-8601 instant; the"
        " answer is the state as it was then."
    ),
]
ExpectedVersion = Annotated[
    int | None,
    Field(
        description="Optimistic concurrency: the write fails with CONFLICT unless the entity is"
        " at this version (0 = must not exist yet)."
    ),
]
RecordRef = Annotated[
    str | dict[str, Any] | None,
    Field(
        description='A record: "collection/<uuid>", {"collection", "id"} or {"collection",'
        ' "external_id", "external_source"}.'
    ),
]


def tool_error(exc: RekorError) -> ToolError:
    """The agent-facing form of a Rekor error: `CODE: message`, then the details."""
    text = f"{exc.code}: {exc.message}"
    if exc.details:
        text += "\ndetails: " + json.dumps(exc.details, ensure_ascii=False, default=str)
    return ToolError(text)


def invalid(message: str, path: str) -> ToolError:
    """A VALIDATION_ERROR for an argument the tool itself checks."""
    return tool_error(_Validation(message, [{"path": path, "message": message}]))


class _Validation(RekorError):
    code = "VALIDATION_ERROR"


class _NotImplemented(RekorError):
    code = "NOT_IMPLEMENTED"


class _TooLarge(RekorError):
    code = "PAYLOAD_TOO_LARGE"


def _required(tool: str, action: str, **values: Any) -> None:
    missing = [name for name, value in values.items() if value is None]
    if missing:
        raise invalid(
            f"{tool} action '{action}' needs {', '.join(repr(m) for m in missing)}",
            missing[0],
        )


def _check_size(tool: str, arguments: dict[str, Any]) -> None:
    size = len(msgspec.json.encode(arguments))
    if size > MAX_ARGUMENT_BYTES:
        raise tool_error(
            _TooLarge(
                f"{tool} arguments are {size} bytes; the limit is {MAX_ARGUMENT_BYTES} bytes."
                " Split the work (e.g. several upserts, or batch_operations in chunks).",
                [{"path": "$", "message": f"{size} > {MAX_ARGUMENT_BYTES} bytes"}],
            )
        )


def compact(body: Any, *keys: str) -> Any:
    """The short answer of an upsert (the contract's seed examples)."""
    if not isinstance(body, dict):
        return body
    return {key: body.get(key) for key in keys}


def build_server(backend_for: BackendFor) -> MCPServer:
    """The MCP server with Rekor's 11 tools; `backend_for(ctx)` gives the caller's backend."""
    # WARNING: the SDK would otherwise set up INFO logging of its own in the host process.
    mcp: MCPServer = MCPServer(
        name="rekor", instructions=INSTRUCTIONS, version="0.1.0", log_level="WARNING"
    )

    async def run(
        ctx: Context, tool: str, action: str, method: str, arguments: dict[str, Any]
    ) -> Any:
        _check_size(tool, arguments)
        backend = await backend_for(ctx)
        try:
            return await backend.call(method, **arguments)
        except RekorError as exc:
            if exc.code == "NOT_IMPLEMENTED":
                raise tool_error(
                    _NotImplemented(
                        f"{tool} action '{action}' is not available yet on this Rekor server",
                        [{"path": "action", "message": exc.message}],
                    )
                ) from None
            raise tool_error(exc) from None
        except ToolError:
            raise
        except Exception:
            log.exception("%s %s failed", tool, action)
            raise ToolError(
                "INTERNAL_ERROR: the operation failed inside Rekor; it may be retried"
            ) from None

    @mcp.tool(structured_output=False)
    async def manage_workspace(
        action: Literal["list", "get", "create", "delete", "create_preview", "promote"],
        ctx: Context,
        workspace_id: OptWorkspaceId = None,
        name: Annotated[
            str | None,
            Field(description="create: display name; create_preview: the preview's name."),
        ] = None,
        preview_id: Annotated[
            str | None, Field(description="promote: the preview workspace to promote from.")
        ] = None,
        dry_run: Annotated[bool | None, Field(description="promote: only report the plan.")] = None,
        force: Annotated[
            bool | None, Field(description="promote: accept breaking schema changes.")
        ] = None,
        with_data: Annotated[
            bool | None, Field(description="create_preview: copy the records too.")
        ] = None,
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Workspaces: isolated logs, each with its own collections, records and webhooks.
        Start here: action "list" shows the workspaces your key can use ({"data": [{"id",
        "name", "head_seq", ...}], "meta": {"next_cursor"}}); then manage_collection "list".
        Actions: list; get (workspace_id) -> the workspace with head_seq (its log position);
        create (workspace_id slug like "ws_ops", optional name; needs admin) -> the workspace;
        delete (workspace_id; needs admin); create_preview (workspace_id, name) -> a copy
        "<ws>--<name>" to try schema changes; promote (workspace_id = target, preview_id,
        dry_run) -> the plan or the result (needs the promote permission)."""
        tool = "manage_workspace"
        if action == "list":
            return await run(
                ctx, tool, action, "list_workspaces", {"limit": limit, "cursor": cursor}
            )
        _required(tool, action, workspace_id=workspace_id)
        if action == "get":
            return await run(ctx, tool, action, "get_workspace", {"workspace_id": workspace_id})
        if action == "create":
            args = {"workspace_id": workspace_id, "name": name}
            return await run(ctx, tool, action, "create_workspace", args)
        if action == "delete":
            return await run(ctx, tool, action, "delete_workspace", {"workspace_id": workspace_id})
        if action == "create_preview":
            _required(tool, action, name=name)
            args = {"workspace_id": workspace_id, "name": name, "with_data": with_data}
            return await run(ctx, tool, action, "create_preview", args)
        _required(tool, action, preview_id=preview_id)
        args = {
            "workspace_id": workspace_id,
            "source": preview_id,
            "dry_run": bool(dry_run),
            "force": bool(force),
        }
        return await run(ctx, tool, action, "promote", args)

    @mcp.tool(structured_output=False)
    async def manage_collection(
        action: Literal["list", "get", "upsert", "delete"],
        workspace_id: WorkspaceId,
        ctx: Context,
        collection: OptCollection = None,
        json_schema: Annotated[
            dict[str, Any] | None,
            Field(
                description="upsert: JSON Schema (Draft 2020-12) every record must satisfy,"
                ' e.g. {"type": "object", "required": ["title"], "properties": {"title":'
                ' {"type": "string"}, "severity": {"enum": ["p0", "p1", "p2"]}}}.'
            ),
        ] = None,
        description: Annotated[str | None, Field(description="upsert: what it holds.")] = None,
    ) -> dict[str, Any]:
        """Collections: record types defined by a JSON Schema at runtime (no migrations).
        Actions: list -> {"data": [{"id", "name", "version", "json_schema", ...}]} (read the
        schemas before writing records); get (collection) -> the collection with its
        json_schema; upsert (collection, json_schema, description?) -> {"id", "name",
        "version"}: creates it, or changes the schema (version bumps only when the schema
        changes; a schema existing records would violate is refused with their ids);
        delete (collection) -> removes it and its records (history stays in the log)."""
        tool = "manage_collection"
        if action == "list":
            return await run(ctx, tool, action, "list_collections", {"workspace_id": workspace_id})
        _required(tool, action, collection=collection)
        args: dict[str, Any] = {"workspace_id": workspace_id, "name": collection}
        if action == "get":
            return await run(ctx, tool, action, "get_collection", args)
        if action == "delete":
            return await run(ctx, tool, action, "delete_collection", args)
        _required(tool, action, json_schema=json_schema)
        args.update(json_schema=json_schema, description=description)
        body = await run(ctx, tool, action, "upsert_collection", args)
        return compact(body, "id", "name", "version")

    @mcp.tool(structured_output=False)
    async def manage_record(
        action: Literal["upsert", "get", "patch", "delete", "list"],
        workspace_id: WorkspaceId,
        collection: Collection,
        ctx: Context,
        id: Annotated[str | None, Field(description="The record's UUID.")] = None,
        external_id: Annotated[
            str | None, Field(description="Your own key, e.g. 'INC-2847'; upsert finds by it.")
        ] = None,
        external_source: Annotated[
            str | None, Field(description="Namespace of external_id, e.g. 'pagerduty'.")
        ] = None,
        data: Annotated[
            dict[str, Any] | None,
            Field(
                description="upsert: the full record data (must fit the collection's schema);"
                " patch: a JSON merge patch of the data (null removes a field)."
            ),
        ] = None,
        expected_version: ExpectedVersion = None,
        as_of: AsOf = None,
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Records: JSON documents validated by their collection's schema.
        Actions: upsert (data, and id or external_id + external_source to update an existing
        record; neither creates a new one) -> {"id", "external_id", "version"} (repeating an
        identical upsert changes nothing and keeps the version); get (id, as_of?) -> the
        record {"id", "collection", "external_id", "external_source", "data", "version",
        "created_at", "updated_at", "seq"}; patch (id, data as merge patch) -> the record;
        delete (id) -> {"id", "deleted": true, "seq"}; list (external_id?, external_source?,
        limit, cursor) -> {"data": [records], "meta": {"next_cursor"}}. To search by
        content use query_records. Schema violations come back as VALIDATION_ERROR listing
        every failing path (e.g. $.data.severity)."""
        tool = "manage_record"
        base = {"workspace_id": workspace_id, "collection": collection}
        if action == "upsert":
            _required(tool, action, data=data)
            args = {
                **base,
                "data": data,
                "id": id,
                "external_id": external_id,
                "external_source": external_source,
                "expected_version": expected_version,
            }
            body = await run(ctx, tool, action, "upsert_record", args)
            return compact(body, "id", "external_id", "version")
        if action == "list":
            args = {
                **base,
                "external_id": external_id,
                "external_source": external_source,
                "limit": limit,
                "cursor": cursor,
            }
            return await run(ctx, tool, action, "list_records", args)
        _required(tool, action, id=id)
        base["record_id"] = id
        if action == "get":
            return await run(ctx, tool, action, "get_record", {**base, "as_of": as_of})
        if action == "delete":
            args = {**base, "expected_version": expected_version}
            return await run(ctx, tool, action, "delete_record", args)
        _required(tool, action, data=data)
        patch: dict[str, Any] = {"data": data}
        if expected_version is not None:
            patch["expected_version"] = expected_version
        return await run(ctx, tool, action, "patch_record", {**base, "patch": patch})

    @mcp.tool(description=QUERY_DESCRIPTION, structured_output=False)
    async def query_records(
        workspace_id: WorkspaceId,
        collection: Collection,
        ctx: Context,
        action: Literal["query", "aggregate"] = "query",
        filter: Annotated[
            dict[str, Any] | None, Field(description="A filter DSL condition or group.")
        ] = None,
        sort: Annotated[
            list[dict[str, Any]] | None,
            Field(description='[{"field": "data.x", "direction": "asc"|"desc"}]'),
        ] = None,
        limit: Limit = None,
        cursor: Cursor = None,
        offset: Annotated[int | None, Field(description="Skip rows (not with cursor).")] = None,
        fields: Annotated[
            list[str] | None,
            Field(description='Return only these fields, e.g. ["id", "data.title"].'),
        ] = None,
        count: Annotated[
            bool | None, Field(description="Also return the exact meta.total (slower).")
        ] = None,
        group_by: Annotated[
            list[str] | None, Field(description='aggregate: e.g. ["data.severity"].')
        ] = None,
        aggregations: Annotated[
            list[dict[str, Any]] | None,
            Field(
                description='aggregate: [{"fn": "count|sum|avg|min|max", "field":'
                ' "data.x", "alias": "n"}]'
            ),
        ] = None,
        as_of: AsOf = None,
    ) -> dict[str, Any]:
        tool = "query_records"
        base = {"workspace_id": workspace_id, "collection": collection, "filter": filter}
        if action == "aggregate":
            _required(tool, action, aggregations=aggregations)
            args = {**base, "group_by": group_by, "aggregations": aggregations, "as_of": as_of}
            return await run(ctx, tool, action, "aggregate_records", args)
        args = {
            **base,
            "sort": sort,
            "limit": limit,
            "cursor": cursor,
            "offset": offset,
            "fields": fields,
            "as_of": as_of,
            "count": bool(count),
        }
        return await run(ctx, tool, action, "query_records", args)

    @mcp.tool(structured_output=False)
    async def manage_relationship(
        action: Literal["upsert", "get", "delete", "list"],
        workspace_id: WorkspaceId,
        ctx: Context,
        id: Annotated[str | None, Field(description="The relationship's UUID.")] = None,
        type: Annotated[
            str | None, Field(description="Relationship type, a slug, e.g. 'affects'.")
        ] = None,
        source: RecordRef = None,
        target: RecordRef = None,
        data: Annotated[
            dict[str, Any] | None, Field(description="upsert: optional data on the edge.")
        ] = None,
        expected_version: ExpectedVersion = None,
        as_of: AsOf = None,
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Typed, directed relationships between records (source -> target). Actions: upsert
        (type, source, target, data?) -> the relationship {"id", "type", "source", "target",
        "data", "version", ...}; an upsert of the same (type, source, target) updates it;
        get (id, as_of?); delete (id); list (type?, source?, target? as "collection/<uuid>",
        limit, cursor) -> {"data": [...], "meta"}. To walk from a record use
        query_relationships."""
        tool = "manage_relationship"
        ws = {"workspace_id": workspace_id}
        if action == "upsert":
            _required(tool, action, type=type, source=source, target=target)
            args = {
                **ws,
                "type": type,
                "source": source,
                "target": target,
                "data": data,
                "expected_version": expected_version,
            }
            return await run(ctx, tool, action, "upsert_relationship", args)
        if action == "list":
            for name, ref in (("source", source), ("target", target)):
                if ref is not None and not isinstance(ref, str):
                    raise invalid(f"list filters {name} as 'collection/<uuid>'", name)
            args = {
                **ws,
                "type": type,
                "source": source,
                "target": target,
                "limit": limit,
                "cursor": cursor,
                "as_of": as_of,
            }
            return await run(ctx, tool, action, "list_relationships", args)
        _required(tool, action, id=id)
        if action == "get":
            args = {**ws, "relationship_id": id, "as_of": as_of}
            return await run(ctx, tool, action, "get_relationship", args)
        args = {**ws, "relationship_id": id, "expected_version": expected_version}
        return await run(ctx, tool, action, "delete_relationship", args)

    @mcp.tool(structured_output=False)
    async def query_relationships(
        workspace_id: WorkspaceId,
        collection: Collection,
        record_id: Annotated[str, Field(description="The record to start from (UUID).")],
        ctx: Context,
        action: Literal["related"] = "related",
        direction: Literal["outgoing", "incoming", "both"] = "outgoing",
        type: Annotated[str | None, Field(description="Only edges of this type.")] = None,
        depth: Annotated[int | None, Field(description="Hops to follow, 1-5 (default 1).")] = (
            None
        ),
        limit: Limit = None,
        as_of: AsOf = None,
    ) -> dict[str, Any]:
        """Walk the graph from one record: records related to it, following edges outgoing
        (record is the source), incoming, or both, up to `depth` hops. Returns {"data":
        [{"record": {...}, "relationship": {...}, "depth": n}]}; each record appears once at
        its shortest depth."""
        args = {
            "workspace_id": workspace_id,
            "collection": collection,
            "record_id": record_id,
            "direction": direction,
            "type": type,
            "depth": 1 if depth is None else depth,
            "limit": limit,
            "as_of": as_of,
        }
        return await run(ctx, "query_relationships", action, "related", args)

    @mcp.tool(structured_output=False)
    async def manage_attachment(
        action: Literal["upload", "complete", "get_url", "list", "delete", "history"],
        workspace_id: WorkspaceId,
        collection: Collection,
        record_id: Annotated[str, Field(description="The record the file belongs to.")],
        ctx: Context,
        filename: Annotated[
            str | None, Field(description="File name, may contain folders: 'docs/a.pdf'.")
        ] = None,
        content_type: Annotated[
            str | None, Field(description="upload: media type, e.g. 'application/pdf'.")
        ] = None,
        size: Annotated[int | None, Field(description="upload: bytes, if known.")] = None,
        expires_in: Annotated[
            int | None, Field(description="Seconds the URL stays valid (default 900).")
        ] = None,
        version: Annotated[int | None, Field(description="get_url: an older version.")] = None,
        prefix: Annotated[str | None, Field(description="list: only under this folder.")] = None,
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Files attached to a record, stored in S3 through presigned URLs. To upload: upload
        (filename, content_type) -> {"upload_url", "method", "headers", "expires_at"}; send the
        file there with exactly those headers; then complete (filename) -> {"filename", "size",
        "content_type", "etag", "version"}. list (prefix?) -> {"data": [...]}; get_url
        (filename, expires_in?) -> {"url", "expires_at"} to download; delete (filename);
        history (filename) -> every version."""
        tool = "manage_attachment"
        base = {"workspace_id": workspace_id, "collection": collection, "record_id": record_id}
        if action == "list":
            args = {**base, "prefix": prefix, "limit": limit, "cursor": cursor}
            return await run(ctx, tool, action, "list_attachments", args)
        _required(tool, action, filename=filename)
        base["filename"] = filename
        if action == "upload":
            _required(tool, action, content_type=content_type)
            args = {**base, "content_type": content_type, "size": size, "expires_in": expires_in}
            return await run(ctx, tool, action, "create_upload", args)
        if action == "complete":
            return await run(ctx, tool, action, "complete_upload", base)
        if action == "get_url":
            args = {**base, "expires_in": expires_in, "version": version}
            return await run(ctx, tool, action, "attachment_url", args)
        if action == "history":
            return await run(ctx, tool, action, "attachment_history", base)
        return await run(ctx, tool, action, "delete_attachment", base)

    @mcp.tool(structured_output=False)
    async def batch_operations(
        workspace_id: WorkspaceId,
        operations: Annotated[
            list[dict[str, Any]],
            Field(
                description='Up to 100 operations, each {"type": ..., ...}. Types:'
                " upsert_collection {name, json_schema}, delete_collection {name},"
                " upsert_record {collection, data, id? | external_id?, external_source?,"
                " ref?}, patch_record {collection, id, data}, delete_record {collection,"
                " id}, upsert_relationship {rel_type, source_collection, source_id,"
                " target_collection, target_id, data?}, delete_relationship {id}. An id that"
                " is not a UUID refers to an earlier op's ref, else to an external_id."
            ),
        ],
        ctx: Context,
        action: Literal["run"] = "run",
    ) -> dict[str, Any]:
        """Run several writes atomically: every operation is validated first, then all are
        written in one transaction, or none is (the error names the failing op index, e.g.
        $.operations[3].data.severity). Returns {"data": [one result per operation]}. Later
        operations may reference records created by earlier ones (by ref or external_id)."""
        args = {"workspace_id": workspace_id, "operations": operations}
        return await run(ctx, "batch_operations", action, "batch", args)

    @mcp.tool(structured_output=False)
    async def manage_hook(
        action: Literal["create", "list", "get", "delete", "receipts"],
        workspace_id: WorkspaceId,
        ctx: Context,
        id: Annotated[str | None, Field(description="The hook's id.")] = None,
        name: Annotated[str | None, Field(description="create: what the hook is for.")] = None,
        collection: Annotated[
            str | None, Field(description="create: the collection payloads are upserted into.")
        ] = None,
        external_id_path: Annotated[
            str | None,
            Field(description="create: where the external id is in a payload, e.g. 'incident.id'."),
        ] = None,
        external_source: Annotated[
            str | None, Field(description="create: external_source of the records it writes.")
        ] = None,
        secret: Annotated[
            str | None, Field(description="create: shared secret to verify senders.")
        ] = None,
        status: Annotated[str | None, Field(description="receipts: only this status.")] = None,
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Inbound webhooks: another system POSTs JSON to the hook's ingest_url (no API key)
        and each payload becomes a record upsert in `collection`. Actions: create (name,
        collection, external_id_path?, external_source?, secret?) -> {"id", "ingest_url",
        ...}; list; get (id); delete (id); receipts (id, status?) -> what arrived and what
        became of it."""
        tool = "manage_hook"
        ws = {"workspace_id": workspace_id}
        if action == "list":
            return await run(
                ctx, tool, action, "list_hooks", {**ws, "limit": limit, "cursor": cursor}
            )
        if action == "create":
            _required(tool, action, name=name, collection=collection)
            args = {
                **ws,
                "name": name,
                "collection": collection,
                "external_id_path": external_id_path,
                "external_source": external_source,
                "secret": secret,
            }
            return await run(ctx, tool, action, "create_hook", args)
        _required(tool, action, id=id)
        ws["hook_id"] = id
        if action == "get":
            return await run(ctx, tool, action, "get_hook", ws)
        if action == "delete":
            return await run(ctx, tool, action, "delete_hook", ws)
        args = {**ws, "status": status, "limit": limit, "cursor": cursor}
        return await run(ctx, tool, action, "list_hook_receipts", args)

    @mcp.tool(structured_output=False)
    async def manage_trigger(
        action: Literal["create", "list", "get", "delete", "deliveries", "replay", "redeliver"],
        workspace_id: WorkspaceId,
        ctx: Context,
        id: Annotated[str | None, Field(description="The trigger's id.")] = None,
        name: Annotated[str | None, Field(description="create: what the trigger is for.")] = None,
        url: Annotated[
            str | None, Field(description="create: the http(s) URL that receives POSTs.")
        ] = None,
        events: Annotated[
            list[str] | None,
            Field(description='create: any of "create", "update", "delete".'),
        ] = None,
        collection: Annotated[
            str | None, Field(description="create: only this collection (default all).")
        ] = None,
        filter: Annotated[
            dict[str, Any] | None,
            Field(description="create: only records matching this filter (query_records DSL)."),
        ] = None,
        include_hook_writes: Annotated[
            bool | None, Field(description="create: also fire for writes made by hooks.")
        ] = None,
        from_seq: Annotated[int | None, Field(description="replay: first log position.")] = None,
        to_seq: Annotated[int | None, Field(description="replay: last log position.")] = None,
        delivery_id: Annotated[
            str | None, Field(description="redeliver: one delivery (default: all dead ones).")
        ] = None,
        status: Annotated[str | None, Field(description="deliveries: only this status.")] = None,
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Outbound webhooks: each matching record change is POSTed to `url`, signed per the
        Standard Webhooks spec, retried with backoff, then dead-lettered. Actions: create
        (name, url, events, collection?, filter?) -> {"id", "secret" (shown once), ...};
        list; get (id) -> with delivery counts; delete (id); deliveries (id, status?) -> the
        delivery log; replay (id, from_seq, to_seq?) -> sends past events again; redeliver
        (id, delivery_id?) -> retries dead deliveries."""
        tool = "manage_trigger"
        ws = {"workspace_id": workspace_id}
        if action == "list":
            args = {**ws, "limit": limit, "cursor": cursor}
            return await run(ctx, tool, action, "list_triggers", args)
        if action == "create":
            _required(tool, action, name=name, url=url, events=events)
            args = {
                **ws,
                "name": name,
                "url": url,
                "events": events,
                "collection": collection,
                "filter": filter,
                "include_hook_writes": bool(include_hook_writes),
            }
            return await run(ctx, tool, action, "create_trigger", args)
        _required(tool, action, id=id)
        ws["trigger_id"] = id
        if action == "get":
            return await run(ctx, tool, action, "get_trigger", ws)
        if action == "delete":
            return await run(ctx, tool, action, "delete_trigger", ws)
        if action == "deliveries":
            args = {**ws, "status": status, "limit": limit, "cursor": cursor}
            return await run(ctx, tool, action, "list_deliveries", args)
        if action == "replay":
            _required(tool, action, from_seq=from_seq)
            args = {**ws, "from_seq": from_seq, "to_seq": to_seq}
            return await run(ctx, tool, action, "replay_trigger", args)
        return await run(ctx, tool, action, "redeliver", {**ws, "delivery_id": delivery_id})

    @mcp.tool(structured_output=False)
    async def get_history(
        action: Literal["record", "events", "attachment"],
        workspace_id: WorkspaceId,
        ctx: Context,
        collection: OptCollection = None,
        id: Annotated[str | None, Field(description="record / attachment: the record id.")] = (
            None
        ),
        filename: Annotated[str | None, Field(description="attachment: the file name.")] = None,
        after_seq: Annotated[
            int | None, Field(description="events: only events after this log position.")
        ] = None,
        types: Annotated[
            list[str] | None,
            Field(description='events: only these event types, e.g. ["record.created"].'),
        ] = None,
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """The audit trail (the log is kept forever). Actions: record (collection, id) ->
        {"data": [every version: "seq", "at", "actor", "event", "data", "diff"]}; events
        (collection?, id?, after_seq?, types?) -> the workspace's event log in seq order
        (who did what, through which interface); attachment (collection, id, filename) ->
        every version of a file. To read a record as it was, use manage_record get with
        as_of."""
        tool = "get_history"
        ws = {"workspace_id": workspace_id}
        if action == "events":
            args = {
                **ws,
                "after_seq": after_seq,
                "types": types,
                "collection": collection,
                "record_id": id,
                "limit": limit,
                "cursor": cursor,
            }
            return await run(ctx, tool, action, "list_events", args)
        _required(tool, action, collection=collection, id=id)
        args = {**ws, "collection": collection, "record_id": id}
        if action == "record":
            return await run(ctx, tool, action, "record_history", args)
        _required(tool, action, filename=filename)
        return await run(ctx, tool, action, "attachment_history", {**args, "filename": filename})

    return mcp
