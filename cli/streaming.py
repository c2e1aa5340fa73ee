"""`rekor hooks ...`, `rekor triggers ...` and `rekor events`: the event stream over REST."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

from cyclopts import App, Parameter

from cli.client import (
    CliError,
    api,
    decode_httpx,
    parse_json_arg,
    require_workspace,
    unreachable,
)
from cli.output import emit
from cli.params import Output, Workspace

hooks_app = App(name="hooks", help="Inbound webhooks: external JSON becomes record upserts.")
triggers_app = App(
    name="triggers", help="Outbound webhooks: record changes POSTed (signed) to a URL."
)

Limit = Annotated[int | None, Parameter(help="Page size, 1-1000.")]
Cursor = Annotated[str | None, Parameter(help="next_cursor of the previous page.")]


# -- hooks ------------------------------------------------------------------------------------


@hooks_app.command
def create(
    *,
    name: Annotated[str, Parameter(help="What the hook receives, e.g. pagerduty.")],
    collection: Annotated[str, Parameter(help="Collection the payloads are upserted into.")],
    external_id_path: Annotated[
        str | None, Parameter(help="JSON pointer to the payload's id, e.g. /incident/id.")
    ] = None,
    external_source: Annotated[
        str | None, Parameter(help="external_source of the records, e.g. pagerduty.")
    ] = None,
    secret: Annotated[
        str | None, Parameter(help="Require Standard Webhooks signatures made with this secret.")
    ] = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Create an inbound hook; prints its id and ingest_url (POST JSON there, no API key).

    For example:
        rekor hooks create --name pagerduty --collection incidents --external-id-path /id -w ws_ops
    """
    ws = require_workspace(workspace)
    body = {
        "name": name,
        "collection": collection,
        "external_id_path": external_id_path,
        "external_source": external_source,
        "secret": secret,
    }
    emit(
        api().post(f"/v1/{ws}/hooks", json={k: v for k, v in body.items() if v is not None}), output
    )


@hooks_app.command(name="list")
def list_hooks(
    *,
    workspace: Workspace = None,
    limit: Limit = None,
    cursor: Cursor = None,
    output: Output = None,
) -> None:
    """List hooks.

    For example:
        rekor hooks list -w ws_ops
    """
    ws = require_workspace(workspace)
    emit(api().get(f"/v1/{ws}/hooks", params={"limit": limit, "cursor": cursor}), output)


@hooks_app.command
def get(hook_id: str, *, workspace: Workspace = None, output: Output = None) -> None:
    """Show a hook and its receipt counts.

    For example:
        rekor hooks get hk_... -w ws_ops
    """
    ws = require_workspace(workspace)
    emit(api().get(f"/v1/{ws}/hooks/{hook_id}"), output)


@hooks_app.command
def delete(hook_id: str, *, workspace: Workspace = None, output: Output = None) -> None:
    """Delete a hook (its ingest URL stops accepting payloads).

    For example:
        rekor hooks delete hk_... -w ws_ops
    """
    ws = require_workspace(workspace)
    emit(api().delete(f"/v1/{ws}/hooks/{hook_id}"), output)


@hooks_app.command
def receipts(
    hook_id: str,
    *,
    status: Annotated[str | None, Parameter(help="received, applied, failed or rejected.")] = None,
    workspace: Workspace = None,
    limit: Limit = None,
    cursor: Cursor = None,
    output: Output = None,
) -> None:
    """List a hook's receipts (newest first) with their outcome.

    For example:
        rekor hooks receipts hk_... --status failed -w ws_ops
    """
    ws = require_workspace(workspace)
    params = {"status": status, "limit": limit, "cursor": cursor}
    emit(api().get(f"/v1/{ws}/hooks/{hook_id}/receipts", params=params), output)


# -- triggers ---------------------------------------------------------------------------------


