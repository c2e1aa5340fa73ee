"""`rekor attachments upload|url|list|delete|history`: files on records.

`upload` runs the whole flow: ask Rekor for a presigned URL, PUT the file straight to object
storage (streamed from disk, with a progress bar for large files), then complete it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from cyclopts import App, Parameter

from cli.client import api, require_workspace
from cli.output import emit
from cli.params import Output, Workspace
from cli.transfer import attachments_base, upload_file

attachments_app = App(
    name="attachments",
    help="Files attached to records (stored in S3; moved with presigned URLs).",
)

Filename = Annotated[
    str,
    Parameter(help="The attachment's name on the record; '/' makes folders (docs/runbook.md)."),
]
Source = Annotated[
    str | None,
    Parameter(help="external_source of REC, when REC is an external id used by several."),
]


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
    emit(upload_file(ws, collection, record, filename, content_type, file, quiet, source), output)


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
    emit(
        api().get(attachments_base(ws, collection, record, source) + "/url", params=params), output
    )


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
    emit(api().get(attachments_base(ws, collection, record, source), params=params), output)


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
    base = attachments_base(ws, collection, record, source)
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
    base = attachments_base(ws, collection, record, source)
    emit(api().get(base + "/history", params={"filename": filename}), output)
