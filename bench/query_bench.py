"""Query-engine benchmark: filtered, sorted pages and grouped aggregates over one collection of
1,000,000 records (issue 3 targets: indexed eq/in + sort + limit 50 at p50 <= 10 ms and
p99 <= 50 ms; a grouped count over the whole collection <= 1 s).

    uv run python -m bench.query_bench [--records 1000000] [--iterations 300]
        [--data-dir DIR] [--http] [--pocketbase] [--explain]

Loading: record.created events are generated as the write path would (same event structs,
`event_to_dict`, one stream per record, consecutive seqs, increasing recorded_at), COPYed into
`events`, and then applied by the real projector (`projections.projector.apply`) in big
transactions in pipeline mode, so `records` holds exactly what the projector produces. The
command layer (schema validation, group commit) is skipped: it is not what is measured here.
With --data-dir the loaded database is kept and reused by later runs.

Measured: each query through `RekorService.query_records` / `aggregate_records` in-process
(and with --http over REST against `rekor serve` on the same database), sequentially, with
varying parameter values, after a warm-up; p50 / p99 in ms. --pocketbase loads the same rows
into PocketBase (its SQLite file, written directly, with indexes on the filtered fields) and
times the equivalent list/filter/sort requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import uuid_utils

from deploy.stack import EmbeddedStack

WS = "ws_qbench"
COLL = "incidents"
SEVERITIES = ["p0", "p1", "p2", "p3"]
STATUSES = ["open", "investigating", "resolved"]
TAGS = ["db", "api", "network", "storage", "auth", "billing"]
CUSTOMERS = 10_000
ASSIGNEES = [f"oncall{i}@team.dev" for i in range(50)]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# What a user would declare for these records. Typed fields let aggregates read values as
# text instead of jsonb (see projections.query.schema_scalar_type).
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["title", "severity", "status"],
    "properties": {
        "title": {"type": "string"},
        "severity": {"enum": SEVERITIES},
        "status": {"enum": STATUSES},
        "assignee": {"type": "string"},
        "customer_id": {"type": "integer"},
        "amount": {"type": "number"},
        "opened_at": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}


def record_data(i: int, rnd: random.Random) -> dict[str, Any]:
    """One synthetic incident: a few low-cardinality fields, one selective, numbers, dates."""
    return {
        "title": f"Incident {i}: {rnd.choice(['latency', 'outage', 'error rate', 'timeout'])}"
        f" in {rnd.choice(['us-east-1', 'eu-west-1', 'ap-south-1'])}",
        "severity": rnd.choice(SEVERITIES),
        "status": rnd.choice(STATUSES),
        "assignee": rnd.choice(ASSIGNEES),
        "customer_id": rnd.randrange(CUSTOMERS),
        "amount": round(rnd.uniform(0, 10_000), 2),
        "opened_at": (T0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
        "tags": rnd.sample(TAGS, rnd.randint(1, 3)),
    }


# ---- loading -------------------------------------------------------------------------------


async def load(service: Any, n: int, batch: int = 20_000) -> float:
    """Create the workspace/collection through the service, then n records through the log and
    the projector. Returns seconds spent."""
    from commands.principal import SYSTEM
    from events.registry import event_to_dict
    from events.store import StoredEvent
    from events.types import RecordCreated
    from projections.projector import apply

    await service.create_workspace(SYSTEM, WS)
    await service.upsert_collection(SYSTEM, WS, COLL, SCHEMA)
    rnd = random.Random(42)
    started = time.perf_counter()
    encode = msgspec.json.Encoder().encode
    meta = {"actor": "bench loader", "interface": "bench"}
    async with service.pool.connection() as conn:
        # Each batch is its own transaction (a savepoint inside one big one would hold all).
        await conn.set_autocommit(True)
        cur = await conn.execute("SELECT head FROM workspaces WHERE workspace_id = %s", (WS,))
        head = (await cur.fetchone())[0]
        base = datetime.now(UTC)
        for start in range(0, n, batch):
            stored = []
            for i in range(start, min(n, start + batch)):
                head += 1
                rid = str(uuid_utils.uuid7())
                event = RecordCreated(id=rid, collection=COLL, data=record_data(i, rnd))
                stored.append(
                    StoredEvent(
                        workspace_id=WS,
                        seq=head,
                        event_id=str(uuid_utils.uuid7()),
                        type="record.created",
                        stream=f"record:{rid}",
                        stream_version=1,
                        event=event,
                        metadata=meta,
                        recorded_at=base + timedelta(microseconds=head),
                    )
                )
            async with conn.transaction():
                async with conn.cursor().copy(
                    "COPY events (workspace_id, seq, event_id, type, stream, stream_version,"
                    " data, metadata, recorded_at) FROM STDIN"
                ) as cp:
                    for s in stored:
                        await cp.write_row(
                            (
                                s.workspace_id,
                                s.seq,
                                s.event_id,
                                s.type,
                                s.stream,
                                s.stream_version,
                                encode(event_to_dict(s.event)).decode(),
                                encode(s.metadata).decode(),
                                s.recorded_at,
                            )
                        )
                async with conn.pipeline():
                    for s in stored:
                        await apply(conn, s)
                await conn.execute(
                    "UPDATE workspaces SET head = %s WHERE workspace_id = %s", (head, WS)
                )
            done = min(n, start + batch)
            rate = done / (time.perf_counter() - started)
            print(f"  loaded {done:,} records ({rate:,.0f}/s)", file=sys.stderr, flush=True)
        # Fresh statistics and visibility map, as autovacuum would leave them after a while.
        await conn.execute("VACUUM ANALYZE records")
        await conn.execute("VACUUM ANALYZE events")
        await conn.set_autocommit(False)
    return time.perf_counter() - started


# ---- the queries -----------------------------------------------------------------------------


def cond(field: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


NEWEST = [{"field": "created_at", "direction": "desc"}]

# name -> function(random) -> query_records kwargs. Parameters vary per call.
QUERIES: dict[str, Any] = {
    "eq severity, newest first (25% match)": lambda r: {
        "filter": cond("data.severity", "eq", r.choice(SEVERITIES)),
        "sort": NEWEST,
    },
    "in severity [2 values], newest first (50%)": lambda r: {
        "filter": cond("data.severity", "in", r.sample(SEVERITIES, 2)),
        "sort": NEWEST,
    },
    "eq status AND in severity, newest first (~17%)": lambda r: {
        "filter": {
            "and": [
                cond("data.status", "eq", r.choice(STATUSES)),
                cond("data.severity", "in", r.sample(SEVERITIES, 2)),
            ]
        },
        "sort": NEWEST,
    },
    "eq customer_id, newest first (~100 rows, 0.01%)": lambda r: {
        "filter": cond("data.customer_id", "eq", r.randrange(CUSTOMERS)),
        "sort": NEWEST,
    },
    "in customer_id [5 values], newest first": lambda r: {
        "filter": cond("data.customer_id", "in", [r.randrange(CUSTOMERS) for _ in range(5)]),
        "sort": NEWEST,
    },
    "eq assignee, creation order (2%)": lambda r: {
        "filter": cond("data.assignee", "eq", r.choice(ASSIGNEES)),
    },
    "has tag, newest first": lambda r: {
        "filter": cond("data.tags", "has", r.choice(TAGS)),
        "sort": NEWEST,
    },
    "eq customer_id, sort by data.amount desc": lambda r: {
        "filter": cond("data.customer_id", "eq", r.randrange(CUSTOMERS)),
        "sort": [{"field": "data.amount", "direction": "desc"}],
    },
}

# Measured separately (not index-backed by design; reported for honesty).
SLOW_QUERIES: dict[str, Any] = {
    "eq severity, sort by data.amount desc (unindexed sort)": lambda r: {
        "filter": cond("data.severity", "eq", r.choice(SEVERITIES)),
        "sort": [{"field": "data.amount", "direction": "desc"}],
    },
    "range amount > x, newest first": lambda r: {
        "filter": cond("data.amount", "gt", r.uniform(9000, 9990)),
        "sort": NEWEST,
    },
}

AGGREGATES: dict[str, dict[str, Any]] = {
    "count group_by status (whole collection)": {"group_by": ["data.status"]},
    "count + sum/avg amount group_by severity, status": {
        "group_by": ["data.severity", "data.status"],
        "aggregations": [
            {"fn": "count"},
            {"fn": "sum", "field": "data.amount"},
            {"fn": "avg", "field": "data.amount"},
        ],
    },
    "count where severity = p0 group_by assignee": {
        "filter": cond("data.severity", "eq", "p0"),
        "group_by": ["data.assignee"],
    },
}


class _SkipService(Exception):
    """--http-only: the in-process measurements are skipped."""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


async def time_calls(fn: Any, make: Any, iterations: int, warmup: int = 20) -> dict[str, float]:
    rnd = random.Random(7)
    for _ in range(warmup):
        await fn(make(rnd))
    samples = []
    rows = 0
    for _ in range(iterations):
        kwargs = make(rnd)
        t = time.perf_counter()
        out = await fn(kwargs)
        samples.append((time.perf_counter() - t) * 1000)
        rows += len(out["data"])
    return {
        "p50": statistics.median(samples),
        "p99": pct(samples, 99),
        "max": max(samples),
        "rows": rows / iterations,
        "n": iterations,
    }


async def explain(service: Any, kwargs: dict[str, Any], aggregate: bool = False) -> str:
    from projections import query as engine

    if aggregate:
        plan = engine.compile_aggregate(
            kwargs.get("filter"), kwargs.get("group_by"), kwargs.get("aggregations")
        )
        text, params, _ = engine.aggregate_sql(WS, COLL, plan, schema=SCHEMA)
    else:
        plan = engine.compile_query(WS, COLL, **kwargs)
        text, params = engine.query_sql(WS, COLL, plan)
    async with service.pool.connection() as conn:
        cur = await conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + text,  # type: ignore[operator]
            params,
        )
        return "\n".join(r[0] for r in await cur.fetchall())


# ---- HTTP ------------------------------------------------------------------------------------


def start_server(database_url: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    from bench.procs import start_rekor

    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REKOR_")}
    env["REKOR_DATABASE_URL"] = database_url
    proc, url, key = start_rekor(data_dir, data_dir / "serve.log", env=env)
    return proc, url, key or ""


async def wait_for_relay(database_url: str, max_wait_s: float = 1800) -> None:
    """`rekor serve` starts publishing the loaded events to NATS; measuring while it catches
    up would measure the catch-up. Wait until its checkpoint reaches the workspace head."""
    import psycopg

    deadline = time.monotonic() + max_wait_s
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            try:
                cur = await conn.execute(
                    "SELECT w.head - coalesce(c.seq, 0) FROM workspaces w LEFT JOIN"
                    " relay_checkpoints c USING (workspace_id) WHERE w.workspace_id = %s",
                    (WS,),
                )
            except psycopg.errors.UndefinedTable:
                return  # no relay in this build
            row = await cur.fetchone()
            lag = row[0] if row else 0
            if lag <= 0:
                return
            print(f"  waiting for the event relay: {lag:,} events to publish", file=sys.stderr)
            await asyncio.sleep(10)


# ---- PocketBase ------------------------------------------------------------------------------


def pocketbase_bench(n: int, iterations: int, workdir: Path) -> dict[str, Any]:
    """The same records in PocketBase (SQLite), same filters, sort by created desc."""
    import sqlite3

    import httpx

    from bench.pocketbase import EMAIL, PASSWORD, find_pocketbase
    from bench.procs import free_port, spawn, stop, wait_http

    binary = find_pocketbase()
    data_dir = workdir / "pb_data"
    subprocess.run(
        [binary, "superuser", "upsert", EMAIL, PASSWORD, "--dir", str(data_dir)],
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = workdir / "pb.log"
    proc = spawn([binary, "serve", "--http", f"127.0.0.1:{port}", "--dir", str(data_dir)], log)
    url = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {}
    try:
        wait_http(url + "/api/health", proc, log, timeout=60)
        c = httpx.Client(base_url=url, timeout=60)
        token = c.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": PASSWORD},
        ).json()["token"]
        c.headers["Authorization"] = token
        fields = [
            {"name": "title", "type": "text"},
            {"name": "severity", "type": "text"},
            {"name": "status", "type": "text"},
            {"name": "assignee", "type": "text"},
            {"name": "customer_id", "type": "number"},
            {"name": "amount", "type": "number"},
            {"name": "opened_at", "type": "text"},
            {"name": "tags", "type": "json"},
            {"name": "created", "type": "autodate", "onCreate": True},
            {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
        ]
        r = c.post(
            "/api/collections",
            json={
                "name": COLL,
                "type": "base",
                "fields": fields,
                "indexes": [
                    f"CREATE INDEX idx_sev_created ON {COLL} (severity, created)",
                    f"CREATE INDEX idx_status_created ON {COLL} (status, created)",
                    f"CREATE INDEX idx_cust_created ON {COLL} (customer_id, created)",
                    f"CREATE INDEX idx_assignee ON {COLL} (assignee)",
                    f"CREATE INDEX idx_created ON {COLL} (created)",
                ],
                "listRule": "",
            },
        )
        r.raise_for_status()
        # Bulk rows straight into its SQLite file (the API would take ~10 min for 1M).
        db = sqlite3.connect(data_dir / "data.db", timeout=60)
        rnd = random.Random(42)
        t = time.perf_counter()
        rows = []
        for i in range(n):
            d = record_data(i, rnd)
            created = (T0 + timedelta(milliseconds=i)).strftime("%Y-%m-%d %H:%M:%S.%fZ")
            rows.append(
                (
                    f"{i:015d}",
                    d["title"],
                    d["severity"],
                    d["status"],
                    d["assignee"],
                    d["customer_id"],
                    d["amount"],
                    d["opened_at"],
                    json.dumps(d["tags"]),
                    created,
                    created,
                )
            )
            if len(rows) == 50_000 or i == n - 1:
                db.executemany(
                    f"INSERT INTO {COLL} (id, title, severity, status, assignee, customer_id,"
                    " amount, opened_at, tags, created, updated)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                db.commit()
                rows = []
        db.execute("ANALYZE")
        db.commit()
        db.close()
        results["load_s"] = time.perf_counter() - t
        total = c.get(f"/api/collections/{COLL}/records", params={"perPage": 1}).json()
        results["count_check"] = total.get("totalItems")

        def q(flt: str, sort: str = "-created") -> dict[str, Any]:
            return {"filter": flt, "sort": sort, "perPage": 50, "skipTotal": 1}

        pb_queries = {
            "eq severity, newest first (25% match)": lambda r: q(
                f"severity='{r.choice(SEVERITIES)}'"
            ),
            "in severity [2 values], newest first (50%)": lambda r: q(
                "(" + " || ".join(f"severity='{s}'" for s in r.sample(SEVERITIES, 2)) + ")"
            ),
            "eq status AND in severity, newest first (~17%)": lambda r: q(
                f"status='{r.choice(STATUSES)}' && ("
                + " || ".join(f"severity='{s}'" for s in r.sample(SEVERITIES, 2))
                + ")"
            ),
            "eq customer_id, newest first (~100 rows, 0.01%)": lambda r: q(
                f"customer_id={r.randrange(CUSTOMERS)}"
            ),
            "in customer_id [5 values], newest first": lambda r: q(
                "(" + " || ".join(f"customer_id={r.randrange(CUSTOMERS)}" for _ in range(5)) + ")"
            ),
            "eq assignee, creation order (2%)": lambda r: q(
                f"assignee='{r.choice(ASSIGNEES)}'", "created"
            ),
            "eq customer_id, sort by data.amount desc": lambda r: q(
                f"customer_id={r.randrange(CUSTOMERS)}", "-amount"
            ),
        }
        path = f"/api/collections/{COLL}/records"
        for name, make in pb_queries.items():
            rnd = random.Random(7)
            for _ in range(10):
                c.get(path, params=make(rnd)).raise_for_status()
            samples = []
            for _ in range(iterations):
                params = make(rnd)
                t = time.perf_counter()
                c.get(path, params=params).raise_for_status()
                samples.append((time.perf_counter() - t) * 1000)
            results[name] = {"p50": statistics.median(samples), "p99": pct(samples, 99)}
            print(f"  PocketBase {name}: {results[name]}", file=sys.stderr, flush=True)
    finally:
        stop(proc)
    return results


# ---- main ------------------------------------------------------------------------------------


async def prewarm(service: Any) -> str:
    """Load the records table and its indexes into PostgreSQL's page cache (pg_prewarm), so
    every system is measured warm: right after a restart each query reads its pages from the
    OS cache into an empty page cache (PocketBase's SQLite uses the OS cache, warm after its
    load), and the first few hundred random-value queries measure that filling."""
    async with service.pool.connection() as conn:
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        except Exception as exc:  # a server without the contrib module
            return f"skipped: {exc}"
        cur = await conn.execute(
            "SELECT sum(pg_prewarm(c.oid::regclass)) FROM pg_class c WHERE c.relname = 'records'"
            " OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'records'::regclass)"
        )
        pages = (await cur.fetchone())[0]
    return f"{pages} pages"


async def run(args: argparse.Namespace, database_url: str, workdir: Path) -> dict[str, Any]:
    from commands.bootstrap import build_service
    from commands.principal import SYSTEM

    report: dict[str, Any] = {"records": args.records, "iterations": args.iterations}
    service = await build_service(database_url, min_size=2, max_size=4)
    try:
        if args.http_only:
            raise _SkipService
        async with service.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM records WHERE workspace_id = %s AND collection = %s",
                (WS, COLL),
            )
            have = (await cur.fetchone())[0]
        if have == 0:
            print(f"loading {args.records:,} records ...", file=sys.stderr, flush=True)
            report["load_s"] = await load(service, args.records)
        elif have != args.records:
            raise SystemExit(f"{workdir} holds {have} records, not {args.records}")
        report["prewarm"] = await prewarm(service)
        report["count_check"] = (
            await service.query_records(SYSTEM, WS, COLL, limit=1, count=True)
        )["meta"]["total"]

        async def svc_query(kwargs: dict[str, Any]) -> dict[str, Any]:
            return await service.query_records(SYSTEM, WS, COLL, **kwargs)

        async def svc_agg(kwargs: dict[str, Any]) -> dict[str, Any]:
            return await service.aggregate_records(SYSTEM, WS, COLL, **kwargs)

        report["service"] = {}
        for name, make in {**QUERIES, **SLOW_QUERIES}.items():
            if args.only not in name:
                continue
            iterations = args.iterations if name in QUERIES else max(10, args.iterations // 10)
            res = await time_calls(svc_query, make, iterations)
            report["service"][name] = res
            print(f"  service {name}: {res}", file=sys.stderr, flush=True)
        # Page 2..n through the cursor of an unselective filter.
        first = await svc_query(QUERIES["eq severity, newest first (25% match)"](random.Random(1)))
        cursor = first["meta"]["next_cursor"]
        flt = QUERIES["eq severity, newest first (25% match)"](random.Random(1))

        async def next_page(_: Any) -> dict[str, Any]:
            nonlocal cursor
            out = await svc_query({**flt, "cursor": cursor})
            cursor = out["meta"]["next_cursor"]
            return out

        report["service"]["next page by cursor (eq severity, newest first)"] = await time_calls(
            next_page, lambda r: None, args.iterations
        )
        report["aggregates"] = {}
        for name, kwargs in AGGREGATES.items():
            if args.only not in name:
                continue
            res = await time_calls(svc_agg, lambda r, k=kwargs: k, 10, warmup=2)
            report["aggregates"][name] = res
            print(f"  aggregate {name}: {res}", file=sys.stderr, flush=True)

        if args.explain:
            report["explain"] = {}
            rnd = random.Random(3)
            for name in (
                "eq severity, newest first (25% match)",
                "in severity [2 values], newest first (50%)",
                "eq customer_id, newest first (~100 rows, 0.01%)",
                "in customer_id [5 values], newest first",
            ):
                report["explain"][name] = await explain(service, QUERIES[name](rnd))
            report["explain"]["count group_by status (whole collection)"] = await explain(
                service, AGGREGATES["count group_by status (whole collection)"], aggregate=True
            )
    except _SkipService:
        pass
    finally:
        await service.close()

    if args.http:
        import httpx

        from bench.procs import stop
        from commands import apikeys

        keys = await build_service(database_url, min_size=1, max_size=1)
        async with keys.pool.connection() as conn:
            created = await apikeys.create_key(conn, "query bench", ["admin"], None)
        await keys.close()
        proc, url, _ = start_server(database_url, workdir / "serve")
        key = str(created["key"])
        try:
            await wait_for_relay(database_url)
            report["http"] = {}
            async with httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as c:
                base = f"/v1/{WS}/collections/{COLL}/records"

                def caller(suffix: str) -> Any:
                    async def call(body: dict[str, Any]) -> dict[str, Any]:
                        r = await c.post(base + suffix, json=body)
                        r.raise_for_status()
                        return r.json()

                    return call

                for name, make in QUERIES.items():
                    res = await time_calls(caller("/query"), make, args.iterations)
                    report["http"][name] = res
                    print(f"  http {name}: {res}", file=sys.stderr, flush=True)
                for name, kwargs in AGGREGATES.items():
                    res = await time_calls(caller("/aggregate"), lambda r, k=kwargs: k, 10, 2)
                    report["http"][name] = res
        finally:
            stop(proc)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--data-dir", type=Path, help="keep (and reuse) the loaded database here")
    parser.add_argument("--http", action="store_true", help="also measure over REST")
    parser.add_argument("--pocketbase", action="store_true", help="also measure PocketBase")
    parser.add_argument("--explain", action="store_true", help="collect EXPLAIN ANALYZE")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--only", default="", help="run only measurements whose name has this")
    parser.add_argument("--database-url", help="use this PostgreSQL instead of an embedded one")
    parser.add_argument("--http-only", action="store_true", help="skip in-process measurements")
    args = parser.parse_args()

    tmp = None
    workdir = args.data_dir
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="rekor-qbench-")
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.database_url:
        report = asyncio.run(run(args, args.database_url, workdir))
        _finish(args, report, tmp)
        return
    stack = EmbeddedStack(
        workdir / "stack",
        # Only PostgreSQL is needed in-process; `rekor serve` (--http) starts its own NATS/S3.
        nats_url="nats://127.0.0.1:1",
        s3={
            "endpoint": "http://127.0.0.1:1",
            "access_key": "unused",
            "secret_key": "unused",
            "bucket": "unused",
            "region": "us-east-1",
        },
    )
    endpoints = stack.start()
    try:
        report = asyncio.run(run(args, endpoints.database_url, workdir))
    finally:
        stack.stop()
    _finish(args, report, tmp)


def _finish(args: argparse.Namespace, report: dict[str, Any], tmp: Any) -> None:
    if args.pocketbase:
        pb_dir = Path(tempfile.mkdtemp(prefix="rekor-qbench-pb-"))
        report["pocketbase"] = pocketbase_bench(args.records, args.iterations, pb_dir)
    text = json.dumps(report, indent=2, default=str)
    if args.out:
        args.out.write_text(text)
    print(text)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
