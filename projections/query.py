"""The query engine: the filter DSL compiled to parameterised SQL, with sort, keyset paging,
field projection, time travel (`as_of`) and aggregates.

Everything a caller sends ends up in bound parameters: values, and the segments of `data.<path>`
fields too (`data #> %s` with a `text[]`). The only SQL text is written here, picked from fixed
fragments by the shape of the (validated) filter.

Fields
    `data.<path>`: dot-separated keys, each made of letters, digits, `_` or `-` (1-64
    characters, at most 16 segments). An integer segment also indexes into an array
    (`data.items.0.sku`; `-1` is the last element), exactly like PostgreSQL's `#>`: on an array
    it is the position, on an object the key. `data` alone is accepted by `has` (a top-level
    key) and `search` (every string in the record). System fields: `id external_id
    external_source version created_at updated_at`.

Conditions and their semantics (every condition is strictly true or false, never NULL, so
`not` is always the exact complement):
    eq / neq        JSON equality of the value at the path (numbers by value, so 5 = 5.0;
                    strings exact; objects and arrays whole). A missing field is not equal
                    to anything; `neq` is `not eq`, so it also matches records missing the
                    field. `null` is not a value here: use is_null / is_not_null.
    in / not_in     a list (1-1000) of strings, numbers or booleans; `in` = eq any of them,
                    `not_in` = not `in` (matches missing fields too).
    gt gte lt lte   a string, number or boolean. Only stored values of the same JSON type
                    compare (numbers as numbers, strings by code point, false < true); a type
                    mismatch does not match. A string value that is an ISO-8601 datetime with a
                    time zone (`2026-01-31T12:00:00Z`, `...+02:00`) compares as an instant with
                    stored strings that are such datetimes too (other stored values don't match).
    like / ilike    SQL LIKE patterns (`%` any run, `_` one character, `\\` escapes) on stored
                    strings; `ilike` ignores case.
    is_null         the field is missing or JSON null; `is_not_null` is its complement.
    has             on an array: it contains the value as an element (string, number or
                    boolean); on an object (and `data` itself): it has the key (string value).
    search          trigram word similarity (pg_trgm) of the text with the stored text of the
                    field (for `data`: all its strings) is at least 0.4; rows carry
                    `_search_score` (0..1, the best of the filter's searches) and are ordered by it
                    when no sort is given.
    System fields take values of their type: `id` a UUID, `version` an integer, `created_at` /
    `updated_at` an ISO-8601 instant with a time zone, `external_*` strings.

Limits: nesting depth 8, 100 conditions, 1000 values in a list. Any violation, unknown op or
field, or wrong value type is a VALIDATION_ERROR naming the JSON path of the offending node
(e.g. `$.filter.and[2].op`).

Sort: up to 5 keys `{"field", "direction": "asc"|"desc"}`; then `id` breaks ties. Values of a
data path sort in PostgreSQL's jsonb order (null < strings < numbers < booleans < arrays <
objects); a missing field sorts last in both directions.

Cursor: opaque keyset position (the last row's sort values and id) tied to the query it came
from (workspace, collection, filter, sort, as_of); a cursor that fails to decode, was edited,
or belongs to another query is a VALIDATION_ERROR.

Index use: `eq` / `in` on a data path with a scalar value compile to JSON containment
(`data @> '{"severity": "p1"}'`), which the GIN index `records_data_gin` (jsonb_path_ops)
serves. Sorting by `id`, `created_at` or `updated_at` reads the matching btree in order; how a
filtered, sorted page picks between the two is explained at `run_query`.

Aggregates: `count` (rows, or with a field the records where it is present and not null),
`sum avg min max` over a data field's numbers (other values are ignored; on system fields
`version`, and min/max of the timestamps and external ids). The alias defaults to `count` or
`<fn>_<field>` (e.g. `sum_data.amount`). Groups (at most 1000, `meta.truncated` beyond) are
ordered by their values, missing/null last; a missing field and JSON null form one group.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from events.errors import NotFound, ValidationError
from events.migrations import register
from projections import core as _core  # noqa: F401 - its tables must be created before our indexes
from projections.reads import decode_cursor, encode_cursor, page, record_json

register(
    "0201_query_indexes",
    r"""
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    -- JSON containment (eq / in / has on data paths) is served by this index.
    CREATE INDEX IF NOT EXISTS records_data_gin ON records USING gin (data jsonb_path_ops);
    -- Sorted reads ("newest first", "recently changed") walk these in order.
    CREATE INDEX IF NOT EXISTS records_created_idx
        ON records (workspace_id, collection, created_at, id);
    CREATE INDEX IF NOT EXISTS records_updated_idx
        ON records (workspace_id, collection, updated_at, id);
    -- Time travel over a collection: the latest record event per stream at a seq.
    CREATE INDEX IF NOT EXISTS events_record_state_idx
        ON events (workspace_id, (data ->> 'collection'), stream, seq DESC)
        WHERE type IN ('record.created', 'record.updated', 'record.deleted');
    -- A stored string that is an ISO-8601 datetime with a time zone, as an instant; anything
    -- else is NULL (never an error, so a stray value cannot break a query). The zone is
    -- required, so the result does not depend on the session's TimeZone: IMMUTABLE holds.
    CREATE OR REPLACE FUNCTION rekor_try_timestamptz(value text) RETURNS timestamptz
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
    BEGIN
        IF value IS NULL OR value !~
            '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)$'
        THEN
            RETURN NULL;
        END IF;
        BEGIN
            RETURN value::timestamptz;
        EXCEPTION WHEN others THEN
            RETURN NULL;
        END;
    END
    $fn$;
    """,
)

register(
    "0202_records_gin_direct_updates",
    r"""
    -- With GIN's fast update, new entries wait in a pending list that every index lookup scans
    -- in full until a vacuum merges it: after 18,000 writes a 5-value `in` took 25 ms instead
    -- of 11. Updating the index directly keeps lookups steady; it measured no slower to write
    -- (100-record batch p50 42 ms vs 48 ms with the pending list).
    ALTER INDEX records_data_gin SET (fastupdate = off);
    SELECT gin_clean_pending_list('records_data_gin'::regclass);
    """,
)

OPS = (
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
)
MAX_DEPTH = 8
MAX_CONDITIONS = 100
MAX_LIST = 1000
MAX_SORT_KEYS = 5
MAX_FIELDS = 50
MAX_GROUP_BY = 5
MAX_AGGREGATIONS = 20
MAX_GROUPS = 1000
MAX_OFFSET = 10_000
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
SEARCH_THRESHOLD = 0.4
# Up to this many `in` values compile to an OR of containments (GIN bitmap OR); longer lists
# use one equality against an array, which no index serves but plans in constant time.
_IN_CONTAINMENT_MAX = 50
STATEMENT_TIMEOUT_MS = 20_000
# The ordered walk (see `run_query`) examines up to this many rows per wanted row: a page of
# 50 walks at most 5,100 rows, so it pays off whenever ~1% or more of the rows match.
WALK_ROWS_PER_RESULT = 100
WALK_MIN = 1_000
WALK_MAX = 20_000
# It starts with a probe of a tenth of that window (510 rows for a page of 50), which fills the
# page when ~10% or more of the rows match and otherwise measures how selective the filter is.
WALK_PROBE_FRACTION = 10

_SEGMENT = re.compile(r"^[\w-]{1,64}$")
_INDEX = re.compile(r"^-?[0-9]+$")
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")
# Same pattern as rekor_try_timestamptz: what counts as a datetime in a filter value.
DATETIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)$"
)

# name -> (SQL expression, kind, nullable)
_SYSTEM: dict[str, tuple[str, str, bool]] = {
    "id": ("r.id", "uuid", False),
    "external_id": ("r.external_id", "text", True),
    "external_source": ("r.external_source", "text", True),
    "version": ("r.version", "int", False),
    "created_at": ("r.created_at", "ts", False),
    "updated_at": ("r.updated_at", "ts", False),
}
_PROJECTABLE = ("id", "collection", "external_id", "external_source", "version")
_PROJECTABLE += ("created_at", "updated_at", "seq", "data")

Frag = tuple[str, list[Any]]


def _invalid(path: str, message: str) -> ValidationError:
    return ValidationError(f"{path}: {message}", [{"path": path, "message": message}])


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def parse_instant(value: Any) -> datetime | None:
    """An ISO-8601 datetime with a time zone, or None if `value` is not one."""
    if not isinstance(value, str) or not DATETIME_RE.match(value):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | bool | int)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


# -- fields -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A resolved field: a system column, or a path into `data` (empty = `data` itself)."""

    name: str
    column: str | None
    kind: str  # uuid | text | int | ts | jsonb
    nullable: bool
    path: tuple[str, ...] = ()

    @property
    def is_data(self) -> bool:
        return self.column is None

    def json(self) -> Frag:
        """The jsonb value at the path (SQL NULL when missing)."""
        return "(r.data #> %s)", [list(self.path)]

    def text(self) -> Frag:
        """The value at the path as text (a string unquoted)."""
        return "(r.data #>> %s)", [list(self.path)]


