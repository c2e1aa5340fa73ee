"""`rekor attachments upload|url|list|delete|history`: files on records.

`upload` runs the whole flow: ask Rekor for a presigned URL, PUT the file straight to object
storage (streamed from disk, with a progress bar for large files), then complete it.
"""

from __future__ import annotations

import http.client
import mimetypes
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from cyclopts import App, Parameter

from cli.client import (
    EXIT_UNAVAILABLE,
    EXIT_USER,
    CliError,
    Workspace,
    api,
    open_http,
    require_workspace,
)
from cli.core import coll_path, record_path
from cli.output import Output, emit

attachments_app = App(
    name="attachments",
    help="Files attached to records (stored in S3; moved with presigned URLs).",
)

# The upload body goes from disk to the socket in the kernel (sendfile), in 4 MiB pieces
# between progress updates; the file is never read into memory.
CHUNK = 4 * 1024 * 1024
PROGRESS_FROM = 2 * CHUNK  # smaller files finish before a bar would be worth drawing
UPLOAD_TIMEOUT_S = 300.0

Filename = Annotated[
    str,
    Parameter(help="The attachment's name on the record; '/' makes folders (docs/runbook.md)."),
]
Source = Annotated[
    str | None,
    Parameter(help="external_source of REC, when REC is an external id used by several."),
]


def _record_id(ws: str, collection: str, record: str, source: str | None) -> str:
    """REC is a record UUID, or an external id (resolved in the collection)."""
    try:
        return str(uuid.UUID(record))
    except ValueError:
        pass
    found = api().get(
        f"{coll_path(ws, collection)}/records",
        params={"external_id": record, "external_source": source, "limit": 2},
    )
    rows = found.get("data", []) if isinstance(found, dict) else []
    if len(rows) == 1:
        return str(rows[0]["id"])
    if not rows:
        raise CliError(
            f"no record with id or external_id '{record}' in collection '{collection}'",
            4,
            code="NOT_FOUND",
        )
    raise CliError(
        f"external_id '{record}' is used by several sources in '{collection}'; pass --source",
        EXIT_USER,
        code="VALIDATION_ERROR",
    )


def _base(ws: str, collection: str, record: str, source: str | None) -> str:
    rid = _record_id(ws, collection, record, source)
    return record_path(ws, collection, rid) + "/attachments"


@contextmanager
def _progress(name: str, size: int, show: bool) -> Iterator[Callable[[int], None]]:
    """A function to report bytes sent; draws a transfer bar on stderr when `show`."""
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task(f"uploading {name}", total=size)
    with bar:
        yield lambda n: bar.update(task, advance=n)


