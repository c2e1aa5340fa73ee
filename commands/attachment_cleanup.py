"""Storage cleanup: removes attachment objects after the log says they are gone.

A consumer of the event log, not of requests: it reads each workspace's events by `seq` after a
checkpoint kept in Postgres, deletes the objects named by

    attachment.added    `discarded_keys` (uploads superseded before anyone completed them)
    attachment.deleted  `keys`, plus uploads of that filename signed before the delete
    record.deleted      everything under the record's prefix (record ids are never reused)
    workspace.deleted   everything under the workspace's prefix signed before the delete

and only then moves the checkpoint past the event. A storage outage therefore just stalls the
checkpoint; the same event is retried (with backoff) until storage answers, so no delete is lost.
Deleting an already-deleted object is harmless, so a retry or a second Rekor process doing the
same work is safe; a per-workspace advisory lock keeps two processes from doing it at once.

It is woken by LISTEN `rekor_events` (the workspace id is the payload) and also sweeps every
workspace periodically, so a missed notification only delays work.

It also removes uploads nobody completed: every upload URL handed out is remembered
(`attachment_uploads`) until its upload is completed or superseded; once a URL has been
expired for `REKOR_UPLOAD_RETENTION_SECONDS` (default 24 h; completion is refused after half
of that), its object is deleted, unless the log shows that key as a completed attachment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from typing import Any

import psycopg

from commands.attachments import (
    filename_prefix,
    max_attachment_bytes,
    record_prefix,
    signed_at_head,
    upload_retention_seconds,
    workspace_prefix,
)
from commands.storage import ObjectStorage
from events.attachments import AttachmentAdded, AttachmentDeleted
from events.errors import Unavailable
from events.migrations import register
from events.store import NOTIFY_CHANNEL, StoredEvent, read_workspace
from events.types import RecordDeleted

_SETTLE_SECONDS = 0.25

log = logging.getLogger("rekor.attachments.cleanup")

register(
    "0602_attachment_cleanup",
    """
    CREATE TABLE IF NOT EXISTS attachment_cleanup_checkpoints (
        workspace_id text PRIMARY KEY,
        last_seq bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    """,
)

TYPES = ["attachment.added", "attachment.deleted", "record.deleted", "workspace.deleted"]
_LOCK_CLASS = 0x5245_4B41  # advisory lock namespace of this consumer
_BATCH = 200


class StorageCleanup:
    """The background consumer. `start()` launches it; `stop()` cancels it."""

    def __init__(
        self,
        database_url: str,
        storage: ObjectStorage,
        *,
        sweep_interval: float = 30.0,
        max_backoff: float = 5.0,
        bucket_ready: bool = False,
        upload_retention: float | None = None,
    ) -> None:
        self._database_url = database_url
        self._storage = storage
        self._sweep_interval = sweep_interval
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._dirty: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.failures = 0
        self.last_error: str | None = None
        self.deleted_objects = 0
        # If storage was down when Rekor started, the worker keeps trying to make the bucket.
        self._bucket_ready = bucket_ready
        self._upload_retention = (
            upload_retention if upload_retention is not None else upload_retention_seconds()
        )
        self._uploads_swept_at = 0.0

    async def start(self) -> None:
        """Launch the listener and the worker."""
        self._tasks = [
            asyncio.create_task(self._listen(), name="attachments-cleanup-listen"),
            asyncio.create_task(self._work(), name="attachments-cleanup-work"),
        ]

    async def stop(self) -> None:
        """Cancel both tasks (an interrupted event is simply redone on the next start)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def health(self) -> str:
        """`ok`, or the last error while deletes are being retried."""
        return "ok" if self.last_error is None else f"retrying: {self.last_error}"

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._database_url, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    # Anything committed while we were not listening is found by a sweep.
                    self._dirty.add("*")
                    self._wake.set()
                    backoff = 0.2
                    async for note in conn.notifies():
                        self._dirty.add(note.payload)
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cleanup listener lost its connection: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _work(self) -> None:
        backoff = 0.0
        conn: psycopg.AsyncConnection | None = None
        self._dirty.add("*")
        while True:
            try:
                if backoff:
                    # Retrying a failure: wait it out even if writes keep waking us, so an
                    # outage is not hammered at the write rate.
                    await asyncio.sleep(backoff)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=self._sweep_interval)
                        # Deleting storage is not latency-sensitive: let a burst of commits
                        # settle so one pass covers many, instead of one pass per commit.
                        await asyncio.sleep(_SETTLE_SECONDS)
                self._wake.clear()
                if not self._bucket_ready:
                    try:
                        await self._storage.ensure_bucket()
                        self._bucket_ready = True
                    except Unavailable as exc:
                        self.last_error = exc.message
                        backoff = min(max(backoff * 2, 0.25), self._max_backoff)
                        continue
                if backoff or not self._dirty:
                    self._dirty.add("*")  # a retry or a periodic sweep looks at everything
                dirty, self._dirty = self._dirty, set()
                if conn is None or conn.closed:
                    conn = await psycopg.AsyncConnection.connect(
                        self._database_url, autocommit=True
                    )
                workspaces = await self._pending_workspaces(conn, dirty)
                failed = False
                for ws in workspaces:
                    if not await self._drain(conn, ws):
                        failed = True
                if not failed and time.monotonic() - self._uploads_swept_at >= self._sweep_interval:
                    try:
                        while await self.sweep_uploads(conn) == _BATCH:
                            pass
                        self._uploads_swept_at = time.monotonic()
                    except Unavailable as exc:
                        self.last_error = exc.message
                        failed = True
                if failed:
                    self.failures += 1
                    backoff = min(max(backoff * 2, 0.25), self._max_backoff)
                    backoff *= random.uniform(0.8, 1.0)
                else:
                    backoff = 0.0
                    self.last_error = None
            except asyncio.CancelledError:
                if conn is not None:
                    await conn.close()
                raise
            except Exception as exc:  # database trouble: reconnect and retry
                log.warning("cleanup pass failed: %s", exc)
                self.last_error = f"database: {type(exc).__name__}"
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                conn = None
                backoff = min(max(backoff * 2, 0.25), self._max_backoff)

    async def sweep_uploads(self, conn: psycopg.AsyncConnection) -> int:
        """Delete up to one batch of uploads whose URL expired more than the retention period
        ago and that were never completed; returns how many grants it looked at."""
        cur = await conn.execute(
            "SELECT workspace_id, key FROM attachment_uploads"
            " WHERE expires_at + make_interval(secs => %s) < now() ORDER BY expires_at LIMIT %s",
            (self._upload_retention, _BATCH),
        )
        grants = await cur.fetchall()
        doomed = [key for ws, key in grants if not await _completed(conn, ws, key)]
        if doomed:
            await self._storage.delete(doomed)  # Unavailable: grants stay, retried later
            self.deleted_objects += len(doomed)
        if grants:
            await conn.execute(
                "DELETE FROM attachment_uploads WHERE (workspace_id, key) IN"
                " (SELECT * FROM unnest(%s::text[], %s::text[]))",
                ([ws for ws, _ in grants], [key for _, key in grants]),
            )
        return len(grants)

    async def _pending_workspaces(self, conn: psycopg.AsyncConnection, dirty: set[str]) -> list:
        """Workspaces whose head is past our checkpoint (all of them, or just the dirty ones)."""
        sql = (
            "SELECT w.workspace_id FROM workspaces w LEFT JOIN attachment_cleanup_checkpoints c"
            " USING (workspace_id) WHERE w.head > coalesce(c.last_seq, 0)"
        )
        params: tuple[Any, ...] = ()
        if "*" not in dirty:
            sql += " AND w.workspace_id = ANY(%s)"
            params = (list(dirty),)
        cur = await conn.execute(sql + " ORDER BY w.workspace_id", params)
        return [row[0] for row in await cur.fetchall()]

    async def _drain(self, conn: psycopg.AsyncConnection, workspace_id: str) -> bool:
        """Process one workspace up to its committed head; False if storage failed."""
        cur = await conn.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_LOCK_CLASS, workspace_id)
        )
        got = await cur.fetchone()
        if not got or not got[0]:
            return True  # another Rekor process is on it
        try:
            while True:
                cur = await conn.execute(
                    "SELECT w.head, coalesce(c.last_seq, 0) FROM workspaces w"
                    " LEFT JOIN attachment_cleanup_checkpoints c USING (workspace_id)"
                    " WHERE w.workspace_id = %s",
                    (workspace_id,),
                )
                row = await cur.fetchone()
                if row is None:
                    return True
                head, checkpoint = int(row[0]), int(row[1])
                if head <= checkpoint:
                    return True
                # `head` is committed, and seq is commit-ordered: no event <= head can still
                # appear, so the checkpoint may move to head once these are done.
                events = await read_workspace(
                    conn, workspace_id, checkpoint, _BATCH, types=TYPES, up_to_seq=head
                )
                for stored in events:
                    try:
                        await self._clean(stored)
                    except Exception as exc:
                        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                        log.warning(
                            "storage cleanup of %s seq %s failed (will retry): %s",
                            workspace_id,
                            stored.seq,
                            exc,
                        )
                        return False
                    await self._checkpoint(conn, workspace_id, stored.seq)
                if len(events) < _BATCH:
                    await self._checkpoint(conn, workspace_id, head)
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_CLASS, workspace_id)
            )

    async def _checkpoint(self, conn: psycopg.AsyncConnection, workspace_id: str, seq: int) -> None:
        # Monotonic: a slower process can never move the checkpoint back.
        await conn.execute(
            "INSERT INTO attachment_cleanup_checkpoints (workspace_id, last_seq) VALUES (%s, %s)"
            " ON CONFLICT (workspace_id) DO UPDATE SET last_seq = excluded.last_seq,"
            " updated_at = now() WHERE attachment_cleanup_checkpoints.last_seq < excluded.last_seq",
            (workspace_id, seq),
        )

    async def _clean(self, stored: StoredEvent) -> None:
        """Delete the objects one event says are gone."""
        e = stored.event
        ws = stored.workspace_id
        doomed: list[str] = []
        if isinstance(e, AttachmentAdded):
            doomed = list(e.discarded_keys)
        elif isinstance(e, AttachmentDeleted):
            listed = await self._storage.list_keys(
                filename_prefix(ws, e.collection, e.record_id, e.filename)
            )
            stale = [k for k in listed if signed_at_head(k) < stored.seq]
            doomed = sorted(set(e.keys) | set(stale))
        elif isinstance(e, RecordDeleted):
            doomed = await self._storage.list_keys(record_prefix(ws, e.collection, e.id))
        elif stored.type == "workspace.deleted":
            listed = await self._storage.list_keys(workspace_prefix(ws))
            doomed = [k for k in listed if signed_at_head(k) < stored.seq]
        if doomed:
            await self._storage.delete(doomed)
            self.deleted_objects += len(doomed)


