"""REST routes for workspaces, collections, records and API keys: thin adapters that turn an
HTTP request into one RekorService call."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.params import Parameter

from api.schemas import ApiKeyCreate, CollectionUpsert, RecordUpsert, WorkspaceCreate
from commands.principal import Principal
from commands.service import RekorService
from commands.types import CommandResult
from events.errors import BadRequest


def written(result: CommandResult) -> Response[dict[str, Any]]:
    """201 for a created entity, 200 otherwise."""
    return Response(content=result.body, status_code=201 if result.created else 200)


def _limit(limit: int | None) -> int | None:
    return limit


class WorkspaceController(Controller):
    path = "/v1/workspaces"
    tags = ["workspaces"]

    @get("/", operation_id="listWorkspaces")
    async def list_workspaces(
        self,
        service: RekorService,
        principal: Principal,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """List the workspaces your API key can see, ordered by id."""
        return await service.list_workspaces(principal, limit, cursor)

    @post("/", operation_id="createWorkspace", status_code=201)
    async def create_workspace(
        self, service: RekorService, principal: Principal, data: WorkspaceCreate
    ) -> Response[dict[str, Any]]:
        """Create a workspace: an isolated log, with its own collections, records and keys
        scope. Needs `admin`."""
        return written(await service.create_workspace(principal, data.id, data.name))

    @get("/{ws:str}", operation_id="getWorkspace")
    async def get_workspace(
        self, service: RekorService, principal: Principal, ws: str
    ) -> dict[str, Any]:
        """Get one workspace, including its current log head (`head_seq`)."""
        return await service.get_workspace(principal, ws)

    @delete("/{ws:str}", operation_id="deleteWorkspace", status_code=200)
    async def delete_workspace(
        self, service: RekorService, principal: Principal, ws: str
    ) -> dict[str, Any]:
        """Delete a workspace. Its data disappears from queries; its log is kept. Needs
        `admin`."""
        return (await service.delete_workspace(principal, ws)).body


class CollectionController(Controller):
    path = "/v1/{ws:str}/collections"
    tags = ["collections"]

    @get("/", operation_id="listCollections")
    async def list_collections(
        self, service: RekorService, principal: Principal, ws: str
    ) -> dict[str, Any]:
        """List the collections of a workspace with their schema version and record count."""
        return await service.list_collections(principal, ws)

    @get("/{collection:str}", operation_id="getCollection")
    async def get_collection(
        self, service: RekorService, principal: Principal, ws: str, collection: str
    ) -> dict[str, Any]:
        """Get a collection and its JSON Schema."""
        return await service.get_collection(principal, ws, collection)

    @put("/{collection:str}", operation_id="upsertCollection")
    async def upsert_collection(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        collection: str,
        data: CollectionUpsert,
    ) -> Response[dict[str, Any]]:
        """Create or update a collection. `version` bumps only when the schema changes; a
        schema that existing records would violate is refused, listing their ids."""
        result = await service.upsert_collection(
            principal, ws, collection, data.json_schema, data.description
        )
        return written(result)

    @delete("/{collection:str}", operation_id="deleteCollection", status_code=200)
    async def delete_collection(
        self, service: RekorService, principal: Principal, ws: str, collection: str
    ) -> dict[str, Any]:
        """Delete a collection and all its records (their history stays in the log)."""
        return (await service.delete_collection(principal, ws, collection)).body


class RecordController(Controller):
    path = "/v1/{ws:str}/collections/{collection:str}/records"
    tags = ["records"]

    @post("/", operation_id="upsertRecord")
    async def upsert_record(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        collection: str,
        data: RecordUpsert,
    ) -> Response[dict[str, Any]]:
        """Create or update a record. It is found by `id`, else by `external_id` (+
        `external_source`), else created. 201 when created, 200 otherwise; an upsert that
        changes nothing keeps the version and appends no event."""
        result = await service.upsert_record(
            principal,
            ws,
            collection,
            data.data,
            id=data.id,
            external_id=data.external_id,
            external_source=data.external_source,
            expected_version=data.expected_version,
        )
        return written(result)

    @get("/", operation_id="listRecords")
    async def list_records(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        collection: str,
        external_id: str | None = None,
        external_source: str | None = None,
        limit: int | None = Parameter(default=None, description="1-1000, default 50"),
        cursor: str | None = Parameter(default=None, description="next_cursor of the last page"),
    ) -> dict[str, Any]:
        """List records in creation order, optionally by external id and source."""
        return await service.list_records(
            principal,
            ws,
            collection,
            external_id=external_id,
            external_source=external_source,
            limit=limit,
            cursor=cursor,
        )

    @get("/{record_id:str}", operation_id="getRecord")
    async def get_record(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        collection: str,
        record_id: str,
        as_of: str | None = Parameter(
            default=None, description="Time travel: a seq (e.g. 42) or an ISO-8601 instant"
        ),
    ) -> dict[str, Any]:
        """Get a record now, or as it was at `as_of`."""
        return await service.get_record(principal, ws, collection, record_id, as_of)

    @patch("/{record_id:str}", operation_id="patchRecord")
    async def patch_record(
        self,
        request: Request[Any, Any, Any],
        service: RekorService,
        principal: Principal,
        ws: str,
        collection: str,
        record_id: str,
    ) -> dict[str, Any]:
        """JSON merge patch (RFC 7396) of the record: `{"data": {"status": "resolved"}}`
        changes one field, `null` removes one. Optional `expected_version`."""
        body = await _json_body(request)
        result = await service.patch_record(principal, ws, collection, record_id, body)
        return result.body

    @delete("/{record_id:str}", operation_id="deleteRecord", status_code=200)
    async def delete_record(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        collection: str,
        record_id: str,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Delete a record. Its history remains readable."""
        result = await service.delete_record(principal, ws, collection, record_id, expected_version)
        return result.body

    @get("/{record_id:str}/history", operation_id="recordHistory")
    async def history(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        collection: str,
        record_id: str,
    ) -> dict[str, Any]:
        """Every version of a record: seq, time, actor, event, data and diff."""
        return await service.record_history(principal, ws, collection, record_id)


async def _json_body(request: Request[Any, Any, Any]) -> Any:
    import msgspec

    raw = await request.body()
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc


class ApiKeyController(Controller):
    path = "/v1/api-keys"
    tags = ["api keys"]

    @get("/", operation_id="listApiKeys")
    async def list_keys(self, service: RekorService, principal: Principal) -> dict[str, Any]:
        """List API keys (never their secrets). Needs an unscoped `admin` key."""
        return await service.list_api_keys(principal)

    @post("/", operation_id="createApiKey", status_code=201)
    async def create_key(
        self, service: RekorService, principal: Principal, data: ApiKeyCreate
    ) -> dict[str, Any]:
        """Create an API key. The secret `key` is in this response only: store it."""
        return await service.create_api_key(principal, data.name, data.permissions, data.workspaces)

    @delete("/{key_id:str}", operation_id="revokeApiKey", status_code=200)
    async def revoke_key(
        self, service: RekorService, principal: Principal, key_id: str
    ) -> dict[str, Any]:
        """Revoke an API key; it stops working immediately."""
        return await service.revoke_api_key(principal, key_id)
