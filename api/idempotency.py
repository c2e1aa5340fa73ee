"""Idempotency keys: a retried write replays its first response instead of writing again.

Every POST, PUT, PATCH and DELETE under /v1 (except webhook ingestion, which has its own
receipts) may carry `Idempotency-Key`. The first request with a key claims it by inserting a
row in its own short transaction - the primary key makes the claim exclusive, so concurrent
duplicates can never both run. The claimant runs the request and stores the response (2xx and
final 4xx; never 5xx, 408 or 429, which a retry may fix). A later request with the same key:
- same method, path, query and body: gets the stored status and body, with
  `Idempotent-Replayed: true`, and nothing is written again;
- a different request: 409 CONFLICT;
- while the first is still running: waits for it (up to `WAIT_SECONDS`), then replays, or
  answers 409 "in progress".
Keys are scoped to the API key and the workspace, and kept for 24 hours (purged lazily).

A process killed between committing a write and storing its response leaves the claim
"in progress"; after `STALE_SECONDS` a retry with the same body takes the claim over and runs
again. Upserts by external id or by id are themselves idempotent, which covers that window for
the common cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import psycopg
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from psycopg.types.json import Jsonb
from psycopg_pool import PoolTimeout

from events.errors import RekorError, Unavailable
from events.migrations import register

register(
    "0301_idempotency_keys",
    """
    CREATE TABLE IF NOT EXISTS idempotency_keys (
        api_key_id text NOT NULL,
        workspace_id text NOT NULL,
        key text NOT NULL,
        request_hash text NOT NULL,
        state text NOT NULL,
        status integer NULL,
        headers jsonb NULL,
        body bytea NULL,
        created_at timestamptz NOT NULL,
        completed_at timestamptz NULL,
        PRIMARY KEY (api_key_id, workspace_id, key)
    );
    CREATE INDEX IF NOT EXISTS idempotency_keys_created_idx ON idempotency_keys (created_at);
    """,
)

HEADER = b"idempotency-key"
REPLAYED = b"idempotent-replayed"
MAX_KEY_LENGTH = 255
TTL_HOURS = 24
WAIT_SECONDS = 15.0
STALE_SECONDS = 60
POLL_SECONDS = 0.02
PURGE_EVERY_SECONDS = 300.0
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_EXEMPT = re.compile(r"^/v1/[^/]+/hooks/[^/]+/ingest/?$")
# Statuses a retry may change: not stored, so the retry really runs.
_NOT_FINAL = frozenset({408, 425, 429})

OPENAPI_TEXT = (
    "\n\n**Idempotency.** Send `Idempotency-Key: <unique string, at most 255 chars>` on any"
    " POST, PUT, PATCH or DELETE to make retries safe: a retry with the same key and the same"
    " method, path and body replays the first response (same status and body, plus"
    " `Idempotent-Replayed: true`) without writing again; the same key with a different"
    " request is a 409 `CONFLICT`; a duplicate sent while the first is still running waits"
    " for it. Keys are scoped to your API key and workspace and kept for at least 24 hours."
    " Server errors (5xx) are not stored, so retrying them runs the request again."
)

_CLAIM = f"""
INSERT INTO idempotency_keys (api_key_id, workspace_id, key, request_hash, state, created_at)
VALUES (%s, %s, %s, %s, 'in_progress', now())
ON CONFLICT (api_key_id, workspace_id, key) DO UPDATE SET
    request_hash = excluded.request_hash, state = 'in_progress', status = NULL,
    headers = NULL, body = NULL, created_at = excluded.created_at, completed_at = NULL
WHERE idempotency_keys.created_at < now() - interval '{TTL_HOURS} hours'
   OR (idempotency_keys.state = 'in_progress'
       AND idempotency_keys.request_hash = excluded.request_hash
       AND idempotency_keys.created_at < now() - interval '{STALE_SECONDS} seconds')
