"""Benchmark harness: single-record creates and gets by id, Rekor and PocketBase side by side in
one run, driven over HTTP by wrk (a C load generator, so the client costs little of the CPU it
measures).

    uv run python -m bench.harness [--duration 15] [--connections 32] [--only rekor|pocketbase]

Per system: start the server in a temp dir on a free port, create the `incidents` collection,
seed records for the get test, warm up, then a measured create run (a new external id per
request, so every request is a real create), a record-count check through the API, and a
measured get run over the seeded ids. The servers are stopped one after the other, so each
measured run has the machine to itself apart from the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.procs import BenchError, reap_strays, remove_tree
from bench.target import Target

WRK_DIR = Path(__file__).resolve().parent / "wrk"

TARGET_CREATES_PER_S = 1000.0
TARGET_CREATE_P99_MS = 100.0
TARGET_GETS_PER_S = 3000.0

# Set from --wait-quiet: measured runs wait until the machine's CPU use is below this.
QUIET_THRESHOLD = 0.0


# ---- wrk ---------------------------------------------------------------------------------------


def find_wrk() -> str:
    """Path of wrk, or a BenchError that says how to install it."""
    found = shutil.which("wrk")
    if found:
        return found
    raise BenchError(
        "wrk (the HTTP load generator) is not installed. Install it with:\n"
        "    sudo apt-get update && sudo apt-get install -y wrk     # Debian/Ubuntu\n"
        "    brew install wrk                                       # macOS\n"
        "then run the harness again."
    )


@dataclass
class WrkResult:
    label: str
    requests: int  # responses wrk counted
    sent: int  # requests wrk generated (the difference was in flight when time ran out)
    duration_s: float
    rps: float
    latency_ms: dict[str, float]
    errors: dict[str, int]
    status: dict[str, int]
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core, by process group

    def count(self, status: int) -> int:
        return int(self.status.get(str(status), 0))

    def others(self, ok: int) -> dict[str, int]:
        """Responses with a status other than `ok`."""
        return {k: v for k, v in self.status.items() if k != str(ok)}


def wait_for_quiet(threshold: float, timeout: float = 600.0) -> None:
    """Block until the machine's CPU use (in % of one core) stays below `threshold` for two
    seconds: on a shared machine other work would otherwise end up in our numbers."""
    if threshold <= 0:
        return
    deadline = time.monotonic() + timeout
    ncpu = os.cpu_count() or 1
    said = False
    while time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=2.0) * ncpu
        if busy < threshold:
            return
        if not said:
            print(f"bench: waiting for the machine to quieten ({busy:.0f} % busy)", flush=True)
            said = True
    print(f"bench: machine still busy after {timeout:.0f}s; measuring anyway", flush=True)


def run_wrk(
    wrk: str,
    target: Target,
    script: str,
    script_args: list[str],
    *,
    label: str,
    duration: float,
    connections: int,
    threads: int,
    meter: CpuMeter | None = None,
) -> WrkResult:
    """One wrk run against `target`; returns its parsed summary."""
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_DIR / script),
    ]
    for k, v in target.headers.items():
        argv += ["-H", f"{k}: {v}"]
    argv += [target.url, "--", *script_args]
    if meter:
        wait_for_quiet(QUIET_THRESHOLD)
        meter.start()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    cpu = meter.stop() if meter else {}
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(
            f"wrk failed (exit {proc.returncode}) for {target.name} {label}:\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    raw = json.loads(line.removeprefix("WRK_JSON "))
    seconds = raw["duration_us"] / 1e6
    lat = {k: (v / 1000.0 if v is not None else float("nan")) for k, v in raw["latency_us"].items()}
    return WrkResult(
        label=label,
        requests=raw["requests"],
        sent=raw["sent"],
        duration_s=seconds,
        rps=raw["requests"] / seconds if seconds else 0.0,
        latency_ms=lat,
        errors=raw["errors"],
        status={str(k): int(v) for k, v in raw["status"].items()},
        cpu=cpu,
    )


# ---- CPU accounting ----------------------------------------------------------------------------


class CpuMeter:
    """CPU time used during one run, by process group, in % of one core (the machine has
    nproc * 100 %). Server processes are read through psutil before and after; wrk through
    this process's children rusage; "other" is whatever else was busy on the machine."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._procs: dict[int, tuple[psutil.Process, str, float]] = {}

    @staticmethod
    def _cpu(p: psutil.Process) -> float:
        t = p.cpu_times()
        return float(t.user + t.system)

    def start(self) -> None:
        self._procs = {}
        for p in self.target.process_tree():
            try:
                self._procs[p.pid] = (p, self.target.classify(p), self._cpu(p))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        self._sys0 = psutil.cpu_times()
        self._ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._t0 = time.monotonic()
        self._wall0 = time.time()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._t0
        sys1 = psutil.cpu_times()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        used: Counter[str] = Counter()
        for p, label, before in self._procs.values():
            try:
                used[label] += self._cpu(p) - before
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        for p in self.target.process_tree():  # e.g. a postgres worker started during the run
            try:
                if p.pid not in self._procs and p.create_time() >= self._wall0:
                    used[self.target.classify(p)] += self._cpu(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        used["wrk"] = (ru1.ru_utime - self._ru0.ru_utime) + (ru1.ru_stime - self._ru0.ru_stime)
        busy = _busy(sys1) - _busy(self._sys0)
        out = {k: 100.0 * v / wall for k, v in sorted(used.items(), key=lambda kv: -kv[1])}
        out["other processes"] = max(0.0, 100.0 * busy / wall - sum(out.values()))
        out["machine total"] = 100.0 * busy / wall
        return out


def _busy(t: Any) -> float:
    idle = t.idle + getattr(t, "iowait", 0.0)
    return float(sum(t) - idle)


# ---- seeding -----------------------------------------------------------------------------------


async def _seed(target: Target, n: int, concurrency: int = 16) -> list[str]:
    sem = asyncio.Semaphore(concurrency)
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=target.url, headers=target.headers, timeout=30) as c:

        async def one(i: int) -> None:
            async with sem:
                r = await c.post(target.create_path, json=target.create_body(f"seed-{i}"))
            if r.status_code != target.create_status:
                raise BenchError(f"{target.name}: seeding answered {r.status_code}: {r.text[:300]}")
            ids.append(str(r.json()["id"]))

        await asyncio.gather(*(one(i) for i in range(n)))
    return ids


