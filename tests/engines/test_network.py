"""WASI p2 components on the network, run by the real WasmtimeEngine (docs/networking.md).

Every guest runs in a child process inside a network namespace the test makes (``lo`` only),
never in the machine's own.  The guests are Python apps built with componentize-py from
integration/guests/net (see integration/net_guests.py), compiled once per session.

If the echo server stops answering under ``pywasm.io/network=all`` after a wasmtime-py
upgrade, the upgrade took sockets away (wasmtime 48 made TCP/UDP creation opt-in and the C API
has no switch): hold wasmtime-py below 48 again (pyproject.toml) until it has one.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from importlib.metadata import version
from pathlib import Path

import pytest
from netns import in_netns

from pywasmd.engines.wasmtime import WasmtimeEngine
from pywasmd.errors import InvalidArgument
from pywasmd.oci.plan import NETWORK_ANNOTATION, WasiPlan, network_mode

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHILD = HERE / "netns_child.py"
WASMTIME = version("wasmtime")


def _plan(module: Path, name: str, *args: str, network: str = "all") -> WasiPlan:
    return WasiPlan(
        module=str(module),
        argv=(f"/{name}.wasm", *args),
        env=(),
        cwd="/",
        preopens=(),
        network=network,
    )


@pytest.fixture(scope="session")
def net_guests() -> dict[str, tuple[Path, Path]]:
    """Each network guest: its component and its precompiled form (built once, cached)."""
    spec = importlib.util.spec_from_file_location(
        "_net_guests", REPO / "integration" / "net_guests.py"
    )
    assert spec is not None
    assert spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    engine = WasmtimeEngine()
    built: dict[str, tuple[Path, Path]] = {}
    for name, wasm in builder.build_all().items():
        plan = _plan(wasm, name)
        key = hashlib.sha256(engine.fingerprint(plan).encode()).hexdigest()[:12]
        cwasm = wasm.with_suffix(f".{key}.cwasm")
        if not cwasm.exists():
            tmp = cwasm.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(engine.precompile(plan))
            tmp.replace(cwasm)
        built[name] = (wasm, cwasm)
    return built


@pytest.fixture
def netns() -> Iterator[int]:
    """A fresh network namespace with ``lo`` up, held by a sleeping child: its pid."""
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); from netns import new_netns; "
        "new_netns(); print('ready', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"ready\n", "could not make a network namespace"
    yield holder.pid
    assert holder.stdin is not None
    holder.stdin.close()
    holder.stdout.close()
    holder.wait(timeout=10)


class Guest:
    def __init__(self, proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.proc, self._out, self._err = proc, out, err

    @property
    def stdout(self) -> str:
        return self._out.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self._err.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stdout:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(
                    f"no {text!r} from the guest (status {self.proc.returncode}); stderr:\n"
                    f"{self.stderr[-3000:]}\nIf it says PermissionError, wasmtime-py {WASMTIME} "
                    "does not let guests create sockets: see this module's docstring."
                )
            time.sleep(0.02)

    def wait(self, timeout: float = 30) -> int:
        """The status as the shim reports it: the code, or 128+n when signal n ended it."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"the guest did not end within {timeout}s")
        return code if code >= 0 else 128 - code


@pytest.fixture
def run_guest(
    net_guests: dict[str, tuple[Path, Path]], netns: int, tmp_path: Path
) -> Iterator[Callable[..., Guest]]:
    started: list[Guest] = []

    def start(name: str, *args: str, network: str = "all") -> Guest:
        wasm, cwasm = net_guests[name]
        work = tmp_path / f"{name}-{len(started)}"
        work.mkdir()
        (work / "plan.json").write_text(
            json.dumps(_plan(wasm, name, *args, network=network).to_json())
        )
        out, err = work / "stdout", work / "stderr"
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen(
                [sys.executable, str(CHILD), str(netns), str(work / "plan.json"), str(cwasm)],
                stdin=subprocess.DEVNULL,
                stdout=o,
                stderr=e,
            )
        guest = Guest(proc, out, err)
        started.append(guest)
        return guest

    yield start
    for guest in started:
        if guest.proc.poll() is None:
            guest.proc.kill()
            guest.proc.wait()


