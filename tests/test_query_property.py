"""Property: for random records and random filters, the SQL engine returns exactly the records
a plain-Python reading of the filter semantics (projections/query.py docstring) selects, and
keyset paging under a random sort visits each of them once, in order."""

from __future__ import annotations

import asyncio
import itertools
import re
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands.principal import SYSTEM
from projections import query as engine
from projections.query import DATETIME_RE
from tests.conftest import unique

MISSING = object()

# Small vocabularies, so that random filters actually hit random records.
KEYS = ["a", "b", "c", "d"]
STRINGS = ["", "a", "b", "ab", "A", "Ab", "a%b", "a_b", "x\\y", "é", "10", "true"]
DATETIMES = [
    "2026-01-01T00:00:00Z",
    "2026-01-01T01:00:00+01:00",  # the same instant as the line above
    "2026-01-01T00:30:00Z",
    "2025-12-31T23:59:59.5-01:00",
    "2026-01-01 02:00:00+02",
    "2026-02-30T00:00:00Z",  # looks like one, is not a date: never matches
]
FIELDS = ["data.a", "data.b", "data.c.a", "data.c.b", "data.d", "data.d.0", "data.d.-1"]

scalars = st.one_of(
    st.integers(-3, 3),
    st.integers(-6, 6).map(lambda n: n / 2),
    st.sampled_from(STRINGS),
    st.booleans(),
    st.sampled_from(DATETIMES),
)
# Filter values: the same, minus the invalid date (a filter value that looks like a datetime
# but is not one is refused, which test_query.py covers).
filter_scalars = st.one_of(
    st.integers(-3, 3),
    st.integers(-6, 6).map(lambda n: n / 2),
    st.sampled_from(STRINGS),
    st.booleans(),
    st.sampled_from(DATETIMES[:-1]),
)
values = st.recursive(
    st.one_of(st.none(), scalars),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=6,
)
records = st.lists(
    st.tuples(
        st.dictionaries(st.sampled_from(KEYS), values, max_size=4),
        st.one_of(st.none(), st.sampled_from(["e1", "e2", "E3", "x"])),
    ),
    max_size=18,
)


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    field = st.sampled_from(FIELDS)
    ext = st.just("external_id")
    pattern = st.sampled_from(["a%", "%b", "_", "%", "a\\%b", "A%", "%\\_%", "x\\\\y", "1_"])
    return st.one_of(
        st.builds(
            lambda f, op, v: {"field": f, "op": op, "value": v},
            field,
            st.sampled_from(["eq", "neq"]),
            st.one_of(
                filter_scalars,
                st.lists(filter_scalars, max_size=2),
                st.dictionaries(st.sampled_from(KEYS), filter_scalars, max_size=2),
            ),
        ),
        st.builds(
            lambda f, op, v: {"field": f, "op": op, "value": v},
            field,
            st.sampled_from(["in", "not_in"]),
            st.lists(filter_scalars, min_size=1, max_size=4),
        ),
        st.builds(
            lambda f, op, v: {"field": f, "op": op, "value": v},
            field,
            st.sampled_from(["gt", "gte", "lt", "lte"]),
            filter_scalars,
        ),
        st.builds(
            lambda f, op, v: {"field": f, "op": op, "value": v},
            st.one_of(field, ext),
            st.sampled_from(["like", "ilike"]),
            pattern,
        ),
        st.builds(
            lambda f, op: {"field": f, "op": op},
            st.one_of(field, ext),
            st.sampled_from(["is_null", "is_not_null"]),
        ),
        st.builds(
            lambda f, v: {"field": f, "op": "has", "value": v},
            st.one_of(field, st.just("data")).filter(lambda f: f != "data.d.-1"),
            filter_scalars,
        ).filter(lambda c: c["field"] != "data" or isinstance(c["value"], str)),
        st.builds(
            lambda op, v: {"field": "external_id", "op": op, "value": v},
            st.sampled_from(["eq", "neq", "gt", "lte"]),
            st.sampled_from(["e1", "e2", "E3", "x", "e"]),
        ),
        st.builds(
            lambda op, v: {"field": "external_id", "op": op, "value": v},
            st.sampled_from(["in", "not_in"]),
            st.lists(st.sampled_from(["e1", "e2", "x"]), min_size=1, max_size=3),
        ),
    )


filters = st.recursive(
    _leaf(),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"and": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"or": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
    ),
    max_leaves=8,
)
sorts = st.lists(
    st.fixed_dictionaries(
        {
            "field": st.sampled_from([*FIELDS, "external_id", "created_at"]),
            "direction": st.sampled_from(["asc", "desc"]),
        }
    ),
    max_size=2,
)


# -- the reference evaluator ------------------------------------------------------------------


