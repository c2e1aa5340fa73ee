"""One service, three adapters: the same scenario through REST, the CLI (a real `rekor`
subprocess), MCP over streamable HTTP and MCP over stdio (`rekor mcp`, both with the official
client) gives identical results and identical errors."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import INCIDENT, INCIDENT_SCHEMA, ROOT, Server, unique

MISSING_ID = "01960000-0000-7000-8000-000000000000"
SEVERE = {"field": "data.severity", "op": "in", "value": ["p0", "p1"]}
SORT = [{"field": "data.title", "direction": "asc"}]


class Failed(Exception):
    """An error in the contract's shape, whichever interface reported it."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error)
        self.error = error


class Driver(ABC):
    """The scenario's operations through one interface."""

    @abstractmethod
    async def create_workspace(self, ws: str) -> Any: ...

    @abstractmethod
    async def upsert_collection(self, ws: str, name: str, schema: dict[str, Any]) -> Any: ...

    @abstractmethod
    async def upsert_record(
        self, ws: str, coll: str, external_id: str, source: str, data: Any
    ) -> Any: ...

    @abstractmethod
    async def get_record(self, ws: str, coll: str, record_id: str) -> Any: ...

    @abstractmethod
    async def query(self, ws: str, coll: str) -> Any: ...

    @abstractmethod
    async def list_records(self, ws: str, coll: str) -> Any: ...

    @abstractmethod
    async def history(self, ws: str, coll: str, record_id: str) -> Any: ...


def compact(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: body[key] for key in keys}


class Rest(Driver):
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = await self.http.request(method, path, **kw)
        if r.is_error:
            raise Failed(r.json()["error"])
        return r.json()

    async def create_workspace(self, ws: str) -> Any:
        return await self._call("POST", "/v1/workspaces", json={"id": ws})

    async def upsert_collection(self, ws: str, name: str, schema: dict[str, Any]) -> Any:
        body = await self._call("PUT", f"/v1/{ws}/collections/{name}", json={"json_schema": schema})
        return compact(body, "id", "name", "version")

    async def upsert_record(
        self, ws: str, coll: str, external_id: str, source: str, data: Any
    ) -> Any:
        payload = {"external_id": external_id, "external_source": source, "data": data}
        body = await self._call("POST", f"/v1/{ws}/collections/{coll}/records", json=payload)
        return compact(body, "id", "external_id", "version")

    async def get_record(self, ws: str, coll: str, record_id: str) -> Any:
        return await self._call("GET", f"/v1/{ws}/collections/{coll}/records/{record_id}")

    async def query(self, ws: str, coll: str) -> Any:
        body = {"filter": SEVERE, "sort": SORT}
        return await self._call("POST", f"/v1/{ws}/collections/{coll}/records/query", json=body)

    async def list_records(self, ws: str, coll: str) -> Any:
        return await self._call("GET", f"/v1/{ws}/collections/{coll}/records")

    async def history(self, ws: str, coll: str, record_id: str) -> Any:
        return await self._call("GET", f"/v1/{ws}/collections/{coll}/records/{record_id}/history")


class Cli(Driver):
    """The real `rekor` command in a subprocess, JSON output."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd = env, cwd

    async def _run(self, *args: str) -> Any:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli.app",
            *args,
            "--output",
            "json",
            cwd=self.cwd,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        if proc.returncode != 0:
            error = json.loads(err)["error"]
            error["exit_code"] = proc.returncode
            raise Failed(error)
        return json.loads(out)

    async def create_workspace(self, ws: str) -> Any:
        return await self._run("workspaces", "create", ws)

    async def upsert_collection(self, ws: str, name: str, schema: dict[str, Any]) -> Any:
        body = await self._run(
            "collections", "upsert", name, "--schema", json.dumps(schema), "-w", ws
        )
        return compact(body, "id", "name", "version")

    async def upsert_record(
        self, ws: str, coll: str, external_id: str, source: str, data: Any
    ) -> Any:
        body = await self._run(
            "records", "upsert", coll, "--external-id", external_id, "--source", source,
            "--data", json.dumps(data), "--workspace", ws,
        )  # fmt: skip
        return compact(body, "id", "external_id", "version")

    async def get_record(self, ws: str, coll: str, record_id: str) -> Any:
        return await self._run("records", "get", coll, record_id, "-w", ws)

    async def query(self, ws: str, coll: str) -> Any:
        return await self._run(
            "records",
            "query",
            coll,
            "-w",
            ws,
            "--filter",
            json.dumps(SEVERE),
            "--sort",
            "data.title",
        )

    async def list_records(self, ws: str, coll: str) -> Any:
        return await self._run("records", "list", coll, "-w", ws)

    async def history(self, ws: str, coll: str, record_id: str) -> Any:
        return await self._run("records", "history", coll, record_id, "-w", ws)


def parse_tool_error(text: str) -> dict[str, Any]:
    """`Error executing tool T: CODE: message\\ndetails: [...]` -> the contract's error."""
    text = text.split(": ", 1)[1] if text.startswith("Error executing tool") else text
    head, _, details = text.partition("\ndetails: ")
    code, _, message = head.partition(": ")
    return {"code": code, "message": message, "details": json.loads(details) if details else []}


