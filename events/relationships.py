"""Relationship events: typed, directed links between two records of one workspace.

Every relationship event carries the relationship's whole state (type, both endpoints, data,
version), so the state at any log position is the latest event of its stream: time travel
needs no folding, and a subscriber needs no lookup.

The relationship's own type is stored as `rel_type` because `type` is the event tag.
"""

from __future__ import annotations

from typing import Any

import msgspec

from events.types import Event


class RelationshipCreated(Event, tag="relationship.created"):
    id: str
    rel_type: str
    source_collection: str
    source_id: str
    target_collection: str
    target_id: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    version: int = 1


class RelationshipUpdated(Event, tag="relationship.updated"):
    """The relationship's `data` changed (its type and endpoints never change)."""

    id: str
    rel_type: str
    source_collection: str
    source_id: str
    target_collection: str
    target_id: str
    data: dict[str, Any]
    version: int


class RelationshipDeleted(Event, tag="relationship.deleted"):
    """The relationship is gone. `cause` says why when it was not asked for directly, e.g.
    `record.deleted` when one of its endpoint records was deleted."""

    id: str
    rel_type: str
    source_collection: str
    source_id: str
    target_collection: str
    target_id: str
    data: dict[str, Any]
    version: int
    cause: str | None = None
