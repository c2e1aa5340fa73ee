"""Attachments: files on records, uploaded and downloaded directly with S3 presigned URLs.

Flow: `create_upload` signs a PUT URL for a fresh object key; the client PUTs the bytes to S3;
`complete_upload` finds that object (HEAD), checks its size and records `attachment.added`.
Deleting an attachment (or its record) records `attachment.deleted`; the objects are removed
afterwards by the storage cleanup consumer (commands/attachment_cleanup.py), which retries until
storage answers, so a storage outage never loses a delete.

Object keys are derived, never taken from the caller:

    ws/<workspace>/<collection>/<record id>/<sha256(filename)[:32]>/<head:012d>-<uuid7>

`head` is the workspace's log head when the URL was signed. It orders an upload against the
log: an object signed before an `attachment.deleted` (or `workspace.deleted`) at seq S has
head < S, so it belongs to the deleted generation and can never be completed afterwards; the
cleanup removes it.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import uuid_utils

from commands.handlers import RECORD_DELETE_HOOKS, Context, emit, route
from commands.principal import Principal
from commands.types import Command, CommandResult
from commands.validation import check_record_id, check_slug, check_workspace_id
from events.attachments import AttachmentAdded, AttachmentDeleted
from events.errors import NotFound, PayloadTooLarge, Unavailable, ValidationError
from events.migrations import register
from events.store import WorkspaceTx
from projections import attachments as views
from projections.reads import record_not_found

MAX_FILENAME_BYTES = 1024
DEFAULT_MAX_ATTACHMENT_BYTES = 100 * 1024 * 1024
DEFAULT_EXPIRES_IN = 15 * 60
MAX_EXPIRES_IN = 60 * 60
LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 1000

# RFC 6838 type/subtype tokens, optionally with `; name=value` parameters.
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_CONTENT_TYPE = re.compile(
    rf"^{_TOKEN}/{_TOKEN}(\s*;\s*{_TOKEN}=(?:{_TOKEN}|\"[^\"\\\x00-\x1f]*\"))*$"
)


# Bidirectional overrides and isolates make a name display differently from what it is
# ("txt.exe" shown as "exe.txt"); they count as control characters here.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


register(
    "0603_attachment_uploads",
    """
    -- Upload URLs handed out and not completed yet (operational state, not in the log): the
    -- storage cleanup removes what was never completed, a retention period after expiry.
    CREATE TABLE IF NOT EXISTS attachment_uploads (
        workspace_id text NOT NULL,
        key text NOT NULL,
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (workspace_id, key)
    );
    CREATE INDEX IF NOT EXISTS attachment_uploads_expiry_idx ON attachment_uploads (expires_at);
    """,
)

DEFAULT_UPLOAD_RETENTION = 24 * 60 * 60


def upload_retention_seconds() -> int:
    """How long after its URL expired an upload nobody completed is kept
    (`REKOR_UPLOAD_RETENTION_SECONDS`, default 24 hours). It can be completed during the first
    half of that time; the storage cleanup deletes it after all of it."""
    raw = os.environ.get("REKOR_UPLOAD_RETENTION_SECONDS")
    return max(int(raw), 2) if raw else DEFAULT_UPLOAD_RETENTION


def max_attachment_bytes() -> int:
    """The size limit for one attachment (`REKOR_MAX_ATTACHMENT_BYTES`, default 100 MiB)."""
    raw = os.environ.get("REKOR_MAX_ATTACHMENT_BYTES")
    return int(raw) if raw else DEFAULT_MAX_ATTACHMENT_BYTES


# -- input checks -----------------------------------------------------------------------------


def _bad_filename(value: Any, why: str) -> ValidationError:
    return ValidationError(
        f"filename {value!r} is not valid: {why}. Use a relative path such as"
        " 'docs/runbook.md' ('/' separates folders)",
        [{"path": "$.filename", "message": why}],
    )


def check_filename(value: Any) -> str:
    """A relative path of non-empty segments: no leading '/', no '.' or '..' segments, no
    backslashes or control characters, at most 1,024 bytes of UTF-8."""
    if not isinstance(value, str) or not value:
        raise _bad_filename(value, "it must be a non-empty string")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_FILENAME_BYTES:
        raise _bad_filename(value[:40] + "...", f"it is longer than {MAX_FILENAME_BYTES} bytes")
    if any(unicodedata.category(c) in ("Cc", "Cs") or c in _BIDI_CONTROLS for c in value):
        raise _bad_filename(value, "it contains control characters")
    if "\\" in value:
        raise _bad_filename(value, "it contains a backslash; use '/' between folders")
    if value.startswith("/"):
        raise _bad_filename(value, "it starts with '/'; filenames are relative")
    segments = value.split("/")
    if any(s == "" for s in segments):
        raise _bad_filename(value, "it has an empty segment ('//' or a trailing '/')")
    if any(s in (".", "..") for s in segments):
        raise _bad_filename(value, "it has a '.' or '..' segment")
    return value


def check_prefix(value: Any) -> str | None:
    """A listing prefix: like a filename's start (a trailing '/' is fine)."""
    if value is None or value == "":
        return None
    if (
        not isinstance(value, str)
        or len(value.encode("utf-8", "surrogatepass")) > MAX_FILENAME_BYTES
        or any(unicodedata.category(c) in ("Cc", "Cs") for c in value)
    ):
        raise ValidationError(
            "prefix must be a string of at most 1,024 bytes without control characters,"
            " e.g. 'docs/'",
            [{"path": "prefix", "message": "invalid prefix"}],
        )
    return value


