"""The CLI's connection to a running Rekor: where it is, how to call it, how failures exit.

Every `rekor` command except `serve` is a client of the REST API. Command modules use this API
(and `cli.output` for printing)::

    from cli.client import api, parse_json_arg, require_workspace
    from cli.output import emit
    from cli.params import Output, Workspace

    @hooks_app.command
    def create(name: str, *, collection: str, workspace: Workspace = None,
               output: Output = None) -> None:
        '''Create an inbound hook.

        Examples:
            rekor hooks create --name pd --collection incidents -w ws_ops
        '''
        ws = require_workspace(workspace)
        emit(api().post(f"/v1/{ws}/hooks", json={"name": name, "collection": collection}), output)

Pieces:

- `api() -> RekorClient`: a client built from the resolved connection. Methods
  `get/post/put/patch/delete(path, *, json=None, params=None) -> Any` return the decoded JSON
  body of a 2xx response; anything else raises `ApiError` (a `CliError`). `params` values that
  are None are dropped.
- `resolve_connection(url=None, api_key=None) -> Connection`: URL and key from, in order, the
  explicit arguments (the global `--url` / `--api-key` flags), `REKOR_URL` / `REKOR_API_KEY`, the
  file written by `rekor login` (`$REKOR_CONFIG`, default `~/.config/rekor/config.json`), and
  finally `./.rekor/server.url` + `./.rekor/admin.key` written by a local `rekor serve`
  (the key is only used there when the URL also came from that directory or is the default).
- `parse_json_arg(value, what) -> Any`: a JSON argument given inline, as `@path/to/file.json`,
  or `-` for stdin. Bad JSON or a missing file is a `CliError` (exit 1) naming the argument.
- `require_workspace(value) -> str`: `--workspace` / `REKOR_WORKSPACE`, else a usage error.
- `Workspace`, `Output`, `json_param(help)`: parameter types, in `cli.params` (this module
  and `cli.output` do not import cyclopts).
- Help text: put examples under a `For example:` line in the docstring (cyclopts swallows a
  section titled `Examples:`).
- `CliError(message, exit_code, code=None, details=None)`: raise it from a command; `main()`
  prints it on stderr (as the contract's error JSON when output is json) and exits with
  `exit_code`. `fail_not_available(what)` raises the exit-5 "not available yet" error.
- Exit codes: `EXIT_OK` 0, `EXIT_USER` 1 (validation, auth, bad arguments), `EXIT_USAGE` 2
  (unknown command/flag, missing workspace), `EXIT_CONFLICT` 3, `EXIT_NOT_FOUND` 4,
  `EXIT_UNAVAILABLE` 5 (server error, unreachable server, capability not built).
- `AsyncRekorClient`: the same calls as coroutines (the stdio MCP server uses it).

The synchronous client speaks HTTP/1.1 through `cli.http11` (one keep-alive connection): a
command's start-up is part of what a user waits for, and httpx with its dependencies takes
~0.2 s to import (`http.client` ~0.05 s). The async client (long-lived MCP server) uses httpx.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

from cli import http11

# Typing-only imports (typing itself costs a CLI start ~15 ms; see cli.main).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import httpx

EXIT_OK = 0
EXIT_USER = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3
EXIT_NOT_FOUND = 4
EXIT_UNAVAILABLE = 5

DEFAULT_URL = "http://127.0.0.1:8080"
LOCAL_DATA_DIR = Path(".rekor")
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
# Reconnect rather than reuse a connection idle this long: the server may be closing it (its
# keep-alive timeout is 5 s), and a request written into a closing connection is lost.
IDLE_REUSE_S = 2.0

EXIT_BY_CODE = {
    "VALIDATION_ERROR": EXIT_USER,
    "BAD_REQUEST": EXIT_USER,
    "UNAUTHORIZED": EXIT_USER,
    "FORBIDDEN": EXIT_USER,
    "PAYLOAD_TOO_LARGE": EXIT_USER,
    "CONFLICT": EXIT_CONFLICT,
    "NOT_FOUND": EXIT_NOT_FOUND,
    "RATE_LIMITED": EXIT_UNAVAILABLE,
    "INTERNAL_ERROR": EXIT_UNAVAILABLE,
    "NOT_IMPLEMENTED": EXIT_UNAVAILABLE,
    "UNAVAILABLE": EXIT_UNAVAILABLE,
}


class CliError(Exception):
    """A failure the CLI reports on stderr and turns into an exit code."""

    def __init__(
        self,
        message: str,
        exit_code: int = EXIT_USER,
        *,
        code: str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.code = code
        self.details = details if details is not None else []

    def to_json(self) -> dict[str, Any]:
        """The contract's error body (code USAGE/CLIENT_ERROR when it never reached a server)."""
        code = self.code or ("USAGE_ERROR" if self.exit_code == EXIT_USAGE else "CLIENT_ERROR")
        return {"error": {"code": code, "message": self.message, "details": self.details}}


