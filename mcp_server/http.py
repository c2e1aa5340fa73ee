"""The MCP tools over streamable HTTP at /mcp on the API server, in the same process.

Requests are authenticated like REST (`Authorization: Bearer rk_...`, interface "mcp"); the
tools then call the in-process RekorService as that principal, so REST and MCP share every
permission check. The host (litestar) lifespan runs the MCP session manager: a mounted app's
own lifespan never runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, asgi
from litestar.handlers import ASGIRouteHandler
from litestar.types import Receive, Scope, Send
from mcp.server.mcpserver import Context
from mcp.server.transport_security import TransportSecuritySettings

from events.errors import RekorError
from mcp_server.backend import Backend, ServiceBackend
from mcp_server.server import MAX_ARGUMENT_BYTES, build_server

PRINCIPAL_KEY = "rekor.principal"


async def _backend_for(ctx: Context) -> Backend:
    request = ctx.request_context.request
    scope = getattr(request, "scope", None) or {}
    principal = scope.get(PRINCIPAL_KEY)
    service = scope.get("app").state.service if scope.get("app") is not None else None
    if principal is None or service is None:
        # Only reachable if the transport ever stops handing us the HTTP request.
        raise RuntimeError("MCP request without an authenticated principal")
    return ServiceBackend(service, principal)


async def _send_error(send: Send, exc: RekorError) -> None:
    body = msgspec.json.encode(exc.to_json())
    await send(
        {
            "type": "http.response.start",
            "status": exc.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b"Bearer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class McpHttp:
    """The /mcp route handler and the lifespan that runs its session manager."""

    def __init__(self) -> None:
        self.server = build_server(_backend_for)
        # Creating the app creates the session manager; we call the manager directly.
        self.server.streamable_http_app(
            streamable_http_path="/mcp",
            # Stateless JSON: no session affinity (any API process can answer any call) and
            # no SSE framing per call.
            stateless_http=True,
            json_response=True,
            max_request_body_size=MAX_ARGUMENT_BYTES * 4,
            # Every request carries an API key, so the localhost-only Host allowlist (a guard
            # for unauthenticated local servers against DNS rebinding) would only break
            # deployments behind a real hostname.
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self.manager = self.server.session_manager
        manager = self.manager

        @asgi("/mcp", copy_scope=False, include_in_schema=False)
        async def mcp_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
            service = scope["app"].state.service
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            auth = headers.get("authorization", "")
            token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
            try:
                principal = await service.authenticate(token, "mcp")
            except RekorError as exc:
                await _send_error(send, exc)
                return
            correlation = headers.get("x-request-id") or headers.get("x-correlation-id")
            if correlation:
                principal = msgspec.structs.replace(principal, correlation_id=correlation[:200])
            scope[PRINCIPAL_KEY] = principal  # type: ignore[literal-required]
            await manager.handle_request(scope, receive, send)  # type: ignore[arg-type]

        self.handler: ASGIRouteHandler = mcp_endpoint

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        """Run the session manager for the host app's lifetime."""
        async with self.manager.run():
            yield


def mount_mcp() -> tuple[Any, Any]:
    """(route handler, lifespan) to add to the litestar app."""
    mcp = McpHttp()
    return mcp.handler, mcp.lifespan
