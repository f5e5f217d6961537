"""HTTP/1.1 echo server: answers every request with what it received.

Listens on 0.0.0.0:<port>, the port from argv[1] or $PORT (default 8080). The answer's body is
``<METHOD> <PATH>\n`` followed by the request body; the header ``X-Served-By: pywasm-echo`` tells
it from any other server. One line ``listening on <port>`` goes to stdout once it accepts.
"""

import os
import socket
import sys

from componentize_py_types import Err
from wit_world import exports


def _read_request(conn: socket.socket) -> tuple[str, str, bytes, bool] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, version = (lines[0].split(" ") + ["", "", ""])[:3]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or "0")
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    connection = headers.get("connection", "").lower()
    keep = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
    return method, path, body[:length], keep


def _serve(conn: socket.socket) -> None:
    while True:
        request = _read_request(conn)
        if request is None:
            return
        method, path, body, keep = request
        payload = f"{method} {path}\n".encode() + body
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/plain\r\n"
            "X-Served-By: pywasm-echo\r\n"
            f"Content-Length: {len(payload)}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        )
        conn.sendall(head.encode() + payload)
        if not keep:
            return


class Run(exports.Run):
    def run(self) -> None:
        port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "8080"))
        try:
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("0.0.0.0", port))
            server.listen(128)
        except OSError as exc:
            print(f"echo_server: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            raise Err(None) from None
        print(f"listening on {port}", flush=True)
        while True:
            conn, _ = server.accept()
            try:
                _serve(conn)
            except OSError as exc:
                print(f"connection failed: {exc}", file=sys.stderr, flush=True)
            finally:
                conn.close()
