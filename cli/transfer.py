"""The attachment upload flow without the command-line layer: ask Rekor for a presigned URL,
PUT the file straight to object storage (sendfile from disk, progress bar on a terminal),
complete it. Used by `rekor attachments upload` (cli.attachments) and by its fast path
(cli.main), so it imports nothing of cyclopts."""

from __future__ import annotations

import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from cli.client import (
    EXIT_UNAVAILABLE,
    EXIT_USER,
    CliError,
    api,
    coll_path,
    open_http,
    record_path,
)
from cli.http11 import ProtocolError

# Typing-only imports (see cli.main).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

# The upload body goes from disk to the socket in the kernel (sendfile), in 4 MiB pieces
# between progress updates; the file is never read into memory.
CHUNK = 4 * 1024 * 1024
PROGRESS_FROM = 2 * CHUNK  # smaller files finish before a bar would be worth drawing
UPLOAD_TIMEOUT_S = 300.0


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


def attachments_base(ws: str, collection: str, record: str, source: str | None) -> str:
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
    # The length is signed into the URL; S3 servers refuse chunked bodies for presigned PUTs.
    headers = dict(grant.get("headers") or {})
    headers["Content-Length"] = str(size)
    show = not quiet and size >= PROGRESS_FROM and sys.stderr.isatty()
    try:
        conn = open_http(url, timeout=UPLOAD_TIMEOUT_S)
    except OSError as exc:
        raise _storage_unreachable(exc) from exc
    try:
        with path.open("rb") as fh, _progress(path.name, size, show) as advance:
            reply = conn.request(
                grant.get("method", "PUT"),
                target,
                headers,
                file=fh,
                size=size,
                progress=advance,
                piece=CHUNK,
            )
    except EOFError as exc:
        raise CliError(
            f"{path} shrank while it was being uploaded ({exc}); nothing was recorded, upload"
            " it again",
            EXIT_USER,
            code="VALIDATION_ERROR",
        ) from exc
    except (OSError, ProtocolError) as exc:
        raise _storage_unreachable(exc) from exc
    finally:
        conn.close()
    if not 200 <= reply.status < 300:
        text = reply.body[:300].decode("utf-8", "replace")
        raise CliError(
            f"object storage refused the upload: HTTP {reply.status} {text}",
            EXIT_UNAVAILABLE if reply.status >= 500 else EXIT_USER,
            code="UPLOAD_FAILED",
        )


def _storage_unreachable(exc: Exception) -> CliError:
    return CliError(
        f"cannot reach object storage for the upload ({type(exc).__name__}: {exc})",
        EXIT_UNAVAILABLE,
        code="UNAVAILABLE",
    )


def upload_file(
    ws: str,
    collection: str,
    record: str,
    filename: str,
    content_type: str | None = None,
    file: Path | str | None = None,
    quiet: bool = False,
    source: str | None = None,
) -> Any:
    """Upload `file` (default: the `filename` path) as attachment `filename` of the record
    (its id or external id); returns the completed attachment."""
    path = Path(file) if file is not None else Path(filename)
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
        import mimetypes  # only here: it costs a start ~13 ms

        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    base = attachments_base(ws, collection, record, source)
    grant = api().post(
        base, json={"filename": filename, "content_type": content_type, "size": size}
    )
    put_file(grant, path, size, quiet=quiet)
    return api().post(base + "/complete", json={"filename": filename})