def parse_field(value: Any, at: str, *, allow_data_root: bool = False) -> Field:
    """Resolve a field name (`data.a.b` or a system field) or raise a VALIDATION_ERROR."""
    if not isinstance(value, str):
        raise _invalid(
            at,
            f"field must be a string like 'data.status' or 'created_at', got {_type_name(value)}",
        )
    if value in _SYSTEM:
        column, kind, nullable = _SYSTEM[value]
        return Field(value, column, kind, nullable)
    if value == "data":
        if not allow_data_root:
            raise _invalid(at, "name a path inside the record, e.g. 'data.status'")
        return Field(value, None, "jsonb", True, ())
    if value.startswith("data."):
        segments = tuple(value[5:].split("."))
        if len(segments) > 16 or not all(_SEGMENT.match(s) for s in segments):
            raise _invalid(
                at,
                f"invalid data path '{value[:100]}': use 'data.' followed by up to 16"
                " dot-separated keys of letters, digits, '_' or '-'",
            )
        return Field(value, None, "jsonb", True, segments)
    raise _invalid(
        at,
        f"unknown field '{value[:100]}': use 'data.<path>' or one of {', '.join(_SYSTEM)}",
    )


def _nest(path: tuple[str, ...], value: Any) -> Any:
    for key in reversed(path):
        value = {key: value}
    return value


def _containable(f: Field) -> bool:
    # Containment addresses object keys only; an integer segment may be an array position.
    return bool(f.path) and not any(_INDEX.match(s) for s in f.path)


# -- filter compiler ----------------------------------------------------------------------------


