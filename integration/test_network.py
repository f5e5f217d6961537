"""Wasm services on the network through real containerd 1.6 and 2.1 (docs/networking.md).

The guest is the HTTP/1.1 echo server of integration/guests/net/echo_server.py, a WASI p2
component built with componentize-py (integration/net_guests.py) and packed by `pywasm build`.

- `ctr run -d --net-host`: the guest listens in the machine's namespace (a free port); curl gets
  its answer; `ctr task kill` (SIGTERM) ends it at once with 143 and the port is free right after;
  1000 connections in a row and 50 at once leave the worker's fds and memory where they were.
- without --net-host the task has a network namespace of its own (the OCI sandbox): the guest is
  not reachable from the machine's namespace, and is through `nsenter --net=/proc/<pid>/ns/net`.
- `pywasm.io/network=none` refuses the guest's socket; a bad value is refused at Create.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import http.server
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration import images, net_guests
from integration.containerd import Containerd, new_id, run, run_args, task_status

PYWASM = "io.containerd.pywasm.v1"
IMAGE = images.ref("net-echo")


def explain(r: subprocess.CompletedProcess[Any]) -> str:
    return f"exit {r.returncode}\nstdout: {r.stdout!r:.2000}\nstderr: {r.stderr!r:.2000}"


@pytest.fixture(scope="session")
def echo_archive() -> Path:
    return images.build_wasm_archive("net-echo", net_guests.build("echo_server"))


@pytest.fixture(scope="session")
def client_archives() -> dict[str, Path]:
    """The TCP client and the wasi:http client, as pw-net-<guest> images."""
    return {
        name: images.build_wasm_archive(f"net-{name}", net_guests.build(name))
        for name in ("tcp_fetch", "http_get")
    }


@pytest.fixture
def client_images(
    containerd: Containerd, client_archives: dict[str, Path]
) -> dict[str, tuple[str, str]]:
    """Guest name -> (image reference, module path in it), imported into this containerd."""
    refs = {}
    for name, archive in client_archives.items():
        ref = images.ref(f"net-{name}")
        if (containerd.address, ref) not in _imported_clients:
            images.import_archive(containerd, ref, archive)
            _imported_clients.add((containerd.address, ref))
        refs[name] = (ref, images.archive_entrypoint(archive)[0])
    return refs


_imported_clients: set[tuple[str, str]] = set()


_imported: set[str] = set()


@pytest.fixture(scope="session")
def echo_module(echo_archive: Path) -> str:
    """The module's path in the image (`ctr run IMAGE ID ARGS` must name it before ARGS)."""
    return images.archive_entrypoint(echo_archive)[0]


@pytest.fixture
def echo_image(containerd: Containerd, echo_archive: Path) -> str:
    if containerd.address not in _imported:
        images.import_archive(containerd, IMAGE, echo_archive)
        _imported.add(containerd.address)
    return IMAGE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_status(ctrd: Containerd, cid: str, want: str, timeout: float = 30) -> str | None:
    deadline = time.monotonic() + timeout
    status = task_status(ctrd, cid)
    while status != want and time.monotonic() < deadline:
        time.sleep(0.05)
        status = task_status(ctrd, cid)
    return status


def _task_pid(ctrd: Containerd, cid: str) -> int:
    r = ctrd.ctr("tasks", "ls", timeout=20)
    for line in r.stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return int(fields[1])
    raise AssertionError(f"no task {cid}: {explain(r)}")


