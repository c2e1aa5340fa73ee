"""MCP over HTTP vs REST: the same read and the same write, one caller at a time, in one run.

    uv run python bench/mcp_bench.py                 # starts `rekor serve` on the embedded stack
    uv run python bench/mcp_bench.py --url URL --key rk_...   # or measures a running server

For each operation it reports p50/p99 of (a) the REST call with httpx, (b) the MCP tool call
with the official MCP client (streamable HTTP at /mcp, same key), and the overhead
MCP p50 - REST p50. Sequential calls, so the numbers are per-call latency, not throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.procs import start_rekor, stop

PROTOCOL = "2026-07-28"
SCHEMA = {
    "type": "object",
    "required": ["title", "severity"],
    "properties": {"title": {"type": "string"}, "severity": {"enum": ["p0", "p1", "p2", "p3"]}},
}


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """A `rekor serve` on the embedded stack in a temp dir; returns (process, url, admin key)."""
    proc, url, key = start_rekor(data_dir, data_dir / "serve.log")
    if key is None:
        stop(proc)
        raise SystemExit((data_dir / "serve.log").read_text()[-3000:])
    return proc, url, key


async def timed(fn: Callable[[], Awaitable[Any]], n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(url: str, key: str, n: int, warmup: int) -> list[dict[str, Any]]:
    ws = f"bench_mcp_{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {key}"}
    rows: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as rest:
        (await rest.post("/v1/workspaces", json={"id": ws})).raise_for_status()
        put = await rest.put(f"/v1/{ws}/collections/incidents", json={"json_schema": SCHEMA})
        put.raise_for_status()
        rec = (
            await rest.post(
                f"/v1/{ws}/collections/incidents/records",
                json={"data": {"title": "t", "severity": "p1"}},
            )
        ).json()
        record_path = f"/v1/{ws}/collections/incidents/records/{rec['id']}"

        mcp_http = httpx2.AsyncClient(headers=headers, timeout=30)
        async with (
            mcp_http,
            Client(streamable_http_client(url + "/mcp", http_client=mcp_http)) as mcp,
        ):

            async def rest_get() -> None:
                (await rest.get(record_path)).raise_for_status()

            async def mcp_get() -> None:
                result = await mcp.call_tool(
                    "manage_record",
                    {
                        "action": "get",
                        "workspace_id": ws,
                        "collection": "incidents",
                        "id": rec["id"],
                    },
                )
                assert not result.is_error, result.content

            counter = iter(range(10**9))

            async def rest_upsert() -> None:
                i = next(counter)
                body = {"external_id": f"r{i}", "data": {"title": f"t{i}", "severity": "p2"}}
                r = await rest.post(f"/v1/{ws}/collections/incidents/records", json=body)
                r.raise_for_status()

            async def mcp_upsert() -> None:
                i = next(counter)
                result = await mcp.call_tool(
                    "manage_record",
                    {
                        "action": "upsert",
                        "workspace_id": ws,
                        "collection": "incidents",
                        "external_id": f"m{i}",
                        "data": {"title": f"t{i}", "severity": "p2"},
                    },
                )
                assert not result.is_error, result.content

            # The same tools/call as bare JSON-RPC over httpx: the protocol and server cost
            # without the MCP client library's own work.
            raw_headers = {
                "accept": "application/json, text/event-stream",
                "mcp-protocol-version": PROTOCOL,
                "mcp-method": "tools/call",
                "mcp-name": "manage_record",
            }
            raw_body = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {
                    "name": "manage_record",
                    "arguments": {
                        "action": "get",
                        "workspace_id": ws,
                        "collection": "incidents",
                        "id": rec["id"],
                    },
                    "_meta": {
                        "io.modelcontextprotocol/protocolVersion": PROTOCOL,
                        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
                        "io.modelcontextprotocol/clientCapabilities": {},
                    },
                },
            }

            async def raw_get() -> None:
                r = await rest.post("/mcp", json=raw_body, headers=raw_headers)
                assert r.status_code == 200 and '"isError":false' in r.text, r.text[:300]

            for name, rest_fn, mcp_fn in (
                ("get record by id", rest_get, mcp_get),
                ("get (raw JSON-RPC)", rest_get, raw_get),
                ("upsert record", rest_upsert, mcp_upsert),
            ):
                # Interleave the two sides in rounds so drift on a busy machine hits both.
                rest_samples: list[float] = []
                mcp_samples: list[float] = []
                for _ in range(5):
                    rest_samples += await timed(rest_fn, n // 5, warmup)
                    mcp_samples += await timed(mcp_fn, n // 5, warmup)
                rows.append(
                    {
                        "operation": name,
                        "rest_p50": pct(rest_samples, 0.5),
                        "rest_p99": pct(rest_samples, 0.99),
                        "mcp_p50": pct(mcp_samples, 0.5),
                        "mcp_p99": pct(mcp_samples, 0.99),
                        "overhead_p50": statistics.median(mcp_samples)
                        - statistics.median(rest_samples),
                        "n": len(rest_samples),
                    }
                )
        await rest.delete(f"/v1/workspaces/{ws}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("REKOR_URL"))
    parser.add_argument("--key", default=os.environ.get("REKOR_API_KEY"))
    parser.add_argument("-n", type=int, default=1000, help="calls per side per operation")
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    proc = None
    tmp = None
    url, key = args.url, args.key
    if not url or not key:
        tmp = tempfile.TemporaryDirectory(prefix="rekor-mcp-bench-")
        print("starting rekor serve on the embedded stack...", file=sys.stderr)
        proc, url, key = start_server(Path(tmp.name))
    try:
        rows = asyncio.run(run(url, key, args.n, args.warmup))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
        if tmp is not None:
            tmp.cleanup()
    print(f"{'operation':<19} {'REST p50':>9} {'REST p99':>9} {'MCP p50':>9} {'MCP p99':>9} "
          f"{'overhead p50':>13}")  # fmt: skip
    for r in rows:
        print(
            f"{r['operation']:<19} {r['rest_p50']:>7.2f}ms {r['rest_p99']:>7.2f}ms"
            f" {r['mcp_p50']:>7.2f}ms {r['mcp_p99']:>7.2f}ms {r['overhead_p50']:>+11.2f}ms"
        )
    print(f"(n={rows[0]['n']} sequential calls per side; same server, same key, same run)")


if __name__ == "__main__":
    main()
