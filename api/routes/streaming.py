"""REST routes for hooks, triggers, the audit log and the change feed (SSE): thin adapters over
RekorService."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.params import Parameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from api.routes.core import written
from commands.principal import Principal
from commands.service import RekorService
from events.errors import ValidationError

Doc = msgspec.Meta


class Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base for request bodies."""


class TriggerCreate(Body):
    name: Annotated[str, Doc(description="What the trigger is for", examples=["Notify Slack"])]
    url: Annotated[str, Doc(description="http(s) URL that receives the signed POSTs")]
    events: Annotated[list[str], Doc(description='Any of "create", "update", "delete"')] = (
        msgspec.field(default_factory=lambda: ["create", "update", "delete"])
    )
    collection: Annotated[str | None, Doc(description="Only this collection (default: all)")] = None
    filter: Annotated[
        dict[str, Any] | None,
        Doc(
            description="Filter DSL on the record, e.g."
            ' {"field": "data.severity", "op": "in", "value": ["p0","p1"]}'
        ),
    ] = None
    include_hook_writes: Annotated[
        bool, Doc(description="Also fire for writes made by inbound hooks (off: loop-safe)")
    ] = False


class TriggerReplay(Body):
    from_seq: Annotated[int, Doc(description="First log position to send again")]
    to_seq: Annotated[int | None, Doc(description="Last log position (default: head)")] = None


class HookCreate(Body):
    name: str
    collection: Annotated[str, Doc(description="Collection the payloads are upserted into")]
    external_id_path: Annotated[
        str | None, Doc(description="JSON pointer to the payload's id, e.g. /incident/id")
    ] = None
    external_source: Annotated[
        str | None, Doc(description="external_source given to the records, e.g. pagerduty")
    ] = None
    secret: Annotated[
        str | None,
        Doc(description="If set, payloads must be signed per Standard Webhooks with it"),
    ] = None


def _types(type: str | None) -> list[str] | None:
    if not type:
        return None
    return [t.strip() for t in type.split(",") if t.strip()]