RETURNING 1
"""


def _error(status: int, code: str, message: str, details: Any = None) -> tuple[int, bytes]:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return status, msgspec.json.encode(body)


def _workspace_of(path: str) -> str:
    # /v1/workspaces/{ws}/... and /v1/{ws}/... ; '' for global resources (api keys, create ws).
    parts = path.split("/")
    if len(parts) < 3:
        return ""
    if parts[2] == "workspaces":
        return parts[3] if len(parts) > 3 else ""
    if parts[2] == "api-keys":
        return ""
    return parts[2]


@asynccontextmanager
async def _connection(service: Any) -> AsyncIterator[Any]:
    # Without the database no write can happen either: say so as the writer does (503).
    try:
        async with service.connection() as conn:
            yield conn
    except (psycopg.OperationalError, PoolTimeout, OSError) as exc:
        raise Unavailable(
            "the database is unavailable; nothing was written, retry shortly with the same"
            " Idempotency-Key",
            [{"message": type(exc).__name__}],
        ) from exc


class IdempotencyKeys:
    """The Postgres side: claim a key, store or drop its response, read it back."""

    def __init__(self) -> None:
        self._last_purge = 0.0

    async def claim(self, service: Any, ident: tuple[str, str, str], request_hash: str) -> bool:
        """True if this request now owns the key (it is new, expired, or abandoned)."""
        async with _connection(service) as conn:
            if time.monotonic() - self._last_purge > PURGE_EVERY_SECONDS:
                self._last_purge = time.monotonic()
                await conn.execute(
                    "DELETE FROM idempotency_keys"
                    f" WHERE created_at < now() - interval '{TTL_HOURS} hours'"
                )
            cur = await conn.execute(_CLAIM, (*ident, request_hash))
            return await cur.fetchone() is not None

    async def lookup(self, service: Any, ident: tuple[str, str, str]) -> tuple[Any, ...] | None:
        """(request_hash, state, status, headers, body) of a key, or None."""
        async with _connection(service) as conn:
            cur = await conn.execute(
                "SELECT request_hash, state, status, headers, body FROM idempotency_keys"
                " WHERE api_key_id = %s AND workspace_id = %s AND key = %s",
                ident,
            )
            return await cur.fetchone()

    async def complete(
        self,
        service: Any,
        ident: tuple[str, str, str],
        status: int,
        headers: list[list[str]],
        body: bytes,
    ) -> None:
        """Store the response of a claimed key."""
        async with _connection(service) as conn:
            await conn.execute(
                "UPDATE idempotency_keys SET state = 'done', status = %s, headers = %s,"
                " body = %s, completed_at = now() WHERE api_key_id = %s AND workspace_id = %s"
                " AND key = %s AND state = 'in_progress'",
                (status, Jsonb(headers), body, *ident),
            )

    async def release(self, service: Any, ident: tuple[str, str, str]) -> None:
        """Give a claimed key back (the request failed in a way a retry may fix)."""
        async with _connection(service) as conn:
            await conn.execute(
                "DELETE FROM idempotency_keys WHERE api_key_id = %s AND workspace_id = %s"
                " AND key = %s AND state = 'in_progress'",
                ident,
            )


async def _send_simple(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _replay(send: Send, status: int, headers: list[list[str]], body: bytes) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw.append((REPLAYED, b"true"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def idempotency_middleware(app: ASGIApp) -> ASGIApp:
    """ASGI middleware implementing `Idempotency-Key` for writes under /v1."""
    keys = IdempotencyKeys()

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in WRITE_METHODS
            or not scope["path"].startswith("/v1/")
            or _EXEMPT.match(scope["path"])
        ):
            await app(scope, receive, send)
            return
        raw_key = next((v for k, v in scope["headers"] if k == HEADER), None)
        if raw_key is None:
            await app(scope, receive, send)
            return
        key = raw_key.decode("latin-1").strip()
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            status, body = _error(
                422,
                "VALIDATION_ERROR",
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters long",
                [{"path": "headers.Idempotency-Key", "message": f"got {len(key)} characters"}],
            )
            await _send_simple(send, status, body)
            return

        service = scope["app"].state.service
        auth = next((v for k, v in scope["headers"] if k == b"authorization"), b"").decode(
            "latin-1"
        )
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        try:
            principal = await service.authenticate(token)
        except RekorError:
            await app(scope, receive, send)  # the route answers 401 with the usual body
            return

        # Read the body so it can be hashed, then hand the same bytes to the app. A body over
        # the size limit is passed on unread: the app refuses it (413) without our help.
        limit = scope["app"].state.settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        complete = False
        while size <= limit:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if not message.get("more_body", False):
                complete = True
                break
        body_bytes = b"".join(chunks)
        replayed_once = False

        async def replay_receive() -> Message:
            nonlocal replayed_once
            if not replayed_once:
                replayed_once = True
                return {"type": "http.request", "body": body_bytes, "more_body": not complete}
            return await receive()

        if not complete:
            await app(scope, replay_receive, send)
            return

        digest = hashlib.sha256()
        for part in (scope["method"], scope["path"], scope.get("query_string", b"").decode()):
            digest.update(part.encode() + b"\0")
        digest.update(body_bytes)
        request_hash = digest.hexdigest()
        ident = (principal.key_id or principal.name, _workspace_of(scope["path"]), key)

        deadline = time.monotonic() + WAIT_SECONDS
        while not await keys.claim(service, ident, request_hash):
            found = await keys.lookup(service, ident)
            if found is None:
                continue  # released between our claim and lookup: claim again
            stored_hash, state, status, headers, body = found
            if stored_hash != request_hash:
                status, body = _error(
                    409,
                    "CONFLICT",
                    "this Idempotency-Key was already used for a different request (method,"
                    " path or body differ); use a new key for a new request",
                    [{"path": "headers.Idempotency-Key", "message": "key reused"}],
                )
                await _send_simple(send, status, body)
                return
            if state == "done":
                await _replay(send, status, headers, bytes(body))
                return
            if time.monotonic() > deadline:
                status, body = _error(
                    409,
                    "CONFLICT",
                    "a request with this Idempotency-Key is still in progress; retry it later"
                    " to get its response",
                    [{"path": "headers.Idempotency-Key", "message": "in progress"}],
                )
                await _send_simple(send, status, body)
                return
            await asyncio.sleep(POLL_SECONDS)

        # We own the key: run the request, capture the response, store it, then send it.
        start: dict[str, Any] | None = None
        out: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = dict(message)
                return
            if message["type"] == "http.response.body":
                out.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                assert start is not None
                status = int(start["status"])
                body = b"".join(out)
                # The request has run: if its response cannot be stored, still answer it.
                with contextlib.suppress(Unavailable):
                    if status < 500 and status not in _NOT_FINAL:
                        headers = [
                            [k.decode("latin-1"), v.decode("latin-1")]
                            for k, v in start.get("headers", [])
                        ]
                        await keys.complete(service, ident, status, headers, body)
                    else:
                        await keys.release(service, ident)
                await send(start)  # type: ignore[arg-type]
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            await send(message)

        try:
            await app(scope, replay_receive, capture)
        except Exception:
            with contextlib.suppress(Unavailable):
                await keys.release(service, ident)
            raise

    return middleware
