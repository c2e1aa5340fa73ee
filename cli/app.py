"""The `rekor` command line. Every command but `serve` and `mcp` is a client of the REST API
(see `cli.client` for connection, errors and exit codes, `cli.output` for printing).

Sub-apps register here: `app.command(<their App>)`. Exit codes: 0 ok, 1 user error, 2 usage,
3 conflict, 4 not found, 5 server unavailable / capability not available.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from cyclopts import App, Parameter
from cyclopts.exceptions import CycloptsError

from cli.attachments import attachments_app
from cli.client import (
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CliError,
    RekorClient,
    _overrides,
    config_path,
    resolve_connection,
    set_overrides,
    write_config,
)
from cli.core import (
    admin_app,
    batch,
    collections_app,
    query_relationships,
    records_app,
    relationships_app,
    workspaces_app,
)
from cli.output import emit, run_guarded
from cli.params import Output
from cli.streaming import events, hooks_app, triggers_app

app = App(
    name="rekor",
    help="Rekor: an event-sourced data layer for AI agents. REST, CLI and MCP on one service.\n\n"
    "Connection: --url/--api-key, else REKOR_URL/REKOR_API_KEY, else `rekor login`, else the"
    " ./.rekor/ files of a local `rekor serve`. Exit codes: 0 ok, 1 user error, 2 usage,"
    " 3 conflict, 4 not found, 5 server unavailable.",
    help_format="plaintext",
    result_action="return_value",
)


@app.command
def serve(
    *,
    host: Annotated[str, Parameter(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, Parameter(help="Port to listen on.")] = 8080,
    data_dir: Annotated[
        str, Parameter(help="Where the embedded stack keeps its data and the admin key.")
    ] = ".rekor",
    access_log: Annotated[bool, Parameter(help="Log every request as a JSON line.")] = False,
    workers: Annotated[
        int,
        Parameter(
            help="API worker processes (1-32). Background consumers (event relay, trigger"
            " delivery, hook mapping, storage cleanup) run in exactly one of them, elected"
            " through a PostgreSQL advisory lock."
        ),
    ] = 1,
) -> None:
    """Run Rekor. With no configuration it starts PostgreSQL, NATS and S3 embedded under
    --data-dir; with REKOR_DATABASE_URL / REKOR_NATS_URL / REKOR_S3_ENDPOINT set it uses those.
    The admin key goes to <data-dir>/admin.key and the URL to <data-dir>/server.url, where
    other `rekor` commands in the same directory find them.

    For example:
        rekor serve
        rekor serve --port 9000 --data-dir /var/lib/rekor
        rekor serve --workers 2
    """
    from cli.serve import serve as run

    sys.exit(run(host, port, data_dir, access_log=access_log, workers=workers))


@app.command
def mcp() -> None:
    """Run the MCP server on stdio, for desktop agents. It talks to a running Rekor over REST
    using REKOR_URL and REKOR_API_KEY (or the login / local serve files).

    For example (an agent's MCP config):
        {"mcpServers": {"rekor": {"command": "rekor", "args": ["mcp"],
          "env": {"REKOR_URL": "http://127.0.0.1:8080", "REKOR_API_KEY": "rk_..."}}}}
    """
    from mcp_server.stdio import run_stdio

    run_stdio(resolve_connection())


@app.command
def login(
    *,
    url: Annotated[str | None, Parameter(help="Rekor's base URL.")] = None,
    token: Annotated[str, Parameter(help="An API key (rk_...).")],
    verify: Annotated[bool, Parameter(help="Check URL and key before saving.")] = True,
    output: Output = None,
) -> None:
    """Save the server URL and API key for later commands (in $REKOR_CONFIG, default
    ~/.config/rekor/config.json, readable by you only).

    For example:
        rekor login --url http://127.0.0.1:8080 --token rk_...
    """
    # The global --url flag is parsed before the command; it is this command's --url too.
    url = (url or _overrides["url"] or "").rstrip("/")
    if not url:
        raise CliError("login needs --url (the server's base URL)", EXIT_USAGE)
    if verify:
        client = RekorClient(resolve_connection(url, token))
        try:
            client.get("/v1/workspaces", params={"limit": 1})
        finally:
            client.close()
    path = write_config(url, token)
    emit({"url": url, "config": str(path), "verified": verify}, output)


@app.command
def status(*, output: Output = None) -> None:
    """Show which server and key the CLI uses, whether the server is healthy, and who the key
    is. Exits 5 when the server is unreachable or unhealthy, 1 when the key is refused.

    For example:
        rekor status
    """
    conn = resolve_connection()
    report: dict[str, Any] = {
        "url": conn.url,
        "url_from": conn.url_source,
        "api_key": (conn.api_key[:10] + "…") if conn.api_key else None,
        "api_key_from": conn.key_source,
        "config_file": str(config_path()),
    }
    client = RekorClient(conn)
    failure: CliError | None = None
    try:
        try:
            health = client.get("/health")
            report["health"] = health.get("status", "ok") if isinstance(health, dict) else "ok"
            report["checks"] = health.get("checks") if isinstance(health, dict) else None
        except CliError as exc:
            report["health"] = f"{exc.code}: {exc.message}"
            failure = CliError(exc.message, EXIT_UNAVAILABLE, code=exc.code)
        if failure is None and conn.api_key:
            report["identity"] = _identity(client, conn.api_key)
            if "error" in report["identity"]:
                failure = CliError(report["identity"]["error"], code="UNAUTHORIZED")
    finally:
        client.close()
    emit(report, output)
    if failure is not None:
        raise failure


def _identity(client: RekorClient, key: str) -> dict[str, Any]:
    """What the key may do: its record when it may list keys (admin), else what it sees."""
    try:
        seen = client.get("/v1/workspaces", params={"limit": 1000})
    except CliError as exc:
        return {"error": f"{exc.code}: {exc.message}"}
    identity: dict[str, Any] = {"workspaces_visible": len(seen.get("data", []))}
    try:
        keys = client.get("/v1/api-keys")
    except CliError:
        return identity
    for item in keys.get("data", []):
        if item.get("prefix") and key.startswith(item["prefix"]) and not item.get("revoked_at"):
            identity.update({k: item.get(k) for k in ("id", "name", "permissions", "workspaces")})
            break
    return identity


@app.command
def completion(
    shell: Literal["bash", "zsh", "fish"] = "bash",
) -> None:
    """Print the shell completion script (or run `rekor --install-completion`).

    For example:
        rekor completion bash > ~/.local/share/bash-completion/completions/rekor
        eval "$(rekor completion zsh)"
    """
    sys.stdout.write(app.generate_completion(prog_name="rekor", shell=shell))


app.register_install_completion_command(help="Install shell completion for rekor.")

app.command(workspaces_app)
app.command(collections_app)
app.command(records_app)
app.command(relationships_app)
app.command(query_relationships, name="query-relationships")
app.command(batch)
app.command(admin_app)
app.command(attachments_app, name="attachments")
app.command(hooks_app, name="hooks")
app.command(triggers_app, name="triggers")
app.command(events)
import cli.admin  # noqa: E402, F401 - adds rebuild-projections and migrate to `admin`


def _show_examples(node: App) -> None:
    """cyclopts reads a docstring section titled `Examples:` as a Google-style section and
    drops it from --help; retitle it so every command's examples are shown."""
    for name in node:
        sub = node[name]
        if sub is node or name.startswith("-"):
            continue
        fn = sub.default_command
        if fn is not None and fn.__doc__ and re.search(r"(?m)^\s*Examples?:\s*$", fn.__doc__):
            fn.__doc__ = re.sub(r"(?m)^(\s*)Examples?:\s*$", r"\1For example:", fn.__doc__)
        _show_examples(sub)


_show_examples(app)


@app.meta.default
def _launcher(
    *tokens: Annotated[str, Parameter(show=False, allow_leading_hyphen=True)],
    url: Annotated[
        str | None, Parameter(help="Rekor's base URL (default: REKOR_URL, login, ./.rekor).")
    ] = None,
    api_key: Annotated[str | None, Parameter(help="API key (default: REKOR_API_KEY).")] = None,
) -> Any:
    set_overrides(url, api_key)
    if tokens[:1] == ("--",):  # inserted by _own_url_flag
        tokens = tokens[1:]
    return app(tokens, exit_on_error=False, result_action="return_value")


# Commands whose own `--url` is not the server's (the seed: `rekor triggers create --url <hook>`).
# For them only a `--url` before the command name is the global one.
OWN_URL_COMMANDS = (("triggers", "create"),)


def _own_url_flag(tokens: list[str]) -> list[str]:
    lead = 0
    while lead < len(tokens) and tokens[lead].startswith("-"):
        lead += 1 if "=" in tokens[lead] else 2
    rest = tokens[lead:]
    if any(tuple(rest[: len(c)]) == c for c in OWN_URL_COMMANDS):
        return [*tokens[:lead], "--", *rest]
    return tokens


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command line; return its exit code (errors are printed on stderr)."""
    tokens = list(sys.argv[1:] if argv is None else argv)

    def command() -> int | None:
        try:
            app.meta(_own_url_flag(tokens), exit_on_error=False, result_action="return_value")
        except CycloptsError:
            return EXIT_USAGE  # cyclopts already printed what was wrong with the command line
        return None

    return run_guarded(command)


def main() -> None:
    """Console entry point."""
    sys.exit(run())


if __name__ == "__main__":
    main()
