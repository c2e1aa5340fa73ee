"""Atomic batches: up to 100 operations in one transaction, all or nothing.

Two phases. First every operation's shape is checked (types, fields, ids, references) without
touching the database, and every problem is reported at once with its operation index. Then the
whole batch runs as one job of the workspace writer: each operation goes through the same
command handler as a single request, so behaviour is identical, and later operations can name
records made by earlier ones (by `ref`, or by external id). The job runs inside a savepoint: if
any operation fails, the savepoint is rolled back and the error names the failing operation;
nothing of the batch is written and jobs sharing the group commit are unaffected.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from commands.handlers import Context, handle, prefetch
from commands.principal import Principal
from commands.relationships import (
    DeleteRelationship,
    RecordRef,
    UpsertRelationship,
    check_relationship_id,
    find_by_external_id_any_source,
    parse_record_ref,
)
from commands.types import (
    Command,
    CommandResult,
    DeleteCollection,
    DeleteRecord,
    PatchRecord,
    UpsertCollection,
    UpsertRecord,
)
from commands.validation import (
    check_data_object,
    check_expected_version,
    check_external,
    check_json_schema,
    check_record_id,
    check_slug,
    check_workspace_id,
)
from events.errors import NotFound, RekorError, ValidationError
from events.store import WorkspaceTx
from projections import relationships as rel_reads

if TYPE_CHECKING:
    from commands.writer import Work

MAX_OPERATIONS = 100
MAX_REF = 255

# Fields each operation type accepts besides `type` (they mirror the REST bodies).
_FIELDS: dict[str, set[str]] = {
    "upsert_collection": {"name", "collection", "json_schema", "description"},
    "delete_collection": {"name", "collection"},
    "upsert_record": {
        "collection",
        "data",
        "id",
        "external_id",
        "external_source",
        "expected_version",
        "ref",
    },
    "patch_record": {
        "collection",
        "id",
        "data",
        "external_id",
        "external_source",
        "expected_version",
    },
    "delete_record": {"collection", "id", "expected_version"},
    "upsert_relationship": {
        "rel_type",
        "source",
        "target",
        "source_collection",
        "source_id",
        "target_collection",
        "target_id",
        "data",
        "expected_version",
        "ref",
    },
    "delete_relationship": {
        "id",
        "rel_type",
        "source",
        "target",
        "source_collection",
        "source_id",
        "target_collection",
        "target_id",
        "expected_version",
    },
}

OPERATION_TYPES = tuple(_FIELDS)


class Names:
    """What earlier operations of this batch named with `ref`: record or relationship ids."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[str, str]] = {}  # ref -> (collection, id)
        self.relationships: dict[str, str] = {}  # ref -> id


Build = Callable[[WorkspaceTx, Names], Awaitable[Command]]


class Operation(msgspec.Struct, kw_only=True):
    """One checked operation, ready to become a command once earlier ones have run."""

    index: int
    type: str
    ref: str | None
    build: Build
    # The command itself when it does not depend on earlier operations (upsert_record): its
    # external-id lookup is loaded with all the others in one query before the batch runs.
    hint: Command | None = None


