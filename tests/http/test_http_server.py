"""pywasmd.http.server with a stand-in engine: the HTTP handling without Wasm.

The server runs in a child interpreter (it takes SIGTERM and forks like in a container) on a
free loopback port, with short read and idle limits, and an ``Instances`` that answers from the
CGI environment: slow clients (408), idle keep-alive connections, ``Expect: 100-continue``,
HEAD, chunked bodies over the limit (413), malformed requests (400), pipelining order, a call
stuck past its deadline in a host call (504 one second later), the access log, and SIGTERM
with a request running (answered, exit 0).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import sys, time
import pywasmd.http.server as server
from pywasmd.engine import CallResult
from pywasmd.oci.http import HttpPlan

server.READ_TIMEOUT = 0.5
server.IDLE_TIMEOUT = 0.7

class Echo:
    def call(self, env, stdin, timeout):
        env = dict(env)
        path = env["PATH_INFO"]
        if path == "/stuck":  # a host call the epoch cannot interrupt
            time.sleep(timeout + 2)
        if path == "/slow":
            time.sleep(0.8)
        body = f"{env['REQUEST_METHOD']} {path} {env.get('CONTENT_LENGTH', '-')} {env['A']}\n"
        out = b"Content-Type: text/plain\n\n" + body.encode() + stdin
        return CallResult("exit", 0, out)

plan = HttpPlan("127.0.0.1", int(sys.argv[1]), 1.0, 1, 1000)
sys.exit(server.serve(plan, Echo, [("A", "1")]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.sockets: list[socket.socket] = []
        self.out = tmp / "stdout"
        self.err = tmp / "stderr"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(self.port)], stdout=out, stderr=err, cwd=REPO
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError as exc:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    why = self.err.read_text()
                    raise AssertionError(f"the server did not start: {why}") from exc
                time.sleep(0.05)

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.sockets.append(s)
        return s


def _recv_all(s: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path)
    yield server
    for s in server.sockets:
        s.close()
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


def test_slow_client_gets_408_and_no_instance(srv: Server) -> None:
    s = srv.connect()
    s.sendall(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
    began = time.monotonic()
    answer = _recv_all(s)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert b"Connection: close" in answer
    assert 0.4 < time.monotonic() - began < 3
    assert "POST /x from 127.0.0.1: 408: the client sent no whole request" in srv.err.read_text()


def test_idle_keep_alive_connection_is_closed(srv: Server) -> None:
    s = srv.connect()
    s.sendall(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    began = time.monotonic()
    assert s.recv(65536) == b""  # closed by the server, idle
    assert 0.5 < time.monotonic() - began < 3


def test_expect_continue_head_and_pipelining(srv: Server) -> None:
    s = srv.connect()
    s.sendall(b"POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
    s.sendall(b"hi")
    answer = s.recv(65536)
    assert answer.endswith(b"\r\n\r\nPOST /e 2 1\nhi"), answer
    s.sendall(b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n" + b"GET /p1 HTTP/1.1\r\nHost: h\r\n\r\n")
    time.sleep(0.3)
    both = s.recv(65536)
    head, _, rest = both.partition(b"\r\n\r\n")
    assert b"Content-Length: 12" in head  # the body HEAD would have had, not sent
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n"), both
    assert rest.endswith(b"GET /p1 - 1\n")


def test_chunked_body_over_the_limit_and_a_bad_request(srv: Server) -> None:
    s = srv.connect()
    s.sendall(b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        s.sendall(b"200\r\n" + b"x" * 512 + b"\r\n")
    answer = _recv_all(s)
    # The phrase depends on the Python release (RFC 9110 renamed it).
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    bad = srv.connect()
    bad.sendall(b"THIS IS NOT HTTP\r\n\r\n")
    assert _recv_all(bad).startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_a_call_stuck_in_a_host_call_is_answered_504(srv: Server) -> None:
    s = srv.connect()
    began = time.monotonic()
    s.sendall(b"GET /stuck HTTP/1.1\r\nHost: h\r\n\r\n")
    answer = s.recv(65536)
    took = time.monotonic() - began
    assert answer.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n"), answer
    assert 1.8 < took < 3.5
    assert "504: the guest ran over 1 s (pywasm.io/http-timeout) inside a host call" in (
        srv.err.read_text()
    )


def test_access_log_and_sigterm_with_a_request_running(srv: Server) -> None:
    s = srv.connect()
    s.sendall(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
    time.sleep(0.2)
    os.kill(srv.proc.pid, signal.SIGTERM)
    answer = _recv_all(s)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    assert b"Connection: close" in answer  # draining: no keep-alive
    assert srv.proc.wait(timeout=5) == 0
    log = srv.out.read_text()
    assert '127.0.0.1 "GET /slow HTTP/1.1" 200 14 ' in log, log
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1)
