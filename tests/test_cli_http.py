"""The CLI's HTTP/1.1 client (cli/http11.py) against real sockets: the reply framings a
server may use, interim replies, keep-alive, early replies and replies that are not HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli.http11 import Connection, ProtocolError


@pytest.fixture
def server() -> Iterator[Callable[[list[bytes]], str]]:
    """A one-connection TCP server that reads each request (head + Content-Length body) and
    answers with the next canned bytes; returns its URL. `requests` records what arrived."""
    listener = socket.create_server(("127.0.0.1", 0))
    threads: list[threading.Thread] = []

    def start(replies: list[bytes]) -> str:
        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                reader = conn.makefile("rb")
                for reply in replies:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = reader.readline()
                        if not line:
                            return
                        head += line
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    body = reader.read(length)
                    start.requests.append(head + body)  # type: ignore[attr-defined]
                    conn.sendall(reply)

        start.requests = []  # type: ignore[attr-defined]
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield start
    listener.close()
    for thread in threads:
        thread.join(timeout=5)


def test_framings_interim_replies_and_keep_alive(server: Callable[[list[bytes]], str]) -> None:
    url = server(
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked"
            b"\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
        ]
    )
    conn = Connection.open(url, timeout=5)
    first = conn.request("GET", "/a?b=1", {"Accept": "application/json"})
    assert (first.status, first.body, first.will_close) == (200, b"hello", False)
    assert first.headers["content-type"] == "text/plain"
    second = conn.request("POST", "/b", {}, b'{"x": 1}')
    assert (second.status, second.body) == (201, b"Wikipedia")
    third = conn.request("DELETE", "/c", {})
    assert (third.status, third.body) == (204, b"")
    fourth = conn.request("GET", "/d", {})
    assert (fourth.status, fourth.body, fourth.will_close) == (200, b"until the end", True)
    conn.close()
    sent = server.requests  # type: ignore[attr-defined]
    assert sent[0].startswith(b"GET /a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 8\r\n" in sent[1] and sent[1].endswith(b'{"x": 1}')


def test_file_body_goes_by_sendfile_with_progress(
    server: Callable[[list[bytes]], str], tmp_path: Path
) -> None:
    data = bytes(range(256)) * 4000  # 1,024,000 bytes
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    url = server([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    steps: list[int] = []
    conn = Connection.open(url, timeout=5)
    with src.open("rb") as fh:
        reply = conn.request(
            "PUT", "/obj", {}, file=fh, size=len(data), progress=steps.append, piece=300_000
        )
    conn.close()
    assert reply.status == 200
    assert steps == [300_000, 300_000, 300_000, 124_000]
    assert server.requests[0].endswith(data)  # type: ignore[attr-defined]


def test_not_http_and_cut_replies_are_errors(server: Callable[[list[bytes]], str]) -> None:
    url = server([b"SSH-2.0-OpenSSH\r\n\r\n"])
    conn = Connection.open(url, timeout=5)
    with pytest.raises(ProtocolError):
        conn.request("GET", "/", {})
    conn.close()
    url = server([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"])
    conn = Connection.open(url, timeout=5)
    with pytest.raises(ConnectionResetError):
        # the canned server closes after its last reply: the body ends early
        conn.request("GET", "/", {})
    conn.close()
    with pytest.raises(ValueError):
        Connection.open("ftp://example.com/")


def test_tls_with_verified_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """https URLs: the server's certificate is verified against the trusted CAs (here a
    self-signed one named by SSL_CERT_FILE), and an untrusted one is refused."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve(n: int) -> None:
        for _ in range(n):
            raw, _ = listener.accept()
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    request = b""
                    while not request.endswith(b"\r\n\r\n"):
                        request += conn.recv(1)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except (ssl.SSLError, OSError):
                pass  # the refused handshake

    thread = threading.Thread(target=serve, args=(2,), daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        conn = Connection.open(f"https://localhost:{port}", timeout=5)
        reply = conn.request("GET", "/", {})
        conn.close()
        assert (reply.status, reply.body) == (200, b"ok")
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
        with pytest.raises(ssl.SSLCertVerificationError):
            Connection.open(f"https://localhost:{port}", timeout=5)
    finally:
        thread.join(timeout=5)
        listener.close()
