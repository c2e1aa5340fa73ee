"""The filter DSL evaluated in Python over one record, for trigger filters (validated by the
query engine's compiler, evaluated here without a database round trip per event).

Same language as queries (DESIGN.md §4): a condition `{"field", "op", "value"}` or a group
`{"and": [...]}` / `{"or": [...]}` / `{"not": ...}`. Semantics follow the SQL engine's: a
comparison with a missing field or a value of another JSON type is false (SQL NULL / type
mismatch), `like`/`ilike` use `%` and `_`, `has` tests array membership or an object key,
`search` is a case-insensitive match of every word of the value in the field's text.
"""

from __future__ import annotations

import re
from typing import Any

from projections.query import compile_filter

_MISSING = object()


def check_filter(node: Any) -> None:
    """Raise VALIDATION_ERROR (naming the JSON path) unless `node` is a valid filter. This is
    the query engine's own check, so a trigger accepts exactly the filters a query accepts."""
    compile_filter(node)


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