async def _completed(conn: psycopg.AsyncConnection, workspace_id: str, key: str) -> bool:
    """Whether the log records this object key as a completed attachment (its stream is named
    by the record id and filename hash in the key: ws/<ws>/<collection>/<record>/<hash>/...)."""
    parts = key.split("/")
    if len(parts) != 6:
        return True  # not a key of ours: never delete it
    stream = f"attachment:{parts[3]}:{parts[4]}"
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM events WHERE workspace_id = %s AND stream = %s"
        " AND type = 'attachment.added' AND data->>'key' = %s)",
        (workspace_id, stream, key),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


# -- the component ----------------------------------------------------------------------------


class AttachmentsComponent:
    """What the service uses for attachments: the storage client, the size limit and the
    cleanup consumer (None in processes that run no workers)."""

    def __init__(
        self, storage: ObjectStorage, max_bytes: int, cleanup: StorageCleanup | None
    ) -> None:
        self.storage = storage
        self.max_bytes = max_bytes
        self.cleanup = cleanup

    async def stop(self) -> None:
        """Stop the consumer, then close the storage clients."""
        if self.cleanup is not None:
            await self.cleanup.stop()
        await self.storage.stop()

    async def health(self) -> str:
        """Storage reachability, and whether deletes are waiting on a retry."""
        status = await self.storage.health()
        if status == "ok" and self.cleanup is not None:
            return self.cleanup.health()
        return status


async def start_attachments(service: Any, settings: Any) -> tuple[str, Any]:
    """COMPONENT_STARTERS entry: storage client from settings.s3_*, bucket ensured, cleanup
    consumer started. Without an S3 endpoint, attachments are unavailable (503)."""
    if not getattr(settings, "s3_endpoint", None):
        return "attachments", None
    storage = ObjectStorage(
        endpoint=settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        bucket=settings.s3_bucket,
        region=settings.s3_region,
        public_endpoint=os.environ.get("REKOR_S3_PUBLIC_ENDPOINT") or None,
    )
    await storage.start()
    bucket_ready = False
    try:
        await storage.ensure_bucket()
        bucket_ready = True
    except Unavailable as exc:
        # Records do not need storage: serve anyway (the cleanup worker keeps trying to make
        # the bucket); uploads fail clearly until storage is back.
        log.warning("object storage not reachable at start: %s", exc.message)
    cleanup = None
    if getattr(settings, "run_workers", True):
        cleanup = StorageCleanup(settings.database_url, storage, bucket_ready=bucket_ready)
        await cleanup.start()
    return "attachments", AttachmentsComponent(storage, max_attachment_bytes(), cleanup)
