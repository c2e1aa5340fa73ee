"""Shared fixtures: the real stack (embedded, or external via REKOR_* variables), the service,
a real `rekor serve` subprocess, API keys and fresh workspaces. No mocks of any part."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from commands.config import Settings
from commands.principal import SYSTEM
from deploy.stack import EmbeddedStack, StackEndpoints

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A currently free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """The session's stack; parts named by REKOR_DATABASE_URL / REKOR_NATS_URL /
    REKOR_S3_ENDPOINT are used as they are, the rest start embedded."""
    data_dir = tmp_path_factory.mktemp("stack")
    s = EmbeddedStack.from_env(data_dir)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def endpoints(stack: EmbeddedStack) -> StackEndpoints:
    return stack.endpoints


@pytest.fixture(scope="session")
def settings(endpoints: StackEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=endpoints.database_url,
        nats_url=endpoints.nats_url,
        s3_endpoint=endpoints.s3_endpoint,
        s3_access_key=endpoints.s3_access_key,
        s3_secret_key=endpoints.s3_secret_key,
        s3_bucket=endpoints.s3_bucket,
        s3_region=endpoints.s3_region,
        data_dir=str(tmp_path_factory.mktemp("data")),
        egress_allow="127.0.0.0/8",
    )


@pytest.fixture(scope="session")
async def service(settings: Settings) -> AsyncIterator[Any]:
    """The application service on the real database (no background components)."""
    from commands.bootstrap import build_service

    svc = await build_service(settings.database_url)
    yield svc
    await svc.close()


@pytest.fixture(scope="session")
async def admin_key(service: Any) -> str:
    from commands import apikeys

    async with service.connection() as conn:
        created = await apikeys.create_key(conn, "test admin", ["admin", "promote"], None)
    return str(created["key"])


def server_env(endpoints: StackEndpoints) -> dict[str, str]:
    """Environment for a `rekor serve` subprocess that uses the session's stack."""
    env = dict(os.environ)
    env.update(
        {
            "REKOR_DATABASE_URL": endpoints.database_url,
            "REKOR_NATS_URL": endpoints.nats_url,
            "REKOR_S3_ENDPOINT": endpoints.s3_endpoint,
            "REKOR_S3_ACCESS_KEY": endpoints.s3_access_key,
            "REKOR_S3_SECRET_KEY": endpoints.s3_secret_key,
            "REKOR_S3_BUCKET": endpoints.s3_bucket,
            "REKOR_S3_REGION": endpoints.s3_region,
            "REKOR_EGRESS_ALLOW": "127.0.0.0/8",
        }
    )
    return env


class Server:
    """A real `rekor serve` child process."""

    def __init__(self, endpoints: StackEndpoints, data_dir: Path, *, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log = data_dir / f"server-{self.port}.log"
        self._fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.app",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
            ],
            cwd=ROOT,
            env=server_env(endpoints),
            stdout=self._fh,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rekor serve exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"rekor serve not ready:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no graceful anything."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._fh.close()


@pytest.fixture(scope="session")
def server(endpoints: StackEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `rekor serve` for the session."""
    srv = Server(endpoints, tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
async def api(server: Server, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """An authenticated REST client for the session server."""
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
    ) as client:
        yield client


def unique(prefix: str = "ws") -> str:
    """A fresh slug, so tests sharing one database never collide."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def ws(service: Any) -> str:
    """A fresh workspace."""
    wid = unique()
    await service.create_workspace(SYSTEM, wid)
    return wid


INCIDENT_SCHEMA = {
    "type": "object",
    "required": ["title", "severity", "status"],
    "properties": {
        "title": {"type": "string"},
        "severity": {"enum": ["p0", "p1", "p2", "p3"]},
        "status": {"enum": ["open", "investigating", "resolved"]},
        "assignee": {"type": "string"},
    },
}

INCIDENT = {
    "title": "API latency spike in us-east-1",
    "severity": "p1",
    "status": "investigating",
    "assignee": "oncall@team.dev",
}
