"""Input checks shared by every command: ids, names, JSON Schemas and record data."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import OrderedDict
from typing import Any

import jsonschema
import msgspec
from jsonschema.exceptions import SchemaError

from events.errors import ValidationError

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MAX_SCHEMA_BYTES = 256 * 1024
MAX_RECORD_BYTES = 1024 * 1024
MAX_EXTERNAL_ID = 255
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50


def check_slug(value: Any, what: str, path: str) -> str:
    """Workspace and collection ids: lowercase letters, digits, '-' and '_', 1-63 chars, no
    '--' (reserved for previews)."""
    if not isinstance(value, str) or not _SLUG.match(value) or "--" in value:
        raise ValidationError(
            f"{what} {value!r} is not a valid id: use 1-63 lowercase letters, digits, '-' or"
            " '_', starting with a letter or digit, without '--'",
            [{"path": path, "message": "must match ^[a-z0-9][a-z0-9_-]{0,62}$ without '--'"}],
        )
    return value


def check_workspace_id(value: Any, *, allow_preview: bool = True) -> str:
    """A workspace id, or a preview id `<parent>--<name>` where both halves are slugs."""
    if allow_preview and isinstance(value, str) and value.count("--") == 1:
        parent, name = value.split("--")
        check_slug(parent, "workspace id", "workspace_id")
        check_slug(name, "preview name", "workspace_id")
        if len(value) > 127:
            raise ValidationError("workspace id is too long", [{"path": "workspace_id"}])
        return value
    return check_slug(value, "workspace id", "workspace_id")


def check_record_id(value: Any, path: str = "id") -> str:
    """Record ids are UUIDs (Rekor makes UUIDv7s); normalised to lowercase canonical form."""
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValidationError(
            f"record id {value!r} is not a UUID",
            [
                {
                    "path": path,
                    "message": "record ids are UUIDs such as 0196f3c2-...; to address"
                    " a record by your own key use external_id",
                }
            ],
        ) from exc


def check_external(external_id: Any, external_source: Any) -> None:
    """External ids/sources are non-empty printable strings of bounded length."""
    for name, value in (("external_id", external_id), ("external_source", external_source)):
        if value is None:
            continue
        if (
            not isinstance(value, str)
            or not value
            or len(value) > MAX_EXTERNAL_ID
            or any(ord(c) < 32 for c in value)
        ):
            raise ValidationError(
                f"{name} must be a non-empty string of at most {MAX_EXTERNAL_ID} printable"
                " characters",
                [{"path": f"$.{name}", "message": "invalid value"}],
            )
    if external_source is not None and external_id is None:
        raise ValidationError(
            "external_source needs an external_id",
            [{"path": "$.external_id", "message": "required when external_source is given"}],
        )


def check_data_object(data: Any, path: str = "$.data") -> dict[str, Any]:
    """Record data is a JSON object of bounded size."""
    if not isinstance(data, dict):
        raise ValidationError(
            "record data must be a JSON object",
            [{"path": path, "message": f"expected object, got {type(data).__name__}"}],
        )
    if len(msgspec.json.encode(data)) > MAX_RECORD_BYTES:
        raise ValidationError(
            f"record data is larger than {MAX_RECORD_BYTES} bytes",
            [{"path": path, "message": "too large"}],
        )
    return data


def _json_path(prefix: str, parts: Any) -> str:
    out = prefix
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _reject_remote_refs(node: Any, path: str) -> None:
    # Only local references: resolving remote ones would make validation reach the network.
    if isinstance(node, dict):
        for key, value in node.items():
            if (
                key in ("$ref", "$dynamicRef")
                and isinstance(value, str)
                and not value.startswith("#")
            ):
                raise ValidationError(
                    "json_schema may only use local references ('#/...')",
                    [{"path": f"{path}.{key}", "message": f"remote reference {value!r}"}],
                )
            _reject_remote_refs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _reject_remote_refs(value, f"{path}[{i}]")


def check_json_schema(schema: Any) -> dict[str, Any]:
    """The schema must be a valid JSON Schema (Draft 2020-12) object with local refs only."""
    if not isinstance(schema, dict):
        raise ValidationError(
            "json_schema must be a JSON object (a JSON Schema, Draft 2020-12)",
            [{"path": "$.json_schema", "message": f"got {type(schema).__name__}"}],
        )
    if len(msgspec.json.encode(schema)) > MAX_SCHEMA_BYTES:
        raise ValidationError(
            f"json_schema is larger than {MAX_SCHEMA_BYTES} bytes",
            [{"path": "$.json_schema", "message": "too large"}],
        )
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValidationError(
            f"json_schema is not a valid JSON Schema: {exc.message}",
            [{"path": _json_path("$.json_schema", exc.absolute_path), "message": exc.message}],
        ) from exc
    _reject_remote_refs(schema, "$.json_schema")
    return schema


class SchemaCache:
    """Compiled validators per (workspace, collection, schema seq, schema digest): compiling
    is the costly part. The digest is part of the key because a seq taken by a transaction
    that rolled back is reused by the next commit, possibly with a different schema."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, str, int, bytes], jsonschema.Draft202012Validator] = (
            OrderedDict()
        )

    def validator(
        self, workspace_id: str, collection: str, seq: int, schema: dict[str, Any]
    ) -> jsonschema.Draft202012Validator:
        """The compiled validator for this schema version."""
        digest = hashlib.blake2b(msgspec.json.encode(schema), digest_size=16).digest()
        key = (workspace_id, collection, seq, digest)
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
            return found
        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        self._items[key] = validator
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return validator


def schema_errors(
    validator: jsonschema.Draft202012Validator, data: dict[str, Any], prefix: str = "$.data"
) -> list[dict[str, Any]]:
    """Every violation of the schema, one entry per failing JSON path."""
    try:
        errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path)))
    except Exception as exc:  # an unresolvable local $ref and the like: the schema's fault
        return [{"path": prefix, "message": f"schema could not be evaluated: {exc}"}]
    return [
        {"path": _json_path(prefix, e.absolute_path), "message": e.message, "rule": e.validator}
        for e in errors
    ]


def validate_data(
    validator: jsonschema.Draft202012Validator,
    data: dict[str, Any],
    collection: str,
    prefix: str = "$.data",
) -> None:
    """Raise VALIDATION_ERROR listing every failing path when `data` violates the schema."""
    errors = schema_errors(validator, data, prefix)
    if errors:
        raise ValidationError(
            f"data does not match the schema of collection '{collection}'"
            f" ({len(errors)} problem{'s' if len(errors) != 1 else ''})",
            errors,
        )


def check_expected_version(value: Any) -> int | None:
    """expected_version: absent = any; 0 = must not exist yet; n = must be at version n."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(
            "expected_version must be an integer >= 0",
            [{"path": "$.expected_version", "message": f"got {value!r}"}],
        )
    return value


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def check_limit(limit: Any, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    """`limit` is 1..maximum."""
    if limit is None:
        return default
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= maximum:
        raise ValidationError(
            f"limit must be an integer from 1 to {maximum}",
            [{"path": "limit", "message": f"got {limit!r}"}],
        )
    return limit
