"""Hook ingest over HTTP: many concurrent POSTs (wrk) to the ingest URL of a real `rekor serve`
(its own embedded PostgreSQL + NATS), then a check that every 202 is in the log.

    uv run python -m bench.hook_http_bench [--seconds 10] [--connections 64] [--threads 2]

Counts only 202 answers as accepted (wrk's non-2xx count is subtracted), and cross-checks them
against the `hook_receipts` rows afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from commands.bootstrap import build_service
from commands.principal import SYSTEM
from deploy.stack import EmbeddedStack
from tests.conftest import Server

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}, "title": {"type": "string"}}}

# Each request carries a distinct external id, so every payload becomes a new record.
LUA = """
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"title":"t%d-%d","n":%d}', math.random(1, 1000000000), n, n)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
"""


def parse_wrk(out: str) -> dict[str, Any]:
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    secs = float(re.search(r"requests in ([\d.]+)s", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    lat = {p: re.search(rf"\s{p}%\s+([\d.]+\w+)", out) for p in ("50", "99")}
    accepted = total - (int(bad.group(1)) if bad else 0)
    return {
        "requests": total,
        "accepted": accepted,
        "seconds": secs,
        "accepted_per_s": accepted / secs,
        "socket_errors": errors.group(1) if errors else None,
        "latency_p50": lat["50"].group(1) if lat["50"] else None,
        "latency_p99": lat["99"].group(1) if lat["99"] else None,
    }


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stack = EmbeddedStack(
            Path(tmp) / "stack",
            s3={"endpoint": "http://127.0.0.1:9", "access_key": "x", "secret_key": "x"},
        )
        endpoints = stack.start()
        server = None
        service = await build_service(endpoints.database_url)
        try:
            server_dir = Path(tmp) / "server"
            server_dir.mkdir()
            server = Server(endpoints, server_dir)
            ws = "bench_hook_http"
            await service.create_workspace(SYSTEM, ws)
            await service.upsert_collection(SYSTEM, ws, "items", SCHEMA)
            hook = (
                await service.create_hook(
                    SYSTEM, ws, name="bench", collection="items", external_id_path="/title"
                )
            ).body
            script = Path(tmp) / "post.lua"
            script.write_text(LUA)
            url = server.url + hook["ingest_url"]
            proc = await asyncio.create_subprocess_exec(
                "wrk",
                f"-t{args.threads}",
                f"-c{args.connections}",
                f"-d{args.seconds}s",
                "--latency",
                "-s",
                str(script),
                url,
                stdout=asyncio.subprocess.PIPE,
            )
            raw, _ = await proc.communicate()
            out = raw.decode()
            result = parse_wrk(out)
            # Every 202 must be a receipt in the log; wait for the applier to finish too.
            started = time.perf_counter()
            while True:
                async with service.connection() as conn:
                    cur = await conn.execute(
                        "SELECT status, count(*) FROM hook_receipts WHERE workspace_id = %s"
                        " GROUP BY status",
                        (ws,),
                    )
                    counts = dict(await cur.fetchall())
                if counts.get("received", 0) == 0 or time.perf_counter() - started > 120:
                    break
                await asyncio.sleep(0.2)
            result["receipts"] = counts
            result["drain_after_load_s"] = round(time.perf_counter() - started, 2)
        finally:
            if server is not None:
                server.stop()
            await service.close()
            stack.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