class Mcp(Driver):
    def __init__(self, client: Client) -> None:
        self.client = client

    async def call(self, tool: str, **arguments: Any) -> Any:
        result = await self.client.call_tool(tool, arguments)
        text = "".join(getattr(c, "text", "") for c in result.content)
        if result.is_error:
            raise Failed(parse_tool_error(text))
        return json.loads(text)

    async def create_workspace(self, ws: str) -> Any:
        return await self.call("manage_workspace", action="create", workspace_id=ws)

    async def upsert_collection(self, ws: str, name: str, schema: dict[str, Any]) -> Any:
        return await self.call(
            "manage_collection",
            action="upsert",
            workspace_id=ws,
            collection=name,
            json_schema=schema,
        )

    async def upsert_record(
        self, ws: str, coll: str, external_id: str, source: str, data: Any
    ) -> Any:
        return await self.call(
            "manage_record", action="upsert", workspace_id=ws, collection=coll,
            external_id=external_id, external_source=source, data=data,
        )  # fmt: skip

    async def get_record(self, ws: str, coll: str, record_id: str) -> Any:
        return await self.call(
            "manage_record", action="get", workspace_id=ws, collection=coll, id=record_id
        )

    async def query(self, ws: str, coll: str) -> Any:
        return await self.call(
            "query_records", workspace_id=ws, collection=coll, filter=SEVERE, sort=SORT
        )

    async def list_records(self, ws: str, coll: str) -> Any:
        return await self.call("manage_record", action="list", workspace_id=ws, collection=coll)

    async def history(self, ws: str, coll: str, record_id: str) -> Any:
        return await self.call(
            "get_history", action="record", workspace_id=ws, collection=coll, id=record_id
        )


async def scenario(driver: Driver, ws: str) -> list[Any]:
    """The story every interface tells; each step's result or error, in order."""
    steps: list[Any] = []

    async def step(coro: Any) -> Any:
        try:
            result = await coro
        except Failed as exc:
            steps.append({"failed": exc.error})
            return None
        steps.append(result)
        return result

    await step(driver.create_workspace(ws))
    await step(driver.upsert_collection(ws, "incidents", INCIDENT_SCHEMA))
    first = await step(driver.upsert_record(ws, "incidents", "INC-1", "pagerduty", INCIDENT))
    await step(driver.upsert_record(ws, "incidents", "INC-1", "pagerduty", INCIDENT))
    quiet = {**INCIDENT, "title": "Disk almost full", "severity": "p3"}
    await step(driver.upsert_record(ws, "incidents", "INC-2", "pagerduty", quiet))
    loud = {**INCIDENT, "title": "Checkout down", "severity": "p0", "status": "open"}
    await step(driver.upsert_record(ws, "incidents", "INC-3", "pagerduty", loud))
    await step(
        driver.upsert_record(
            ws, "incidents", "INC-1", "pagerduty", {**INCIDENT, "status": "resolved"}
        )
    )
    assert first is not None
    await step(driver.get_record(ws, "incidents", first["id"]))
    await step(driver.query(ws, "incidents"))
    await step(driver.list_records(ws, "incidents"))
    await step(driver.history(ws, "incidents", first["id"]))
    # Errors: validation, not found (record, collection), conflict.
    bad = {"title": 42, "severity": "p9"}
    await step(driver.upsert_record(ws, "incidents", "INC-9", "pagerduty", bad))
    await step(driver.get_record(ws, "incidents", MISSING_ID))
    await step(driver.list_records(ws, "nope"))
    await step(driver.create_workspace(ws))
    # The failed writes left nothing behind.
    await step(driver.list_records(ws, "incidents"))
    return steps


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def normalise(value: Any, ws: str) -> Any:
    """Ids become their order of appearance, instants and the workspace id placeholders, and
    the interface a write came through (which differs by design) is dropped."""
    ids: dict[str, str] = {}

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items() if k not in ("interface", "exit_code")}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, str):
            if INSTANT.match(v):
                return "<instant>"
            v = v.replace(ws, "<ws>")
            return UUID.sub(lambda m: ids.setdefault(m.group(0), f"<id{len(ids)}>"), v)
        return v

    return walk(value)


