"""One LISTEN connection per process on `rekor_events`, fanned out to in-process waiters.

Every commit that appended events sends `pg_notify('rekor_events', <workspace id>)`. The relay
and the change feed wait on this instead of polling; a notification is only a hint (they always
read the log by seq), so a missed one costs latency, never data: after a reconnect everyone is
woken, and every consumer also polls slowly as a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable

import psycopg

from events.store import NOTIFY_CHANNEL

log = logging.getLogger("rekor.stream.notify")


class Notifier:
    """Per-workspace wake-ups from Postgres notifications."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._waiters: dict[str, weakref.WeakSet[asyncio.Event]] = {}
        self._listeners: list[Callable[[str | None], None]] = []
        self._task: asyncio.Task[None] | None = None
        self.connected = False

    def start(self) -> None:
        """Start listening in the background (reconnects forever)."""
        self._task = asyncio.create_task(self._run(), name="rekor-notifier")

    def waiter(self, workspace_id: str) -> asyncio.Event:
        """An event set at the next notification for this workspace. Take it before reading
        the log, then wait on it: a commit in between still wakes you."""
        ev = asyncio.Event()
        self._waiters.setdefault(workspace_id, weakref.WeakSet()).add(ev)
        return ev

    def subscribe(self, listener: Callable[[str | None], None]) -> None:
        """Call `listener(workspace_id)` on every notification (None: maybe missed some)."""
        self._listeners.append(listener)

    def fire(self, workspace_id: str | None) -> None:
        """Wake the waiters of one workspace (or of all, with None)."""
        if workspace_id is None:
            targets = list(self._waiters)
        else:
            targets = [workspace_id]
        for ws in targets:
            for ev in list(self._waiters.pop(ws, ())):
                ev.set()
        for listener in self._listeners:
            listener(workspace_id)

    async def _run(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.connected = True
                    self.fire(None)
                    async for note in conn.notifies():
                        self.fire(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected:
                    log.warning("notification connection lost: %s", exc)
                self.connected = False
                await asyncio.sleep(1.0)

    async def health(self) -> str:
        return "ok" if self.connected else "reconnecting"

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
