"""Attachment benchmarks: presign round trip through the API, and a 50 MiB upload through the
CLI against direct S3 PUTs of the same file, all in one run on the embedded stack.

    uv run python -m bench.attachments_bench [--requests 1000] [--mib 50] [--rounds 5]

1. Presign: sequential `POST .../attachments` on one keep-alive connection (auth, record check,
   SigV4 presign); p50/p95/p99 of the client-side round trip.
2. Upload: per round, in alternating order, through the CLI: `rekor attachments upload` as a
   subprocess (whole wall time: interpreter start, presign, streamed PUT, complete) and the same
   CLI steps in process (no interpreter start); and direct S3 PUTs of the same file with no
   Rekor in the path: `curl -T` to a presigned URL, boto3 `put_object` from a fresh Python
   process (like `aws s3 cp`), and boto3 `put_object` in process. Medians over the rounds;
   throughput = file size / median wall time. The Python subprocesses run with a bytecode
   cache (warmed once), as an installed CLI does, even if PYTHONDONTWRITEBYTECODE is set here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.procs import start_rekor, stop

ROOT = Path(__file__).resolve().parent.parent
WS = "ws_attach_bench"
COLL = "docs"


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def presign_latency(api: httpx.Client, base: str, n: int) -> dict[str, float]:
    body = {"filename": "docs/runbook.md", "content_type": "text/markdown"}
    for _ in range(50):  # warm-up: connection, caches
        api.post(base, json=body).raise_for_status()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        r = api.post(base, json=body)
        samples.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return {
        "n": n,
        "p50_ms": round(_pct(samples, 50), 2),
        "p95_ms": round(_pct(samples, 95), 2),
        "p99_ms": round(_pct(samples, 99), 2),
        "mean_ms": round(statistics.fmean(samples), 2),
    }


def s3_client(data_dir: Path) -> tuple[Any, str]:
    import boto3
    from botocore.config import Config

    state = json.loads((data_dir / "stack.json").read_text())
    endpoint = f"http://127.0.0.1:{state['ports']['s3']}"
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=state["s3"]["access_key"],
        aws_secret_access_key=state["s3"]["secret_key"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    return client, endpoint


def python_env(work: Path) -> dict[str, str]:
    """Environment for the timed Python subprocesses: with a bytecode cache (in the bench's temp
    dir), as an installed CLI has; without it every start recompiles ~300 modules (~0.8 s)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def time_cli_upload(url: str, key: str, rid: str, path: Path) -> float:
    env = {
        **python_env(path.parent),
        "REKOR_URL": url,
        "REKOR_API_KEY": key,
        "REKOR_WORKSPACE": WS,
        "REKOR_CONFIG": str(path.parent / "none.json"),
    }
    # The installed console script, as a user runs it (its entry point is cli.main).
    argv = [
        str(Path(sys.executable).with_name("rekor")),
        "attachments",
        "upload",
        COLL,
        rid,
        "--filename",
        "big.bin",
        "--content-type",
        "application/octet-stream",
        "--file",
        str(path),
        "--quiet",
    ]
    t = time.perf_counter()
    p = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"CLI upload failed: {p.stderr}")
    return elapsed


def time_cli_flow_in_process(api: httpx.Client, base: str, path: Path) -> float:
    """The CLI's own upload steps (presign, streamed PUT with `put_file`, complete) without the
    interpreter start: what the transfer itself costs through the CLI code."""
    from cli.transfer import put_file

    size = path.stat().st_size
    t = time.perf_counter()
    grant = api.post(
        base,
        json={"filename": "inproc.bin", "content_type": "application/octet-stream", "size": size},
    ).json()
    put_file(grant, path, size, quiet=True)
    api.post(base + "/complete", json={"filename": "inproc.bin"}).raise_for_status()
    return time.perf_counter() - t


_BOTO3_SCRIPT = """
import sys, boto3
from botocore.config import Config
endpoint, access, secret, path = sys.argv[1:5]
s3 = boto3.session.Session().client("s3", endpoint_url=endpoint, aws_access_key_id=access,
    aws_secret_access_key=secret, region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}))
with open(path, "rb") as fh:
    s3.put_object(Bucket="rekor", Key="bench/direct-boto3-process.bin", Body=fh)
"""


