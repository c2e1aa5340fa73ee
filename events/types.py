"""Rekor's event types: one msgspec tagged union with explicit, dotted, never-renamed tags.

Rules (msgspec schema evolution): a tag is never renamed or reused; a new field always gets a
default so that events already in the log keep decoding.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Event(msgspec.Struct, tag_field="type", kw_only=True, frozen=True, omit_defaults=False):
    """Base of every event. `type` (the tag) is stored in its own column too."""


# -- workspaces -------------------------------------------------------------------------------


class WorkspaceCreated(Event, tag="workspace.created"):
    id: str
    name: str
    parent: str | None = None
    base_seq: int | None = None


class WorkspaceDeleted(Event, tag="workspace.deleted"):
    id: str


# -- collections ------------------------------------------------------------------------------


class CollectionCreated(Event, tag="collection.created"):
    name: str
    version: int
    json_schema: dict[str, Any]
    description: str | None = None


class CollectionUpdated(Event, tag="collection.updated"):
    """The schema or description changed. `version` bumps only when the schema changed."""

    name: str
    version: int
    json_schema: dict[str, Any]
    description: str | None = None


class CollectionDeleted(Event, tag="collection.deleted"):
    """The collection and every record in it are gone (each record keeps its own history)."""

    name: str
    version: int


# -- records ----------------------------------------------------------------------------------
# Record events carry the record's whole data after the change, so any version can be read
# from one event (time travel, history) without folding patches.


class RecordCreated(Event, tag="record.created"):
    id: str
    collection: str
    data: dict[str, Any]
    version: int = 1
    external_id: str | None = None
    external_source: str | None = None


class RecordUpdated(Event, tag="record.updated"):
    id: str
    collection: str
    data: dict[str, Any]
    version: int
    external_id: str | None = None
    external_source: str | None = None


class RecordDeleted(Event, tag="record.deleted"):
    id: str
    collection: str
    version: int
    external_id: str | None = None
    external_source: str | None = None


def all_event_types() -> dict[str, type[Event]]:
    """Every concrete event type by tag. Domain modules define their own Event subclasses
    (e.g. events/relationships.py); importing `events.registry` makes sure all are loaded."""
    found: dict[str, type[Event]] = {}
    stack = list(Event.__subclasses__())
    while stack:
        cls = stack.pop()
        tag = cls.__struct_config__.tag
        if isinstance(tag, str):
            if tag in found and found[tag] is not cls:
                raise RuntimeError(f"event tag {tag!r} defined twice")
            found[tag] = cls
        stack.extend(cls.__subclasses__())
    return found
