"""Hook payload mapping: turns accepted payloads (`hook.payload_received` in the log, pending in
`hook_receipts`) into record upserts through the service, in log order per workspace.

It reads the log's projection rather than NATS so that a payload acknowledged with 202 is
applied even while NATS is down; after a crash, receipts still `received` are simply picked up
again. Each payload is applied in the same transaction as its `hook.payload_applied|failed`
event, so it is applied exactly once however many instances run this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

log = logging.getLogger("rekor.stream.hooks")

BATCH = 200
# While payloads are being accepted, applying waits for a pause in the arrivals (QUIET_S), but
# never longer than MAX_DEFER_S before each batch: accepting and applying take turns on the
# workspace's writer (and share the CPU), and an accepted payload is already durable, so the 202
# goes first and the upserts follow. Under a sustained burst the applier still applies at least
# BATCH payloads per MAX_DEFER_S and catches up at full speed once the burst ends.
QUIET_S = 0.05
MAX_DEFER_S = 1.0


class HookApplier:
    """Background applier of one process; woken in-process by ingest, polls as a fallback."""

    def __init__(self, service: Any, poll_s: float = 1.0) -> None:
        self.service = service
        self.poll_s = poll_s
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.applied = 0
        self.last_error: str | None = None
        self._last_ingest = 0.0
        self._ingesting = 0

    def start(self) -> None:
        """Start applying in the background."""
        self._task = asyncio.create_task(self._run(), name="rekor-hook-applier")

    def arriving(self) -> None:
        """A payload is being accepted (call `wake` or `gone` when that is over)."""
        self._ingesting += 1
        self._last_ingest = time.monotonic()

    def gone(self) -> None:
        """A payload announced with `arriving` was refused or failed."""
        self._ingesting -= 1
        self._last_ingest = time.monotonic()

    def wake(self, workspace_id: str) -> None:
        """A payload for this workspace was just accepted."""
        self.gone()
        self._dirty.add(workspace_id)
        self._wake.set()

    async def _yield_to_ingest(self) -> None:
        deadline = time.monotonic() + MAX_DEFER_S
        while time.monotonic() < deadline:
            # Payloads still waiting for their commit count as activity: while a batch of
            # upserts holds the writer nothing commits, which must not look like a pause.
            quiet_for = time.monotonic() - self._last_ingest
            if self._ingesting <= 0 and quiet_for >= QUIET_S:
                return
            await asyncio.sleep(max(QUIET_S - quiet_for, 0.01))

    async def _pending_workspaces(self) -> list[str]:
        async with self.service.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT DISTINCT workspace_id FROM hook_receipts WHERE status = 'received'"
            )
            return [r[0] for r in await cur.fetchall()]

    async def _run(self) -> None:
        while True:
            try:
                self._wake.clear()
                await self._yield_to_ingest()
                self._dirty.update(await self._pending_workspaces())
                while self._dirty:
                    ws = self._dirty.pop()
                    while True:
                        n = await self.service.apply_hook_receipts(ws, BATCH)
                        self.applied += n
                        if n < BATCH:
                            break
                        # A backlog under a sustained burst: one batch, then the writer is
                        # the ingest's again until a pause (or MAX_DEFER_S).
                        await self._yield_to_ingest()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("hook applier: %s", self.last_error)
                await asyncio.sleep(0.5)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)

    async def health(self) -> str:
        return "ok" if self.last_error is None else f"retrying ({self.last_error})"

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
