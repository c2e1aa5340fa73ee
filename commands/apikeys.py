"""API keys: `rk_` + 40 random characters, stored as SHA-256 (the keys are random and long, so
a fast hash is the right one), shown once, scoped to workspaces and permissions."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

import psycopg
import uuid_utils
from psycopg.rows import dict_row

from commands.principal import PERMISSIONS, Principal
from commands.validation import check_workspace_id
from events.errors import NotFound, Unauthorized, ValidationError
from events.migrations import register

register(
    "0003_api_keys",
    """
    CREATE TABLE IF NOT EXISTS api_keys (
        id uuid PRIMARY KEY,
        name text NOT NULL,
        prefix text NOT NULL,
        key_hash text NOT NULL UNIQUE,
        permissions text[] NOT NULL,
        workspaces text[] NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        revoked_at timestamptz NULL,
        last_used_at timestamptz NULL
    );
    """,
)

KEY_PREFIX = "rk_"


def hash_key(token: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(token.encode()).hexdigest()


def key_json(row: dict[str, Any]) -> dict[str, Any]:
    """Public shape of a key (never the secret)."""
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "prefix": row["prefix"],
        "permissions": list(row["permissions"]),
        "workspaces": list(row["workspaces"]) if row["workspaces"] is not None else ["*"],
        "created_at": row["created_at"].isoformat().replace("+00:00", "Z"),
        "revoked_at": row["revoked_at"].isoformat().replace("+00:00", "Z")
        if row["revoked_at"]
        else None,
    }


def check_key_spec(permissions: Any, workspaces: Any) -> tuple[list[str], list[str] | None]:
    """Validate requested permissions and workspace scope (`["*"]` or None = all)."""
    if not isinstance(permissions, list) or not permissions:
        raise ValidationError(
            f"permissions must be a non-empty list drawn from {list(PERMISSIONS)}",
            [{"path": "$.permissions"}],
        )
    bad = [p for p in permissions if p not in PERMISSIONS]
    if bad:
        raise ValidationError(
            f"unknown permission(s) {bad}; use {list(PERMISSIONS)}",
            [{"path": "$.permissions", "message": f"unknown: {bad}"}],
        )
    if workspaces is None or workspaces == ["*"]:
        return sorted(set(permissions)), None
    if not isinstance(workspaces, list) or not workspaces:
        raise ValidationError(
            'workspaces must be a non-empty list of workspace ids, or ["*"] for all',
            [{"path": "$.workspaces"}],
        )
    return sorted(set(permissions)), [check_workspace_id(w) for w in workspaces]


async def create_key(
    conn: psycopg.AsyncConnection,
    name: str,
    permissions: list[str],
    workspaces: list[str] | None,
) -> dict[str, Any]:
    """Create a key; the returned dict holds the secret `key`, which is never shown again."""
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ValidationError(
            "name must be a non-empty string (max 200 chars)", [{"path": "$.name"}]
        )
    token = KEY_PREFIX + secrets.token_urlsafe(30)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "INSERT INTO api_keys (id, name, prefix, key_hash, permissions, workspaces)"
            " VALUES (%s,%s,%s,%s,%s,%s) RETURNING *",
            (str(uuid_utils.uuid7()), name, token[:10], hash_key(token), permissions, workspaces),
        )
        row = await cur.fetchone()
    assert row is not None
    out = key_json(row)
    out["key"] = token
    return out


async def list_keys(conn: psycopg.AsyncConnection) -> dict[str, Any]:
    """Every key, newest first (revoked ones included, marked)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM api_keys ORDER BY id DESC")
        rows = await cur.fetchall()
    return {"data": [key_json(r) for r in rows], "meta": {"limit": len(rows), "next_cursor": None}}


async def revoke_key(conn: psycopg.AsyncConnection, key_id: str) -> dict[str, Any]:
    """Revoke a key; it stops working at once in this process and within the cache TTL in
    others."""
    try:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s"
                " RETURNING *",
                (key_id,),
            )
            row = await cur.fetchone()
    except psycopg.errors.InvalidTextRepresentation:
        row = None
    if row is None:
        raise NotFound(f"API key '{key_id}' not found")
    return key_json(row)


async def count_keys(conn: psycopg.AsyncConnection) -> int:
    """How many keys exist (revoked included)."""
    cur = await conn.execute("SELECT count(*) FROM api_keys")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


class KeyCache:
    """Authenticated keys cached for a few seconds: every request authenticates, and a key
    lookup per request would cost a database round trip. Revocation clears the entry here at
    once; other processes see it within `ttl` seconds."""

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._items: dict[str, tuple[float, Principal | None]] = {}

    def get(self, key_hash: str) -> tuple[bool, Principal | None]:
        hit = self._items.get(key_hash)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, key_hash: str, principal: Principal | None) -> None:
        if len(self._items) > 10_000:
            self._items.clear()
        self._items[key_hash] = (time.monotonic() + self.ttl, principal)

    def clear(self) -> None:
        self._items.clear()


async def authenticate(
    conn_factory: Any, cache: KeyCache, token: str | None, interface: str
) -> Principal:
    """Turn a bearer token into a Principal, or raise UNAUTHORIZED."""
    if not token:
        raise Unauthorized(
            "missing API key: send 'Authorization: Bearer rk_...'",
            [
                {
                    "message": "rekor serve prints the first admin key and writes it to"
                    " <data-dir>/admin.key"
                }
            ],
        )
    if not token.startswith(KEY_PREFIX) or len(token) > 200:
        raise Unauthorized("malformed API key: keys start with 'rk_'")
    digest = hash_key(token)
    found, principal = cache.get(digest)
    if not found:
        async with conn_factory() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT id::text AS id, name, permissions, workspaces FROM api_keys"
                " WHERE key_hash = %s AND revoked_at IS NULL",
                (digest,),
            )
            row = await cur.fetchone()
        principal = (
            Principal(
                key_id=row["id"],
                name=row["name"],
                permissions=frozenset(row["permissions"]),
                workspaces=tuple(row["workspaces"]) if row["workspaces"] is not None else None,
            )
            if row
            else None
        )
        cache.put(digest, principal)
    if principal is None:
        raise Unauthorized("invalid or revoked API key")
    if interface != principal.interface:
        principal = Principal(
            key_id=principal.key_id,
            name=principal.name,
            permissions=principal.permissions,
            workspaces=principal.workspaces,
            interface=interface,
        )
    return principal