def check_content_type(value: Any) -> str:
    """A media type `type/subtype` (parameters such as `; charset=utf-8` allowed)."""
    if not isinstance(value, str) or len(value) > 255 or not _CONTENT_TYPE.match(value.strip()):
        raise ValidationError(
            f"content_type {value!r} is not a media type: use 'type/subtype', e.g."
            " 'text/markdown', 'image/png' or 'application/octet-stream'",
            [{"path": "$.content_type", "message": "must match type/subtype"}],
        )
    return value.strip()


def _check_int(value: Any, name: str, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(
            f"{name} must be an integer from {low} to {high} ({what})",
            [{"path": f"$.{name}", "message": f"got {value!r}"}],
        )
    return value


def check_expires_in(value: Any) -> int:
    """URL lifetime in seconds: default 15 minutes, at most one hour."""
    if value is None:
        return DEFAULT_EXPIRES_IN
    return _check_int(value, "expires_in", 1, MAX_EXPIRES_IN, "seconds; default 900")


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the file is {size} bytes; attachments may be at most {limit} bytes",
        [{"path": "$.size", "message": f"limit is {limit} bytes"}],
    )


# -- object keys ------------------------------------------------------------------------------


def filename_hash(filename: str) -> str:
    """The filename's fixed-length, path-safe stand-in in keys and stream names."""
    return hashlib.sha256(filename.encode("utf-8")).hexdigest()[:32]


def stream_of(record_id: str, filename: str) -> str:
    """The attachment's event stream."""
    return f"attachment:{record_id}:{filename_hash(filename)}"


def workspace_prefix(workspace_id: str) -> str:
    """Where every object of a workspace lives."""
    return f"ws/{workspace_id}/"


def record_prefix(workspace_id: str, collection: str, record_id: str) -> str:
    """Where every object of a record lives."""
    return f"{workspace_prefix(workspace_id)}{collection}/{record_id}/"


def filename_prefix(workspace_id: str, collection: str, record_id: str, filename: str) -> str:
    """Where every uploaded version of one filename lives."""
    return f"{record_prefix(workspace_id, collection, record_id)}{filename_hash(filename)}/"


def new_object_key(
    workspace_id: str, collection: str, record_id: str, filename: str, head: int
) -> str:
    """A fresh key for one upload, stamped with the workspace head it was signed at."""
    prefix = filename_prefix(workspace_id, collection, record_id, filename)
    return f"{prefix}{head:012d}-{uuid_utils.uuid7()}"