class FilterCompiler:
    """Validates a filter tree and compiles it to one SQL boolean expression over `r`."""

    def __init__(self) -> None:
        self.conditions = 0
        self.searches: list[Frag] = []  # score expressions, one per `search` condition

    def compile(self, node: Any, at: str = "$.filter") -> Frag:
        """The SQL condition for a whole filter (validated first, all or nothing)."""
        return self._node(node, at, 1)

    def _node(self, node: Any, at: str, depth: int) -> Frag:
        if not isinstance(node, dict):
            raise _invalid(
                at,
                "a filter node must be an object: a condition {field, op, value} or a group"
                " {and: [...]}, {or: [...]}, {not: {...}}",
            )
        if depth > MAX_DEPTH:
            raise _invalid(at, f"filter nests deeper than {MAX_DEPTH} levels; flatten it")
        groups = [k for k in ("and", "or", "not") if k in node]
        if groups:
            if len(node) != 1:
                other = sorted(k for k in node if k != groups[0])[0]
                raise _invalid(
                    f"{at}.{other}", f"a group has only its '{groups[0]}' key; nest the rest"
                )
            key = groups[0]
            if key == "not":
                sql, params = self._node(node["not"], f"{at}.not", depth + 1)
                return f"(NOT {sql})", params
            items = node[key]
            if not isinstance(items, list) or not items:
                raise _invalid(f"{at}.{key}", f"'{key}' takes a non-empty list of filter nodes")
            parts = [
                self._node(item, f"{at}.{key}[{i}]", depth + 1) for i, item in enumerate(items)
            ]
            return _join(parts, f" {key.upper()} ")
        return self._condition(node, at)

    def _condition(self, node: dict[str, Any], at: str) -> Frag:
        for key in node:
            if key not in ("field", "op", "value"):
                raise _invalid(
                    f"{at}.{key}",
                    f"unknown key '{str(key)[:50]}': a condition has field, op and value",
                )
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise _invalid(at, f"a filter may hold at most {MAX_CONDITIONS} conditions")
        op = node.get("op")
        if op not in OPS:
            raise _invalid(f"{at}.op", f"unknown op {str(op)[:50]!r}: use one of {', '.join(OPS)}")
        if "field" not in node:
            raise _invalid(f"{at}.field", "a condition needs a field, e.g. 'data.status'")
        f = parse_field(node["field"], f"{at}.field", allow_data_root=op in ("has", "search"))
        vat = f"{at}.value"
        value = node.get("value")
        if op in ("is_null", "is_not_null"):
            if value not in (None, True):
                raise _invalid(vat, f"{op} takes no value (or true)")
            if f.column:
                frag: Frag = (f"({f.column} IS NULL)", [])
            else:
                j, p = f.json()
                frag = (f"(coalesce(jsonb_typeof{j}, 'null') = 'null')", p)
            return frag if op == "is_null" else (f"(NOT {frag[0]})", frag[1])
        if "value" not in node or value is None:
            hint = " (use is_null / is_not_null for null)" if "value" in node else ""
            raise _invalid(vat, f"{op} needs a value{hint}")
        if f.is_data:
            return self._data_condition(f, op, value, vat)
        return self._system_condition(f, op, value, vat)

    # -- data paths --------------------------------------------------------------------

    def _data_condition(self, f: Field, op: str, value: Any, vat: str) -> Frag:
        if op in ("eq", "neq"):
            if not _is_scalar(value) and not isinstance(value, dict | list):
                raise _invalid(vat, f"{op} takes a string, number, boolean, object or array")
            frag = self._data_eq(f, value)
            return frag if op == "eq" else (f"(NOT {frag[0]})", frag[1])
        if op in ("in", "not_in"):
            values = _scalar_list(value, vat, op)
            if len(values) <= _IN_CONTAINMENT_MAX or not _containable(f):
                frag = _join([self._data_eq(f, v) for v in values], " OR ")
            else:
                j, p = f.json()
                frag = (
                    f"coalesce({j} = ANY(%s::jsonb[]), false)",
                    [*p, [Jsonb(v) for v in values]],
                )
            return frag if op == "in" else (f"(NOT {frag[0]})", frag[1])
        if op in ("gt", "gte", "lt", "lte"):
            cmp = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
            if not _is_scalar(value):
                raise _invalid(
                    vat, f"{op} compares with a string, number or boolean, not {_type_name(value)}"
                )
            at_time = parse_instant(value)
            if at_time is not None:
                t, p = f.text()
                return f"coalesce(rekor_try_timestamptz{t} {cmp} %s, false)", [*p, at_time]
            if isinstance(value, str) and DATETIME_RE.match(value):
                raise _invalid(vat, f"'{value}' looks like a datetime but is not a valid one")
            j, p = f.json()
            if isinstance(value, str):
                t, tp = f.text()
                return (
                    f"coalesce(jsonb_typeof{j} = 'string' AND {t} COLLATE \"C\" {cmp} %s, false)",
                    [*p, *tp, value],
                )
            jtype = "boolean" if isinstance(value, bool) else "number"
            return (
                f"coalesce(jsonb_typeof{j} = '{jtype}' AND {j} {cmp} %s, false)",
                [*p, *p, Jsonb(value)],
            )
        if op in ("like", "ilike"):
            pattern = _like_pattern(value, vat, op)
            j, p = f.json()
            t, tp = f.text()
            kw = "LIKE" if op == "like" else "ILIKE"
            return (
                f"coalesce(jsonb_typeof{j} = 'string' AND {t} {kw} %s, false)",
                [*p, *tp, pattern],
            )
        if op == "has":
            if not _is_scalar(value):
                raise _invalid(
                    vat,
                    "has takes a string (an array element or an object key), a number or a"
                    f" boolean (an array element), not {_type_name(value)}",
                )
            j, p = f.json()
            if not f.path:
                if not isinstance(value, str):
                    raise _invalid(vat, "has on 'data' takes a key name (a string)")
                return "(r.data ? %s)", [value]
            if _containable(f):
                # The array case is a containment the GIN index can serve.
                arr: Frag = ("(r.data @> %s)", [Jsonb(_nest(f.path, [value]))])
                if not isinstance(value, str):
                    return arr
                return (
                    f"({arr[0]} OR coalesce(jsonb_typeof{j} = 'object' AND {j} ? %s, false))",
                    [*arr[1], *p, *p, value],
                )
            if not isinstance(value, str):
                return (
                    f"coalesce(jsonb_typeof{j} = 'array' AND {j} @> %s, false)",
                    [*p, *p, Jsonb([value])],
                )
            return (
                f"coalesce(CASE jsonb_typeof{j} WHEN 'array' THEN {j} @> %s"
                f" WHEN 'object' THEN {j} ? %s ELSE false END, false)",
                [*p, *p, Jsonb([value]), *p, value],
            )
        # search
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            raise _invalid(vat, "search takes a non-empty string of at most 200 characters")
        if f.path:
            t, tp = f.text()
        else:
            t = "(jsonb_path_query_array(r.data, 'strict $.** ? (@.type() == \"string\")')::text)"
            tp = []
        self.searches.append((f"coalesce(word_similarity(%s, {t}), 0)", [value, *tp]))
        return f"coalesce(word_similarity(%s, {t}) >= %s, false)", [value, *tp, SEARCH_THRESHOLD]

    @staticmethod
    def _data_eq(f: Field, value: Any) -> Frag:
        if _is_scalar(value) and _containable(f):
            return "(r.data @> %s)", [Jsonb(_nest(f.path, value))]
        j, p = f.json()
        return f"coalesce({j} = %s, false)", [*p, Jsonb(value)]

    # -- system fields -----------------------------------------------------------------

    def _system_condition(self, f: Field, op: str, value: Any, vat: str) -> Frag:
        col = f.column
        assert col is not None
        if op in ("has", "search"):
            raise _invalid(
                vat.rsplit(".", 1)[0] + ".op", f"{op} works on data fields, not on '{f.name}'"
            )
        if op in ("like", "ilike"):
            if f.kind not in ("text", "uuid"):
                raise _invalid(
                    vat.rsplit(".", 1)[0] + ".op", f"{op} needs a text field, not '{f.name}'"
                )
            pattern = _like_pattern(value, vat, op)
            kw = "LIKE" if op == "like" else "ILIKE"
            return f"coalesce({col}::text {kw} %s, false)", [pattern]
        wrap = (lambda s: f"coalesce({s}, false)") if f.nullable else (lambda s: f"({s})")
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not value or len(value) > MAX_LIST:
                raise _invalid(vat, f"{op} takes a list of 1 to {MAX_LIST} values")
            values = [_system_value(f, v, f"{vat}[{i}]") for i, v in enumerate(value)]
            frag = (wrap(f"{col} = ANY(%s)"), [values])
            return frag if op == "in" else (f"(NOT {frag[0]})", frag[1])
        bound = _system_value(f, value, vat)
        if op in ("eq", "neq"):
            frag = (wrap(f"{col} = %s"), [bound])
            return frag if op == "eq" else (f"(NOT {frag[0]})", frag[1])
        cmp = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
        target = f'{col} COLLATE "C"' if f.kind == "text" else col
        return wrap(f"{target} {cmp} %s"), [bound]


def _join(parts: list[Frag], sep: str) -> Frag:
    if len(parts) == 1:
        return parts[0]
    params: list[Any] = []
    for _, p in parts:
        params.extend(p)
    return "(" + sep.join(s for s, _ in parts) + ")", params