def seed(target: Target, n: int) -> list[str]:
    """Create `n` records for the get test and return their ids."""
    return asyncio.run(_seed(target, n))


# ---- profiling ---------------------------------------------------------------------------------


def find_py_spy() -> list[str]:
    """Command that runs py-spy: installed, else through `uvx` (no project change needed)."""
    for cand in (Path(sys.executable).parent / "py-spy", shutil.which("py-spy")):
        if cand and Path(cand).exists():
            return [str(cand)]
    if shutil.which("uvx"):
        return ["uvx", "py-spy"]
    raise BenchError("--profile needs py-spy: `uv tool install py-spy` or `pip install py-spy`")


_FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>.*?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m['fn']} ({path})"


def _package(frame: str) -> str:
    """Package of a frame name made by _frame_name: `fn (psycopg/x.py)` -> `psycopg`."""
    path = frame.rsplit("(", 1)[-1].rstrip(")")
    head = path.split("/", 1)[0] if "/" in path else path.removesuffix(".py")
    return head or "?"


# Entry-point frames every server sample passes through.
_TRUNK = (
    "(<frozen runpy>)",
    "(cli/app.py)",
    "(cli/serve.py)",
    "(cyclopts/core.py)",
    "(cyclopts/_run.py)",
    "(uvicorn/_compat.py)",
    "(uvicorn/server.py)",
    "(asyncio/runners.py)",
    "(asyncio/base_events.py)",
)


