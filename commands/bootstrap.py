"""The composition root: builds the pool, applies migrations, wires the service."""

from __future__ import annotations

import msgspec
import psycopg
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

import projections.core  # noqa: F401 - registers projectors and migrations
from commands import apikeys  # noqa: F401 - registers its migration
from commands.attachment_cleanup import start_attachments
from commands.service import RekorService
from commands.writer import WorkspaceWriter
from events import store  # noqa: F401 - registers the event store migration
from events.migrations import migrate
from stream import components as stream_components

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
    pool = AsyncConnectionPool(
        database_url, min_size=min_size, max_size=max_size, open=False, timeout=10
    )
    await pool.open(wait=True, timeout=30)
    async with pool.connection() as conn:
        await migrate(conn)
    return RekorService(pool, WorkspaceWriter(pool))


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


async def start_components(service: RekorService, settings: object) -> None:
    """Start every registered background component."""
    for starter in COMPONENT_STARTERS:
        name, component = await starter(service, settings)
        if component is not None:
            service.extensions[name] = component


async def stop_components(service: RekorService) -> None:
    """Stop components in reverse start order (graceful shutdown)."""
    for name in reversed(list(service.extensions)):
        stop = getattr(service.extensions[name], "stop", None)
        if stop is not None:
            await stop()
