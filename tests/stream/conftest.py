"""Fixtures of the event-stream tests: a private PostgreSQL + NATS (so NATS can be stopped and
servers killed without touching the session stack), `rekor serve` processes with a short retry
policy, and real HTTP receivers for trigger deliveries."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from deploy.stack import EmbeddedStack, StackEndpoints
from tests.conftest import Server, free_port, unique

FAST_RETRIES = {
    "REKOR_TRIGGER_BACKOFF_BASE": "0.05",
    "REKOR_TRIGGER_BACKOFF_MAX": "0.4",
    "REKOR_TRIGGER_MAX_ATTEMPTS": "4",
    "REKOR_RELAY_POLL": "0.5",
    "REKOR_HOOK_MAX_BYTES": "65536",
}


@contextlib.contextmanager
def env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (a Server copies them when it starts)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_server(endpoints: StackEndpoints, data_dir: Path, port: int | None = None) -> Server:
    """A `rekor serve` on the private stack with the fast retry policy."""
    with env(FAST_RETRIES):
        return Server(endpoints, data_dir, port=port)


@pytest.fixture(scope="session")
def stream_stack(
    endpoints: StackEndpoints, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedStack]:
    """PostgreSQL and NATS of our own (S3 is shared with the session stack)."""
    stack = EmbeddedStack(
        tmp_path_factory.mktemp("stream-stack"),
        s3={
            "endpoint": endpoints.s3_endpoint,
            "access_key": endpoints.s3_access_key,
            "secret_key": endpoints.s3_secret_key,
            "bucket": endpoints.s3_bucket,
            "region": endpoints.s3_region,
        },
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def stream_endpoints(stream_stack: EmbeddedStack) -> StackEndpoints:
    return stream_stack.endpoints


@pytest.fixture(scope="session")
def stream_server(
    stream_endpoints: StackEndpoints, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The long-lived server of the stream tests (it creates the first admin key)."""
    srv = start_server(stream_endpoints, tmp_path_factory.mktemp("stream-server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def stream_key(stream_server: Server) -> str:
    return (stream_server.data_dir / "admin.key").read_text().strip()


@pytest.fixture(scope="session")
async def sapi(stream_server: Server, stream_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """An admin REST client of the stream server."""
    async with httpx.AsyncClient(
        base_url=stream_server.url, headers={"Authorization": f"Bearer {stream_key}"}, timeout=30
    ) as client:
        yield client


INCIDENT_SCHEMA = {
    "type": "object",
    "required": ["title", "severity"],
    "properties": {
        "title": {"type": "string"},
        "severity": {"enum": ["p0", "p1", "p2", "p3"]},
        "status": {"type": "string"},
        "n": {"type": "integer"},
    },
}


async def make_workspace(api: httpx.AsyncClient, collection: str = "incidents") -> str:
    """A fresh workspace with an `incidents` collection."""
    ws = unique("st")
    r = await api.post("/v1/workspaces", json={"id": ws})
    assert r.status_code == 201, r.text
    r = await api.put(f"/v1/{ws}/collections/{collection}", json={"json_schema": INCIDENT_SCHEMA})
    assert r.status_code == 201, r.text
    return ws


class Receiver:
    """A real HTTP server receiving trigger deliveries. `plan` gives the status codes to answer
    in turn (then 200); every request is recorded with its headers, body and arrival time."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.requests: list[dict[str, Any]] = []
        self.plan: list[int] = []
        self.default_status = 200
        self.retry_after: str | None = None
        self.delay = 0.0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append({"headers": dict(request.headers), "body": body, "at": time.time()})
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.plan.pop(0) if self.plan else self.default_status
        headers = {"Retry-After": self.retry_after} if self.retry_after and status >= 400 else {}
        return web.Response(status=status, text="ok" if status < 300 else "nope", headers=headers)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def json_bodies(self) -> list[dict[str, Any]]:
        import json

        return [json.loads(r["body"]) for r in self.requests]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = await Receiver().start()
    yield rec
    await rec.stop()


async def eventually(
    check: Callable[[], Awaitable[Any]], deadline_s: float = 20.0, interval: float = 0.05
) -> Any:
    """Poll `check` until it returns something truthy (its value), or fail at the deadline."""
    deadline = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {deadline_s} s (last: {last!r})")