def get(data: Any, path: list[str]) -> Any:
    """PostgreSQL's `#>`: keys on objects, integer positions (negative from the end) on arrays."""
    v = data
    for seg in path:
        if isinstance(v, dict):
            if seg not in v:
                return MISSING
            v = v[seg]
        elif isinstance(v, list) and re.fullmatch(r"-?\d+", seg):
            i = int(seg)
            if not -len(v) <= i < len(v):
                return MISSING
            v = v[i]
        else:
            return MISSING
    return v


def is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def jtype(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if is_num(v):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def jeq(a: Any, b: Any) -> bool:
    """jsonb equality: numbers by value, no bool/number confusion."""
    if jtype(a) != jtype(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(jeq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(jeq(a[k], b[k]) for k in a)
    return bool(a == b)


def instant(v: Any) -> datetime | None:
    if not isinstance(v, str) or not DATETIME_RE.match(v):
        return None
    try:
        return datetime.fromisoformat(v)
    except ValueError:
        return None


def like(text: str, pattern: str, fold: bool) -> bool:
    rx = ""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            rx += re.escape(pattern[i + 1])
            i += 2
            continue
        rx += ".*" if ch == "%" else "." if ch == "_" else re.escape(ch)
        i += 1
    if fold:  # the embedded database's C collation folds ASCII letters only
        text, rx = text.lower(), rx.lower()
    return re.fullmatch(rx, text, re.DOTALL) is not None


def compare(stored: Any, op: str, value: Any) -> bool:
    at = instant(value)
    if at is not None:
        left: Any = instant(stored)
        right: Any = at
        if left is None:
            return False
    elif jtype(stored) != jtype(value):
        return False
    else:
        left, right = stored, value
    return {
        "gt": left > right,
        "gte": left >= right,
        "lt": left < right,
        "lte": left <= right,
    }[op]


def holds(node: dict[str, Any], rec: dict[str, Any]) -> bool:
    if "and" in node:
        return all(holds(n, rec) for n in node["and"])
    if "or" in node:
        return any(holds(n, rec) for n in node["or"])
    if "not" in node:
        return not holds(node["not"], rec)
    op, value = node["op"], node.get("value")
    if node["field"] == "external_id":
        v = rec["external_id"]
        v = MISSING if v is None else v
    else:
        v = get(rec["data"], node["field"].split(".")[1:])
    if op == "is_null":
        return v is MISSING or v is None
    if op == "is_not_null":
        return not (v is MISSING or v is None)
    if op in ("eq", "neq"):
        return (v is not MISSING and jeq(v, value)) == (op == "eq")
    if op in ("in", "not_in"):
        found = v is not MISSING and any(jeq(v, x) for x in value)
        return found == (op == "in")
    if v is MISSING:
        return False
    if op in ("gt", "gte", "lt", "lte"):
        return compare(v, op, value)
    if op in ("like", "ilike"):
        return isinstance(v, str) and like(v, value, op == "ilike")
    if op == "has":
        if isinstance(v, list):
            return any(jtype(x) not in ("array", "object") and jeq(x, value) for x in v)
        return isinstance(v, dict) and isinstance(value, str) and value in v
    raise AssertionError(op)


def sort_rank(v: Any) -> tuple[int, Any]:
    """jsonb order for what the test checks: type rank, then the value for scalars."""
    if v == []:
        return (-1, 0)  # an empty top-level array sorts below everything (PostgreSQL quirk)
    rank = {"string": 1, "number": 2, "boolean": 3, "array": 4, "object": 5}[jtype(v)]
    return (rank, v if rank < 4 else 0)


# -- the property -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def prop_ws(service: Any) -> str:
    ws = unique("wsprop")
    await service.create_workspace(SYSTEM, ws)
    return ws


@settings(
    max_examples=70,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=records, flts=st.lists(filters, min_size=1, max_size=4), sort=sorts)
async def test_sql_engine_agrees_with_python(
    monkeypatch: pytest.MonkeyPatch,
    service: Any,
    prop_ws: str,
    rows: list[tuple[dict[str, Any], str | None]],
    flts: list[Any],
    sort: list[Any],
) -> None:
    # Tiny walk windows, so pages of 3 exercise both the ordered walk and its bitmap fallback
    # (a window of 8 rows: some pages fill inside it, some don't).
    monkeypatch.setattr(engine, "WALK_ROWS_PER_RESULT", 2)
    monkeypatch.setattr(engine, "WALK_MIN", 1)
    coll = unique("c")
    await service.upsert_collection(SYSTEM, prop_ws, coll, {"type": "object"})
    # External ids are unique per collection; repeats become None.
    seen_ext: set[str] = set()
    items = []
    for data, ext in rows:
        if ext in seen_ext:
            ext = None
        if ext:
            seen_ext.add(ext)
        items.append((data, ext))
    results = await asyncio.gather(
        *(service.upsert_record(SYSTEM, prop_ws, coll, d, external_id=e) for d, e in items)
    )
    stored = [
        {"id": r.body["id"], "data": d, "external_id": e, "created_at": r.body["created_at"]}
        for r, (d, e) in zip(results, items, strict=True)
    ]
    for flt in flts:
        expected = {r["id"] for r in stored if holds(flt, r)}
        out = await service.query_records(SYSTEM, prop_ws, coll, filter=flt, limit=1000)
        got = {r["id"] for r in out["data"]}
        assert got == expected, flt

        # The same through keyset pages of 3 under a random sort.
        paged: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await service.query_records(
                SYSTEM, prop_ws, coll, filter=flt, sort=sort, limit=3, cursor=cursor
            )
            paged += page["data"]
            cursor = page["meta"]["next_cursor"]
            if cursor is None:
                break
        ids = [r["id"] for r in paged]
        assert len(ids) == len(set(ids)) and set(ids) == expected, (flt, sort)
        if sort and sort[0]["field"].startswith("data."):
            path = sort[0]["field"].split(".")[1:]
            keys = [get(r["data"], path) for r in paged]
            present = [k for k in keys if k is not MISSING and k is not None]
            # Missing and null last, in both directions.
            assert all(k is MISSING or k is None for k in keys[len(present) :])
            ranks = [sort_rank(k) for k in present]
            if sort[0]["direction"] == "desc":
                ranks.reverse()
            for x, y in itertools.pairwise(ranks):
                assert x[0] <= y[0]
                if x[0] == y[0] and x[0] in (1, 2, 3):
                    assert x[1] <= y[1], (x, y)

    # Aggregates agree too: counts per value of one field, and a numeric sum.
    out = await service.aggregate_records(
        SYSTEM,
        prop_ws,
        coll,
        group_by=["data.a"],
        aggregations=[{"fn": "count"}, {"fn": "sum", "field": "data.b"}],
    )
    total = sum(row["count"] for row in out["data"])
    assert total == len(stored)
    numbers = [r["data"].get("b") for r in stored]
    want = sum(n for n in numbers if is_num(n))
    got_sum = sum(row["sum_data.b"] or 0 for row in out["data"])
    assert got_sum == pytest.approx(want)


async def test_each_walk_strategy_returns_the_exact_first_page(
    monkeypatch: pytest.MonkeyPatch, service: Any, prop_ws: str
) -> None:
    """A filtered page newest first is found by the probe alone (dense filter), the probe then
    the whole window (1 in 10 rows match), the index after an empty probe (rare), or an
    unbounded ordered walk (no index serves the filter). Each strategy is seen taking its
    path, and each returns exactly the first matches in sort order."""
    monkeypatch.setattr(engine, "WALK_ROWS_PER_RESULT", 20)
    monkeypatch.setattr(engine, "WALK_MIN", 1)  # limit 5: window 120 rows, probe 12
    coll = unique("c")
    await service.upsert_collection(SYSTEM, prop_ws, coll, {"type": "object"})
    stored = []
    for i in range(300):  # sequential: creation order is insertion order
        data = {"all": 1, "tenth": i % 10 == 0, "rare": i in (7, 150), "n": i}
        out = await service.upsert_record(SYSTEM, prop_ws, coll, data)
        stored.append((out.body["id"], data))
    newest = list(reversed(stored))

    windows_run: list[int] = []
    fetches: list[int] = []
    real_window_sql, real_fetch = engine._window_sql, engine._fetch

    def window_spy(ws: str, c: str, plan: Any, window: int) -> Any:
        windows_run.append(window)
        return real_window_sql(ws, c, plan, window)

    async def fetch_spy(conn: Any, q: Any) -> Any:
        fetches.append(1)
        return await real_fetch(conn, q)

    monkeypatch.setattr(engine, "_window_sql", window_spy)
    monkeypatch.setattr(engine, "_fetch", fetch_spy)
    sort = [{"field": "created_at", "direction": "desc"}]
    cases = [
        # filter, predicate, windows walked, whether an unwindowed statement follows
        ({"field": "data.all", "op": "eq", "value": 1}, lambda d: True, [12], False),
        (
            {"field": "data.tenth", "op": "eq", "value": True},
            lambda d: d["tenth"],
            [12, 120],
            False,
        ),
        ({"field": "data.rare", "op": "eq", "value": True}, lambda d: d["rare"], [12], True),
        ({"field": "data.n", "op": "lt", "value": 3}, lambda d: d["n"] < 3, [12], True),
    ]
    for flt, pred, windows, then_unbounded in cases:
        windows_run.clear()
        fetches.clear()
        out = await service.query_records(SYSTEM, prop_ws, coll, filter=flt, sort=sort, limit=5)
        want = [rid for rid, d in newest if pred(d)][:5]
        assert [r["id"] for r in out["data"]] == want, flt
        assert windows_run == windows, flt
        assert len(fetches) == len(windows) + then_unbounded, flt


async def test_data_index_takes_writes_directly(service: Any) -> None:
    """No GIN pending list for lookups to scan: new records go straight into the index."""
    async with service.connection() as conn:
        cur = await conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'records_data_gin'"
        )
        assert "fastupdate=off" in ((await cur.fetchone())[0] or [])