def put_file(grant: dict[str, Any], path: Path, size: int, *, quiet: bool = False) -> None:
    """PUT a file to a presigned upload URL, streamed from disk by the kernel (sendfile)."""
    url = grant["upload_url"]
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = dict(grant.get("headers") or {})
    # The length is signed into the URL; S3 servers refuse chunked bodies for presigned PUTs.
    headers["Content-Length"] = str(size)
    show = not quiet and size >= PROGRESS_FROM and sys.stderr.isatty()
    try:
        conn = open_http(url, timeout=UPLOAD_TIMEOUT_S)
    except OSError as exc:
        raise _storage_unreachable(exc) from exc
    try:
        conn.putrequest(grant.get("method", "PUT"), target, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        try:
            _send_body(conn, path, size, show)
        except OSError as exc:
            # The server may have answered early (a refused signature) and closed: its answer
            # says more than the broken pipe.
            try:
                response = conn.getresponse()
            except (OSError, http.client.HTTPException):
                raise _storage_unreachable(exc) from exc
        else:
            response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise _storage_unreachable(exc) from exc
    finally:
        conn.close()
    if not 200 <= response.status < 300:
        text = body[:300].decode("utf-8", "replace")
        raise CliError(
            f"object storage refused the upload: HTTP {response.status} {text}",
            EXIT_UNAVAILABLE if response.status >= 500 else EXIT_USER,
            code="UPLOAD_FAILED",
        )


def _send_body(conn: http.client.HTTPConnection, path: Path, size: int, show: bool) -> None:
    assert conn.sock is not None
    with path.open("rb") as fh, _progress(path.name, size, show) as advance:
        sent = 0
        while sent < size:
            n = conn.sock.sendfile(fh, sent, min(CHUNK, size - sent))
            if n == 0:
                raise CliError(
                    f"{path} shrank while it was being uploaded ({sent} of {size} bytes sent);"
                    " nothing was recorded, upload it again",
                    EXIT_USER,
                    code="VALIDATION_ERROR",
                )
            sent += n
            advance(n)


def _storage_unreachable(exc: Exception) -> CliError:
    return CliError(
        f"cannot reach object storage for the upload ({type(exc).__name__}: {exc})",
        EXIT_UNAVAILABLE,
        code="UNAVAILABLE",
    )


@attachments_app.command(name="upload")
def upload(
    collection: str,
    record: str,
    /,
    *,
    filename: Filename,
    content_type: Annotated[
        str | None,
        Parameter(help="Media type, e.g. text/markdown (default: guessed from the name)."),
    ] = None,
    file: Annotated[
        Path | None, Parameter(help="Local file to upload (default: the --filename path).")
    ] = None,
    quiet: Annotated[bool, Parameter(help="No progress bar.")] = False,
    source: Source = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Upload a file to a record (REC: its id or external id). Uploading an existing filename
    makes a new version. Prints the attachment (filename, size, content_type, etag, version).

    For example:
        rekor attachments upload incidents 0196f0c2-... -w ws_ops --filename docs/runbook.md
            --content-type text/markdown --file ./runbook.md
    """
    ws = require_workspace(workspace)
    path = file if file is not None else Path(filename)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CliError(
            f"cannot read {path}: {exc.strerror or exc}; pass the local file with --file",
            EXIT_USER,
            code="VALIDATION_ERROR",
            details=[{"path": "--file", "message": "not readable"}],
        ) from exc
    if content_type is None:
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    base = _base(ws, collection, record, source)
    grant = api().post(
        base, json={"filename": filename, "content_type": content_type, "size": size}
    )
    put_file(grant, path, size, quiet=quiet)
    emit(api().post(base + "/complete", json={"filename": filename}), output)


@attachments_app.command(name="url")
def url(
    collection: str,
    record: str,
    /,
    *,
    filename: Filename,
    expires_in: Annotated[
        int | None, Parameter(help="Seconds the link stays valid (default 900, max 3600).")
    ] = None,
    version: Annotated[int | None, Parameter(help="An older stored version.")] = None,
    source: Source = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Print a signed download URL for an attachment.

    For example:
        rekor attachments url incidents 0196f0c2-... -w ws_ops --filename docs/runbook.md
    """
    ws = require_workspace(workspace)
    params = {"filename": filename, "expires_in": expires_in, "version": version}
    emit(api().get(_base(ws, collection, record, source) + "/url", params=params), output)


@attachments_app.command(name="list")
def list_(
    collection: str,
    record: str,
    /,
    *,
    prefix: Annotated[
        str | None, Parameter(help="Only names under this folder, e.g. docs/.")
    ] = None,
    limit: Annotated[int | None, Parameter(help="Page size, 1-1000 (default 100).")] = None,
    cursor: Annotated[str | None, Parameter(help="The next_cursor of the previous page.")] = None,
    source: Source = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """List a record's attachments (size, content type, version, updated time).

    For example:
        rekor attachments list incidents 0196f0c2-... -w ws_ops --prefix docs/
    """
    ws = require_workspace(workspace)
    params = {"prefix": prefix, "limit": limit, "cursor": cursor}
    emit(api().get(_base(ws, collection, record, source), params=params), output)


@attachments_app.command(name="delete")
def delete(
    collection: str,
    record: str,
    /,
    *,
    filename: Filename,
    source: Source = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Delete an attachment and all its versions (storage is cleaned up in the background).

    For example:
        rekor attachments delete incidents 0196f0c2-... -w ws_ops --filename docs/old.md
    """
    ws = require_workspace(workspace)
    base = _base(ws, collection, record, source)
    emit(api().delete(base, params={"filename": filename}), output)


@attachments_app.command(name="history")
def history(
    collection: str,
    record: str,
    /,
    *,
    filename: Filename,
    source: Source = None,
    workspace: Workspace = None,
    output: Output = None,
) -> None:
    """Every version and delete of one attachment, oldest first.

    For example:
        rekor attachments history incidents 0196f0c2-... -w ws_ops --filename docs/runbook.md
    """
    ws = require_workspace(workspace)
    base = _base(ws, collection, record, source)
    emit(api().get(base + "/history", params={"filename": filename}), output)
