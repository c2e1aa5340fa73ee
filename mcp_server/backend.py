"""What the MCP tools call: one small interface, two implementations that give the same
results and the same errors.

- `ServiceBackend`: the in-process `RekorService` with the caller's `Principal` (the HTTP
  transport mounted at /mcp on the API server).
- `RestBackend`: a running Rekor over REST (the stdio transport, `rekor mcp`).

A call names a RekorService method and passes its arguments by keyword (without the
principal); the REST backend maps each method to its route. Both raise `RekorError`s: a
method the service does not have yet, or a route the server does not have yet, is
`NotImplementedYet`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from cli.client import ApiError, AsyncRekorClient, Connection
from commands.principal import Principal
from commands.types import CommandResult
from events.errors import STATUS_BY_CODE, NotImplementedYet, RekorError


class Backend(ABC):
    """Runs one RekorService operation for the caller."""

    @abstractmethod
    async def call(self, method: str, **kwargs: Any) -> Any:
        """Run `RekorService.<method>(principal, **kwargs)`; return its JSON result."""


class ServiceBackend(Backend):
    """The in-process service, as `principal`."""

    def __init__(self, service: Any, principal: Principal) -> None:
        self.service = service
        self.principal = principal

    async def call(self, method: str, **kwargs: Any) -> Any:
        # Looked up per call, so capabilities light up as soon as the service has them.
        fn = getattr(self.service, method, None)
        if fn is None:
            raise NotImplementedYet(f"the service has no '{method}' operation")
        result = await fn(self.principal, **kwargs)
        return result.body if isinstance(result, CommandResult) else result


class RekorApiError(RekorError):
    """An error answered by a Rekor server, with its code, message and details intact."""

    def __init__(self, code: str, message: str, details: Any) -> None:
        self.code = code
        super().__init__(message, details, status=STATUS_BY_CODE.get(code, 500))


def _seg(value: Any) -> str:
    return quote(str(value), safe="")


def _ws(k: dict[str, Any]) -> str:
    return f"/v1/{_seg(k['workspace_id'])}"


def _coll(k: dict[str, Any]) -> str:
    return f"{_ws(k)}/collections/{_seg(k['collection'])}"


def _rec(k: dict[str, Any]) -> str:
    return f"{_coll(k)}/records/{_seg(k['record_id'])}"


def _pick(k: dict[str, Any], *names: str) -> dict[str, Any]:
    return {n: k.get(n) for n in names}


Route = tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]

# RekorService method -> (HTTP method, path, query params, JSON body) of its REST route.
ROUTES: dict[str, Callable[[dict[str, Any]], Route]] = {
    "list_workspaces": lambda k: ("GET", "/v1/workspaces", _pick(k, "limit", "cursor"), None),
    "get_workspace": lambda k: ("GET", f"/v1/workspaces/{_seg(k['workspace_id'])}", None, None),
    "create_workspace": lambda k: (
        "POST",
        "/v1/workspaces",
        None,
        {"id": k["workspace_id"], "name": k.get("name")},
    ),
    "delete_workspace": lambda k: (
        "DELETE",
        f"/v1/workspaces/{_seg(k['workspace_id'])}",
        None,
        None,
    ),
    "create_preview": lambda k: (
        "POST",
        f"/v1/workspaces/{_seg(k['workspace_id'])}/previews",
        None,
        _pick(k, "name", "with_data"),
    ),
    "promote": lambda k: (
        "POST",
        f"/v1/workspaces/{_seg(k['workspace_id'])}/promote",
        None,
        {"from": k.get("source"), "dry_run": k.get("dry_run"), "force": k.get("force")},
    ),
    "list_collections": lambda k: ("GET", f"{_ws(k)}/collections", None, None),
    "get_collection": lambda k: ("GET", f"{_ws(k)}/collections/{_seg(k['name'])}", None, None),
    "upsert_collection": lambda k: (
        "PUT",
        f"{_ws(k)}/collections/{_seg(k['name'])}",
        None,
        _pick(k, "json_schema", "description"),
    ),
    "delete_collection": lambda k: (
        "DELETE",
        f"{_ws(k)}/collections/{_seg(k['name'])}",
        None,
        None,
    ),
    "upsert_record": lambda k: (
        "POST",
        f"{_coll(k)}/records",
        None,
        _pick(k, "data", "id", "external_id", "external_source", "expected_version"),
    ),
    "get_record": lambda k: ("GET", _rec(k), _pick(k, "as_of"), None),
    "patch_record": lambda k: ("PATCH", _rec(k), None, k["patch"]),
    "delete_record": lambda k: ("DELETE", _rec(k), _pick(k, "expected_version"), None),
    "list_records": lambda k: (
        "GET",
        f"{_coll(k)}/records",
        _pick(k, "external_id", "external_source", "limit", "cursor"),
        None,
    ),
    "record_history": lambda k: ("GET", f"{_rec(k)}/history", None, None),
    "query_records": lambda k: (
        "POST",
        f"{_coll(k)}/records/query",
        None,
        _pick(k, "filter", "sort", "limit", "cursor", "offset", "fields", "as_of", "count"),
    ),
    "aggregate_records": lambda k: (
        "POST",
        f"{_coll(k)}/records/aggregate",
        None,
        _pick(k, "filter", "group_by", "aggregations", "as_of"),
    ),
    "upsert_relationship": lambda k: (
        "POST",
        f"{_ws(k)}/relationships",
        None,
        _pick(k, "type", "source", "target", "data", "expected_version"),
    ),
    "get_relationship": lambda k: (
        "GET",
        f"{_ws(k)}/relationships/{_seg(k['relationship_id'])}",
        _pick(k, "as_of"),
        None,
    ),
    "delete_relationship": lambda k: (
        "DELETE",
        f"{_ws(k)}/relationships/{_seg(k['relationship_id'])}",
        _pick(k, "expected_version"),
        None,
    ),
    "list_relationships": lambda k: (
        "GET",
        f"{_ws(k)}/relationships",
        _pick(k, "type", "source", "target", "limit", "cursor", "as_of"),
        None,
    ),
    "related": lambda k: (
        "GET",
        f"{_rec(k)}/related",
        _pick(k, "direction", "type", "depth", "limit", "as_of"),
        None,
    ),
    "batch": lambda k: ("POST", f"{_ws(k)}/batch", None, {"operations": k["operations"]}),
    "create_upload": lambda k: (
        "POST",
        f"{_rec(k)}/attachments",
        None,
        _pick(k, "filename", "content_type", "size", "expires_in"),
    ),
    "complete_upload": lambda k: (
        "POST",
        f"{_rec(k)}/attachments/complete",
        None,
        _pick(k, "filename"),
    ),
    "list_attachments": lambda k: (
        "GET",
        f"{_rec(k)}/attachments",
        _pick(k, "prefix", "limit", "cursor"),
        None,
    ),
    "attachment_url": lambda k: (
        "GET",
        f"{_rec(k)}/attachments/url",
        _pick(k, "filename", "expires_in", "version"),
        None,
    ),
    "attachment_history": lambda k: (
        "GET",
        f"{_rec(k)}/attachments/history",
        _pick(k, "filename"),
        None,
    ),
    "delete_attachment": lambda k: (
        "DELETE",
        f"{_rec(k)}/attachments",
        _pick(k, "filename"),
        None,
    ),
    "create_hook": lambda k: (
        "POST",
        f"{_ws(k)}/hooks",
        None,
        _pick(k, "name", "collection", "external_id_path", "external_source", "secret"),
    ),
    "list_hooks": lambda k: ("GET", f"{_ws(k)}/hooks", _pick(k, "limit", "cursor"), None),
    "get_hook": lambda k: ("GET", f"{_ws(k)}/hooks/{_seg(k['hook_id'])}", None, None),
    "delete_hook": lambda k: ("DELETE", f"{_ws(k)}/hooks/{_seg(k['hook_id'])}", None, None),
    "list_hook_receipts": lambda k: (
        "GET",
        f"{_ws(k)}/hooks/{_seg(k['hook_id'])}/receipts",
        _pick(k, "status", "limit", "cursor"),
        None,
    ),
    "create_trigger": lambda k: (
        "POST",
        f"{_ws(k)}/triggers",
        None,
        _pick(k, "name", "url", "events", "collection", "filter", "include_hook_writes"),
    ),
    "list_triggers": lambda k: ("GET", f"{_ws(k)}/triggers", _pick(k, "limit", "cursor"), None),
    "get_trigger": lambda k: ("GET", f"{_ws(k)}/triggers/{_seg(k['trigger_id'])}", None, None),
    "delete_trigger": lambda k: (
        "DELETE",
        f"{_ws(k)}/triggers/{_seg(k['trigger_id'])}",
        None,
        None,
    ),
    "list_deliveries": lambda k: (
        "GET",
        f"{_ws(k)}/triggers/{_seg(k['trigger_id'])}/deliveries",
        _pick(k, "status", "limit", "cursor"),
        None,
    ),
    "replay_trigger": lambda k: (
        "POST",
        f"{_ws(k)}/triggers/{_seg(k['trigger_id'])}/replay",
        None,
        _pick(k, "from_seq", "to_seq"),
    ),
    "redeliver": lambda k: (
        "POST",
        f"{_ws(k)}/triggers/{_seg(k['trigger_id'])}/redeliver"
        + (f"/{_seg(k['delivery_id'])}" if k.get("delivery_id") else ""),
        None,
        None,
    ),
    "list_events": lambda k: (
        "GET",
        f"{_ws(k)}/events",
        {
            **_pick(k, "after_seq", "collection", "record_id", "limit", "cursor"),
            "type": ",".join(k["types"]) if k.get("types") else None,
        },
        None,
    ),
}


def _drop_none(body: dict[str, Any] | None) -> dict[str, Any] | None:
    # REST bodies are strict structs: an absent optional field is left out, not sent as null.
    if body is None:
        return None
    return {key: value for key, value in body.items() if value is not None}


class RestBackend(Backend):
    """A running Rekor over REST, authenticated by the connection's API key."""

    def __init__(self, conn: Connection) -> None:
        self.client = AsyncRekorClient(conn, interface="mcp")

    async def call(self, method: str, **kwargs: Any) -> Any:
        route = ROUTES.get(method)
        if route is None:
            raise NotImplementedYet(f"no REST route is known for '{method}'")
        http_method, path, params, body = route(kwargs)
        if http_method == "PATCH":
            json_body: Any = body
        else:
            json_body = _drop_none(body)
        try:
            return await self.client.request(http_method, path, json=json_body, params=params)
        except ApiError as exc:
            if exc.code == "NOT_IMPLEMENTED":
                raise NotImplementedYet(exc.message) from None
            raise RekorApiError(exc.code or "INTERNAL_ERROR", exc.message, exc.details) from None
        except RekorError:
            raise
        except Exception as exc:  # the client's Unreachable and other CliErrors
            code = getattr(exc, "code", None) or "UNAVAILABLE"
            raise RekorApiError(code, getattr(exc, "message", str(exc)), []) from None

    async def aclose(self) -> None:
        await self.client.aclose()
