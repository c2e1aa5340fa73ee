"""How the CLI prints results and errors.

- The `--output/-o json|table` parameter (`cli.params.Output`): unset means json when stdout
  is not a terminal (scripts, pipes) and table when it is.
- `emit(value, output)`: print a result. json: the API's body verbatim (indented). table: a list
  body `{"data": [...], "meta": {...}}` becomes one row per item (nested values as compact
  JSON) plus the next cursor; a single entity becomes a field/value table.
- `print_error(err)`: the failure on stderr; as the contract's error JSON when the command's
  output is json, else as `error: CODE: message` plus one line per detail.
"""

from __future__ import annotations

import io
import json
import sys

from cli.client import CliError, reset_client, set_overrides

# Typing-only imports (see cli.main).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# The format the current command chose; errors follow it.
_chosen: dict[str, str | None] = {"format": None}


def resolve_output(output: str | None) -> str:
    """The effective format for this command."""
    fmt = output or ("table" if sys.stdout.isatty() else "json")
    _chosen["format"] = fmt
    return fmt


def _cell(value: Any, width: int = 60) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(value: Any) -> str:
    """A plain-text rendering of a result, for people."""
    from rich.console import Console
    from rich.table import Table

    buffer = io.StringIO()
    console = Console(width=160, file=buffer, color_system=None)
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        rows = value["data"]
        columns: list[str] = []
        for row in rows:
            for key in row if isinstance(row, dict) else ["value"]:
                if key not in columns:
                    columns.append(key)
        table = Table(*columns) if columns else Table("(no rows)")
        for row in rows:
            if isinstance(row, dict):
                table.add_row(*(_cell(row.get(c)) for c in columns))
            else:
                table.add_row(_cell(row))
        console.print(table)
        meta = value.get("meta") or {}
        if meta.get("next_cursor"):
            console.print(f"next page: --cursor {meta['next_cursor']}")
        extra = {k: v for k, v in value.items() if k not in ("data", "meta")}
        if extra:
            console.print(_cell(extra, 400))
    elif isinstance(value, dict):
        table = Table("field", "value")
        for key, item in value.items():
            table.add_row(str(key), _cell(item, 100))
        console.print(table)
    else:
        console.print(_cell(value, 400))
    return buffer.getvalue()


def emit(value: Any, output: str | None = None) -> None:
    """Print a command's result in the chosen format."""
    if resolve_output(output) == "json":
        sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(render_table(value))
    sys.stdout.flush()


def print_error(err: CliError) -> None:
    """Report a failure on stderr."""
    fmt = _chosen["format"] or ("table" if sys.stderr.isatty() else "json")
    if fmt == "json":
        sys.stderr.write(json.dumps(err.to_json(), ensure_ascii=False) + "\n")
        return
    prefix = f"{err.code}: " if err.code else ""
    lines = [f"error: {prefix}{err.message}"]
    details = err.details if isinstance(err.details, list) else [err.details]
    for item in details[:20]:
        if isinstance(item, dict) and "path" in item:
            lines.append(f"  {item['path']}: {item.get('message', '')}")
        elif item:
            lines.append(f"  {_cell(item, 200)}")
    sys.stderr.write("\n".join(lines) + "\n")


def run_guarded(command: Callable[[], int | None]) -> int:
    """Run one command; return its exit code: its own, or a CliError's (printed on stderr),
    130 on Ctrl-C. The connection and the global flags are reset afterwards either way."""
    try:
        return command() or 0
    except CliError as err:
        print_error(err)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    finally:
        reset_client()
        set_overrides()
