"""The composition root: builds the pool, applies migrations, wires the service."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
import psycopg
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

import projections.core  # noqa: F401 - registers projectors and migrations
from commands import (
    apikeys,  # noqa: F401 - registers its migration
    handlers,
)
from commands.attachment_cleanup import start_attachments
from commands.service import RekorService
from commands.writer import WorkspaceWriter
from events import store  # noqa: F401 - registers the event store migration
from events.migrations import migrate
from stream import components as stream_components

log = logging.getLogger("rekor.components")

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


def _configure_json() -> None:
    # msgspec instead of the stdlib json: faster both ways on every jsonb value.
    set_json_dumps(_json_encode)
    set_json_loads(_json_decode)


async def build_service(
    database_url: str, *, min_size: int = 2, max_size: int = 20
) -> RekorService:
    """Connect, migrate and return a ready RekorService."""
    _configure_json()
    # Autocommit: a read is one round trip, not BEGIN + SELECT + COMMIT. Writes open explicit
    # transactions (`conn.transaction()`), as the writer and every multi-statement path do.
    pool = AsyncConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=10,
        kwargs={"autocommit": True},
    )
    await pool.open(wait=True, timeout=30)
    async with pool.connection() as conn:
        await migrate(conn)
    return RekorService(pool, WorkspaceWriter(pool, prefetch=handlers.prefetch))


async def migrate_only(database_url: str) -> list[str]:
    """Apply migrations and return what was applied (used by `rekor admin migrate`)."""
    _configure_json()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        return await migrate(conn)


# Background components (event relay, trigger delivery, storage...) register a starter here:
# an async function (service, settings) -> component with an async `stop()` (and optionally
# an async `health()` -> str). They are started after the service and stopped before it.
COMPONENT_STARTERS: list = []
COMPONENT_STARTERS.append(start_attachments)
COMPONENT_STARTERS.extend(stream_components.STARTERS)


async def _start_registered(service: RekorService, settings: object) -> None:
    for starter in COMPONENT_STARTERS:
        name, component = await starter(service, settings)
        if component is not None:
            service.extensions[name] = component


async def start_components(service: RekorService, settings: object) -> None:
    """Start every registered background component, or (with leader election) the process
    that will start them once it holds the leader lock."""
    if getattr(settings, "leader_election", False):
        leadership = Leadership(service, settings)
        service.leadership = leadership  # type: ignore[attr-defined]
        await leadership.start()
        return
    await _start_registered(service, settings)


async def stop_components(service: RekorService) -> None:
    """Stop components in reverse start order (graceful shutdown)."""
    leadership = getattr(service, "leadership", None)
    if leadership is not None:
        await leadership.stop()
    await _stop_extensions(service)


_LEADER_LOCK_KEY = 0x5245_4B50


class Leadership:
    """Runs the background components in exactly one of several API processes.

    The leader holds a session-level PostgreSQL advisory lock on a dedicated connection; if it
    dies, its session ends, the lock is released and another process takes over within a few
    seconds. Every consumer keeps its checkpoint in Postgres, so a takeover resumes where the
    old leader stopped.
    """

    RETRY_SECONDS = 2.0

    def __init__(self, service: RekorService, settings: object) -> None:
        self.service = service
        self.settings = settings
        self.is_leader = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Start the request-serving parts now (storage client, change-feed listener); the
        consumers start once this process wins the election."""
        await _start_registered(self.service, self._follower_settings)
        self._task = asyncio.create_task(self._run())

    @property
    def _follower_settings(self) -> object:
        return msgspec.structs.replace(self.settings, run_workers=False)  # type: ignore[type-var]

    async def _become(self, leader: bool) -> None:
        # Starters decide what to run from `run_workers`: restart them all in the new role.
        await _stop_extensions(self.service)
        await _start_registered(self.service, self.settings if leader else self._follower_settings)
        self.is_leader = leader

    async def _run(self) -> None:
        while not self._stopping.is_set():
            conn = None
            try:
                conn = await psycopg.AsyncConnection.connect(self.service_url, autocommit=True)
                cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_LEADER_LOCK_KEY,))
                row = await cur.fetchone()
                if row and row[0]:
                    log.info("this process runs the background consumers (leader)")
                    await self._become(leader=True)
                    # Hold the lock; a failing check means the session (and lock) is gone.
                    while not self._stopping.is_set():
                        await self._wait(self.RETRY_SECONDS)
                        await conn.execute("SELECT 1")
            except (psycopg.Error, OSError) as exc:
                log.warning("leader election: %s", exc)
            finally:
                if self.is_leader and not self._stopping.is_set():
                    await self._become(leader=False)
                if conn is not None:
                    await conn.close()
            await self._wait(self.RETRY_SECONDS)

    @property
    def service_url(self) -> str:
        return str(self.settings.database_url)  # type: ignore[attr-defined]

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
        self.is_leader = False

    async def health(self) -> str:
        return "leader" if self.is_leader else "standby"


_STOP_DEADLINE_SECONDS = 5.0


async def _stop_extensions(service: RekorService) -> None:
    # Each component gets a bounded time to stop: a relay deep in a backlog must not hold up
    # shutdown. Whatever it had not checkpointed is published again after restart (and
    # de-duplicated by event id), so cutting it short loses nothing.
    for name in reversed(list(service.extensions)):
        stop = getattr(service.extensions.pop(name), "stop", None)
        if stop is None:
            continue
        try:
            await asyncio.wait_for(stop(), _STOP_DEADLINE_SECONDS)
        except TimeoutError:
            log.warning("%s did not stop within %.0fs; abandoned", name, _STOP_DEADLINE_SECONDS)
        except Exception:
            log.exception("%s failed while stopping", name)
