"""Load benchmarks: Rekor and PocketBase driven over HTTP by wrk on the same machine.

Run `uv run python -m bench.harness --help`."""
