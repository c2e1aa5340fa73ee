"""REST routes for attachments: files on records, moved directly to and from S3 with presigned
URLs. Thin adapters over RekorService's attachment methods."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, post

from commands.principal import Principal
from commands.service import RekorService

Doc = msgspec.Meta


class AttachmentUpload(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    filename: Annotated[
        str,
        Doc(
            description="Relative path; '/' separates folders (no '..', no leading '/',"
            " at most 1,024 bytes)",
            examples=["docs/runbook.md"],
        ),
    ]
    content_type: Annotated[str, Doc(description="Media type 'type/subtype'; signed into the URL")]
    size: Annotated[
        int | None,
        Doc(description="Exact size in bytes; when given it is signed into the URL too"),
    ] = None
    expires_in: Annotated[
        int | None, Doc(description="URL lifetime in seconds (default 900, at most 3600)")
    ] = None


class AttachmentComplete(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    filename: Annotated[str, Doc(description="The filename given when requesting the upload")]


class AttachmentController(Controller):
    path = "/v1/{ws:str}/collections/{collection:str}/records/{record_id:str}/attachments"
    tags = ["attachments"]

    @post("/", operation_id="createAttachmentUpload", status_code=200)
    async def create_upload(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        collection: str,
        record_id: str,
        data: AttachmentUpload,
    ) -> dict[str, Any]:
        """Get a presigned URL to upload a file to a record. Send `method` to `upload_url` with
        exactly `headers` and the file as the body, before `expires_at`; then call
        `.../attachments/complete`. Uploading an existing filename makes a new version."""
        return await service.create_upload(
            principal,
            ws,
            collection,
            record_id,
            filename=data.filename,
            content_type=data.content_type,
            size=data.size,
            expires_in=data.expires_in,
        )

    @post("/complete", operation_id="completeAttachmentUpload", status_code=201)
    async def complete_upload(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        collection: str,
        record_id: str,
        data: AttachmentComplete,
    ) -> dict[str, Any]:
        """Record an uploaded file as the attachment's next version (checks it exists in
        storage and is within the size limit; an oversize file is deleted and refused with
        PAYLOAD_TOO_LARGE). Returns filename, size, content_type, etag, version and seq."""
        return await service.complete_upload(
            principal, ws, collection, record_id, filename=data.filename
        )

    @get("/", operation_id="listAttachments")
    async def list_attachments(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        collection: str,
        record_id: str,
        prefix: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """List a record's attachments by filename, optionally under a folder (`prefix=docs/`),
        with size, content_type, etag, version and updated_at."""
        return await service.list_attachments(
            principal, ws, collection, record_id, prefix=prefix, limit=limit, cursor=cursor
        )

    @get("/url", operation_id="getAttachmentUrl")
    async def attachment_url(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        collection: str,
        record_id: str,
        filename: str,
        expires_in: int | None = None,
        version: int | None = None,
    ) -> dict[str, Any]:
        """Get a presigned GET URL to download an attachment (its current version, or an
        older stored `version`), valid for `expires_in` seconds (default 900, max 3600)."""
        return await service.attachment_url(
            principal,
            ws,
            collection,
            record_id,
            filename=filename,
            expires_in=expires_in,
            version=version,
        )

    @get("/history", operation_id="attachmentHistory")
    async def attachment_history(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        collection: str,
        record_id: str,
        filename: str,
    ) -> dict[str, Any]:
        """Every version (upload) and delete of one filename, oldest first: version, seq, at,
        actor, event, size, content_type, etag."""
        return await service.attachment_history(
            principal, ws, collection, record_id, filename=filename
        )

    @delete("/", operation_id="deleteAttachment", status_code=200)
    async def delete_attachment(
        self,
        service: RekorService,
        principal: Principal,
        ws: str,
        collection: str,
        record_id: str,
        filename: str,
    ) -> dict[str, Any]:
        """Delete an attachment with all its versions. It leaves listings at once; its files
        are removed from storage in the background (retried through storage outages)."""
        return await service.delete_attachment(
            principal, ws, collection, record_id, filename=filename
        )
