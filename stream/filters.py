"""The filter DSL evaluated in Python over one record, for trigger filters.

Same language as queries (DESIGN.md §4): a condition `{"field", "op", "value"}` or a group
`{"and": [...]}` / `{"or": [...]}` / `{"not": ...}`. Semantics follow the SQL engine's: a
comparison with a missing field or a value of another JSON type is false (SQL NULL / type
mismatch), `like`/`ilike` use `%` and `_`, `has` tests array membership or an object key,
`search` is a case-insensitive match of every word of the value in the field's text.
"""

from __future__ import annotations

import re
from typing import Any

from events.errors import ValidationError

OPS = {
    "eq",
    "neq",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "like",
    "ilike",
    "is_null",
    "is_not_null",
    "has",
    "search",
}
SYSTEM_FIELDS = {"id", "external_id", "external_source", "version", "created_at", "updated_at"}
_MISSING = object()
MAX_DEPTH = 16


def _err(path: str, message: str) -> ValidationError:
    return ValidationError(
        f"filter is not valid: {path}: {message}. A filter is a condition"
        ' {"field": "data.severity", "op": "eq", "value": "p1"} or a group {"and": [...]},'
        ' {"or": [...]}, {"not": {...}}',
        [{"path": path, "message": message}],
    )


def check_filter(node: Any, path: str = "$.filter", depth: int = 0) -> None:
    """Raise VALIDATION_ERROR (naming the JSON path) unless `node` is a valid filter."""
    if depth > MAX_DEPTH:
        raise _err(path, f"nested deeper than {MAX_DEPTH}")
    if not isinstance(node, dict):
        raise _err(path, "must be an object")
    groups = [k for k in ("and", "or", "not") if k in node]
    if groups:
        if len(node) != 1:
            raise _err(path, "a group has exactly one key: and, or or not")
        key = groups[0]
        if key == "not":
            check_filter(node["not"], f"{path}.not", depth + 1)
            return
        items = node[key]
        if not isinstance(items, list) or not items:
            raise _err(f"{path}.{key}", "must be a non-empty array of filters")
        for i, item in enumerate(items):
            check_filter(item, f"{path}.{key}[{i}]", depth + 1)
        return
    unknown = set(node) - {"field", "op", "value"}
    if unknown:
        raise _err(path, f"unknown keys {sorted(unknown)}")
    field, op = node.get("field"), node.get("op")
    if not isinstance(field, str) or not (
        field in SYSTEM_FIELDS or (field.startswith("data.") and len(field) > 5)
    ):
        raise _err(
            f"{path}.field",
            f"unknown field {field!r}; use data.<path> or one of {sorted(SYSTEM_FIELDS)}",
        )
    if op not in OPS:
        raise _err(f"{path}.op", f"unknown op {op!r}; ops are {sorted(OPS)}")
    value = node.get("value", _MISSING)
    if op in ("is_null", "is_not_null"):
        return
    if value is _MISSING:
        raise _err(f"{path}.value", f"op '{op}' needs a value")
    if op in ("in", "not_in") and not isinstance(value, list):
        raise _err(f"{path}.value", f"op '{op}' needs an array")
    if op in ("like", "ilike", "search") and not isinstance(value, str):
        raise _err(f"{path}.value", f"op '{op}' needs a string")
    if op in ("gt", "gte", "lt", "lte") and (
        isinstance(value, bool) or not isinstance(value, int | float | str)
    ):
        raise _err(f"{path}.value", f"op '{op}' needs a number or a string")


def _lookup(record: dict[str, Any], field: str) -> Any:
    if not field.startswith("data."):
        return record.get(field, _MISSING)
    node: Any = record.get("data", {})
    for part in field[5:].split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    return type(v).__name__


def _like(value: Any, pattern: str, flags: int = 0) -> bool:
    if not isinstance(value, str):
        return False
    rx = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.fullmatch(rx, value, flags | re.DOTALL) is not None


def matches(node: dict[str, Any], record: dict[str, Any]) -> bool:
    """Evaluate a (checked) filter against a record `{id, data, external_id, ...}`."""
    if "and" in node:
        return all(matches(n, record) for n in node["and"])
    if "or" in node:
        return any(matches(n, record) for n in node["or"])
    if "not" in node:
        return not matches(node["not"], record)
    op, want = node["op"], node.get("value")
    got = _lookup(record, node["field"])
    if op == "is_null":
        return got is _MISSING or got is None
    if op == "is_not_null":
        return got is not _MISSING and got is not None
    if got is _MISSING or got is None:
        return False
    if op == "eq":
        return _kind(got) == _kind(want) and got == want
    if op == "neq":
        return _kind(got) == _kind(want) and got != want
    if op in ("gt", "gte", "lt", "lte"):
        if _kind(got) != _kind(want) or _kind(got) not in ("number", "str"):
            return False
        return {
            "gt": got > want,
            "gte": got >= want,
            "lt": got < want,
            "lte": got <= want,
        }[op]
    if op == "in":
        return any(_kind(got) == _kind(v) and got == v for v in want)
    if op == "not_in":
        return not any(_kind(got) == _kind(v) and got == v for v in want)
    if op == "like":
        return _like(got, want)
    if op == "ilike":
        return _like(got, want, re.IGNORECASE)
    if op == "has":
        if isinstance(got, list):
            return want in got
        if isinstance(got, dict):
            return isinstance(want, str) and want in got
        return False
    if op == "search":
        text = got if isinstance(got, str) else str(got)
        words = re.findall(r"\w+", want.lower())
        return bool(words) and all(w in text.lower() for w in words)
    return False
