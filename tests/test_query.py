"""The query engine through REST: filters, sort and keyset paging, projection, counts, time
travel, search, aggregates, and every kind of bad input (clear error, nothing changed)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.conftest import unique

SEVERITIES = ["p0", "p1", "p2", "p3"]
STATUSES = ["open", "investigating", "resolved"]
TITLES = [
    "API latency spike in us-east-1",
    "Database failover stuck",
    "Disk full on worker-7",
    "Certificate expires soon",
    "Queue backlog growing",
]


def make(i: int) -> dict[str, Any]:
    """The i-th incident: every field varies, some are missing or of another type."""
    data: dict[str, Any] = {
        "title": TITLES[i % len(TITLES)] + f" #{i}",
        "severity": SEVERITIES[i % 4],
        "status": STATUSES[i % 3],
        "amount": i * 1.5 if i % 5 else i,  # ints and floats mixed
        "opened": f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:00+0{i % 3}:00",
        "tags": ["db", "prod"] if i % 2 else ["api"],
        "customer": {"tier": "gold" if i % 3 == 0 else "silver", "id": i % 4},
    }
    if i % 7 == 0:
        del data["amount"]  # missing field
    if i % 11 == 0:
        data["amount"] = "n/a"  # a string where numbers are usual
    return data


N = 30


class Coll:
    def __init__(self, ws: str, records: list[dict[str, Any]]) -> None:
        self.ws = ws
        self.records = records
        self.url = f"/v1/{ws}/collections/incidents/records"

    def ids(self, pred: Callable[[dict[str, Any]], bool]) -> set[str]:
        return {r["id"] for r in self.records if pred(r["data"])}


@pytest.fixture(scope="module")
async def coll(api: httpx.AsyncClient) -> Coll:
    ws = unique("wsq")
    assert (await api.post("/v1/workspaces", json={"id": ws})).status_code == 201
    r = await api.put(f"/v1/{ws}/collections/incidents", json={"json_schema": {"type": "object"}})
    assert r.status_code == 201, r.text
    records = []
    for i in range(N):
        r = await api.post(
            f"/v1/{ws}/collections/incidents/records",
            json={"data": make(i), "external_id": f"INC-{i}", "external_source": "pd"},
        )
        assert r.status_code == 201, r.text
        records.append(r.json())
    return Coll(ws, records)


async def query(api: httpx.AsyncClient, c: Coll, **body: Any) -> dict[str, Any]:
    r = await api.post(c.url + "/query", json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def head(api: httpx.AsyncClient, ws: str) -> int:
    return (await api.get(f"/v1/workspaces/{ws}")).json()["head_seq"]


def cond(field: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


def num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


CASES: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ("eq", cond("data.severity", "eq", "p1"), lambda d: d["severity"] == "p1"),
    (
        "eq-nested",
        cond("data.customer.tier", "eq", "gold"),
        lambda d: d["customer"]["tier"] == "gold",
    ),
    ("eq-number", cond("data.customer.id", "eq", 2.0), lambda d: d["customer"]["id"] == 2),
    ("neq-missing-too", cond("data.amount", "neq", 3), lambda d: d.get("amount") != 3),
    ("in", cond("data.severity", "in", ["p0", "p3"]), lambda d: d["severity"] in ("p0", "p3")),
    # Past 50 values `in` compiles to one array comparison instead of OR'd containments.
    (
        "in-long",
        cond("data.customer.id", "in", list(range(2, 62))),
        lambda d: d["customer"]["id"] >= 2,
    ),
    (
        "not_in",
        cond("data.status", "not_in", ["open", "resolved"]),
        lambda d: d["status"] == "investigating",
    ),
    (
        "gt-number",
        cond("data.amount", "gt", 20),
        lambda d: num(d.get("amount")) and d["amount"] > 20,
    ),
    (
        "lte-number",
        cond("data.amount", "lte", 6),
        lambda d: num(d.get("amount")) and d["amount"] <= 6,
    ),
    ("gt-string", cond("data.status", "gt", "open"), lambda d: d["status"] > "open"),
    (
        "datetime-as-instant",
        # 2026-01-10T09:00:00+02:00 is 07:00Z: offsets must be honoured, not string order.
        cond("data.opened", "lt", "2026-01-10T07:00:00Z"),
        lambda d: datetime.fromisoformat(d["opened"]) < datetime(2026, 1, 10, 7, tzinfo=UTC),
    ),
    ("like", cond("data.title", "like", "Disk%"), lambda d: d["title"].startswith("Disk")),
    ("ilike", cond("data.title", "ilike", "%QUEUE%"), lambda d: "Queue" in d["title"]),
    ("is_null", cond("data.amount", "is_null"), lambda d: d.get("amount") is None),
    ("is_not_null", cond("data.amount", "is_not_null"), lambda d: d.get("amount") is not None),
    ("has-array", cond("data.tags", "has", "db"), lambda d: "db" in d["tags"]),
    ("has-key", cond("data.customer", "has", "tier"), lambda d: True),
    ("has-top-key", cond("data", "has", "amount"), lambda d: "amount" in d),
    ("array-index", cond("data.tags.0", "eq", "api"), lambda d: d["tags"][0] == "api"),
    (
        "and-or-not",
        {
            "and": [
                {"or": [cond("data.severity", "eq", "p0"), cond("data.severity", "eq", "p1")]},
                {"not": cond("data.status", "eq", "resolved")},
            ]
        },
        lambda d: d["severity"] in ("p0", "p1") and d["status"] != "resolved",
    ),
    (
        "system-external-id",
        cond("external_id", "in", ["INC-3", "INC-4"]),
        lambda d: d["title"].endswith(("#3", "#4")),
    ),
    ("system-version", cond("version", "eq", 1), lambda d: True),
    (
        "system-like",
        cond("external_id", "like", "INC-2_"),
        lambda d: 20 <= int(d["title"].split("#")[1]) <= 29,
    ),
]


@pytest.mark.parametrize("name,flt,pred", CASES, ids=[c[0] for c in CASES])
async def test_filter(api: httpx.AsyncClient, coll: Coll, name: str, flt: Any, pred: Any) -> None:
    out = await query(api, coll, filter=flt, limit=1000)
    got = {r["id"] for r in out["data"]}
    assert got == coll.ids(pred)
    assert out["meta"]["next_cursor"] is None


async def test_system_time_fields(api: httpx.AsyncClient, coll: Coll) -> None:
    pivot = coll.records[10]["created_at"]
    out = await query(api, coll, filter=cond("created_at", "gte", pivot), limit=1000)
    assert {r["id"] for r in out["data"]} == {r["id"] for r in coll.records[10:]}
    out = await query(api, coll, filter=cond("id", "eq", coll.records[5]["id"]))
    assert [r["id"] for r in out["data"]] == [coll.records[5]["id"]]
    assert out["data"][0] == coll.records[5] | {"seq": coll.records[5]["seq"]}


@pytest.mark.parametrize(
    "sort",
    [
        [{"field": "data.amount", "direction": "desc"}],
        [{"field": "data.amount", "direction": "asc"}],
        [{"field": "data.severity"}, {"field": "created_at", "direction": "desc"}],
        [{"field": "created_at", "direction": "desc"}],
        [{"field": "external_id", "direction": "asc"}],
        None,
    ],
)
async def test_sort_and_cursor_cover_every_record_once(
    api: httpx.AsyncClient, coll: Coll, sort: Any
) -> None:
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        body: dict[str, Any] = {"limit": 4, "sort": sort}
        if cursor:
            body["cursor"] = cursor
        out = await query(api, coll, **body)
        assert out["meta"]["limit"] == 4 and len(out["data"]) <= 4
        seen += out["data"]
        pages += 1
        cursor = out["meta"]["next_cursor"]
        if cursor is None:
            break
    ids = [r["id"] for r in seen]
    assert len(ids) == len(set(ids)) == N and pages == 8
    if sort is None:
        assert ids == [r["id"] for r in coll.records]  # creation order
    elif sort[0]["field"] == "data.amount":
        amounts = [r["data"].get("amount") for r in seen]
        present = [a for a in amounts if a is not None]
        # Missing values last in both directions; strings sort before numbers in jsonb order.
        assert amounts[len(present) :] == [None] * (len(amounts) - len(present))
        numbers = [a for a in present if num(a)]
        assert numbers == sorted(numbers, reverse=sort[0]["direction"] == "desc")
    elif sort[0]["field"] == "created_at":
        assert ids == [r["id"] for r in reversed(coll.records)]
    elif sort[0]["field"] == "external_id":
        assert [r["external_id"] for r in seen] == sorted(f"INC-{i}" for i in range(N))
    else:
        keys = [(r["data"]["severity"], r["created_at"]) for r in seen]
        assert [k[0] for k in keys] == sorted(k[0] for k in keys)


async def test_fields_count_offset(api: httpx.AsyncClient, coll: Coll) -> None:
    out = await query(
        api,
        coll,
        filter=cond("data.severity", "eq", "p2"),
        fields=["id", "version", "data.title", "data.customer.tier", "data.nope"],
        count=True,
        limit=3,
    )
    assert out["meta"]["total"] == len(coll.ids(lambda d: d["severity"] == "p2")) == 7
    first = out["data"][0]
    assert set(first) == {"id", "version", "data"}
    src = next(r for r in coll.records if r["id"] == first["id"])
    assert first["data"] == {
        "title": src["data"]["title"],
        "customer": {"tier": src["data"]["customer"]["tier"]},
    }
    page2 = await query(api, coll, filter=cond("data.severity", "eq", "p2"), offset=3, limit=3)
    everything = await query(api, coll, filter=cond("data.severity", "eq", "p2"))
    assert [r["id"] for r in page2["data"]] == [r["id"] for r in everything["data"][3:6]]


async def test_search_ranks_with_score(api: httpx.AsyncClient, coll: Coll) -> None:
    out = await query(api, coll, filter=cond("data.title", "search", "latncy spike"), limit=100)
    assert out["data"], "a misspelt word still matches by trigrams"
    assert all(r["data"]["title"].startswith("API latency") for r in out["data"])
    scores = [r["_search_score"] for r in out["data"]]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= 1
    whole = await query(api, coll, filter=cond("data", "search", "failover"), limit=100)
    assert {r["id"] for r in whole["data"]} == coll.ids(lambda d: "failover" in d["title"])


async def test_aggregates(api: httpx.AsyncClient, coll: Coll) -> None:
    r = await api.post(
        coll.url + "/aggregate",
        json={
            "filter": cond("data.status", "neq", "resolved"),
            "group_by": ["data.severity", "data.customer.tier"],
            "aggregations": [
                {"fn": "count"},
                {"fn": "sum", "field": "data.amount"},
                {"fn": "avg", "field": "data.amount", "alias": "mean"},
                {"fn": "min", "field": "data.amount"},
                {"fn": "max", "field": "data.amount"},
                {"fn": "count", "field": "data.amount"},
            ],
        },
    )
    assert r.status_code == 200, r.text
    rows = r.json()["data"]
    expected: dict[tuple[str, str], list[Any]] = {}
    for rec in coll.records:
        d = rec["data"]
        if d["status"] == "resolved":
            continue
        expected.setdefault((d["severity"], d["customer"]["tier"]), []).append(d.get("amount"))
    assert [(x["data.severity"], x["data.customer.tier"]) for x in rows] == sorted(expected)
    for row in rows:
        values = expected[(row["data.severity"], row["data.customer.tier"])]
        nums = [v for v in values if num(v)]
        assert row["count"] == len(values)
        assert row["count_data.amount"] == len([v for v in values if v is not None])
        assert row["sum_data.amount"] == (pytest.approx(sum(nums)) if nums else None)
        assert row["min_data.amount"] == (min(nums) if nums else None)
        assert row["max_data.amount"] == (max(nums) if nums else None)
        if nums:
            assert row["mean"] == pytest.approx(sum(nums) / len(nums))
    total = (await api.post(coll.url + "/aggregate", json={})).json()
    assert total["data"] == [{"count": N}]


async def test_as_of_reconstructs_the_collection(api: httpx.AsyncClient) -> None:
    ws = unique("wsq")
    await api.post("/v1/workspaces", json={"id": ws})
    await api.put(f"/v1/{ws}/collections/tasks", json={"json_schema": {"type": "object"}})
    url = f"/v1/{ws}/collections/tasks/records"
    recs = [
        (
            await api.post(url, json={"data": {"n": i, "state": "todo"}, "external_id": f"T{i}"})
        ).json()
        for i in range(5)
    ]
    cut = await head(api, ws)
    await api.patch(f"{url}/{recs[0]['id']}", json={"data": {"state": "done"}})
    await api.delete(f"{url}/{recs[1]['id']}")
    late = (await api.post(url, json={"data": {"n": 9, "state": "todo"}})).json()

    now = (await api.post(url + "/query", json={"filter": cond("data.state", "eq", "todo")})).json()
    assert {r["id"] for r in now["data"]} == {
        recs[2]["id"],
        recs[3]["id"],
        recs[4]["id"],
        late["id"],
    }
    then = (
        await api.post(
            url + "/query",
            json={"filter": cond("data.state", "eq", "todo"), "as_of": cut, "count": True},
        )
    ).json()
    assert [r["id"] for r in then["data"]] == [r["id"] for r in recs]
    assert then["meta"]["total"] == 5 and then["meta"]["as_of_seq"] == cut
    # The reconstructed rows have the same shape and values as the live ones had.
    assert then["data"] == recs
    # Paging works the same over the past.
    p1 = (await api.post(url + "/query", json={"as_of": cut, "limit": 3})).json()
    p2 = (
        await api.post(
            url + "/query", json={"as_of": cut, "limit": 3, "cursor": p1["meta"]["next_cursor"]}
        )
    ).json()
    assert [r["id"] for r in p1["data"] + p2["data"]] == [r["id"] for r in recs]
    # An ISO instant works too; before the first record there was nothing.
    early = (
        await api.post(url + "/query", json={"as_of": recs[0]["created_at"], "count": True})
    ).json()
    assert early["meta"]["total"] == 1
    agg = (
        await api.post(url + "/aggregate", json={"group_by": ["data.state"], "as_of": cut + 1})
    ).json()
    assert agg["data"] == [{"data.state": "done", "count": 1}, {"data.state": "todo", "count": 4}]


async def test_not_found_and_permissions(api: httpx.AsyncClient, coll: Coll, server: Any) -> None:
    r = await api.post(f"/v1/{unique()}/collections/incidents/records/query", json={})
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    r = await api.post(f"/v1/{coll.ws}/collections/nope/records/aggregate", json={})
    assert r.status_code == 404 and "collection" in r.json()["error"]["message"]
    other = unique()
    await api.post("/v1/workspaces", json={"id": other})
    key = (
        await api.post(
            "/v1/api-keys", json={"name": "scoped", "permissions": ["read"], "workspaces": [other]}
        )
    ).json()["key"]
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}
    ) as scoped:
        r = await scoped.post(coll.url + "/query", json={})
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"


def _forge(cursor: str, **changes: Any) -> str:
    payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    payload.update(changes)
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("unknown-op", {"filter": cond("data.a", "equals", 1)}, "$.filter.op"),
    ("unknown-field", {"filter": cond("title", "eq", 1)}, "$.filter.field"),
    ("bad-path", {"filter": cond("data.a..b", "eq", 1)}, "$.filter.field"),
    ("data-root", {"filter": cond("data", "eq", 1)}, "$.filter.field"),
    ("gt-object", {"filter": cond("data.a", "gt", {"x": 1})}, "$.filter.value"),
    (
        "gt-list",
        {"filter": {"and": [cond("data.a", "eq", 1), cond("data.a", "gt", [1])]}},
        "$.filter.and[1].value",
    ),
    ("in-not-list", {"filter": cond("data.a", "in", "p0")}, "$.filter.value"),
    ("in-empty", {"filter": cond("data.a", "in", [])}, "$.filter.value"),
    ("in-object-item", {"filter": cond("data.a", "in", [1, {"x": 1}])}, "$.filter.value[1]"),
    ("like-number", {"filter": cond("data.a", "like", 5)}, "$.filter.value"),
    ("like-escape", {"filter": cond("data.a", "like", "abc\\")}, "$.filter.value"),
    ("has-object", {"filter": cond("data.a", "has", {"x": 1})}, "$.filter.value"),
    ("eq-null", {"filter": cond("data.a", "eq", None)}, "$.filter.value"),
    ("missing-value", {"filter": {"field": "data.a", "op": "gt"}}, "$.filter.value"),
    ("bad-date", {"filter": cond("data.a", "gt", "2026-13-45T00:00:00Z")}, "$.filter.value"),
    ("version-string", {"filter": cond("version", "eq", "1")}, "$.filter.value"),
    ("id-not-uuid", {"filter": cond("id", "in", ["x"])}, "$.filter.value[0]"),
    (
        "created-no-zone",
        {"filter": cond("created_at", "gt", "2026-01-01T00:00:00")},
        "$.filter.value",
    ),
    ("search-system", {"filter": cond("external_id", "search", "x")}, "$.filter.op"),
    ("unknown-key", {"filter": {"field": "data.a", "op": "eq", "value": 1, "x": 2}}, "$.filter.x"),
    ("group-extra", {"filter": {"and": [cond("data.a", "eq", 1)], "or": []}}, "$.filter.or"),
    ("empty-or", {"filter": {"or": []}}, "$.filter.or"),
    ("node-not-object", {"filter": {"and": [1]}}, "$.filter.and[0]"),
    (
        "too-deep",
        {
            "filter": {
                "not": {
                    "not": {
                        "not": {"not": {"not": {"not": {"not": {"not": cond("data.a", "eq", 1)}}}}}
                    }
                }
            }
        },
        "$.filter.not.not.not.not.not.not.not.not",
    ),
    (
        "too-many",
        {"filter": {"or": [cond("data.a", "eq", i) for i in range(101)]}},
        "$.filter.or[100]",
    ),
    ("limit-zero", {"limit": 0}, "$.limit"),
    ("limit-big", {"limit": 1001}, "$.limit"),
    ("limit-text", {"limit": "10"}, "$.limit"),
    ("offset-negative", {"offset": -1}, "$.offset"),
    ("sort-direction", {"sort": [{"field": "data.a", "direction": "up"}]}, "$.sort[0].direction"),
    ("sort-field", {"sort": [{"field": "nope"}]}, "$.sort[0].field"),
    ("sort-score-no-search", {"sort": [{"field": "_search_score"}]}, "$.sort[0].field"),
    ("fields-bad", {"fields": ["id", "data.a b"]}, "$.fields[1]"),
    ("cursor-garbage", {"cursor": "not a cursor!"}, "$.cursor"),
    ("as_of-bad", {"as_of": "yesterday"}, "as_of"),
    ("filter-bad-json-text", {"filter": "{nope"}, "$.filter"),
]


@pytest.mark.parametrize("name,body,path", BAD, ids=[b[0] for b in BAD])
async def test_bad_input_is_a_clear_error(
    api: httpx.AsyncClient, coll: Coll, name: str, body: dict[str, Any], path: str
) -> None:
    before = await head(api, coll.ws)
    r = await api.post(coll.url + "/query", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "VALIDATION_ERROR"
    assert err["details"][0]["path"] == path, err
    assert err["message"]
    assert await head(api, coll.ws) == before


async def test_cursor_misuse(api: httpx.AsyncClient, coll: Coll) -> None:
    out = await query(api, coll, limit=5, sort=[{"field": "data.amount"}])
    cursor = out["meta"]["next_cursor"]
    attempts = [
        {"cursor": cursor, "sort": [{"field": "data.amount"}], "offset": 5},  # both
        {"cursor": cursor, "sort": [{"field": "data.amount", "direction": "desc"}]},  # other query
        {"cursor": cursor, "sort": [{"field": "data.amount"}], "filter": cond("data.a", "eq", 1)},
        {
            "cursor": _forge(cursor, v=["1", "00000000-0000-0000-0000-000000000000"]),
            "sort": [{"field": "data.amount"}],
        },
        {"cursor": _forge(cursor, k="rec"), "sort": [{"field": "data.amount"}]},
        {"cursor": cursor[:-3], "sort": [{"field": "data.amount"}]},
        {"cursor": 12, "sort": [{"field": "data.amount"}]},
    ]
    for body in attempts:
        r = await api.post(coll.url + "/query", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["details"][0]["path"] in ("$.cursor", "$.offset")
    r = await api.post(
        coll.url + "/query", json={"cursor": cursor, "sort": [{"field": "data.amount"}]}
    )
    assert r.status_code == 200


AGG_BAD: list[tuple[dict[str, Any], str]] = [
    ({"aggregations": [{"fn": "median", "field": "data.a"}]}, "$.aggregations[0].fn"),
    ({"aggregations": [{"fn": "sum"}]}, "$.aggregations[0].field"),
    ({"aggregations": [{"fn": "sum", "field": "external_id"}]}, "$.aggregations[0].field"),
    ({"aggregations": [{"fn": "count", "alias": "bad alias"}]}, "$.aggregations[0].alias"),
    ({"aggregations": [{"fn": "count"}, {"fn": "count"}]}, "$.aggregations[1].alias"),
    ({"aggregations": []}, "$.aggregations"),
    ({"group_by": ["data.a", "data.a"]}, "$.group_by[1]"),
    ({"group_by": ["nope"]}, "$.group_by[0]"),
    ({"filter": cond("data.a", "nope", 1)}, "$.filter.op"),
]


@pytest.mark.parametrize("body,path", AGG_BAD)
async def test_bad_aggregate(api: httpx.AsyncClient, coll: Coll, body: Any, path: str) -> None:
    r = await api.post(coll.url + "/aggregate", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"][0]["path"] == path


async def test_unknown_body_key_is_refused(api: httpx.AsyncClient, coll: Coll) -> None:
    r = await api.post(coll.url + "/query", json={"filtre": {}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = await api.post(
        coll.url + "/query", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400


INJECTIONS = [
    "'; DROP TABLE records; --",
    '" OR 1=1 --',
    "x' OR '1'='1",
    "%s",
    "%(x)s",
    "$1",
    "\\'",
    "}'::jsonb; SELECT pg_sleep(5); --",
]


@pytest.mark.parametrize("evil", INJECTIONS)
async def test_injection_strings_are_data(api: httpx.AsyncClient, coll: Coll, evil: str) -> None:
    before = await head(api, coll.ws)
    for op in ("eq", "neq", "like", "ilike", "gt", "in", "has", "search"):
        value = [evil] if op == "in" else evil
        r = await api.post(coll.url + "/query", json={"filter": cond("data.title", op, value)})
        assert r.status_code == 200, (op, r.text)
        titles = [rec["data"]["title"] for rec in coll.records]
        expected = {"neq": N, "gt": sum(t > evil for t in titles)}.get(op, 0)
        if op != "search":  # fuzzy by design: "OR 1=1" shares trigrams with "worker-1"
            assert len(r.json()["data"]) == expected, op
    for op in ("eq", "like"):
        r = await api.post(coll.url + "/query", json={"filter": cond("external_id", op, evil)})
        assert r.status_code == 200 and r.json()["data"] == []
    # As a field path or sort field it is refused, never run.
    for body in (
        {"filter": cond(f"data.{evil}", "eq", 1)},
        {"sort": [{"field": f"data.{evil}"}]},
        {"fields": [f"data.{evil}"]},
    ):
        r = await api.post(coll.url + "/query", json=body)
        assert r.status_code == 422, r.text
    r = await api.post(coll.url + "/aggregate", json={"group_by": [f"data.{evil}"]})
    assert r.status_code == 422
    r = await api.post(
        coll.url + "/aggregate", json={"aggregations": [{"fn": "count", "alias": evil}]}
    )
    assert r.status_code == 422
    assert await head(api, coll.ws) == before
    assert (await query(api, coll, count=True))["meta"]["total"] == N


async def test_query_route_is_not_a_record_id(api: httpx.AsyncClient, coll: Coll) -> None:
    # The static /query segment wins over /{record_id}: other methods on it are refused
    # cleanly, and records by id still route to their handlers.
    r = await api.get(coll.url + "/query")
    assert r.status_code == 405 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = await api.get(f"{coll.url}/{coll.records[0]['id']}")
    assert r.status_code == 200 and r.json()["id"] == coll.records[0]["id"]
    r = await api.post(coll.url + "/query", json={"limit": 1})
    assert r.status_code == 200 and len(r.json()["data"]) == 1


async def test_typed_schema_aggregates_match_untyped(api: httpx.AsyncClient) -> None:
    # Fields the schema pins to one type are grouped and summed as text/numeric, others as
    # jsonb: both must give the same answer on the same records.
    ws = unique("wsq")
    await api.post("/v1/workspaces", json={"id": ws})
    typed = {
        "type": "object",
        "properties": {
            "kind": {"enum": ["a", "b", None]},
            "n": {"type": "integer"},
            "x": {"type": ["number", "null"]},
            "ok": {"type": "boolean"},
            "meta": {"type": "object", "properties": {"tier": {"type": "string"}}},
        },
    }
    await api.put(f"/v1/{ws}/collections/typed", json={"json_schema": typed})
    await api.put(f"/v1/{ws}/collections/loose", json={"json_schema": {"type": "object"}})
    for i in range(24):
        data: dict[str, Any] = {
            "kind": [None, "a", "b"][i % 3],
            "n": i % 4,
            "ok": i % 2 == 0,
            "meta": {"tier": "gold" if i % 5 else "silver"},
        }
        if i % 6:
            data["x"] = i * 0.25 if i % 4 else None
        for coll in ("typed", "loose"):
            r = await api.post(f"/v1/{ws}/collections/{coll}/records", json={"data": data})
            assert r.status_code == 201, r.text
    body = {
        "group_by": ["data.kind", "data.ok", "data.n", "data.meta.tier"],
        "aggregations": [
            {"fn": "count"},
            {"fn": "count", "field": "data.x"},
            {"fn": "sum", "field": "data.x"},
            {"fn": "avg", "field": "data.n"},
            {"fn": "min", "field": "data.x"},
            {"fn": "max", "field": "data.n"},
        ],
    }
    out = {}
    for coll in ("typed", "loose"):
        r = await api.post(f"/v1/{ws}/collections/{coll}/records/aggregate", json=body)
        assert r.status_code == 200, r.text
        out[coll] = r.json()["data"]
    assert out["typed"] == out["loose"]
    assert sum(row["count"] for row in out["typed"]) == 24
    assert {type(row["data.n"]) for row in out["typed"]} == {int}
    assert {row["data.ok"] for row in out["typed"]} == {True, False}


async def test_openapi_documents_query_operations(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/schema/openapi.json")).json()
    ops = {
        op["operationId"]: op
        for path in spec["paths"].values()
        for op in path.values()
        if isinstance(op, dict) and "operationId" in op
    }
    for name in ("queryRecords", "aggregateRecords"):
        assert ops[name]["description"], name