def _host_free_port() -> int:
    # A port nothing listens on in the machine's own namespace, so "not reachable from the
    # host" cannot be confused with another program answering there.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(
    port: int, method: str = "GET", path: str = "/", body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body or None)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from the namespace {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _server_in(netns: int) -> Iterator[int]:
    """An HTTP server listening on 127.0.0.1 inside ``netns``: its port."""
    server = in_netns(netns, lambda: socketserver.TCPServer(("127.0.0.1", 0), _Hello))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_echo_server_answers_inside_its_namespace_and_ends_at_sigterm(run_guest, netns) -> None:
    port = _host_free_port()
    guest = run_guest("echo_server", str(port))
    guest.wait_for(f"listening on {port}")

    status, headers, body = in_netns(netns, lambda: _request(port, "POST", "/hello", b"abc"))
    assert (status, headers.get("X-Served-By"), body) == (200, "pywasm-echo", b"POST /hello\nabc")
    # Keep-alive: a second request on a new connection is served by the same accept loop.
    assert in_netns(netns, lambda: _request(port, "GET", "/again"))[2] == b"GET /again\n"

    # Two keep-alive connections open at once, requests interleaved: both make progress.
    def interleaved() -> list[bytes]:
        first = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        second = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        bodies = []
        try:
            for conn, path in ((first, "/a1"), (second, "/b1"), (first, "/a2"), (second, "/b2")):
                conn.request("GET", path)
                bodies.append(conn.getresponse().read())
        finally:
            first.close()
            second.close()
        return bodies

    assert in_netns(netns, interleaved) == [b"GET /a1\n", b"GET /b1\n", b"GET /a2\n", b"GET /b2\n"]

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

    # Blocked waiting for a connection: the default SIGTERM action ends the process at once.
    began = time.monotonic()
    guest.proc.send_signal(signal.SIGTERM)
    assert guest.wait(timeout=5) == 128 + signal.SIGTERM
    assert time.monotonic() - began < 1.0

    def listen_again() -> None:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            s.listen()

    in_netns(netns, listen_again)  # the port is free right after


def test_tcp_client_looks_up_a_name_and_connects(run_guest, netns) -> None:
    with _server_in(netns) as port:
        guest = run_guest("tcp_fetch", f"http://localhost:{port}/path")
        assert guest.wait() == 0, guest.stderr
    assert guest.stdout == "hello from the namespace /path"


def test_udp_echo_answers_and_ends_at_sigterm_in_recv(run_guest, netns) -> None:
    guest = run_guest("udp_echo", "9000")
    guest.wait_for("listening on 9000")

    def exchange(payload: bytes) -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(payload, ("127.0.0.1", 9000))
            return s.recv(65536)

    assert in_netns(netns, lambda: exchange(b"ping")) == b"echo:ping"
    began = time.monotonic()
    guest.proc.send_signal(signal.SIGTERM)
    assert guest.wait(timeout=5) == 128 + signal.SIGTERM
    assert time.monotonic() - began < 1.0


def test_udp_echo_quits_cleanly(run_guest, netns) -> None:
    guest = run_guest("udp_echo", "9001")
    guest.wait_for("listening on 9001")

    def quit_() -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(b"quit", ("127.0.0.1", 9001))
            return s.recv(16)

    assert in_netns(netns, quit_) == b"bye"
    assert guest.wait() == 0


def test_outgoing_http_through_wasi_http(run_guest, netns) -> None:
    with _server_in(netns) as port:
        guest = run_guest("http_get", f"http://127.0.0.1:{port}/via-wasi-http")
        assert guest.wait() == 0, guest.stderr
    assert guest.stdout == "status 200\nhello from the namespace /via-wasi-http"


@pytest.mark.parametrize(
    ("name", "args"),
    [("echo_server", ("8080",)), ("tcp_fetch", ("http://127.0.0.1:1/",)), ("udp_echo", ("9000",))],
)
def test_network_none_refuses_socket_creation(run_guest, name: str, args: tuple[str, ...]) -> None:
    guest = run_guest(name, *args, network="none")
    assert guest.wait() == 1
    # socket() itself fails: WASI answered access-denied (errno EACCES) before any address.
    assert f"{name}: PermissionError" in guest.stderr


def test_network_http_allows_outgoing_http_and_refuses_sockets(run_guest, netns) -> None:
    with _server_in(netns) as port:
        fetch = run_guest("http_get", f"http://127.0.0.1:{port}/ok", network="http")
        assert fetch.wait() == 0, fetch.stderr
        assert fetch.stdout == "status 200\nhello from the namespace /ok"
        raw = run_guest("tcp_fetch", f"http://127.0.0.1:{port}/", network="http")
        assert raw.wait() == 1
        assert "tcp_fetch: PermissionError" in raw.stderr
    server = run_guest("echo_server", "8080", network="http")
    assert server.wait() == 1
    assert "echo_server: PermissionError" in server.stderr


def test_network_none_refuses_a_component_importing_wasi_http_at_create(net_guests) -> None:
    wasm, cwasm = net_guests["http_get"]
    plan = _plan(wasm, "http_get", "http://127.0.0.1/", network="none")
    with pytest.raises(InvalidArgument) as caught:
        WasmtimeEngine().load_precompiled_file(str(cwasm), plan)
    assert "wasi:http/outgoing-handler" in caught.value.message
    assert "pywasm.io/network=none" in caught.value.message
    assert "pywasm.io/network=http" in caught.value.message


def test_network_annotation_values() -> None:
    assert network_mode({}) == "all"
    for value in ("all", "http", "none"):
        assert network_mode({NETWORK_ANNOTATION: value}) == value
    for bad in ("outbound", "ALL", "", "tcp"):
        with pytest.raises(InvalidArgument) as caught:
            network_mode({NETWORK_ANNOTATION: bad})
        message = caught.value.message
        assert f"annotation pywasm.io/network={bad!r}" in message
        assert all(f"{v} = " in message for v in ("all", "http", "none"))


def test_network_mode_survives_the_worker_hand_over() -> None:
    plan = _plan(Path("/x.wasm"), "x", network="none")
    assert WasiPlan.from_json(json.loads(json.dumps(plan.to_json()))).network == "none"
    assert WasiPlan.from_json({**plan.to_json(), "network": "all"}).network == "all"
