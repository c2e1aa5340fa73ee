"""Event-store contracts: gapless commit-ordered seq under concurrency, optimistic concurrency
without lost updates, stream-version uniqueness, rebuild equals live, kill -9 loses nothing."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from typing import Any

import httpx
import pytest

from commands.bootstrap import build_service
from commands.principal import SYSTEM
from events.errors import Conflict
from events.store import StreamVersionConflict, lock_workspace, read_workspace
from events.types import WorkspaceDeleted
from projections.projector import PROJECTION_TABLES
from projections.rebuild import rebuild_workspace
from tests.conftest import INCIDENT, INCIDENT_SCHEMA, Server, unique

COUNTER_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}}


async def _all_seqs(service: Any, ws: str) -> list[int]:
    async with service.connection() as conn:
        cur = await conn.execute(
            "SELECT seq FROM events WHERE workspace_id = %s ORDER BY seq", (ws,)
        )
        return [r[0] for r in await cur.fetchall()]


async def test_sixteen_writers_gapless_and_no_lost_update(settings: Any, service: Any) -> None:
    ws = unique()
    await service.create_workspace(SYSTEM, ws)
    await service.upsert_collection(SYSTEM, ws, "counters", COUNTER_SCHEMA)
    counter = (await service.upsert_record(SYSTEM, ws, "counters", {"n": 0})).body["id"]
    # Sixteen independent services = sixteen pools and group-commit writers: they contend on
    # the workspace row lock in Postgres, as separate server processes would.
    writers = [
        await build_service(settings.database_url, min_size=1, max_size=2) for _ in range(16)
    ]
    increments_each = 5
    conflicts = 0

    async def writer(svc: Any, i: int) -> None:
        nonlocal conflicts
        for j in range(10):
            await svc.upsert_record(SYSTEM, ws, "counters", {"n": -1}, external_id=f"w{i}-{j}")
        done = 0
        while done < increments_each:
            current = await svc.get_record(SYSTEM, ws, "counters", counter)
            try:
                await svc.upsert_record(
                    SYSTEM,
                    ws,
                    "counters",
                    {"n": current["data"]["n"] + 1},
                    id=counter,
                    expected_version=current["version"],
                )
                done += 1
            except Conflict:
                conflicts += 1

    try:
        await asyncio.gather(*(writer(svc, i) for i, svc in enumerate(writers)))
    finally:
        for svc in writers:
            await svc.close()
    final = await service.get_record(SYSTEM, ws, "counters", counter)
    assert final["data"]["n"] == 16 * increments_each, "an increment was lost"
    assert final["version"] == 1 + 16 * increments_each
    seqs = await _all_seqs(service, ws)
    assert seqs == list(range(1, len(seqs) + 1)), "seq must be gapless"
    assert len(seqs) == 3 + 16 * 10 + 16 * increments_each
    assert conflicts > 0, "the test should have exercised version conflicts"


async def test_group_commit_isolates_bad_commands(service: Any) -> None:
    ws = unique()
    await service.create_workspace(SYSTEM, ws)
    await service.upsert_collection(SYSTEM, ws, "incidents", INCIDENT_SCHEMA)
    good = [
        service.upsert_record(SYSTEM, ws, "incidents", {**INCIDENT, "title": f"t{i}"})
        for i in range(20)
    ]
    bad = [service.upsert_record(SYSTEM, ws, "incidents", {"title": 1}) for _ in range(5)]
    results = await asyncio.gather(*good, *bad, return_exceptions=True)
    oks = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(oks) == 20 and len(errors) == 5
    assert all(getattr(e, "code", None) == "VALIDATION_ERROR" for e in errors)
    assert sorted(r.body["seq"] for r in oks) == list(range(3, 23))


async def test_stream_version_is_unique(service: Any) -> None:
    ws = unique()
    await service.create_workspace(SYSTEM, ws)
    async with service.connection() as conn:
        with pytest.raises(StreamVersionConflict):
            async with conn.transaction():
                tx = await lock_workspace(conn, ws)
                assert tx is not None
                # "workspace" stream already has version 1 (workspace.created).
                await tx.append("workspace", WorkspaceDeleted(id=ws), 1)
    assert await _all_seqs(service, ws) == [1]


async def test_event_and_its_one_statement_projection_are_one_statement(service: Any) -> None:
    """Record events carry their projection in the INSERT's statement: both land or neither,
    a stream-version clash is still a StreamVersionConflict, and a clash on the projection's
    own table is not mistaken for one."""
    import psycopg

    from events.types import RecordCreated
    from projections.projector import single_statement

    assert single_statement("record.created") is not None
    assert single_statement("relationship.created") is None  # more than one statement
    ws = unique()
    await service.create_workspace(SYSTEM, ws)
    await service.upsert_collection(SYSTEM, ws, "incidents", INCIDENT_SCHEMA)
    made = await service.upsert_record(SYSTEM, ws, "incidents", INCIDENT, external_id="E-1")
    rid = made.body["id"]
    project = single_statement("record.created")
    async with service.connection() as conn:
        # Same record id on a new stream: the records primary key refuses the projection, so
        # the event is not appended either, and the error is the database's, not a conflict.
        with pytest.raises(psycopg.errors.UniqueViolation):
            async with conn.transaction():
                tx = await lock_workspace(conn, ws)
                assert tx is not None
                again = RecordCreated(id=rid, collection="incidents", data=INCIDENT)
                await tx.append("record:other", again, 1, also=project)
        with pytest.raises(StreamVersionConflict):
            async with conn.transaction():
                tx = await lock_workspace(conn, ws)
                assert tx is not None
                fresh = RecordCreated(id=str(uuid.uuid4()), collection="incidents", data={})
                await tx.append(f"record:{rid}", fresh, 1, also=project)
        cur = await conn.execute(
            "SELECT count(*) FROM events WHERE workspace_id = %s AND type = 'record.created'",
            (ws,),
        )
        assert (await cur.fetchone())[0] == 1
        cur = await conn.execute("SELECT count(*) FROM records WHERE workspace_id = %s", (ws,))
        assert (await cur.fetchone())[0] == 1


async def _snapshot(service: Any, ws: str) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with service.connection() as conn:
        for table in [*PROJECTION_TABLES, "workspaces"]:
            cur = await conn.execute(
                f"SELECT * FROM {table} WHERE workspace_id = %s",
                (ws,),
            )
            out[table] = sorted(tuple(map(repr, row)) for row in await cur.fetchall())
    return out


async def test_rebuild_reproduces_live_tables(service: Any) -> None:
    ws = unique()
    rng = random.Random(7)
    await service.create_workspace(SYSTEM, ws, "Rebuild")
    for name in ("incidents", "tasks", "doomed"):
        await service.upsert_collection(SYSTEM, ws, name, {"type": "object"})
    ids: dict[str, list[str]] = {"incidents": [], "tasks": [], "doomed": []}
    for step in range(300):
        coll = rng.choice(list(ids))
        action = rng.random()
        if action < 0.45 or not ids[coll]:
            ext = f"x{rng.randrange(40)}" if rng.random() < 0.5 else None
            r = await service.upsert_record(
                SYSTEM, ws, coll, {"v": rng.randrange(5), "s": step}, external_id=ext
            )
            if r.created:
                ids[coll].append(r.body["id"])
        elif action < 0.75:
            await service.patch_record(
                SYSTEM, ws, coll, rng.choice(ids[coll]), {"data": {"p": step, "v": None}}
            )
        elif action < 0.9:
            victim = ids[coll].pop(rng.randrange(len(ids[coll])))
            await service.delete_record(SYSTEM, ws, coll, victim)
        else:
            await service.upsert_collection(
                SYSTEM, ws, coll, {"type": "object", "description": f"s{step}"}
            )
    await service.delete_collection(SYSTEM, ws, "doomed")
    before = await _snapshot(service, ws)
    assert before["records"], "the workload should leave records behind"
    async with service.connection() as conn:
        replayed = await rebuild_workspace(conn, ws)
    assert replayed == len(await _all_seqs(service, ws))
    assert await _snapshot(service, ws) == before


def _hammer(url: str, key: str, ws: str, acked: list[str], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = client.post(
                    f"/v1/{ws}/collections/incidents/records",
                    json={"data": {**INCIDENT, "title": f"{threading.get_ident()}-{i}"}},
                    timeout=5,
                )
            except httpx.HTTPError:
                return
            if r.status_code == 201:
                acked.append(r.json()["id"])


async def test_kill_9_loses_nothing_acknowledged(
    endpoints: Any, admin_key: str, service: Any, tmp_path: Any
) -> None:
    ws = unique()
    await service.create_workspace(SYSTEM, ws)
    await service.upsert_collection(SYSTEM, ws, "incidents", INCIDENT_SCHEMA)
    srv = Server(endpoints, tmp_path)
    acked: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_hammer, args=(srv.url, admin_key, ws, acked, stop))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(acked) < 200 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        srv.kill()  # mid-write: the clients are still sending
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        srv.stop()
    assert len(acked) >= 200
    async with service.connection() as conn:
        events = await read_workspace(conn, ws, 0, 100_000)
        cur = await conn.execute("SELECT id::text FROM records WHERE workspace_id = %s", (ws,))
        stored = {r[0] for r in await cur.fetchall()}
    assert set(acked) <= stored, "an acknowledged write was lost"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # The server comes back on the same data.
    again = Server(endpoints, tmp_path)
    try:
        async with httpx.AsyncClient(
            base_url=again.url, headers={"Authorization": f"Bearer {admin_key}"}
        ) as client:
            r = await client.get(f"/v1/{ws}/collections/incidents/records/{acked[-1]}")
            assert r.status_code == 200
    finally:
        again.stop()


async def test_rebuild_through_the_cli(service: Any, settings: Any) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    ws = unique()
    await service.create_workspace(SYSTEM, ws)
    await service.upsert_collection(SYSTEM, ws, "incidents", INCIDENT_SCHEMA)
    for i in range(5):
        await service.upsert_record(SYSTEM, ws, "incidents", {**INCIDENT, "title": f"t{i}"})
    before = await _snapshot(service, ws)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.app",
            "admin",
            "rebuild-projections",
            "--workspace",
            ws,
            "--database-url",
            settings.database_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{ws}: rebuilt from 7 events" in proc.stdout
    assert await _snapshot(service, ws) == before
    proc = subprocess.run(
        [sys.executable, "-m", "cli.app", "admin", "rebuild-projections"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in __import__("os").environ.items() if k != "REKOR_DATABASE_URL"},
    )
    assert proc.returncode == 1 and "REKOR_DATABASE_URL" in proc.stderr


async def test_group_prefetch_sees_earlier_writes_of_the_same_group(service: Any) -> None:
    # Forty concurrent upserts over ten external ids coalesce into few transactions whose
    # external-id lookups are prefetched together; each later upsert must still find the record
    # an earlier one in the same group created, and a renamed external id must not linger.
    ws = unique()
    await service.create_workspace(SYSTEM, ws)
    await service.upsert_collection(SYSTEM, ws, "items", {"type": "object"})
    groups_before = service.writer.groups
    results = await asyncio.gather(
        *(
            service.upsert_record(SYSTEM, ws, "items", {"n": i}, external_id=f"k{i % 10}")
            for i in range(40)
        )
    )
    assert service.writer.groups - groups_before < 40, "the writes should have coalesced"
    by_key: dict[str, set[str]] = {}
    for i, r in enumerate(results):
        by_key.setdefault(f"k{i % 10}", set()).add(r.body["id"])
    assert all(len(ids) == 1 for ids in by_key.values()), "one record per external id"
    assert sum(r.created for r in results) == 10
    for key, ids in by_key.items():
        record = await service.get_record(SYSTEM, ws, "items", next(iter(ids)))
        assert record["external_id"] == key and record["version"] == 4
    # Rename k0 -> z0 and upsert k0 again in one concurrent burst: k0 becomes a new record.
    k0 = next(iter(by_key["k0"]))
    renamed, again = await asyncio.gather(
        service.patch_record(SYSTEM, ws, "items", k0, {"external_id": "z0"}),
        service.upsert_record(SYSTEM, ws, "items", {"n": -1}, external_id="k0"),
    )
    assert renamed.body["external_id"] == "z0"
    assert again.created and again.body["id"] != k0
