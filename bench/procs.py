"""Child-process plumbing shared by the benchmark targets: free ports, readiness polling,
and a shutdown that leaves no process and no temp directory behind."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import psutil

_PR_SET_PDEATHSIG = 1


class BenchError(RuntimeError):
    """A benchmark precondition failed; the message says how to fix it."""


def free_port() -> int:
    """A currently free loopback port (never a fixed one: other services run here)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # If the harness is killed outright (SIGKILL), the kernel still stops the server.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in its own session (so Ctrl-C reaches the harness, which then stops it in
    order) with its output in `log`."""
    with open(log, "ab") as fh:
        return subprocess.Popen(
            list(argv),
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # only calls prctl in the child
        )


ROOT = Path(__file__).resolve().parent.parent


def start_rekor(
    data_dir: Path,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> tuple[subprocess.Popen[bytes], str, str | None]:
    """`rekor serve` on a free loopback port with `--data-dir data_dir` (output in `log`),
    ready when this returns: (process, base URL, the admin key it wrote on first start, or
    None). `env` None inherits this process's environment."""
    port = free_port()
    argv = [sys.executable, "-m", "cli.app", "serve", "--port", str(port), *extra_args]
    proc = spawn([*argv, "--data-dir", str(data_dir)], log, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", proc, log, timeout=180)
    except BaseException:
        stop(proc)
        raise
    key_file = data_dir / "admin.key"
    return proc, url, key_file.read_text().strip() if key_file.exists() else None


def log_tail(log: Path, chars: int = 3000) -> str:
    """The end of a log file, for error messages."""
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def wait_http(
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    *,
    timeout: float,
    ok: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
) -> None:
    """Poll `url` until it answers `ok`, the process dies, or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{proc.args[0]} exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            if ok(httpx.get(url, timeout=1.0)):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{url} not ready after {timeout:.0f}s:\n{log_tail(log)}")


def stop(proc: subprocess.Popen[bytes] | None, *, grace: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def reap_strays(marker: str, *, grace: float = 5.0) -> list[str]:
    """Stop processes whose command line mentions `marker` (our private temp dir, so they are
    ours by construction) that outlived their parent; returns their names."""
    strays = []
    for p in psutil.process_iter(["pid", "cmdline", "name"]):
        try:
            if p.pid != os.getpid() and marker in " ".join(p.info["cmdline"] or []):
                strays.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for p in strays:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(strays, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=grace)
    return [str(p.info["name"]) for p in strays]


def remove_tree(path: Path) -> None:
    """Remove a temp dir; a failure is reported, never fatal at shutdown."""
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        print(f"bench: could not fully remove {path}")


async def wait_caught_up(
    database_url: str,
    workspace_id: str,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    max_wait_s: float = 600,
) -> None:
    """Wait until a freshly started `rekor serve` has worked off the events written before it
    started (measuring during that catch-up measures the catch-up): the event relay's and the
    storage cleanup's checkpoints reach the workspace head, then `proc` goes idle (< 15 % of a
    core over a second; the trigger consumer reads the stream with no checkpoint in SQL)."""
    import asyncio

    import psycopg

    deadline = time.monotonic() + max_wait_s
    sql = (
        "SELECT w.head - coalesce((SELECT seq FROM relay_checkpoints r"
        "   WHERE r.workspace_id = w.workspace_id), 0),"
        " w.head - coalesce((SELECT last_seq FROM attachment_cleanup_checkpoints a"
        "   WHERE a.workspace_id = w.workspace_id), w.head)"
        " FROM workspaces w WHERE w.workspace_id = %s"
    )
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = await (await conn.execute(sql, (workspace_id,))).fetchone()
            if row is None or max(row) <= 0:
                break
            await asyncio.sleep(0.5)
    if proc is None:
        return
    ps = psutil.Process(proc.pid)
    while time.monotonic() < deadline:
        tree = [ps, *ps.children(recursive=True)]
        before = sum(p.cpu_times().user + p.cpu_times().system for p in tree)
        await asyncio.sleep(1.0)
        after = sum(p.cpu_times().user + p.cpu_times().system for p in tree)
        if after - before < 0.15:
            return
