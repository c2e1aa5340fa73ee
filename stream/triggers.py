"""Outbound trigger delivery: a durable JetStream consumer feeds a Postgres delivery queue;
workers POST each delivery, signed per Standard Webhooks.

1. Ingest: the durable pull consumer `rekor_triggers` reads record events
   (`rekor.*.*.record.*`). For each event it finds the workspace's triggers created before the
   event (seq order), applies type / collection / hook-write / filter matching and inserts one
   delivery row per matching trigger (unique per trigger and event id, so a JetStream
   redelivery queues nothing twice). Messages are acknowledged only after that commit.
2. Delivery: a worker claims due deliveries, at most the oldest pending one per (trigger,
   record) - a later change of a record waits until the earlier one is delivered or dead, while
   other records go on. A claim is a lease (timeout + margin); a worker that dies mid-attempt
   leaves the delivery to be retried when the lease ends. Non-2xx, timeouts and connection
   errors are retried with exponential backoff and jitter (or the receiver's `Retry-After`) up to
   the attempt budget, then the delivery is dead (a dead letter, redeliverable on request).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from collections import defaultdict
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
from nats.js import api as js_api

from commands.streaming import (
    RECORD_EVENT_TYPES,
    delivery_body,
    insert_deliveries,
    previous_record,
    trigger_matches,
    trigger_wants,
)
from projections.streaming import fetch_all
from stream import egress, signing
from stream.config import StreamConfig
from stream.relay import connect_nats, ensure_stream

log = logging.getLogger("rekor.stream.triggers")

_DECODE = msgspec.json.Decoder()
SUBJECT = "rekor.*.*.record.*"
FETCH_BATCH = 512


def backoff_delay(config: StreamConfig, attempts: int, retry_after: str | None) -> float:
    """Seconds to wait before the next attempt: the receiver's Retry-After if it sent one,
    else base * 2^(attempts-1) with jitter (50-100 %), both capped at the maximum."""
    if retry_after:
        seconds: float | None = None
        try:
            seconds = float(retry_after)
        except ValueError:
            with contextlib.suppress(TypeError, ValueError):
                when = email.utils.parsedate_to_datetime(retry_after)
                seconds = when.timestamp() - time.time()
        if seconds is not None:
            return float(min(max(seconds, 0.0), config.trigger_backoff_max_s))
    delay = config.trigger_backoff_base_s * (2 ** max(attempts - 1, 0))
    return float(min(delay, config.trigger_backoff_max_s) * random.uniform(0.5, 1.0))


def _decode(raw: bytes) -> dict[str, Any]:
    # Whatever else is published under rekor.> is skipped, not retried forever.
    try:
        event = _DECODE.decode(raw)
    except msgspec.DecodeError:
        return {}
    return event if isinstance(event, dict) else {}


class TriggerWorker:
    """The JetStream consumer and the delivery workers of one process."""

    def __init__(self, service: Any, config: StreamConfig, nats_url: str) -> None:
        self.service = service
        self.config = config
        self.nats_url = nats_url
        self.allow = egress.parse_allow(config.egress_allow)
        self.nc: Any = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        # Attempt outcomes waiting to be written; one writer task stores them in batches.
        self._outcomes: list[tuple[Any, ...]] = []
        self._outcome_ready = asyncio.Event()
        # aiohttp rather than httpx: httpx's connection pool costs O(open connections) of
        # Python per request, which at 64 keep-alive connections was most of the CPU of a
        # delivery and made the pipeline fall behind at a few hundred deliveries per second.
        self._http: aiohttp.ClientSession | None = None
        self.ingested = 0
        self.last_error: str | None = None

    def start(self) -> None:
        """Start the consumer and the delivery loop."""
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.config.trigger_concurrency, use_dns_cache=False
            ),
            timeout=aiohttp.ClientTimeout(total=self.config.trigger_timeout_s),
            headers={"user-agent": "Rekor-Webhooks/1"},
        )
        self._tasks = [
            asyncio.create_task(self._consume(), name="rekor-trigger-consumer"),
            asyncio.create_task(self._deliver_loop(), name="rekor-trigger-delivery"),
            asyncio.create_task(self._record_loop(), name="rekor-trigger-outcomes"),
        ]

    def wake(self) -> None:
        """Look for due deliveries now (after a new delivery was queued or redelivered)."""
        self._wake.set()

    # -- ingest -------------------------------------------------------------------------------

    async def _consume(self) -> None:
        sub = None
        while True:
            try:
                if sub is None:
                    sub = await self._subscribe()
                try:
                    # Wait for one message (returns as soon as it arrives), then take whatever
                    # else is already there. nats-py's batch fetch, once it had to wait, holds
                    # the first message until the whole batch or the expiry arrives: that wait
                    # was added to every delivery's latency.
                    msgs = await sub.fetch(batch=1, timeout=1.0)
                except TimeoutError:
                    continue
                with contextlib.suppress(TimeoutError):
                    msgs += await sub.fetch(batch=FETCH_BATCH, timeout=0.01)
                await self._ingest([_decode(m.data) for m in msgs])
                for m in msgs:
                    await m.ack()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("trigger consumer: %s", self.last_error)
                await asyncio.sleep(0.5)
                if self.nc is not None and self.nc.is_closed:
                    self.nc, sub = None, None

    async def _subscribe(self) -> Any:
        if self.nc is None:
            self.nc = await connect_nats(self.nats_url, "rekor-triggers")
        js = self.nc.jetstream()
        await ensure_stream(js, self.config)
        return await js.pull_subscribe(
            SUBJECT,
            durable=self.config.trigger_consumer,
            stream=self.config.stream_name,
            config=js_api.ConsumerConfig(
                ack_policy=js_api.AckPolicy.EXPLICIT,
                deliver_policy=js_api.DeliverPolicy.ALL,
                ack_wait=30,
                max_ack_pending=20_000,
            ),
        )

    async def _ingest(self, events: list[dict[str, Any]]) -> None:
        by_ws: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            if event.get("type") in RECORD_EVENT_TYPES:
                by_ws[event["workspace"]].append(event)
        if not by_ws:
            return
        rows: list[tuple[str, str, dict[str, Any], bytes]] = []
        async with self.service.pool.connection() as conn:
            for ws, ws_events in by_ws.items():
                triggers = await fetch_all(
                    conn, "SELECT * FROM triggers WHERE workspace_id = %s", (ws,)
                )
                if not triggers:
                    continue
                for event in ws_events:
                    # A trigger sees the events committed after it was created.
                    wanted = [
                        t
                        for t in triggers
                        if t["created_seq"] < event["seq"] and trigger_wants(t, event)
                    ]
                    if not wanted:
                        continue
                    previous = await previous_record(conn, event)
                    body: bytes | None = None
                    for t in wanted:
                        if trigger_matches(t, event, previous):
                            body = body or delivery_body(event, previous)
                            rows.append((ws, t["id"], event, body))
            if rows:
                async with conn.transaction():
                    await insert_deliveries(conn, rows)
        self.ingested += len(rows)
        if rows:
            self._wake.set()

    # -- delivery -----------------------------------------------------------------------------

    async def _deliver_loop(self) -> None:
        while True:
            try:
                self._wake.clear()
                free = self.config.trigger_concurrency - len(self._inflight)
                claimed = await self._claim(free) if free > 0 else []
                for item in claimed:
                    task = asyncio.create_task(self._attempt(item))
                    self._inflight.add(task)
                    task.add_done_callback(self._done)
                if claimed and len(claimed) == free:
                    await asyncio.sleep(0)
                    continue
                # Nothing more is due right now. Ask when the next retry is due only when idle:
                # while deliveries flow, every completion and every ingest wakes this loop.
                timeout = await self._next_due() if not claimed else 0.1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("trigger delivery: %s", self.last_error)
                await asyncio.sleep(0.5)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)

    async def _next_due(self) -> float:
        async with self.service.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT extract(epoch FROM min(next_attempt_at) - now())"
                " FROM trigger_deliveries WHERE status = 'pending'"
            )
            row = await cur.fetchone()
        if row is None or row[0] is None:
            return 1.0
        return float(min(max(float(row[0]), 0.01), 1.0))

    async def _claim(self, limit: int) -> list[dict[str, Any]]:
        lease = self.config.trigger_timeout_s + 15
        async with self.service.pool.connection() as conn, conn.transaction():
            claimed = await fetch_all(
                conn,
                "WITH picked AS (SELECT d.n FROM trigger_deliveries d"
                " WHERE d.status = 'pending' AND d.next_attempt_at <= now()"
                " AND NOT EXISTS (SELECT 1 FROM trigger_deliveries e"
                "   WHERE e.trigger_id = d.trigger_id AND e.record_id = d.record_id"
                "   AND e.status = 'pending' AND e.n < d.n)"
                " ORDER BY d.n LIMIT %s FOR UPDATE OF d SKIP LOCKED)"
                " UPDATE trigger_deliveries t SET attempts = t.attempts + 1,"
                " next_attempt_at = now() + make_interval(secs => %s),"
                " last_attempt_at = now(), first_attempt_at = coalesce(t.first_attempt_at, now())"
                " FROM picked WHERE t.n = picked.n"
                " RETURNING t.n, t.id, t.workspace_id, t.trigger_id, t.event_id::text AS event_id,"
                " t.body, t.attempts",
                (limit, lease),
            )
            if not claimed:
                return []
            ids = sorted({c["trigger_id"] for c in claimed})
            targets = {
                r["id"]: r
                for r in await fetch_all(
                    conn,
                    "SELECT t.id, t.workspace_id, t.url, s.secret FROM triggers t"
                    " JOIN stream_secrets s ON s.owner_id = t.id WHERE t.id = ANY(%s)",
                    (ids,),
                )
            }
            ready = []
            for item in claimed:
                target = targets.get(item["trigger_id"])
                if target is None or target["workspace_id"] != item["workspace_id"]:
                    await conn.execute(
                        "UPDATE trigger_deliveries SET status = 'cancelled' WHERE n = %s",
                        (item["n"],),
                    )
                    continue
                ready.append({**item, "url": target["url"], "secret": target["secret"]})
        return ready

    async def _attempt(self, item: dict[str, Any]) -> None:
        body: bytes = item["body"].encode()
        started = time.perf_counter()
        status: int | None = None
        retry_after: str | None = None
        error: str | None = None
        try:
            target = await egress.resolve_checked(item["url"], self.allow)
            headers = signing.headers(item["secret"], item["event_id"], body)
            headers["content-type"] = "application/json"
            # The request goes to the vetted address; Host and TLS SNI keep the name.
            headers["host"] = urlsplit(item["url"]).netloc
            tls = {"server_hostname": target.host} if target.url.startswith("https") else {}
            assert self._http is not None
            async with self._http.post(
                target.connect_url, data=body, headers=headers, allow_redirects=False, **tls
            ) as resp:
                status = resp.status
                retry_after = resp.headers.get("retry-after")
                # Read (a bounded part of) the answer so the connection can be reused.
                text = (await resp.content.read(4096)).decode(errors="replace")
                if not 200 <= status < 300:
                    error = f"HTTP {status}: {text[:200]}"
        except egress.EgressRefused as exc:
            error = f"refused by the egress guard: {exc}"
        except TimeoutError:
            error = f"timed out after {self.config.trigger_timeout_s:g} s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"
        latency = (time.perf_counter() - started) * 1000
        if error is None:
            outcome = ("delivered", status, None, latency, None, item["n"])
        elif item["attempts"] >= self.config.trigger_max_attempts:
            outcome = ("dead", status, error, latency, None, item["n"])
        else:
            delay = backoff_delay(self.config, item["attempts"], retry_after)
            outcome = ("pending", status, error, latency, delay, item["n"])
        self._outcomes.append(outcome)
        self._outcome_ready.set()

    async def _record_loop(self) -> None:
        """Store attempt outcomes, all that accumulated during the previous write in one
        statement (one round trip and commit for many deliveries, not one each)."""
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            batch, self._outcomes = self._outcomes, []
            if not batch:
                continue
            try:
                await self._record(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The leases expire and those deliveries are attempted again: at least once.
                log.warning("could not record %d delivery outcomes: %s", len(batch), exc)
            # The next change of those records may now be due.
            self._wake.set()

    async def _record(self, batch: list[tuple[Any, ...]]) -> None:
        columns = list(zip(*batch, strict=True))
        async with self.service.pool.connection() as conn:
            await conn.execute(
                "UPDATE trigger_deliveries t SET status = o.status,"
                " delivered_at = CASE WHEN o.status = 'delivered' THEN now() END,"
                " last_status_code = o.code, last_error = o.error, latency_ms = o.latency,"
                " next_attempt_at = CASE WHEN o.delay IS NULL THEN t.next_attempt_at"
                "   ELSE now() + make_interval(secs => o.delay) END"
                " FROM unnest(%s::text[], %s::int[], %s::text[], %s::float8[], %s::float8[],"
                "   %s::bigint[]) AS o(status, code, error, latency, delay, n)"
                " WHERE t.n = o.n",
                [list(c) for c in columns],
            )

    async def health(self) -> str:
        if self.nc is None or not self.nc.is_connected:
            return f"nats unavailable ({self.last_error or 'connecting'}); deliveries queued"
        return "ok"

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=5)
        if self._outcomes:
            with contextlib.suppress(Exception):
                await self._record(self._outcomes)
        if self._http is not None:
            await self._http.close()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
