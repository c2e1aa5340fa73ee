"""The event-stream domain of the application service: outbound triggers, inbound hooks, the
audit log and the change feed. `StreamingMixin` is one of RekorService's bases.

Config changes (trigger/hook created or deleted) and hook payloads are events in the log. The
delivery log of triggers is operational state in `trigger_deliveries` (see
projections/streaming.py for why).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgspec
import psycopg
import uuid_utils

from commands.handlers import Context, emit, handle, route
from commands.principal import Principal
from commands.types import Command, CommandResult, UpsertRecord
from commands.validation import check_limit, check_slug, check_workspace_id
from events.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    RekorError,
    Unauthorized,
    ValidationError,
)
from events.store import WorkspaceTx, read_workspace
from events.streaming import (
    HookCreated,
    HookDeleted,
    HookPayloadApplied,
    HookPayloadFailed,
    HookPayloadReceived,
    HookPayloadRejected,
    TriggerCreated,
    TriggerDeleted,
)
from projections import reads
from projections.streaming import (
    delivery_json,
    fetch_all,
    fetch_one,
    find_hook,
    find_trigger,
    get_secret,
    hook_json,
    receipt_json,
    trigger_json,
)
from stream import egress, filters, signing
from stream.config import StreamConfig

TRIGGER_EVENTS = {
    "create": "record.created",
    "update": "record.updated",
    "delete": "record.deleted",
}
RECORD_EVENT_TYPES = set(TRIGGER_EVENTS.values())
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
REPLAY_MAX_EVENTS = 100_000


def _limit(limit: Any, default: int = DEFAULT_LIMIT) -> int:
    return check_limit(limit, default, MAX_LIMIT)


def _name(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= 200:
        raise ValidationError("name must be a string of 1-200 characters", [{"path": "$.name"}])
    return value


def _seq(value: Any, path: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(
            f"{path.removeprefix('$.')} must be an integer >= {minimum}",
            [{"path": path, "message": f"got {value!r}"}],
        )
    return value


# -- commands and handlers --------------------------------------------------------------------


class CreateTrigger(Command):
    id: str
    name: str
    url: str
    events: list[str]
    secret: str
    collection: str | None = None
    filter: dict[str, Any] | None = None
    include_hook_writes: bool = False


class DeleteTrigger(Command):
    id: str


class CreateHook(Command):
    id: str
    name: str
    collection: str
    external_id_path: str | None = None
    external_source: str | None = None
    secret: str | None = None


class DeleteHook(Command):
    id: str


async def _require_collection(tx: WorkspaceTx, name: str, path: str) -> None:
    if await reads.find_collection(tx.conn, tx.workspace_id, name) is None:
        raise NotFound(
            f"collection '{name}' not found in workspace '{tx.workspace_id}': create the"
            " collection first, or fix the name",
            [{"path": path, "message": "no such collection"}],
        )


async def _store_secret(tx: WorkspaceTx, owner_id: str, secret: str) -> None:
    await tx.conn.execute(
        "INSERT INTO stream_secrets (owner_id, workspace_id, secret) VALUES (%s,%s,%s)"
        " ON CONFLICT (owner_id) DO UPDATE SET secret = excluded.secret",
        (owner_id, tx.workspace_id, secret),
    )


async def create_trigger(cmd: CreateTrigger, tx: WorkspaceTx, ctx: Context) -> CommandResult:
    if cmd.collection is not None:
        await _require_collection(tx, cmd.collection, "$.collection")
    event = TriggerCreated(
        id=cmd.id,
        name=cmd.name,
        url=cmd.url,
        events=cmd.events,
        collection=cmd.collection,
        filter=cmd.filter,
        include_hook_writes=cmd.include_hook_writes,
    )
    await emit(tx, ctx, f"trigger:{cmd.id}", event, 1)
    await _store_secret(tx, cmd.id, cmd.secret)
    row = await find_trigger(tx.conn, tx.workspace_id, cmd.id)
    assert row is not None
    return CommandResult(body={**trigger_json(row), "secret": cmd.secret}, created=True)


async def delete_trigger(cmd: DeleteTrigger, tx: WorkspaceTx, ctx: Context) -> CommandResult:
    row = await find_trigger(tx.conn, tx.workspace_id, cmd.id)
    if row is None:
        raise _trigger_not_found(tx.workspace_id, cmd.id)
    stored = await emit(
        tx, ctx, f"trigger:{cmd.id}", TriggerDeleted(id=cmd.id, collection=row["collection"]), 2
    )
    # Pending deliveries of a deleted trigger will never be attempted.
    await tx.conn.execute(
        "UPDATE trigger_deliveries SET status = 'cancelled' WHERE trigger_id = %s"
        " AND status = 'pending'",
        (cmd.id,),
    )
    return CommandResult(body={"id": cmd.id, "deleted": True, "seq": stored.seq})


async def create_hook(cmd: CreateHook, tx: WorkspaceTx, ctx: Context) -> CommandResult:
    await _require_collection(tx, cmd.collection, "$.collection")
    event = HookCreated(
        id=cmd.id,
        name=cmd.name,
        collection=cmd.collection,
        external_id_path=cmd.external_id_path,
        external_source=cmd.external_source,
        signed=cmd.secret is not None,
    )
    await emit(tx, ctx, f"hook:{cmd.id}", event, 1)
    if cmd.secret is not None:
        await _store_secret(tx, cmd.id, cmd.secret)
    row = await find_hook(tx.conn, tx.workspace_id, cmd.id)
    assert row is not None
    return CommandResult(body=hook_json(row), created=True)


async def delete_hook(cmd: DeleteHook, tx: WorkspaceTx, ctx: Context) -> CommandResult:
    row = await find_hook(tx.conn, tx.workspace_id, cmd.id)
    if row is None:
        raise _hook_not_found(tx.workspace_id, cmd.id)
    stored = await emit(
        tx, ctx, f"hook:{cmd.id}", HookDeleted(id=cmd.id, collection=row["collection"]), 2
    )
    # Later payloads of this transaction's group must not see the memoised hook.
    tx.memo.pop(("stream.hook", cmd.id), None)
    return CommandResult(body={"id": cmd.id, "deleted": True, "seq": stored.seq})


route(CreateTrigger, create_trigger)
route(DeleteTrigger, delete_trigger)
route(CreateHook, create_hook)
route(DeleteHook, delete_hook)


def _trigger_not_found(ws: str, trigger_id: str) -> NotFound:
    return NotFound(
        f"trigger '{trigger_id}' not found in workspace '{ws}'",
        [{"path": "trigger_id", "message": "list triggers to see the ids"}],
    )


def _hook_not_found(ws: str, hook_id: str) -> NotFound:
    return NotFound(
        f"hook '{hook_id}' not found in workspace '{ws}'",
        [{"path": "hook_id", "message": "list hooks to see the ids"}],
    )


# -- trigger matching and delivery bodies (used by the delivery consumer and replay) ----------


def record_from_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The record as a record event (StoredEvent.to_json shape) leaves it."""
    data = event["data"]
    record = {
        "id": data["id"],
        "collection": data["collection"],
        "external_id": data.get("external_id"),
        "external_source": data.get("external_source"),
        "data": data.get("data"),
        "version": data.get("version"),
        "updated_at": event["recorded_at"],
        "seq": event["seq"],
    }
    if event["type"] == "record.deleted":
        record["deleted"] = True
    return record


