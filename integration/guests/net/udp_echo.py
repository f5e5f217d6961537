"""UDP echo: sends every datagram back to where it came from, prefixed with ``echo:``.

Binds 0.0.0.0:<port>, the port from argv[1] (default 9000), and says ``listening on <port>``
on stdout. The datagram ``quit`` is answered with ``bye`` and ends the program (status 0).
"""

import socket
import sys

from componentize_py_types import Err
from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            print(f"udp_echo: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            raise Err(None) from None
        print(f"listening on {port}", flush=True)
        while True:
            data, peer = sock.recvfrom(65536)
            if data == b"quit":
                sock.sendto(b"bye", peer)
                return
            sock.sendto(b"echo:" + data, peer)