def summarise_profile(raw_path: Path, top: int = 20) -> dict[str, Any]:
    """Self and inclusive sample shares per function, and self share per package, from
    py-spy's collapsed stacks. Frames present in nearly every sample (the entry point, the
    event loop's run()) are left out of the inclusive list: they say nothing. Samples are
    taken with --nonblocking, so a few stacks are truncated."""
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    pkg_c: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame_name(f) for f in stack.split(";") if f]
        # py-spy may prefix the process / thread name as a pseudo-frame.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if frames:
            self_c[frames[-1]] += n
            pkg_c[_package(frames[-1])] += n
        for f in set(frames):
            incl_c[f] += n
    if not total:
        return {"samples": 0, "self": [], "inclusive": [], "packages": []}
    for f in [f for f in incl_c if f.endswith(_TRUNK)]:
        del incl_c[f]

    def pct(c: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100.0 * v / total, 1)) for k, v in c.most_common(top)]

    return {"samples": total, "self": pct(self_c), "inclusive": pct(incl_c), "packages": pct(pkg_c)}


# ---- one system --------------------------------------------------------------------------------


@dataclass
class SystemResult:
    name: str
    version: str
    create: WrkResult | None = None
    get: WrkResult | None = None
    warmups: list[WrkResult] = field(default_factory=list)
    records_before: int = 0
    records_after: int = 0
    created_ok: int = 0  # create responses with the success status, warm-up included
    create_sent: int = 0
    create_problems: list[str] = field(default_factory=list)
    get_problems: list[str] = field(default_factory=list)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)


def bench_system(target: Target, args: argparse.Namespace, wrk: str, run_id: str) -> SystemResult:
    """Start, seed, warm up, measure creates and gets, check counts, stop."""
    conn, thr = args.connections, args.threads
    out = SystemResult(name=target.name, version="")
    try:
        print(f"bench: starting {target.name} ...", flush=True)
        target.start()
        out.version = target.version()
        print(f"bench: {out.version} at {target.url}; seeding {args.get_ids} records", flush=True)
        ids = seed(target, args.get_ids)
        ids_file = target.workdir / "ids.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        out.records_before = target.count_records()
        create_args = [target.create_path, f"{run_id}", target.body_style]

        def creates(tag: str, seconds: float, meter: CpuMeter | None) -> WrkResult:
            a = [create_args[0], f"{create_args[1]}{tag}", create_args[2]]
            return run_wrk(
                wrk,
                target,
                "create.lua",
                a,
                label=f"create {tag}",
                duration=seconds,
                connections=conn,
                threads=thr,
                meter=meter,
            )

        runs: list[WrkResult] = []
        if args.warmup > 0:
            print(f"bench: {target.name} create warm-up {args.warmup:g}s", flush=True)
            w = creates("w", args.warmup, None)
            out.warmups.append(w)
            runs.append(w)
        print(f"bench: {target.name} creates, {args.duration:g}s at {conn} connections", flush=True)
        out.create = creates("m", args.duration, CpuMeter(target))
        runs.append(out.create)
        out.records_after = target.count_records()
        out.created_ok = sum(r.count(target.create_status) for r in runs)
        out.create_sent = sum(r.sent for r in runs)
        out.create_problems = _check_creates(target, runs, out)

        if args.profile and target.name == "Rekor":
            out.profiles["create"] = profile_run(
                target, args, "create", lambda s: creates("p", s, None)
            )

        get_args = [target.get_prefix, str(ids_file)]
        if args.warmup > 0:
            print(f"bench: {target.name} get warm-up {args.warmup:g}s", flush=True)
            out.warmups.append(
                run_wrk(
                    wrk,
                    target,
                    "get.lua",
                    get_args,
                    label="get w",
                    duration=args.warmup,
                    connections=conn,
                    threads=thr,
                )
            )
        print(f"bench: {target.name} gets, {args.duration:g}s at {conn} connections", flush=True)
        out.get = run_wrk(
            wrk,
            target,
            "get.lua",
            get_args,
            label="get m",
            duration=args.duration,
            connections=conn,
            threads=thr,
            meter=CpuMeter(target),
        )
        out.get_problems = _check_gets(out.get)
        if args.profile and target.name == "Rekor":
            out.profiles["get"] = profile_run(
                target,
                args,
                "get",
                lambda s: run_wrk(
                    wrk,
                    target,
                    "get.lua",
                    get_args,
                    label="get p",
                    duration=s,
                    connections=conn,
                    threads=thr,
                ),
            )
        return out
    finally:
        print(f"bench: stopping {target.name}", flush=True)
        target.stop()