def signed_at_head(key: str) -> int:
    """The workspace head stamped into a key by `new_object_key` (-1 if not one of ours)."""
    stamp = key.rsplit("/", 1)[-1].split("-", 1)[0]
    return int(stamp) if stamp.isdigit() else -1


# -- commands and handlers --------------------------------------------------------------------


class AddAttachment(Command):
    collection: str
    record_id: str
    filename: str
    key: str
    size: int
    content_type: str
    etag: str
    discarded_keys: list[str] = []


class DeleteAttachment(Command):
    collection: str
    record_id: str
    filename: str


class _StreamState:
    """What the log says about one attachment stream."""

    def __init__(self, rows: list[tuple[str, int, int, str | None]]) -> None:
        self.head = max((r[2] for r in rows), default=0)
        self.registered = {r[3]: r[2] for r in rows if r[0] == "attachment.added" and r[3]}
        self.deleted_at_seq = max((r[1] for r in rows if r[0] == "attachment.deleted"), default=0)

    def completable(self, key: str) -> bool:
        """Not yet recorded, and signed after the last delete of this filename."""
        stamp = signed_at_head(key)
        return key not in self.registered and stamp >= 0 and stamp >= self.deleted_at_seq


async def _stream_state(conn: Any, workspace_id: str, stream: str) -> _StreamState:
    cur = await conn.execute(
        "SELECT type, seq, stream_version, data->>'key' FROM events WHERE workspace_id = %s"
        " AND stream = %s ORDER BY stream_version",
        (workspace_id, stream),
    )
    return _StreamState(await cur.fetchall())


async def _live_record(conn: Any, workspace_id: str, collection: str, record_id: str) -> None:
    cur = await conn.execute(
        "SELECT collection FROM records WHERE workspace_id = %s AND id = %s",
        (workspace_id, record_id),
    )
    row = await cur.fetchone()
    if row is None or row[0] != collection:
        raise record_not_found(workspace_id, collection, record_id)


async def add_attachment(cmd: AddAttachment, tx: WorkspaceTx, ctx: Context) -> CommandResult:
    await _live_record(tx.conn, tx.workspace_id, cmd.collection, cmd.record_id)
    stream = stream_of(cmd.record_id, cmd.filename)
    state = await _stream_state(tx.conn, tx.workspace_id, stream)
    if cmd.key in state.registered:
        raise NotFound(
            f"no new upload of '{cmd.filename}' to complete: that upload is already version"
            f" {state.registered[cmd.key]}. Request a new upload URL to replace it",
            [{"path": "$.filename", "message": "already completed"}],
        )
    if not state.completable(cmd.key):
        raise NotFound(
            f"the upload of '{cmd.filename}' was signed before the attachment was deleted;"
            " request a new upload URL",
            [{"path": "$.filename", "message": "stale upload"}],
        )
    cur = await tx.conn.execute(
        "SELECT expires_at + make_interval(secs => %s) < now() FROM attachment_uploads"
        " WHERE workspace_id = %s AND key = %s",
        (upload_retention_seconds() / 2, tx.workspace_id, cmd.key),
    )
    late = await cur.fetchone()
    if late is not None and late[0]:
        raise NotFound(
            f"the upload of '{cmd.filename}' expired too long ago to be completed (uploads are"
            " kept for completion for half of REKOR_UPLOAD_RETENTION_SECONDS after their URL"
            " expires); request a new upload URL",
            [{"path": "$.filename", "message": "upload expired"}],
        )
    version = state.head + 1
    stored = await emit(
        tx,
        ctx,
        stream,
        AttachmentAdded(
            record_id=cmd.record_id,
            collection=cmd.collection,
            filename=cmd.filename,
            version=version,
            key=cmd.key,
            size=cmd.size,
            content_type=cmd.content_type,
            etag=cmd.etag,
            discarded_keys=cmd.discarded_keys,
        ),
        version,
    )
    # Completed, or superseded (the cleanup deletes those objects): no longer outstanding.
    await tx.conn.execute(
        "DELETE FROM attachment_uploads WHERE workspace_id = %s AND key = ANY(%s)",
        (tx.workspace_id, [cmd.key, *cmd.discarded_keys]),
    )
    at = stored.recorded_at.isoformat().replace("+00:00", "Z")
    return CommandResult(
        body={
            "filename": cmd.filename,
            "size": cmd.size,
            "content_type": cmd.content_type,
            "etag": cmd.etag,
            "version": version,
            "collection": cmd.collection,
            "record_id": cmd.record_id,
            "updated_at": at,
            "seq": stored.seq,
        },
        created=True,
    )


