"""The embedded stack (deploy/stack.py) against the real binaries: no mocks.

These tests run their own stacks (never the session stack from conftest) because they stop,
restart and kill them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aioboto3
import httpx
import nats
import psutil
import psycopg
import pytest
from botocore.config import Config

from deploy.stack import (
    EmbeddedStack,
    StackEndpoints,
    StackError,
    endpoints_from_env,
    shared_buffers,
)

# These tests start and stop embedded parts of their own; the CI run against external services
# has nothing new to learn from them.
pytestmark = pytest.mark.embedded_only

REPO = Path(__file__).resolve().parents[1]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; fail the test naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """True if ``pid`` is a running (non-zombie) process."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def s3_session_client(ep: StackEndpoints, secret: str | None = None):  # type: ignore[no-untyped-def]
    """An aioboto3 S3 client context manager for the stack's S3 endpoint."""
    return aioboto3.Session().client(
        "s3",
        endpoint_url=ep.s3_endpoint,
        aws_access_key_id=ep.s3_access_key,
        aws_secret_access_key=secret or ep.s3_secret_key,
        region_name=ep.s3_region,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """A private stack for this module (the tests stop and restart parts of it)."""
    lines: list[str] = []
    s = EmbeddedStack(tmp_path_factory.mktemp("stack-under-test"), progress=lines.append)
    s.start()
    assert any(line.startswith("PostgreSQL ready (") for line in lines), lines
    yield s
    s.stop()


# ---- the three services ------------------------------------------------------------------


def test_shared_buffers_can_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REKOR_PG_SHARED_BUFFERS", "512MB")
    assert shared_buffers() == "512MB"


def test_endpoints_shape(stack: EmbeddedStack) -> None:
    ep = stack.endpoints
    assert ep.database_url.startswith("postgresql://rekor:")
    assert "@127.0.0.1:" in ep.database_url and ep.database_url.endswith("/rekor")
    assert ep.nats_url.startswith("nats://127.0.0.1:")
    assert ep.s3_endpoint.startswith("http://127.0.0.1:")
    assert (ep.s3_bucket, ep.s3_region) == ("rekor", "us-east-1")
    # never the well-known ports of the system services on this machine
    for url in (ep.database_url, ep.nats_url):
        port = int(url.split("@")[-1].split(":")[-1].split("/")[0])
        assert port not in (5432, 4222)
    state = json.loads((stack.data_dir / "stack.json").read_text())
    assert os.stat(stack.data_dir / "stack.json").st_mode & 0o077 == 0  # holds secrets
    assert str(state["ports"]["postgres"]) in ep.database_url
    for name in ("postgres.log", "nats.log", "s3.log"):
        assert (stack.logs_dir / name).stat().st_size > 0


def test_postgres_and_pg_trgm(stack: EmbeddedStack) -> None:
    with psycopg.connect(stack.endpoints.database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        (sim,) = conn.execute("SELECT similarity('café au lait', 'cafe au lait')").fetchone()
        assert 0 < sim < 1
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                (["fsync", "synchronous_commit", "max_connections", "shared_buffers"],),
            ).fetchall()
        )
        assert settings["fsync"] == "on" and settings["synchronous_commit"] == "on"
        assert settings["max_connections"] == "200"
        # a quarter of the machine's memory, 128 MB to 2 GB, in 8 kB pages
        want_mib = int(shared_buffers().removesuffix("MB"))
        assert settings["shared_buffers"] == str(want_mib * 1024 // 8)
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        assert want_mib == min(max(total // 4 // 2**20, 128), 2048)
        # Unicode-aware lower() without host locales (builtin C.UTF-8 provider)
        assert conn.execute("SELECT lower('ÉCOLE')").fetchone() == ("école",)
    # the password is enforced
    bad = stack.endpoints.database_url.replace("rekor:", "rekor:wrong", 1)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(bad, connect_timeout=3)


async def test_nats_jetstream(stack: EmbeddedStack) -> None:
    nc = await nats.connect(stack.endpoints.nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="STACKTEST", subjects=["stacktest.>"])
        ack = await js.publish("stacktest.one", b"hello")
        assert ack.stream == "STACKTEST"
        sub = await js.pull_subscribe("stacktest.>", durable="stacktest")
        msgs = await sub.fetch(1, timeout=5)
        assert msgs[0].data == b"hello"
        await msgs[0].ack()
    finally:
        await nc.close()


async def test_s3_presigned_urls_and_auth(stack: EmbeddedStack) -> None:
    ep = stack.endpoints
    key = f"t/{uuid.uuid4()}.txt"
    async with s3_session_client(ep) as s3, httpx.AsyncClient() as http:
        put_url = await s3.generate_presigned_url(
            "put_object", Params={"Bucket": ep.s3_bucket, "Key": key}, ExpiresIn=60
        )
        r = await http.put(put_url, content=b"hello presigned")
        assert r.status_code == 200, r.text
        head = await s3.head_object(Bucket=ep.s3_bucket, Key=key)
        assert head["ContentLength"] == len(b"hello presigned")
        get_url = await s3.generate_presigned_url(
            "get_object", Params={"Bucket": ep.s3_bucket, "Key": key}, ExpiresIn=60
        )
        r = await http.get(get_url)
        assert (r.status_code, r.content) == (200, b"hello presigned")

        # A 1-second URL works now and is refused by the server once expired. X-Amz-Date has
        # whole seconds, so sign just after a second starts to leave the URL ~1 s of validity.
        time.sleep(1.02 - time.time() % 1)
        short = await s3.generate_presigned_url(
            "get_object", Params={"Bucket": ep.s3_bucket, "Key": key}, ExpiresIn=1
        )
        signed_at = time.monotonic()
        assert (await http.get(short)).status_code == 200
        while (status := (await http.get(short)).status_code) == 200:
            assert time.monotonic() - signed_at < 10, "expired presigned URL still accepted"
            time.sleep(0.1)
        assert status == 403

        # tampering with the signature or using no credentials is refused
        assert (
            await http.get(get_url.replace("X-Amz-Signature=", "X-Amz-Signature=0", 1))
        ).status_code == 403
        assert (await http.get(f"{ep.s3_endpoint}/{ep.s3_bucket}/{key}")).status_code == 403

    async with s3_session_client(ep, secret="not-the-secret") as bad:
        with pytest.raises(Exception, match=r"SignatureDoesNotMatch|AccessDenied|403"):
            await bad.head_object(Bucket=ep.s3_bucket, Key=key)


# ---- restarts, outages, crashes ----------------------------------------------------------


async def test_stop_start_keeps_data_and_urls(stack: EmbeddedStack) -> None:
    before = stack.endpoints
    with psycopg.connect(before.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS survivors (v text)")
        conn.execute("INSERT INTO survivors VALUES ('row-1')")
    async with s3_session_client(before) as s3:
        await s3.put_object(Bucket=before.s3_bucket, Key="keep/me", Body=b"object-1")
    old_pids = stack.pids()

    stack.stop()
    stack.stop()  # idempotent
    assert not any(alive(pid) for pid in old_pids.values())
    with pytest.raises(StackError):
        _ = stack.endpoints

    after = stack.start()
    assert after == before  # same ports and credentials: URLs stay valid across restarts
    with psycopg.connect(after.database_url) as conn:
        assert conn.execute("SELECT v FROM survivors").fetchall() == [("row-1",)]
    async with s3_session_client(after) as s3:
        obj = await s3.get_object(Bucket=after.s3_bucket, Key="keep/me")
        assert await obj["Body"].read() == b"object-1"


async def test_nats_outage(stack: EmbeddedStack) -> None:
    url = stack.endpoints.nats_url
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="OUTAGE", subjects=["outage.>"])
    await js.publish("outage.a", b"before")
    await nc.close()

    old_pid = stack.pids()["nats"]
    stack.stop_nats()
    assert not alive(old_pid)
    host, port = url.removeprefix("nats://").split(":")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=2).close()

    stack.start_nats()
    assert stack.endpoints.nats_url == url
    nc = await nats.connect(url)
    try:
        msg = await nc.jetstream().get_last_msg("OUTAGE", "outage.a")
        assert msg.data == b"before"  # the JetStream store survived the restart
    finally:
        await nc.close()


async def test_s3_outage(stack: EmbeddedStack) -> None:
    ep = stack.endpoints
    stack.stop_s3()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(ep.s3_endpoint, timeout=2)
    stack.start_s3()
    async with s3_session_client(ep) as s3:
        await s3.put_object(Bucket=ep.s3_bucket, Key="after-outage", Body=b"x")


def test_restart_part_on_taken_port_is_a_clear_error(stack: EmbeddedStack) -> None:
    port = int(stack.endpoints.nats_url.rsplit(":", 1)[1])
    stack.stop_nats()
    squatter = socket.socket()
    try:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(StackError, match=f"nats={port}"):
            stack.start_nats()
    finally:
        squatter.close()
    stack.start_nats()


def test_data_dir_is_locked_while_in_use(stack: EmbeddedStack) -> None:
    with pytest.raises(StackError, match="in use by another running stack"):
        EmbeddedStack(stack.data_dir).start()


CHILD = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {repo!r})
    import psycopg
    from deploy.stack import EmbeddedStack
    s = EmbeddedStack(sys.argv[1])
    ep = s.start()
    with psycopg.connect(ep.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE crash (v int)")
        conn.execute("INSERT INTO crash VALUES (42)")  # committed: must survive kill -9
    print(json.dumps(s.pids()), flush=True)
    time.sleep(600)
    """
)


def test_kill_9_of_the_owner_then_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "crashy"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(repo=str(REPO)), str(data_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline() if child.stdout else ""
        assert line, f"child stack did not start (exit {child.poll()})"
        pids: dict[str, int] = json.loads(line)
        assert set(pids) == {"postgres", "nats", "s3"}
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    # Parent-death signal: PostgreSQL and NATS shut down on their own. (SeaweedFS also gets
    # SIGTERM but lingers ~15 s; the next start stops it.)
    wait_until(lambda: not alive(pids["postgres"]) and not alive(pids["nats"]), 20, "orphans")

    t0 = time.monotonic()
    with EmbeddedStack(data_dir) as again:
        warm = time.monotonic() - t0
        assert not any(alive(pid) for pid in pids.values()), "old children still running"
        assert set(again.pids().values()).isdisjoint(pids.values())
        with psycopg.connect(again.endpoints.database_url) as conn:
            assert conn.execute("SELECT v FROM crash").fetchall() == [(42,)]
    assert warm < 30
    assert not (data_dir / "postgres" / "postmaster.pid").exists()


def test_partial_external_configuration(stack: EmbeddedStack, tmp_path: Path) -> None:
    ep = stack.endpoints
    env = {
        "REKOR_DATABASE_URL": ep.database_url,
        "REKOR_S3_ENDPOINT": ep.s3_endpoint,
        "REKOR_S3_ACCESS_KEY": ep.s3_access_key,
        "REKOR_S3_SECRET_KEY": ep.s3_secret_key,
    }
    saved = {k: os.environ.get(k) for k in [*env, "REKOR_NATS_URL"]}
    try:
        os.environ.update(env)
        os.environ.pop("REKOR_NATS_URL", None)
        assert endpoints_from_env() is None  # partial: not a complete external set
        with EmbeddedStack.from_env(tmp_path / "partial") as partial:
            assert set(partial.pids()) == {"nats"}  # only NATS was started here
            got = partial.endpoints
            assert got.database_url == ep.database_url and got.s3_endpoint == ep.s3_endpoint
            assert got.nats_url != ep.nats_url
            os.environ["REKOR_NATS_URL"] = got.nats_url
            full = endpoints_from_env()
            assert full == StackEndpoints(
                database_url=ep.database_url,
                nats_url=got.nats_url,
                s3_endpoint=ep.s3_endpoint,
                s3_access_key=ep.s3_access_key,
                s3_secret_key=ep.s3_secret_key,
                s3_bucket="rekor",
            )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_failed_part_reports_its_log(stack: EmbeddedStack, tmp_path: Path) -> None:
    data_dir = tmp_path / "broken"
    (data_dir / "nats").mkdir(parents=True)
    (data_dir / "nats" / "jetstream").write_text("not a directory")  # JetStream cannot start
    broken = EmbeddedStack(
        data_dir,
        database_url=stack.endpoints.database_url,
        s3={"endpoint": stack.endpoints.s3_endpoint},
        timeout=15,
    )
    with pytest.raises(StackError, match="NATS") as info:
        broken.start()
    assert "nats.log" in str(info.value)
    assert broken.pids() == {}
    # the lock was released: a fixed data dir can be started right away
    (data_dir / "nats" / "jetstream").unlink()
    with broken:
        assert set(broken.pids()) == {"nats"}
