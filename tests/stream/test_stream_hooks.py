"""Inbound hooks through REST: durable-first ingest without an API key, mapping to record
upserts (idempotent by external id), failures with schema errors, signature / size / JSON
rejections recorded as receipts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import pytest

from commands.principal import SYSTEM
from events.errors import NotFound
from tests.conftest import INCIDENT_SCHEMA
from tests.stream.conftest import eventually, make_workspace

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def signed_headers(secret: str, body: bytes, msg_id: str = "msg_1") -> dict[str, str]:
    ts = str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


async def _hook(api: httpx.AsyncClient, ws: str, **extra: Any) -> dict[str, Any]:
    body = {"name": "pagerduty", "collection": "incidents", "external_id_path": "/incident/id"}
    r = await api.post(f"/v1/{ws}/hooks", json={**body, **extra})
    assert r.status_code == 201, r.text
    return r.json()


async def _receipts(api: httpx.AsyncClient, ws: str, hook_id: str) -> list[dict[str, Any]]:
    r = await api.get(f"/v1/{ws}/hooks/{hook_id}/receipts")
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def _all_final(api: httpx.AsyncClient, ws: str, hook_id: str, n: int) -> Any:
    rows = await _receipts(api, ws, hook_id)
    return rows if len(rows) == n and all(r["status"] != "received" for r in rows) else None


def _payload(key: str, **data: Any) -> dict[str, Any]:
    return {"incident": {"id": key}, "title": "disk full", "severity": "p2", **data}


SCHEMA_WITH_INCIDENT = {
    "type": "object",
    "required": ["title", "severity"],
    "properties": {
        "title": {"type": "string"},
        "severity": {"enum": ["p0", "p1", "p2", "p3"]},
        "incident": {"type": "object"},
    },
}


async def test_ingest_applies_idempotently_by_external_id(sapi: httpx.AsyncClient) -> None:
    ws = await make_workspace(sapi)
    hook = await _hook(sapi, ws, external_source="pagerduty")
    assert hook["id"].startswith("hk_") and len(hook["id"]) >= 27
    assert hook["ingest_url"] == f"/v1/{ws}/hooks/{hook['id']}/ingest"

    async with httpx.AsyncClient(base_url=str(sapi.base_url)) as anon:  # no API key
        r1 = await anon.post(hook["ingest_url"], json=_payload("PD-1"))
        assert r1.status_code == 202, r1.text
        assert r1.json()["receipt_id"]
        r2 = await anon.post(hook["ingest_url"], json=_payload("PD-1", severity="p1"))
        r3 = await anon.post(hook["ingest_url"], json=_payload("PD-2"))
        assert r2.status_code == r3.status_code == 202

    rows = await eventually(lambda: _all_final(sapi, ws, hook["id"], 3))
    assert [r["status"] for r in rows] == ["applied"] * 3
    by_receipt = {r["id"]: r for r in rows}
    first = by_receipt[r1.json()["receipt_id"]]
    assert first["record_id"] == by_receipt[r2.json()["receipt_id"]]["record_id"]
    assert first["record_id"] != by_receipt[r3.json()["receipt_id"]]["record_id"]

    rec = await sapi.get(f"/v1/{ws}/collections/incidents/records/{first['record_id']}")
    body = rec.json()
    assert body["external_id"] == "PD-1" and body["external_source"] == "pagerduty"
    assert body["data"]["severity"] == "p1" and body["version"] == 2
    history = (
        await sapi.get(f"/v1/{ws}/collections/incidents/records/{first['record_id']}/history")
    ).json()["data"]
    assert history[0]["actor"] == f"hook:{hook['id']}"
    got = (await sapi.get(f"/v1/{ws}/hooks/{hook['id']}")).json()
    assert got["receipts"] == {"applied": 3} and "secret" not in got


async def test_failed_payload_keeps_schema_errors(sapi: httpx.AsyncClient) -> None:
    ws = await make_workspace(sapi)
    hook = await _hook(sapi, ws)
    async with httpx.AsyncClient(base_url=str(sapi.base_url)) as anon:
        bad = await anon.post(hook["ingest_url"], json=_payload("X", severity="urgent"))
        no_key = await anon.post(hook["ingest_url"], json={"title": "t", "severity": "p1"})
        not_obj = await anon.post(hook["ingest_url"], json=[1, 2])
    assert bad.status_code == no_key.status_code == not_obj.status_code == 202
    rows = await eventually(lambda: _all_final(sapi, ws, hook["id"], 3))
    by_receipt = {r["id"]: r for r in rows}
    schema = by_receipt[bad.json()["receipt_id"]]
    assert schema["status"] == "failed" and schema["error"]["code"] == "VALIDATION_ERROR"
    assert any(d.get("path") == "$.data.severity" for d in schema["error"]["details"])
    missing = by_receipt[no_key.json()["receipt_id"]]["error"]
    assert "external_id_path" in missing["message"]
    assert by_receipt[not_obj.json()["receipt_id"]]["error"]["code"] == "VALIDATION_ERROR"
    listed = await sapi.get(f"/v1/{ws}/collections/incidents/records")
    assert listed.json()["data"] == []


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda: (b"{not json", {"content-type": "application/json"}), 400, "VALIDATION_ERROR"),
        (
            lambda: (json.dumps({"pad": "x" * 70_000}).encode(), {}),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
    ],
)
async def test_rejections_are_recorded(
    sapi: httpx.AsyncClient, make: Any, status: int, code: str
) -> None:
    ws = await make_workspace(sapi)
    hook = await _hook(sapi, ws)
    body, headers = make()
    async with httpx.AsyncClient(base_url=str(sapi.base_url)) as anon:
        r = await anon.post(hook["ingest_url"], content=body, headers=headers)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    receipt_id = err["details"][-1]["receipt_id"]
    rows = await _receipts(sapi, ws, hook["id"])
    assert [(x["id"], x["status"], x["http_status"]) for x in rows] == [
        (receipt_id, "rejected", status)
    ]


async def test_signed_hook(sapi: httpx.AsyncClient) -> None:
    ws = await make_workspace(sapi)
    hook = await _hook(sapi, ws, secret=SECRET)
    assert hook["signed"] is True
    body = json.dumps(_payload("S-1")).encode()
    async with httpx.AsyncClient(base_url=str(sapi.base_url)) as anon:
        unsigned = await anon.post(hook["ingest_url"], content=body)
        assert unsigned.status_code == 401
        assert unsigned.json()["error"]["code"] == "UNAUTHORIZED"
        wrong = signed_headers("whsec_" + base64.b64encode(b"another-secret-123").decode(), body)
        assert (await anon.post(hook["ingest_url"], content=body, headers=wrong)).status_code == 401
        tampered = signed_headers(SECRET, body)
        r = await anon.post(hook["ingest_url"], content=body + b" ", headers=tampered)
        assert r.status_code == 401
        ok = await anon.post(hook["ingest_url"], content=body, headers=signed_headers(SECRET, body))
        assert ok.status_code == 202, ok.text
    rows = await eventually(lambda: _all_final(sapi, ws, hook["id"], 4))
    assert sorted(r["status"] for r in rows) == ["applied", "rejected", "rejected", "rejected"]


async def test_unknown_or_deleted_hook_and_bad_config(sapi: httpx.AsyncClient) -> None:
    ws = await make_workspace(sapi)
    hook = await _hook(sapi, ws)
    async with httpx.AsyncClient(base_url=str(sapi.base_url)) as anon:
        r = await anon.post(f"/v1/{ws}/hooks/hk_guess/ingest", json={})
        assert r.status_code == 404
        assert (await sapi.delete(f"/v1/{ws}/hooks/{hook['id']}")).status_code == 200
        r = await anon.post(hook["ingest_url"], json=_payload("Z"))
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    for body, path in [
        ({"name": "h", "collection": "nope"}, "$.collection"),
        ({"name": "h", "collection": "incidents", "external_id_path": "id"}, "$.external_id_path"),
        ({"name": "h", "collection": "incidents", "secret": "short"}, "$.secret"),
        ({"name": "h", "collection": "incidents", "surprise": 1}, "$.surprise"),
    ]:
        r = await sapi.post(f"/v1/{ws}/hooks", json=body)
        assert r.status_code in (400, 404, 422), r.text
        err = r.json()["error"]
        assert err["details"][0]["path"] == path or path[2:] in err["message"]
    assert (await sapi.get(f"/v1/{ws}/hooks")).json()["data"] == []


async def test_deleted_hook_refuses_payloads_queued_in_the_same_group(
    service: Any, ws: str
) -> None:
    """The hook row is memoised per group transaction: a delete between two payloads of one
    group must still make the second one 404 (and leave no receipt for it)."""
    await service.upsert_collection(SYSTEM, ws, "incidents", INCIDENT_SCHEMA)
    hook = (await service.create_hook(SYSTEM, ws, name="h", collection="incidents")).body
    body = json.dumps({"title": "x", "severity": "p1"}).encode()
    groups_before = service.writer.groups
    first, deleted, second = await asyncio.gather(
        service.ingest_hook_payload(ws, hook["id"], body, {}),
        service.delete_hook(SYSTEM, ws, hook["id"]),
        service.ingest_hook_payload(ws, hook["id"], body, {}),
        return_exceptions=True,
    )
    assert service.writer.groups == groups_before + 1, "the three jobs shared one transaction"
    assert "receipt_id" in first
    assert deleted.body["deleted"] is True
    assert isinstance(second, NotFound)
    async with service.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM events WHERE workspace_id = %s AND type ="
            " 'hook.payload_received'",
            (ws,),
        )
        assert (await cur.fetchone())[0] == 1
