"""The `rekor` CLI against a real server: the seed example, JSON arguments, output formats,
exit codes, login/status and the local `rekor serve` fallback, help and completion."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cyclopts import App

from cli.app import app, run
from tests.conftest import INCIDENT, INCIDENT_SCHEMA, ROOT, Server, free_port, unique


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def error(self) -> dict[str, Any]:
        return json.loads(self.err)["error"]


CLI = Callable[..., Result]


@pytest.fixture
def cli(
    server: Server,
    admin_key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> CLI:
    """Run `rekor ARGS` in-process (the cyclopts way) against the session server."""
    monkeypatch.chdir(tmp_path)  # no ./.rekor here unless a test makes one
    monkeypatch.setenv("REKOR_CONFIG", str(tmp_path / "config.json"))
    monkeypatch.setenv("REKOR_URL", server.url)
    monkeypatch.setenv("REKOR_API_KEY", admin_key)
    monkeypatch.delenv("REKOR_WORKSPACE", raising=False)

    def invoke(*args: str, stdin: str | None = None) -> Result:
        capsys.readouterr()
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = run(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def test_seed_example(cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = unique("ws_ops")
    r = cli("workspaces", "create", ws, "--name", "Ops")
    assert r.code == 0, r.err
    assert r.json["id"] == ws

    r = cli("collections", "upsert", "incidents", "--schema", json.dumps(INCIDENT_SCHEMA), "-w", ws)
    assert r.code == 0, r.err
    assert {k: r.json[k] for k in ("id", "name", "version")} == {
        "id": "incidents",
        "name": "incidents",
        "version": 1,
    }
    args = ["records", "upsert", "incidents", "--external-id", "INC-2847", "--source", "pagerduty"]
    r = cli(*args, "--data", json.dumps(INCIDENT), "--workspace", ws)
    assert r.code == 0, r.err
    first = r.json
    assert uuid.UUID(first["id"]).version == 7
    assert (first["external_id"], first["version"]) == ("INC-2847", 1)

    # Same again through REKOR_WORKSPACE: same id, same version.
    monkeypatch.setenv("REKOR_WORKSPACE", ws)
    r = cli(*args, "--data", json.dumps(INCIDENT))
    assert (r.code, r.json["id"], r.json["version"]) == (0, first["id"], 1)

    # Changed status from a file, then from stdin.
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps({**INCIDENT, "status": "resolved"}))
    r = cli(*args, "--data", f"@{changed}")
    assert (r.code, r.json["version"]) == (0, 2), r.err
    r = cli(*args, "--data", "-", stdin=json.dumps({**INCIDENT, "status": "open"}))
    assert (r.code, r.json["version"]) == (0, 3), r.err

    r = cli("records", "get", "incidents", first["id"])
    assert r.json["data"]["status"] == "open"
    r = cli("records", "get", "incidents", first["id"], "--as-of", str(first["seq"]))
    assert r.json["data"]["status"] == "investigating"
    r = cli("records", "history", "incidents", first["id"])
    assert [h["version"] for h in r.json["data"]] == [1, 2, 3]
    r = cli("records", "list", "incidents", "--external-id", "INC-2847", "--source", "pagerduty")
    assert [x["id"] for x in r.json["data"]] == [first["id"]]
    r = cli("collections", "list")
    assert [c["name"] for c in r.json["data"]] == ["incidents"]
    r = cli("workspaces", "get", ws)
    assert r.json["id"] == ws

    r = cli("records", "list", "incidents", "-o", "table")
    assert r.code == 0 and "INC-2847" in r.out and "external_id" in r.out
    r = cli("collections", "get", "incidents", "--output", "table")
    assert "json_schema" in r.out and "field" in r.out

    r = cli("records", "delete", "incidents", first["id"], "--expected-version", "3")
    assert r.code == 0 and r.json["deleted"] is True
    r = cli("records", "get", "incidents", first["id"])
    assert r.code == 4 and r.error["code"] == "NOT_FOUND"
    r = cli("collections", "delete", "incidents")
    assert r.code == 0
    r = cli("workspaces", "delete", ws)
    assert r.code == 0


def test_exit_codes_and_messages(cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = unique()
    assert cli("workspaces", "create", ws).code == 0
    monkeypatch.setenv("REKOR_WORKSPACE", ws)
    assert (
        cli("collections", "upsert", "incidents", "--schema", json.dumps(INCIDENT_SCHEMA)).code == 0
    )
    head = cli("workspaces", "get", ws).json["head_seq"]

    # 1: the server refused the data, with every failing path.
    bad = {"title": 5, "severity": "p9", "status": "open"}
    r = cli("records", "upsert", "incidents", "--data", json.dumps(bad))
    assert r.code == 1 and r.error["code"] == "VALIDATION_ERROR"
    paths = {d["path"] for d in r.error["details"]}
    assert {"$.data.title", "$.data.severity"} <= paths, r.error
    # 1: malformed JSON / unreadable file never reach the server.
    r = cli("records", "upsert", "incidents", "--data", "{not json")
    assert r.code == 1 and "--data is not valid JSON" in r.error["message"]
    r = cli("records", "upsert", "incidents", "--data", f"@{tmp_path / 'missing.json'}")
    assert r.code == 1 and "cannot read" in r.error["message"]
    # 4: unknown collection / workspace.
    r = cli("records", "get", "nope", str(uuid.uuid4()))
    assert r.code == 4 and r.error["code"] == "NOT_FOUND"
    r = cli("collections", "list", "-w", unique("missing"))
    assert r.code == 4
    # 3: version conflict.
    rec = cli("records", "upsert", "incidents", "--data", json.dumps(INCIDENT)).json
    r = cli(
        "records", "upsert", "incidents", "--id", rec["id"], "--expected-version", "7",
        "--data", json.dumps({**INCIDENT, "status": "open"}),
    )  # fmt: skip
    assert r.code == 3 and r.error["code"] == "CONFLICT"
    # 3: duplicate workspace.
    assert cli("workspaces", "create", ws).code == 3
    # 2: usage errors (unknown command, bad flag value, no workspace).
    assert cli("records", "upsrt", "incidents").code == 2
    assert cli("records", "list", "incidents", "--limit", "many").code == 2
    monkeypatch.delenv("REKOR_WORKSPACE")
    r = cli("collections", "list")
    assert r.code == 2 and "REKOR_WORKSPACE" in r.error["message"]
    # 1: a refused key.
    r = cli("workspaces", "list", "--api-key", "rk_not_a_key")
    assert r.code == 1 and r.error["code"] == "UNAUTHORIZED"
    # Nothing above wrote anything except the one good upsert.
    assert cli("workspaces", "get", ws).json["head_seq"] == head + 1


def test_unreachable_server_is_explained(cli: CLI) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    r = cli("workspaces", "list", "--url", url)
    assert r.code == 5
    assert r.error["code"] == "UNAVAILABLE"
    assert f"Is `rekor serve` running at {url}?" in r.error["message"]
    r = cli("status", "--url", url)
    assert r.code == 5 and r.json["url"] == url and "UNAVAILABLE" in r.json["health"]


def test_login_status_and_local_serve_fallback(
    cli: CLI, server: Server, admin_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REKOR_URL")
    monkeypatch.delenv("REKOR_API_KEY")
    # A wrong key is not saved.
    r = cli("login", "--url", server.url, "--token", "rk_wrong")
    assert r.code == 1 and not (tmp_path / "config.json").exists()
    r = cli("login", "--url", server.url, "--token", admin_key)
    assert r.code == 0, r.err
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved == {"url": server.url, "api_key": admin_key}
    assert (tmp_path / "config.json").stat().st_mode & 0o077 == 0

    r = cli("status")
    assert r.code == 0, r.err
    assert r.json["url"] == server.url and r.json["health"] == "ok"
    assert r.json["api_key_from"].endswith("config.json")
    assert r.json["identity"]["name"] == "test admin"
    assert "admin" in r.json["identity"]["permissions"]
    assert cli("workspaces", "list").code == 0

    # Without env or login: a local `rekor serve`'s files in ./.rekor are used.
    (tmp_path / "config.json").unlink()
    local = tmp_path / ".rekor"
    local.mkdir()
    (local / "server.url").write_text(server.url + "\n")
    (local / "admin.key").write_text(admin_key + "\n")
    r = cli("status")
    assert r.code == 0 and r.json["url_from"] == ".rekor/server.url"
    assert r.json["api_key_from"] == ".rekor/admin.key"
    assert cli("workspaces", "list").code == 0
    # The local admin key is never sent to some other server.
    other = f"http://127.0.0.1:{free_port()}"
    r = cli("status", "--url", other)
    assert r.json["api_key"] is None


def _commands(app_: App, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name in app_:
        if name.startswith("-"):
            continue
        sub = app_[name]
        path = (*prefix, name)
        if sub.default_command is None and any(not n.startswith("-") for n in sub):
            out += _commands(sub, path)
        else:
            out.append(path)
    return out


CONTRACT_COMMANDS = [
    ("serve",), ("mcp",), ("login",), ("status",),
    ("workspaces", "list"), ("workspaces", "get"), ("workspaces", "create"),
    ("workspaces", "delete"), ("workspaces", "create-preview"), ("workspaces", "promote"),
    ("collections", "list"), ("collections", "get"), ("collections", "upsert"),
    ("collections", "delete"),
    ("records", "upsert"), ("records", "get"), ("records", "delete"), ("records", "query"),
    ("records", "history"),
    ("relationships", "upsert"), ("relationships", "get"), ("relationships", "delete"),
    ("relationships", "list"), ("query-relationships",),
    ("attachments", "upload"), ("attachments", "url"), ("attachments", "list"),
    ("attachments", "delete"),
    ("hooks", "create"), ("hooks", "list"), ("hooks", "get"), ("hooks", "delete"),
    ("triggers", "create"), ("triggers", "list"), ("triggers", "get"), ("triggers", "delete"),
    ("triggers", "deliveries"), ("triggers", "replay"),
    ("batch",), ("events",),
]  # fmt: skip


def test_every_contract_command_exists_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    existing = set(_commands(app))
    missing = [c for c in CONTRACT_COMMANDS if c not in existing]
    assert not missing, f"commands of the contract missing from the CLI: {missing}"
    for command in sorted(existing):
        capsys.readouterr()
        assert run([*command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "For example" in text, f"`rekor {' '.join(command)} --help` has no examples"


def test_completion_script() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cli.app", "completion", "bash"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "complete" in out.stdout and "rekor" in out.stdout
    assert "workspaces" in out.stdout
