"""Projectors: each event type maps to one function that applies it to the projection tables.

The same functions run inline (inside the append transaction, so a write is readable as soon as
it returns) and during a rebuild from the log, which is why a rebuild yields identical tables.
A projector reads nothing but its event and the tables it owns, and never looks at the clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from events.store import StoredEvent

Projector = Callable[[psycopg.AsyncConnection, StoredEvent], Awaitable[None]]
# A projector that is one SQL statement: (sql, params) for an event.
Statement = tuple[str, tuple[Any, ...]]
StatementProjector = Callable[[StoredEvent], Statement]

_PROJECTORS: dict[str, list[Projector]] = {}
_STATEMENTS: dict[str, StatementProjector] = {}

# Tables holding per-workspace projected state (every one has a `workspace_id` column). A
# workspace deletion and a rebuild clear them all.
PROJECTION_TABLES: list[str] = []


def projects(*tags: str) -> Callable[[Projector], Projector]:
    """Decorator: register a projector for the given event tags. Several projectors may
    handle one tag (each owns its own tables); they run in registration order."""

    def register(fn: Projector) -> Projector:
        for tag in tags:
            _PROJECTORS.setdefault(tag, []).append(fn)
        return fn

    return register


def projects_statement(*tags: str) -> Callable[[StatementProjector], StatementProjector]:
    """Decorator: register a projector that is a single SQL statement. It runs like any
    projector (rebuilds, `apply`), and when it is its event's only projector the write path
    sends it in the same statement as the event's INSERT (`single_statement`): half the
    statements for the hot record events."""

    def register(fn: StatementProjector) -> StatementProjector:
        async def run(conn: psycopg.AsyncConnection, stored: StoredEvent) -> None:
            sql, params = fn(stored)
            await conn.execute(sql, params)  # type: ignore[arg-type]

        for tag in tags:
            _PROJECTORS.setdefault(tag, []).append(run)
            _STATEMENTS[tag] = fn
        return fn

    return register


def single_statement(tag: str) -> StatementProjector | None:
    """The statement that applies an event of this tag, when one statement is all its
    projection takes (else None: use `apply`)."""
    fn = _STATEMENTS.get(tag)
    return fn if fn is not None and len(_PROJECTORS.get(tag, ())) == 1 else None


def projection_table(name: str) -> None:
    """Declare a workspace-scoped projection table (cleared on workspace delete / rebuild)."""
    if name not in PROJECTION_TABLES:
        PROJECTION_TABLES.append(name)


async def apply(conn: psycopg.AsyncConnection, stored: StoredEvent) -> None:
    """Apply one event to the projections. Events without a projector (e.g. pure audit events)
    are fine: they live in the log only."""
    for fn in _PROJECTORS.get(stored.type, ()):
        await fn(conn, stored)


async def purge_workspace(conn: psycopg.AsyncConnection, workspace_id: str) -> None:
    """Remove every projected row of a workspace (its log stays)."""
    for table in PROJECTION_TABLES:
        await conn.execute(
            f"DELETE FROM {table} WHERE workspace_id = %s",
            (workspace_id,),
        )