async def _delete_one(
    tx: WorkspaceTx, ctx: Context, row: dict[str, Any], reason: str
) -> CommandResult:
    keys = await views.version_keys(tx.conn, tx.workspace_id, row["record_id"], row["filename"])
    state = await _stream_state(tx.conn, tx.workspace_id, row["stream"])
    version = state.head + 1
    stored = await emit(
        tx,
        ctx,
        row["stream"],
        AttachmentDeleted(
            record_id=row["record_id"],
            collection=row["collection"],
            filename=row["filename"],
            version=version,
            keys=keys,
            reason=reason,
        ),
        version,
    )
    return CommandResult(
        body={
            "filename": row["filename"],
            "deleted": True,
            "version": version,
            "seq": stored.seq,
        }
    )


async def delete_attachment(cmd: DeleteAttachment, tx: WorkspaceTx, ctx: Context) -> CommandResult:
    await _live_record(tx.conn, tx.workspace_id, cmd.collection, cmd.record_id)
    row = await views.find_attachment(tx.conn, tx.workspace_id, cmd.record_id, cmd.filename)
    if row is None:
        raise _no_attachment(cmd.filename, cmd.record_id)
    return await _delete_one(tx, ctx, row, "deleted")


async def _on_record_delete(tx: WorkspaceTx, ctx: Context, record: dict[str, Any]) -> None:
    # A record's attachments go with it, as events of their own, so listings, the audit log
    # and the storage cleanup all see each one end.
    for row in await views.record_attachments(tx.conn, tx.workspace_id, str(record["id"])):
        await _delete_one(tx, ctx, row, "record_deleted")


route(AddAttachment, add_attachment)
route(DeleteAttachment, delete_attachment)
RECORD_DELETE_HOOKS.append(_on_record_delete)


def _no_attachment(filename: str, record_id: str) -> NotFound:
    return NotFound(
        f"record '{record_id}' has no attachment '{filename}'; list its attachments to see the"
        " filenames",
        [{"path": "filename", "message": "no such attachment"}],
    )


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


# -- the service mixin ------------------------------------------------------------------------