def time_boto3_process(data_dir: Path, path: Path) -> float:
    """A direct PUT from a fresh Python process (like `aws s3 cp`): interpreter start included."""
    state = json.loads((data_dir / "stack.json").read_text())
    argv = [
        sys.executable,
        "-c",
        _BOTO3_SCRIPT,
        f"http://127.0.0.1:{state['ports']['s3']}",
        state["s3"]["access_key"],
        state["s3"]["secret_key"],
        str(path),
    ]
    t = time.perf_counter()
    subprocess.run(argv, check=True, env=python_env(path.parent))
    return time.perf_counter() - t


def time_boto3_put(s3: Any, path: Path) -> float:
    t = time.perf_counter()
    with path.open("rb") as fh:
        s3.put_object(Bucket="rekor", Key="bench/direct-boto3.bin", Body=fh)
    return time.perf_counter() - t


def time_curl_put(api: httpx.Client, base: str, path: Path) -> float:
    size = path.stat().st_size
    grant = api.post(
        base,
        json={"filename": "curl.bin", "content_type": "application/octet-stream", "size": size},
    ).json()
    argv = ["curl", "-sS", "-f", "-o", "/dev/null", "-T", str(path)]
    for name, value in grant["headers"].items():
        argv += ["-H", f"{name}: {value}"]
    t = time.perf_counter()
    subprocess.run([*argv, grant["upload_url"]], check=True)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "attachments.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rekor-attach-bench-"))
    data_dir = work / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REKOR_")}
    proc, url, key = start_rekor(data_dir, work / "serve.log", env=env)
    try:
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        api.post("/v1/workspaces", json={"id": WS}).raise_for_status()
        api.put(f"/v1/{WS}/collections/{COLL}", json={"json_schema": {}}).raise_for_status()
        rid = api.post(f"/v1/{WS}/collections/{COLL}/records", json={"data": {}}).json()["id"]
        base = f"/v1/{WS}/collections/{COLL}/records/{rid}/attachments"

        presign = presign_latency(api, base, args.requests)
        print(f"presign round trip: {presign}", flush=True)

        big = work / "big.bin"
        with big.open("wb") as fh:
            for _ in range(args.mib):
                fh.write(os.urandom(1024 * 1024))
        size_mib = big.stat().st_size / 1024 / 1024
        s3, _ = s3_client(data_dir)
        runs = {
            "cli_command": lambda: time_cli_upload(url, key, rid, big),
            "cli_flow_in_process": lambda: time_cli_flow_in_process(api, base, big),
            "direct_curl": lambda: time_curl_put(api, base, big),
            "direct_boto3_process": lambda: time_boto3_process(data_dir, big),
            "direct_boto3_in_process": lambda: time_boto3_put(s3, big),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        # Warm-up: volume allocation on the S3 server, bytecode caches of the subprocesses.
        time_boto3_put(s3, big)
        runs["cli_command"]()
        runs["direct_boto3_process"]()
        for i in range(args.rounds):
            names = list(runs) if i % 2 == 0 else list(reversed(runs))
            for name in names:
                times[name].append(runs[name]())
        medians = {k: statistics.median(v) for k, v in times.items()}
        result = {
            "presign": presign,
            "upload_mib": size_mib,
            "rounds": args.rounds,
            "median_seconds": {k: round(v, 3) for k, v in medians.items()},
            "mib_per_s": {k: round(size_mib / v, 1) for k, v in medians.items()},
            # Throughput ratios (>= 0.8 is the goal): CLI speed / direct PUT speed.
            "ratios": {
                f"{cli}/{direct}": round(medians[direct] / medians[cli], 3)
                for cli in ("cli_command", "cli_flow_in_process")
                for direct in ("direct_curl", "direct_boto3_process", "direct_boto3_in_process")
            },
            "all_seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(result, indent=2))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        api.close()
    finally:
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