class ApiError(CliError):
    """An error response of the REST API, in the contract's shape."""

    def __init__(self, status: int, code: str, message: str, details: Any) -> None:
        super().__init__(message, EXIT_BY_CODE.get(code, _exit_for_status(status)), code=code)
        self.status = status
        self.details = details if details is not None else []


class Unreachable(CliError):
    """No Rekor answered at the URL."""


def _exit_for_status(status: int) -> int:
    if status == 404:
        return EXIT_NOT_FOUND
    if status == 409:
        return EXIT_CONFLICT
    return EXIT_UNAVAILABLE if status >= 500 else EXIT_USER


def fail_not_available(what: str) -> None:
    """Exit 5: this capability is not built on this server / in this CLI yet."""
    raise CliError(
        f"{what} is not available yet in this version of Rekor",
        EXIT_UNAVAILABLE,
        code="NOT_IMPLEMENTED",
    )


# -- where is Rekor ---------------------------------------------------------------------------


class Connection:
    """The resolved server URL and API key, and where each came from (for `rekor status`)."""

    __slots__ = ("api_key", "key_source", "url", "url_source")

    def __init__(self, url: str, api_key: str | None, url_source: str, key_source: str) -> None:
        self.url = url
        self.api_key = api_key
        self.url_source = url_source
        self.key_source = key_source

    def __repr__(self) -> str:
        return f"Connection(url={self.url!r}, url_source={self.url_source!r})"


# Set by the global `--url` / `--api-key` flags before a command runs.
_overrides: dict[str, str | None] = {"url": None, "api_key": None}


def set_overrides(url: str | None = None, api_key: str | None = None) -> None:
    """Remember the global `--url` / `--api-key` flags for `api()`."""
    _overrides["url"] = url
    _overrides["api_key"] = api_key


