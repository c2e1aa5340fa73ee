"""Parameter types shared by command modules (the cyclopts side of `cli.client` and
`cli.output`, which stay free of cyclopts so the upload fast path in `cli.main` can use them).

- `Workspace`: the `--workspace/-w` parameter (reads REKOR_WORKSPACE).
- `Output`: the `--output/-o json|table` parameter (unset: table on a terminal, json otherwise).
- `json_param(help)`: the parameter of a JSON argument, `Annotated[str, json_param("...")]`
  (it lets `-` through as a value, for stdin).
"""

from __future__ import annotations

from typing import Annotated, Literal

from cyclopts import Parameter

Workspace = Annotated[
    str | None,
    Parameter(
        name=["--workspace", "-w"],
        env_var="REKOR_WORKSPACE",
        help="Workspace id (or set REKOR_WORKSPACE).",
    ),
]

Output = Annotated[
    Literal["json", "table"] | None,
    Parameter(
        name=["--output", "-o"],
        help="json or table (default: table on a terminal, json otherwise).",
    ),
]


def json_param(help: str) -> Parameter:
    """The cyclopts parameter of a JSON argument (accepts `-` for stdin)."""
    return Parameter(help=help, allow_leading_hyphen=True)
