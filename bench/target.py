"""What the harness needs from a system under test: a running server, its auth header, the
create and get paths, a record count, and its process tree for CPU accounting."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.procs import reap_strays, remove_tree, stop


class Target:
    """Base for a benchmarked server. Subclasses implement `start`, `count_records`,
    `create_body`, `version` and the paths."""

    name: str = "?"
    #: HTTP status of a successful create (Rekor: 201 Created; PocketBase answers 200).
    create_status: int = 201
    #: Body style understood by bench/wrk/create.lua.
    body_style: str = "rekor"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.headers: dict[str, str] = {}

    # ---- to implement ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and create the `incidents` collection."""
        raise NotImplementedError

    @property
    def create_path(self) -> str:
        """Path for POST create."""
        raise NotImplementedError

    @property
    def get_prefix(self) -> str:
        """Path to which a record id is appended for GET."""
        return self.create_path + "/"

    def create_body(self, external_id: str) -> dict[str, Any]:
        """A body equal in content to what create.lua sends."""
        raise NotImplementedError

    def count_records(self) -> int:
        """Number of records in the collection, asked through the API."""
        raise NotImplementedError

    def version(self) -> str:
        """Version string for the report."""
        raise NotImplementedError

    def classify(self, proc: psutil.Process) -> str:
        """Label for CPU accounting of one process of the server's tree."""
        return proc.name()

    # ---- shared ---------------------------------------------------------------------------

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=30)

    def process_tree(self) -> list[psutil.Process]:
        """The server process and all its descendants (alive now)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        """Stop the server (gracefully, then by force) and delete its data."""
        stop(self.proc)
        # Anything still running from our data dir outlived its parent's shutdown; it must not
        # eat CPU during the next system's runs.
        strays = reap_strays(str(self.workdir))
        if strays:
            print(f"bench: {self.name} left processes running after it exited: {strays}; stopped")
        remove_tree(self.workdir)
