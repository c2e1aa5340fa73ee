"""Commands: imperative requests to change state. Each is handled by one plain function
(commands/handlers.py) inside a workspace transaction."""

from __future__ import annotations

from typing import Any

import msgspec


class Command(msgspec.Struct, kw_only=True, frozen=True):
    """Base of every command."""


class CreateWorkspace(Command):
    id: str
    name: str | None = None
    parent: str | None = None
    base_seq: int | None = None


class DeleteWorkspace(Command):
    id: str


class UpsertCollection(Command):
    name: str
    json_schema: dict[str, Any]
    description: str | None = None


class DeleteCollection(Command):
    name: str


class UpsertRecord(Command):
    collection: str
    data: dict[str, Any]
    id: str | None = None
    external_id: str | None = None
    external_source: str | None = None
    expected_version: int | None = None


class PatchRecord(Command):
    collection: str
    id: str
    patch: dict[str, Any]
    expected_version: int | None = None


class DeleteRecord(Command):
    collection: str
    id: str
    expected_version: int | None = None


class CommandResult(msgspec.Struct, kw_only=True):
    """What a handler returns: the entity's public JSON and whether it was created."""

    body: dict[str, Any]
    created: bool = False
