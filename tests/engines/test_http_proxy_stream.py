"""Streamed bodies of wasi:http/proxy components (pywasmd/engines/wasmtime_proxy.py with
pywasmd/http/server.py and pywasmd/http/exchange.py).

The function is integration/guests/http/proxy_stream.py (componentize-py, built by
integration/http_guests.py): ``/drip`` writes a line, waits, writes another; ``/echo`` copies
the request body to the response as it reads it, writing what ``check-write`` allows;
``/count`` reads the whole body.  The server runs in a child interpreter on a free loopback
port with the real engine, so what is measured is what a client sees.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_harness import http_guest

from pywasmd.engine import CallResult, Instances, get_engine
from pywasmd.engines.wasmtime_proxy import ProxyInstances
from pywasmd.http.exchange import Collected, Exchange
from pywasmd.oci.http import HttpPlan
from pywasmd.oci.plan import WasiPlan

REPO = Path(__file__).resolve().parents[2]
MAX_BODY = 16 << 20
TIMEOUT = 3.0

CHILD = r"""
import sys
from pathlib import Path
import pywasmd.http.server as server
from pywasmd.engine import get_engine
from pywasmd.oci.http import HttpPlan
from pywasmd.oci.plan import WasiPlan

component = Path(sys.argv[1])
http = HttpPlan("127.0.0.1", int(sys.argv[2]), float(sys.argv[3]), 1, int(sys.argv[4]))
env = tuple(tuple(kv.split("=", 1)) for kv in sys.argv[5:])
plan = WasiPlan(module=str(component), argv=("f",), env=env, cwd="/", preopens=(), http=http)
engine = get_engine("wasmtime")
loaded = engine.load_precompiled(component.with_suffix(".cwasm").read_bytes(), plan)
sys.exit(server.serve(http, lambda: engine.prepare_instances(loaded, plan), env))
"""


def _plan(component: Path) -> WasiPlan:
    return WasiPlan(
        module=str(component), argv=("f",), env=(), cwd="/", preopens=(), http=HttpPlan()
    )


@pytest.fixture(scope="module")
def component() -> Path:
    return http_guest("proxy_stream")


@pytest.fixture(scope="module")
def proxy(component: Path) -> Instances:
    engine = get_engine("wasmtime")
    plan = _plan(component)
    loaded = engine.load_precompiled(component.with_suffix(".cwasm").read_bytes(), plan)
    return engine.prepare_instances(loaded, plan)


def _env(method: str, target: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("REQUEST_METHOD", method), ("REQUEST_URI", target), *extra]


def test_a_1mib_body_echoed_exactly(proxy: Instances) -> None:
    body = os.urandom(1 << 20)
    env = _env("POST", "/echo", ("CONTENT_LENGTH", str(len(body))))
    began = time.monotonic()
    result = proxy.call(env, body, 60)
    took = time.monotonic() - began
    assert (result.outcome, result.detail) == ("exit", "")
    head, _, echoed = result.stdout.partition(b"\r\n\r\n")
    assert b"content-length: 1048576" in head
    assert echoed == body
    print(f"\n1 MiB echoed through the engine in {took:.2f} s ({2 / took:.1f} MB/s in+out)")


def test_the_body_is_read_as_it_arrives(proxy: Instances) -> None:
    """The guest runs before the body is complete: it blocks in blocking-read until more
    comes, and its response bytes come out while the request is still arriving."""
    kept = Collected()
    exchange = Exchange(kept)
    kept.exchange = exchange
    assert isinstance(proxy, ProxyInstances)
    results: list[CallResult] = []
    worker = threading.Thread(
        target=lambda: results.append(proxy.call_streaming(_env("POST", "/echo"), exchange, 10))
    )
    worker.start()
    exchange.feed(b"a" * 1000)
    deadline = time.monotonic() + 5
    while len(kept.body) < 1000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bytes(kept.body) == b"a" * 1000  # echoed while the body is still open
    assert kept.status == 200
    assert not kept.ended
    exchange.feed(b"b" * 10)
    exchange.end_body()
    worker.join(10)
    assert results[0].outcome == "exit", results
    assert kept.ended
    assert bytes(kept.body) == b"a" * 1000 + b"b" * 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, component: Path, tmp: Path, env: tuple[str, ...] = ()) -> None:
        self.port = _free_port()
        self.out = tmp / "stdout"
        self.err = tmp / "stderr"
        self.sockets: list[socket.socket] = []
        args = [str(component), str(self.port), str(TIMEOUT), str(MAX_BODY), *env]
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, *args], stdout=out, stderr=err, cwd=REPO
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError as exc:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError(f"no server: {self.err.read_text()}") from exc
                time.sleep(0.05)

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sockets.append(s)
        return s


@pytest.fixture
def srv(component: Path, tmp_path: Path) -> Iterator[Server]:
    server = Server(component, tmp_path)
    yield server
    for s in server.sockets:
        s.close()
    server.proc.kill()
    server.proc.wait()


def _wait_for(path: Path, text: str) -> None:
    """Log lines are written just after the answer goes out: they may trail it a little."""
    deadline = time.monotonic() + 5
    while text not in path.read_text():
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.05)


def _read_head(s: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _recv_exactly(s: socket.socket, have: bytes, n: int) -> bytes:
    while len(have) < n:
        chunk = s.recv(1 << 20)
        assert chunk, f"closed after {len(have)} of {n} bytes"
        have += chunk
    return have


def _dechunk(s: socket.socket, have: bytes) -> bytes:
    """A chunked body, read to its last chunk; checks the framing on the way."""
    body = b""
    while True:
        while b"\r\n" not in have:
            more = s.recv(65536)
            assert more, have
            have += more
        size_line, _, have = have.partition(b"\r\n")
        size = int(size_line, 16)
        have = _recv_exactly(s, have, size + 2)
        assert have[size : size + 2] == b"\r\n"
        if size == 0:
            return body
        body += have[:size]
        have = have[size + 2 :]


def test_first_bytes_reach_the_client_before_the_guest_finishes(srv: Server) -> None:
    s = srv.connect()
    began = time.monotonic()
    s.sendall(b"GET /drip?ms=1500 HTTP/1.1\r\nHost: h\r\n\r\n")
    head, rest = _read_head(s)
    while b"first\n" not in rest:
        rest += s.recv(65536)
    first = time.monotonic() - began
    assert b"Transfer-Encoding: chunked" in head
    assert rest == b"6\r\nfirst\n\r\n", rest
    body = _dechunk(s, b"")
    whole = time.monotonic() - began
    assert body == b"second\n"
    assert first < 1.0, f"first bytes after {first:.2f} s"
    assert whole >= 1.5
    print(f"\ntime to first byte {first * 1000:.0f} ms, whole response {whole * 1000:.0f} ms")
    # The connection is kept alive and serves the next request.
    s.sendall(b"POST /count HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
    head, rest = _read_head(s)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert _dechunk(s, rest) == b"3 %08x\n" % zlib.crc32(b"abc")


def test_content_length_is_kept_and_a_1mib_post_echoed(srv: Server) -> None:
    body = os.urandom(1 << 20)
    s = srv.connect()
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body))
    s.sendall(body)
    head, rest = _read_head(s)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    assert b"Content-Length: 1048576" in head
    assert b"Transfer-Encoding" not in head
    assert _recv_exactly(s, rest, len(body)) == body


def test_chunked_request_bodies(srv: Server) -> None:
    parts = [os.urandom(n) for n in (1, 5000, 70000, 3)]
    s = srv.connect()
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    for part in parts:
        s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        time.sleep(0.05)
    s.sendall(b"0\r\n\r\n")
    head, rest = _read_head(s)
    assert b"Transfer-Encoding: chunked" in head  # no length known: chunked back
    assert _dechunk(s, rest) == b"".join(parts)
    s.sendall(b"POST /count HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    s.sendall(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    head, rest = _read_head(s)
    assert _dechunk(s, rest) == b"5 %08x\n" % zlib.crc32(b"abcde")


def test_bodies_over_the_limit_get_413(srv: Server) -> None:
    s = srv.connect()
    s.sendall(b"POST /count HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
    head, _ = _read_head(s)
    assert head.startswith(b"HTTP/1.1 413 "), head
    # Chunked: the guest already reads it when the limit is crossed.
    s = srv.connect()
    s.sendall(b"POST /count HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (1 << 16, b"x" * (1 << 16))
    try:
        for _ in range(MAX_BODY // (1 << 16) + 2):
            s.sendall(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    head, _ = _read_head(s)
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert "POST /count from 127.0.0.1: 413: body over pywasm.io/http-max-body" in (
        srv.err.read_text()
    )
    # The function still serves.
    s = srv.connect()
    s.sendall(b"POST /count HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
    head, rest = _read_head(s)
    assert _dechunk(s, rest) == b"2 %08x\n" % zlib.crc32(b"hi")


def test_a_client_that_does_not_read_cannot_hold_the_instance(srv: Server) -> None:
    """The guest writes what check-write allows; a client that never reads fills the socket
    (its buffers hold 4 MiB at most here), the guest waits on its pollable and is stopped at
    the deadline; the next request is served (one instance at a time here)."""
    s = srv.connect()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = b"y" * MAX_BODY
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body))
    began = time.monotonic()

    def send() -> None:
        try:
            s.sendall(body)
        except OSError:
            pass  # closed by the server once the instance is stopped

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    time.sleep(0.5)
    other = srv.connect()
    other.sendall(b"GET /drip?ms=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    head, rest = _read_head(other)
    took = time.monotonic() - began
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert _dechunk(other, rest) == b"first\nsecond\n"
    assert TIMEOUT - 0.5 < took < TIMEOUT + 3
    _wait_for(srv.err, "POST /echo from 127.0.0.1: 200, cut short: the guest ran over")


def test_head_and_a_client_leaving_after_the_whole_response(srv: Server) -> None:
    """A HEAD answer is whole at its head, a content-length one at its last byte: a client that
    leaves then costs the guest nothing (its later writes and flush succeed)."""
    s = srv.connect()
    s.sendall(b"HEAD /drip?ms=200 HTTP/1.1\r\nHost: h\r\n\r\n")
    head, rest = _read_head(s)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest == b""
    s.close()
    body = os.urandom(100_000)
    for _ in range(2):
        s = srv.connect()
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body))
        s.sendall(body)
        head, rest = _read_head(s)
        assert _recv_exactly(s, rest, len(body)) == body
        s.close()
    s = srv.connect()
    s.sendall(b"GET /drip?ms=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    head, rest = _read_head(s)
    assert _dechunk(s, rest) == b"first\nsecond\n"
    _wait_for(srv.out, '"HEAD /drip?ms=200 HTTP/1.1" 200 0 ')
    _wait_for(srv.out, '"GET /drip?ms=1 HTTP/1.1" 200 13 ')
    assert srv.out.read_text().count('"POST /echo HTTP/1.1" 200 100000 ') == 2
    assert "cut short" not in srv.err.read_text()


def test_a_large_body_streams_and_a_slow_small_one_holds_no_instance(srv: Server) -> None:
    """Past STREAM_AFTER (256 KiB) the instance starts and echoes while the client still sends;
    a small body sent slowly waits in the server, not in an instance (one instance here): the
    next request is served meanwhile, and the slow one gets 408 at the read limit."""
    slow = srv.connect()
    slow.sendall(b"POST /count HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789")
    time.sleep(0.2)
    s = srv.connect()
    total = 2 << 20
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % total)
    first = os.urandom(512 << 10)
    began = time.monotonic()
    s.sendall(first)
    head, rest = _read_head(s)  # answered before the rest of the body was sent
    # Well before the slow request's deadline (TIMEOUT): its instance is not in the way.
    assert time.monotonic() - began < TIMEOUT / 2
    assert b"Content-Length: 2097152" in head, head
    rest = _recv_exactly(s, rest, 256 << 10)
    assert rest == first[: len(rest)]
    second = os.urandom(total - len(first))
    s.sendall(second)
    assert _recv_exactly(s, rest, total) == first + second
    # The slow client is refused by the server (the 10 s read limit), its instance never ran.
    slow.settimeout(15)
    head, _ = _read_head(slow)
    assert head.startswith(b"HTTP/1.1 408 "), head
    _wait_for(srv.out, '"POST /count HTTP/1.1" 408 ')


def test_splice_moves_the_body_without_the_guest(proxy: Instances) -> None:
    body = os.urandom(300_000)
    result = proxy.call(_env("POST", "/splice"), body, 30)
    assert (result.outcome, result.detail) == ("exit", "")
    assert result.stdout.partition(b"\r\n\r\n")[2] == body


def test_a_trap_after_the_whole_response_does_not_cut_it(srv: Server) -> None:
    s = srv.connect()
    s.sendall(b"GET /late-trap HTTP/1.1\r\nHost: h\r\n\r\n")
    head, rest = _read_head(s)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert _dechunk(s, rest) == b"done\n"
    _wait_for(srv.err, "GET /late-trap from 127.0.0.1: 200, sent whole, then: the guest trapped")
    assert s.recv(10) == b""  # closed after it (the instance failed), not reset


@pytest.fixture
def echo_srv(tmp_path: Path) -> Iterator[Server]:
    """The server with integration/guests/http/proxy_echo.py and a container env."""
    server = Server(http_guest("proxy_echo"), tmp_path, ("GREETING=hi", "EMPTY="))
    yield server
    for s in server.sockets:
        s.close()
    server.proc.kill()
    server.proc.wait()


def _answer(s: socket.socket) -> tuple[bytes, bytes]:
    head, rest = _read_head(s)
    if b"\r\nTransfer-Encoding: chunked" in head:
        return head, _dechunk(s, rest)
    length = int(head.partition(b"\r\nContent-Length: ")[2].partition(b"\r\n")[0])
    return head, _recv_exactly(s, rest, length)


def test_served_headers_reach_the_component_as_sent(echo_srv: Server) -> None:
    """Through the real server: header bytes that are not UTF-8 unchanged, a name with "_",
    Proxy and repeated headers as sent (the CGI rules are for p1 modules); the connection's
    framing headers and a chunked body's trailers are not request headers."""
    s = echo_srv.connect()
    s.sendall(
        b"GET /headers HTTP/1.1\r\nHost: h:1\r\nX-Raw: \xff\xfe\r\nX_Under: u\r\n"
        b"Proxy: http://proxy.invalid\r\nX-Multi: a\r\nConnection: keep-alive\r\n"
        b"X-Multi: b\r\n\r\n"
    )
    head, body = _answer(s)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    assert body == (
        b"host: h:1\nx-raw: \xff\xfe\nx_under: u\nproxy: http://proxy.invalid\n"
        b"x-multi: a\nx-multi: b\n"
    )
    # The response head is the component's: no content-type added where it set none.
    assert b"\r\nx-echo-method: GET" in head
    assert b"content-type" not in head.lower(), head
    s.sendall(
        b"POST /headers HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    head, body = _answer(s)
    assert body == b"host: h\n", body


def test_a_header_value_with_crlf_cannot_split_the_response(echo_srv: Server) -> None:
    """The component copies a decoded query into a header: CR LF in it is refused by the
    host (header-error.invalid-syntax), so the client sees only headers the component set."""
    s = echo_srv.connect()
    s.sendall(b"GET /reflect?x%0D%0ASet-Cookie:%20a=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    head, body = _answer(s)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    assert b"set-cookie" not in head.lower(), head
    assert body == b"refused: HeaderError_InvalidSyntax HeaderError_InvalidSyntax\n"


def test_served_environment_is_the_containers(echo_srv: Server) -> None:
    s = echo_srv.connect()
    s.sendall(b"GET /env?x=1 HTTP/1.1\r\nHost: h\r\nX-Test: t\r\n\r\n")
    head, body = _answer(s)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    assert body == b"EMPTY=\nGREETING=hi\n"
