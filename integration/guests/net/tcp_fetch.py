"""TCP client: fetches the http:// URL in argv[1] over a plain socket and prints the body.

A host name is looked up with getaddrinfo (wasi:sockets/ip-name-lookup). Exit status 0
for a 200 answer; otherwise one line ``tcp_fetch: <what failed>`` on stderr and status 1.
"""

import encodings.idna  # noqa: F401  (getaddrinfo needs it; componentize-py bundles imports)
import socket
import sys

from componentize_py_types import Err
from wit_world import exports


def _fetch(url: str) -> tuple[int, bytes]:
    if not url.startswith("http://"):
        raise ValueError(f"{url!r} is not an http:// URL")
    hostport, _, path = url[len("http://") :].partition("/")
    host, _, port = hostport.partition(":")
    # The socket first, the name after: under pywasm.io/network=none the first one refused
    # is socket creation itself.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        if not host.replace(".", "").isdigit():
            host = socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
        conn.connect((host, int(port or "80")))
        request = f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
        conn.sendall(request.encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


class Run(exports.Run):
    def run(self) -> None:
        try:
            status, body = _fetch(sys.argv[1])
        except (OSError, ValueError, IndexError) as exc:
            print(f"tcp_fetch: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            raise Err(None) from None
        sys.stdout.write(body.decode(errors="replace"))
        sys.stdout.flush()
        if status != 200:
            print(f"tcp_fetch: status {status}", file=sys.stderr, flush=True)
            raise Err(None)