@asynccontextmanager
async def drivers(
    server: Server, admin_key: str, tmp_path: Path
) -> AsyncIterator[dict[str, Driver]]:
    env = {
        **os.environ,
        "REKOR_URL": server.url,
        "REKOR_API_KEY": admin_key,
        "REKOR_CONFIG": str(tmp_path / "config.json"),
    }
    env.pop("REKOR_WORKSPACE", None)
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=server.url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
            )
        )
        mcp_http = await stack.enter_async_context(
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {admin_key}"}, timeout=30)
        )
        over_http = await stack.enter_async_context(
            Client(streamable_http_client(server.url + "/mcp", http_client=mcp_http))
        )
        stdio = StdioServerParameters(
            command=sys.executable, args=["-m", "cli.app", "mcp"], env=env, cwd=str(ROOT)
        )
        over_stdio = await stack.enter_async_context(Client(stdio))
        yield {
            "rest": Rest(http),
            "cli": Cli(env, tmp_path),
            "mcp-http": Mcp(over_http),
            "mcp-stdio": Mcp(over_stdio),
        }


async def test_same_scenario_same_results(server: Server, admin_key: str, tmp_path: Path) -> None:
    async with drivers(server, admin_key, tmp_path) as by_name:
        results = {}
        for name, driver in by_name.items():
            ws = unique("ws_same")
            results[name] = normalise(await scenario(driver, ws), ws)

    rest = results["rest"]
    # The story itself is right (checked once, on REST)...
    assert rest[1] == {"id": "incidents", "name": "incidents", "version": 1}
    assert rest[2] == {"id": "<id0>", "external_id": "INC-1", "version": 1}
    assert rest[3] == rest[2], "an identical upsert keeps id and version"
    assert rest[6] == {"id": "<id0>", "external_id": "INC-1", "version": 2}
    assert rest[7]["data"]["status"] == "resolved"
    assert [r["external_id"] for r in rest[8]["data"]] == ["INC-1", "INC-3"]
    assert len(rest[9]["data"]) == 3
    assert [h["version"] for h in rest[10]["data"]] == [1, 2]
    assert [s["failed"]["code"] for s in rest[11:15]] == [
        "VALIDATION_ERROR",
        "NOT_FOUND",
        "NOT_FOUND",
        "CONFLICT",
    ]
    assert rest[15] == rest[9]
    # ...and every interface tells it identically, errors included.
    for name, steps in results.items():
        for index, (theirs, ours) in enumerate(zip(steps, rest, strict=True)):
            assert theirs == ours, f"{name} differs from REST at step {index}"


BAD_INPUT = [
    ("manage_record", {"action": "truncate", "workspace_id": "{ws}", "collection": "incidents"}),
    ("manage_record", {"action": "get", "workspace_id": "{ws}", "collection": "incidents"}),
    ("manage_record", {"action": "list", "workspace_id": "{ws}", "collection": 7}),
    ("manage_collection", {"action": "upsert", "workspace_id": "{ws}", "collection": "x"}),
    ("no_such_tool", {"workspace_id": "{ws}"}),
    ("manage_record", {"action": "upsert", "workspace_id": "{ws}", "collection": "incidents",
                       "data": {"title": "x" * (3 * 1024 * 1024)}}),
    ("manage_record", {"action": "upsert", "workspace_id": "{other}", "collection": "incidents",
                       "data": INCIDENT}),
]  # fmt: skip


async def test_bad_input_same_over_both_mcp_transports(
    server: Server, admin_key: str, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    ws = unique()
    other = unique("other")
    await api.post("/v1/workspaces", json={"id": ws})
    await api.put(f"/v1/{ws}/collections/incidents", json={"json_schema": INCIDENT_SCHEMA})
    # A key scoped to `ws` only: `other` is a workspace it may not touch.
    key = (
        await api.post(
            "/v1/api-keys", json={"name": "agent", "permissions": ["write"], "workspaces": [ws]}
        )
    ).json()["key"]
    await api.post("/v1/workspaces", json={"id": other})
    await api.put(f"/v1/{other}/collections/incidents", json={"json_schema": INCIDENT_SCHEMA})
    heads = {w: (await api.get(f"/v1/workspaces/{w}")).json()["head_seq"] for w in (ws, other)}

    async with drivers(server, key, tmp_path) as by_name:
        for tool, arguments in BAD_INPUT:
            args = json.loads(json.dumps(arguments).replace("{ws}", ws).replace("{other}", other))
            texts = {}
            for name in ("mcp-http", "mcp-stdio"):
                mcp = by_name[name]
                assert isinstance(mcp, Mcp)
                result = await mcp.client.call_tool(tool, args)
                assert result.is_error, f"{name}: {tool} {arguments} should be a tool error"
                texts[name] = "".join(getattr(c, "text", "") for c in result.content)
            assert texts["mcp-http"] == texts["mcp-stdio"], (tool, arguments)
            # Never the bare crash text: always something the agent can act on.
            assert texts["mcp-http"].strip() != f"Error executing tool {tool}"
    for w, head in heads.items():
        assert (await api.get(f"/v1/workspaces/{w}")).json()["head_seq"] == head, "nothing written"
