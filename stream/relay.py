"""The relay: publishes every committed event from the Postgres log to NATS JetStream.

Subject: `rekor.<workspace>.<collection or _>.<event type>`; the event type keeps its dot, so
`record.created` in collection `incidents` of `ws_ops` is `rekor.ws_ops.incidents.record.created`
(every tag is `<entity>.<verb>`, so the type is always the last two tokens). Header
`Nats-Msg-Id: <event id>`; body: the event's public JSON (`StoredEvent.to_json()`).

Guarantees:
- Postgres is the truth. The relay reads `seq > checkpoint` per workspace, publishes in seq order
  on one connection and moves the checkpoint only after JetStream acknowledged the whole batch
  (a monotonic update), so with NATS down writes succeed and the relay just lags; when NATS is
  back the backlog goes out in order.
- Several relays may run: each works on a workspace only while it holds that workspace's
  checkpoint row (`FOR UPDATE SKIP LOCKED`), so one workspace is published by one relay at a
  time, in order. A relay that dies after publishing but before its checkpoint commit makes the
  next one publish the batch again; JetStream drops those repeats by `Nats-Msg-Id` within the
  stream's duplicate window (consumers de-duplicate by event id beyond it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any

import msgspec
import nats
from nats.js import api as js_api
from nats.js.errors import BadRequestError

from events.registry import decode_event, event_to_dict
from events.store import StoredEvent
from stream.config import StreamConfig
from stream.notify import Notifier

log = logging.getLogger("rekor.stream.relay")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_ENCODE = msgspec.json.Encoder()

# The log columns as text: the event is decoded once by msgspec from its JSON text (psycopg's
# jsonb -> dict and then dict -> Event conversion cost several times more) and the metadata is
# passed through untouched.
_SELECT = (
    "SELECT seq, event_id::text, type, stream, stream_version, data::text, metadata::text,"
    " recorded_at FROM events WHERE workspace_id = %s AND seq > %s ORDER BY seq LIMIT %s"
)


class _Outgoing(msgspec.Struct, frozen=True):
    seq: int
    event_id: str
    subject: str
    body: bytes


def _outgoing(ws: str, row: tuple[Any, ...]) -> _Outgoing:
    seq, event_id, type_, stream, version, data, metadata, recorded_at = row
    event = decode_event(data)
    stored = StoredEvent(
        workspace_id=ws,
        seq=seq,
        event_id=event_id,
        type=type_,
        stream=stream,
        stream_version=version,
        event=event,
        metadata={},
        recorded_at=recorded_at,
    )
    fields = event_to_dict(event)
    fields.pop("type", None)
    # The same JSON as StoredEvent.to_json() (the audit log entry).
    body = {
        "seq": seq,
        "id": event_id,
        "type": type_,
        "workspace": ws,
        "stream": stream,
        "stream_version": version,
        "data": fields,
        "metadata": msgspec.Raw(metadata.encode()),
        "recorded_at": recorded_at.isoformat(),
    }
    return _Outgoing(seq, event_id, subject_for(stored), _ENCODE.encode(body))


def subject_for(event: StoredEvent) -> str:
    """`rekor.<workspace>.<collection or _>.<event type>` (tokens made NATS-safe)."""
    data = event.event
    collection = getattr(data, "collection", None)
    if collection is None and event.type.startswith("collection."):
        collection = getattr(data, "name", None)
    token = _UNSAFE.sub("_", collection) if collection else "_"
    ws = _UNSAFE.sub("_", event.workspace_id)
    kind = ".".join(_UNSAFE.sub("_", part) for part in event.type.split("."))
    return f"rekor.{ws}.{token}.{kind}"


async def connect_nats(url: str, name: str) -> Any:
    """A NATS connection that reconnects forever once established."""
    return await nats.connect(
        url,
        name=name,
        connect_timeout=2,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=_quiet,
        disconnected_cb=_quiet_cb,
        reconnected_cb=_quiet_cb,
        closed_cb=_quiet_cb,
    )


async def _quiet(exc: Exception) -> None:
    log.debug("nats: %s", exc)


async def _quiet_cb() -> None:
    return None


async def ensure_stream(js: Any, config: StreamConfig) -> None:
    """Create the stream, or bring its subjects / duplicate window up to date."""
    wanted = js_api.StreamConfig(
        name=config.stream_name,
        subjects=["rekor.>"],
        storage=js_api.StorageType.FILE,
        duplicate_window=config.duplicate_window_s,
        num_replicas=config.stream_replicas,
    )
    try:
        await js.add_stream(wanted)
    except BadRequestError:
        await js.update_stream(wanted)


class Relay:
    """Background publisher; one per process (several processes may run one each)."""

    def __init__(
        self, service: Any, config: StreamConfig, nats_url: str, notifier: Notifier
    ) -> None:
        self.service = service
        self.config = config
        self.nats_url = nats_url
        self.nc: Any = None
        self.js: Any = None
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.published = 0
        self.last_error: str | None = None
        notifier.subscribe(self._notified)

    def _notified(self, workspace_id: str | None) -> None:
        if workspace_id is not None:
            self._dirty.add(workspace_id)
        self._wake.set()

    def start(self) -> None:
        """Start connecting and relaying in the background."""
        self._task = asyncio.create_task(self._run(), name="rekor-relay")

    async def _connect(self) -> None:
        while self.nc is None and not self._stopping:
            try:
                nc = await connect_nats(self.nats_url, "rekor-relay")
                js = nc.jetstream(publish_async_max_pending=self.config.relay_batch * 2)
                await ensure_stream(js, self.config)
                self.nc, self.js = nc, js
                self.last_error = None
            except Exception as exc:
                self.last_error = f"nats: {type(exc).__name__}: {exc}"
                with contextlib.suppress(Exception):
                    await nc.close()  # type: ignore[possibly-undefined]
                await asyncio.sleep(1.0)

    async def _run(self) -> None:
        await self._connect()
        backoff = 0.1
        last_scan = 0.0
        while not self._stopping:
            try:
                if time.monotonic() - last_scan >= self.config.relay_poll_s:
                    self._dirty.update(await self._lagging())
                    last_scan = time.monotonic()
                if self.nc is None or not self.nc.is_connected:
                    await asyncio.sleep(0.2)
                    continue
                while self._dirty:
                    ws = self._dirty.pop()
                    try:
                        await self.drain(ws)
                    except BaseException:
                        self._dirty.add(ws)
                        raise
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("relay: %s; retrying", self.last_error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.relay_poll_s)

    async def _lagging(self) -> list[str]:
        async with self.service.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT w.workspace_id FROM workspaces w LEFT JOIN relay_checkpoints c"
                " USING (workspace_id) WHERE w.head > coalesce(c.seq, 0)"
            )
            return [r[0] for r in await cur.fetchall()]

    async def drain(self, workspace_id: str) -> int:
        """Publish everything of one workspace past its checkpoint; returns the count."""
        total = 0
        while True:
            n = await self._publish_batch(workspace_id)
            total += n
            if n < self.config.relay_batch:
                return total

    async def _publish_batch(self, ws: str) -> int:
        async with self.service.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO relay_checkpoints (workspace_id) VALUES (%s) ON CONFLICT DO NOTHING",
                (ws,),
            )
            await conn.commit()
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT seq FROM relay_checkpoints WHERE workspace_id = %s"
                    " FOR UPDATE SKIP LOCKED",
                    (ws,),
                )
                row = await cur.fetchone()
                if row is None:
                    return 0  # another relay is publishing this workspace right now
                checkpoint = int(row[0])
                cur = await conn.execute(_SELECT, (ws, checkpoint, self.config.relay_batch))
                events = [_outgoing(ws, row) for row in await cur.fetchall()]
                if not events:
                    return 0
                futures = []
                for out in events:
                    futures.append(
                        await self.js.publish_async(
                            out.subject, out.body, headers={"Nats-Msg-Id": out.event_id}
                        )
                    )
                acks = await asyncio.wait_for(asyncio.gather(*futures), timeout=10)
                for ack in acks:
                    if getattr(ack, "stream", None) != self.config.stream_name:
                        raise RuntimeError(f"unexpected publish ack {ack!r}")
                await conn.execute(
                    "UPDATE relay_checkpoints SET seq = %s, updated_at = now()"
                    " WHERE workspace_id = %s AND seq < %s",
                    (events[-1].seq, ws, events[-1].seq),
                )
        self.published += len(events)
        return len(events)

    async def lag(self) -> int:
        """Events committed but not yet acknowledged by JetStream, over all workspaces."""
        async with self.service.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT coalesce(sum(w.head - coalesce(c.seq, 0)), 0) FROM workspaces w"
                " LEFT JOIN relay_checkpoints c USING (workspace_id)"
                " WHERE w.head > coalesce(c.seq, 0)"
            )
            row = await cur.fetchone()
            return int(row[0]) if row else 0

    async def health(self) -> str:
        if self.nc is None or not self.nc.is_connected:
            return f"nats unavailable ({self.last_error or 'connecting'}); writes are kept"
        return "ok"

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