def trigger_wants(trigger: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Does this record event (StoredEvent.to_json shape) concern the trigger, before its
    filter? Checks type, collection and hook-write loop prevention."""
    if event["type"] not in {TRIGGER_EVENTS[e] for e in trigger["events"]}:
        return False
    collection = event["data"].get("collection")
    if trigger["collection"] is not None and trigger["collection"] != collection:
        return False
    meta = event.get("metadata") or {}
    return not (meta.get("interface") == "hook" and not trigger["include_hook_writes"])


def trigger_matches(
    trigger: Mapping[str, Any], event: Mapping[str, Any], previous: dict[str, Any] | None
) -> bool:
    """`trigger_wants`, then the filter: on the new state, or on the last state for a delete."""
    if not trigger_wants(trigger, event):
        return False
    if trigger["filter"] is None:
        return True
    subject = previous if event["type"] == "record.deleted" and previous else None
    return filters.matches(trigger["filter"], subject or record_from_event(event))


async def previous_record(
    conn: psycopg.AsyncConnection, event: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The record as it was before this event (None for a creation)."""
    if event["stream_version"] <= 1:
        return None
    row = await fetch_one(
        conn,
        "SELECT seq, type, data, recorded_at, metadata FROM events WHERE workspace_id = %s"
        " AND stream = %s AND stream_version = %s",
        (event["workspace"], event["stream"], event["stream_version"] - 1),
    )
    if row is None or row["type"] not in RECORD_EVENT_TYPES:
        return None
    data = dict(row["data"])
    data.pop("type", None)
    return record_from_event(
        {
            "type": row["type"],
            "data": data,
            "seq": row["seq"],
            "recorded_at": row["recorded_at"].isoformat(),
        }
    )


_BODY = msgspec.json.Encoder()


def delivery_body(event: Mapping[str, Any], previous: dict[str, Any] | None) -> bytes:
    """The JSON body POSTed to a trigger's URL."""
    body: dict[str, Any] = {
        "id": event["id"],
        "type": event["type"],
        "workspace": event["workspace"],
        "collection": event["data"].get("collection"),
        "seq": event["seq"],
        "recorded_at": event["recorded_at"],
        "record": record_from_event(event),
    }
    if previous is not None:
        body["previous"] = previous
    return _BODY.encode(body)


async def insert_deliveries(
    conn: psycopg.AsyncConnection,
    rows: list[tuple[str, str, Mapping[str, Any], bytes]],
    *,
    replay: bool = False,
) -> int:
    """Queue deliveries `(workspace, trigger_id, event, body)`; a live event is queued once per
    trigger however often JetStream redelivers it."""
    if not rows:
        return 0
    conflict = "" if replay else " ON CONFLICT (trigger_id, event_id) WHERE NOT replay DO NOTHING"
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO trigger_deliveries (id, workspace_id, trigger_id, event_id, seq, type,"
            " record_id, body, replay) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)" + conflict,
            [
                (
                    str(uuid_utils.uuid7()),
                    ws,
                    trigger_id,
                    event["id"],
                    event["seq"],
                    event["type"],
                    event["data"]["id"],
                    body.decode(),
                    replay,
                )
                for ws, trigger_id, event, body in rows
            ],
        )
    return len(rows)


# -- hook payloads ----------------------------------------------------------------------------


def _pointer(payload: Any, pointer: str) -> Any:
    """Resolve an RFC 6901 JSON pointer; raises KeyError when it does not exist."""
    if pointer == "":
        return payload
    node = payload
    for raw in pointer[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(pointer)
    return node


def hook_principal(hook_id: str) -> Principal:
    """The caller a hook's writes are attributed to: interface `hook` (loop prevention)."""
    return Principal(
        key_id=None, name=f"hook:{hook_id}", permissions=frozenset({"write"}), interface="hook"
    )


def _hook_upsert(hook: Mapping[str, Any], payload: Any) -> UpsertRecord:
    """The record upsert a payload maps to; raises ValidationError if it cannot."""
    if not isinstance(payload, dict):
        raise ValidationError(
            "the payload must be a JSON object to become a record", [{"path": "$"}]
        )
    external_id = None
    if hook["external_id_path"] is not None:
        try:
            value = _pointer(payload, hook["external_id_path"])
        except KeyError:
            raise ValidationError(
                f"the payload has nothing at external_id_path '{hook['external_id_path']}'",
                [{"path": hook["external_id_path"], "message": "missing"}],
            ) from None
        if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
            raise ValidationError(
                "the value at external_id_path must be a non-empty string or a number",
                [{"path": hook["external_id_path"], "message": f"got {value!r}"}],
            )
        external_id = str(value)
    return UpsertRecord(
        collection=hook["collection"],
        data=payload,
        external_id=external_id,
        external_source=hook["external_source"] if external_id is not None else None,
    )


async def _apply_receipts(tx: WorkspaceTx, limit: int) -> int:
    rows = await fetch_all(
        tx.conn,
        "SELECT r.receipt_id, r.hook_id, e.data AS event, h.collection, h.external_id_path,"
        " h.external_source, h.id AS live_hook FROM hook_receipts r"
        " JOIN events e ON e.workspace_id = r.workspace_id AND e.seq = r.received_seq"
        " LEFT JOIN hooks h ON h.workspace_id = r.workspace_id AND h.id = r.hook_id"
        " WHERE r.workspace_id = %s AND r.status = 'received' ORDER BY r.received_seq LIMIT %s",
        (tx.workspace_id, limit),
    )
    for row in rows:
        event = row["event"]
        receipt, hook_id = row["receipt_id"], row["hook_id"]
        collection = event["collection"]
        ctx = Context(hook_principal(hook_id), hook_id=hook_id, receipt_id=receipt)
        stream = f"hook_receipt:{receipt}"
        try:
            if row["live_hook"] is None:
                raise NotFound(f"hook '{hook_id}' was deleted before this payload was applied")
            result = await handle(_hook_upsert(row, event["payload"]), tx, ctx)
        except RekorError as exc:
            details = exc.details if isinstance(exc.details, list) else [exc.details]
            failed = HookPayloadFailed(
                hook_id=hook_id,
                receipt_id=receipt,
                collection=collection,
                code=exc.code,
                message=exc.message,
                errors=details,
            )
            await emit(tx, ctx, stream, failed, 2)
            continue
        applied = HookPayloadApplied(
            hook_id=hook_id,
            receipt_id=receipt,
            collection=collection,
            record_id=result.body["id"],
            record_seq=result.body.get("seq"),
        )
        await emit(tx, ctx, stream, applied, 2)
    return len(rows)


# -- the service mixin ------------------------------------------------------------------------


class _Rejected(msgspec.Struct):
    error: RekorError
    receipt_id: str


class StreamingMixin:
    """Hooks, triggers, the audit log and the change feed (a base of RekorService)."""

    pool: Any
    extensions: dict[str, Any]
    execute: Any
    run_in_workspace: Any
    _require_workspace: Any

    @property
    def stream_config(self) -> StreamConfig:
        """Tunables; set by the stream components' starter, else read from the environment."""
        config = self.__dict__.get("_stream_config")
        if config is None:
            config = StreamConfig.from_env()
            self.__dict__["_stream_config"] = config
        return config

    @stream_config.setter
    def stream_config(self, value: StreamConfig) -> None:
        self.__dict__["_stream_config"] = value

    # -- triggers -----------------------------------------------------------------------------

    async def create_trigger(
        self,
        principal: Principal,
        workspace_id: str,
        *,
        name: Any,
        url: Any,
        events: Any,
        collection: Any = None,
        filter: Any = None,
        include_hook_writes: Any = False,
    ) -> CommandResult:
        """Create an outbound trigger: matching record changes are POSTed to `url`, signed
        with the returned `secret` (shown only now). The URL must be http(s) and resolve to a
        public address (or one allowed by REKOR_EGRESS_ALLOW)."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "write")
        name = _name(name)
        if not isinstance(url, str) or not 1 <= len(url) <= 2048:
            raise ValidationError("url must be a string of 1-2048 characters", [{"path": "$.url"}])
        if (
            not isinstance(events, list)
            or not events
            or any(not isinstance(e, str) or e not in TRIGGER_EVENTS for e in events)
            or len(set(events)) != len(events)
        ):
            raise ValidationError(
                'events must be a non-empty list of distinct values from "create", "update",'
                ' "delete", e.g. ["create","update"]',
                [{"path": "$.events", "message": f"got {events!r}"}],
            )
        if collection is not None:
            check_slug(collection, "collection name", "$.collection")
        if filter is not None:
            filters.check_filter(filter)
        if not isinstance(include_hook_writes, bool):
            raise ValidationError(
                "include_hook_writes must be true or false", [{"path": "$.include_hook_writes"}]
            )
        await self._check_egress(url)
        cmd = CreateTrigger(
            id="trg_" + secrets.token_urlsafe(12),
            name=name,
            url=url,
            events=events,
            secret=signing.new_secret(),
            collection=collection,
            filter=filter,
            include_hook_writes=include_hook_writes,
        )
        return await self.execute(principal, ws, cmd)

    async def _check_egress(self, url: str) -> None:
        try:
            allow = egress.parse_allow(self.stream_config.egress_allow)
        except ValueError as exc:
            raise ValidationError(f"REKOR_EGRESS_ALLOW is not a CIDR list: {exc}") from exc
        try:
            await egress.resolve_checked(url, allow)
        except egress.EgressRefused as exc:
            raise ValidationError(
                f"url is not allowed: {exc}", [{"path": "$.url", "message": str(exc)}]
            ) from exc

    async def list_triggers(
        self, principal: Principal, workspace_id: str, limit: Any = None, cursor: Any = None
    ) -> dict[str, Any]:
        """Triggers of a workspace in creation order (secrets are never listed)."""
        return await self._list_in_creation_order(
            principal, workspace_id, "triggers", trigger_json, limit, cursor
        )

    async def _list_in_creation_order(
        self,
        principal: Principal,
        workspace_id: str,
        table: str,
        to_json: Any,
        limit: Any,
        cursor: Any,
    ) -> dict[str, Any]:
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        limit = _limit(limit)
        after = reads.decode_cursor(cursor, table)["s"] if cursor else 0
        async with self.pool.connection() as conn:
            await self._require_workspace(conn, ws)
            rows = await fetch_all(
                conn,
                f"SELECT * FROM {table} WHERE workspace_id = %s AND created_seq > %s"
                " ORDER BY created_seq LIMIT %s",
                (ws, after, limit + 1),
            )
        return reads.keyset_page(rows, limit, table, "created_seq", to_json, name="s")

    async def get_trigger(
        self, principal: Principal, workspace_id: str, trigger_id: str
    ) -> dict[str, Any]:
        """One trigger with its delivery counts by status."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        async with self.pool.connection() as conn:
            row = await find_trigger(conn, ws, trigger_id)
            if row is None:
                await self._require_workspace(conn, ws)
                raise _trigger_not_found(ws, trigger_id)
            cur = await conn.execute(
                "SELECT status, count(*) FROM trigger_deliveries WHERE trigger_id = %s"
                " GROUP BY status",
                (trigger_id,),
            )
            counts = {status: n for status, n in await cur.fetchall()}
        return {**trigger_json(row), "deliveries": counts}

    async def delete_trigger(
        self, principal: Principal, workspace_id: str, trigger_id: str
    ) -> CommandResult:
        """Delete a trigger; its pending deliveries are cancelled, its log is kept."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "write")
        return await self.execute(principal, ws, DeleteTrigger(id=trigger_id))

    async def list_deliveries(
        self,
        principal: Principal,
        workspace_id: str,
        trigger_id: str,
        *,
        status: Any = None,
        limit: Any = None,
        cursor: Any = None,
    ) -> dict[str, Any]:
        """The trigger's delivery log, newest first: status (pending, delivered, dead,
        cancelled), attempts, last status code / error and latency of the last attempt."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        limit = _limit(limit)
        statuses = {"pending", "delivered", "dead", "cancelled"}
        if status is not None and status not in statuses:
            raise ValidationError(f"status must be one of {sorted(statuses)}", [{"path": "status"}])
        before = reads.decode_cursor(cursor, "deliveries")["n"] if cursor else 2**62
        async with self.pool.connection() as conn:
            if await find_trigger(conn, ws, trigger_id) is None:
                await self._require_workspace(conn, ws)
                raise _trigger_not_found(ws, trigger_id)
            rows = await fetch_all(
                conn,
                "SELECT * FROM trigger_deliveries WHERE workspace_id = %s AND trigger_id = %s"
                " AND n < %s AND (%s::text IS NULL OR status = %s) ORDER BY n DESC LIMIT %s",
                (ws, trigger_id, before, status, status, limit + 1),
            )
        return reads.keyset_page(rows, limit, "deliveries", "n", delivery_json, name="n")

    async def redeliver(
        self,
        principal: Principal,
        workspace_id: str,
        trigger_id: str,
        delivery_id: str | None = None,
    ) -> dict[str, Any]:
        """Send dead letters again (one, or all of the trigger's): they go back to pending
        with a fresh retry budget."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "write")
        async with self.pool.connection() as conn:
            if await find_trigger(conn, ws, trigger_id) is None:
                await self._require_workspace(conn, ws)
                raise _trigger_not_found(ws, trigger_id)
            if delivery_id is not None:
                row = await fetch_one(
                    conn,
                    "SELECT status FROM trigger_deliveries WHERE id = %s AND trigger_id = %s",
                    (delivery_id, trigger_id),
                )
                if row is None:
                    raise NotFound(f"delivery '{delivery_id}' not found for this trigger")
                if row["status"] != "dead":
                    raise Conflict(
                        f"delivery '{delivery_id}' is {row['status']}; only dead letters can be"
                        " redelivered (use replay to send delivered events again)"
                    )
            cur = await conn.execute(
                "UPDATE trigger_deliveries SET status = 'pending', attempts = 0,"
                " next_attempt_at = now() WHERE trigger_id = %s AND status = 'dead'"
                " AND (%s::text IS NULL OR id = %s)",
                (trigger_id, delivery_id, delivery_id),
            )
            count = cur.rowcount
        self._wake_delivery()
        return {"trigger_id": trigger_id, "redelivered": count}

    async def replay_trigger(
        self, principal: Principal, workspace_id: str, trigger_id: str, from_seq: Any, to_seq: Any
    ) -> dict[str, Any]:
        """Queue the trigger's matching events with `from_seq <= seq <= to_seq` (default: up to
        now) for delivery again, as new deliveries marked `replay`."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "write")
        start = _seq(from_seq, "$.from_seq", minimum=1)
        async with self.pool.connection() as conn:
            trigger = await find_trigger(conn, ws, trigger_id)
            if trigger is None:
                await self._require_workspace(conn, ws)
                raise _trigger_not_found(ws, trigger_id)
            head = (await reads.get_workspace(conn, ws))["head_seq"]
            end = head if to_seq is None else _seq(to_seq, "$.to_seq", minimum=start)
            end = min(end, head)
            if end - start + 1 > REPLAY_MAX_EVENTS:
                raise ValidationError(
                    f"replay at most {REPLAY_MAX_EVENTS} seqs per request; split the range",
                    [{"path": "$.to_seq"}],
                )
            queued = 0
            cursor = start - 1
            while cursor < end:
                batch = await read_workspace(
                    conn,
                    ws,
                    cursor,
                    1000,
                    types=sorted(RECORD_EVENT_TYPES),
                    collection=trigger["collection"],
                    up_to_seq=end,
                )
                if not batch:
                    break
                cursor = batch[-1].seq
                rows = []
                for stored in batch:
                    event = stored.to_json()
                    if not trigger_wants(trigger, event):
                        continue
                    previous = await previous_record(conn, event)
                    if trigger_matches(trigger, event, previous):
                        rows.append((ws, trigger_id, event, delivery_body(event, previous)))
                async with conn.transaction():
                    queued += await insert_deliveries(conn, rows, replay=True)
        self._wake_delivery()
        return {"trigger_id": trigger_id, "from_seq": start, "to_seq": end, "queued": queued}

    def _wake_delivery(self) -> None:
        worker = self.extensions.get("stream.triggers")
        if worker is not None:
            worker.wake()

    # -- hooks --------------------------------------------------------------------------------

    async def create_hook(
        self,
        principal: Principal,
        workspace_id: str,
        *,
        name: Any,
        collection: Any,
        external_id_path: Any = None,
        external_source: Any = None,
        secret: Any = None,
    ) -> CommandResult:
        """Create an inbound hook: JSON POSTed to its `ingest_url` (no API key; the id is
        unguessable) becomes a record upsert in `collection`, keyed by the value at
        `external_id_path` (a JSON pointer). With a `secret`, requests must carry a Standard
        Webhooks signature."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "write")
        name = _name(name)
        check_slug(collection, "collection name", "$.collection")
        if external_id_path is not None and (
            not isinstance(external_id_path, str)
            or not external_id_path.startswith("/")
            or len(external_id_path) > 500
        ):
            raise ValidationError(
                "external_id_path must be a JSON pointer such as /id or /incident/number",
                [{"path": "$.external_id_path", "message": f"got {external_id_path!r}"}],
            )
        if external_source is not None and (
            not isinstance(external_source, str) or not 1 <= len(external_source) <= 200
        ):
            raise ValidationError(
                "external_source must be a string of 1-200 characters",
                [{"path": "$.external_source"}],
            )
        if secret is not None and (not isinstance(secret, str) or not 16 <= len(secret) <= 500):
            raise ValidationError(
                "secret must be a string of 16-500 characters (a whsec_<base64> secret is"
                " recommended)",
                [{"path": "$.secret"}],
            )
        cmd = CreateHook(
            id="hk_" + secrets.token_urlsafe(18),
            name=name,
            collection=collection,
            external_id_path=external_id_path,
            external_source=external_source,
            secret=secret,
        )
        return await self.execute(principal, ws, cmd)

    async def list_hooks(
        self, principal: Principal, workspace_id: str, limit: Any = None, cursor: Any = None
    ) -> dict[str, Any]:
        """Hooks of a workspace in creation order."""
        return await self._list_in_creation_order(
            principal, workspace_id, "hooks", hook_json, limit, cursor
        )

    async def get_hook(
        self, principal: Principal, workspace_id: str, hook_id: str
    ) -> dict[str, Any]:
        """One hook with its receipt counts by status."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        async with self.pool.connection() as conn:
            row = await find_hook(conn, ws, hook_id)
            if row is None:
                await self._require_workspace(conn, ws)
                raise _hook_not_found(ws, hook_id)
            cur = await conn.execute(
                "SELECT status, count(*) FROM hook_receipts WHERE workspace_id = %s AND"
                " hook_id = %s GROUP BY status",
                (ws, hook_id),
            )
            counts = {status: n for status, n in await cur.fetchall()}
        return {**hook_json(row), "receipts": counts}

    async def delete_hook(
        self, principal: Principal, workspace_id: str, hook_id: str
    ) -> CommandResult:
        """Delete a hook: its ingest URL stops accepting payloads."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "write")
        return await self.execute(principal, ws, DeleteHook(id=hook_id))

    async def list_hook_receipts(
        self,
        principal: Principal,
        workspace_id: str,
        hook_id: str,
        *,
        status: Any = None,
        limit: Any = None,
        cursor: Any = None,
    ) -> dict[str, Any]:
        """The hook's receipts, newest first: received (accepted, not yet applied), applied
        (with the record id), failed (with the errors) or rejected (with the HTTP status)."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        limit = _limit(limit)
        statuses = {"received", "applied", "failed", "rejected"}
        if status is not None and status not in statuses:
            raise ValidationError(f"status must be one of {sorted(statuses)}", [{"path": "status"}])
        before = reads.decode_cursor(cursor, "receipts")["s"] if cursor else 2**62
        async with self.pool.connection() as conn:
            if await find_hook(conn, ws, hook_id) is None:
                await self._require_workspace(conn, ws)
                raise _hook_not_found(ws, hook_id)
            rows = await fetch_all(
                conn,
                "SELECT * FROM hook_receipts WHERE workspace_id = %s AND hook_id = %s"
                " AND received_seq < %s AND (%s::text IS NULL OR status = %s)"
                " ORDER BY received_seq DESC LIMIT %s",
                (ws, hook_id, before, status, status, limit + 1),
            )
        return reads.keyset_page(rows, limit, "receipts", "received_seq", receipt_json, name="s")

    async def ingest_hook_payload(
        self, workspace_id: str, hook_id: str, body: bytes, headers: Mapping[str, str]
    ) -> dict[str, Any]:
        """Accept an external payload for a hook (no API key: the hook id is the capability).
        The payload is committed to the log before this returns `{receipt_id}`; a consumer then
        applies it. A bad signature (401), an oversize body (413) or non-JSON (400) is refused
        and recorded as a `rejected` receipt."""
        ws = check_workspace_id(workspace_id)
        max_bytes = self.stream_config.hook_max_bytes
        receipt_id = str(uuid_utils.uuid7())

        async def work(tx: WorkspaceTx) -> dict[str, Any] | _Rejected:
            # Payloads of one hook arrive in bursts and share a group transaction: look the
            # hook (and its secret) up once per transaction, not once per payload (a round
            # trip each). delete_hook drops the memo; workspace events clear it.
            key = ("stream.hook", hook_id)
            hook = tx.memo.get(key)
            if hook is None:
                hook = await find_hook(tx.conn, ws, hook_id)
                if hook is None:
                    raise _hook_not_found(ws, hook_id)
                if hook["signed"]:
                    hook = {**hook, "secret": await get_secret(tx.conn, hook_id)}
                tx.memo[key] = hook
            ctx = Context(hook_principal(hook_id), hook_id=hook_id, receipt_id=receipt_id)
            checked = _check_payload(hook, body, headers, max_bytes)
            stream = f"hook_receipt:{receipt_id}"
            if isinstance(checked, RekorError):
                error = checked
                rejected = HookPayloadRejected(
                    hook_id=hook_id,
                    receipt_id=receipt_id,
                    collection=hook["collection"],
                    status=error.status,
                    code=error.code,
                    message=error.message,
                )
                await emit(tx, ctx, stream, rejected, 1)
                return _Rejected(error, receipt_id)
            received = HookPayloadReceived(
                hook_id=hook_id,
                receipt_id=receipt_id,
                collection=hook["collection"],
                payload=checked,
                content_length=len(body),
            )
            stored = await emit(tx, ctx, stream, received, 1)
            return {"receipt_id": receipt_id, "hook_id": hook_id, "seq": stored.seq}

        applier = self.extensions.get("stream.hooks")
        if applier is not None:
            applier.arriving()
        try:
            result = await self.run_in_workspace(ws, work)
        except BaseException:
            if applier is not None:
                applier.gone()
            raise
        if isinstance(result, _Rejected):
            if applier is not None:
                applier.gone()
            err = result.error
            details = err.details if isinstance(err.details, list) else [err.details]
            raise type(err)(err.message, [*details, {"receipt_id": result.receipt_id}])
        if applier is not None:
            applier.wake(ws)
        return result

    async def apply_hook_receipts(self, workspace_id: str, limit: int = 200) -> int:
        """Turn up to `limit` accepted payloads of a workspace into record upserts, in log order,
        each in the same transaction as its `hook.payload_applied|failed` event (so a payload
        is applied exactly once even across crashes). Returns how many were processed."""

        async def work(tx: WorkspaceTx) -> int:
            return await _apply_receipts(tx, limit)

        return int(await self.run_in_workspace(workspace_id, work))

    # -- audit log and change feed ------------------------------------------------------------

    async def list_events(
        self,
        principal: Principal,
        workspace_id: str,
        *,
        after_seq: Any = None,
        types: list[str] | None = None,
        collection: Any = None,
        record_id: Any = None,
        limit: Any = None,
        cursor: Any = None,
    ) -> dict[str, Any]:
        """The workspace's log (audit log) in seq order, filtered by type(s), collection or
        record. Resume with `meta.next_cursor` or `after_seq = meta.last_seq`."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        limit = _limit(limit, 100)
        after = _seq(after_seq, "after_seq") if after_seq is not None else 0
        if cursor:
            after = int(reads.decode_cursor(cursor, "events")["s"])
        streams = None
        if record_id is not None:
            from commands.validation import check_record_id

            streams = [f"record:{check_record_id(record_id, 'record_id')}"]
        if collection is not None:
            check_slug(collection, "collection name", "collection")
        async with self.pool.connection() as conn:
            await self._require_workspace(conn, ws)
            events = await read_workspace(
                conn,
                ws,
                after,
                limit,
                types=types or None,
                streams=streams,
                collection=collection,
            )
        data = [e.to_json() for e in events]
        last = events[-1].seq if events else after
        nxt = reads.encode_cursor({"k": "events", "s": last}) if len(events) == limit else None
        out = reads.page(data, limit, nxt)
        out["meta"]["last_seq"] = last
        return out

    async def follow_events(
        self,
        principal: Principal,
        workspace_id: str,
        *,
        after_seq: int = 0,
        types: list[str] | None = None,
        collection: str | None = None,
        heartbeat_s: float = 15.0,
    ) -> AsyncIterator[dict[str, Any] | None]:
        """The change feed: every event with seq > after_seq, then new ones as they commit,
        forever. Reads the log by seq (so a reconnect with the last seen seq has no gap);
        woken by NOTIFY, with a poll as fallback. Yields None as a heartbeat when idle."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "read")
        if collection is not None:
            check_slug(collection, "collection name", "collection")
        async with self.pool.connection() as conn:
            await self._require_workspace(conn, ws)
        return self._follow(ws, after_seq, types, collection, heartbeat_s)

    async def _follow(
        self,
        ws: str,
        after: int,
        types: list[str] | None,
        collection: str | None,
        heartbeat_s: float,
    ) -> AsyncIterator[dict[str, Any] | None]:
        notifier = self.extensions.get("stream.notifier")
        idle = 0.0
        while True:
            # Register interest before reading, so a commit between the read and the wait
            # still wakes us.
            waiter = notifier.waiter(ws) if notifier is not None else None
            async with self.pool.connection() as conn:
                head_cur = await conn.execute(
                    "SELECT head FROM workspaces WHERE workspace_id = %s", (ws,)
                )
                head_row = await head_cur.fetchone()
                events = await read_workspace(
                    conn, ws, after, 500, types=types or None, collection=collection
                )
            for stored in events:
                yield stored.to_json()
            if events:
                after = events[-1].seq
                idle = 0.0
                if len(events) == 500:
                    continue
            elif head_row is not None and (types or collection):
                # Filtered feeds still move forward past events they do not show.
                after = max(after, int(head_row[0]))
            timeout = 1.0 if notifier is None else 5.0
            try:
                if waiter is not None:
                    await asyncio.wait_for(waiter.wait(), timeout)
                else:
                    await asyncio.sleep(0.25)
            except TimeoutError:
                idle += timeout
            if idle >= heartbeat_s:
                idle = 0.0
                yield None


def _check_payload(
    hook: Mapping[str, Any],
    body: bytes,
    headers: Mapping[str, str],
    max_bytes: int,
) -> Any:
    """The decoded payload, or the RekorError to reject the request with."""
    if len(body) > max_bytes:
        return PayloadTooLarge(
            f"payload is {len(body)} bytes; a hook accepts at most {max_bytes}",
            [{"path": "$", "message": "send smaller payloads"}],
        )
    if hook["signed"]:
        secret = hook.get("secret")
        problem = (
            "the hook's secret is missing"
            if secret is None
            else signing.verify(
                secret,
                body,
                headers.get("webhook-id"),
                headers.get("webhook-timestamp"),
                headers.get("webhook-signature"),
            )
        )
        if problem is not None:
            return Unauthorized(
                f"signature check failed: {problem}. Sign per Standard Webhooks: webhook-id,"
                " webhook-timestamp, webhook-signature: v1,<base64 HMAC-SHA256 of"
                ' "id.timestamp.body">',
                [{"path": "webhook-signature", "message": problem}],
            )
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        return BadRequest(
            f"payload is not valid JSON: {exc}", [{"path": "$", "message": "send JSON"}]
        )