def _check_creates(target: Target, runs: list[WrkResult], out: SystemResult) -> list[str]:
    """Every create acknowledged must be in the collection; nothing may have failed."""
    problems = []
    delta = out.records_after - out.records_before
    # When the duration ends, wrk drops requests in flight: the server may have created up to
    # that many records whose response wrk never counted. So: acknowledged <= delta <= sent.
    if not out.created_ok <= delta <= out.create_sent:
        problems.append(
            f"record count grew by {delta}, but wrk saw {out.created_ok} x "
            f"{target.create_status} out of {out.create_sent} requests sent"
        )
    for r in runs:
        bad = r.others(target.create_status)
        if bad:
            problems.append(f"{r.label}: responses other than {target.create_status}: {bad}")
        errs = {k: v for k, v in r.errors.items() if v and k != "status"}
        if errs:
            problems.append(f"{r.label}: socket errors/timeouts {errs}")
    return problems


def _check_gets(r: WrkResult) -> list[str]:
    problems = []
    bad = r.others(200)
    if bad:
        problems.append(f"{r.label}: responses other than 200: {bad}")
    errs = {k: v for k, v in r.errors.items() if v and k != "status"}
    if errs:
        problems.append(f"{r.label}: socket errors/timeouts {errs}")
    return problems


def profile_run(target: Target, args: argparse.Namespace, op: str, run: Any) -> dict[str, Any]:
    """An extra (unreported) run of `op` with py-spy sampling the server process; py-spy costs
    CPU of its own, so the measured runs are never the profiled ones."""
    assert target.proc is not None
    spy = find_py_spy()
    out_dir = Path(args.profile).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"{target.name.lower()}-{op}.collapsed"
    seconds = max(5.0, args.duration)
    print(f"bench: profiling {target.name} {op} with py-spy for {seconds:g}s", flush=True)
    spy_cmd = [
        *spy,
        "record",
        "--pid",
        str(target.proc.pid),
        "--duration",
        str(int(seconds) - 1),
        "--rate",
        "100",
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(raw),
    ]
    with open(target.workdir / "py-spy.log", "wb") as log:
        p = subprocess.Popen(spy_cmd, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(1.0)  # let py-spy attach before the load starts
        result = run(seconds)
        p.wait(60)
    if p.returncode != 0 or not raw.exists():
        text = (target.workdir / "py-spy.log").read_text(errors="replace")[-1500:]
        raise BenchError(f"py-spy failed (exit {p.returncode}):\n{text}")
    summary = summarise_profile(raw)
    summary["rps_while_profiling"] = round(result.rps, 1)
    summary["raw"] = str(raw)
    return summary


# ---- report ------------------------------------------------------------------------------------


def machine_facts(wrk: str) -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_v = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        # Other work on the machine skews every number; say how busy it was before we began.
        "busy before start": f"{psutil.cpu_percent(interval=2.0) * (os.cpu_count() or 1):.0f} "
        "% of one core",
        "wrk": (wrk_v.stdout or wrk_v.stderr or "wrk ?").splitlines()[0].split(" Copyright")[0],
    }


def _ms(x: float) -> str:
    return f"{x:.1f}" if x == x else "-"


