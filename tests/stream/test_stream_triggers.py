"""Outbound triggers through REST against a real server, real NATS and a real HTTP receiver:
signing, body shape, filters, retries, dead letters, redelivery, replay and the SSRF guard."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import httpx
import pytest

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


async def _deliveries(api: httpx.AsyncClient, ws: str, trigger_id: str) -> list[dict[str, Any]]:
    r = await api.get(f"/v1/{ws}/triggers/{trigger_id}/deliveries")
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def _settled(api: httpx.AsyncClient, ws: str, trigger_id: str, status: str) -> Any:
    rows = await _deliveries(api, ws, trigger_id)
    return rows if rows and all(d["status"] == status for d in rows) else None


async def test_retries_until_2xx_then_attempts_is_4(
    sapi: httpx.AsyncClient, receiver: Receiver
) -> None:
    ws = await make_workspace(sapi)
    receiver.plan = [500, 500, 500]
    trig = await _trigger(sapi, ws, receiver.url)
    rec = f"/v1/{ws}/collections/incidents/records"
    await sapi.post(rec, json={"data": {"title": "x", "severity": "p1"}})
    rows = await eventually(lambda: _settled(sapi, ws, trig["id"], "delivered"))
    assert rows[0]["attempts"] == 4 and rows[0]["last_status_code"] == 200
    assert len(receiver.requests) == 4
    # Same message id every attempt; a fresh timestamp and signature each time.
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1
    assert all(verify_signature(trig["secret"], r) for r in receiver.requests)


async def test_dead_letter_then_redeliver(sapi: httpx.AsyncClient, receiver: Receiver) -> None:
    ws = await make_workspace(sapi)
    receiver.default_status = 503
    receiver.retry_after = "0"
    trig = await _trigger(sapi, ws, receiver.url)
    rec = f"/v1/{ws}/collections/incidents/records"
    await sapi.post(rec, json={"data": {"title": "x", "severity": "p1"}})
    rows = await eventually(lambda: _settled(sapi, ws, trig["id"], "dead"))
    assert rows[0]["attempts"] == 4 and rows[0]["last_status_code"] == 503
    assert "503" in rows[0]["last_error"]
    assert len(receiver.requests) == 4

    r = await sapi.post(f"/v1/{ws}/triggers/{trig['id']}/deliveries/{rows[0]['id']}/redeliver")
    assert r.status_code == 200 and r.json()["redelivered"] == 1
    receiver.default_status = 200
    rows = await eventually(lambda: _settled(sapi, ws, trig["id"], "delivered"))
    assert rows[0]["attempts"] == 1 and len(receiver.requests) == 5
    # Redelivering something that is not dead is a conflict and changes nothing.
    r = await sapi.post(f"/v1/{ws}/triggers/{trig['id']}/deliveries/{rows[0]['id']}/redeliver")
    assert r.status_code == 409 and r.json()["error"]["code"] == "CONFLICT"
    got = await sapi.get(f"/v1/{ws}/triggers/{trig['id']}")
    assert got.json()["deliveries"] == {"delivered": 1}


async def test_receiver_down_then_bulk_redeliver(sapi: httpx.AsyncClient) -> None:
    dead = Receiver()  # never started: connection refused
    ws = await make_workspace(sapi)
    trig = await _trigger(sapi, ws, dead.url)
    rec = f"/v1/{ws}/collections/incidents/records"
    for i in range(3):
        await sapi.post(rec, json={"data": {"title": f"x{i}", "severity": "p1"}})
    rows = await eventually(lambda: _settled(sapi, ws, trig["id"], "dead"), deadline_s=30)
    assert len(rows) == 3 and all("Connect" in d["last_error"] for d in rows)
    await dead.start()
    try:
        r = await sapi.post(f"/v1/{ws}/triggers/{trig['id']}/redeliver")
        assert r.json()["redelivered"] == 3
        await eventually(lambda: _settled(sapi, ws, trig["id"], "delivered"))
        assert sorted(b["record"]["data"]["title"] for b in dead.json_bodies()) == [
            "x0",
            "x1",
            "x2",
        ]
    finally:
        await dead.stop()


async def test_per_record_order_with_a_slow_first_attempt(
    sapi: httpx.AsyncClient, receiver: Receiver
) -> None:
    ws = await make_workspace(sapi)
    receiver.plan = [500]  # the first change of the record fails once
    trig = await _trigger(sapi, ws, receiver.url)
    rec = f"/v1/{ws}/collections/incidents/records"
    a = (await sapi.post(rec, json={"data": {"title": "a", "severity": "p1", "n": 0}})).json()
    for n in range(1, 6):
        await sapi.patch(f"{rec}/{a['id']}", json={"data": {"n": n}})
    b = (await sapi.post(rec, json={"data": {"title": "b", "severity": "p1"}})).json()
    await eventually(lambda: _settled(sapi, ws, trig["id"], "delivered"))
    ok = [x for x, r in zip(receiver.json_bodies(), receiver.requests, strict=True)]
    delivered_a = [x["record"]["data"].get("n") for x in ok if x["record"]["id"] == a["id"]]
    # The failed first attempt appears once more; after it, strictly in order.
    assert delivered_a == [0, 0, 1, 2, 3, 4, 5]
    assert any(x["record"]["id"] == b["id"] for x in ok)


async def test_replay_resends_history(sapi: httpx.AsyncClient, receiver: Receiver) -> None:
    ws = await make_workspace(sapi)
    rec = f"/v1/{ws}/collections/incidents/records"
    before = (await sapi.post(rec, json={"data": {"title": "old", "severity": "p1"}})).json()
    trig = await _trigger(sapi, ws, receiver.url, events=["create"])
    r = await sapi.post(f"/v1/{ws}/triggers/{trig['id']}/replay", json={"from_seq": 1})
    assert r.status_code == 202, r.text
    assert r.json()["queued"] == 1
    await eventually(lambda: _count(receiver, 1))
    assert receiver.json_bodies()[0]["record"]["id"] == before["id"]
    rows = await _deliveries(sapi, ws, trig["id"])
    assert rows[0]["replay"] is True and rows[0]["seq"] == before["seq"]
    r = await sapi.post(f"/v1/{ws}/triggers/{trig['id']}/replay", json={"from_seq": 5, "to_seq": 2})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["path"] == "$.to_seq"


async def test_hook_writes_do_not_fire_unless_opted_in(
    sapi: httpx.AsyncClient, receiver: Receiver
) -> None:
    ws = await make_workspace(sapi)
    plain = await _trigger(sapi, ws, receiver.url)
    opted = await _trigger(sapi, ws, receiver.url, include_hook_writes=True)
    hook = (
        await sapi.post(
            f"/v1/{ws}/hooks",
            json={"name": "h", "collection": "incidents", "external_id_path": "/key"},
        )
    ).json()
    async with httpx.AsyncClient(base_url=str(sapi.base_url)) as anon:
        r = await anon.post(
            hook["ingest_url"], json={"key": "K1", "title": "from hook", "severity": "p1"}
        )
        assert r.status_code == 202, r.text
    await eventually(lambda: _settled(sapi, ws, opted["id"], "delivered"))
    assert await _deliveries(sapi, ws, plain["id"]) == []
    body = receiver.json_bodies()[0]
    assert body["record"]["external_id"] == "K1"


@pytest.mark.parametrize(
    ("body", "path", "fragment"),
    [
        ({"url": "ftp://example.com/x"}, "$.url", "http"),
        ({"url": "http://10.1.2.3/x"}, "$.url", "REKOR_EGRESS_ALLOW"),
        ({"url": "http://169.254.169.254/latest"}, "$.url", "metadata"),
        ({"url": "http://[fd00:ec2::254]/"}, "$.url", "private"),
        ({"url": "http://user:pw@example.com/"}, "$.url", "credentials"),
        ({"events": ["created"]}, "$.events", "create"),
        ({"events": []}, "$.events", "create"),
        ({"filter": {"field": "data.x", "op": "nope", "value": 1}}, "$.filter.op", "unknown op"),
        ({"filter": {"field": "secret", "op": "eq", "value": 1}}, "$.filter.field", "data."),
        ({"collection": "nope"}, "$.collection", "create the collection"),
        ({"name": ""}, "$.name", "name"),
    ],
)
async def test_create_trigger_bad_input(
    sapi: httpx.AsyncClient, body: dict[str, Any], path: str, fragment: str
) -> None:
    ws = await make_workspace(sapi)
    head = (await sapi.get(f"/v1/workspaces/{ws}")).json()["head_seq"]
    payload = {"name": "t", "url": "http://127.0.0.1:9/x", "events": ["create"], **body}
    r = await sapi.post(f"/v1/{ws}/triggers", json=payload)
    assert r.status_code in (400, 404, 422), r.text
    err = r.json()["error"]
    assert err["details"][0]["path"] == path
    assert fragment in err["message"]
    assert (await sapi.get(f"/v1/workspaces/{ws}")).json()["head_seq"] == head


async def test_trigger_list_get_delete(sapi: httpx.AsyncClient, receiver: Receiver) -> None:
    ws = await make_workspace(sapi)
    a = await _trigger(sapi, ws, receiver.url)
    b = await _trigger(sapi, ws, receiver.url, collection="incidents")
    page = (await sapi.get(f"/v1/{ws}/triggers", params={"limit": 1})).json()
    assert [t["id"] for t in page["data"]] == [a["id"]]
    nxt = await sapi.get(f"/v1/{ws}/triggers", params={"cursor": page["meta"]["next_cursor"]})
    assert [t["id"] for t in nxt.json()["data"]] == [b["id"]]
    r = await sapi.delete(f"/v1/{ws}/triggers/{a['id']}")
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert (await sapi.get(f"/v1/{ws}/triggers/{a['id']}")).status_code == 404
    assert (await sapi.delete(f"/v1/{ws}/triggers/{a['id']}")).status_code == 404
    types = [e["type"] for e in (await sapi.get(f"/v1/{ws}/events")).json()["data"]]
    assert types.count("trigger.created") == 2 and types.count("trigger.deleted") == 1
    assert "whsec_" not in str((await sapi.get(f"/v1/{ws}/events")).json())