def config_path() -> Path:
    """Where `rekor login` keeps the URL and key."""
    explicit = os.environ.get("REKOR_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "rekor" / "config.json"


def read_config() -> dict[str, Any]:
    """The login file's content ({} when there is none or it is unreadable)."""
    path = config_path()
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_config(url: str, api_key: str) -> Path:
    """Store URL and key for later commands, readable by the user only."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "api_key": api_key}, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


def _read_local(name: str) -> str | None:
    try:
        value = (LOCAL_DATA_DIR / name).read_text().strip()
    except OSError:
        return None
    return value or None


def resolve_connection(url: str | None = None, api_key: str | None = None) -> Connection:
    """Flags, then environment, then the login file, then a local `rekor serve`'s files."""
    config = read_config()
    url = url or _overrides["url"]
    url_source = "--url"
    if not url and os.environ.get("REKOR_URL"):
        url, url_source = os.environ["REKOR_URL"], "REKOR_URL"
    if not url and config.get("url"):
        url, url_source = str(config["url"]), str(config_path())
    local_url = _read_local("server.url")
    if not url and local_url:
        url, url_source = local_url, str(LOCAL_DATA_DIR / "server.url")
    if not url:
        url, url_source = DEFAULT_URL, "default"

    key = api_key or _overrides["api_key"]
    key_source = "--api-key"
    if not key and os.environ.get("REKOR_API_KEY"):
        key, key_source = os.environ["REKOR_API_KEY"], "REKOR_API_KEY"
    if not key and config.get("api_key") and config.get("url") == url:
        key, key_source = str(config["api_key"]), str(config_path())
    # The local admin key only goes to the local server it belongs to.
    if not key and (url_source == "default" or url == local_url):
        local_key = _read_local("admin.key")
        if local_key:
            key, key_source = local_key, str(LOCAL_DATA_DIR / "admin.key")
    if not key:
        key_source = "none"
    return Connection(url.rstrip("/"), key, url_source, key_source)


# -- calling it -------------------------------------------------------------------------------


def _headers(conn: Connection, interface: str) -> dict[str, str]:
    headers = {"Rekor-Interface": interface, "Accept": "application/json"}
    if conn.api_key:
        headers["Authorization"] = f"Bearer {conn.api_key}"
    return headers


def _clean(params: dict[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    return {k: v for k, v in params.items() if v is not None}


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def query_string(params: dict[str, Any] | None) -> str:
    """`?a=1&b=x` for the non-None params (booleans as true/false, lists repeated), or ''."""
    pairs = []
    for key, value in (_clean(params) or {}).items():
        for item in value if isinstance(value, list | tuple) else [value]:
            pairs.append((key, _query_value(item)))
    return "?" + urlencode(pairs) if pairs else ""


def unreachable(url: str, exc: Exception) -> Unreachable:
    """The error for a server that does not answer."""
    return Unreachable(
        f"cannot reach Rekor at {url} ({type(exc).__name__}). Is `rekor serve` running at {url}?"
        " Set REKOR_URL or run `rekor login --url URL --token KEY` to point elsewhere.",
        EXIT_UNAVAILABLE,
        code="UNAVAILABLE",
    )


def decode_response(status: int, content: bytes, method: str, path: str) -> Any:
    """The JSON body of a 2xx response; an `ApiError` for anything else. A route the server
    does not have (404 "no such endpoint", 405) means the capability is not there yet."""
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = None
    if 200 <= status < 300:
        return body
    error = body.get("error") if isinstance(body, dict) else None
    missing_route = status == 405 or (
        status == 404
        and isinstance(error, dict)
        and str(error.get("message", "")).startswith("no such endpoint")
    )
    if missing_route:
        raise ApiError(
            501,
            "NOT_IMPLEMENTED",
            f"this Rekor server has no {method} {path.split('?')[0]} endpoint: the"
            " capability is not available yet on this server",
            None,
        )
    if isinstance(error, dict) and "code" in error:
        raise ApiError(
            status,
            str(error["code"]),
            str(error.get("message", "")),
            error.get("details"),
        )
    raise ApiError(
        status,
        "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST",
        f"HTTP {status}: {content[:300].decode('utf-8', 'replace')}",
        None,
    )


def decode_httpx(response: httpx.Response) -> Any:
    """`decode_response` for an httpx response."""
    return decode_response(
        response.status_code, response.content, response.request.method, response.request.url.path
    )


def open_http(url: str, *, timeout: float = READ_TIMEOUT_S) -> http11.Connection:
    """A connected HTTP(S) connection to the host of `url` (connect timeout 5 s, then
    `timeout` for each read and write)."""
    try:
        return http11.Connection.open(url, timeout=timeout)
    except ValueError as exc:
        raise CliError(
            str(exc),
            EXIT_USER,
            code="VALIDATION_ERROR",
            details=[{"path": "url", "message": "expected http://host:port or https://host"}],
        ) from exc


class RekorClient:
    """A synchronous REST client for one connection (standard library HTTP/1.1, keep-alive)."""

    def __init__(self, conn: Connection, *, interface: str = "cli") -> None:
        self.conn = conn
        self._headers = _headers(conn, interface)
        self._prefix = urlsplit(conn.url).path.rstrip("/")
        self._http: http11.Connection | None = None
        self._last_used = 0.0

    def _connection(self) -> http11.Connection:
        if self._http is not None and time.monotonic() - self._last_used > IDLE_REUSE_S:
            self.close()
        if self._http is None:
            self._http = open_http(self.conn.url)
        return self._http

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Call the API; return the decoded body or raise ApiError / Unreachable."""
        target = self._prefix + path + query_string(params)
        headers = dict(self._headers)
        body = None
        if json is not None:
            body = _json_bytes(json)
            headers["Content-Type"] = "application/json"
        try:
            reply = self._connection().request(method, target, headers, body)
        except (OSError, http11.ProtocolError) as exc:
            self.close()
            raise unreachable(self.conn.url, exc) from exc
        self._last_used = time.monotonic()
        if reply.will_close:
            self.close()
        return decode_response(reply.status, reply.body, method, target)

    def get(self, path: str, *, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=json, params=params)

    def put(self, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        return self.request("PUT", path, json=json, params=params)

    def patch(self, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        return self.request("PATCH", path, json=json, params=params)

    def delete(self, path: str, *, params: dict[str, Any] | None = None) -> Any:
        return self.request("DELETE", path, params=params)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        self._http = None


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class AsyncRekorClient:
    """The same REST calls as coroutines, for async callers (the stdio MCP server)."""

    def __init__(self, conn: Connection, *, interface: str = "cli") -> None:
        import httpx

        self.conn = conn
        self._transport_error = httpx.TransportError
        self._http = httpx.AsyncClient(
            base_url=conn.url,
            headers=_headers(conn, interface),
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Call the API; return the decoded body or raise ApiError / Unreachable."""
        try:
            response = await self._http.request(method, path, json=json, params=_clean(params))
        except self._transport_error as exc:
            raise unreachable(self.conn.url, exc) from exc
        return decode_httpx(response)

    async def aclose(self) -> None:
        await self._http.aclose()


_client: RekorClient | None = None


def api() -> RekorClient:
    """The process's REST client (built on first use from `resolve_connection()`)."""
    global _client
    if _client is None:
        _client = RekorClient(resolve_connection())
    return _client


def reset_client() -> None:
    """Forget the cached client (after `login`, or between in-process test invocations)."""
    global _client
    if _client is not None:
        _client.close()
    _client = None


def seg(value: str) -> str:
    """One URL path segment (so an odd name can never change the path)."""
    return quote(value, safe="")


def coll_path(ws: str, collection: str) -> str:
    return f"/v1/{seg(ws)}/collections/{seg(collection)}"


def record_path(ws: str, collection: str, record_id: str) -> str:
    return f"{coll_path(ws, collection)}/records/{seg(record_id)}"


# -- arguments --------------------------------------------------------------------------------


def parse_json_arg(value: str, what: str) -> Any:
    """A JSON argument: inline JSON, `@file` or `-` (stdin)."""
    source = "inline"
    text = value
    if value == "-":
        source = "stdin"
        text = sys.stdin.read()
    elif value.startswith("@"):
        path = Path(value[1:]).expanduser()
        source = str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise CliError(
                f"{what}: cannot read {path}: {exc.strerror or exc}",
                EXIT_USER,
                code="VALIDATION_ERROR",
                details=[{"path": what, "message": f"file {path} is not readable"}],
            ) from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        hint = "" if source != "inline" else " (quote it for the shell, or pass @file or -)"
        raise CliError(
            f"{what} is not valid JSON ({source}): {exc}{hint}",
            EXIT_USER,
            code="VALIDATION_ERROR",
            details=[{"path": what, "message": str(exc)}],
        ) from exc


def require_workspace(value: str | None) -> str:
    """The workspace from `--workspace` / REKOR_WORKSPACE, or a usage error."""
    if not value:
        raise CliError(
            "no workspace given: pass --workspace WS (or -w WS) or set REKOR_WORKSPACE;"
            " `rekor workspaces list` shows the ids",
            EXIT_USAGE,
        )
    return value
