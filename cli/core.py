"""`rekor workspaces|collections|records|relationships|query-relationships|batch|admin keys`:
each command is one REST call through `cli.client`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from cyclopts import App, Parameter

from cli.client import (
    CliError,
    api,
    coll_path,
    parse_json_arg,
    record_path,
    require_workspace,
    seg,
)
from cli.output import emit
from cli.params import Output, Workspace, json_param

Limit = Annotated[int | None, Parameter(help="Page size, 1-1000 (default 50).")]
Cursor = Annotated[str | None, Parameter(help="The next_cursor of the previous page.")]
AsOf = Annotated[
    str | None,
    Parameter(help="Time travel: a log position (seq, e.g. 42) or an ISO-8601 instant."),
]
ExpectedVersion = Annotated[
    int | None,
    Parameter(
        help="Optimistic concurrency: fail with exit 3 unless the record is at this version."
    ),
]


def json_object(value: str, what: str) -> dict[str, Any]:
    """A JSON argument that must be an object."""
    parsed = parse_json_arg(value, what)
    if not isinstance(parsed, dict):
        raise CliError(
            f"{what} must be a JSON object, got {type(parsed).__name__}",
            code="VALIDATION_ERROR",
            details=[{"path": what, "message": "expected an object {...}"}],
        )
    return parsed


# -- workspaces -------------------------------------------------------------------------------

workspaces_app = App(
    name="workspaces",
    help="Workspaces: isolated logs with their own collections, records, hooks and triggers.",
)


@workspaces_app.command(name="list")
def workspaces_list(*, limit: Limit = None, cursor: Cursor = None, output: Output = None) -> None:
    """List the workspaces your API key can see.

    For example:
        rekor workspaces list
        rekor workspaces list -o table
    """
    emit(api().get("/v1/workspaces", params={"limit": limit, "cursor": cursor}), output)


@workspaces_app.command(name="get")
def workspaces_get(workspace_id: str, /, *, output: Output = None) -> None:
    """Show one workspace and its log head (head_seq).

    For example:
        rekor workspaces get ws_ops
    """
    emit(api().get(f"/v1/workspaces/{seg(workspace_id)}"), output)


@workspaces_app.command(name="create")
def workspaces_create(
    workspace_id: str, /, *, name: str | None = None, output: Output = None
) -> None:
    """Create a workspace (needs an admin key). Ids are slugs: a-z, 0-9, '-', '_'.

    For example:
        rekor workspaces create ws_ops --name "Operations"

    Parameters
    ----------
    workspace_id
        The new workspace's id, e.g. ws_ops.
    name
        A human-readable name (defaults to the id).
    """
    body: dict[str, Any] = {"id": workspace_id}
    if name is not None:
        body["name"] = name
    emit(api().post("/v1/workspaces", json=body), output)


@workspaces_app.command(name="delete")
def workspaces_delete(workspace_id: str, /, *, output: Output = None) -> None:
    """Delete a workspace: its data leaves every query, its log is kept (needs admin).

    For example:
        rekor workspaces delete ws_scratch
    """
    emit(api().delete(f"/v1/workspaces/{seg(workspace_id)}"), output)


@workspaces_app.command(name="create-preview")
def workspaces_create_preview(
    workspace_id: str, /, *, name: str, with_data: bool = False, output: Output = None
) -> None:
    """Create a preview workspace `<ws>--<name>` from the parent's current state.

    For example:
        rekor workspaces create-preview ws_ops --name try-new-schema

    Parameters
    ----------
    workspace_id
        The parent workspace.
    name
        The preview's name; its id becomes <workspace_id>--<name>.
    with_data
        Copy the parent's records too (default: configuration only).
    """
    body: dict[str, Any] = {"name": name}
    if with_data:
        body["with_data"] = True
    emit(api().post(f"/v1/workspaces/{seg(workspace_id)}/previews", json=body), output)


@workspaces_app.command(name="promote")
def workspaces_promote(
    workspace_id: str,
    /,
    *,
    from_: Annotated[str, Parameter(name="--from", help="The preview to promote.")],
    dry_run: bool = False,
    force: bool = False,
    output: Output = None,
) -> None:
    """Promote a preview's configuration (schemas, hooks, triggers) into its parent.
    Needs the `promote` permission. Use --dry-run first to see the plan.

    For example:
        rekor workspaces promote ws_ops --from ws_ops--try-new-schema --dry-run
        rekor workspaces promote ws_ops --from ws_ops--try-new-schema

    Parameters
    ----------
    workspace_id
        The parent (target) workspace.
    dry_run
        Only report the plan: schema diffs and the records the new schemas would reject.
    force
        Promote even a breaking schema change.
    """
    body: dict[str, Any] = {"from": from_, "dry_run": dry_run}
    if force:
        body["force"] = True
    emit(api().post(f"/v1/workspaces/{seg(workspace_id)}/promote", json=body), output)


# -- collections ------------------------------------------------------------------------------

collections_app = App(
    name="collections", help="Collections: record types defined by a JSON Schema at runtime."
)


@collections_app.command(name="list")
def collections_list(*, workspace: Workspace = None, output: Output = None) -> None:
    """List a workspace's collections with their schema version.

    For example:
        rekor collections list -w ws_ops
    """
    ws = require_workspace(workspace)
    emit(api().get(f"/v1/{seg(ws)}/collections"), output)


@collections_app.command(name="get")
def collections_get(name: str, /, *, workspace: Workspace = None, output: Output = None) -> None:
    """Show a collection and its JSON Schema.

    For example:
        rekor collections get incidents -w ws_ops
    """
    ws = require_workspace(workspace)
    emit(api().get(coll_path(ws, name)), output)


@collections_app.command(name="upsert")
def collections_upsert(
    name: str,
    /,
    *,
    schema: Annotated[str, json_param("JSON Schema (2020-12): inline JSON, @file or -.")],
    description: str | None = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Create a collection or change its schema. The version bumps only when the schema
    changes; a schema existing records would violate is refused (exit 1) with their ids.

    For example:
        rekor collections upsert incidents -w ws_ops --schema '{"type": "object",
            "required": ["title"], "properties": {"title": {"type": "string"}}}'
        rekor collections upsert incidents -w ws_ops --schema @incidents.schema.json
    """
    ws = require_workspace(workspace)
    body: dict[str, Any] = {"json_schema": parse_json_arg(schema, "--schema")}
    if description is not None:
        body["description"] = description
    emit(api().put(coll_path(ws, name), json=body), output)