def render(results: list[SystemResult], facts: dict[str, str], argv: list[str]) -> str:
    """The results as Markdown (what docs/benchmarks.md reports)."""
    by = {r.name: r for r in results}
    rk, pb = by.get("Rekor"), by.get("PocketBase")
    lines = [
        "| operation | system | req/s | p50 ms | p90 ms | p99 ms | max ms | non-2xx | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for op in ("create", "get"):
        for r in results:
            w: WrkResult | None = getattr(r, op)
            if w is None:
                continue
            ok = 201 if (op == "create" and r.name == "Rekor") else 200
            non_ok = sum(w.others(ok).values())
            errs = sum(v for k, v in w.errors.items() if k != "status")
            lat = w.latency_ms
            lines.append(
                f"| {op} | {r.name} | {w.rps:,.0f} | {_ms(lat['p50'])} | {_ms(lat['p90'])} | "
                f"{_ms(lat['p99'])} | {_ms(lat['max'])} | {non_ok} | {errs} |"
            )
    if rk and pb:
        lines += ["", "| operation | Rekor / PocketBase throughput | p99 Rekor / PocketBase |"]
        lines += ["|---|---:|---:|"]
        for op in ("create", "get"):
            a, b = getattr(rk, op), getattr(pb, op)
            if a and b and b.rps:
                lines.append(
                    f"| {op} | {a.rps / b.rps:.2f} | "
                    f"{_ms(a.latency_ms['p99'])} / {_ms(b.latency_ms['p99'])} ms |"
                )
    if rk:
        lines += ["", "Targets (Rekor):"]
        if rk.create:
            c = rk.create
            ok = c.rps >= TARGET_CREATES_PER_S and c.latency_ms["p99"] <= TARGET_CREATE_P99_MS
            lines.append(
                f"- creates >= {TARGET_CREATES_PER_S:,.0f}/s with p99 <= "
                f"{TARGET_CREATE_P99_MS:.0f} ms: {'met' if ok else 'MISSED'} "
                f"({c.rps:,.0f}/s, p99 {_ms(c.latency_ms['p99'])} ms)"
            )
        if rk.get:
            ok = rk.get.rps >= TARGET_GETS_PER_S
            lines.append(
                f"- gets >= {TARGET_GETS_PER_S:,.0f}/s: {'met' if ok else 'MISSED'} "
                f"({rk.get.rps:,.0f}/s)"
            )
    lines += [
        "",
        f"CPU during the measured runs (% of one core; the machine has {facts['nproc']} x 100 %):",
        "",
    ]
    cpu_rows = [(f"{r.name} {op}", getattr(r, op)) for r in results for op in ("create", "get")]
    cpu_rows = [(n, w) for n, w in cpu_rows if w is not None]
    groups: list[str] = []
    for _, w in cpu_rows:
        for k in w.cpu:
            if k not in groups and k not in ("other processes", "machine total"):
                groups.append(k)
    groups += ["other processes", "machine total"]
    lines.append("| run | " + " | ".join(groups) + " |")
    lines.append("|---|" + "---:|" * len(groups))
    for n, w in cpu_rows:
        cells = [f"{w.cpu[g]:.0f}" if g in w.cpu else "-" for g in groups]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    busy = [
        (n, w.cpu["other processes"]) for n, w in cpu_rows if w.cpu.get("other processes", 0) > 25
    ]
    if busy:
        lines += [
            "",
            "WARNING: other processes on this machine were busy during "
            + ", ".join(f"{n} ({v:.0f} % of a core)" for n, v in busy)
            + "; those numbers understate what the system does on a quiet machine.",
        ]
    lines += ["", "Correctness:"]
    for r in results:
        if r.create:
            delta = r.records_after - r.records_before
            lines.append(
                f"- {r.name}: creates acknowledged {r.created_ok:,} (warm-up included), requests "
                f"sent {r.create_sent:,}, records counted through the API grew by {delta:,}; "
                + (
                    "no errors"
                    if not (r.create_problems or r.get_problems)
                    else "PROBLEMS: " + "; ".join(r.create_problems + r.get_problems)
                )
            )
    lines += ["", "Versions: " + "; ".join(r.version for r in results)]
    lines.append(
        "Machine: "
        + ", ".join(f"{k} {v}" for k, v in facts.items() if k in ("nproc", "cpu", "memory"))
        + f", {facts['kernel']}, Python {facts['python']}, {facts['wrk']}; CPU busy before the "
        f"run: {facts['busy before start']}"
    )
    lines.append("Command: `uv run python -m bench.harness " + " ".join(argv) + "`")
    for r in results:
        for op, p in r.profiles.items():
            lines += [
                "",
                f"Profile of the {r.name} server process during an extra {op} run "
                f"({p['samples']} samples, {p['rps_while_profiling']:,.0f} req/s while sampled; "
                f"collapsed stacks in {p['raw']}). Self time by package:",
                "",
                "| self % | package |",
                "|---:|---|",
                *(f"| {v} | {k} |" for k, v in p["packages"][:10]),
                "",
                "| self % | function |",
                "|---:|---|",
                *(f"| {v} | `{k}` |" for k, v in p["self"][:15]),
                "",
                "| inclusive % | function |",
                "|---:|---|",
                *(f"| {v} | `{k}` |" for k, v in p["inclusive"][:20]),
            ]
    return "\n".join(lines)


# ---- entry point -------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.harness",
        description="Rekor vs PocketBase: single-record creates and gets by id, over HTTP, "
        "driven by wrk with the same concurrency for both.",
    )
    p.add_argument("--duration", type=float, default=15.0, help="seconds per measured run")
    p.add_argument("--connections", type=int, default=32, help="concurrent HTTP connections")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up (0: none)")
    p.add_argument("--get-ids", type=int, default=1000, help="records seeded for the get test")
    p.add_argument("--only", choices=["rekor", "pocketbase"], help="benchmark one system")
    p.add_argument("--workers", type=int, default=1, help="API worker processes for `rekor serve`")
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="also sample the Rekor server with py-spy during an extra create run and an extra "
        "get run (never the measured ones); collapsed stacks go to DIR, hot spots to the report",
    )
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="PCT",
        help="before each measured run wait (up to 10 min) until the machine's CPU use is "
        "below PCT %% of one core; for shared machines",
    )
    args = p.parse_args(argv)
    if args.connections < args.threads:
        p.error("--connections must be >= --threads")
    return args


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    global QUIET_THRESHOLD
    QUIET_THRESHOLD = args.wait_quiet
    workdir = Path(tempfile.mkdtemp(prefix="rekor-bench-"))
    results: list[SystemResult] = []
    try:
        wrk = find_wrk()
        targets: list[Target] = []
        if args.only in (None, "rekor"):
            from bench.rekor import RekorTarget

            targets.append(RekorTarget(workdir / "rekor", workers=args.workers))
        if args.only in (None, "pocketbase"):
            from bench.pocketbase import PocketBaseTarget

            targets.append(PocketBaseTarget(workdir / "pocketbase"))
        if args.profile:
            find_py_spy()
        facts = machine_facts(wrk)
        run_id = f"r{int(time.time())}"
        for t in targets:
            results.append(bench_system(t, args, wrk, run_id))
        report = render(results, facts, argv)
        print("\n" + report)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {"machine": facts, "argv": argv, "results": [asdict(r) for r in results]},
                    indent=2,
                )
            )
        failed = any(r.create_problems or r.get_problems for r in results)
        return 1 if failed else 0
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        strays = reap_strays(str(workdir))
        if strays:
            print(f"bench: stopped leftover processes: {', '.join(strays)}", file=sys.stderr)
        remove_tree(workdir)


if __name__ == "__main__":
    sys.exit(main())
