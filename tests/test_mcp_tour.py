"""An agent's tour of every MCP tool beyond records, over streamable HTTP on a real server:
queries, relationships, traversal, batch, attachments (with a real S3 upload), hooks,
triggers and history. Each result is checked against what REST says."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import INCIDENT, INCIDENT_SCHEMA, Server, unique
from tests.test_mcp import call, failure, mcp_http


async def test_agent_tour_of_every_tool(
    server: Server, admin_key: str, api: httpx.AsyncClient
) -> None:
    ws = unique()
    async with mcp_http(server.url, admin_key) as agent:
        await call(agent, "manage_workspace", action="create", workspace_id=ws)
        await call(
            agent,
            "manage_collection",
            action="upsert",
            workspace_id=ws,
            collection="incidents",
            json_schema=INCIDENT_SCHEMA,
        )
        await call(
            agent,
            "manage_collection",
            action="upsert",
            workspace_id=ws,
            collection="services",
            json_schema={"type": "object"},
        )
        ids = []
        for sev in ("p0", "p1", "p1", "p3"):
            rec = await call(
                agent,
                "manage_record",
                action="upsert",
                workspace_id=ws,
                collection="incidents",
                data={**INCIDENT, "severity": sev},
            )
            ids.append(rec["id"])

        # query_records: query and aggregate agree with REST.
        flt = {"field": "data.severity", "op": "in", "value": ["p0", "p1"]}
        got = await call(
            agent,
            "query_records",
            workspace_id=ws,
            collection="incidents",
            filter=flt,
            sort=[{"field": "data.severity", "direction": "asc"}],
        )
        rest = await api.post(
            f"/v1/{ws}/collections/incidents/records/query",
            json={"filter": flt, "sort": [{"field": "data.severity", "direction": "asc"}]},
        )
        assert got == rest.json()
        assert [r["data"]["severity"] for r in got["data"]] == ["p0", "p1", "p1"]
        agg = await call(
            agent,
            "query_records",
            action="aggregate",
            workspace_id=ws,
            collection="incidents",
            group_by=["data.severity"],
            aggregations=[{"fn": "count", "alias": "n"}],
        )
        counts = {row["data.severity"]: row["n"] for row in agg["data"]}
        assert counts == {"p0": 1, "p1": 2, "p3": 1}
        err = await failure(
            agent,
            "query_records",
            workspace_id=ws,
            collection="incidents",
            filter={"field": "data.severity", "op": "nope", "value": 1},
        )
        assert err.code == "VALIDATION_ERROR"

        # Batch: a service and an edge to it in one atomic call.
        out = await call(
            agent,
            "batch_operations",
            workspace_id=ws,
            operations=[
                {
                    "type": "upsert_record",
                    "collection": "services",
                    "data": {"name": "api"},
                    "external_id": "svc-api",
                },
                {
                    "type": "upsert_relationship",
                    "rel_type": "affects",
                    "source_collection": "incidents",
                    "source_id": ids[0],
                    "target_collection": "services",
                    "target_id": "svc-api",
                },
            ],
        )
        assert len(out["data"]) == 2
        service_id = out["data"][0]["result"]["id"]

        # Relationships and traversal.
        edge = await call(
            agent,
            "manage_relationship",
            action="upsert",
            workspace_id=ws,
            type="affects",
            source=f"incidents/{ids[1]}",
            target={"collection": "services", "external_id": "svc-api"},
        )
        listed = await call(
            agent, "manage_relationship", action="list", workspace_id=ws, type="affects"
        )
        assert len(listed["data"]) == 2
        related = await call(
            agent,
            "query_relationships",
            workspace_id=ws,
            collection="services",
            record_id=service_id,
            direction="incoming",
        )
        assert sorted(r["record"]["id"] for r in related["data"]) == sorted(ids[:2])
        await call(agent, "manage_relationship", action="delete", workspace_id=ws, id=edge["id"])

        # Attachments: presigned upload, real PUT to S3, complete, download URL, list, delete.
        up = await call(
            agent,
            "manage_attachment",
            action="upload",
            workspace_id=ws,
            collection="incidents",
            record_id=ids[0],
            filename="docs/runbook.md",
            content_type="text/markdown",
        )
        async with httpx.AsyncClient() as s3:
            put = await s3.request(
                up["method"], up["upload_url"], headers=up["headers"], content=b"# Runbook\n"
            )
            assert put.status_code == 200, put.text
            done = await call(
                agent,
                "manage_attachment",
                action="complete",
                workspace_id=ws,
                collection="incidents",
                record_id=ids[0],
                filename="docs/runbook.md",
            )
            assert done["size"] == 10
            link = await call(
                agent,
                "manage_attachment",
                action="get_url",
                workspace_id=ws,
                collection="incidents",
                record_id=ids[0],
                filename="docs/runbook.md",
            )
            assert (await s3.get(link["url"])).content == b"# Runbook\n"
        files = await call(
            agent,
            "manage_attachment",
            action="list",
            workspace_id=ws,
            collection="incidents",
            record_id=ids[0],
            prefix="docs/",
        )
        assert [f["filename"] for f in files["data"]] == ["docs/runbook.md"]
        await call(
            agent,
            "manage_attachment",
            action="delete",
            workspace_id=ws,
            collection="incidents",
            record_id=ids[0],
            filename="docs/runbook.md",
        )
        err = await failure(
            agent,
            "manage_attachment",
            action="upload",
            workspace_id=ws,
            collection="incidents",
            record_id=ids[0],
            filename="../etc/passwd",
            content_type="text/plain",
        )
        assert err.code == "VALIDATION_ERROR"

        # Hooks and triggers (configuration through MCP; delivery is covered elsewhere).
        hook = await call(
            agent,
            "manage_hook",
            action="create",
            workspace_id=ws,
            name="pagerduty",
            collection="incidents",
        )
        assert hook["ingest_url"].endswith(f"/hooks/{hook['id']}/ingest")
        hooks = await call(agent, "manage_hook", action="list", workspace_id=ws)
        assert [h["id"] for h in hooks["data"]] == [hook["id"]]
        trig = await call(
            agent,
            "manage_trigger",
            action="create",
            workspace_id=ws,
            name="Notify on P1",
            collection="incidents",
            url="http://127.0.0.1:9/hook",
            events=["create", "update"],
        )
        assert trig["secret"].startswith("whsec_")
        got_trig: dict[str, Any] = await call(
            agent, "manage_trigger", action="get", workspace_id=ws, id=trig["id"]
        )
        assert "secret" not in got_trig or got_trig["secret"] is None
        err = await failure(
            agent,
            "manage_trigger",
            action="create",
            workspace_id=ws,
            name="bad",
            url="http://169.254.169.254/latest",
            events=["create"],
        )
        assert err.code == "VALIDATION_ERROR"

        # History of the whole workspace log.
        log = await call(agent, "get_history", action="events", workspace_id=ws, limit=1000)
        types = {e["type"] for e in log["data"]}
        assert {"record.created", "relationship.created", "attachment.added"} <= types
