"""The `rekor` command's entry point.

`rekor attachments upload` written with its plain options runs here without loading the
full command-line parser: cyclopts and every command module take ~0.25 s to import, a third
of a 50 MiB upload to a local S3 server. Everything else (other commands, `--help`, an option
or form this parser does not know, a missing argument or workspace) goes to `cli.app`, which
also reports every mistake; the two paths share the upload flow (`cli.transfer`) and the
output and errors (`cli.output`), so they print the same.
"""

from __future__ import annotations

import os
import sys

# Typing-only imports: this module and what a plain upload loads (cli.transfer, cli.client,
# cli.output) avoid importing typing and dataclasses at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

# option -> argument name of `cli.attachments.upload` (kept equal by tests/test_cli.py)
UPLOAD_OPTIONS = {
    "--filename": "filename",
    "--content-type": "content_type",
    "--file": "file",
    "--source": "source",
    "--workspace": "workspace",
    "-w": "workspace",
    "--output": "output",
    "-o": "output",
}
UPLOAD_FLAGS = {"--quiet": "quiet"}
GLOBAL_OPTIONS = {"--url": "url", "--api-key": "api_key"}


def _option(tokens: list[str], i: int, names: dict[str, str]) -> tuple[str, str, int] | None:
    """(argument, value, next index) for `--name value` / `--name=value` at i, else None."""
    name, eq, value = tokens[i].partition("=")
    if name not in names:
        return None
    if eq:
        return names[name], value, i + 1
    if i + 1 >= len(tokens) or tokens[i + 1].startswith("-"):
        return None
    return names[name], tokens[i + 1], i + 2


def parse_upload(argv: Sequence[str]) -> dict[str, Any] | None:
    """The arguments of `[--url U] [--api-key K] attachments upload COLL REC --filename F
    [--content-type T] [--file P] [--quiet] [--source S] [-w WS] [-o json|table]`, or None
    when the command line is anything else (then the full parser handles it)."""
    tokens = list(argv)
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens) and tokens[i].startswith("-"):
        step = _option(tokens, i, GLOBAL_OPTIONS)
        if step is None or step[0] in out:
            return None
        out[step[0]], i = step[1], step[2]
    if tokens[i : i + 2] != ["attachments", "upload"]:
        return None
    i += 2
    positional: list[str] = []
    while i < len(tokens):
        token = tokens[i]
        if token in UPLOAD_FLAGS and UPLOAD_FLAGS[token] not in out:
            out[UPLOAD_FLAGS[token]] = True
            i += 1
        elif token.startswith("-"):
            step = _option(tokens, i, UPLOAD_OPTIONS)
            if step is None or step[0] in out:
                return None
            out[step[0]], i = step[1], step[2]
        else:
            positional.append(token)
            i += 1
    if len(positional) != 2 or "filename" not in out:
        return None
    if out.get("output") not in (None, "json", "table"):
        return None
    workspace = out.get("workspace") or os.environ.get("REKOR_WORKSPACE")
    if not workspace:
        return None
    out["workspace"] = workspace
    out["collection"], out["record"] = positional
    return out


def run_upload(args: dict[str, Any]) -> int:
    """Run a parsed upload; returns the exit code (errors printed as `cli.app` prints them)."""
    from cli.client import set_overrides
    from cli.output import emit, run_guarded
    from cli.transfer import upload_file

    def command() -> None:
        result = upload_file(
            args["workspace"],
            args["collection"],
            args["record"],
            args["filename"],
            args.get("content_type"),
            args.get("file"),
            bool(args.get("quiet")),
            args.get("source"),
        )
        emit(result, args.get("output"))

    set_overrides(args.get("url"), args.get("api_key"))
    return run_guarded(command)


def main() -> None:
    """Console entry point."""
    args = parse_upload(sys.argv[1:])
    if args is not None:
        sys.exit(run_upload(args))
    from cli.app import main as full_main

    full_main()


if __name__ == "__main__":
    main()
