"""The CLI of the event stream against a real server: the seed's trigger command verbatim,
hooks, deliveries, replay and `rekor events [--follow]`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.app import run
from tests.conftest import ROOT, Server, unique
from tests.stream.conftest import INCIDENT_SCHEMA


@pytest.fixture
def rekor(
    stream_server: Server,
    stream_key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> Any:
    """Run `rekor ARGS` in-process; returns (exit code, parsed JSON stdout or text, stderr)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REKOR_CONFIG", str(tmp_path / "config.json"))
    monkeypatch.setenv("REKOR_URL", stream_server.url)
    monkeypatch.setenv("REKOR_API_KEY", stream_key)
    monkeypatch.delenv("REKOR_WORKSPACE", raising=False)

    def invoke(*args: str) -> tuple[int, Any, str]:
        capsys.readouterr()
        code = run(list(args))
        out, err = capsys.readouterr()
        try:
            return code, json.loads(out), err
        except ValueError:
            return code, out, err

    return invoke


def test_seed_trigger_command_and_friends(rekor: Any) -> None:
    code, _, err = rekor("workspaces", "create", "my-workspace")
    assert code in (0, 3), err
    schema = json.dumps(INCIDENT_SCHEMA)
    assert (
        rekor("collections", "upsert", "incidents", "--schema", schema, "-w", "my-workspace")[0]
        == 0
    )
    code, trig, err = rekor(
        "triggers", "create", "--workspace", "my-workspace", "--name", "Notify Slack on P1",
        "--collection", "incidents", "--url", "http://127.0.0.1:9/slack",
        "--events", '["create","update"]',
    )  # fmt: skip
    assert code == 0, err
    assert trig["name"] == "Notify Slack on P1" and trig["events"] == ["create", "update"]
    assert trig["url"] == "http://127.0.0.1:9/slack" and trig["secret"].startswith("whsec_")

    code, listed, _ = rekor("triggers", "list", "-w", "my-workspace")
    assert trig["id"] in [t["id"] for t in listed["data"]]
    code, got, _ = rekor("triggers", "get", trig["id"], "-w", "my-workspace")
    assert code == 0 and got["collection"] == "incidents"
    code, log, _ = rekor("triggers", "deliveries", trig["id"], "-w", "my-workspace")
    assert code == 0 and log["data"] == []
    code, replayed, _ = rekor(
        "triggers", "replay", trig["id"], "--from-seq", "1", "-w", "my-workspace"
    )
    assert code == 0 and replayed["queued"] == 0
    code, _, err = rekor(
        "triggers", "create", "-w", "my-workspace", "--name", "x",
        "--url", "http://10.0.0.1/x", "--events", '["create"]',
    )  # fmt: skip
    assert code == 1 and "REKOR_EGRESS_ALLOW" in err
    code, _, err = rekor(
        "triggers", "create", "-w", "my-workspace", "--name", "x", "--url", "http://127.0.0.1:9/",
        "--events", "[create",
    )  # fmt: skip
    assert code == 1 and "--events" in err
    assert rekor("triggers", "delete", trig["id"], "-w", "my-workspace")[0] == 0
    assert rekor("triggers", "get", trig["id"], "-w", "my-workspace")[0] == 4


def test_hooks_and_events(rekor: Any, stream_server: Server) -> None:
    ws = unique("cli")
    assert rekor("workspaces", "create", ws)[0] == 0
    schema = json.dumps(INCIDENT_SCHEMA)
    assert rekor("collections", "upsert", "incidents", "--schema", schema, "-w", ws)[0] == 0
    code, hook, err = rekor(
        "hooks", "create", "--name", "pd", "--collection", "incidents",
        "--external-id-path", "/title", "-w", ws,
    )  # fmt: skip
    assert code == 0, err
    r = httpx.post(stream_server.url + hook["ingest_url"], json={"title": "T1", "severity": "p1"})
    assert r.status_code == 202
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        code, receipts, _ = rekor("hooks", "receipts", hook["id"], "-w", ws)
        if receipts["data"] and receipts["data"][0]["status"] == "applied":
            break
        time.sleep(0.1)
    assert receipts["data"][0]["status"] == "applied"
    assert rekor("hooks", "list", "-w", ws)[1]["data"][0]["id"] == hook["id"]
    assert rekor("hooks", "get", hook["id"], "-w", ws)[1]["receipts"] == {"applied": 1}

    code, log, _ = rekor("events", "-w", ws, "--type", "record.created")
    assert code == 0 and [e["data"]["external_id"] for e in log["data"]] == ["T1"]
    code, log, _ = rekor("events", "-w", ws, "--after-seq", "3", "--limit", "1")
    assert [e["seq"] for e in log["data"]] == [4]

    assert rekor("hooks", "delete", hook["id"], "-w", ws)[0] == 0
    assert rekor("hooks", "get", hook["id"], "-w", ws)[0] == 4


def test_events_follow(stream_server: Server, stream_key: str) -> None:
    ws = unique("fol")
    headers = {"Authorization": f"Bearer {stream_key}"}
    httpx.post(stream_server.url + "/v1/workspaces", json={"id": ws}, headers=headers)
    env = {**os.environ, "REKOR_URL": stream_server.url, "REKOR_API_KEY": stream_key}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.app", "events", "-w", ws, "--follow"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert first["seq"] == 1 and first["type"] == "workspace.created"
        url = f"{stream_server.url}/v1/{ws}/collections/incidents"
        httpx.put(url, json={"json_schema": INCIDENT_SCHEMA}, headers=headers)
        second = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert second["seq"] == 2 and second["type"] == "collection.created"
    finally:
        proc.kill()
        proc.wait(10)