@triggers_app.command(name="create")
def create_trigger(
    *,
    name: Annotated[str, Parameter(help="What the trigger is for.")],
    url: Annotated[str, Parameter(help="http(s) URL receiving the signed POSTs.")],
    events: Annotated[
        str, Parameter(help='JSON list of "create", "update", "delete" (or @file).')
    ] = '["create","update","delete"]',
    collection: Annotated[str | None, Parameter(help="Only this collection.")] = None,
    filter: Annotated[
        str | None, Parameter(help="Filter DSL JSON on the record (or @file).")
    ] = None,
    include_hook_writes: Annotated[
        bool, Parameter(help="Also fire for writes made by inbound hooks.")
    ] = False,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Create an outbound trigger. The signing secret is printed only now: keep it.

    For example:
        rekor triggers create -w my-workspace --name "Notify Slack on P1" --collection incidents \\
            --url https://hooks.example.com/rekor --events '["create","update"]' \\
            --filter '{"field": "data.severity", "op": "in", "value": ["p0","p1"]}'
    """
    ws = require_workspace(workspace)
    body: dict[str, Any] = {
        "name": name,
        "url": url,
        "events": parse_json_arg(events, "--events"),
        "include_hook_writes": include_hook_writes,
    }
    if collection is not None:
        body["collection"] = collection
    if filter is not None:
        body["filter"] = parse_json_arg(filter, "--filter")
    emit(api().post(f"/v1/{ws}/triggers", json=body), output)


@triggers_app.command(name="list")
def list_triggers(
    *,
    workspace: Workspace = None,
    limit: Limit = None,
    cursor: Cursor = None,
    output: Output = None,
) -> None:
    """List triggers (secrets are never shown again).

    For example:
        rekor triggers list -w ws_ops
    """
    ws = require_workspace(workspace)
    emit(api().get(f"/v1/{ws}/triggers", params={"limit": limit, "cursor": cursor}), output)


@triggers_app.command(name="get")
def get_trigger(trigger_id: str, *, workspace: Workspace = None, output: Output = None) -> None:
    """Show a trigger and its delivery counts.

    For example:
        rekor triggers get trg_... -w ws_ops
    """
    ws = require_workspace(workspace)
    emit(api().get(f"/v1/{ws}/triggers/{trigger_id}"), output)


@triggers_app.command(name="delete")
def delete_trigger(trigger_id: str, *, workspace: Workspace = None, output: Output = None) -> None:
    """Delete a trigger (pending deliveries are cancelled).

    For example:
        rekor triggers delete trg_... -w ws_ops
    """
    ws = require_workspace(workspace)
    emit(api().delete(f"/v1/{ws}/triggers/{trigger_id}"), output)


@triggers_app.command
def deliveries(
    trigger_id: str,
    *,
    status: Annotated[str | None, Parameter(help="pending, delivered, dead or cancelled.")] = None,
    workspace: Workspace = None,
    limit: Limit = None,
    cursor: Cursor = None,
    output: Output = None,
) -> None:
    """The delivery log (newest first): status, attempts, last error, latency.

    For example:
        rekor triggers deliveries trg_... --status dead -w ws_ops
    """
    ws = require_workspace(workspace)
    params = {"status": status, "limit": limit, "cursor": cursor}
    emit(api().get(f"/v1/{ws}/triggers/{trigger_id}/deliveries", params=params), output)


@triggers_app.command
def redeliver(
    trigger_id: str,
    *,
    delivery: Annotated[
        str | None, Parameter(help="One delivery id; default: every dead letter.")
    ] = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Send dead letters again.

    For example:
        rekor triggers redeliver trg_... -w ws_ops
    """
    ws = require_workspace(workspace)
    path = f"/v1/{ws}/triggers/{trigger_id}"
    path += f"/deliveries/{delivery}/redeliver" if delivery else "/redeliver"
    emit(api().post(path), output)


@triggers_app.command
def replay(
    trigger_id: str,
    *,
    from_seq: Annotated[int, Parameter(help="First log position to send again.")],
    to_seq: Annotated[int | None, Parameter(help="Last log position (default: now).")] = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Send the trigger's matching events of a seq range again.

    For example:
        rekor triggers replay trg_... --from-seq 1 -w ws_ops
    """
    ws = require_workspace(workspace)
    body = {"from_seq": from_seq, "to_seq": to_seq}
    emit(api().post(f"/v1/{ws}/triggers/{trigger_id}/replay", json=body), output)


# -- events -----------------------------------------------------------------------------------


def events(
    *,
    after_seq: Annotated[int | None, Parameter(help="Only events after this seq.")] = None,
    type: Annotated[
        str | None, Parameter(help="Event type(s), comma-separated, e.g. record.created.")
    ] = None,
    collection: Annotated[str | None, Parameter(help="Only this collection.")] = None,
    record_id: Annotated[str | None, Parameter(help="Only this record.")] = None,
    limit: Annotated[int | None, Parameter(help="Page size, 1-1000 (default 100).")] = None,
    follow: Annotated[
        bool, Parameter(help="Keep streaming new events (one JSON object per line).")
    ] = False,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """The workspace's event log (audit log); with --follow, the live change feed.

    For example:
        rekor events -w ws_ops --after-seq 120 --type record.updated
        rekor events -w ws_ops --follow
    """
    ws = require_workspace(workspace)
    params = {"after_seq": after_seq, "type": type, "collection": collection}
    if not follow:
        params.update({"record_id": record_id, "limit": limit})
        emit(api().get(f"/v1/{ws}/events", params=params), output)
        return
    if record_id is not None:
        raise CliError("--record-id cannot be combined with --follow", 2)
    _follow(ws, {k: v for k, v in params.items() if v is not None})


def _follow(ws: str, params: dict[str, Any]) -> None:
    """Print each event of the SSE feed as one JSON line; resumes after a dropped connection
    from the last seq seen (Last-Event-ID), so nothing is skipped."""
    import httpx  # only the follow mode streams; plain commands use the stdlib client

    client = api()
    conn = client.conn
    headers = {"Accept": "text/event-stream", "Rekor-Interface": "cli"}
    if conn.api_key:
        headers["Authorization"] = f"Bearer {conn.api_key}"
    last: str | None = None
    url = f"{conn.url}/v1/{ws}/events/stream"
    while True:
        if last is not None:
            headers["Last-Event-ID"] = last
        try:
            with httpx.stream(
                "GET", url, params=params, headers=headers, timeout=httpx.Timeout(60, read=None)
            ) as resp:
                if resp.status_code != 200:
                    resp.read()
                    decode_httpx(resp)
                for line in resp.iter_lines():
                    if line.startswith("id:"):
                        last = line[3:].strip()
                    elif line.startswith("data:"):
                        sys.stdout.write(json.dumps(json.loads(line[5:].strip())) + "\n")
                        sys.stdout.flush()
        except httpx.TransportError as exc:
            if last is None:
                raise unreachable(conn.url, exc) from exc
            continue
