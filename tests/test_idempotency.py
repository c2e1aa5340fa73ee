"""Idempotency-Key through REST: replay without a second write, conflicting reuse, scoping per
API key and workspace, expiry after 24 hours, and concurrent duplicates writing once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import INCIDENT, INCIDENT_SCHEMA, unique


async def _head(api: httpx.AsyncClient, ws: str) -> int:
    return (await api.get(f"/v1/workspaces/{ws}")).json()["head_seq"]


async def _incidents(api: httpx.AsyncClient) -> str:
    ws = unique()
    assert (await api.post("/v1/workspaces", json={"id": ws})).status_code == 201
    r = await api.put(f"/v1/{ws}/collections/incidents", json={"json_schema": INCIDENT_SCHEMA})
    assert r.status_code == 201
    return ws


async def _count(api: httpx.AsyncClient, ws: str) -> int:
    r = await api.get(f"/v1/{ws}/collections/incidents/records", params={"limit": 1000})
    return len(r.json()["data"])


def _key(k: str) -> dict[str, str]:
    return {"Idempotency-Key": k}


async def test_retry_replays_the_first_response(api: httpx.AsyncClient) -> None:
    ws = await _incidents(api)
    records = f"/v1/{ws}/collections/incidents/records"
    key = unique("key")
    first = await api.post(records, json={"data": INCIDENT}, headers=_key(key))
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    head = await _head(api, ws)

    again = await api.post(records, json={"data": INCIDENT}, headers=_key(key))
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"].startswith("application/json")
    assert await _head(api, ws) == head and await _count(api, ws) == 1
    log = (await api.get(f"/v1/{ws}/events", params={"record_id": first.json()["id"]})).json()
    assert [e["metadata"].get("idempotency_key") for e in log["data"]] == [key]

    # Same key, different body (or path, or method): a conflict, nothing written.
    r = await api.post(records, json={"data": {**INCIDENT, "severity": "p0"}}, headers=_key(key))
    assert r.status_code == 409 and r.json()["error"]["code"] == "CONFLICT"
    assert "different request" in r.json()["error"]["message"]
    r = await api.put(f"/v1/{ws}/collections/other", json={"json_schema": {}}, headers=_key(key))
    assert r.status_code == 409
    assert await _head(api, ws) == head

    # Without a key every POST writes: the key is what makes a retry safe.
    await api.post(records, json={"data": INCIDENT})
    assert await _count(api, ws) == 2


async def test_every_write_method_and_final_errors(api: httpx.AsyncClient) -> None:
    ws = await _incidents(api)
    records = f"/v1/{ws}/collections/incidents/records"
    rec = (await api.post(records, json={"data": INCIDENT})).json()
    url = f"{records}/{rec['id']}"

    patch_key = unique("patch")
    r1 = await api.patch(url, json={"data": {"status": "resolved"}}, headers=_key(patch_key))
    r2 = await api.patch(url, json={"data": {"status": "resolved"}}, headers=_key(patch_key))
    assert r1.status_code == r2.status_code == 200 and r1.json() == r2.json()
    assert r2.json()["version"] == 2

    # A final 4xx is stored too: the retry gets the same answer, even after the cause is gone.
    bad_key = unique("bad")
    bad = {"data": {**INCIDENT, "severity": "p9"}}
    r1 = await api.post(records, json=bad, headers=_key(bad_key))
    assert r1.status_code == 422
    r2 = await api.post(records, json=bad, headers=_key(bad_key))
    assert r2.status_code == 422 and r2.json() == r1.json()
    assert r2.headers["idempotent-replayed"] == "true"

    delete_key = unique("del")
    r1 = await api.delete(url, headers=_key(delete_key))
    assert r1.status_code == 200
    r2 = await api.delete(url, headers=_key(delete_key))
    assert r2.status_code == 200 and r2.json() == r1.json()  # not a 404: the first answer
    assert (await api.delete(url)).status_code == 404

    batch_key = unique("batch")
    ops = {"operations": [{"type": "upsert_record", "collection": "incidents", "data": INCIDENT}]}
    r1 = await api.post(f"/v1/{ws}/batch", json=ops, headers=_key(batch_key))
    r2 = await api.post(f"/v1/{ws}/batch", json=ops, headers=_key(batch_key))
    assert r1.status_code == r2.status_code == 200 and r1.json() == r2.json()
    assert await _count(api, ws) == 1

    # Key length is bounded; an oversized key writes nothing.
    head = await _head(api, ws)
    r = await api.post(records, json={"data": INCIDENT}, headers=_key("k" * 256))
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert "255" in r.json()["error"]["message"]
    assert await _head(api, ws) == head
    assert (await api.post(records, json={"data": INCIDENT}, headers=_key("k" * 255))).is_success

    # Unauthenticated requests are refused as usual, key or not.
    async with httpx.AsyncClient(base_url=str(api.base_url)) as anon:
        r = await anon.post(records, json={"data": INCIDENT}, headers=_key(unique()))
        assert r.status_code == 401


async def test_keys_are_scoped_per_api_key_and_workspace(
    api: httpx.AsyncClient, server: Any
) -> None:
    ws1, ws2 = await _incidents(api), await _incidents(api)
    key = unique("shared")
    body = {"data": INCIDENT}
    a = await api.post(f"/v1/{ws1}/collections/incidents/records", json=body, headers=_key(key))
    b = await api.post(f"/v1/{ws2}/collections/incidents/records", json=body, headers=_key(key))
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]

    created = await api.post(
        "/v1/api-keys", json={"name": "agent", "permissions": ["write"], "workspaces": [ws1]}
    )
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {created.json()['key']}"}
    ) as agent:
        c = await agent.post(
            f"/v1/{ws1}/collections/incidents/records", json=body, headers=_key(key)
        )
        assert c.status_code == 201 and c.json()["id"] != a.json()["id"]
        assert "idempotent-replayed" not in c.headers
    assert await _count(api, ws1) == 2


async def test_keys_expire_after_24_hours(api: httpx.AsyncClient, service: Any) -> None:
    ws = await _incidents(api)
    records = f"/v1/{ws}/collections/incidents/records"
    key = unique("old")
    first = await api.post(records, json={"data": INCIDENT}, headers=_key(key))
    async with service.connection() as conn:
        await conn.execute(
            "UPDATE idempotency_keys SET created_at = created_at - interval '23 hours'"
            " WHERE key = %s",
            (key,),
        )
    r = await api.post(records, json={"data": INCIDENT}, headers=_key(key))
    assert r.headers.get("idempotent-replayed") == "true" and r.json() == first.json()
    async with service.connection() as conn:
        await conn.execute(
            "UPDATE idempotency_keys SET created_at = created_at - interval '2 hours'"
            " WHERE key = %s",
            (key,),
        )
    # Past 24 hours the key is free again: even a different body runs as a new request.
    r = await api.post(records, json={"data": {**INCIDENT, "severity": "p0"}}, headers=_key(key))
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers
    assert await _count(api, ws) == 2


async def test_concurrent_duplicates_write_once(api: httpx.AsyncClient) -> None:
    ws = await _incidents(api)
    records = f"/v1/{ws}/collections/incidents/records"
    head = await _head(api, ws)
    for round_ in range(3):
        key = unique(f"race{round_}")
        results = await asyncio.gather(
            *(api.post(records, json={"data": INCIDENT}, headers=_key(key)) for _ in range(10))
        )
        assert [r.status_code for r in results] == [201] * 10, [r.text for r in results]
        assert len({r.json()["id"] for r in results}) == 1
        assert sum(r.headers.get("idempotent-replayed") == "true" for r in results) == 9
    assert await _count(api, ws) == 3
    assert await _head(api, ws) == head + 3


async def test_documented_in_openapi(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/schema/openapi.json")).json()
    assert "Idempotency-Key" in spec["info"]["description"]
    ops = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {
        "upsertRelationship",
        "listRelationships",
        "getRelationship",
        "deleteRelationship",
        "relatedRecords",
        "batch",
    } <= ops
    related = spec["paths"]["/v1/{ws}/collections/{collection}/records/{record_id}/related"]
    assert "cycles" in related["get"]["description"]


async def test_abandoned_claims_are_taken_over(api: httpx.AsyncClient, service: Any) -> None:
    # A server killed between claiming a key and storing the response leaves the claim
    # "in progress". A different request with the key is refused at once; the same request is
    # taken over once the claim is stale (it runs again: the documented window).
    ws = await _incidents(api)
    records = f"/v1/{ws}/collections/incidents/records"
    key = unique("crash")
    await api.post(records, json={"data": INCIDENT}, headers=_key(key))

    async def mark(age: str) -> None:
        async with service.connection() as conn:
            await conn.execute(
                "UPDATE idempotency_keys SET state = 'in_progress', status = NULL, body = NULL,"
                f" created_at = now() - interval '{age}' WHERE key = %s",
                (key,),
            )

    await mark("0 seconds")
    r = await api.post(records, json={"data": {**INCIDENT, "status": "open"}}, headers=_key(key))
    assert r.status_code == 409
    await mark("2 minutes")
    r = await api.post(records, json={"data": INCIDENT}, headers=_key(key))
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers
    again = await api.post(records, json={"data": INCIDENT}, headers=_key(key))
    assert again.headers["idempotent-replayed"] == "true" and again.json() == r.json()
    assert await _count(api, ws) == 2
