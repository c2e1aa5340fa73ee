"""The foundation through REST: the seed example, time travel, history, and bad input."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.conftest import INCIDENT, INCIDENT_SCHEMA, unique


async def _head(api: httpx.AsyncClient, ws: str) -> int:
    return (await api.get(f"/v1/workspaces/{ws}")).json()["head_seq"]


async def test_seed_example(api: httpx.AsyncClient) -> None:
    ws = unique("ws_ops")
    r = await api.post("/v1/workspaces", json={"id": ws, "name": "Ops"})
    assert r.status_code == 201, r.text
    assert r.json()["seq"] == 1

    r = await api.put(f"/v1/{ws}/collections/incidents", json={"json_schema": INCIDENT_SCHEMA})
    assert r.status_code == 201, r.text
    body = r.json()
    assert {k: body[k] for k in ("id", "name", "version")} == {
        "id": "incidents",
        "name": "incidents",
        "version": 1,
    }
    # The same schema again: no new version, no event.
    head = await _head(api, ws)
    r = await api.put(f"/v1/{ws}/collections/incidents", json={"json_schema": INCIDENT_SCHEMA})
    assert r.status_code == 200 and r.json()["version"] == 1
    assert await _head(api, ws) == head

    upsert = {"external_id": "INC-2847", "external_source": "pagerduty", "data": INCIDENT}
    r = await api.post(f"/v1/{ws}/collections/incidents/records", json=upsert)
    assert r.status_code == 201, r.text
    first = r.json()
    assert uuid.UUID(first["id"]).version == 7
    assert first["external_id"] == "INC-2847" and first["version"] == 1

    head = await _head(api, ws)
    r = await api.post(f"/v1/{ws}/collections/incidents/records", json=upsert)
    assert r.status_code == 200
    assert (r.json()["id"], r.json()["version"]) == (first["id"], 1)
    assert await _head(api, ws) == head, "an unchanged upsert must append nothing"

    changed = {**upsert, "data": {**INCIDENT, "status": "resolved"}}
    r = await api.post(f"/v1/{ws}/collections/incidents/records", json=changed)
    assert r.status_code == 200
    second = r.json()
    assert (second["id"], second["version"]) == (first["id"], 2)
    assert second["seq"] > first["seq"]

    # Time travel and history.
    url = f"/v1/{ws}/collections/incidents/records/{first['id']}"
    assert (await api.get(url, params={"as_of": first["seq"]})).json()["data"]["status"] == (
        "investigating"
    )
    assert (await api.get(url)).json()["data"]["status"] == "resolved"
    hist = (await api.get(url + "/history")).json()["data"]
    assert [h["version"] for h in hist] == [1, 2]
    assert hist[1]["diff"] == [
        {"op": "replace", "path": "/status", "value": "resolved", "old_value": "investigating"}
    ]
    assert hist[0]["actor"] == "test admin"


async def test_patch_expected_version_delete(api: httpx.AsyncClient) -> None:
    ws = unique()
    await api.post("/v1/workspaces", json={"id": ws})
    await api.put(f"/v1/{ws}/collections/incidents", json={"json_schema": INCIDENT_SCHEMA})
    rec = (
        await api.post(f"/v1/{ws}/collections/incidents/records", json={"data": INCIDENT})
    ).json()
    url = f"/v1/{ws}/collections/incidents/records/{rec['id']}"

    r = await api.patch(url, json={"data": {"assignee": None, "status": "resolved"}})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    assert "assignee" not in r.json()["data"]

    r = await api.patch(url, json={"data": {"status": "open"}, "expected_version": 1})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "CONFLICT"
    assert r.json()["error"]["details"] == {"expected_version": 1, "actual_version": 2}

    r = await api.patch(url, json={"data": {"severity": "p9"}})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["path"] == "$.data.severity"
    assert (await api.get(url)).json()["version"] == 2

    r = await api.delete(url)
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert (await api.get(url)).status_code == 404
    assert (await api.get(url, params={"as_of": rec["seq"]})).json()["version"] == 1
    hist = (await api.get(url + "/history")).json()["data"]
    assert [h["event"] for h in hist] == ["record.created", "record.updated", "record.deleted"]


async def test_schema_change_refused_when_records_would_break(api: httpx.AsyncClient) -> None:
    ws = unique()
    await api.post("/v1/workspaces", json={"id": ws})
    await api.put(f"/v1/{ws}/collections/incidents", json={"json_schema": INCIDENT_SCHEMA})
    rec = (
        await api.post(f"/v1/{ws}/collections/incidents/records", json={"data": INCIDENT})
    ).json()
    stricter = {**INCIDENT_SCHEMA, "required": [*INCIDENT_SCHEMA["required"], "team"]}
    r = await api.put(f"/v1/{ws}/collections/incidents", json={"json_schema": stricter})
    assert r.status_code == 422
    assert r.json()["error"]["details"]["failing_record_ids"] == [rec["id"]]
    assert (await api.get(f"/v1/{ws}/collections/incidents")).json()["version"] == 1
    looser = {**INCIDENT_SCHEMA, "required": ["title"]}
    r = await api.put(f"/v1/{ws}/collections/incidents", json={"json_schema": looser})
    assert r.status_code == 200 and r.json()["version"] == 2


async def _assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert err["message"]
    return err


async def test_bad_input_changes_nothing(api: httpx.AsyncClient, server: Any) -> None:
    ws = unique()
    await api.post("/v1/workspaces", json={"id": ws})
    await api.put(f"/v1/{ws}/collections/incidents", json={"json_schema": INCIDENT_SCHEMA})
    head = await _head(api, ws)
    records = f"/v1/{ws}/collections/incidents/records"

    await _assert_error(
        await api.post(
            records, content=b'{"data": {', headers={"content-type": "application/json"}
        ),
        400,
        "VALIDATION_ERROR",
    )
    await _assert_error(
        await api.post(records, content=b"x" * (3 * 1024 * 1024)), 413, "PAYLOAD_TOO_LARGE"
    )
    err = await _assert_error(
        await api.post(records, json={"data": {"title": 1, "severity": "p7"}}),
        422,
        "VALIDATION_ERROR",
    )
    assert {d["path"] for d in err["details"]} == {"$.data", "$.data.severity", "$.data.title"}
    await _assert_error(
        await api.put(f"/v1/{ws}/collections/bad", json={"json_schema": {"type": "nonsense"}}),
        422,
        "VALIDATION_ERROR",
    )
    await _assert_error(
        await api.put(f"/v1/{ws}/collections/Bad Name", json={"json_schema": {}}),
        422,
        "VALIDATION_ERROR",
    )
    await _assert_error(
        await api.post("/v1/workspaces", json={"id": "a--b"}), 422, "VALIDATION_ERROR"
    )
    await _assert_error(await api.get(f"/v1/{unique()}/collections"), 404, "NOT_FOUND")
    await _assert_error(await api.get(f"/v1/{ws}/collections/nope"), 404, "NOT_FOUND")
    await _assert_error(await api.get(f"{records}/{uuid.uuid4()}"), 404, "NOT_FOUND")
    await _assert_error(await api.get(f"{records}/not-a-uuid"), 422, "VALIDATION_ERROR")
    await _assert_error(
        await api.post(records, json={"data": INCIDENT, "expected_version": 3}), 409, "CONFLICT"
    )
    await _assert_error(
        await api.post(records, json={"data": INCIDENT, "surprise": 1}), 400, "VALIDATION_ERROR"
    )
    await _assert_error(
        await api.post(records, json={"data": INCIDENT, "id": "nope"}), 422, "VALIDATION_ERROR"
    )
    await _assert_error(
        await api.post(f"/v1/{ws}/collections/nope/records", json={"data": {}}), 404, "NOT_FOUND"
    )
    await _assert_error(await api.get(f"{records}?limit=0"), 422, "VALIDATION_ERROR")
    await _assert_error(await api.get(f"{records}?cursor=garbage!!"), 422, "VALIDATION_ERROR")
    assert await _head(api, ws) == head
    assert (await api.get(records)).json()["data"] == []


async def test_api_keys_scope_and_revocation(api: httpx.AsyncClient, server: Any) -> None:
    mine, other = unique(), unique()
    for w in (mine, other):
        await api.post("/v1/workspaces", json={"id": w})
    r = await api.post(
        "/v1/api-keys",
        json={"name": "agent", "permissions": ["read", "write"], "workspaces": [mine]},
    )
    assert r.status_code == 201
    key = r.json()
    assert key["key"].startswith("rk_")
    listed = (await api.get("/v1/api-keys")).json()["data"]
    assert all("key" not in k for k in listed)

    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {key['key']}"}
    ) as agent:
        assert (await agent.get(f"/v1/{mine}/collections")).status_code == 200
        await _assert_error(await agent.get(f"/v1/{other}/collections"), 403, "FORBIDDEN")
        await _assert_error(
            await agent.post("/v1/workspaces", json={"id": unique()}), 403, "FORBIDDEN"
        )
        await _assert_error(await agent.delete(f"/v1/workspaces/{mine}"), 403, "FORBIDDEN")
        seen = [w["id"] for w in (await agent.get("/v1/workspaces")).json()["data"]]
        assert seen == [mine]
        assert (await api.delete(f"/v1/api-keys/{key['id']}")).status_code == 200
        # Revocation is immediate in the process that revoked it (single-process server).
        await _assert_error(await agent.get(f"/v1/{mine}/collections"), 401, "UNAUTHORIZED")
    async with httpx.AsyncClient(base_url=server.url) as anon:
        await _assert_error(await anon.get("/v1/workspaces"), 401, "UNAUTHORIZED")
        r = await anon.get("/v1/workspaces", headers={"Authorization": "Bearer rk_wrong"})
        await _assert_error(r, 401, "UNAUTHORIZED")


async def test_openapi_and_health(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health")).json()["status"] == "ok"
    spec = (await api.get("/schema/openapi.json")).json()
    op = spec["paths"]["/v1/{ws}/collections/{collection}/records"]["post"]
    assert op["operationId"] == "upsertRecord"
    assert "external_id" in op["description"]


async def test_list_records_pages_with_cursors(api: httpx.AsyncClient) -> None:
    ws = unique()
    await api.post("/v1/workspaces", json={"id": ws})
    await api.put(f"/v1/{ws}/collections/incidents", json={"json_schema": INCIDENT_SCHEMA})
    made = [
        (await api.post(f"/v1/{ws}/collections/incidents/records", json={"data": INCIDENT})).json()[
            "id"
        ]
        for _ in range(5)
    ]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        body = (await api.get(f"/v1/{ws}/collections/incidents/records", params=params)).json()
        assert body["meta"]["limit"] == 2 and len(body["data"]) <= 2
        seen += [r["id"] for r in body["data"]]
        if body["meta"]["next_cursor"] is None:
            break
        params["cursor"] = body["meta"]["next_cursor"]
    assert seen == sorted(made), "every record once, in creation (UUIDv7) order"
    await api.post("/v1/workspaces", json={"id": unique()})  # at least two to page through
    first = (await api.get("/v1/workspaces", params={"limit": 1})).json()
    assert len(first["data"]) == 1 and first["meta"]["next_cursor"]
    second = await api.get(
        "/v1/workspaces", params={"limit": 1, "cursor": first["meta"]["next_cursor"]}
    )
    assert second.json()["data"][0]["id"] > first["data"][0]["id"]
