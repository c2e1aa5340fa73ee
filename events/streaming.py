"""Events of the event-stream domain: outbound triggers, inbound hooks and hook payloads.

Secrets (trigger signing keys, hook verification keys) are never in an event: the log is read
by everyone with `read` permission and published on NATS. They live in `stream_secrets`.
"""

from __future__ import annotations

from typing import Any

from events.types import Event

# -- outbound triggers ------------------------------------------------------------------------


class TriggerCreated(Event, tag="trigger.created"):
    id: str
    name: str
    url: str
    events: list[str]
    collection: str | None = None
    filter: dict[str, Any] | None = None
    include_hook_writes: bool = False


class TriggerDeleted(Event, tag="trigger.deleted"):
    id: str
    collection: str | None = None


# -- inbound hooks ----------------------------------------------------------------------------


class HookCreated(Event, tag="hook.created"):
    id: str
    name: str
    collection: str
    external_id_path: str | None = None
    external_source: str | None = None
    signed: bool = False


class HookDeleted(Event, tag="hook.deleted"):
    id: str
    collection: str | None = None


class HookPayloadReceived(Event, tag="hook.payload_received"):
    """An external system's payload, accepted (HTTP 202) and durable before it is applied."""

    hook_id: str
    receipt_id: str
    collection: str
    payload: Any
    content_length: int = 0


class HookPayloadApplied(Event, tag="hook.payload_applied"):
    """The payload became a record upsert (in the same transaction as the record's event)."""

    hook_id: str
    receipt_id: str
    collection: str
    record_id: str
    record_seq: int | None = None


class HookPayloadFailed(Event, tag="hook.payload_failed"):
    """The payload was accepted but could not become a record (e.g. schema errors)."""

    hook_id: str
    receipt_id: str
    collection: str
    code: str
    message: str
    errors: list[dict[str, Any]] = []


class HookPayloadRejected(Event, tag="hook.payload_rejected"):
    """The ingest request was refused (bad signature, too large, not JSON); nothing applied."""

    hook_id: str
    receipt_id: str
    collection: str
    status: int
    code: str
    message: str
