"""`rekor mcp`: the MCP tools on stdio, for desktop agents, talking to a running Rekor over
REST (REKOR_URL + REKOR_API_KEY, or the CLI's login / local serve files)."""

from __future__ import annotations

import sys

from mcp.server.mcpserver import Context

from cli.client import Connection
from mcp_server.backend import Backend, RestBackend
from mcp_server.server import build_server


def run_stdio(conn: Connection) -> None:
    """Serve MCP on stdin/stdout until the client closes it."""
    backend = RestBackend(conn)

    async def backend_for(ctx: Context) -> Backend:
        return backend

    if not conn.api_key:
        # stdout belongs to the protocol; say it on stderr and serve anyway (every call will
        # answer UNAUTHORIZED, which the agent can report).
        print(
            f"rekor mcp: no API key (set REKOR_API_KEY); calls to {conn.url} will be refused",
            file=sys.stderr,
        )
    build_server(backend_for).run("stdio")
