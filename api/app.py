"""The litestar application: routes, dependencies, error table, OpenAPI, lifespan."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp, Receive, Scope, Send

from api.deps import provide_principal, provide_service
from api.errors import EXCEPTION_HANDLERS, error_response
from api.idempotency import OPENAPI_TEXT as IDEMPOTENCY_TEXT
from api.idempotency import idempotency_middleware
from api.routes.attachments import AttachmentController
from api.routes.batch import BatchController
from api.routes.core import (
    ApiKeyController,
    CollectionController,
    RecordController,
    WorkspaceController,
)
from api.routes.query import QueryController
from api.routes.relationships import RelatedController, RelationshipController
from api.routes.streaming import EventController, HookController, TriggerController
from commands.bootstrap import build_service, start_components, stop_components
from commands.config import Settings
from mcp_server.http import mount_mcp

access_log = logging.getLogger("rekor.access")


@get("/health", operation_id="health", include_in_schema=True, tags=["system"])
async def health(state: State) -> Any:
    """Liveness and readiness: 200 when the database answers, 503 otherwise."""
    service = state.service
    checks: dict[str, str] = {}
    try:
        async with service.connection() as conn:
            await conn.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    for name, component in service.extensions.items():
        probe = getattr(component, "health", None)
        if probe is not None:
            checks[name] = await probe()
    ok = checks["database"] == "ok"
    if ok:
        return {"status": "ok", "checks": checks}
    return error_response("UNAVAILABLE", "database unavailable", checks, 503)


def access_log_middleware(app: ASGIApp) -> ASGIApp:
    """One structured (JSON) log line per request: method, path, status, duration."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not access_log.isEnabledFor(logging.INFO):
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            access_log.info(
                json.dumps(
                    {
                        "event": "request",
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round((time.perf_counter() - started) * 1000, 2),
                    }
                )
            )

    return middleware


def create_app(settings: Settings, *, extra_route_handlers: list[Any] | None = None) -> Litestar:
    """Build the ASGI app. The service is created in the lifespan and closed on shutdown."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        service = await build_service(settings.database_url)
        app.state.service = service
        app.state.settings = settings
        await start_components(service, settings)
        try:
            yield
        finally:
            await stop_components(service)
            await service.close()

    route_handlers: list[Any] = [
        health,
        WorkspaceController,
        CollectionController,
        RecordController,
        ApiKeyController,
        AttachmentController,
        RelationshipController,
        RelatedController,
        BatchController,
        QueryController,
        TriggerController,
        HookController,
        EventController,
    ]
    route_handlers += extra_route_handlers or []
    # MCP (streamable HTTP) at /mcp: same process, same service, same API keys.
    mcp_handler, mcp_lifespan = mount_mcp()
    route_handlers.append(mcp_handler)
    return Litestar(
        route_handlers=route_handlers,
        dependencies={
            "service": Provide(provide_service),
            "principal": Provide(provide_principal),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan, mcp_lifespan],
        middleware=[access_log_middleware, idempotency_middleware],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Rekor",
            version="0.1.0",
            description=(
                "Rekor is an event-sourced data layer for AI agents: collections defined by JSON"
                " Schema at runtime, records, relationships, files, webhooks and preview"
                " workspaces. Every write is an event in a per-workspace log; every write"
                " response carries its log position `seq`. Errors are always"
                ' `{"error": {"code", "message", "details"}}`.' + IDEMPOTENCY_TEXT
            ),
            path="/schema",
            use_handler_docstrings=True,
            components=Components(
                security_schemes={
                    "apiKey": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="`Authorization: Bearer rk_...`",
                    )
                }
            ),
            security=[{"apiKey": []}],
        ),
        state=State({"settings": settings}),
    )
