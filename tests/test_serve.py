"""`rekor serve` with no configuration: the embedded stack end to end, first-start admin key,
restart with data intact, clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.embedded_only


def _start(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REKOR_")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.app",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        cwd=ROOT,
        env=env,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
    )


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("rekor serve did not become healthy:\n" + log.read_text()[-3000:])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_serve_embedded_restart_and_clean_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "rekor"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"

    proc = _start(data_dir, port, log)
    try:
        _wait_healthy(url, proc, log)
        key = (data_dir / "admin.key").read_text().strip()
        assert key.startswith("rk_")
        assert key in log.read_text(), "the first admin key is printed on first start"
        assert (data_dir / "server.url").read_text().strip() == url
        auth = {"Authorization": f"Bearer {key}"}
        r = httpx.post(url + "/v1/workspaces", json={"id": "ws_ops"}, headers=auth)
        assert r.status_code == 201, r.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not _port_open(port)
    stack_ports = _stack_ports(data_dir)
    assert stack_ports and not any(_port_open(p) for p in stack_ports), "children left running"

    # Restart on the same data: the workspace is still there and no new key is made.
    log.write_text("")
    proc = _start(data_dir, port, log)
    try:
        _wait_healthy(url, proc, log)
        assert (data_dir / "admin.key").read_text().strip() == key
        assert "created admin API key" not in log.read_text()
        r = httpx.get(url + "/v1/workspaces/ws_ops", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        proc.send_signal(signal.SIGINT)
        # A second Ctrl-C while the stack is stopping must not leave its servers running.
        deadline = time.monotonic() + 30
        while "rekor: stopping" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "rekor: stopping" in log.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not any(_port_open(p) for p in stack_ports), "children left running"


def _stack_ports(data_dir: Path) -> list[int]:
    import json

    ports = json.loads((data_dir / "stack.json").read_text())["ports"]
    return [int(p) for p in ports.values()]
