"""Standard Webhooks signatures (https://www.standardwebhooks.com): `webhook-id`,
`webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed
with the base64-decoded part of a `whsec_<base64>` secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

TOLERANCE_S = 300


def new_secret() -> str:
    """A fresh `whsec_` secret (24 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: base64 after `whsec_`; other strings are used as UTF-8."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except ValueError:
            pass
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value."""
    mac = hmac.new(secret_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def headers(secret: str, msg_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The three signature headers for one attempt."""
    ts = int(now if now is not None else time.time())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }


def verify(
    secret: str,
    body: bytes,
    msg_id: str | None,
    timestamp: str | None,
    signature: str | None,
    now: float | None = None,
) -> str | None:
    """None if the headers carry a valid signature of `body`, else the reason it is not."""
    if not msg_id or not timestamp or not signature:
        return "missing webhook-id, webhook-timestamp or webhook-signature header"
    try:
        ts = int(timestamp)
    except ValueError:
        return "webhook-timestamp is not an integer"
    if abs((now if now is not None else time.time()) - ts) > TOLERANCE_S:
        return f"webhook-timestamp is more than {TOLERANCE_S} s away from the server's clock"
    expected = sign(secret, msg_id, ts, body)
    for candidate in signature.split():
        if hmac.compare_digest(candidate, expected):
            return None
    return "no signature in webhook-signature matches the body"
