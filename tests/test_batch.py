"""Atomic batches through REST: the seed example verbatim, refs, bad input naming the failing
operation with nothing written, and all-or-nothing under kill -9."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import msgspec
import pytest

from commands.principal import SYSTEM
from tests.conftest import INCIDENT, INCIDENT_SCHEMA, Server, unique

ORDER_SCHEMA = {
    "type": "object",
    "required": ["total"],
    "properties": {"total": {"type": "number"}, "blob": {"type": "string"}},
}
ITEM_SCHEMA = {"type": "object", "properties": {"sku": {"type": "string"}}}


async def _head(api: httpx.AsyncClient, ws: str) -> int:
    return (await api.get(f"/v1/workspaces/{ws}")).json()["head_seq"]


async def _workspace(api: httpx.AsyncClient) -> str:
    ws = unique()
    assert (await api.post("/v1/workspaces", json={"id": ws})).status_code == 201
    return ws


async def test_seed_example_in_one_batch(api: httpx.AsyncClient) -> None:
    ws = await _workspace(api)
    head = await _head(api, ws)
    ops = [
        {"type": "upsert_collection", "name": "orders", "json_schema": ORDER_SCHEMA},
        {"type": "upsert_collection", "name": "line_items", "json_schema": ITEM_SCHEMA},
        {"type": "upsert_record", "collection": "orders", "external_id": "ord_1",
         "data": {"total": 42}},
        {"type": "upsert_record", "collection": "line_items", "external_id": "li_1",
         "data": {"sku": "A-1"}},
        {"type": "upsert_relationship", "rel_type": "contains", "source_collection": "orders",
         "source_id": "ord_1", "target_collection": "line_items", "target_id": "li_1"},
    ]  # fmt: skip
    r = await api.post(f"/v1/{ws}/batch", json={"operations": ops})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [(x["index"], x["type"], x["status"]) for x in out["data"]] == [
        (0, "upsert_collection", 201),
        (1, "upsert_collection", 201),
        (2, "upsert_record", 201),
        (3, "upsert_record", 201),
        (4, "upsert_relationship", 201),
    ]
    order, item, rel = (x["result"] for x in out["data"][2:])
    assert rel["type"] == "contains"
    assert rel["source"] == {"collection": "orders", "id": order["id"]}
    assert rel["target"] == {"collection": "line_items", "id": item["id"]}
    assert out["seq"] == head + 5 == await _head(api, ws)
    # The batch's events carry one batch id in their metadata.
    events = (await api.get(f"/v1/{ws}/events", params={"after_seq": head})).json()["data"]
    assert len({e["metadata"]["batch_id"] for e in events}) == 1

    related = await api.get(f"/v1/{ws}/collections/orders/records/{order['id']}/related")
    assert [x["record"]["id"] for x in related.json()["data"]] == [item["id"]]

    # The same batch again: everything exists and is unchanged, so nothing is appended.
    r = await api.post(f"/v1/{ws}/batch", json={"operations": ops})
    assert [x["status"] for x in r.json()["data"]] == [200] * 5
    assert r.json()["data"][4]["result"]["id"] == rel["id"]
    assert await _head(api, ws) == head + 5


async def test_refs_and_every_operation_type(api: httpx.AsyncClient) -> None:
    ws = await _workspace(api)
    ops: list[dict[str, Any]] = [
        {"type": "upsert_collection", "collection": "orders", "json_schema": ORDER_SCHEMA},
        {"type": "upsert_collection", "name": "line_items", "json_schema": ITEM_SCHEMA},
        {"type": "upsert_collection", "name": "scratch", "json_schema": {}},
        {"type": "upsert_record", "collection": "orders", "data": {"total": 1}, "ref": "o"},
        {"type": "upsert_record", "collection": "line_items", "data": {"sku": "x"}, "ref": "i"},
        {"type": "upsert_record", "collection": "line_items", "data": {"sku": "y"}, "ref": "j"},
        {"type": "upsert_relationship", "rel_type": "contains", "source": "orders/o",
         "target": {"collection": "line_items", "ref": "i"}, "data": {"qty": 1}, "ref": "r1"},
        {"type": "upsert_relationship", "rel_type": "contains", "source": "orders/o",
         "target": {"collection": "line_items", "id": "j"}},
        {"type": "patch_record", "collection": "orders", "id": "o", "data": {"total": 2}},
        {"type": "delete_relationship", "id": "r1"},
        {"type": "delete_relationship", "rel_type": "contains", "source_collection": "orders",
         "source_id": "o", "target": "line_items/j"},
        {"type": "upsert_relationship", "rel_type": "contains", "source": "orders/o",
         "target": "line_items/j"},
        {"type": "delete_record", "collection": "line_items", "id": "i"},
        {"type": "upsert_record", "collection": "scratch", "data": {}, "external_id": "s"},
        {"type": "delete_collection", "name": "scratch"},
    ]  # fmt: skip
    r = await api.post(f"/v1/{ws}/batch", json={"operations": ops})
    assert r.status_code == 200, r.text
    res = {x["index"]: x["result"] for x in r.json()["data"]}
    order_id, j_id = res[3]["id"], res[5]["id"]
    assert res[6]["target"]["id"] == res[4]["id"] and res[6]["data"] == {"qty": 1}
    assert res[8]["version"] == 2 and res[8]["data"] == {"total": 2}
    assert res[9]["deleted"] and res[9]["id"] == res[6]["id"]
    assert res[10]["deleted"] and res[10]["id"] == res[7]["id"]
    assert res[14]["records_deleted"] == 1

    rels = (await api.get(f"/v1/{ws}/relationships")).json()["data"]
    assert [(x["source"]["id"], x["target"]["id"]) for x in rels] == [(order_id, j_id)]
    got = await api.get(f"/v1/{ws}/collections/orders/records/{order_id}")
    assert got.json()["data"] == {"total": 2}
    assert (await api.get(f"/v1/{ws}/collections/line_items/records/{res[4]['id']}")).status_code
    assert (await api.get(f"/v1/{ws}/collections/scratch")).status_code == 404


def _records(
    n: int, *, bad_at: int | None = None, blob: int = 0, prefix: str = "INC"
) -> list[dict[str, Any]]:
    ops = []
    for i in range(n):
        data: dict[str, Any] = {**INCIDENT, "title": f"incident {i}"}
        if blob:
            data["assignee"] = f"{i:08d}" + "x" * blob
        if i == bad_at:
            data["severity"] = "p9"
        ops.append(
            {"type": "upsert_record", "collection": "incidents", "external_id": f"{prefix}-{i}",
             "data": data}
        )  # fmt: skip
    return ops


async def _incidents(api: httpx.AsyncClient) -> str:
    ws = await _workspace(api)
    r = await api.put(f"/v1/{ws}/collections/incidents", json={"json_schema": INCIDENT_SCHEMA})
    assert r.status_code == 201
    return ws


async def test_57th_operation_fails_and_nothing_persists(api: httpx.AsyncClient) -> None:
    ws = await _incidents(api)
    head = await _head(api, ws)
    ops = _records(60, bad_at=56)
    # Ops before the bad one also create a relationship and a collection: all must vanish.
    ops[1] = {"type": "upsert_collection", "name": "teams", "json_schema": {}}
    ops[2] = {"type": "upsert_relationship", "rel_type": "dup", "source": "incidents/INC-0",
              "target": "incidents/INC-0"}  # fmt: skip
    r = await api.post(f"/v1/{ws}/batch", json={"operations": ops})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "VALIDATION_ERROR"
    assert err["message"].startswith("operation 56 (upsert_record) failed: ")
    assert "nothing" in err["message"]
    assert err["details"][0]["index"] == 56
    assert err["details"][0]["path"] == "$.operations[56].data.severity"
    assert await _head(api, ws) == head
    assert (await api.get(f"/v1/{ws}/collections/incidents/records")).json()["data"] == []
    assert (await api.get(f"/v1/{ws}/relationships")).json()["data"] == []
    assert (await api.get(f"/v1/{ws}/collections/teams")).status_code == 404

    # The rolled-back collection leaves no trace: a different schema under the same name
    # (which takes the same seq) validates with the new schema, not a cached old one.
    strict = {"type": "object", "required": ["name"]}
    r = await api.put(f"/v1/{ws}/collections/teams", json={"json_schema": strict})
    assert r.status_code == 201
    r = await api.post(f"/v1/{ws}/collections/teams/records", json={"data": {}})
    assert r.status_code == 422

    # Fixed, the same batch goes through whole.
    ops[56]["data"]["severity"] = "p2"
    r = await api.post(f"/v1/{ws}/batch", json={"operations": ops})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 60


async def _assert_rejected(
    api: httpx.AsyncClient, ws: str, body: Any, status: int, index: int | None, text: str
) -> dict[str, Any]:
    head = await _head(api, ws)
    r = await api.post(f"/v1/{ws}/batch", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] in ("VALIDATION_ERROR", "NOT_FOUND", "CONFLICT"), err
    assert text in err["message"], err["message"]
    if index is not None:
        assert err["details"][0]["index"] == index, err
        assert err["details"][0]["path"].startswith(f"$.operations[{index}]"), err
    assert await _head(api, ws) == head
    return err


REC = {"type": "upsert_record", "collection": "incidents", "data": INCIDENT}


@pytest.mark.parametrize(
    ("ops", "status", "index", "text"),
    [
        ([REC] * 101, 422, None, "1 to 100 operations"),
        ([], 422, None, "1 to 100 operations"),
        ([REC, {"type": "explode"}], 422, 1, "unknown operation type"),
        ([REC, {**REC, "colour": "red"}], 422, 1, "unknown field"),
        ([REC, "upsert_record"], 422, 1, "must be an object"),
        ([{**REC, "data": "nope"}], 422, 0, "JSON object"),
        ([{**REC, "id": "not-a-uuid"}], 422, 0, "not a UUID"),
        ([{**REC, "ref": "a"}, {**REC, "ref": "a"}], 422, 1, "already used"),
        ([{"type": "upsert_relationship", "rel_type": "Bad Type", "source": "a/b",
           "target": "a/c"}], 422, 0, "relationship type"),
        ([{"type": "upsert_relationship", "rel_type": "x", "source": "incidents"}], 422, 0,
         "record reference"),
        ([REC, {"type": "upsert_relationship", "rel_type": "x", "source": "incidents/ghost",
                "target": "incidents/ghost"}], 404, 1, "operation 1 (upsert_relationship)"),
        ([{**REC, "collection": "missing"}], 404, 0, "collection 'missing' not found"),
        ([REC, {**REC, "expected_version": 5, "external_id": "E"}], 409, 1, "version conflict"),
        ([{"type": "delete_relationship", "id": "nope"}], 422, 0, "not a UUID"),
        ([{"type": "patch_record", "collection": "incidents", "id": "ghost",
           "data": {"status": "open"}}], 404, 0, "no earlier operation has ref 'ghost'"),
    ],
)  # fmt: skip
async def test_bad_batches_change_nothing(
    api: httpx.AsyncClient, ops: Any, status: int, index: int | None, text: str
) -> None:
    ws = await _incidents(api)
    await _assert_rejected(api, ws, {"operations": ops}, status, index, text)


async def test_ambiguous_external_id_and_malformed_bodies(api: httpx.AsyncClient) -> None:
    ws = await _incidents(api)
    for source in ("pagerduty", "opsgenie"):
        r = await api.post(
            f"/v1/{ws}/collections/incidents/records",
            json={"data": INCIDENT, "external_id": "INC-1", "external_source": source},
        )
        assert r.status_code == 201
    link = {
        "type": "upsert_relationship",
        "rel_type": "dup",
        "source_collection": "incidents",
        "source_id": "INC-1",
        "target_collection": "incidents",
        "target_id": "INC-1",
    }
    err = await _assert_rejected(api, ws, {"operations": [link]}, 422, 0, "ambiguous")
    assert "opsgenie" in err["message"] and "pagerduty" in err["message"]
    # Naming the source resolves it.
    exact = {"collection": "incidents", "external_id": "INC-1", "external_source": "opsgenie"}
    r = await api.post(
        f"/v1/{ws}/batch",
        json={"operations": [{"type": "upsert_relationship", "rel_type": "dup",
                              "source": exact, "target": exact}]},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    for body in ({"ops": []}, {"operations": "x"}, [1]):
        r = await api.post(f"/v1/{ws}/batch", json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = await api.post(f"/v1/{unique()}/batch", json={"operations": [REC]})
    assert r.status_code == 404


async def test_batch_through_the_service(service: Any) -> None:
    ws = unique()
    await service.create_workspace(SYSTEM, ws)
    await service.upsert_collection(SYSTEM, ws, "incidents", INCIDENT_SCHEMA)
    out = await service.batch(SYSTEM, ws, _records(3))
    assert [x["status"] for x in out["data"]] == [201, 201, 201]
    # A failing batch and good single writes submitted together: the failure is contained.
    import asyncio

    bad = service.batch(SYSTEM, ws, _records(5, bad_at=4))
    good = [
        service.upsert_record(SYSTEM, ws, "incidents", INCIDENT, external_id=f"solo-{i}")
        for i in range(5)
    ]
    results = await asyncio.gather(bad, *good, return_exceptions=True)
    assert getattr(results[0], "code", None) == "VALIDATION_ERROR"
    assert all(r.created for r in results[1:])
    listed = await service.list_records(SYSTEM, ws, "incidents", limit=100)
    assert len(listed["data"]) == 3 + 5


async def test_external_id_lookups_of_a_batch_use_the_unique_index(service: Any) -> None:
    """A batch loads its external-id lookups in one query; that query must find each key
    through the unique external-id index (as a join it walked the collection once per key)."""
    import json

    from commands.handlers import PREFETCH_SQL

    ws = unique()
    await service.create_workspace(SYSTEM, ws)
    await service.upsert_collection(SYSTEM, ws, "incidents", INCIDENT_SCHEMA)
    for start in range(0, 1000, 100):
        await service.batch(SYSTEM, ws, _records(100, prefix=f"p{start}"))
    again = await service.batch(SYSTEM, ws, _records(100, prefix="p500"))  # all existing
    assert [x["status"] for x in again["data"]] == [200] * 100
    async with service.connection() as conn:
        await conn.execute("ANALYZE records")
        keys = [f"p500-{i}" for i in range(3)]
        cur = await conn.execute(
            "EXPLAIN (FORMAT JSON) " + PREFETCH_SQL,
            (["incidents"] * 3, keys, [""] * 3, ws),
        )
        plan = (await cur.fetchone())[0][0]["Plan"]

    def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]

    scans = [n for n in nodes(plan) if n.get("Relation Name") == "records"]
    assert scans, json.dumps(plan)
    for scan in scans:  # every read of records is a lookup of one key
        assert scan.get("Index Name") == "records_external_idx", json.dumps(plan)
        assert "external_id" in scan.get("Index Cond", ""), json.dumps(plan)


# -- kill -9 ----------------------------------------------------------------------------------


def _raw_post(url: str, path: str, token: str, body: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    return sock


async def _write_in_flight(service: Any) -> bool:
    # Another backend holds a write lock on `events` only between its first append and its
    # commit or rollback: the batch's transaction has written and not finished.
    async with service.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
            " WHERE c.relname = 'events' AND l.mode = 'RowExclusiveLock'"
            " AND l.pid <> pg_backend_pid()"
        )
        row = await cur.fetchone()
        return bool(row and row[0])


async def _kill_when_writing(srv: Server, service: Any, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if await _write_in_flight(service):
            srv.kill()
            return True
    srv.kill()
    return False


async def _batch_count(service: Any, ws: str, prefix: str) -> tuple[int, list[int], int]:
    async with service.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM records WHERE workspace_id = %s AND external_id LIKE %s",
            (ws, f"{prefix}-%"),
        )
        count = (await cur.fetchone())[0]
        cur = await conn.execute(
            "SELECT seq FROM events WHERE workspace_id = %s ORDER BY seq", (ws,)
        )
        seqs = [r[0] for r in await cur.fetchall()]
        cur = await conn.execute("SELECT head FROM workspaces WHERE workspace_id = %s", (ws,))
        head = (await cur.fetchone())[0]
    return count, seqs, head


@pytest.mark.embedded_only
async def test_kill_9_during_a_batch_leaves_all_or_nothing(
    endpoints: Any, service: Any, admin_key: str, tmp_path: Any
) -> None:
    ws = unique()
    await service.create_workspace(SYSTEM, ws)
    await service.upsert_collection(SYSTEM, ws, "incidents", INCIDENT_SCHEMA)
    outcomes: list[int] = []
    # Each attempt kills a fresh server: first while the batch's transaction has written but
    # not committed (seen in pg_stat_activity), then at fixed delays after sending.
    for attempt, delay in enumerate((None, None, 0.1)):
        data_dir = tmp_path / f"srv{attempt}"
        data_dir.mkdir()
        srv = Server(endpoints, data_dir)
        try:
            ops = [
                {**op, "external_id": f"{attempt}-{i}"}
                for i, op in enumerate(_records(100, blob=8000))
            ]
            body = msgspec.json.encode({"operations": ops})
            sock = _raw_post(srv.url, f"/v1/{ws}/batch", admin_key, body)
            if delay is None:
                assert await _kill_when_writing(srv, service, time.monotonic() + 10)
            else:
                time.sleep(delay)
                srv.kill()
            sock.close()
        finally:
            srv.stop()
        count, seqs, head = await _batch_count(service, ws, str(attempt))
        outcomes.append(count)
        assert count in (0, 100), f"partial batch after kill -9: {outcomes}"
        assert seqs == list(range(1, head + 1)), "seq has a gap"
    # The log agrees with the table: every committed record event belongs to a whole batch.
    async with service.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM events WHERE workspace_id = %s AND type = 'record.created'",
            (ws,),
        )
        assert (await cur.fetchone())[0] == sum(outcomes)
    print(f"records per attempt after kill -9: {outcomes}")


async def test_large_batch_timing_sanity(api: httpx.AsyncClient) -> None:
    ws = await _incidents(api)
    started = time.perf_counter()
    r = await api.post(f"/v1/{ws}/batch", json={"operations": _records(100)})
    assert r.status_code == 200 and len(r.json()["data"]) == 100
    assert time.perf_counter() - started < 5
