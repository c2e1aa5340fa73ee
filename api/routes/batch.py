"""REST route for atomic batches: a thin adapter over RekorService.batch."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, post

from commands.principal import Principal
from commands.service import RekorService


class BatchBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    operations: Annotated[
        list[Any],
        msgspec.Meta(
            description="1-100 operations, each an object with `type` (upsert_collection,"
            " delete_collection, upsert_record, patch_record, delete_record,"
            " upsert_relationship, delete_relationship) and the fields of the matching REST"
            " body; `ref` on an upsert names its result for later operations.",
            examples=[
                [
                    {
                        "type": "upsert_record",
                        "collection": "orders",
                        "external_id": "ord_1",
                        "data": {"total": 42},
                    },
                    {
                        "type": "upsert_record",
                        "collection": "line_items",
                        "external_id": "li_1",
                        "data": {"sku": "A-1"},
                    },
                    {
                        "type": "upsert_relationship",
                        "rel_type": "contains",
                        "source_collection": "orders",
                        "source_id": "ord_1",
                        "target_collection": "line_items",
                        "target_id": "li_1",
                    },
                ]
            ],
        ),
    ]


class BatchController(Controller):
    path = "/v1/{ws:str}/batch"
    tags = ["batch"]

    @post("/", operation_id="batch", status_code=200)
    async def batch(
        self, service: RekorService, principal: Principal, ws: str, data: BatchBody
    ) -> dict[str, Any]:
        """Run up to 100 operations atomically: all succeed or nothing is written. Every
        operation is checked before any write; later operations can name records made by
        earlier ones by `ref` or by external id (in the flat relationship form, an id that is
        not a UUID is a `ref`, else an external id in that collection). The response lists
        each operation's `result` and `status` (201 created, 200 otherwise) and the log
        position `seq`; an error names the failing operation's index."""
        return await service.batch(principal, ws, data.operations)
