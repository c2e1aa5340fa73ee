"""The relay and the change feed: JetStream subjects/headers/bodies, the audit log with its
filters, and the SSE feed resumed with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import nats
import pytest

from deploy.stack import StackEndpoints
from tests.stream.conftest import eventually, make_workspace


async def jetstream_messages(nats_url: str, ws: str, count: int, wait_s: float = 20) -> list:
    """The first `count` messages of workspace `ws` in the REKOR stream, in stream order."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(f"rekor.{ws}.>", ordered_consumer=True)
        out = []
        deadline = asyncio.get_running_loop().time() + wait_s
        while len(out) < count:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                out.append(await sub.next_msg(timeout=left))
            except (TimeoutError, nats.errors.TimeoutError):
                break
        # Anything beyond `count` (a duplicate) would show up right away.
        try:
            out.append(await sub.next_msg(timeout=0.3))
        except (TimeoutError, nats.errors.TimeoutError):
            pass
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def test_relay_publishes_each_event_once_in_order(
    sapi: httpx.AsyncClient, stream_endpoints: StackEndpoints
) -> None:
    ws = await make_workspace(sapi)
    recs = f"/v1/{ws}/collections/incidents/records"
    for i in range(5):
        r = await sapi.post(recs, json={"data": {"title": f"i{i}", "severity": "p2"}})
        assert r.status_code == 201
    log = (await sapi.get(f"/v1/{ws}/events")).json()["data"]
    assert [e["seq"] for e in log] == list(range(1, 8))

    msgs = await jetstream_messages(stream_endpoints.nats_url, ws, len(log))
    assert len(msgs) == len(log), "each event exactly once"
    assert [m.subject for m in msgs] == [
        f"rekor.{ws}._.workspace.created",
        f"rekor.{ws}.incidents.collection.created",
    ] + [f"rekor.{ws}.incidents.record.created"] * 5
    for m, event in zip(msgs, log, strict=True):
        assert m.headers["Nats-Msg-Id"] == event["id"]
        assert json.loads(m.data) == event


async def test_audit_log_filters_and_paging(sapi: httpx.AsyncClient) -> None:
    ws = await make_workspace(sapi)
    recs = f"/v1/{ws}/collections/incidents/records"
    a = (await sapi.post(recs, json={"data": {"title": "a", "severity": "p2"}})).json()
    await sapi.post(recs, json={"data": {"title": "b", "severity": "p2"}})
    await sapi.patch(f"{recs}/{a['id']}", json={"data": {"status": "x"}})

    def ids(r: httpx.Response) -> list[int]:
        assert r.status_code == 200, r.text
        return [e["seq"] for e in r.json()["data"]]

    assert ids(await sapi.get(f"/v1/{ws}/events", params={"record_id": a["id"]})) == [3, 5]
    assert ids(await sapi.get(f"/v1/{ws}/events", params={"type": "record.updated"})) == [5]
    assert ids(
        await sapi.get(f"/v1/{ws}/events", params={"type": "record.created,record.updated"})
    ) == [3, 4, 5]
    assert ids(await sapi.get(f"/v1/{ws}/events", params={"collection": "incidents"})) == [
        2,
        3,
        4,
        5,
    ]
    first = await sapi.get(f"/v1/{ws}/events", params={"limit": 2})
    assert ids(first) == [1, 2]
    meta = first.json()["meta"]
    assert meta["last_seq"] == 2 and meta["next_cursor"]
    assert ids(await sapi.get(f"/v1/{ws}/events", params={"cursor": meta["next_cursor"]})) == [
        3,
        4,
        5,
    ]
    assert ids(await sapi.get(f"/v1/{ws}/events", params={"after_seq": 4})) == [5]
    event = (await sapi.get(f"/v1/{ws}/events", params={"after_seq": 4})).json()["data"][0]
    assert event["metadata"]["interface"] == "rest" and event["metadata"]["actor"]


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"limit": 0}, "limit"),
        ({"after_seq": -1}, "after_seq"),
        ({"record_id": "nope"}, "record_id"),
        ({"cursor": "garbage"}, "$.cursor"),
        ({"collection": "Bad Name"}, "collection"),
    ],
)
async def test_audit_log_bad_input(
    sapi: httpx.AsyncClient, params: dict[str, Any], path: str
) -> None:
    ws = await make_workspace(sapi)
    r = await sapi.get(f"/v1/{ws}/events", params=params)
    assert r.status_code in (400, 422), r.text
    err = r.json()["error"]
    assert err["code"] == "VALIDATION_ERROR"
    assert path in json.dumps(err["details"]) or path in err["message"]


async def test_audit_log_needs_read_and_workspace(sapi: httpx.AsyncClient) -> None:
    r = await sapi.get("/v1/no_such_ws_here/events")
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    async with httpx.AsyncClient(base_url=str(sapi.base_url)) as anon:
        r = await anon.get("/v1/no_such_ws_here/events")
        assert r.status_code == 401


async def _read_sse(
    client: httpx.AsyncClient, url: str, n: int, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Read n events from an SSE endpoint, then disconnect."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with client.stream("GET", url, headers=headers or {}, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for line in resp.aiter_lines():
            if line.startswith("id:"):
                current["id"] = int(line[3:].strip())
            elif line.startswith("event:"):
                current["event"] = line[6:].strip()
            elif line.startswith("data:"):
                current["data"] = json.loads(line[5:].strip())
            elif line == "" and "data" in current:
                events.append(current)
                current = {}
                if len(events) == n:
                    break
    return events


async def test_sse_feed_live_and_resumable(sapi: httpx.AsyncClient) -> None:
    ws = await make_workspace(sapi)
    recs = f"/v1/{ws}/collections/incidents/records"
    reader = asyncio.create_task(_read_sse(sapi, f"/v1/{ws}/events/stream", 5))
    for i in range(3):
        r = await sapi.post(recs, json={"data": {"title": f"t{i}", "severity": "p2"}})
        assert r.status_code == 201
    got = await asyncio.wait_for(reader, 20)
    assert [e["id"] for e in got] == [1, 2, 3, 4, 5]
    assert got[-1]["event"] == "record.created" and got[-1]["data"]["seq"] == 5

    # Disconnected after seq 3; meanwhile more commits; resuming must miss nothing.
    for i in range(2):
        await sapi.post(recs, json={"data": {"title": f"u{i}", "severity": "p2"}})
    resumed = await _read_sse(sapi, f"/v1/{ws}/events/stream", 4, headers={"Last-Event-ID": "3"})
    assert [e["id"] for e in resumed] == [4, 5, 6, 7]

    filtered = await _read_sse(sapi, f"/v1/{ws}/events/stream?type=record.created&after_seq=5", 2)
    assert [e["id"] for e in filtered] == [6, 7]

    r = await sapi.get(f"/v1/{ws}/events/stream", headers={"Last-Event-ID": "x"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_relay_checkpoint_reaches_head(sapi: httpx.AsyncClient) -> None:
    ws = await make_workspace(sapi)
    health = await eventually(lambda: _healthy(sapi), deadline_s=10)
    assert health["checks"]["stream.relay"] == "ok"
    del ws


async def _healthy(api: httpx.AsyncClient) -> Any:
    body = (await api.get("/health")).json()
    return body if body["checks"].get("stream.relay") == "ok" else None
