"""RekorService: the one application service. REST routes, CLI commands (through REST) and
MCP tools all call these methods; none of them holds business logic of its own.

Each method checks the caller's permission, builds a command and hands it to the group-commit
writer (writes), or reads the projections / the log (reads).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from commands import apikeys
from commands.attachments import AttachmentsMixin
from commands.batch import BatchMixin
from commands.handlers import Context, handle
from commands.principal import Principal
from commands.query import QueryMixin
from commands.relationships import RelationshipsMixin
from commands.streaming import StreamingMixin
from commands.types import (
    Command,
    CommandResult,
    CreateWorkspace,
    DeleteCollection,
    DeleteRecord,
    DeleteWorkspace,
    PatchRecord,
    UpsertCollection,
    UpsertRecord,
)
from commands.validation import check_limit, check_record_id, check_slug, check_workspace_id
from commands.writer import WorkspaceWriter
from events.errors import NotFound, ValidationError
from events.store import StoredEvent, WorkspaceTx
from projections import reads

_FIRST_KEY_LOCK = 0x5245_4B4B


class RekorService(AttachmentsMixin, RelationshipsMixin, BatchMixin, StreamingMixin, QueryMixin):
    """The application service. Built once by `commands.bootstrap.build_service`."""

    def __init__(self, pool: AsyncConnectionPool, writer: WorkspaceWriter) -> None:
        self.pool = pool
        self.writer = writer
        self.keys = apikeys.KeyCache()
        # Components added by other packages (event relay, storage...) hang here by name.
        self.extensions: dict[str, Any] = {}

    def connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection]:
        """A pooled connection for reads."""
        return self.pool.connection()

    async def execute(
        self,
        principal: Principal,
        workspace_id: str,
        command: Command,
        *,
        creates_workspace: bool = False,
        **meta: Any,
    ) -> CommandResult:
        """Run one command through the group-commit writer and return its result."""
        ctx = Context(principal, **meta)

        async def work(tx: WorkspaceTx) -> CommandResult:
            return await handle(command, tx, ctx)

        return await self.writer.submit(
            workspace_id, work, creates_workspace=creates_workspace, hint=command
        )

    async def run_in_workspace(
        self, workspace_id: str, work: Any, *, creates_workspace: bool = False
    ) -> Any:
        """Run arbitrary transactional work (e.g. an atomic batch) under the workspace lock."""
        return await self.writer.submit(workspace_id, work, creates_workspace=creates_workspace)

    async def _require_workspace(self, conn: psycopg.AsyncConnection, workspace_id: str) -> None:
        if not await reads.workspace_exists(conn, workspace_id):
            raise NotFound(
                f"workspace '{workspace_id}' not found",
                [{"path": "workspace_id", "message": "list workspaces to see the ids you can use"}],
            )

    # -- auth -----------------------------------------------------------------------------

    async def authenticate(self, token: str | None, interface: str = "rest") -> Principal:
        """Resolve a bearer token into a Principal (UNAUTHORIZED if missing/invalid/revoked)."""
        return await apikeys.authenticate(self.pool.connection, self.keys, token, interface)

    async def create_api_key(
        self, principal: Principal, name: Any, permissions: Any, workspaces: Any
    ) -> dict[str, Any]:
        """Create an API key (admin on all workspaces required); the secret is returned once."""
        principal.require(None, "admin")
        perms, scope = apikeys.check_key_spec(permissions, workspaces)
        async with self.pool.connection() as conn:
            return await apikeys.create_key(conn, name, perms, scope)

    async def list_api_keys(self, principal: Principal) -> dict[str, Any]:
        """Every API key (without secrets)."""
        principal.require(None, "admin")
        async with self.pool.connection() as conn:
            return await apikeys.list_keys(conn)

    async def revoke_api_key(self, principal: Principal, key_id: str) -> dict[str, Any]:
        """Revoke an API key."""
        principal.require(None, "admin")
        async with self.pool.connection() as conn:
            out = await apikeys.revoke_key(conn, key_id)
        self.keys.clear()
        return out

    async def ensure_admin_key(self) -> str | None:
        """On first start (no keys at all), create the first admin key and return its secret.
        Several replicas starting at once make exactly one: the check and the insert run under
        one advisory lock."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_FIRST_KEY_LOCK,))
            if await apikeys.count_keys(conn):
                return None
            created = await apikeys.create_key(
                conn, "admin (created on first start)", ["admin", "promote"], None
            )
        return str(created["key"])

    # -- workspaces -----------------------------------------------------------------------

    async def create_workspace(
        self, principal: Principal, workspace_id: Any, name: Any = None
    ) -> CommandResult:
        """Create a workspace (admin). A deleted workspace's id may be used again; its old log
        stays readable by seq."""
        ws = check_workspace_id(workspace_id, allow_preview=False)
        principal.require(ws, "admin")
        if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 200):
            raise ValidationError("name must be a string of 1-200 characters", [{"path": "$.name"}])
        return await self.execute(
            principal, ws, CreateWorkspace(id=ws, name=name), creates_workspace=True
        )

    async def list_workspaces(
        self, principal: Principal, limit: Any = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """Workspaces the caller's key can see."""
        limit = check_limit(limit)
        async with self.pool.connection() as conn:
            return await reads.list_workspaces(
                conn,
                allowed=list(principal.workspaces) if principal.workspaces is not None else None,
                limit=limit,
                cursor=cursor,
            )

    async def get_workspace(self, principal: Principal, workspace_id: str) -> dict[str, Any]:
        """One workspace."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        async with self.pool.connection() as conn:
            return await reads.get_workspace(conn, ws)

    async def delete_workspace(self, principal: Principal, workspace_id: str) -> CommandResult:
        """Delete a workspace: its tables are emptied, its log is kept."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "admin")
        return await self.execute(principal, ws, DeleteWorkspace(id=ws))

    # -- collections ----------------------------------------------------------------------

    async def upsert_collection(
        self,
        principal: Principal,
        workspace_id: str,
        name: Any,
        json_schema: Any,
        description: Any = None,
    ) -> CommandResult:
        """Create or change a collection's JSON Schema. The version bumps only when the schema
        changes; a change that existing records would violate is refused with their ids."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "write")
        check_slug(name, "collection name", "collection")
        if description is not None and not isinstance(description, str):
            raise ValidationError("description must be a string", [{"path": "$.description"}])
        if not isinstance(json_schema, dict):
            raise ValidationError(
                "json_schema must be a JSON object (a JSON Schema, Draft 2020-12)",
                [{"path": "$.json_schema", "message": f"got {type(json_schema).__name__}"}],
            )
        cmd = UpsertCollection(name=name, json_schema=json_schema, description=description)
        return await self.execute(principal, ws, cmd)

    async def list_collections(self, principal: Principal, workspace_id: str) -> dict[str, Any]:
        """Every collection of a workspace."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        async with self.pool.connection() as conn:
            await self._require_workspace(conn, ws)
            return await reads.list_collections(conn, ws)

    async def get_collection(
        self, principal: Principal, workspace_id: str, name: str
    ) -> dict[str, Any]:
        """One collection with its schema."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        async with self.pool.connection() as conn:
            await self._require_workspace(conn, ws)
            return await reads.get_collection(conn, ws, name)

    async def delete_collection(
        self, principal: Principal, workspace_id: str, name: str
    ) -> CommandResult:
        """Delete a collection and its records (their history stays in the log)."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "write")
        return await self.execute(principal, ws, DeleteCollection(name=name))

    # -- records --------------------------------------------------------------------------

    async def upsert_record(
        self,
        principal: Principal,
        workspace_id: str,
        collection: str,
        data: Any,
        *,
        id: Any = None,
        external_id: Any = None,
        external_source: Any = None,
        expected_version: Any = None,
        **meta: Any,
    ) -> CommandResult:
        """Create or replace a record, found by id, else by external_id (+source), else new.
        Unchanged data appends nothing and keeps the version. `created` tells 201 from 200."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "write")
        cmd = UpsertRecord(
            collection=collection,
            data=data,
            id=id,
            external_id=external_id,
            external_source=external_source,
            expected_version=expected_version,
        )
        return await self.execute(principal, ws, cmd, **meta)

    async def patch_record(
        self,
        principal: Principal,
        workspace_id: str,
        collection: str,
        record_id: str,
        patch: Any,
        expected_version: Any = None,
    ) -> CommandResult:
        """Apply a JSON merge patch (RFC 7396) to a record; the result must fit the schema."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "write")
        if not isinstance(patch, dict):
            raise ValidationError("a merge patch must be a JSON object", [{"path": "$"}])
        patch = dict(patch)
        if "expected_version" in patch:
            expected_version = patch.pop("expected_version")
        cmd = PatchRecord(
            collection=collection, id=record_id, patch=patch, expected_version=expected_version
        )
        return await self.execute(principal, ws, cmd)

    async def delete_record(
        self,
        principal: Principal,
        workspace_id: str,
        collection: str,
        record_id: str,
        expected_version: Any = None,
    ) -> CommandResult:
        """Delete a record (a tombstone event; its history stays)."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "write")
        cmd = DeleteRecord(collection=collection, id=record_id, expected_version=expected_version)
        return await self.execute(principal, ws, cmd)

    async def get_record(
        self,
        principal: Principal,
        workspace_id: str,
        collection: str,
        record_id: str,
        as_of: Any = None,
    ) -> dict[str, Any]:
        """A record now, or as it was at `as_of` (a seq or an ISO-8601 instant)."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        rid = check_record_id(record_id)
        at = reads.parse_as_of(as_of)
        async with self.pool.connection() as conn:
            if at is not None:
                await self._require_workspace(conn, ws)
                return await reads.get_record_as_of(conn, ws, collection, rid, at)
            try:
                return await reads.get_record(conn, ws, collection, rid)
            except NotFound:
                await self._require_workspace(conn, ws)
                await reads.get_collection(conn, ws, collection)
                raise

    async def list_records(
        self,
        principal: Principal,
        workspace_id: str,
        collection: str,
        *,
        external_id: str | None = None,
        external_source: str | None = None,
        limit: Any = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Records of a collection in creation order, optionally by external id/source."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        limit = check_limit(limit)
        async with self.pool.connection() as conn:
            await self._require_workspace(conn, ws)
            await reads.get_collection(conn, ws, collection)
            return await reads.list_records(
                conn,
                ws,
                collection,
                external_id=external_id,
                external_source=external_source,
                limit=limit,
                cursor=cursor,
            )

    async def record_history(
        self, principal: Principal, workspace_id: str, collection: str, record_id: str
    ) -> dict[str, Any]:
        """Every version of a record with seq, time, actor, data and diff."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        rid = check_record_id(record_id)
        async with self.pool.connection() as conn:
            await self._require_workspace(conn, ws)
            return await reads.record_history(conn, ws, collection, rid)

    async def read_events(
        self, principal: Principal, workspace_id: str, after_seq: int = 0, limit: int = 1000
    ) -> list[StoredEvent]:
        """Raw log entries (for the audit log and rebuild tests)."""
        from events.store import read_workspace

        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        async with self.pool.connection() as conn:
            return await read_workspace(conn, ws, after_seq, limit)

    async def close(self) -> None:
        """Finish in-flight writes, then close the pool."""
        await self.writer.close()
        await self.pool.close()