class AttachmentsMixin:
    """RekorService methods for attachments (REST, CLI and MCP all call these)."""

    extensions: dict[str, Any]
    pool: Any
    execute: Any
    _require_workspace: Any

    def _attachment_storage(self) -> Any:
        component = self.extensions.get("attachments")
        if component is None:
            raise Unavailable(
                "attachments need object storage: start Rekor with REKOR_S3_ENDPOINT (and"
                " REKOR_S3_ACCESS_KEY / REKOR_S3_SECRET_KEY) or with the embedded stack",
                [{"path": "storage", "message": "not configured"}],
            )
        return component

    async def _record_head(self, workspace_id: str, collection: str, record_id: str) -> int:
        """404 unless the record lives in that collection; returns the workspace log head."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT w.head, r.collection FROM workspaces w LEFT JOIN records r"
                " ON r.workspace_id = w.workspace_id AND r.id = %s WHERE w.workspace_id = %s"
                " AND w.created_at IS NOT NULL AND w.deleted_at IS NULL",
                (record_id, workspace_id),
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(
                f"workspace '{workspace_id}' not found",
                [{"path": "workspace_id", "message": "list workspaces to see the ids you can use"}],
            )
        if row[1] != collection:
            raise record_not_found(workspace_id, collection, record_id)
        return int(row[0])

    def _target(
        self, principal: Principal, workspace_id: Any, collection: Any, record_id: Any, perm: str
    ) -> tuple[str, str, str]:
        ws = check_workspace_id(workspace_id)
        principal.require(ws, perm)
        check_slug(collection, "collection name", "collection")
        return ws, collection, check_record_id(record_id)

    async def create_upload(
        self,
        principal: Principal,
        workspace_id: str,
        collection: str,
        record_id: str,
        *,
        filename: Any,
        content_type: Any,
        size: Any = None,
        expires_in: Any = None,
    ) -> dict[str, Any]:
        """Sign a PUT URL for uploading `filename` to a record. The Content-Type (and the size,
        when given) are signed into the URL, so the PUT must send exactly those headers. Call
        `complete_upload` after the PUT to record the attachment. Nothing is written to the log
        yet; the URL is remembered so that an upload nobody completes is removed later."""
        ws, collection, rid = self._target(principal, workspace_id, collection, record_id, "write")
        filename = check_filename(filename)
        content_type = check_content_type(content_type)
        expires = check_expires_in(expires_in)
        component = self._attachment_storage()
        if size is not None:
            size = _check_int(size, "size", 0, 2**53, "bytes")
            if size > component.max_bytes:
                raise _too_large(size, component.max_bytes)
        head = await self._record_head(ws, collection, rid)
        key = new_object_key(ws, collection, rid, filename, head)
        url = component.storage.presign_put(key, content_type, expires, size)
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO attachment_uploads (workspace_id, key, expires_at)"
                " VALUES (%s, %s, now() + make_interval(secs => %s))",
                (ws, key, expires),
            )
        headers = {"Content-Type": content_type}
        if size is not None:
            headers["Content-Length"] = str(size)
        return {
            "upload_url": url,
            "method": "PUT",
            "headers": headers,
            "expires_at": _iso(datetime.now(UTC) + timedelta(seconds=expires)),
            "filename": filename,
            "max_size": component.max_bytes,
        }

    async def complete_upload(
        self,
        principal: Principal,
        workspace_id: str,
        collection: str,
        record_id: str,
        *,
        filename: Any,
    ) -> dict[str, Any]:
        """Record the newest upload of `filename` as its next version (HEAD checks it exists
        and is within the size limit; an oversize object is deleted and refused)."""
        ws, collection, rid = self._target(principal, workspace_id, collection, record_id, "write")
        filename = check_filename(filename)
        component = self._attachment_storage()
        await self._record_head(ws, collection, rid)
        storage = component.storage
        listed = await storage.list_keys(filename_prefix(ws, collection, rid, filename))
        async with self.pool.connection() as conn:
            state = await _stream_state(conn, ws, stream_of(rid, filename))
        pending = [k for k in listed if k not in state.registered]
        candidates = [k for k in pending if state.completable(k)]
        if not candidates:
            raise NotFound(
                f"no uploaded file found for '{filename}': request an upload URL with POST"
                " .../attachments, PUT the bytes to it, then call complete",
                [{"path": "$.filename", "message": "nothing uploaded for this filename"}],
            )
        key = candidates[-1]
        info = await storage.head(key)
        if info is None:
            raise NotFound(
                f"the upload of '{filename}' disappeared from storage; upload it again",
                [{"path": "$.filename", "message": "object missing"}],
            )
        if info.size > component.max_bytes:
            await storage.delete([key])
            raise _too_large(info.size, component.max_bytes)
        cmd = AddAttachment(
            collection=collection,
            record_id=rid,
            filename=filename,
            key=key,
            size=info.size,
            content_type=info.content_type,
            etag=info.etag,
            # Older uploads nobody completed can never be completed now: clean them up.
            discarded_keys=[k for k in pending if k != key],
        )
        return (await self.execute(principal, ws, cmd)).body

    async def list_attachments(
        self,
        principal: Principal,
        workspace_id: str,
        collection: str,
        record_id: str,
        *,
        prefix: Any = None,
        limit: Any = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """A record's attachments ordered by filename, optionally under a folder (`docs/`),
        each with size, content_type, etag, version and updated_at."""
        ws, collection, rid = self._target(principal, workspace_id, collection, record_id, "read")
        prefix = check_prefix(prefix)
        if limit is None:
            limit = LIST_LIMIT_DEFAULT
        limit = _check_int(limit, "limit", 1, LIST_LIMIT_MAX, "items per page")
        await self._record_head(ws, collection, rid)
        async with self.pool.connection() as conn:
            return await views.list_attachments(
                conn, ws, rid, prefix=prefix, limit=limit, cursor=cursor
            )

    async def attachment_url(
        self,
        principal: Principal,
        workspace_id: str,
        collection: str,
        record_id: str,
        *,
        filename: Any,
        expires_in: Any = None,
        version: Any = None,
    ) -> dict[str, Any]:
        """A signed GET URL for the current version of an attachment (or an older `version`
        still stored), valid for `expires_in` seconds (default 900, at most 3600)."""
        ws, collection, rid = self._target(principal, workspace_id, collection, record_id, "read")
        filename = check_filename(filename)
        expires = check_expires_in(expires_in)
        if version is not None:
            version = _check_int(version, "version", 1, 2**31 - 1, "an attachment version")
        component = self._attachment_storage()
        await self._record_head(ws, collection, rid)
        async with self.pool.connection() as conn:
            row = await views.find_attachment(conn, ws, rid, filename)
            if row is not None and version is not None and version != row["version"]:
                row = await views.find_version(conn, ws, rid, filename, version)
                if row is None:
                    raise NotFound(
                        f"'{filename}' has no stored version {version}; see its history",
                        [{"path": "version", "message": "no such version"}],
                    )
        if row is None:
            raise _no_attachment(filename, rid)
        url = component.storage.presign_get(row["key"], expires, download_name=filename)
        return {
            "url": url,
            "method": "GET",
            "expires_at": _iso(datetime.now(UTC) + timedelta(seconds=expires)),
            "filename": filename,
            "version": row["version"],
            "size": row["size"],
            "content_type": row["content_type"],
        }

    async def delete_attachment(
        self,
        principal: Principal,
        workspace_id: str,
        collection: str,
        record_id: str,
        *,
        filename: Any,
    ) -> dict[str, Any]:
        """Delete an attachment (every version): it leaves listings at once (an event); its
        objects are removed from storage by the cleanup consumer, even after an outage."""
        ws, collection, rid = self._target(principal, workspace_id, collection, record_id, "write")
        filename = check_filename(filename)
        cmd = DeleteAttachment(collection=collection, record_id=rid, filename=filename)
        return (await self.execute(principal, ws, cmd)).body

    async def attachment_history(
        self,
        principal: Principal,
        workspace_id: str,
        collection: str,
        record_id: str,
        *,
        filename: Any,
    ) -> dict[str, Any]:
        """Every upload (version) and delete of one filename: version, seq, at, actor, event,
        size, content_type, etag. Works after the attachment or its record was deleted."""
        ws, collection, rid = self._target(principal, workspace_id, collection, record_id, "read")
        filename = check_filename(filename)
        async with self.pool.connection() as conn:
            await self._require_workspace(conn, ws)
            owner, items = await views.attachment_history(conn, ws, stream_of(rid, filename))
            if owner is None:
                cur = await conn.execute(
                    "SELECT collection FROM records WHERE workspace_id = %s AND id = %s",
                    (ws, rid),
                )
                row = await cur.fetchone()
                owner = row[0] if row else None
            if owner != collection:
                raise record_not_found(ws, collection, rid)
            if not items:
                raise _no_attachment(filename, rid)
        return {"data": items, "meta": {"limit": len(items), "next_cursor": None}}
