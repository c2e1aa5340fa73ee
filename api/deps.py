"""Dependencies injected into routes: the service and the authenticated caller."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.datastructures import State

from commands.principal import Principal
from commands.service import RekorService

INTERFACES = {"rest", "cli", "mcp"}


async def provide_service(state: State) -> RekorService:
    """The application service built at start-up."""
    return state.service  # type: ignore[no-any-return]


async def provide_principal(request: Request[Any, Any, Any], state: State) -> Principal:
    """Authenticate `Authorization: Bearer rk_...`; `Rekor-Interface: cli` marks CLI calls in
    the audit metadata."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else None
    interface = request.headers.get("rekor-interface", "rest")
    if interface not in INTERFACES:
        interface = "rest"
    principal = await state.service.authenticate(token, interface)
    correlation = request.headers.get("x-request-id") or request.headers.get("x-correlation-id")
    if correlation:
        principal = msgspec.structs.replace(principal, correlation_id=correlation[:200])
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key and request.method != "GET":
        # The middleware has validated it; recorded so the log says which retry wrote what.
        principal = msgspec.structs.replace(principal, idempotency_key=idempotency_key[:255])
    return principal
