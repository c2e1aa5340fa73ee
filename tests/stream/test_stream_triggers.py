"""Outbound triggers through REST against a real server, real NATS and a real HTTP receiver:
signing, body shape, filters, retries, dead letters, redelivery, replay and the SSRF guard."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import httpx

from tests.stream.conftest import Receiver, eventually, make_workspace


def verify_signature(secret: str, request: dict[str, Any]) -> bool:
    h = request["headers"]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + request["body"]
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return h["webhook-signature"] == f"v1,{expected}"


async def _trigger(api: httpx.AsyncClient, ws: str, url: str, **extra: Any) -> dict[str, Any]:
    body = {"name": "t", "url": url, "events": ["create", "update", "delete"], **extra}
    r = await api.post(f"/v1/{ws}/triggers", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def test_delivery_signed_with_body_and_previous(
    sapi: httpx.AsyncClient, receiver: Receiver
) -> None:
    ws = await make_workspace(sapi)
    trig = await _trigger(
        sapi,
        ws,
        receiver.url,
        collection="incidents",
        filter={"field": "data.severity", "op": "in", "value": ["p0", "p1"]},
    )
    assert trig["secret"].startswith("whsec_")
    listed = (await sapi.get(f"/v1/{ws}/triggers/{trig['id']}")).json()
    assert "secret" not in listed and listed["url"] == receiver.url

    recs = f"/v1/{ws}/collections/incidents/records"
    low = (await sapi.post(recs, json={"data": {"title": "low", "severity": "p3"}})).json()
    first = (await sapi.post(recs, json={"data": {"title": "a", "severity": "p1"}})).json()
    r = await sapi.patch(f"{recs}/{first['id']}", json={"data": {"status": "resolved"}})
    assert r.status_code == 200
    r = await sapi.delete(f"{recs}/{first['id']}")
    assert r.status_code == 200

    await eventually(lambda: _count(receiver, 3))
    bodies = receiver.json_bodies()
    assert [b["type"] for b in bodies] == ["record.created", "record.updated", "record.deleted"]
    assert all(b["record"]["id"] == first["id"] for b in bodies), "p3 record must be filtered"
    assert low["id"] not in {b["record"]["id"] for b in bodies}
    created, updated, deleted = bodies
    assert created["workspace"] == ws and created["collection"] == "incidents"
    assert created["seq"] == first["seq"] and "previous" not in created
    assert updated["record"]["data"]["status"] == "resolved"
    assert updated["previous"]["data"] == {"title": "a", "severity": "p1"}
    assert deleted["record"]["deleted"] is True
    assert deleted["previous"]["data"]["status"] == "resolved"
    for req, body in zip(receiver.requests, bodies, strict=True):
        assert req["headers"]["webhook-id"] == body["id"]
        assert verify_signature(trig["secret"], req)

    log = (await sapi.get(f"/v1/{ws}/triggers/{trig['id']}/deliveries")).json()
    assert [d["status"] for d in log["data"]] == ["delivered"] * 3
    assert all(d["attempts"] == 1 and d["latency_ms"] > 0 for d in log["data"])


async def _count(receiver: Receiver, n: int) -> bool:
    return len(receiver.requests) >= n