class TriggerController(Controller):
    path = "/v1/{ws:str}/triggers"
    tags = ["triggers"]

    @post("/", operation_id="createTrigger", status_code=201)
    async def create_trigger(
        self, service: RekorService, principal: Principal, ws: str, data: TriggerCreate
    ) -> Response[dict[str, Any]]:
        """Create an outbound webhook. Each matching record change is POSTed as
        `{id, type, workspace, collection, seq, record, previous?}` with Standard Webhooks
        headers (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC>`),
        retried with backoff, then dead-lettered. The `secret` is returned only here."""
        result = await service.create_trigger(
            principal,
            ws,
            name=data.name,
            url=data.url,
            events=data.events,
            collection=data.collection,
            filter=data.filter,
            include_hook_writes=data.include_hook_writes,
        )
        return written(result)

    @get("/", operation_id="listTriggers")
    async def list_triggers(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """List triggers (without secrets)."""
        return await service.list_triggers(principal, ws, limit, cursor)

    @get("/{trigger_id:str}", operation_id="getTrigger")
    async def get_trigger(
        self, service: RekorService, principal: Principal, ws: str, trigger_id: str
    ) -> dict[str, Any]:
        """Get a trigger with its delivery counts by status."""
        return await service.get_trigger(principal, ws, trigger_id)

    @delete("/{trigger_id:str}", operation_id="deleteTrigger", status_code=200)
    async def delete_trigger(
        self, service: RekorService, principal: Principal, ws: str, trigger_id: str
    ) -> dict[str, Any]:
        """Delete a trigger; pending deliveries are cancelled."""
        return (await service.delete_trigger(principal, ws, trigger_id)).body

    @get("/{trigger_id:str}/deliveries", operation_id="listTriggerDeliveries")
    async def list_deliveries(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        trigger_id: str,
        status: str | None = Parameter(
            default=None, description="pending, delivered, dead or cancelled"
        ),
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """The delivery log, newest first: status, attempts, last status code and error,
        latency."""
        return await service.list_deliveries(
            principal, ws, trigger_id, status=status, limit=limit, cursor=cursor
        )

    @post("/{trigger_id:str}/redeliver", operation_id="redeliverTrigger", status_code=200)
    async def redeliver_all(
        self, service: RekorService, principal: Principal, ws: str, trigger_id: str
    ) -> dict[str, Any]:
        """Send every dead letter of the trigger again, with a fresh retry budget."""
        return await service.redeliver(principal, ws, trigger_id)

    @post(
        "/{trigger_id:str}/deliveries/{delivery_id:str}/redeliver",
        operation_id="redeliverDelivery",
        status_code=200,
    )
    async def redeliver_one(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        trigger_id: str,
        delivery_id: str,
    ) -> dict[str, Any]:
        """Send one dead letter again."""
        return await service.redeliver(principal, ws, trigger_id, delivery_id)

    @post("/{trigger_id:str}/replay", operation_id="replayTrigger", status_code=202)
    async def replay(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        trigger_id: str,
        data: TriggerReplay,
    ) -> dict[str, Any]:
        """Queue the trigger's matching events between `from_seq` and `to_seq` for delivery
        again (new deliveries marked `replay`)."""
        return await service.replay_trigger(principal, ws, trigger_id, data.from_seq, data.to_seq)


class HookController(Controller):
    path = "/v1/{ws:str}/hooks"
    tags = ["hooks"]

    @post("/", operation_id="createHook", status_code=201)
    async def create_hook(
        self, service: RekorService, principal: Principal, ws: str, data: HookCreate
    ) -> Response[dict[str, Any]]:
        """Create an inbound webhook. POST JSON to its `ingest_url` (no API key) and it becomes
        a record upsert in `collection`, keyed by `external_id_path`."""
        result = await service.create_hook(
            principal,
            ws,
            name=data.name,
            collection=data.collection,
            external_id_path=data.external_id_path,
            external_source=data.external_source,
            secret=data.secret,
        )
        return written(result)

    @get("/", operation_id="listHooks")
    async def list_hooks(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """List hooks."""
        return await service.list_hooks(principal, ws, limit, cursor)

    @get("/{hook_id:str}", operation_id="getHook")
    async def get_hook(
        self, service: RekorService, principal: Principal, ws: str, hook_id: str
    ) -> dict[str, Any]:
        """Get a hook with its receipt counts by status."""
        return await service.get_hook(principal, ws, hook_id)

    @delete("/{hook_id:str}", operation_id="deleteHook", status_code=200)
    async def delete_hook(
        self, service: RekorService, principal: Principal, ws: str, hook_id: str
    ) -> dict[str, Any]:
        """Delete a hook; its ingest URL stops accepting payloads."""
        return (await service.delete_hook(principal, ws, hook_id)).body

    @get("/{hook_id:str}/receipts", operation_id="listHookReceipts")
    async def receipts(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        hook_id: str,
        status: str | None = Parameter(
            default=None, description="received, applied, failed or rejected"
        ),
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Receipts of the hook, newest first, each with its outcome."""
        return await service.list_hook_receipts(
            principal, ws, hook_id, status=status, limit=limit, cursor=cursor
        )

    @post(
        "/{hook_id:str}/ingest",
        operation_id="ingestHookPayload",
        status_code=202,
        security=[{}],
    )
    async def ingest(
        self, service: RekorService, ws: str, hook_id: str, request: Request[Any, Any, Any]
    ) -> dict[str, Any]:
        """Deliver a payload to a hook. No API key: the hook id is the credential (and, if the
        hook has a secret, a Standard Webhooks signature). The payload is durable in the log
        when this answers 202 `{receipt_id}`; it is applied right after. Bad signature 401,
        too large 413, not JSON 400 - each recorded as a rejected receipt."""
        body = await request.body()
        return await service.ingest_hook_payload(ws, hook_id, body, request.headers)


class EventController(Controller):
    path = "/v1/{ws:str}/events"
    tags = ["events"]

    @get("/", operation_id="listEvents")
    async def list_events(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        after_seq: int | None = Parameter(default=None, description="Only events after this"),
        type: str | None = Parameter(
            default=None, description="Event type(s), comma-separated, e.g. record.created"
        ),
        collection: str | None = None,
        record_id: str | None = None,
        limit: int | None = Parameter(default=None, description="1-1000, default 100"),
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """The audit log: every event of the workspace in seq order (who, through which
        interface, what), filtered by type, collection or record. Page with `next_cursor`."""
        return await service.list_events(
            principal,
            ws,
            after_seq=after_seq,
            types=_types(type),
            collection=collection,
            record_id=record_id,
            limit=limit,
            cursor=cursor,
        )

    @get("/stream", operation_id="streamEvents")
    async def stream(
        self,
        service: RekorService,
        principal: Principal,
        request: Request[Any, Any, Any],
        ws: str,
        after_seq: int | None = Parameter(default=None, description="Start after this seq"),
        type: str | None = None,
        collection: str | None = None,
    ) -> ServerSentEvent:
        """The change feed as Server-Sent Events: `id:` is the seq, `event:` the type, `data:`
        the event JSON. Reconnect with `Last-Event-ID` (or `after_seq`) to resume with no gap.
        A comment line is sent every 15 s while idle."""
        last = request.headers.get("last-event-id")
        start = after_seq or 0
        if last:
            try:
                start = int(last)
            except ValueError:
                raise ValidationError(
                    "Last-Event-ID must be the seq of the last event received",
                    [{"path": "Last-Event-ID", "message": f"got {last!r}"}],
                ) from None
        feed = await service.follow_events(
            principal, ws, after_seq=start, types=_types(type), collection=collection
        )

        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            yield ServerSentEventMessage(data=None, comment="rekor change feed", retry=1000)
            async for event in feed:
                if event is None:
                    yield ServerSentEventMessage(data=None, comment="keep-alive")
                    continue
                yield ServerSentEventMessage(
                    id=event["seq"],
                    event=event["type"],
                    data=msgspec.json.encode(event).decode(),
                )

        return ServerSentEvent(messages(), headers={"cache-control": "no-cache"})
