"""Attachment events: files stored in S3 next to a record.

One stream per (record, filename): `attachment:<record_id>:<filename hash>`. Its stream version is
the attachment's version, so re-uploading a filename makes version n+1 and a delete bumps it too.
The objects themselves live in object storage under `key`; the log records which object holds
each version, so a delete names exactly the objects the storage cleanup must remove.
"""

from __future__ import annotations

from events.types import Event


class AttachmentAdded(Event, tag="attachment.added"):
    """A completed upload: `key` holds the bytes of this version of `filename`."""

    record_id: str
    collection: str
    filename: str
    version: int
    key: str
    size: int
    content_type: str
    etag: str
    # Uploads of this filename nobody completed before this one: never completable now.
    discarded_keys: list[str] = []


class AttachmentDeleted(Event, tag="attachment.deleted"):
    """`filename` is gone from the record. `keys` are every stored object of it (all its versions
    since it was last deleted); the storage cleanup removes them. `reason` is `deleted` or
    `record_deleted`."""

    record_id: str
    collection: str
    filename: str
    version: int
    keys: list[str]
    reason: str = "deleted"