class _Invalid(Exception):
    """A shape problem at a JSON path inside one operation."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _wrap(path: str, exc: RekorError) -> _Invalid:
    # Checks shared with single requests report paths like "$.data" or "collection": re-root
    # them under this operation.
    detail = exc.details[0] if isinstance(exc.details, list) and exc.details else {}
    inner = detail.get("path") if isinstance(detail, dict) else None
    return _Invalid(_reroot(path, inner), exc.message)


def _reroot(op_path: str, inner: str | None) -> str:
    if not inner or inner == "$":
        return op_path
    if inner.startswith(op_path):
        return inner
    if inner.startswith("$."):
        return op_path + inner[1:]
    if inner.startswith("$["):
        return op_path + inner[1:]
    return f"{op_path}.{inner}"


# -- names made by earlier operations ---------------------------------------------------------


async def resolve_name(tx: WorkspaceTx, ref: RecordRef, names: Names, path: str) -> RecordRef:
    """Turn a batch name into a record id: a `ref` of an earlier operation, else the record
    with that external id in the collection (any source; ambiguous is an error)."""
    if ref.name is None:
        return ref
    if ref.name in names.records:
        collection, rid = names.records[ref.name]
        if collection != ref.collection:
            raise ValidationError(
                f"ref '{ref.name}' names a record of collection '{collection}', not"
                f" '{ref.collection}'",
                [{"path": path, "message": "use the collection the ref was created in"}],
            )
        return RecordRef(collection=collection, id=rid)
    found = await find_by_external_id_any_source(tx.conn, tx.workspace_id, ref.collection, ref.name)
    if not found:
        raise NotFound(
            f"no earlier operation has ref '{ref.name}' and collection '{ref.collection}' has no"
            f" record with external_id '{ref.name}'",
            [
                {
                    "path": path,
                    "message": "give the earlier operation this ref (or external_id), or use"
                    " the record's UUID",
                }
            ],
        )
    if len(found) > 1:
        sources = sorted(str(r["external_source"]) for r in found)
        raise ValidationError(
            f"external_id '{ref.name}' is ambiguous in collection '{ref.collection}': records"
            f" from several sources ({', '.join(sources)}) have it",
            [
                {
                    "path": path,
                    "message": 'use {"collection", "external_id", "external_source"} or the'
                    " record's UUID",
                }
            ],
        )
    return RecordRef(collection=ref.collection, id=found[0]["id"])


# -- phase 1: shape ---------------------------------------------------------------------------


def _get_name(op: dict[str, Any], path: str) -> str:
    if "name" in op and "collection" in op and op["name"] != op["collection"]:
        raise _Invalid(f"{path}.name", "give the collection's name once, as name or collection")
    name = op.get("name", op.get("collection"))
    if name is None:
        raise _Invalid(f"{path}.name", "name (the collection's name) is required")
    try:
        return check_slug(name, "collection name", "name")
    except ValidationError as exc:
        raise _wrap(path, exc) from exc


def _require(op: dict[str, Any], field: str, path: str) -> Any:
    if op.get(field) is None:
        raise _Invalid(f"{path}.{field}", f"{field} is required")
    return op[field]


def _collection(op: dict[str, Any], path: str, field: str = "collection") -> str:
    value = _require(op, field, path)
    try:
        return check_slug(value, "collection name", field)
    except ValidationError as exc:
        raise _wrap(path, exc) from exc


def _checked(path: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except ValidationError as exc:
        raise _wrap(path, exc) from exc


def _endpoint(op: dict[str, Any], end: str, path: str) -> RecordRef:
    flat = {f"{end}_collection", f"{end}_id"} & set(op)
    if end in op and flat:
        raise _Invalid(f"{path}.{end}", f"give {end} or {end}_collection/{end}_id, not both")
    if end in op:
        return _checked(path, lambda: parse_record_ref(op[end], f"{path}.{end}", allow_names=True))
    collection = _collection(op, path, f"{end}_collection")
    rid = _require(op, f"{end}_id", path)
    if not isinstance(rid, str) or not rid:
        raise _Invalid(f"{path}.{end}_id", f"{end}_id must be a non-empty string")
    return _checked(
        path,
        lambda: parse_record_ref(
            {"collection": collection, "id": rid}, f"{path}.{end}_id", allow_names=True
        ),
    )


def _record_target(op: dict[str, Any], path: str) -> RecordRef:
    collection = _collection(op, path)
    rid = _require(op, "id", path)
    if not isinstance(rid, str) or not rid:
        raise _Invalid(f"{path}.id", "id must be a record UUID, or a ref/external_id")
    return _checked(
        path,
        lambda: parse_record_ref(
            {"collection": collection, "id": rid}, f"{path}.id", allow_names=True
        ),
    )


def _parse(index: int, op: Any) -> Operation:
    path = f"$.operations[{index}]"
    if not isinstance(op, dict):
        raise _Invalid(path, f"an operation must be an object, got {type(op).__name__}")
    kind = op.get("type")
    if kind not in _FIELDS:
        raise _Invalid(
            f"{path}.type",
            f"unknown operation type {kind!r}; use one of {', '.join(OPERATION_TYPES)}",
        )
    unknown = sorted(set(op) - _FIELDS[kind] - {"type"})
    if unknown:
        raise _Invalid(
            f"{path}.{unknown[0]}",
            f"unknown field(s) {unknown} for {kind}; allowed: {sorted(_FIELDS[kind])}",
        )
    ref = op.get("ref")
    if ref is not None and (not isinstance(ref, str) or not 1 <= len(ref) <= MAX_REF):
        raise _Invalid(f"{path}.ref", f"ref must be a string of 1-{MAX_REF} characters")
    expected = _checked(path, check_expected_version, op.get("expected_version"))
    build: Build

    if kind == "upsert_collection":
        name = _get_name(op, path)
        schema = _checked(path, check_json_schema, op.get("json_schema"))
        description = op.get("description")
        if description is not None and not isinstance(description, str):
            raise _Invalid(f"{path}.description", "description must be a string")

        async def build(tx: WorkspaceTx, names: Names) -> Command:
            return UpsertCollection(name=name, json_schema=schema, description=description)

    elif kind == "delete_collection":
        name = _get_name(op, path)

        async def build(tx: WorkspaceTx, names: Names) -> Command:
            return DeleteCollection(name=name)

    elif kind == "upsert_record":
        collection = _collection(op, path)
        data = _checked(path, check_data_object, _require(op, "data", path))
        _checked(path, check_external, op.get("external_id"), op.get("external_source"))
        rid = _checked(path, check_record_id, op["id"], "$.id") if "id" in op else None
        upsert = UpsertRecord(
            collection=collection,
            data=data,
            id=rid,
            external_id=op.get("external_id"),
            external_source=op.get("external_source"),
            expected_version=expected,
        )

        async def build(tx: WorkspaceTx, names: Names) -> Command:
            return upsert

        return Operation(index=index, type=kind, ref=ref, build=build, hint=upsert)

    elif kind == "patch_record":
        target = _record_target(op, path)
        patch = {k: op[k] for k in ("data", "external_id", "external_source") if k in op}
        if "data" in patch and not isinstance(patch["data"], dict):
            raise _Invalid(f"{path}.data", "data in a merge patch must be an object")

        async def build(tx: WorkspaceTx, names: Names) -> Command:
            resolved = await resolve_name(tx, target, names, f"{path}.id")
            assert resolved.id is not None
            return PatchRecord(
                collection=resolved.collection,
                id=resolved.id,
                patch=patch,
                expected_version=expected,
            )

    elif kind == "delete_record":
        target = _record_target(op, path)

        async def build(tx: WorkspaceTx, names: Names) -> Command:
            resolved = await resolve_name(tx, target, names, f"{path}.id")
            assert resolved.id is not None
            return DeleteRecord(
                collection=resolved.collection, id=resolved.id, expected_version=expected
            )

    elif kind == "upsert_relationship":
        rel_type = _checked(
            path, check_slug, _require(op, "rel_type", path), "relationship type", "rel_type"
        )
        source = _endpoint(op, "source", path)
        target = _endpoint(op, "target", path)
        rel_data = op.get("data")
        if rel_data is not None:
            _checked(path, check_data_object, rel_data)

        async def build(tx: WorkspaceTx, names: Names) -> Command:
            return UpsertRelationship(
                rel_type=rel_type,
                source=await resolve_name(tx, source, names, _end_path(path, op, "source")),
                target=await resolve_name(tx, target, names, _end_path(path, op, "target")),
                data=rel_data,
                expected_version=expected,
            )

    else:  # delete_relationship: by id (or an earlier ref), or by (rel_type, source, target)
        build = _delete_relationship(op, path, expected)

    return Operation(index=index, type=kind, ref=ref, build=build)


def _end_path(path: str, op: dict[str, Any], end: str) -> str:
    return f"{path}.{end}" if end in op else f"{path}.{end}_id"


def _delete_relationship(op: dict[str, Any], path: str, expected: int | None) -> Build:
    if "id" in op:
        if set(op) & {"rel_type", "source", "target", "source_id", "target_id"}:
            raise _Invalid(f"{path}.id", "give the relationship's id, or its type and ends")
        raw = op["id"]
        if not isinstance(raw, str) or not raw:
            raise _Invalid(f"{path}.id", "id must be a relationship UUID or an earlier ref")

        async def by_id(tx: WorkspaceTx, names: Names) -> Command:
            if raw in names.relationships:
                rid = names.relationships[raw]
            else:
                rid = check_relationship_id(raw, "$.id")
            return DeleteRelationship(id=rid, expected_version=expected)

        return by_id
    rel_type = _checked(
        path, check_slug, _require(op, "rel_type", path), "relationship type", "rel_type"
    )
    source = _endpoint(op, "source", path)
    target = _endpoint(op, "target", path)

    async def by_key(tx: WorkspaceTx, names: Names) -> Command:
        src = await resolve_name(tx, source, names, _end_path(path, op, "source"))
        dst = await resolve_name(tx, target, names, _end_path(path, op, "target"))
        from commands.relationships import resolve_record_ref

        s = await resolve_record_ref(tx, src, _end_path(path, op, "source"))
        t = await resolve_record_ref(tx, dst, _end_path(path, op, "target"))
        row = await rel_reads.find_relationship_by_key(
            tx.conn, tx.workspace_id, rel_type, s["id"], t["id"]
        )
        if row is None:
            raise NotFound(
                f"no '{rel_type}' relationship from {src.describe()} to {dst.describe()}",
                [{"path": path, "message": "list relationships to see what exists"}],
            )
        return DeleteRelationship(id=row["id"], expected_version=expected)

    return by_key


def parse_operations(operations: Any) -> list[Operation]:
    """Check every operation's shape; raise one VALIDATION_ERROR listing every problem, each
    with its operation index and JSON path."""
    if not isinstance(operations, list):
        raise ValidationError(
            "operations must be a list",
            [{"path": "$.operations", "message": f"got {type(operations).__name__}"}],
        )
    if not 1 <= len(operations) <= MAX_OPERATIONS:
        raise ValidationError(
            f"a batch holds 1 to {MAX_OPERATIONS} operations, got {len(operations)}; split it"
            " into several batches",
            [{"path": "$.operations", "message": f"{len(operations)} operations"}],
        )
    parsed: list[Operation] = []
    problems: list[dict[str, Any]] = []
    refs: dict[str, int] = {}
    for index, raw in enumerate(operations):
        try:
            op = _parse(index, raw)
        except _Invalid as exc:
            kind = raw.get("type") if isinstance(raw, dict) else None
            problems.append(
                {"index": index, "type": kind, "path": exc.path, "message": exc.message}
            )
            continue
        if op.ref is not None:
            if op.ref in refs:
                problems.append(
                    {
                        "index": index,
                        "type": op.type,
                        "path": f"$.operations[{index}].ref",
                        "message": f"ref '{op.ref}' is already used by operation {refs[op.ref]}",
                    }
                )
            refs[op.ref] = index
        parsed.append(op)
    if problems:
        first = problems[0]
        label = f"operation {first['index']} ({first['type'] or 'unknown'})"
        if len(problems) == 1:
            message = f"{label} is invalid: {first['message']}; nothing was written"
        else:
            message = (
                f"{len(problems)} operations are invalid, first {label}: {first['message']};"
                " nothing was written"
            )
        raise ValidationError(message, problems)
    return parsed


# -- phase 2: run -----------------------------------------------------------------------------


def _op_error(op: Operation, exc: RekorError) -> RekorError:
    """The operation's error, re-rooted under its index, telling that nothing was written."""
    path = f"$.operations[{op.index}]"
    details: list[dict[str, Any]] = []
    if isinstance(exc.details, list):
        for item in exc.details:
            entry = dict(item) if isinstance(item, dict) else {"message": str(item)}
            entry["path"] = _reroot(path, entry.get("path"))
            details.append({"index": op.index, **entry})
    else:
        details.append({"index": op.index, "path": path, **exc.details})
    if not details:
        details.append({"index": op.index, "path": path, "message": exc.message})
    err = RekorError(
        f"operation {op.index} ({op.type}) failed: {exc.message}; nothing from this batch was"
        " written",
        details,
        status=exc.status,
    )
    err.code = exc.code
    return err