def _get(port: int, path: str = "/", body: bytes = b"") -> tuple[int, str | None, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST" if body else "GET", path, body=body or None)
        response = conn.getresponse()
        return response.status, response.getheader("X-Served-By"), response.read()
    finally:
        conn.close()


def _wait_answer(port: int, timeout: float = 60) -> None:
    """Until the guest answers (the first start compiles the 18 MB component)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _get(port, "/ready")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _remove(ctrd: Containerd, cid: str) -> None:
    if task_status(ctrd, cid) is not None:
        ctrd.ctr("tasks", "kill", "-s", "SIGKILL", cid, timeout=20)
        _wait_status(ctrd, cid, "STOPPED", timeout=10)
        ctrd.ctr("tasks", "rm", "-f", cid, timeout=20)
    ctrd.ctr("containers", "rm", cid, timeout=20)


@pytest.fixture
def serve(containerd: Containerd, echo_image: str, echo_module: str) -> Iterator[Any]:
    """Start the echo server with `ctr run -d`; removed (whatever happened) afterwards."""
    started: list[str] = []

    def start(port: int, *extra: str) -> str:
        cid = new_id("net")
        argv = run_args(echo_image, cid, echo_module, str(port), rm=False, detach=True, extra=extra)
        r = containerd.ctr(*argv, timeout=60)
        assert r.returncode == 0, explain(r)
        started.append(cid)
        assert _wait_status(containerd, cid, "RUNNING") == "RUNNING"
        return cid

    yield start
    for cid in started:
        _remove(containerd, cid)


def _stop(containerd: Containerd, cid: str) -> tuple[int, float]:
    """`ctr task kill` (SIGTERM); the exit status and how long the task took to stop."""
    began = time.monotonic()
    k = containerd.ctr("tasks", "kill", cid, timeout=20)
    assert k.returncode == 0, explain(k)
    assert _wait_status(containerd, cid, "STOPPED", timeout=10) == "STOPPED"
    took = time.monotonic() - began
    rm = containerd.ctr("tasks", "rm", cid, timeout=20)
    assert rm.returncode == 0, explain(rm)
    # ctr task rm warns "task X exit with non-zero exit code N"; silence means 0.
    found = re.search(r"exit with non-zero exit code (\d+)", rm.stderr)
    status = int(found.group(1)) if found else 0
    c = containerd.ctr("containers", "rm", cid, timeout=20)
    assert c.returncode == 0, explain(c)
    return status, took


def test_net_host_serves_curl_and_stops_at_sigterm(containerd: Containerd, serve: Any) -> None:
    port = _free_port()
    began = time.monotonic()
    cid = serve(port, "--net-host")
    _wait_answer(port)
    took = time.monotonic() - began
    print(f"containerd {containerd.version}: ctr run -d to the first answer {took:.2f}s")

    curl = subprocess.run(
        ["curl", "-s", "-i", "--max-time", "10", "--data", "abc", f"http://127.0.0.1:{port}/hi"],
        capture_output=True,
        check=False,
    )
    assert curl.returncode == 0, curl.stderr
    answer = curl.stdout.decode()
    assert answer.startswith("HTTP/1.1 200 OK\r\n"), answer
    assert "\r\nX-Served-By: pywasm-echo\r\n" in answer
    assert answer.endswith("\r\n\r\nPOST /hi\nabc"), answer

    status, took = _stop(containerd, cid)
    print(f"containerd {containerd.version}: SIGTERM to STOPPED in {took:.3f}s")
    assert status == 143
    # A poll of `ctr task ls` every 50 ms is part of this figure.
    assert took < 2.0, f"the guest blocked in accept() took {took:.2f}s to stop"
    with socket.socket() as s:  # the port is free right after, without SO_REUSEADDR
        s.bind(("127.0.0.1", port))
        s.listen()


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on ``port`` (it is the guest's)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    with open(f"/proc/{pid}/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    # columns: sl local_address rem_address st ... inode (10th)
    return any(
        int(r[1].split(":")[1], 16) == port and r[3] == "0A" and r[9] in inodes for r in rows
    )


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_many_connections_leave_no_growth(containerd: Containerd, serve: Any) -> None:
    port = _free_port()
    cid = serve(port, "--net-host")
    _wait_answer(port)
    pid = _task_pid(containerd, cid)
    assert _listens(pid, port), f"task pid {pid} is not the process listening on {port}"

    def one(i: int) -> bytes:
        status, served_by, body = _get(port, f"/{i}")
        assert (status, served_by) == (200, "pywasm-echo")
        return body

    for i in range(100):  # warm up: the guest's and the allocator's first growth
        one(i)
    fds, rss = _fds(pid), _rss_kib(pid)

    began = time.monotonic()
    for i in range(1000):
        assert one(i) == f"GET /{i}\n".encode()
    sequential = time.monotonic() - began
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        for _ in range(4):
            bodies = list(pool.map(one, range(50)))
            assert bodies == [f"GET /{i}\n".encode() for i in range(50)]

    fds_after, rss_after = _fds(pid), _rss_kib(pid)
    print(
        f"containerd {containerd.version}: 1000 requests in a row {sequential:.2f}s; "
        f"fds {fds} -> {fds_after}; RSS {rss} -> {rss_after} KiB"
    )
    assert fds_after <= fds, f"the worker's fds grew from {fds} to {fds_after}"
    assert rss_after - rss < 8 * 1024, f"the worker's RSS grew from {rss} to {rss_after} KiB"
    assert _stop(containerd, cid)[0] == 143


def test_own_namespace_unreachable_from_host_reachable_inside(
    containerd: Containerd, serve: Any
) -> None:
    port = _free_port()
    cid = serve(port)
    pid = _task_pid(containerd, cid)
    own, host = os.readlink(f"/proc/{pid}/ns/net"), os.readlink("/proc/self/ns/net")
    assert own != host, "without --net-host the task must have a network namespace of its own"

    inside = ["nsenter", f"--net=/proc/{pid}/ns/net", "curl", "-s", "--max-time", "10"]
    deadline = time.monotonic() + 60
    while True:
        r = subprocess.run(
            [*inside, f"http://127.0.0.1:{port}/inside"], capture_output=True, text=True
        )
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "GET /inside\n"

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert _stop(containerd, cid)[0] == 143


def test_network_none_refuses_the_socket(
    containerd: Containerd, echo_image: str, echo_module: str
) -> None:
    r = run(
        containerd,
        echo_image,
        new_id("net-none"),
        echo_module,
        "8080",
        extra=["--net-host", "--annotation", "pywasm.io/network=none"],
        timeout=120,
    )
    assert r.returncode == 1, explain(r)
    assert "echo_server: PermissionError" in r.stderr, explain(r)


def test_bad_network_annotation_is_refused_at_create(
    containerd: Containerd, echo_image: str
) -> None:
    r = run(
        containerd,
        echo_image,
        new_id("net-bad"),
        extra=["--annotation", "pywasm.io/network=outbound"],
    )
    assert r.returncode != 0, explain(r)
    assert "annotation pywasm.io/network='outbound' is not allowed" in r.stderr, explain(r)
    for value in ("all", "http", "none"):
        assert f"{value} = " in r.stderr, explain(r)


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from the host {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def host_server() -> Iterator[int]:
    """An HTTP server on 127.0.0.1 of the machine's namespace (a port, nothing configured)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_net_host_tcp_client_fetches(
    containerd: Containerd, client_images: dict[str, tuple[str, str]], host_server: int, host: str
) -> None:
    image, module = client_images["tcp_fetch"]
    url = f"http://{host}:{host_server}/tcp"
    r = run(containerd, image, new_id("net-tcp"), module, url, extra=["--net-host"], timeout=120)
    assert r.returncode == 0, explain(r)
    assert r.stdout == "hello from the host /tcp", explain(r)


def test_net_host_outgoing_http(
    containerd: Containerd, client_images: dict[str, tuple[str, str]], host_server: int
) -> None:
    image, module = client_images["http_get"]
    url = f"http://127.0.0.1:{host_server}/wasi-http"
    r = run(containerd, image, new_id("net-http"), module, url, extra=["--net-host"], timeout=120)
    assert r.returncode == 0, explain(r)
    assert r.stdout == "status 200\nhello from the host /wasi-http", explain(r)
