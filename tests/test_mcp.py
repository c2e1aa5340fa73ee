"""The MCP server over streamable HTTP (mounted at /mcp on a real `rekor serve`), with the
official MCP client: the 11 tools, the seed exchange, and bad input answered as tool errors
an agent can act on, with nothing written."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from commands.principal import SYSTEM
from commands.service import RekorService
from mcp_server.backend import ServiceBackend
from tests.conftest import INCIDENT, INCIDENT_SCHEMA, Server, unique

TOOLS = {
    "manage_workspace",
    "manage_collection",
    "manage_record",
    "query_records",
    "manage_relationship",
    "query_relationships",
    "manage_attachment",
    "batch_operations",
    "manage_hook",
    "manage_trigger",
    "get_history",
}


@asynccontextmanager
async def mcp_http(url: str, key: str) -> AsyncIterator[Client]:
    """The official client over streamable HTTP with a Bearer API key."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)
    async with http, Client(streamable_http_client(url + "/mcp", http_client=http)) as client:
        yield client


class ToolFailure(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text
        # The SDK prefixes a tool error with "Error executing tool <name>: ".
        message = text.split(": ", 1)[1] if text.startswith("Error executing tool") else text
        self.code = message.split(":", 1)[0]


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    """Call a tool; return its JSON result or raise ToolFailure with the error text."""
    result = await client.call_tool(tool, arguments)
    text = "".join(getattr(c, "text", "") for c in result.content)
    if result.is_error:
        raise ToolFailure(text)
    return json.loads(text)


async def failure(client: Client, tool: str, **arguments: Any) -> ToolFailure:
    with pytest.raises(ToolFailure) as info:
        await call(client, tool, **arguments)
    return info.value


async def test_eleven_tools_that_teach(server: Server, admin_key: str) -> None:
    async with mcp_http(server.url, admin_key) as agent:
        tools = {t.name: t for t in (await agent.list_tools()).tools}
        assert set(tools) == TOOLS
        for tool in tools.values():
            action = tool.input_schema["properties"]["action"]
            assert action.get("enum") or action.get("const"), f"{tool.name}: action is an enum"
            assert len(tool.description or "") > 200, f"{tool.name} needs a real description"
        assert "manage_collection" in tools["manage_workspace"].description  # discovery pattern
        query = tools["query_records"].description
        for op in ("eq", "neq", "gte", "in", "not_in", "ilike", "is_null", "has", "search"):
            assert re.search(rf"\b{op}\b", query), op
        assert '{"field": "data.severity", "op": "in"' in query
        assert "workspace_id" in tools["manage_record"].input_schema["required"]


async def test_seed_exchange_verbatim(
    server: Server, admin_key: str, api: httpx.AsyncClient
) -> None:
    async with mcp_http(server.url, admin_key) as agent:
        ws = unique("ws_ops")
        created = await call(agent, "manage_workspace", action="create", workspace_id=ws)
        assert created["id"] == ws
        out = await call(
            agent,
            "manage_collection",
            action="upsert",
            workspace_id=ws,
            collection="incidents",
            json_schema=INCIDENT_SCHEMA,
        )
        assert out == {"id": "incidents", "name": "incidents", "version": 1}
        upsert = {
            "action": "upsert",
            "workspace_id": ws,
            "collection": "incidents",
            "external_id": "INC-2847",
            "external_source": "pagerduty",
            "data": INCIDENT,
        }
        first = await call(agent, "manage_record", **upsert)
        assert set(first) == {"id", "external_id", "version"}
        assert uuid.UUID(first["id"]).version == 7
        assert (first["external_id"], first["version"]) == ("INC-2847", 1)
        assert await call(agent, "manage_record", **upsert) == first
        changed = await call(
            agent, "manage_record", **{**upsert, "data": {**INCIDENT, "status": "open"}}
        )
        assert changed == {**first, "version": 2}

        # The write went through the one service, recorded as made through MCP.
        rest = (await api.get(f"/v1/{ws}/collections/incidents/records/{first['id']}")).json()
        got = await call(
            agent,
            "manage_record",
            action="get",
            workspace_id=ws,
            collection="incidents",
            id=first["id"],
        )
        assert got == rest
        events = (await api.get(f"/v1/{ws}/events", params={"record_id": first["id"]})).json()
        assert {e["metadata"]["interface"] for e in events["data"]} == {"mcp"}

        # Discovery: the workspace and its collection are listed.
        listed = await call(agent, "manage_workspace", action="list", limit=1000)
        assert ws in [w["id"] for w in listed["data"]]
        colls = await call(agent, "manage_collection", action="list", workspace_id=ws)
        assert [c["name"] for c in colls["data"]] == ["incidents"]
        hist = await call(
            agent,
            "get_history",
            action="record",
            workspace_id=ws,
            collection="incidents",
            id=first["id"],
        )
        assert [h["version"] for h in hist["data"]] == [1, 2]


async def _head(api: httpx.AsyncClient, ws: str) -> int:
    return (await api.get(f"/v1/workspaces/{ws}")).json()["head_seq"]


async def test_bad_input_is_a_tool_error_and_writes_nothing(
    server: Server, admin_key: str, api: httpx.AsyncClient
) -> None:
    async with mcp_http(server.url, admin_key) as agent:
        ws = unique()
        await api.post("/v1/workspaces", json={"id": ws})
        await api.put(f"/v1/{ws}/collections/incidents", json={"json_schema": INCIDENT_SCHEMA})
        head = await _head(api, ws)
        rec = {"workspace_id": ws, "collection": "incidents"}

        # Unknown tool / unknown action / wrong types: rejected by the tool schemas.
        err = await failure(agent, "drop_everything", workspace_id=ws)
        assert "Unknown tool" in err.text
        err = await failure(agent, "manage_record", action="truncate", **rec)
        assert "action" in err.text and "upsert" in err.text  # names the allowed actions
        err = await failure(agent, "manage_record", action="upsert", **rec, data="not an object")
        assert "data" in err.text
        err = await failure(agent, "manage_record", action="list", **rec, limit="many")
        assert "limit" in err.text
        # Missing required arguments: per action, with the argument named.
        err = await failure(agent, "manage_record", action="get", **rec)
        assert err.code == "VALIDATION_ERROR" and "'id'" in err.text
        err = await failure(agent, "manage_record", action="upsert", workspace_id=ws)
        assert "collection" in err.text
        # Schema violation: the service's message and every failing path.
        err = await failure(
            agent, "manage_record", action="upsert", **rec, data={"title": 1, "severity": "p9"}
        )
        assert err.code == "VALIDATION_ERROR"
        details = json.loads(err.text.split("details: ", 1)[1])
        assert {"$.data.title", "$.data.severity", "$.data"} <= {d["path"] for d in details}
        # Oversize arguments.
        big = {**INCIDENT, "title": "x" * (3 * 1024 * 1024)}
        err = await failure(agent, "manage_record", action="upsert", **rec, data=big)
        assert err.code == "PAYLOAD_TOO_LARGE" and "limit" in err.text
        # Not found, conflict.
        err = await failure(agent, "manage_record", action="get", **rec, id=str(uuid.uuid4()))
        assert err.code == "NOT_FOUND"
        err = await failure(
            agent, "manage_collection", action="get", workspace_id=ws, collection="x"
        )
        assert err.code == "NOT_FOUND" and "'x'" in err.text
        err = await failure(agent, "manage_workspace", action="create", workspace_id=ws)
        assert err.code == "CONFLICT"
        assert await _head(api, ws) == head, "a rejected call must write nothing"

        # A key scoped to another workspace may not touch this one.
        other = unique()
        await api.post("/v1/workspaces", json={"id": other})
        scoped = (
            await api.post(
                "/v1/api-keys",
                json={"name": "agent", "permissions": ["read", "write"], "workspaces": [other]},
            )
        ).json()["key"]
        async with mcp_http(server.url, scoped) as scoped_agent:
            err = await failure(
                scoped_agent, "manage_record", action="upsert", **rec, data=INCIDENT
            )
            assert err.code == "FORBIDDEN" and ws in err.text
            err = await failure(
                scoped_agent, "manage_workspace", action="delete", workspace_id=other
            )
            assert err.code == "FORBIDDEN" and "admin" in err.text
            listed = await call(scoped_agent, "manage_workspace", action="list")
            assert [w["id"] for w in listed["data"]] == [other]
        assert await _head(api, ws) == head


async def test_http_transport_requires_an_api_key(server: Server) -> None:
    async with httpx.AsyncClient() as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        for headers in ({}, {"Authorization": "Bearer rk_nope"}):
            r = await http.post(server.url + "/mcp", json=body, headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "UNAUTHORIZED"


async def test_missing_capabilities_answer_not_implemented(
    server: Server, admin_key: str, service: RekorService
) -> None:
    async with mcp_http(server.url, admin_key) as agent:
        ws = unique()
        await call(agent, "manage_workspace", action="create", workspace_id=ws)
        if not hasattr(service, "create_preview"):
            err = await failure(
                agent, "manage_workspace", action="create_preview", workspace_id=ws, name="try"
            )
            assert err.code == "NOT_IMPLEMENTED"
            assert "manage_workspace action 'create_preview' is not available yet" in err.text
        backend = ServiceBackend(service, SYSTEM)
        with pytest.raises(Exception) as info:
            await backend.call("no_such_operation", workspace_id=ws)
        assert getattr(info.value, "code", None) == "NOT_IMPLEMENTED"
