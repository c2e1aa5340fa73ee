"""Relationships and batch benchmark (issue 3 targets: a 100-op batch at p50 <= 60 ms; a
one-hop traversal of a record with 100 edges at p50 <= 10 ms).

    uv run python -m bench.graph_bench [--iterations 200] [--no-http] [--out FILE]

Starts the embedded stack in a temp dir and measures, sequentially after a warm-up:
- `batch_100_records`: 100 upsert_record ops (the seed's incident, new external ids, so every op
  is a real create: 100 events, schema validation, projection) in one atomic batch;
- `batch_50_records_50_links`: 50 records and 50 `contains` relationships to them, named by the
  flat form with external ids (the seed example, scaled);
- `related_1hop_100_edges`: GET .../related (depth 1, outgoing) of a record with 100 edges;
- `related_3hop_both`: a depth-3 walk in both directions over a 1,000-node graph with cycles.
Each first in-process through `RekorService` (the work itself), then over REST against
`rekor serve` on the same database (adds HTTP, JSON and auth), once that server has published
and processed the ~10,000 events written before it started (`http_catch_up_s`). Results:
p50 / p90 / p99 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bench.procs import start_rekor, stop, wait_caught_up
from bench.rekor import INCIDENT_SCHEMA as SCHEMA
from deploy.stack import EmbeddedStack

INCIDENT = {"title": "API latency spike", "severity": "p1", "status": "investigating"}
NODE_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}}


def stats(samples: list[float]) -> dict[str, float]:
    """p50 / p90 / p99 / mean in ms."""
    s = sorted(samples)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return {
        "n": len(s),
        "p50_ms": round(pick(0.50) * 1000, 2),
        "p90_ms": round(pick(0.90) * 1000, 2),
        "p99_ms": round(pick(0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(s) * 1000, 2),
    }


async def timed(fn: Callable[[int], Awaitable[Any]], iterations: int, warmup: int) -> list[float]:
    for i in range(warmup):
        await fn(-1 - i)
    out = []
    for i in range(iterations):
        t0 = time.perf_counter()
        await fn(i)
        out.append(time.perf_counter() - t0)
    return out


def record_ops(tag: str) -> list[dict[str, Any]]:
    return [
        {"type": "upsert_record", "collection": "incidents", "external_id": f"{tag}-{i}",
         "data": {**INCIDENT, "title": f"incident {tag}-{i}"}}
        for i in range(100)
    ]  # fmt: skip


def mixed_ops(tag: str, order_id: str) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = [
        {"type": "upsert_record", "collection": "nodes", "external_id": f"{tag}-{i}",
         "data": {"name": f"item {i}"}}
        for i in range(50)
    ]  # fmt: skip
    ops += [
        {"type": "upsert_relationship", "rel_type": "contains", "source_collection": "nodes",
         "source_id": order_id, "target_collection": "nodes", "target_id": f"{tag}-{i}"}
        for i in range(50)
    ]  # fmt: skip
    return ops


async def setup(service: Any, ws: str) -> dict[str, Any]:
    """Collections, a hub with 100 edges, and a 1,000-node graph with cycles."""
    from commands.principal import SYSTEM

    await service.create_workspace(SYSTEM, ws)
    await service.upsert_collection(SYSTEM, ws, "incidents", SCHEMA)
    await service.upsert_collection(SYSTEM, ws, "nodes", NODE_SCHEMA)
    hub = (await service.upsert_record(SYSTEM, ws, "nodes", {"name": "hub"})).body["id"]
    order = (await service.upsert_record(SYSTEM, ws, "nodes", {"name": "order"})).body["id"]
    await service.batch(SYSTEM, ws, [
        {"type": "upsert_record", "collection": "nodes", "data": {"name": f"leaf {i}"},
         "ref": f"l{i}"} for i in range(50)
    ] + [
        {"type": "upsert_relationship", "rel_type": "links", "source_collection": "nodes",
         "source_id": hub, "target_collection": "nodes", "target_id": f"l{i}"}
        for i in range(50)
    ])  # fmt: skip
    await service.batch(SYSTEM, ws, [
        {"type": "upsert_record", "collection": "nodes", "data": {"name": f"leaf {i}"},
         "ref": f"l{i}"} for i in range(50, 100)
    ] + [
        {"type": "upsert_relationship", "rel_type": "links", "source_collection": "nodes",
         "source_id": hub, "target_collection": "nodes", "target_id": f"l{i}"}
        for i in range(50, 100)
    ])  # fmt: skip
    # A random graph: 1,000 nodes, 3 out-edges each (cycles galore).
    rnd = random.Random(7)
    ids: list[str] = []
    for start in range(0, 1000, 100):
        out = await service.batch(SYSTEM, ws, [
            {"type": "upsert_record", "collection": "nodes", "data": {"name": f"g{i}"}}
            for i in range(start, start + 100)
        ])  # fmt: skip
        ids += [x["result"]["id"] for x in out["data"]]
    edges = [(a, b) for a in ids for b in rnd.sample(ids, 3)]
    for start in range(0, len(edges), 100):
        await service.batch(SYSTEM, ws, [
            {"type": "upsert_relationship", "rel_type": "links", "source": f"nodes/{a}",
             "target": f"nodes/{b}"} for a, b in edges[start : start + 100]
        ])  # fmt: skip
    return {"hub": hub, "order": order, "graph_start": ids[0]}


async def measure_in_process(
    service: Any, ws: str, ids: dict[str, Any], n: int, warmup: int
) -> dict[str, Any]:
    from commands.principal import SYSTEM

    async def batch_records(i: int) -> None:
        await service.batch(SYSTEM, ws, record_ops(f"ip{i}"))

    async def batch_mixed(i: int) -> None:
        await service.batch(SYSTEM, ws, mixed_ops(f"ipm{i}", ids["order"]))

    async def hop(i: int) -> None:
        out = await service.related(SYSTEM, ws, "nodes", ids["hub"], depth=1)
        assert len(out["data"]) == 100

    async def walk(i: int) -> None:
        await service.related(
            SYSTEM, ws, "nodes", ids["graph_start"], direction="both", depth=3, limit=1000
        )

    return {
        "batch_100_records": stats(await timed(batch_records, n, warmup)),
        "batch_50_records_50_links": stats(await timed(batch_mixed, n, warmup)),
        "related_1hop_100_edges": stats(await timed(hop, n * 5, warmup * 5)),
        "related_3hop_both": stats(await timed(walk, n, warmup)),
    }


async def measure_http(
    url: str, key: str, ws: str, ids: dict[str, Any], n: int, warmup: int
) -> dict[str, Any]:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as c:

        async def batch_records(i: int) -> None:
            r = await c.post(f"/v1/{ws}/batch", json={"operations": record_ops(f"h{i}")})
            assert r.status_code == 200, r.text

        async def batch_mixed(i: int) -> None:
            ops = mixed_ops(f"hm{i}", ids["order"])
            r = await c.post(f"/v1/{ws}/batch", json={"operations": ops})
            assert r.status_code == 200, r.text

        async def hop(i: int) -> None:
            r = await c.get(f"/v1/{ws}/collections/nodes/records/{ids['hub']}/related")
            assert r.status_code == 200 and len(r.json()["data"]) == 100

        async def walk(i: int) -> None:
            r = await c.get(
                f"/v1/{ws}/collections/nodes/records/{ids['graph_start']}/related",
                params={"direction": "both", "depth": 3, "limit": 1000},
            )
            assert r.status_code == 200

        return {
            "batch_100_records": stats(await timed(batch_records, n, warmup)),
            "batch_50_records_50_links": stats(await timed(batch_mixed, n, warmup)),
            "related_1hop_100_edges": stats(await timed(hop, n * 5, warmup * 5)),
            "related_3hop_both": stats(await timed(walk, n, warmup)),
        }


async def run(args: argparse.Namespace, stack: EmbeddedStack, workdir: Path) -> dict[str, Any]:
    from commands import apikeys
    from commands.bootstrap import build_service

    ep = stack.endpoints
    service = await build_service(ep.database_url, min_size=2, max_size=4)
    report: dict[str, Any] = {"iterations": args.iterations}
    try:
        ws = "ws_graph_bench"
        ids = await setup(service, ws)
        async with service.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM relationships WHERE workspace_id = %s", (ws,)
            )
            report["relationships_in_workspace"] = (await cur.fetchone())[0]
        report["load_avg_1m_before_in_process"] = os.getloadavg()[0]
        report["in_process"] = await measure_in_process(
            service, ws, ids, args.iterations, args.warmup
        )
        if args.http:
            async with service.connection() as conn:
                key = (await apikeys.create_key(conn, "bench", ["admin"], None))["key"]
            env = dict(os.environ)
            env.update({
                "REKOR_DATABASE_URL": ep.database_url, "REKOR_NATS_URL": ep.nats_url,
                "REKOR_S3_ENDPOINT": ep.s3_endpoint, "REKOR_S3_ACCESS_KEY": ep.s3_access_key,
                "REKOR_S3_SECRET_KEY": ep.s3_secret_key, "REKOR_S3_BUCKET": ep.s3_bucket,
                "REKOR_S3_REGION": ep.s3_region,
            })  # fmt: skip
            proc, url, _ = start_rekor(workdir / "serve", workdir / "serve.log", env=env)
            try:
                t0 = time.monotonic()
                await wait_caught_up(ep.database_url, ws, proc)
                report["http_catch_up_s"] = round(time.monotonic() - t0, 1)
                report["load_avg_1m_before_http"] = os.getloadavg()[0]
                report["http"] = await measure_http(url, key, ws, ids, args.iterations, args.warmup)
            finally:
                stop(proc)
    finally:
        await service.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--no-http", dest="http", action="store_false")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rekor-gbench-") as tmp:
        workdir = Path(tmp)
        stack = EmbeddedStack(workdir / "stack")
        stack.start()
        try:
            report = asyncio.run(run(args, stack, workdir))
        finally:
            stack.stop()
    report["cpus"] = os.cpu_count()
    report["load_avg_1m_at_end"] = os.getloadavg()[0]
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
