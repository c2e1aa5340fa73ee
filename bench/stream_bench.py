"""Event-stream benchmark: relay throughput, commit -> first delivery attempt latency at a fixed
write rate, and hook ingest throughput. Runs on an embedded PostgreSQL + NATS of its own.

    uv run python -m bench.stream_bench [--events 20000] [--rate 200] [--seconds 10] [--hooks 5000]

The service and the stream components run in this process (as in `rekor serve`), the webhook
receiver is a real HTTP server on loopback in the same process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from typing import Any

from aiohttp import web

from commands.bootstrap import build_service, start_components, stop_components
from commands.config import Settings
from commands.handlers import Context, handle
from commands.principal import SYSTEM
from commands.types import UpsertRecord
from deploy.stack import EmbeddedStack
from stream.relay import Relay

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}, "title": {"type": "string"}}}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def bulk(service: Any, ws: str, n: int, per_commit: int = 500) -> None:
    for start in range(0, n, per_commit):
        count = min(per_commit, n - start)

        async def work(tx: Any, start: int = start, count: int = count) -> None:
            ctx = Context(SYSTEM)
            for i in range(start, start + count):
                await handle(UpsertRecord(collection="items", data={"n": i}), tx, ctx)

        await service.run_in_workspace(ws, work)


async def relay_throughput(service: Any, settings: Settings, events: int) -> dict[str, Any]:
    ws = "bench_relay"
    await service.create_workspace(SYSTEM, ws)
    await service.upsert_collection(SYSTEM, ws, "items", SCHEMA)
    relay: Relay = service.extensions["stream.relay"]
    # Let the live relay catch up first, then stop it and measure a cold drain of the backlog.
    await relay.stop()
    await bulk(service, ws, events)
    # The real notifier: this relay keeps running for the latency phase, which needs its
    # NOTIFY wake-ups (without them it would only poll, once a second).
    fresh = Relay(
        service,
        service.stream_config,
        settings.nats_url or "",
        service.extensions["stream.notifier"],
    )
    started = time.perf_counter()
    fresh.start()
    while await fresh.lag() > 0:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    service.extensions["stream.relay"] = fresh
    return {"events": events + 2, "seconds": elapsed, "events_per_s": (events + 2) / elapsed}


async def consumer_idle(service: Any, limit_s: float = 120.0) -> float:
    """Wait until the trigger consumer has taken everything published so far (the relay
    phase leaves it a backlog); returns the seconds waited."""
    worker = service.extensions["stream.triggers"]
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        if worker.nc is not None:
            info = await worker.nc.jetstream().consumer_info(
                service.stream_config.stream_name, service.stream_config.trigger_consumer
            )
            if info.num_pending == 0 and info.num_ack_pending == 0:
                break
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


async def delivery_latency(service: Any, rate: int, seconds: float) -> dict[str, Any]:
    arrivals: dict[int, float] = {}
    # Measure the steady state at `rate`, not the tail of the relay phase's backlog.
    backlog_s = await consumer_idle(service)

    async def receive(request: web.Request) -> web.Response:
        now = time.perf_counter()
        body = json.loads(await request.read())
        arrivals.setdefault(body["seq"], now)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    from tests.conftest import free_port

    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    ws = "bench_latency"
    await service.create_workspace(SYSTEM, ws)
    await service.upsert_collection(SYSTEM, ws, "items", SCHEMA)
    await service.create_trigger(
        SYSTEM, ws, name="bench", url=f"http://127.0.0.1:{port}/hook", events=["create"]
    )
    committed: dict[int, float] = {}

    async def write(i: int) -> None:
        result = await service.upsert_record(SYSTEM, ws, "items", {"n": i})
        committed[result.body["seq"]] = time.perf_counter()

    total = int(rate * seconds)
    tasks = []
    started = time.perf_counter()
    for i in range(total):
        due = started + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(write(i)))
    await asyncio.gather(*tasks)
    deadline = time.monotonic() + 60
    while len(arrivals) < total and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await runner.cleanup()
    lat = [(arrivals[s] - committed[s]) * 1000 for s in committed if s in arrivals]
    return {
        "writes": total,
        "write_rate": rate,
        "waited_for_consumer_backlog_s": round(backlog_s, 2),
        "delivered": len(lat),
        "p50_ms": statistics.median(lat),
        "p99_ms": pct(lat, 99),
        "max_ms": max(lat),
    }


async def hook_ingest(service: Any, payloads: int, concurrency: int = 64) -> dict[str, Any]:
    ws = "bench_hooks"
    await service.create_workspace(SYSTEM, ws)
    await service.upsert_collection(SYSTEM, ws, "items", SCHEMA)
    hook = (
        await service.create_hook(
            SYSTEM, ws, name="bench", collection="items", external_id_path="/title"
        )
    ).body
    bodies = [json.dumps({"title": f"t{i}", "n": i}).encode() for i in range(payloads)]
    gate = asyncio.Semaphore(concurrency)

    async def send(body: bytes) -> None:
        async with gate:
            await service.ingest_hook_payload(ws, hook["id"], body, {})

    started = time.perf_counter()
    await asyncio.gather(*[send(b) for b in bodies])
    accepted_s = time.perf_counter() - started
    while True:
        async with service.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM hook_receipts WHERE workspace_id = %s AND status = 'applied'",
                (ws,),
            )
            row = await cur.fetchone()
        if row and row[0] >= payloads:
            break
        await asyncio.sleep(0.05)
    applied_s = time.perf_counter() - started
    return {
        "payloads": payloads,
        "accepted_per_s": payloads / accepted_s,
        "applied_per_s": payloads / applied_s,
    }


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stack = EmbeddedStack(
            tmp,
            s3={"endpoint": "http://127.0.0.1:9", "access_key": "x", "secret_key": "x"},
        )
        endpoints = stack.start()
        try:
            settings = Settings(
                database_url=endpoints.database_url,
                nats_url=endpoints.nats_url,
                egress_allow="127.0.0.0/8",
                data_dir=tmp,
            )
            service = await build_service(settings.database_url)
            await start_components(service, settings)
            try:
                only = set(args.only.split(",")) if args.only else {"relay", "delivery", "hooks"}
                results: dict[str, Any] = {}
                if "relay" in only:
                    results["relay"] = await relay_throughput(service, settings, args.events)
                if "delivery" in only:
                    results["delivery"] = await delivery_latency(service, args.rate, args.seconds)
                if "hooks" in only:
                    results["hooks"] = await hook_ingest(service, args.hooks)
            finally:
                await stop_components(service)
                await service.close()
        finally:
            stack.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--hooks", type=int, default=5000)
    parser.add_argument("--only", default="", help="comma-separated: relay,delivery,hooks")
    asyncio.run(main(parser.parse_args()))
