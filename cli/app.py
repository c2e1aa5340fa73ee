"""The `rekor` command line."""

from __future__ import annotations

import sys
from typing import Annotated

from cyclopts import App, Parameter

app = App(
    name="rekor",
    help="Rekor: an event-sourced data layer for AI agents. REST, CLI and MCP on one service.",
)


@app.command
def serve(
    *,
    host: Annotated[str, Parameter(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, Parameter(help="Port to listen on.")] = 8080,
    data_dir: Annotated[
        str, Parameter(help="Where the embedded stack keeps its data and the admin key.")
    ] = ".rekor",
    access_log: Annotated[bool, Parameter(help="Log every request as a JSON line.")] = False,
) -> None:
    """Run Rekor. With no configuration it starts PostgreSQL, NATS and S3 embedded under
    --data-dir; with REKOR_DATABASE_URL / REKOR_NATS_URL / REKOR_S3_ENDPOINT set it uses those.

    Examples:
        rekor serve
        rekor serve --port 9000 --data-dir /var/lib/rekor
    """
    from cli.serve import serve as run

    sys.exit(run(host, port, data_dir, access_log=access_log))


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