def _scalar_list(value: Any, at: str, op: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise _invalid(at, f'{op} takes a non-empty list of values, e.g. ["p0", "p1"]')
    if len(value) > MAX_LIST:
        raise _invalid(at, f"{op} takes at most {MAX_LIST} values")
    for i, v in enumerate(value):
        if not _is_scalar(v):
            raise _invalid(
                f"{at}[{i}]", f"{op} values are strings, numbers or booleans, not {_type_name(v)}"
            )
    return value


def _like_pattern(value: Any, at: str, op: str) -> str:
    if not isinstance(value, str):
        raise _invalid(at, f"{op} takes a string pattern such as 'API%', not {_type_name(value)}")
    if (len(value) - len(value.rstrip("\\"))) % 2 == 1:
        raise _invalid(at, "a pattern cannot end with a lone escape character '\\'")
    return value


def _system_value(f: Field, value: Any, at: str) -> Any:
    if f.kind == "uuid":
        if isinstance(value, str):
            try:
                return uuid.UUID(value)
            except ValueError:
                pass
        raise _invalid(at, f"'{f.name}' compares with a record UUID")
    if f.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(at, f"'{f.name}' compares with an integer, not {_type_name(value)}")
        return value
    if f.kind == "ts":
        instant = parse_instant(value)
        if instant is None:
            raise _invalid(
                at,
                f"'{f.name}' compares with an ISO-8601 timestamp with a time zone, e.g."
                " 2026-01-31T12:00:00Z",
            )
        return instant
    if not isinstance(value, str):
        raise _invalid(at, f"'{f.name}' compares with a string, not {_type_name(value)}")
    return value


# -- sort and cursor ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SortKey:
    """One ORDER BY key; `kind` says how its value travels in a cursor."""

    sql: str
    params: list[Any]
    desc: bool
    kind: str  # uuid | text | int | ts | jsonb | float
    nullable: bool

    def order(self) -> str:
        direction = " DESC" if self.desc else ""
        # Missing values last in both directions; NOT NULL columns keep the plain form so a
        # btree can serve the order (the planner does not reason about NULLS LAST vs NOT NULL).
        return f"{self.sql}{direction}{' NULLS LAST' if self.nullable else ''}"

    def cursor_sql(self) -> str:
        # jsonb travels as its exact text: a round trip through Python floats could change
        # a number and break the keyset comparison.
        return f"({self.sql})::text" if self.kind == "jsonb" else self.sql

    def bind(self, value: Any) -> tuple[str, Any]:
        return ("%s::jsonb", value) if self.kind == "jsonb" else ("%s", value)


_ID_KEY_ASC = SortKey("r.id", [], False, "uuid", False)
_ID_KEY_DESC = SortKey("r.id", [], True, "uuid", False)


def parse_sort(value: Any, score: Frag | None) -> list[SortKey]:
    """Validate `sort` and return the keys, always ending with the `id` tiebreak."""
    if value is None:
        value = [{"field": "_search_score", "direction": "desc"}] if score else []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or len(value) > MAX_SORT_KEYS:
        raise _invalid(
            "$.sort",
            f"sort is a list of up to {MAX_SORT_KEYS} items like"
            ' {"field": "created_at", "direction": "desc"}',
        )
    keys: list[SortKey] = []
    for i, item in enumerate(value):
        at = f"$.sort[{i}]"
        if not isinstance(item, dict):
            raise _invalid(at, 'a sort item is an object {"field", "direction"}')
        for k in item:
            if k not in ("field", "direction"):
                raise _invalid(f"{at}.{k}", "a sort item has only field and direction")
        direction = item.get("direction", "asc")
        if direction not in ("asc", "desc"):
            raise _invalid(f"{at}.direction", "direction is 'asc' or 'desc'")
        desc = direction == "desc"
        name = item.get("field")
        if name == "_search_score":
            if score is None:
                raise _invalid(f"{at}.field", "_search_score needs a search condition")
            keys.append(SortKey(score[0], score[1], desc, "float", False))
            continue
        f = parse_field(name, f"{at}.field")
        if f.column:
            keys.append(SortKey(f.column, [], desc, f.kind, f.nullable))
        else:
            j, p = f.json()
            keys.append(SortKey(f"NULLIF({j}, 'null'::jsonb)", p, desc, "jsonb", True))
        if f.name == "id":
            return keys  # ids are unique: later keys could never matter
    keys.append(_ID_KEY_DESC if keys and keys[-1].desc else _ID_KEY_ASC)
    return keys


def _cursor_check(signature: str, values: list[Any]) -> str:
    raw = msgspec.json.encode([signature, values])
    return hashlib.sha256(raw).hexdigest()[:16]


def make_cursor(signature: str, values: list[Any]) -> str:
    """An opaque keyset cursor: the last row's sort values, bound to the query's signature."""
    return encode_cursor(
        {"k": "q", "h": signature, "v": values, "c": _cursor_check(signature, values)}
    )


def read_cursor(cursor: Any, signature: str, keys: list[SortKey]) -> list[Any]:
    """Decode and check a cursor made by `make_cursor` for this very query."""
    if not isinstance(cursor, str) or not cursor:
        raise _invalid("$.cursor", "cursor is the next_cursor string of a previous page")
    payload = decode_cursor(cursor, "q")
    values = payload.get("v")
    if (
        not isinstance(values, list)
        or len(values) != len(keys)
        or payload.get("c") != _cursor_check(str(payload.get("h")), values)
    ):
        raise _invalid("$.cursor", "cursor is damaged: pass back next_cursor unchanged")
    if payload.get("h") != signature:
        raise _invalid(
            "$.cursor",
            "cursor belongs to a different query (workspace, collection, filter, sort or"
            " as_of changed): start again without a cursor",
        )
    out = []
    for key, v in zip(keys, values, strict=True):
        out.append(_cursor_value(key, v))
    return out


def _cursor_value(key: SortKey, v: Any) -> Any:
    bad = _invalid("$.cursor", "cursor is damaged: pass back next_cursor unchanged")
    if v is None:
        if not key.nullable:
            raise bad
        return None
    try:
        if key.kind == "uuid":
            return uuid.UUID(v)
        if key.kind == "ts":
            at = datetime.fromisoformat(v)
            if at.tzinfo is None:
                raise bad
            return at
        if key.kind == "int" and isinstance(v, int) and not isinstance(v, bool):
            return v
        if key.kind == "float" and isinstance(v, int | float) and math.isfinite(v):
            return float(v)
        if key.kind == "text" and isinstance(v, str):
            return v
        if key.kind == "jsonb" and isinstance(v, str):
            msgspec.json.decode(v)
            return v
    except (ValueError, TypeError, msgspec.DecodeError):
        raise bad from None
    raise bad


def _cursor_json(key: SortKey, v: Any) -> Any:
    if v is None:
        return None
    if key.kind == "ts":
        return v.isoformat()
    if key.kind == "uuid":
        return str(v)
    return v


def _keyset(keys: list[SortKey], values: list[Any]) -> Frag:
    """Rows strictly after `values` in the order of `keys` (missing values sort last)."""
    if len({k.desc for k in keys}) == 1 and not any(k.nullable for k in keys):
        # A row comparison is what lets a btree start right at the cursor.
        lhs = ", ".join(k.sql for k in keys)
        rhs = ", ".join(k.bind(v)[0] for k, v in zip(keys, values, strict=True))
        params: list[Any] = []
        for k in keys:
            params.extend(k.params)
        params.extend(values)
        return f"(({lhs}) {'<' if keys[0].desc else '>'} ({rhs}))", params
    branches: list[Frag] = []
    for i, key in enumerate(keys):
        v = values[i]
        if v is None:
            continue  # nothing sorts after a missing value except other missing values
        parts: list[Frag] = []
        for prev, pv in zip(keys[:i], values[:i], strict=True):
            if pv is None:
                parts.append((f"({prev.sql}) IS NULL", list(prev.params)))
            else:
                ph, bound = prev.bind(pv)
                parts.append((f"({prev.sql}) = {ph}", [*prev.params, bound]))
        ph, bound = key.bind(v)
        after = f"({key.sql}) {'<' if key.desc else '>'} {ph}"
        if key.nullable:
            parts.append((f"({after} OR ({key.sql}) IS NULL)", [*key.params, bound, *key.params]))
        else:
            parts.append((after, [*key.params, bound]))
        branches.append(_join(parts, " AND "))
    if not branches:
        return "false", []
    return _join(branches, " OR ")


# -- sources ----------------------------------------------------------------------------------

# The collection as it was at a seq, rebuilt from the log with the columns of `records`, so
# one compiled filter serves both. Record ids are never reused, so a stream's version 1 is
# its creation.
_AS_OF_SOURCE = """(
    SELECT e.workspace_id, e.data ->> 'collection' AS collection, (e.data ->> 'id')::uuid AS id,
           e.data ->> 'external_id' AS external_id,
           e.data ->> 'external_source' AS external_source,
           e.data -> 'data' AS data, (e.data ->> 'version')::integer AS version,
           f.recorded_at AS created_at, e.recorded_at AS updated_at,
           f.seq AS created_seq, e.seq AS updated_seq
      FROM (SELECT DISTINCT ON (ev.stream) ev.workspace_id, ev.type, ev.stream, ev.data,
                   ev.seq, ev.recorded_at
              FROM events ev
             WHERE ev.workspace_id = %s AND (ev.data ->> 'collection') = %s AND ev.seq <= %s
               AND ev.type IN ('record.created', 'record.updated', 'record.deleted')
             ORDER BY ev.stream, ev.seq DESC) e
      JOIN events f ON f.workspace_id = e.workspace_id AND f.stream = e.stream
                   AND f.stream_version = 1
     WHERE e.type <> 'record.deleted')"""


def _source(workspace_id: str, collection: str, cut: int | None) -> Frag:
    if cut is None:
        return "records", []
    return _AS_OF_SOURCE, [workspace_id, collection, cut]


# -- queries ----------------------------------------------------------------------------------


def check_limit(value: Any) -> int:
    """`limit` is an integer 1..1000 (default 50)."""
    if value is None:
        return DEFAULT_LIMIT
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise _invalid("$.limit", f"limit must be an integer from 1 to {MAX_LIMIT}, got {value!r}")
    return value


@dataclass
class QueryPlan:
    """A validated, compiled query; run it with `run_query`."""

    where: Frag | None
    score: Frag | None
    keys: list[SortKey]
    limit: int
    offset: int
    after: list[Any] | None
    fields: list[str] | None
    count: bool
    signature: str
    index_backed: bool = False


def _signature(*parts: Any) -> str:
    try:
        raw = msgspec.json.encode(list(parts), order="sorted")
    except (TypeError, msgspec.EncodeError):
        raw = repr(parts).encode()
    return hashlib.sha256(raw).hexdigest()[:24]


def compile_filter(value: Any) -> tuple[Frag | None, Frag | None]:
    """Compile a filter (None = everything) to its condition and its search score."""
    if value is None:
        return None, None
    compiler = FilterCompiler()
    where = compiler.compile(value)
    score = None
    if compiler.searches:
        score = _join(compiler.searches, ", ")
        if len(compiler.searches) > 1:
            score = (f"GREATEST{score[0]}", score[1])
    return where, score


def _check_fields(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or len(value) > MAX_FIELDS:
        raise _invalid("$.fields", f"fields is a list of 1 to {MAX_FIELDS} field names")
    for i, name in enumerate(value):
        if name in _PROJECTABLE:
            continue
        if name == "_search_score":
            continue
        parse_field(name, f"$.fields[{i}]")
    return list(dict.fromkeys(value))


def compile_query(
    workspace_id: str,
    collection: str,
    *,
    filter: Any = None,
    sort: Any = None,
    limit: Any = None,
    cursor: Any = None,
    offset: Any = None,
    fields: Any = None,
    count: Any = False,
    as_of: Any = None,
) -> QueryPlan:
    """Validate every part of a query request and compile it (no database access)."""
    where, score = compile_filter(filter)
    keys = parse_sort(sort, score)
    lim = check_limit(limit)
    if offset is not None and (
        isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET
    ):
        raise _invalid(
            "$.offset", f"offset is an integer from 0 to {MAX_OFFSET}; page deeper with cursor"
        )
    if cursor is not None and offset:
        raise _invalid("$.offset", "use either cursor or offset, not both")
    if not isinstance(count, bool):
        raise _invalid("$.count", "count is true or false")
    signature = _signature(workspace_id, collection, filter, sort, as_of)
    after = read_cursor(cursor, signature, keys) if cursor is not None else None
    return QueryPlan(
        where=where,
        score=score,
        keys=keys,
        limit=lim,
        offset=offset or 0,
        after=after,
        fields=_check_fields(fields),
        count=count,
        signature=signature,
        index_backed=filter is not None and index_backed(filter),
    )


def index_backed(node: dict[str, Any]) -> bool:
    """True when an index can find the rows of a (validated) filter without reading the
    whole collection: some AND branch, or every OR branch, is an `eq`/`in` the GIN index
    (containment) or a btree (id, external_id) serves."""
    if "and" in node:
        return any(index_backed(n) for n in node["and"])
    if "or" in node:
        return all(index_backed(n) for n in node["or"])
    if "not" in node:
        return False
    op, name, value = node["op"], node["field"], node.get("value")
    if name in ("id", "external_id"):
        return op in ("eq", "in")
    if not name.startswith("data.") or not _containable(parse_field(name, "")):
        return False
    if op == "eq":
        return _is_scalar(value)
    if op == "in":
        return len(value) <= _IN_CONTAINMENT_MAX
    return op == "has" and not isinstance(value, str)  # a string may also be an object key


class _Sql:
    """SQL text with its parameters in the order the placeholders appear."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.params: list[Any] = []

    def add(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> _Sql:
        self.parts.append(sql)
        self.params.extend(params)
        return self

    def text(self) -> str:
        return "".join(self.parts)


def _where(q: _Sql, workspace_id: str, collection: str, where: Frag | None) -> None:
    q.add(" WHERE r.workspace_id = %s AND r.collection = %s", [workspace_id, collection])
    if where is not None:
        q.add(" AND ", []).add(*where)


async def prepare_read(
    conn: psycopg.AsyncConnection, workspace_id: str, collection: str, cut: int | None
) -> Any:
    """In one round trip: settings for this read's transaction, and NOT_FOUND unless the
    workspace exists and the collection exists (or, at `cut`, had been created by then).
    Returns the collection's JSON Schema (None when, at `cut`, it no longer exists).

    The settings are local to the caller's transaction (the whole read must run in one): a
    statement timeout, and custom plans always. One SQL text
    serves `eq severity` (a quarter of the rows: walk the sort index) and `eq customer_id`
    (ten rows: GIN bitmap); a cached generic plan would pick one strategy for both.
    """
    sql = (
        "SELECT set_config('statement_timeout', %s, true),"
        " set_config('plan_cache_mode', 'force_custom_plan', true),"
        " EXISTS (SELECT 1 FROM workspaces WHERE workspace_id = %s AND created_at IS NOT NULL"
        " AND deleted_at IS NULL),"
        " (SELECT json_schema FROM collections WHERE workspace_id = %s AND name = %s)"
    )
    params: list[Any] = [str(STATEMENT_TIMEOUT_MS), workspace_id, workspace_id, collection]
    if cut is not None:
        sql += (
            ", EXISTS (SELECT 1 FROM events WHERE workspace_id = %s AND stream = %s AND seq <= %s)"
        )
        params += [workspace_id, f"collection:{collection}", cut]
    cur = await conn.execute(sql, params)  # type: ignore[arg-type]
    row = await cur.fetchone()
    assert row is not None
    if not row[2]:
        raise NotFound(
            f"workspace '{workspace_id}' not found",
            [{"path": "workspace_id", "message": "list workspaces to see the ids you can use"}],
        )
    if row[3] is None and not (cut is not None and row[4]):
        raise NotFound(
            f"collection '{collection}' not found in workspace '{workspace_id}'",
            [{"path": "collection", "message": "list collections to see what exists"}],
        )
    return row[3]


async def _fetch(conn: psycopg.AsyncConnection, q: _Sql) -> list[dict[str, Any]]:
    try:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(q.text(), q.params)  # type: ignore[arg-type]
            return await cur.fetchall()
    except psycopg.errors.QueryCanceled as exc:
        raise _invalid(
            "$.filter",
            f"the query ran longer than {STATEMENT_TIMEOUT_MS // 1000} s; add a more selective"
            " condition (eq / in on a data field uses the index)",
        ) from exc


# Columns whose btree (with the collection and id) yields rows in sort order; see the walk
# strategy in `run_query`.
_WALKABLE = {"r.id", "r.created_at", "r.updated_at"}


def walk_windows(plan: QueryPlan, cut: int | None) -> tuple[int, int] | None:
    """The probe and the full window of the ordered walk (rows in sort order the filter may
    examine), or None when the query is not suited for it (no filter, a sort no btree serves,
    offset, time travel)."""
    if plan.where is None or cut is not None or plan.offset:
        return None
    if len({k.desc for k in plan.keys}) != 1 or not all(k.sql in _WALKABLE for k in plan.keys):
        return None
    full = min(max(WALK_MIN, WALK_ROWS_PER_RESULT * (plan.limit + 1)), WALK_MAX)
    return max(1, full // WALK_PROBE_FRACTION), full


def query_sql(
    workspace_id: str,
    collection: str,
    plan: QueryPlan,
    cut: int | None = None,
    *,
    window: int | None = None,
) -> tuple[str, list[Any]]:
    """The SELECT for a compiled query (text, parameters; the projected data paths come back
    as columns `_f0`, `_f1`... in `projected_paths` order). With `window`, the filter only looks
    at the first `window` rows in sort order."""
    q = _Sql().add(
        "SELECT r.id::text AS id, r.collection, r.external_id, r.external_source, r.version,"
        " r.created_at, r.updated_at, r.updated_seq"
    )
    paths = projected_paths(plan)
    if paths is None:
        q.add(", r.data")
    for i, path in enumerate(paths or ()):
        q.add(f", (r.data #> %s)::text AS _f{i}", [list(path)])
    if plan.score is not None:
        q.add(f", {plan.score[0]} AS _search_score", plan.score[1])
    for i, key in enumerate(plan.keys):
        q.add(f", {key.cursor_sql()} AS _k{i}", key.params)
    order = " ORDER BY " + ", ".join(k.order() for k in plan.keys)
    order_params = [p for k in plan.keys for p in k.params]
    if window is None:
        q.add(" FROM ").add(*_source(workspace_id, collection, cut)).add(" r")
        _where(q, workspace_id, collection, plan.where)
        if plan.after is not None:
            q.add(" AND ").add(*_keyset(plan.keys, plan.after))
    else:
        q.add(" FROM (SELECT * FROM ").add(*_source(workspace_id, collection, cut)).add(" r")
        _where(q, workspace_id, collection, None)
        if plan.after is not None:
            q.add(" AND ").add(*_keyset(plan.keys, plan.after))
        q.add(order, order_params).add(f" LIMIT {int(window)}) r")  # a literal: see `_walk`
        if plan.where is not None:
            q.add(" WHERE ").add(*plan.where)
    q.add(order, order_params)
    q.add(" LIMIT %s", [plan.limit + 1])
    if plan.offset:
        q.add(" OFFSET %s", [plan.offset])
    return q.text(), q.params


def projected_paths(plan: QueryPlan) -> list[tuple[str, ...]] | None:
    """The data paths a `fields` projection selects, or None when whole `data` is returned."""
    if plan.fields is None or "data" in plan.fields:
        return None
    return [tuple(name[5:].split(".")) for name in plan.fields if name.startswith("data.")]


async def _set(conn: psycopg.AsyncConnection, names: tuple[str, ...], value: str) -> None:
    sql = "SELECT " + ", ".join("set_config(%s, %s, true)" for _ in names)
    await conn.execute(sql, [x for name in names for x in (name, value)])  # type: ignore[arg-type]


async def _walk(
    conn: psycopg.AsyncConnection,
    workspace_id: str,
    collection: str,
    plan: QueryPlan,
    windows: tuple[int, int],
) -> list[dict[str, Any]] | None:
    """The page found by walking the sort order through a bounded window, or None when the
    window holds less than a page.

    A probe of a tenth of the window comes first: it fills the page when ~10% of the rows
    match, and otherwise shows how selective the filter is. With 0 or 1 matches in the probe
    (about 0.2% of rows or fewer, unless that one match already predicts a full page), the
    index lookup comes next: a filter matching 0.01% of a million rows costs a 510-row probe
    before it, not a 5,100-row walk. With 2 or more the walk goes on through the whole window:
    sending a 2% value to the index would fetch and sort its 20,000 matches (60 ms), while
    walking for a rarer one costs at most the window (~4 ms). (When no index serves the
    filter, the caller walks on unbounded.)
    """
    probe, full = windows
    wanted = plan.limit + 1
    await conn.execute("SELECT set_config('plan_cache_mode', 'force_generic_plan', true)")
    rows = await _fetch(conn, _window_sql(workspace_id, collection, plan, probe))
    if len(rows) > plan.limit:
        return rows
    found = len(rows)
    if not plan.index_backed or full == probe or (found < 2 and found * full < wanted * probe):
        return None
    rows = await _fetch(conn, _window_sql(workspace_id, collection, plan, full))
    return rows if len(rows) > plan.limit else None


def _window_sql(workspace_id: str, collection: str, plan: QueryPlan, window: int) -> _Sql:
    text, params = query_sql(workspace_id, collection, plan, window=window)
    return _Sql().add(text, params)


async def run_query(
    conn: psycopg.AsyncConnection,
    workspace_id: str,
    collection: str,
    plan: QueryPlan,
    cut: int | None = None,
) -> dict[str, Any]:
    """Run a compiled query against the live records, or against the log at seq `cut`.

    A filtered page sorted by id / created_at / updated_at is found one of two ways, and the
    planner's estimate cannot choose reliably (jsonb containment selectivity is a guess: it
    takes `customer_id = 5991`, 115 rows of 1M, for 10,000 and walks 400,000 rows). So:
    first walk the sort index through a bounded window of rows (cheap, and enough whenever at
    least ~1% of rows match; see `_walk`); only if that finds less than a page, the filter is
    selective, so fetch its matches through the GIN index (bitmap) and sort them, or, when no
    index serves the filter, walk on. Either way the page is exact: the first matches within
    the first rows in sort order are the first matches.
    """
    windows = walk_windows(plan, cut)
    rows = None if windows is None else await _walk(conn, workspace_id, collection, plan, windows)
    if rows is None:
        # Selective and index-backed: the index finds the few matches (no ordered walk).
        # Selective but no index can help: keep walking the sort order to the end of the page
        # rather than let the planner read and sort the whole collection.
        settings = (
            ("enable_indexscan",) if plan.index_backed else ("enable_seqscan", "enable_bitmapscan")
        )
        if windows is not None:
            await _set(conn, settings, "off")  # for this statement (and the read's end)
            await conn.execute("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)")
        text, params = query_sql(workspace_id, collection, plan, cut)
        rows = await _fetch(conn, _Sql().add(text, params))
        if windows is not None and plan.count:
            await _set(conn, settings, "on")
    data_paths = projected_paths(plan)

    more = len(rows) > plan.limit
    rows = rows[: plan.limit]
    next_cursor = None
    if more:
        last = rows[-1]
        values = [_cursor_json(k, last[f"_k{i}"]) for i, k in enumerate(plan.keys)]
        next_cursor = make_cursor(plan.signature, values)
    items = [_shape(row, plan, data_paths) for row in rows]
    out = page(items, plan.limit, next_cursor)
    if plan.count:
        cq = _Sql().add("SELECT count(*) AS n FROM ").add(*_source(workspace_id, collection, cut))
        cq.add(" r")
        _where(cq, workspace_id, collection, plan.where)
        out["meta"]["total"] = (await _fetch(conn, cq))[0]["n"]
    if cut is not None:
        out["meta"]["as_of_seq"] = cut
    return out


def _shape(row: dict[str, Any], plan: QueryPlan, data_paths: list[tuple[str, ...]] | None) -> dict:
    if plan.fields is None:
        item = record_json(row)
    else:
        full = record_json({**row, "data": row.get("data")})
        item = {"id": row["id"]}
        for name in _PROJECTABLE:
            if name in plan.fields and name != "data":
                item[name] = full[name]
        if "data" in plan.fields:
            item["data"] = row["data"]
        elif data_paths:
            data: dict[str, Any] = {}
            for i, path in enumerate(data_paths):
                raw = row[f"_f{i}"]
                if raw is not None:
                    _put(data, path, msgspec.json.decode(raw))
            item["data"] = data
    if plan.score is not None and (plan.fields is None or "_search_score" in plan.fields):
        item["_search_score"] = round(float(row["_search_score"]), 6)
    return item


def _put(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        nxt = target.get(key)
        if not isinstance(nxt, dict):
            nxt = target[key] = {}
        target = nxt
    target[path[-1]] = value


# -- aggregates ---------------------------------------------------------------------------------

AGG_FNS = ("count", "sum", "avg", "min", "max")


@dataclass
class AggregatePlan:
    """A validated aggregate request; run it with `run_aggregate`."""

    where: Frag | None
    groups: list[Field]
    aggs: list[tuple[str, str, Field | None]]  # (alias, fn, field)


def compile_aggregate(
    filter: Any = None, group_by: Any = None, aggregations: Any = None
) -> AggregatePlan:
    """Validate and compile `{filter, group_by, aggregations}`."""
    where, _ = compile_filter(filter)
    if group_by is None:
        group_by = []
    if isinstance(group_by, str):
        group_by = [group_by]
    if not isinstance(group_by, list) or len(group_by) > MAX_GROUP_BY:
        raise _invalid("$.group_by", f"group_by is a list of up to {MAX_GROUP_BY} fields")
    groups: list[Field] = []
    for i, name in enumerate(group_by):
        f = parse_field(name, f"$.group_by[{i}]")
        if any(g.name == f.name for g in groups):
            raise _invalid(f"$.group_by[{i}]", f"'{f.name}' is listed twice")
        groups.append(f)
    if aggregations is None:
        aggregations = [{"fn": "count"}]
    if (
        not isinstance(aggregations, list)
        or not aggregations
        or len(aggregations) > MAX_AGGREGATIONS
    ):
        raise _invalid(
            "$.aggregations",
            f"aggregations is a list of 1 to {MAX_AGGREGATIONS} items like"
            ' {"fn": "sum", "field": "data.amount", "alias": "total"}',
        )
    aggs: list[tuple[str, str, Field | None]] = []
    taken = {g.name for g in groups}
    for i, item in enumerate(aggregations):
        at = f"$.aggregations[{i}]"
        if not isinstance(item, dict):
            raise _invalid(at, 'an aggregation is an object {"fn", "field", "alias"}')
        for k in item:
            if k not in ("fn", "field", "alias"):
                raise _invalid(f"{at}.{k}", "an aggregation has only fn, field and alias")
        fn = item.get("fn")
        if fn not in AGG_FNS:
            raise _invalid(
                f"{at}.fn", f"unknown fn {str(fn)[:50]!r}: use one of {', '.join(AGG_FNS)}"
            )
        name = item.get("field")
        if name is None and fn != "count":
            raise _invalid(f"{at}.field", f"{fn} needs a field, e.g. 'data.amount'")
        f = parse_field(name, f"{at}.field") if name is not None else None
        if f is not None and f.column and fn != "count":
            if fn in ("sum", "avg") and f.kind != "int":
                raise _invalid(f"{at}.field", f"{fn} needs a numeric field ('version' or data.*)")
            if f.kind == "uuid":
                raise _invalid(f"{at}.field", f"{fn} does not apply to ids")
        alias = item.get("alias")
        if alias is None:
            alias = fn if name is None else f"{fn}_{name}"
        if not isinstance(alias, str) or not _ALIAS.match(alias):
            raise _invalid(
                f"{at}.alias", "alias is 1-64 letters, digits, '_' or '.', starting with a letter"
            )
        if alias in taken:
            raise _invalid(f"{at}.alias", f"'{alias}' is already used; give a distinct alias")
        taken.add(alias)
        aggs.append((alias, fn, f))
    return AggregatePlan(where=where, groups=groups, aggs=aggs)


_SCALAR_TYPES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean"}


def schema_scalar_type(schema: Any, path: tuple[str, ...]) -> str | None:
    """The one JSON type ('string', 'number' or 'boolean'; null aside) that the collection's
    JSON Schema allows at `path`, or None when it does not pin one down.

    Only plain `type`/`enum`/`const` and `properties` are read; every other keyword can only
    narrow further, so the answer stays true. Each ancestor must be `type: object`, so an
    integer segment cannot turn out to index an array. Live records always satisfy the
    current schema (a schema change that existing records violate is refused)."""
    node = schema
    for i, seg in enumerate(path):
        if not isinstance(node, dict):
            return None
        if i > 0 and node.get("type") != "object":
            return None
        props = node.get("properties")
        if not isinstance(props, dict) or not isinstance(props.get(seg), dict):
            return None
        node = props[seg]
    if not isinstance(node, dict):
        return None
    declared = node.get("type")
    if isinstance(declared, str):
        kinds = {declared}
    elif isinstance(declared, list) and all(isinstance(t, str) for t in declared):
        kinds = set(declared)
    elif isinstance(node.get("enum"), list) or "const" in node:
        options = node["enum"] if isinstance(node.get("enum"), list) else [node["const"]]
        kinds = {_type_name(v) for v in options}
        kinds = {"integer" if k == "number" else k for k in kinds}
    else:
        return None
    kinds.discard("null")
    types = {_SCALAR_TYPES.get(k, "other") for k in kinds}
    return types.pop() if len(types) == 1 and "other" not in types else None


# How a typed value at a path is read: as text (cheap), cast to its SQL type. Grouping and
# aggregating text is about twice as fast as jsonb values (hashing jsonb is the cost).
_TYPED_READ = {
    "string": "(r.data #>> %s)",
    "number": "((r.data #>> %s)::numeric)",
    "boolean": "((r.data #>> %s)::boolean)",
}


def _group_expr(f: Field, schema: Any) -> tuple[Frag, str]:
    if f.column:
        return (f.column, []), f.kind
    typed = schema_scalar_type(schema, f.path) if schema is not None else None
    if typed is not None:
        return (_TYPED_READ[typed], [list(f.path)]), typed
    j, p = f.json()
    return (f"NULLIF({j}, 'null'::jsonb)", p), "jsonb"


def _agg_expr(fn: str, f: Field | None, schema: Any) -> Frag:
    if f is None:
        return "count(*)", []
    if f.column:
        return f"{fn}({f.column})", []
    if fn == "count":
        # `#>>` is NULL for a missing field and for JSON null: the count of present values.
        return "count(r.data #>> %s)", [list(f.path)]
    if schema is not None and schema_scalar_type(schema, f.path) == "number":
        return f"{fn}((r.data #>> %s)::numeric)", [list(f.path)]
    # Only numbers take part; other values of the field are ignored.
    j, p = f.json()
    return f"{fn}(CASE WHEN jsonb_typeof{j} = 'number' THEN ({j})::numeric END)", [*p, *p]


def _number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def aggregate_sql(
    workspace_id: str,
    collection: str,
    plan: AggregatePlan,
    cut: int | None = None,
    schema: Any = None,
) -> tuple[str, list[Any], list[str]]:
    """The SELECT for an aggregate (text, parameters, kind of each group key). With the
    collection's `schema` (live records only), typed fields are read as text."""
    if cut is not None:
        schema = None  # past records answer to the schema of their time, not today's
    groups = [_group_expr(f, schema) for f in plan.groups]
    cols: list[Frag] = [(f"{sql} AS _g{i}", p) for i, ((sql, p), _) in enumerate(groups)]
    for i, (_, fn, f) in enumerate(plan.aggs):
        sql, p = _agg_expr(fn, f, schema)
        cols.append((f"{sql} AS _a{i}", p))
    q = _Sql()
    if groups:
        # Materialised so the grouping is planned on its own: with ORDER BY + LIMIT on top,
        # the planner sorts the whole collection to stream groups instead of hashing them.
        q.add("WITH g AS MATERIALIZED (")
    q.add("SELECT ")
    q.add(", ".join(sql for sql, _ in cols), [p for _, params in cols for p in params])
    q.add(" FROM ").add(*_source(workspace_id, collection, cut)).add(" r")
    _where(q, workspace_id, collection, plan.where)
    if groups:
        q.add(" GROUP BY " + ", ".join(str(i + 1) for i in range(len(groups))) + ")")
        q.add(" SELECT * FROM g ORDER BY ")
        q.add(", ".join(f"_g{i} NULLS LAST" for i in range(len(groups))))
        q.add(" LIMIT %s", [MAX_GROUPS + 1])
    return q.text(), q.params, [kind for _, kind in groups]


async def run_aggregate(
    conn: psycopg.AsyncConnection,
    workspace_id: str,
    collection: str,
    plan: AggregatePlan,
    cut: int | None = None,
    schema: Any = None,
) -> dict[str, Any]:
    """Run an aggregate over the live records, or over the log at seq `cut`."""
    text, params, kinds = aggregate_sql(workspace_id, collection, plan, cut, schema)
    generic = aggregate_sql(workspace_id, collection, plan, cut, None)
    if text == generic[0]:
        rows = await _fetch(conn, _Sql().add(text, params))
    else:
        try:
            async with conn.transaction():  # a savepoint: a failed cast must not end the read
                rows = await _fetch(conn, _Sql().add(text, params))
        except psycopg.errors.DataError:
            # A stored value that contradicts the schema (it should not exist): the generic
            # form handles any JSON.
            text, params, kinds = generic
            rows = await _fetch(conn, _Sql().add(text, params))
    truncated = len(rows) > MAX_GROUPS
    items = []
    for row in rows[:MAX_GROUPS]:
        item: dict[str, Any] = {}
        for i, (f, kind) in enumerate(zip(plan.groups, kinds, strict=True)):
            v = row[f"_g{i}"]
            if kind == "ts":
                v = _iso(v)
            elif kind == "uuid" and v is not None:
                v = str(v)
            item[f.name] = _number(v)
        for i, (alias, fn, _) in enumerate(plan.aggs):
            v = row[f"_a{i}"]
            item[alias] = _iso(v) if isinstance(v, datetime) else _number(v)
            if fn == "avg" and item[alias] is not None:
                item[alias] = float(item[alias])
        items.append(item)
    meta: dict[str, Any] = {"groups": len(items), "truncated": truncated}
    if cut is not None:
        meta["as_of_seq"] = cut
    return {"data": items, "meta": meta}