def _remember(op: Operation, names: Names, cmd: Command, result: CommandResult) -> None:
    if op.ref is None:
        return
    if isinstance(cmd, UpsertRelationship):
        names.relationships[op.ref] = result.body["id"]
    elif isinstance(cmd, UpsertRecord):
        names.records[op.ref] = (cmd.collection, result.body["id"])


def batch_work(operations: list[Operation], ctx: Context) -> Work:
    """The writer job that runs a checked batch atomically."""

    async def work(tx: WorkspaceTx) -> dict[str, Any]:
        head_before, appended_before = tx.head, len(tx.appended)
        results: list[dict[str, Any]] = []
        names = Names()
        current: Operation | None = None
        try:
            async with tx.conn.transaction():  # a savepoint inside the group's transaction
                await prefetch(tx, [op.hint for op in operations if op.hint is not None])
                for op in operations:
                    current = op
                    cmd = await op.build(tx, names)
                    result = await handle(cmd, tx, ctx)
                    _remember(op, names, cmd, result)
                    results.append(
                        {
                            "index": op.index,
                            "type": op.type,
                            "status": 201 if result.created else 200,
                            "result": result.body,
                        }
                    )
        except BaseException as exc:
            # Rolled back to the savepoint: forget the events the batch had appended.
            tx.head = head_before
            del tx.appended[appended_before:]
            tx.memo.clear()
            if isinstance(exc, RekorError) and current is not None:
                raise _op_error(current, exc) from exc
            raise
        return {"data": results, "seq": tx.head}

    return work


class BatchMixin:
    """RekorService method for atomic batches."""

    if TYPE_CHECKING:

        async def run_in_workspace(
            self, workspace_id: str, work: Any, *, creates_workspace: bool = False
        ) -> Any: ...

    async def batch(
        self, principal: Principal, workspace_id: str, operations: Any, **meta: Any
    ) -> dict[str, Any]:
        """Run up to 100 operations (upsert_collection, delete_collection, upsert_record,
        patch_record, delete_record, upsert_relationship, delete_relationship) in one
        transaction: all succeed or nothing is written. Later operations can name records
        made earlier by `ref` or external id. Returns each operation's result and status, and
        the log position `seq`; an error names the failing operation's index."""
        ws = check_workspace_id(workspace_id)
        principal.require(ws, "write")
        parsed = parse_operations(operations)
        ctx = Context(principal, batch_id=str(uuid.uuid4()), **meta)
        result: dict[str, Any] = await self.run_in_workspace(ws, batch_work(parsed, ctx))
        return result