@collections_app.command(name="delete")
def collections_delete(name: str, /, *, workspace: Workspace = None, output: Output = None) -> None:
    """Delete a collection and its records (their history stays in the log).

    For example:
        rekor collections delete incidents -w ws_ops
    """
    ws = require_workspace(workspace)
    emit(api().delete(coll_path(ws, name)), output)


# -- records ----------------------------------------------------------------------------------

records_app = App(name="records", help="Records: JSON documents validated by their collection.")


@records_app.command(name="upsert")
def records_upsert(
    collection: str,
    /,
    *,
    data: Annotated[str, json_param("The record's data: inline JSON, @file or -.")],
    external_id: Annotated[str | None, Parameter(help="Your own key for the record.")] = None,
    source: Annotated[
        str | None, Parameter(help="Namespace of --external-id, e.g. pagerduty.")
    ] = None,
    id: Annotated[str | None, Parameter(name="--id", help="Record UUID to update.")] = None,
    expected_version: ExpectedVersion = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Create or replace a record: found by --id, else by --external-id (+ --source), else new.
    Unchanged data keeps the version.

    For example:
        rekor records upsert incidents -w ws_ops --external-id INC-2847 --source pagerduty
            --data '{"title": "API latency spike", "severity": "p1", "status": "open"}'
        rekor records upsert incidents -w ws_ops --data @incident.json
    """
    ws = require_workspace(workspace)
    body: dict[str, Any] = {"data": parse_json_arg(data, "--data")}
    for key, value in (
        ("id", id),
        ("external_id", external_id),
        ("external_source", source),
        ("expected_version", expected_version),
    ):
        if value is not None:
            body[key] = value
    emit(api().post(f"{coll_path(ws, collection)}/records", json=body), output)


@records_app.command(name="get")
def records_get(
    collection: str,
    record_id: str,
    /,
    *,
    as_of: AsOf = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Show a record now, or as it was at --as-of.

    For example:
        rekor records get incidents 0196f0c2-... -w ws_ops
        rekor records get incidents 0196f0c2-... -w ws_ops --as-of 2025-01-31T12:00:00Z
    """
    ws = require_workspace(workspace)
    emit(api().get(record_path(ws, collection, record_id), params={"as_of": as_of}), output)


@records_app.command(name="patch")
def records_patch(
    collection: str,
    record_id: str,
    /,
    *,
    data: Annotated[str, json_param("JSON merge patch of the data: inline, @file or -.")],
    expected_version: ExpectedVersion = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Change some fields of a record (JSON merge patch; null removes a field).

    For example:
        rekor records patch incidents 0196f0c2-... -w ws_ops --data '{"status": "resolved"}'
    """
    ws = require_workspace(workspace)
    body: dict[str, Any] = {"data": json_object(data, "--data")}
    if expected_version is not None:
        body["expected_version"] = expected_version
    emit(api().patch(record_path(ws, collection, record_id), json=body), output)


@records_app.command(name="delete")
def records_delete(
    collection: str,
    record_id: str,
    /,
    *,
    expected_version: ExpectedVersion = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Delete a record (its history stays readable).

    For example:
        rekor records delete incidents 0196f0c2-... -w ws_ops
    """
    ws = require_workspace(workspace)
    params = {"expected_version": expected_version}
    emit(api().delete(record_path(ws, collection, record_id), params=params), output)


@records_app.command(name="list")
def records_list(
    collection: str,
    /,
    *,
    external_id: str | None = None,
    source: Annotated[str | None, Parameter(help="Only records from this source.")] = None,
    limit: Limit = None,
    cursor: Cursor = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """List records in creation order, optionally by external id / source.

    For example:
        rekor records list incidents -w ws_ops --limit 10
        rekor records list incidents -w ws_ops --external-id INC-2847 --source pagerduty
    """
    ws = require_workspace(workspace)
    params = {
        "external_id": external_id,
        "external_source": source,
        "limit": limit,
        "cursor": cursor,
    }
    emit(api().get(f"{coll_path(ws, collection)}/records", params=params), output)


def parse_sort(value: str) -> Any:
    """JSON (`[{"field", "direction"}]`, @file, -) or the shorthand `-data.severity,created_at`
    (a leading '-' sorts descending)."""
    if value == "-" or value[:1] in "[{@":
        return parse_json_arg(value, "--sort")
    out = []
    for part in (p.strip() for p in value.split(",")):
        if part:
            desc = part.startswith("-")
            out.append({"field": part.lstrip("-"), "direction": "desc" if desc else "asc"})
    return out


def parse_fields(value: str) -> Any:
    """JSON list or `id,data.title`."""
    if value[:1] in "[@" or value == "-":
        return parse_json_arg(value, "--fields")
    return [f.strip() for f in value.split(",") if f.strip()]


@records_app.command(name="query")
def records_query(
    collection: str,
    /,
    *,
    filter: Annotated[
        str | None, json_param("Filter DSL as JSON (inline, @file or -); see the examples.")
    ] = None,
    sort: Annotated[
        str | None,
        Parameter(
            allow_leading_hyphen=True,
            help='"-data.severity,created_at" or JSON [{"field", "direction"}].',
        ),
    ] = None,
    limit: Limit = None,
    cursor: Cursor = None,
    source: Annotated[
        str | None, Parameter(help="Only records whose external_source is this.")
    ] = None,
    fields: Annotated[
        str | None, json_param("Return only these fields: id,data.title or JSON list.")
    ] = None,
    as_of: AsOf = None,
    count: Annotated[bool, Parameter(help="Also return the exact total (slower).")] = False,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Query records with the filter DSL. A condition is {"field", "op", "value"}; groups are
    {"and": [...]}, {"or": [...]}, {"not": {...}}. Ops: eq neq gt gte lt lte in not_in like
    ilike is_null is_not_null has search. Fields: data.<path>, id, external_id,
    external_source, version, created_at, updated_at.

    For example:
        rekor records query incidents -w ws_ops
            --filter '{"field": "data.severity", "op": "in", "value": ["p0", "p1"]}'
            --sort -updated_at --limit 20
        rekor records query incidents -w ws_ops --source pagerduty --filter @open.json
    """
    ws = require_workspace(workspace)
    body: dict[str, Any] = {}
    conditions = []
    if filter is not None:
        conditions.append(json_object(filter, "--filter"))
    if source is not None:
        conditions.append({"field": "external_source", "op": "eq", "value": source})
    if conditions:
        body["filter"] = conditions[0] if len(conditions) == 1 else {"and": conditions}
    if sort is not None:
        body["sort"] = parse_sort(sort)
    if fields is not None:
        body["fields"] = parse_fields(fields)
    for key, value in (("limit", limit), ("cursor", cursor), ("as_of", as_of)):
        if value is not None:
            body[key] = value
    if count:
        body["count"] = True
    emit(api().post(f"{coll_path(ws, collection)}/records/query", json=body), output)


@records_app.command(name="aggregate")
def records_aggregate(
    collection: str,
    /,
    *,
    aggregations: Annotated[
        str, json_param('JSON [{"fn": "count|sum|avg|min|max", "field", "alias"}].')
    ],
    group_by: Annotated[str | None, Parameter(help="Comma list or JSON list of fields.")] = None,
    filter: Annotated[str | None, json_param("Filter DSL as JSON.")] = None,
    as_of: AsOf = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Group and aggregate records.

    For example:
        rekor records aggregate incidents -w ws_ops --group-by data.severity
            --aggregations '[{"fn": "count", "alias": "n"}]'
    """
    ws = require_workspace(workspace)
    body: dict[str, Any] = {"aggregations": parse_json_arg(aggregations, "--aggregations")}
    if group_by is not None:
        body["group_by"] = parse_fields(group_by)
    if filter is not None:
        body["filter"] = json_object(filter, "--filter")
    if as_of is not None:
        body["as_of"] = as_of
    emit(api().post(f"{coll_path(ws, collection)}/records/aggregate", json=body), output)


@records_app.command(name="history")
def records_history(
    collection: str, record_id: str, /, *, workspace: Workspace = None, output: Output = None
) -> None:
    """Every version of a record: seq, time, actor, event, data and diff.

    For example:
        rekor records history incidents 0196f0c2-... -w ws_ops -o table
    """
    ws = require_workspace(workspace)
    emit(api().get(f"{record_path(ws, collection, record_id)}/history"), output)


# -- relationships ----------------------------------------------------------------------------

relationships_app = App(name="relationships", help="Typed, directed relationships between records.")


def record_ref(value: str, what: str) -> Any:
    """`collection/<id>` stays a string; JSON objects ({"collection", "id"} or external ids)
    are passed through."""
    if value[:1] in "{@" or value == "-":
        return json_object(value, what)
    return value


@relationships_app.command(name="upsert")
def relationships_upsert(
    *,
    type: Annotated[str, Parameter(name="--type", help="Relationship type, e.g. contains.")],
    source: Annotated[str, json_param("collection/<id> or JSON reference.")],
    target: Annotated[str, json_param("collection/<id> or JSON reference.")],
    data: Annotated[str | None, json_param("Optional JSON data on the edge.")] = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Create (or update) a relationship from --source to --target.

    For example:
        rekor relationships upsert -w ws_ops --type affects
            --source incidents/0196f0c2-... --target services/0196f0c3-...
        rekor relationships upsert -w ws_ops --type affects --source incidents/0196f0c2-...
            --target '{"collection": "services", "external_id": "api", "external_source": "cmdb"}'
    """
    ws = require_workspace(workspace)
    body: dict[str, Any] = {
        "type": type,
        "source": record_ref(source, "--source"),
        "target": record_ref(target, "--target"),
    }
    if data is not None:
        body["data"] = json_object(data, "--data")
    emit(api().post(f"/v1/{seg(ws)}/relationships", json=body), output)


@relationships_app.command(name="get")
def relationships_get(
    relationship_id: str,
    /,
    *,
    as_of: AsOf = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Show one relationship.

    For example:
        rekor relationships get 0196f0c4-... -w ws_ops
    """
    ws = require_workspace(workspace)
    path = f"/v1/{seg(ws)}/relationships/{seg(relationship_id)}"
    emit(api().get(path, params={"as_of": as_of}), output)


@relationships_app.command(name="delete")
def relationships_delete(
    relationship_id: str, /, *, workspace: Workspace = None, output: Output = None
) -> None:
    """Delete a relationship.

    For example:
        rekor relationships delete 0196f0c4-... -w ws_ops
    """
    ws = require_workspace(workspace)
    emit(api().delete(f"/v1/{seg(ws)}/relationships/{seg(relationship_id)}"), output)


@relationships_app.command(name="list")
def relationships_list(
    *,
    type: Annotated[str | None, Parameter(name="--type")] = None,
    source: Annotated[str | None, Parameter(help="Only edges from collection/<id>.")] = None,
    target: Annotated[str | None, Parameter(help="Only edges to collection/<id>.")] = None,
    limit: Limit = None,
    cursor: Cursor = None,
    as_of: AsOf = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """List relationships, optionally by type, source or target.

    For example:
        rekor relationships list -w ws_ops --type affects
        rekor relationships list -w ws_ops --source incidents/0196f0c2-...
    """
    ws = require_workspace(workspace)
    params = {
        "type": type,
        "source": source,
        "target": target,
        "limit": limit,
        "cursor": cursor,
        "as_of": as_of,
    }
    emit(api().get(f"/v1/{seg(ws)}/relationships", params=params), output)


def query_relationships(
    collection: str,
    record_id: str,
    /,
    *,
    type: Annotated[str | None, Parameter(name="--type", help="Only this type.")] = None,
    direction: Literal["outgoing", "incoming", "both"] = "outgoing",
    depth: Annotated[int | None, Parameter(help="Follow edges this many hops (default 1).")] = None,
    as_of: AsOf = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Records related to a record: [{record, relationship, depth}].

    For example:
        rekor query-relationships incidents 0196f0c2-... -w ws_ops --direction both
        rekor query-relationships orders 0196f0c2-... -w shop --type contains --depth 2
    """
    ws = require_workspace(workspace)
    params = {"type": type, "direction": direction, "depth": depth, "as_of": as_of}
    emit(api().get(f"{record_path(ws, collection, record_id)}/related", params=params), output)


def batch(
    *,
    operations: Annotated[
        str, json_param('JSON list of operations (or {"operations": [...]}); @file or -.')
    ],
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Run up to 100 operations atomically: all succeed or none is written. Ops:
    upsert_collection, delete_collection, upsert_record, patch_record, delete_record,
    upsert_relationship, delete_relationship.

    For example:
        rekor batch -w shop --operations @ops.json
        rekor batch -w shop --operations '[{"type": "upsert_record", "collection": "orders",
            "external_id": "ord_1", "data": {"total": 12}}]'
    """
    ws = require_workspace(workspace)
    parsed = parse_json_arg(operations, "--operations")
    body = parsed if isinstance(parsed, dict) else {"operations": parsed}
    emit(api().post(f"/v1/{seg(ws)}/batch", json=body), output)


# -- admin ------------------------------------------------------------------------------------

admin_app = App(name="admin", help="Administration: API keys and maintenance.")
keys_app = App(name="keys", help="API keys: scoped to workspaces and permissions.")
admin_app.command(keys_app)


@keys_app.command(name="create")
def keys_create(
    *,
    name: str,
    permissions: Annotated[str, Parameter(help="Comma list of read,write,admin,promote.")] = (
        "read,write"
    ),
    workspaces: Annotated[str, Parameter(help="Comma list of workspace ids, or * for all.")] = "*",
    output: Output = None,
) -> None:
    """Create an API key; its secret is shown once (needs an unscoped admin key).

    For example:
        rekor admin keys create --name agent --permissions read,write --workspaces ws_ops
    """
    body = {
        "name": name,
        "permissions": [p.strip() for p in permissions.split(",") if p.strip()],
        "workspaces": [w.strip() for w in workspaces.split(",") if w.strip()],
    }
    emit(api().post("/v1/api-keys", json=body), output)


@keys_app.command(name="list")
def keys_list(*, output: Output = None) -> None:
    """List API keys (never their secrets).

    For example:
        rekor admin keys list -o table
    """
    emit(api().get("/v1/api-keys"), output)


@keys_app.command(name="revoke")
def keys_revoke(key_id: str, /, *, output: Output = None) -> None:
    """Revoke an API key; it stops working immediately.

    For example:
        rekor admin keys revoke 0196f0c5-...
    """
    emit(api().delete(f"/v1/api-keys/{seg(key_id)}"), output)
