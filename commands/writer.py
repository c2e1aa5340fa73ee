"""Write coalescing (group commit) per workspace.

Every write to a workspace must hold that workspace's row lock until commit (gapless seq). With
one transaction per request, concurrent writers to one workspace queue on the lock and the
workspace tops out at one commit per fsync. So concurrent commands for the same workspace are
gathered into one transaction: each still runs its own handler, gets its own result or error and
its own seq; one bad command never fails its neighbours.

Safety net: a handler that fails *after* it appended (a bug, or an unexpected database error)
poisons the shared transaction; the group is then rolled back and every job re-run alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from events.errors import NotFound, RekorError
from events.store import StoredEvent, WorkspaceTx, lock_workspace

log = logging.getLogger("rekor.writer")

Work = Callable[[WorkspaceTx], Awaitable[Any]]


class Job:
    """One unit of work that must succeed or fail as a whole (a command, or a whole batch)."""

    __slots__ = ("creates_workspace", "future", "hint", "work")

    def __init__(
        self,
        work: Work,
        future: asyncio.Future[Any],
        creates_workspace: bool,
        hint: Any = None,
    ) -> None:
        self.work = work
        self.future = future
        self.creates_workspace = creates_workspace
        self.hint = hint


class _Poisoned(Exception):
    """A job failed after writing: the shared transaction cannot be trusted."""


class WorkspaceWriter:
    """Runs jobs per workspace, coalescing those that arrive while a commit is in flight."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        max_group: int = 64,
        on_commit: Callable[[list[StoredEvent]], None] | None = None,
        prefetch: Callable[[WorkspaceTx, list[Any]], Awaitable[None]] | None = None,
    ) -> None:
        self._pool = pool
        self._max_group = max_group
        self._pending: dict[str, list[Job]] = defaultdict(list)
        self._active: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_commit = on_commit
        # Given the hints of a group's jobs (their commands), loads in one query what their
        # handlers would otherwise look up one round trip at a time.
        self._prefetch = prefetch
        self.groups = 0
        self.jobs = 0

    async def submit(
        self, workspace_id: str, work: Work, *, creates_workspace: bool = False, hint: Any = None
    ) -> Any:
        """Run `work` inside a transaction holding the workspace lock; returns its result
        after commit, or raises its error."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[workspace_id].append(Job(work, future, creates_workspace, hint))
        if workspace_id not in self._active:
            self._active.add(workspace_id)
            task = asyncio.create_task(self._drain(workspace_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self, workspace_id: str) -> None:
        try:
            while self._pending[workspace_id]:
                queue = self._pending[workspace_id]
                group, rest = queue[: self._max_group], queue[self._max_group :]
                self._pending[workspace_id] = rest
                await self._run(workspace_id, group)
        finally:
            self._active.discard(workspace_id)
            if not self._pending.get(workspace_id):
                self._pending.pop(workspace_id, None)

    async def _run(self, workspace_id: str, group: list[Job]) -> None:
        try:
            outcomes = await self._transaction(workspace_id, group)
        except _Poisoned as exc:
            if len(group) > 1:
                for job in group:
                    await self._run(workspace_id, [job])
                return
            cause = exc.__cause__
            if isinstance(cause, RekorError):
                # The job wrote, then refused (e.g. an atomic batch whose 57th op fails): the
                # rollback undid its writes, so its own error is the honest answer.
                outcomes = [(group[0], None, cause)]
            else:
                log.error("write job failed after appending in %s", workspace_id, exc_info=cause)
                outcomes = [(group[0], None, _internal())]
        except RekorError as exc:
            outcomes = [(job, None, exc) for job in group]
        except (psycopg.OperationalError, OSError) as exc:
            if len(group) > 1:
                for job in group:
                    await self._run(workspace_id, [job])
                return
            outcomes = [(group[0], None, _unavailable(exc))]
        except Exception:
            if len(group) > 1:
                for job in group:
                    await self._run(workspace_id, [job])
                return
            outcomes = [(group[0], None, _internal())]
        self.groups += 1
        self.jobs += len(group)
        for job, result, error in outcomes:
            if job.future.done():
                continue
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)

    async def _transaction(
        self, workspace_id: str, group: list[Job]
    ) -> list[tuple[Job, Any, BaseException | None]]:
        outcomes: list[tuple[Job, Any, BaseException | None]] = []
        # Pipeline mode: statements whose results nobody reads (event and projection writes)
        # are sent without waiting, so a command costs about one round trip, not four.
        async with self._pool.connection() as conn, conn.pipeline(), conn.transaction():
            tx = await lock_workspace(
                conn, workspace_id, create=any(j.creates_workspace for j in group)
            )
            hints = [job.hint for job in group if job.hint is not None]
            if tx is not None and tx.exists and hints and self._prefetch is not None:
                await self._prefetch(tx, hints)
            for job in group:
                if tx is None or (not tx.exists and not job.creates_workspace):
                    outcomes.append((job, None, _no_workspace(workspace_id)))
                    continue
                head_before = tx.head
                try:
                    result = await job.work(tx)
                except RekorError as exc:
                    if tx.head != head_before:
                        raise _Poisoned from exc
                    outcomes.append((job, None, exc))
                    continue
                except Exception as exc:
                    raise _Poisoned from exc
                outcomes.append((job, result, None))
                if job.creates_workspace:
                    tx.exists = True
            if tx is not None:
                await tx.finish()
        if self._on_commit is not None and tx is not None and tx.appended:
            self._on_commit(tx.appended)
        return outcomes

    async def close(self) -> None:
        """Wait for in-flight groups (graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _no_workspace(workspace_id: str) -> NotFound:
    return NotFound(
        f"workspace '{workspace_id}' not found",
        [{"path": "workspace_id", "message": "list workspaces to see the ids you can use"}],
    )


def _internal() -> RekorError:
    err = RekorError("internal error while writing; nothing was written, it is safe to retry")
    return err


def _unavailable(exc: BaseException) -> RekorError:
    from events.errors import Unavailable

    return Unavailable(
        "the database is unavailable; nothing was written, retry shortly",
        [{"message": type(exc).__name__}],
    )
