"""A small HTTP/1.1 client over one socket, for the CLI.

The standard library's `http.client` imports the `email` package to parse headers (~50 ms of
every `rekor` start); the CLI needs much less: requests with a bytes body or a file (sent with
sendfile), responses with a Content-Length, chunked or read-to-close body, keep-alive, TLS.

    conn = Connection.open("http://127.0.0.1:8080", timeout=30.0)
    reply = conn.request("POST", "/v1/workspaces", {"Content-Type": "application/json"}, body)
    reply.status, reply.headers["content-type"], reply.body
    conn.close()

Errors are `OSError` (connect, timeouts, resets) or `ProtocolError` (a reply that is not HTTP).
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO

MAX_LINE = 64 * 1024
MAX_HEADERS = 200
CONNECT_TIMEOUT_S = 5.0


class ProtocolError(Exception):
    """The server's reply is not well-formed HTTP/1.x."""


class Reply:
    """A response: status, headers (lower-case names), body, and whether the server closes."""

    __slots__ = ("body", "headers", "reason", "status", "will_close")

    def __init__(
        self, status: int, reason: str, headers: dict[str, str], body: bytes, will_close: bool
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.will_close = will_close


class Connection:
    """One connection to one host (plain or TLS)."""

    def __init__(self, sock: socket.socket, host_header: str) -> None:
        self.sock = sock
        self.host_header = host_header
        self._reader = sock.makefile("rb")

    @classmethod
    def open(cls, url: str, *, timeout: float = 30.0) -> Connection:
        """Connect to the host of an http(s) URL (5 s to connect, then `timeout` per read or
        write). Raises ValueError for anything but an http(s) URL with a host."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"'{url}' is not an http(s) URL")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        sock = socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if parts.scheme == "https":
                import ssl

                sock = ssl.create_default_context().wrap_socket(
                    sock, server_hostname=parts.hostname
                )
            sock.settimeout(timeout)
        except BaseException:
            sock.close()
            raise
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        return cls(sock, host if port == default else f"{host}:{port}")

    def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | None = None,
        *,
        file: BinaryIO | None = None,
        size: int = 0,
        progress: Callable[[int], None] | None = None,
        piece: int = 4 * 1024 * 1024,
    ) -> Reply:
        """Send one request and read its reply. The body is `body`, or `size` bytes of `file`
        sent with sendfile in `piece`-sized steps (`progress` gets each step's byte count)."""
        length = len(body) if body is not None else size if file is not None else None
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if length is not None and not any(k.lower() == "content-length" for k in headers):
            lines.append(f"Content-Length: {length}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            if body is not None and len(body) <= 64 * 1024:
                self.sock.sendall(head + body)
            else:
                self.sock.sendall(head)
                if body is not None:
                    self.sock.sendall(body)
                elif file is not None:
                    self._send_file(file, size, progress, piece)
        except OSError:
            # The server may have answered early (e.g. a refused signature) and closed: its
            # reply says more than the broken pipe.
            try:
                return self._read_reply(method)
            except (OSError, ProtocolError):
                pass
            raise
        return self._read_reply(method)

    def _send_file(
        self, file: BinaryIO, size: int, progress: Callable[[int], None] | None, piece: int
    ) -> None:
        sent = 0
        while sent < size:
            n = self.sock.sendfile(file, sent, min(piece, size - sent))
            if n == 0:
                raise EOFError(f"the file ended after {sent} of {size} bytes")
            sent += n
            if progress is not None:
                progress(n)

    def _line(self) -> bytes:
        line = self._reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise ProtocolError("header line too long")
        return line

    def _read_reply(self, method: str) -> Reply:
        while True:
            status_line = self._line()
            if not status_line:
                raise ConnectionResetError("the server closed the connection without a reply")
            parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise ProtocolError(f"not an HTTP reply: {status_line[:80]!r}")
            status = int(parts[1])
            headers: dict[str, str] = {}
            for _ in range(MAX_HEADERS):
                line = self._line()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, sep, value = line.decode("latin-1").partition(":")
                if not sep:
                    raise ProtocolError(f"bad header line: {line[:80]!r}")
                key = name.strip().lower()
                value = value.strip()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            else:
                raise ProtocolError("too many header lines")
            if 100 <= status < 200 and status != 101:
                continue  # 100 Continue and other interim replies
            break
        close = "close" in headers.get("connection", "").lower() or parts[0] == "HTTP/1.0"
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._chunked()
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise ProtocolError("bad Content-Length") from None
            body = self._reader.read(length)
            if len(body) != length:
                raise ConnectionResetError("the reply ended before its Content-Length")
        else:
            body = self._reader.read()
            close = True
        return Reply(status, parts[2] if len(parts) > 2 else "", headers, body, close)

    def _chunked(self) -> bytes:
        out = bytearray()
        while True:
            size_line = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size: {size_line[:20]!r}") from None
            if size == 0:
                while self._line() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(out)
            chunk = self._reader.read(size)
            if len(chunk) != size:
                raise ConnectionResetError("the reply ended inside a chunk")
            out += chunk
            self._line()

    def close(self) -> None:
        self._reader.close()
        self.sock.close()
