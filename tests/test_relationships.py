"""Relationships through REST: upsert with the three endpoint forms, list/get/delete, traversal
on a graph with cycles, record and collection deletion removing edges, time travel, rebuild."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from commands.principal import SYSTEM
from projections.rebuild import rebuild_workspace
from tests.conftest import unique

NODE_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}}


async def _head(api: httpx.AsyncClient, ws: str) -> int:
    return (await api.get(f"/v1/workspaces/{ws}")).json()["head_seq"]


async def _workspace(api: httpx.AsyncClient, *collections: str) -> str:
    ws = unique()
    assert (await api.post("/v1/workspaces", json={"id": ws})).status_code == 201
    for c in collections:
        r = await api.put(f"/v1/{ws}/collections/{c}", json={"json_schema": NODE_SCHEMA})
        assert r.status_code == 201, r.text
    return ws


async def _record(api: httpx.AsyncClient, ws: str, collection: str, name: str, **extra: Any) -> Any:
    r = await api.post(
        f"/v1/{ws}/collections/{collection}/records", json={"data": {"name": name}, **extra}
    )
    assert r.status_code == 201, r.text
    return r.json()


async def _link(api: httpx.AsyncClient, ws: str, rel_type: str, src: Any, dst: Any) -> Any:
    body = {
        "type": rel_type,
        "source": f"{src['collection']}/{src['id']}",
        "target": f"{dst['collection']}/{dst['id']}",
    }
    r = await api.post(f"/v1/{ws}/relationships", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def test_crud_with_the_three_endpoint_forms(api: httpx.AsyncClient) -> None:
    ws = await _workspace(api, "orders", "line_items")
    order = await _record(api, ws, "orders", "o1", external_id="ord_1", external_source="shop")
    item = await _record(api, ws, "line_items", "li1")
    rels = f"/v1/{ws}/relationships"

    r = await api.post(
        rels,
        json={
            "type": "contains",
            "source": f"orders/{order['id']}",
            "target": {"collection": "line_items", "id": item["id"]},
        },
    )
    assert r.status_code == 201, r.text
    rel = r.json()
    assert uuid.UUID(rel["id"]).version == 7
    assert rel["type"] == "contains" and rel["version"] == 1 and rel["data"] == {}
    assert rel["source"] == {"collection": "orders", "id": order["id"]}
    assert rel["target"] == {"collection": "line_items", "id": item["id"]}
    assert set(rel) == {
        "id",
        "type",
        "source",
        "target",
        "data",
        "version",
        "created_at",
        "updated_at",
        "seq",
    }

    # Same key through the external-id form, no data: nothing changes, nothing appended.
    head = await _head(api, ws)
    by_external = {
        "type": "contains",
        "source": {"collection": "orders", "external_id": "ord_1", "external_source": "shop"},
        "target": f"line_items/{item['id']}",
    }
    r = await api.post(rels, json=by_external)
    assert r.status_code == 200 and r.json() == rel
    assert await _head(api, ws) == head

    r = await api.post(rels, json={**by_external, "data": {"qty": 2}})
    assert r.status_code == 200
    updated = r.json()
    assert (updated["id"], updated["version"], updated["data"]) == (rel["id"], 2, {"qty": 2})
    assert updated["seq"] == head + 1
    r = await api.post(rels, json={**by_external, "data": {"qty": 2}})
    assert r.status_code == 200 and r.json()["version"] == 2
    assert await _head(api, ws) == head + 1
    r = await api.post(rels, json={**by_external, "data": {"qty": 3}, "expected_version": 1})
    assert r.status_code == 409 and r.json()["error"]["code"] == "CONFLICT"

    assert (await api.get(f"{rels}/{rel['id']}")).json() == updated
    other = await _record(api, ws, "line_items", "li2")
    second = await _link(api, ws, "contains", order, other)
    await _link(api, ws, "mentions", other, order)

    listed = (await api.get(rels, params={"type": "contains"})).json()
    assert [x["id"] for x in listed["data"]] == [rel["id"], second["id"]]
    assert listed["meta"] == {"limit": 50, "next_cursor": None}
    r = await api.get(rels, params={"target": f"line_items/{other['id']}"})
    assert [x["id"] for x in r.json()["data"]] == [second["id"]]
    r = await api.get(rels, params={"source": f"orders/{order['id']}", "type": "mentions"})
    assert r.json()["data"] == []
    page1 = (await api.get(rels, params={"limit": 2})).json()
    page2 = await api.get(rels, params={"limit": 2, "cursor": page1["meta"]["next_cursor"]})
    ids = [x["id"] for x in page1["data"] + page2.json()["data"]]
    assert len(ids) == 3 == len(set(ids)) and page2.json()["meta"]["next_cursor"] is None

    r = await api.delete(f"{rels}/{rel['id']}")
    assert r.status_code == 200 and r.json()["deleted"] is True and r.json()["version"] == 3
    assert (await api.get(f"{rels}/{rel['id']}")).status_code == 404
    assert (await api.delete(f"{rels}/{rel['id']}")).status_code == 404
    # The same key again is a new relationship with a new id.
    again = await api.post(rels, json=by_external)
    assert again.status_code == 201 and again.json()["id"] != rel["id"]


async def _assert_error(r: httpx.Response, status: int, code: str, text: str = "") -> Any:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"]
    assert text in err["message"], err["message"]
    return err


async def test_bad_input_and_other_workspaces(api: httpx.AsyncClient) -> None:
    ws = await _workspace(api, "orders", "line_items")
    elsewhere = await _workspace(api, "orders")
    order = await _record(api, ws, "orders", "o1")
    foreign = await _record(api, elsewhere, "orders", "theirs")
    rels = f"/v1/{ws}/relationships"
    head = await _head(api, ws)

    def body(**kw: Any) -> dict[str, Any]:
        return {
            "type": "contains",
            "source": f"orders/{order['id']}",
            "target": f"orders/{order['id']}",
        } | kw

    err = await _assert_error(
        await api.post(rels, json=body(target=f"orders/{foreign['id']}")), 404, "NOT_FOUND"
    )
    assert "target record" in err["message"] and err["details"][0]["path"] == "$.target"
    await _assert_error(
        await api.post(rels, json=body(target=f"line_items/{order['id']}")), 404, "NOT_FOUND"
    )
    await _assert_error(
        await api.post(rels, json=body(source={"collection": "orders", "external_id": "nope"})),
        404,
        "NOT_FOUND",
        "external_id 'nope'",
    )
    for bad in (
        body(type="Not A Slug"),
        body(source="orders"),
        body(source="orders/not-a-uuid"),
        body(source={"collection": "orders"}),
        body(source={"collection": "orders", "id": order["id"], "external_id": "x"}),
        body(source=42),
        body(data=[1, 2]),
    ):
        r = await api.post(rels, json=bad)
        assert r.status_code in (400, 422), (bad, r.text)
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    await _assert_error(await api.post(rels, json=body(extra=1)), 400, "VALIDATION_ERROR")
    await _assert_error(await api.get(f"{rels}/nope"), 422, "VALIDATION_ERROR")
    await _assert_error(await api.get(f"{rels}/{uuid.uuid4()}"), 404, "NOT_FOUND")
    for params in ({"cursor": "garbage!!"}, {"limit": 0}, {"source": "x/y"}, {"as_of": "then"}):
        await _assert_error(await api.get(rels, params=params), 422, "VALIDATION_ERROR")
    await _assert_error(
        await api.get(f"/v1/{unique()}/relationships"), 404, "NOT_FOUND", "workspace"
    )
    related = f"/v1/{ws}/collections/orders/records/{order['id']}/related"
    for params in ({"depth": 0}, {"depth": 6}, {"direction": "up"}, {"limit": 1001}):
        await _assert_error(await api.get(related, params=params), 422, "VALIDATION_ERROR")
    await _assert_error(await api.get(related, params={"depth": "x"}), 400, "VALIDATION_ERROR")
    await _assert_error(
        await api.get(f"/v1/{ws}/collections/orders/records/{foreign['id']}/related"),
        404,
        "NOT_FOUND",
    )
    assert await _head(api, ws) == head
    assert (await api.get(rels)).json()["data"] == []


def _summary(items: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(i["record"]["data"]["name"], i["depth"]) for i in items]


async def test_traversal_on_a_graph_with_cycles(api: httpx.AsyncClient) -> None:
    ws = await _workspace(api, "nodes", "tags")
    n = {name: await _record(api, ws, "nodes", name) for name in "abcdefg"}
    tag = await _record(api, ws, "tags", "t")
    # a -> b -> c -> a (cycle), a -> d -> b (second path to b), c -> e -> e (self-loop),
    # e -> f -> g, b -> tag (other collection), and a "blocks" edge g -> a.
    for src, dst in ["ab", "bc", "ca", "ad", "db", "ce", "ee", "ef", "fg"]:
        await _link(api, ws, "links", n[src], n[dst])
    await _link(api, ws, "tagged", n["b"], tag)
    await _link(api, ws, "blocks", n["g"], n["a"])

    async def walk(start: str, **params: Any) -> list[dict[str, Any]]:
        url = f"/v1/{ws}/collections/nodes/records/{n[start]['id']}/related"
        r = await api.get(url, params=params)
        assert r.status_code == 200, r.text
        items = r.json()["data"]
        ids = [i["record"]["id"] for i in items]
        assert len(ids) == len(set(ids)), "a record appeared twice"
        assert n[start]["id"] not in ids, "the start record came back through a cycle"
        return items

    def names(items: list[dict[str, Any]]) -> dict[str, int]:
        return dict(_summary(items))

    assert names(await walk("a")) == {"b": 1, "d": 1}
    assert names(await walk("a", depth=2)) == {"b": 1, "d": 1, "c": 2, "t": 2}
    assert names(await walk("a", depth=3)) == {"b": 1, "d": 1, "c": 2, "t": 2, "e": 3}
    assert names(await walk("a", depth=5)) == {
        "b": 1, "d": 1, "c": 2, "t": 2, "e": 3, "f": 4, "g": 5,
    }  # fmt: skip
    assert names(await walk("a", depth=5, type="links")) == {
        "b": 1, "d": 1, "c": 2, "e": 3, "f": 4, "g": 5,
    }  # fmt: skip
    assert names(await walk("a", direction="incoming")) == {"c": 1, "g": 1}
    incoming3 = names(await walk("a", direction="incoming", depth=3))
    assert incoming3 == {"c": 1, "g": 1, "b": 2, "f": 2, "d": 3, "e": 3}
    assert names(await walk("a", direction="both")) == {"b": 1, "d": 1, "c": 1, "g": 1}
    both2 = names(await walk("a", direction="both", depth=2))
    assert both2 == {"b": 1, "d": 1, "c": 1, "g": 1, "t": 2, "e": 2, "f": 2}
    # The edge that reached each record is returned, pointing the way it was followed.
    for item in await walk("a", depth=3):
        edge = item["relationship"]
        assert edge["target"]["id"] == item["record"]["id"]
        assert edge["type"] in ("links", "tagged")
    for item in await walk("a", direction="incoming"):
        assert item["relationship"]["source"]["id"] == item["record"]["id"]
        assert item["relationship"]["target"]["id"] == n["a"]["id"]
    # A self-loop and a cycle back to the start end the walk.
    assert names(await walk("e", depth=5)) == {
        "f": 1, "g": 2, "a": 3, "b": 4, "d": 4, "c": 5, "t": 5,
    }  # fmt: skip

    # The limit truncates in order (depth first, then edge id) and says so.
    url = f"/v1/{ws}/collections/nodes/records/{n['a']['id']}/related"
    r = (await api.get(url, params={"depth": 5, "limit": 3})).json()
    assert [i["depth"] for i in r["data"]] == [1, 1, 2]
    assert r["meta"]["truncated"] is True and r["meta"]["limit"] == 3
    r = (await api.get(url, params={"depth": 5, "limit": 7})).json()
    assert len(r["data"]) == 7 and r["meta"]["truncated"] is False


async def test_deleting_records_and_collections_removes_their_edges(
    api: httpx.AsyncClient, service: Any
) -> None:
    ws = await _workspace(api, "nodes", "tags")
    a, b, c = [await _record(api, ws, "nodes", x) for x in "abc"]
    t1, t2 = [await _record(api, ws, "tags", x) for x in ("t1", "t2")]
    ab = await _link(api, ws, "links", a, b)
    bc = await _link(api, ws, "links", b, c)
    await _link(api, ws, "links", b, b)
    ac = await _link(api, ws, "links", a, c)
    await _link(api, ws, "tagged", a, t1)
    await _link(api, ws, "tagged", c, t2)
    await _link(api, ws, "tagged", t1, t2)
    rels = f"/v1/{ws}/relationships"

    head = await _head(api, ws)
    r = await api.delete(f"/v1/{ws}/collections/nodes/records/{b['id']}")
    assert r.status_code == 200
    # Three edges touched b (one a self-loop): three relationship tombstones, then the record's.
    assert r.json()["seq"] == head + 4
    left = {x["id"] for x in (await api.get(rels)).json()["data"]}
    assert ab["id"] not in left and bc["id"] not in left and ac["id"] in left
    assert len(left) == 4
    assert (await api.get(f"{rels}/{ab['id']}")).status_code == 404
    events = await service.read_events(SYSTEM, ws, head)
    assert [e.type for e in events] == ["relationship.deleted"] * 3 + ["record.deleted"]
    assert {e.event.cause for e in events[:3]} == {"record.deleted"}
    related = (
        await api.get(f"/v1/{ws}/collections/nodes/records/{a['id']}/related", params={"depth": 3})
    ).json()["data"]
    assert sorted(_summary(related)) == [("c", 1), ("t1", 1), ("t2", 2)]

    # Deleting a collection tombstones each record, and each record's edges go first.
    r = await api.delete(f"/v1/{ws}/collections/tags")
    assert r.status_code == 200 and r.json()["records_deleted"] == 2
    assert [x["id"] for x in (await api.get(rels)).json()["data"]] == [ac["id"]]
    related = (
        await api.get(f"/v1/{ws}/collections/nodes/records/{a['id']}/related", params={"depth": 3})
    ).json()["data"]
    assert _summary(related) == [("c", 1)]


async def test_time_travel_and_rebuild(api: httpx.AsyncClient, service: Any) -> None:
    ws = await _workspace(api, "nodes")
    a, b, c = [await _record(api, ws, "nodes", x) for x in "abc"]
    ab = await _link(api, ws, "links", a, b)
    bc = await _link(api, ws, "links", b, c)
    rels = f"/v1/{ws}/relationships"
    url_a = f"/v1/{ws}/collections/nodes/records/{a['id']}/related"
    before = await _head(api, ws)
    live_before = (await api.get(url_a, params={"depth": 2})).json()["data"]
    live_list = (await api.get(rels)).json()["data"]

    r = await api.post(
        rels, json={"type": "links", "source": f"nodes/{a['id']}", "target": f"nodes/{b['id']}",
                    "data": {"w": 5}},
    )  # fmt: skip
    assert r.json()["version"] == 2
    await api.patch(f"/v1/{ws}/collections/nodes/records/{c['id']}", json={"data": {"name": "C"}})
    await api.delete(f"{rels}/{bc['id']}")
    await api.delete(f"/v1/{ws}/collections/nodes/records/{b['id']}")
    assert (await api.get(url_a)).json()["data"] == []

    # As of `before`, reconstructed from the log, everything reads as it did then.
    then = (await api.get(url_a, params={"depth": 2, "as_of": before})).json()
    assert then["data"] == live_before and then["meta"]["as_of_seq"] == before
    listed = (await api.get(rels, params={"as_of": before})).json()
    assert listed["data"] == live_list
    old = (await api.get(f"{rels}/{ab['id']}", params={"as_of": before})).json()
    assert old["version"] == 1 and old["data"] == {} and old["as_of_seq"] == before
    mid = (await api.get(f"{rels}/{ab['id']}", params={"as_of": before + 1})).json()
    assert mid["version"] == 2 and mid["data"] == {"w": 5}
    assert (await api.get(f"{rels}/{ab['id']}")).status_code == 404
    assert (await api.get(f"{rels}/{ab['id']}", params={"as_of": 0})).status_code == 404
    by_time = (await api.get(rels, params={"as_of": old["updated_at"]})).json()["data"]
    assert {x["id"] for x in by_time} == {ab["id"]}
    paged = (await api.get(rels, params={"as_of": before, "limit": 1})).json()
    nxt = paged["meta"]["next_cursor"]
    rest = (await api.get(rels, params={"as_of": before, "limit": 1, "cursor": nxt})).json()
    assert [x["id"] for x in paged["data"] + rest["data"]] == [ab["id"], bc["id"]]
    # After the patch of c, a walk at that point shows c's data then.
    at_patch = before + 2
    walk = (await api.get(url_a, params={"depth": 2, "as_of": at_patch})).json()["data"]
    assert _summary(walk) == [("b", 1), ("C", 2)]
    assert walk[0]["relationship"]["data"] == {"w": 5}
    # The live answer equals the log's answer at the head.
    head = await _head(api, ws)
    assert (await api.get(url_a, params={"as_of": head})).json()["data"] == (
        await api.get(url_a)
    ).json()["data"]
    r = await api.get(f"/v1/{ws}/collections/nodes/records/{b['id']}/related")
    assert r.status_code == 404
    r = await api.get(
        f"/v1/{ws}/collections/nodes/records/{b['id']}/related", params={"as_of": before}
    )
    assert _summary(r.json()["data"]) == [("c", 1)]

    # A rebuild from the log yields the same relationships table.
    async def snapshot() -> list[tuple[Any, ...]]:
        async with service.connection() as conn:
            cur = await conn.execute(
                "SELECT * FROM relationships WHERE workspace_id = %s ORDER BY id", (ws,)
            )
            return await cur.fetchall()

    await _link(api, ws, "links", c, a)
    expected = await snapshot()
    assert len(expected) == 1
    async with service.connection() as conn:
        await rebuild_workspace(conn, ws)
    assert await snapshot() == expected


@pytest.mark.parametrize("edges", [100])
async def test_wide_fan_out(api: httpx.AsyncClient, service: Any, edges: int) -> None:
    ws = await _workspace(api, "nodes")
    hub = await _record(api, ws, "nodes", "hub")
    ops = [
        {"type": "upsert_record", "collection": "nodes", "data": {"name": f"n{i}"}, "ref": f"n{i}"}
        for i in range(edges // 2)
    ]
    ops += [
        {
            "type": "upsert_relationship",
            "rel_type": "links",
            "source_collection": "nodes",
            "source_id": hub["id"],
            "target_collection": "nodes",
            "target_id": f"n{i}",
        }
        for i in range(edges // 2)
    ]
    assert (await api.post(f"/v1/{ws}/batch", json={"operations": ops})).status_code == 200
    url = f"/v1/{ws}/collections/nodes/records/{hub['id']}/related"
    r = (await api.get(url)).json()
    assert len(r["data"]) == edges // 2 and r["meta"]["truncated"] is False
    assert {i["record"]["data"]["name"] for i in r["data"]} == {f"n{i}" for i in range(edges // 2)}
    edge_ids = [i["relationship"]["id"] for i in r["data"]]
    assert edge_ids == sorted(edge_ids)


def _reference_walk(
    edges: list[dict[str, Any]], start: str, direction: str, depth: int
) -> list[tuple[str, str, int]]:
    """Breadth-first search in plain Python with the contract's rules: each record once, at
    its shortest depth, reached by its smallest edge id; each level in edge-id order."""
    visited, frontier, out = {start}, {start}, []
    for level in range(1, depth + 1):
        best: dict[str, str] = {}
        for e in edges:
            src, dst = e["source"]["id"], e["target"]["id"]
            hops = []
            if direction in ("outgoing", "both") and src in frontier:
                hops.append(dst)
            if direction in ("incoming", "both") and dst in frontier:
                hops.append(src)
            for other in hops:
                if other not in visited and (other not in best or e["id"] < best[other]):
                    best[other] = e["id"]
        reached = sorted((eid, other) for other, eid in best.items())
        out += [(other, eid, level) for eid, other in reached]
        frontier = {other for _, other in reached}
        visited |= frontier
        if not frontier:
            break
    return out


@pytest.mark.parametrize("seed", [1, 2])
async def test_traversal_agrees_with_a_reference_bfs(service: Any, seed: int) -> None:
    import random

    rnd = random.Random(seed)
    ws = unique()
    await service.create_workspace(SYSTEM, ws)
    await service.upsert_collection(SYSTEM, ws, "nodes", NODE_SCHEMA)
    ops: list[dict[str, Any]] = [
        {"type": "upsert_record", "collection": "nodes", "data": {"name": f"n{i}"}, "ref": f"n{i}"}
        for i in range(14)
    ]
    pairs = {(rnd.randrange(14), rnd.randrange(14), rnd.choice(["x", "y"])) for _ in range(40)}
    ops += [
        {"type": "upsert_relationship", "rel_type": t, "source": f"nodes/n{a}",
         "target": f"nodes/n{b}"}
        for a, b, t in sorted(pairs)
    ]  # fmt: skip
    out = await service.batch(SYSTEM, ws, ops)
    ids = [x["result"]["id"] for x in out["data"][:14]]
    edges = [x["result"] for x in out["data"][14:]]
    # Delete a few edges and one record so the log holds more than the live graph.
    for e in edges[:3]:
        await service.delete_relationship(SYSTEM, ws, e["id"])
    await service.delete_record(SYSTEM, ws, "nodes", ids[-1])
    live = (await service.list_relationships(SYSTEM, ws, limit=1000))["data"]
    assert all(ids[-1] not in (e["source"]["id"], e["target"]["id"]) for e in live)
    head = (await service.get_workspace(SYSTEM, ws))["head_seq"]
    for start in ids[:-1]:
        for direction in ("outgoing", "incoming", "both"):
            for depth in (1, 2, 3):
                got = await service.related(
                    SYSTEM, ws, "nodes", start, direction=direction, depth=depth
                )
                seen = [
                    (i["record"]["id"], i["relationship"]["id"], i["depth"]) for i in got["data"]
                ]
                assert seen == _reference_walk(live, start, direction, depth)
                then = await service.related(
                    SYSTEM, ws, "nodes", start, direction=direction, depth=depth, as_of=head
                )
                assert then["data"] == got["data"]
    # As of the batch's seq, the deleted edges and record are part of the walk again.
    before = await service.related(
        SYSTEM, ws, "nodes", ids[0], direction="both", depth=3, as_of=out["seq"]
    )
    seen = [(i["record"]["id"], i["relationship"]["id"], i["depth"]) for i in before["data"]]
    assert seen == _reference_walk(edges, ids[0], "both", 3)
