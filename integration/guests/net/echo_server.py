"""HTTP/1.1 echo server: answers every request with what it received.

Listens on 0.0.0.0:<port>, the port from argv[1] or $PORT (default 8080). The answer's body is
``<METHOD> <PATH>\\n`` followed by the request body; the header ``X-Served-By: pywasm-echo`` tells
it from any other server. One line ``listening on <port>`` goes to stdout once it accepts.
Connections are served side by side (non-blocking sockets and a selector over wasi:io/poll),
keep-alive included, so a benchmark's many open connections all make progress.
"""

import os
import selectors
import socket
import sys

from componentize_py_types import Err
from wit_world import exports

_HEAD_END = b"\r\n\r\n"


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = b""
        self.outbox = b""
        self.closing = False


def _take_request(data: bytes) -> tuple[tuple[str, str, bytes, bool], bytes] | None:
    """The first complete request in ``data`` and what follows it, or None if incomplete."""
    end = data.find(_HEAD_END)
    if end < 0:
        return None
    lines = data[:end].decode("latin-1").split("\r\n")
    method, path, version = (lines[0].split(" ") + ["", "", ""])[:3]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or "0")
    start = end + len(_HEAD_END)
    if len(data) < start + length:
        return None
    connection = headers.get("connection", "").lower()
    keep = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
    return (method, path, data[start : start + length], keep), data[start + length :]


def _answer(method: str, path: str, body: bytes, keep: bool) -> bytes:
    payload = f"{method} {path}\n".encode() + body
    head = (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: text/plain\r\n"
        "X-Served-By: pywasm-echo\r\n"
        f"Content-Length: {len(payload)}\r\n"
        f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
    )
    return head.encode() + payload


def _close(sel: selectors.BaseSelector, conn: _Conn) -> None:
    try:
        sel.unregister(conn.sock)
    except (KeyError, ValueError):
        pass
    conn.sock.close()


def _readable(sel: selectors.BaseSelector, conn: _Conn) -> None:
    try:
        data = conn.sock.recv(65536)
    except BlockingIOError:
        return
    if not data:
        _close(sel, conn)
        return
    conn.inbox += data
    while not conn.closing and (taken := _take_request(conn.inbox)) is not None:
        (method, path, body, keep), conn.inbox = taken
        conn.outbox += _answer(method, path, body, keep)
        conn.closing = not keep
    _writable(sel, conn)


def _writable(sel: selectors.BaseSelector, conn: _Conn) -> None:
    if conn.outbox:
        try:
            sent = conn.sock.send(conn.outbox)
        except BlockingIOError:
            sent = 0
        conn.outbox = conn.outbox[sent:]
    if conn.outbox:
        sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
    elif conn.closing:
        _close(sel, conn)
    else:
        sel.modify(conn.sock, selectors.EVENT_READ, conn)


def _serve(server: socket.socket) -> None:
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ, None)
    while True:
        for key, mask in sel.select():
            if key.data is None:
                try:
                    sock, _ = server.accept()
                except BlockingIOError:
                    continue
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ, _Conn(sock))
                continue
            conn = key.data
            try:
                if mask & selectors.EVENT_READ:
                    _readable(sel, conn)
                elif mask & selectors.EVENT_WRITE:
                    _writable(sel, conn)
            except OSError as exc:
                print(f"connection failed: {exc}", file=sys.stderr, flush=True)
                _close(sel, conn)


class Run(exports.Run):
    def run(self) -> None:
        port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "8080"))
        try:
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("0.0.0.0", port))
            server.listen(128)
            server.setblocking(False)
        except OSError as exc:
            print(f"echo_server: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            raise Err(None) from None
        print(f"listening on {port}", flush=True)
        _serve(server)
