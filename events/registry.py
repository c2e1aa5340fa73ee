"""The one place that knows every event module; builds the reusable encoder/decoder once."""

from __future__ import annotations

import functools
from typing import Any, Union

import msgspec

# Importing a module registers its Event subclasses. Add new event modules here.
from events import attachments as _attachments  # noqa: F401
from events import relationships as _relationships  # noqa: F401
from events import streaming as _streaming  # noqa: F401
from events import types as _core  # noqa: F401
from events.types import Event, all_event_types

ENCODER = msgspec.json.Encoder()


@functools.cache
def _decoder() -> msgspec.json.Decoder[Any]:
    classes = tuple(all_event_types().values())
    return msgspec.json.Decoder(Union[classes])  # type: ignore[valid-type]  # noqa: UP007


def decode_event(raw: bytes | str) -> Event:
    """Decode one event from its JSON form (the `data` column)."""
    return _decoder().decode(raw)


@functools.cache
def _converter() -> Any:
    classes = tuple(all_event_types().values())
    return Union[classes]  # noqa: UP007


def event_from_dict(obj: dict[str, Any]) -> Event:
    """Build an event from an already-parsed JSON object (psycopg returns jsonb as dict)."""
    return msgspec.convert(obj, _converter())


def event_to_dict(event: Event) -> dict[str, Any]:
    """The event as a JSON-ready dict, tag included under `type`."""
    return msgspec.to_builtins(event)
