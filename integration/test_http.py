"""HTTP functions (pywasm.io/trigger=http) through real containerd 1.6 and 2.1 (docs/http.md).

The function is integration/guests/cgi.c (zig, wasm32-wasi) in an image packed like every test
guest; `ctr run -d --net-host` with the annotations; the container's log through --log-uri.

- every CGI variable and forwarded header, the container's env, GET and POST bodies of 0 bytes,
  1 MiB and chunked, 404 and 302 from the guest, 500 trap, 502 malformed, 413, 504 for a guest
  stuck in a loop (and the next request answered), access-log and error lines in the log;
- 200 concurrent requests with pywasm.io/http-concurrency=4; 2000 requests without fd or memory
  growth of the task;
- SIGTERM while a request runs: it is answered, the task exits 0, the port is free;
- bad annotation values are refused at Create, naming the annotation.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration import guests, http_guests, images
from integration.containerd import Containerd, new_id, run_args, task_status

IMAGE = images.ref("http-cgi")


def explain(r: subprocess.CompletedProcess[Any]) -> str:
    return f"exit {r.returncode}\nstdout: {r.stdout!r:.2000}\nstderr: {r.stderr!r:.2000}"


@pytest.fixture(scope="session")
def cgi_archive() -> Path:
    return images.build_wasm_archive("http-cgi", guests.build("cgi"))


_imported: set[str] = set()


@pytest.fixture
def cgi_image(containerd: Containerd, cgi_archive: Path) -> str:
    if containerd.address not in _imported:
        images.import_archive(containerd, IMAGE, cgi_archive)
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


def _request(
    port: int,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _raw(port: int, request: bytes, timeout: float = 15) -> bytes:
    """`request` as sent, the answer up to the server's close (send Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _wait_answer(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _request(port, "/ready")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Function:
    def __init__(self, ctrd: Containerd, cid: str, port: int, log: Path) -> None:
        self.ctrd, self.cid, self.port, self.log = ctrd, cid, port, log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def function(
    containerd: Containerd, cgi_image: str, cgi_archive: Path, tmp_path: Path
) -> Iterator[Any]:
    started: list[str] = []
    module = images.archive_entrypoint(cgi_archive)[0]

    def start(
        *annotations: str,
        env: tuple[str, ...] = (),
        more: tuple[str, ...] = (),
        image: tuple[str, ...] | None = None,
    ) -> Function:
        port = _free_port()
        cid = new_id("http")
        log = tmp_path / f"{cid}.log"
        extra = ["--net-host", "--log-uri", f"file://{log}"]
        extra += ["--annotation", "pywasm.io/trigger=http"]
        extra += ["--annotation", f"pywasm.io/listen=127.0.0.1:{port}"]
        for a in annotations:
            extra += ["--annotation", a]
        for e in env:
            extra += ["--env", e]
        extra += more
        # the image reference, then process.args (the module first)
        ref, *args = image or (cgi_image, module)
        argv = run_args(ref, cid, *args, rm=False, detach=True, extra=extra)
        began = time.monotonic()
        r = containerd.ctr(*argv, timeout=60)
        assert r.returncode == 0, explain(r)
        started.append(cid)
        assert _wait_status(containerd, cid, "RUNNING") == "RUNNING"
        _wait_answer(port, timeout=180)  # a first start of CPython compiles 20-26 MB of Wasm
        took = time.monotonic() - began
        print(f"containerd {containerd.version}: ctr run -d {ref} to the first answer {took:.2f}s")
        return Function(containerd, cid, port, log)

    yield start
    for cid in started:
        if task_status(containerd, cid) is not None:
            containerd.ctr("tasks", "kill", "-s", "SIGKILL", cid, timeout=20)
            _wait_status(containerd, cid, "STOPPED", timeout=10)
            containerd.ctr("tasks", "rm", "-f", cid, timeout=20)
        containerd.ctr("containers", "rm", cid, timeout=20)


_python_imported: set[str] = set()


@pytest.fixture(scope="session")
def python_cgi_archive() -> Path:
    return http_guests.python_cgi()


@pytest.fixture
def python_cgi_image(containerd: Containerd, python_cgi_archive: Path) -> tuple[str, ...]:
    """The Python CGI function: `python.wasm /cgi.py` (integration/guests/cgi.py)."""
    if containerd.address not in _python_imported:
        images.import_archive(containerd, http_guests.PYTHON_CGI_REF, python_cgi_archive)
        _python_imported.add(containerd.address)
    return (http_guests.PYTHON_CGI_REF, *http_guests.PYTHON_CGI_ARGS)


def _env(body: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in body.decode().splitlines() if "=" in line)


@pytest.mark.parametrize("guest", ["c", "python"])
def test_cgi_variables_bodies_and_statuses(
    containerd: Containerd, function: Any, guest: str, request: pytest.FixtureRequest
) -> None:
    """The same requests and the same expected bytes for the C function (integration/guests/
    cgi.c, zig) and the Python one (integration/guests/cgi.py under CPython for WASI)."""
    image = request.getfixturevalue("python_cgi_image") if guest == "python" else None
    f = function(
        "pywasm.io/http-timeout=1",
        "pywasm.io/http-max-body=2097152",
        env=("FOO=bar",),
        image=image,
    )
    port = f.port

    status, headers, body = _request(
        port, "/env/x%20y?a=1&b=%20", headers={"X-Test": "hi", "Accept-Language": "fr"}
    )
    assert status == 200
    env = _env(body)
    expected = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "pywasm",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": str(port),
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/env/x y",
        "QUERY_STRING": "a=1&b=%20",
        "REQUEST_URI": "/env/x%20y?a=1&b=%20",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_X_TEST": "hi",
        "HTTP_ACCEPT_LANGUAGE": "fr",
        "HTTP_HOST": f"127.0.0.1:{port}",
        "FOO": "bar",
    }
    assert {k: env.get(k) for k in expected} == expected
    assert env["REMOTE_PORT"].isdigit()
    assert "CONTENT_LENGTH" not in env  # a GET without a body has none
    # repeated headers joined; names with "_" and Proxy (httpoxy) not passed on
    raw = _raw(
        port,
        b"GET /env HTTP/1.1\r\nHost: fn.example:81\r\nX-Multi: a\r\nX-Multi: b\r\n"
        b"X_Multi: sneaky\r\nProxy: http://evil.invalid\r\nConnection: close\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 200 "), raw[:300]
    env = _env(raw.split(b"\r\n\r\n", 1)[1])
    assert (env.get("HTTP_X_MULTI"), env.get("SERVER_NAME"), env.get("SERVER_PORT")) == (
        "a, b",
        "fn.example",
        str(port),
    )
    assert "HTTP_PROXY" not in env, env
    status, _, body = _request(
        port, "/env", method="POST", body=b"", headers={"Content-Type": "a/b"}
    )
    env = _env(body)
    assert (status, env.get("CONTENT_LENGTH"), env.get("CONTENT_TYPE")) == (200, "0", "a/b")

    status, headers, body = _request(
        port, "/echo?q=7", method="POST", body=b"hello", headers={"X-Test": "t"}
    )
    assert (status, headers.get("X-Echo-Method"), headers.get("Content-Type")) == (
        200,
        "POST",
        "text/plain",
    )
    assert body == b"method=POST\npath=/echo\nquery=q=7\nheader=t\nlength=5\nbody=hello"

    status, _, body = _request(port, "/empty", method="POST", body=b"")
    assert (status, body) == (200, b"method=POST\npath=/empty\nquery=\nheader=-\nlength=0\nbody=")

    mib = os.urandom(1024 * 1024)
    status, _, body = _request(port, "/big", method="POST", body=mib)
    assert status == 200
    assert body.endswith(b"length=1048576\nbody=" + mib)

    chunked = subprocess.run(
        [
            "curl",
            "-s",
            "--max-time",
            "10",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "chunky",
            f"http://127.0.0.1:{port}/c",
        ],
        capture_output=True,
        check=False,
    )
    assert chunked.stdout.endswith(b"length=6\nbody=chunky"), chunked

    status, headers, body = _request(port, "/notfound")
    assert (status, body) == (404, b"no such thing\n")
    status, headers, _ = _request(port, "/redirect")
    assert (status, headers.get("Location")) == (302, "http://example.invalid/elsewhere")
    assert _request(port, "/trap")[0] == 500
    assert _request(port, "/malformed")[0] == 502
    assert _request(port, "/exit3")[0] == 502
    assert _request(port, "/nul%00byte")[0] == 400
    big = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "--data-binary",
            "@-",
            f"http://127.0.0.1:{port}/too-big",
        ],
        input=b"x" * (3 * 1024 * 1024),
        capture_output=True,
        check=False,
    )
    assert big.stdout == b"413", big
    began = time.monotonic()
    assert _request(port, "/loop")[0] == 504
    took = time.monotonic() - began
    assert 0.9 < took < 3.0, f"the looping guest was answered after {took:.2f}s"
    assert _request(port, "/after-loop")[0] == 200
    assert _request(port, "/stderr")[2] == b"see stderr\n"

    log = f.log_text()
    for line in (
        r'127\.0\.0\.1 "GET /notfound HTTP/1\.1" 404 14 [\d.]+ms',
        r'127\.0\.0\.1 "POST /big HTTP/1\.1" 200 1048\d+ [\d.]+ms',
        r'"GET /loop HTTP/1\.1" 504 ',
        r"GET /trap from 127\.0\.0\.1: 500: the guest trapped: .*unreachable",
        r"GET /malformed from 127\.0\.0\.1: 502: malformed CGI response",
        r"POST /too-big from 127\.0\.0\.1: 413: body of 3145728 bytes",
        r"GET /loop from 127\.0\.0\.1: 504: the guest ran over its 1 s",
        r"GET /nul%00byte from 127\.0\.0\.1: 400: PATH_INFO would hold a NUL",
        r"cgi guest: a line on stderr",
    ):
        assert re.search(line, log), f"{line!r} not in the log:\n{log[-3000:]}"


def _servers(pid: int) -> list[int]:
    """The task's process and the server processes it forked (one per CPU it may use)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [pid, *(int(c) for c in f.read().split())]


def _fds(pid: int) -> int:
    return sum(len(os.listdir(f"/proc/{p}/fd")) for p in _servers(pid))


def _memory_kib(pid: int) -> tuple[int, int, int]:
    """RSS, PSS and shared (pages another process maps too) of all server processes, KiB."""
    rss = pss = shared = 0
    for p in _servers(pid):
        with open(f"/proc/{p}/smaps_rollup") as f:
            fields = {k: v.split()[0] for k, v in (line.split(":", 1) for line in f if ":" in line)}
        rss += int(fields["Rss"])
        pss += int(fields["Pss"])
        shared += int(fields["Shared_Clean"]) + int(fields["Shared_Dirty"])
    return rss, pss, shared


def _keepalive_load(port: int, requests: int, connections: int, expect: Any) -> tuple[float, int]:
    """`requests` POSTs of /n<i> spread over `connections` kept-alive connections, each answer
    checked by expect(i, status, body); the time taken and the number of TCP connections used
    (more than `connections` when the server closed one)."""

    def run(first: int) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        sockets = 0
        last: object = None
        try:
            for i in range(first, requests, connections):
                conn.request("POST", f"/n{i}", body=str(i).encode())
                response = conn.getresponse()
                expect(i, response.status, response.read())
                if conn.sock is not None and conn.sock is not last:
                    sockets, last = sockets + 1, conn.sock
        finally:
            conn.close()
        return sockets

    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=connections) as pool:
        used = sum(pool.map(run, range(connections)))
    return time.monotonic() - began, used


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _warm_every_server(pid: int, port: int, expect: Any) -> None:
    """Rounds of 16 requests at once on new connections until every server process has spent
    0.1 s of CPU on them: whichever process is idle accepts, and one that first serves during
    the measurement would fault in its code and libraries then (RSS up, though not a leak)."""
    servers = _servers(pid)
    before = {p: _cpu_ticks(p) for p in servers}

    def one(i: int) -> None:
        status, _, body = _request(port, f"/n{i}", method="POST", body=str(i).encode())
        expect(i, status, body)

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        for _ in range(30):
            list(pool.map(one, range(16)))
            if all(_cpu_ticks(p) - before[p] >= 10 for p in servers):
                return
    spent = {p: _cpu_ticks(p) - before[p] for p in servers}
    raise AssertionError(f"a server process got no requests in 480 (CPU ticks: {spent})")


def _echo(i: int) -> bytes:
    return f"method=POST\npath=/n{i}\nquery=\nheader=-\nlength={len(str(i))}\nbody={i}".encode()


def test_concurrency_and_no_growth(containerd: Containerd, function: Any) -> None:
    """200 concurrent requests with pywasm.io/http-concurrency=4; then 10000 requests on 4
    kept-alive connections and 1000 on a connection each leave the server processes' fds
    where they were and their memory (RSS, and PSS beyond pages that stopped being shared,
    summed over the server processes) within 4 MiB: a leak of 1 KiB a request would be
    10 MiB."""
    f = function("pywasm.io/http-concurrency=4")
    pid = _task_pid(containerd, f.cid)

    def one(i: int) -> bytes:
        status, _, body = _request(f.port, f"/n{i}", method="POST", body=str(i).encode())
        assert status == 200
        return body

    with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
        bodies = list(pool.map(one, range(200)))
    assert bodies == [_echo(i) for i in range(200)]
    servers = _servers(pid)
    assert 1 <= len(servers) <= min(4, len(os.sched_getaffinity(0))), servers
    threads = sum(len(os.listdir(f"/proc/{p}/task")) for p in servers)
    # per process: main, the epoch ticker, its share of the 4 instance threads (+ uvloop's
    # helpers); the first process also has the init-signal guard
    assert threads <= 4 + 5 * len(servers), f"{threads} threads for a concurrency of 4"

    def expect(i: int, status: int, body: bytes) -> None:
        assert (status, body) == (200, _echo(i))

    _warm_every_server(pid, f.port, expect)
    _keepalive_load(f.port, 2000, 4, expect)  # warm: code paths, allocator arenas
    time.sleep(0.3)
    fds, (rss, pss, shared) = _fds(pid), _memory_kib(pid)
    took, used = _keepalive_load(f.port, 10000, 4, expect)
    assert used == 4, f"10000 requests on 4 kept-alive connections used {used} connections"
    time.sleep(0.3)
    fds_10k, (rss_10k, pss_10k, _) = _fds(pid), _memory_kib(pid)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        assert len(list(pool.map(one, range(1000)))) == 1000
    time.sleep(0.3)  # the server sees the last connections' end of file
    fds_after, (rss_after, pss_after, shared_after) = _fds(pid), _memory_kib(pid)
    # The servers' garbage collector writes to every object it visits, so pages they shared
    # (with each other, with the zygote they were forked from) turn private once, at a first
    # full collection some thousand requests in: PSS then rises by up to ~5 MiB a process
    # while RSS stays put. A leak adds private pages without taking any from the shared ones.
    # (PSS also rises when other processes mapping the same pages exit, e.g. workers another
    # test forked from the same zygote: RSS is the figure no other process moves.)
    unshared = max(0, shared - shared_after)
    print(
        f"containerd {containerd.version}: 10000 requests on 4 connections in {took:.1f}s "
        f"({10000 / took:.0f}/s); {len(servers)} server processes; "
        f"fds {fds} -> {fds_10k} -> {fds_after} (after 1000 more on new connections), "
        f"RSS {rss} -> {rss_10k} -> {rss_after} KiB, PSS {pss} -> {pss_10k} -> {pss_after} KiB "
        f"({unshared} KiB of shared pages turned private)"
    )
    assert fds_10k <= fds + len(servers)  # + an instance's memfd each may hold
    assert fds_after <= fds + len(servers)
    assert rss_after < rss + 4 * 1024
    assert pss_after < pss + unshared + 4 * 1024


def test_instance_limit_holds(
    containerd: Containerd, function: Any, python_cgi_image: tuple[str, ...]
) -> None:
    """40 requests at once, each an instance of the Python function sleeping 0.2 s and saying
    when it ran: with pywasm.io/http-concurrency=4 no more than 4 ever run at the same time,
    all are answered, and the 40 take at least 10 rounds of 0.2 s."""
    f = function("pywasm.io/http-concurrency=4", image=python_cgi_image)

    def one(_: int) -> tuple[int, int]:
        status, _, body = _request(f.port, "/sleep", timeout=60)
        assert status == 200, body
        times = _env(body)
        return int(times["start"]), int(times["end"])

    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
        spans = list(pool.map(one, range(40)))
    took = time.monotonic() - began
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    print(f"containerd {containerd.version}: 40 sleeping requests in {took:.2f}s, {most} at once")
    assert 2 <= most <= 4, f"{most} instances ran at once with pywasm.io/http-concurrency=4"
    assert took >= 40 / 4 * 0.2


def test_sigterm_finishes_the_running_request_and_exits_0(
    containerd: Containerd, function: Any
) -> None:
    f = function("pywasm.io/http-timeout=2")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(_request, f.port, "/loop")
        time.sleep(0.5)
        began = time.monotonic()
        k = containerd.ctr("tasks", "kill", f.cid, timeout=20)
        assert k.returncode == 0, explain(k)
        assert running.result()[0] == 504  # answered, not cut off
    assert _wait_status(containerd, f.cid, "STOPPED", timeout=10) == "STOPPED"
    took = time.monotonic() - began
    rm = containerd.ctr("tasks", "rm", f.cid, timeout=20)
    assert rm.returncode == 0, explain(rm)
    assert "non-zero exit code" not in rm.stderr, rm.stderr
    assert took < 4.0
    with socket.socket() as s:
        # The server closed its connections first, so they sit in TIME_WAIT: a new server
        # binds with SO_REUSEADDR (as pywasm's does); only a listener still there would fail.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", f.port))
        s.listen()


def test_non_root_user_with_seccomp(containerd: Containerd, function: Any) -> None:
    """The stdout capture (a memfd reopened through /proc/self/fd) works for a user without
    capabilities under ctr's default seccomp profile, as the sandbox leaves it."""
    # ctr 1.6 has no --user: there the function runs as root, with runc's default caps.
    user = containerd.version != "1.6"
    f = function(more=("--user", "1000:1000", "--seccomp") if user else ("--seccomp",))
    status, _, body = _request(f.port, "/x", method="POST", body=b"as 1000")
    assert (status, body.rsplit(b"\n", 1)[-1]) == (200, b"body=as 1000")
    pid = _task_pid(containerd, f.cid)
    with open(f"/proc/{pid}/status") as st:
        fields = dict(line.split(":", 1) for line in st if ":" in line)
    caps = fields["CapEff"].strip()
    assert fields["Uid"].split()[:2] == (["1000", "1000"] if user else ["0", "0"])
    assert caps == "0000000000000000" if user else caps != "000001ffffffffff"
    assert fields["Seccomp"].strip() == "2"
    # The threads HTTP mode starts (instance pool, epoch ticker) come after ready(), so they
    # hold the main thread's capabilities and filter (both are per thread in Linux); so does
    # the sandbox's init-signal guard, started once the sandbox is whole.
    tids = os.listdir(f"/proc/{pid}/task")
    # main, the init-signal guard, the epoch ticker (+ instance threads of requests it served)
    assert len(tids) >= 3, tids
    for tid in tids:
        with open(f"/proc/{pid}/task/{tid}/status") as st:
            text = st.read()
        assert f"CapEff:\t{caps}\n" in text, tid
        assert "Seccomp:\t2\n" in text, tid


def test_idle_function_stops_at_once(containerd: Containerd, function: Any) -> None:
    f = function()
    began = time.monotonic()
    assert containerd.ctr("tasks", "kill", f.cid, timeout=20).returncode == 0
    assert _wait_status(containerd, f.cid, "STOPPED", timeout=10) == "STOPPED"
    took = time.monotonic() - began
    rm = containerd.ctr("tasks", "rm", f.cid, timeout=20)
    assert "non-zero exit code" not in rm.stderr, rm.stderr
    assert took < 1.5, f"an idle function took {took:.2f}s to stop"


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ("pywasm.io/trigger=cron", "pywasm.io/trigger='cron' is not allowed"),
        ("pywasm.io/http-timeout=0", "pywasm.io/http-timeout='0' must be a positive number"),
        ("pywasm.io/http-concurrency=many", "pywasm.io/http-concurrency='many' must be"),
    ],
)
def test_bad_annotations_refused_at_create(
    containerd: Containerd, cgi_image: str, cgi_archive: Path, annotation: str, message: str
) -> None:
    cid = new_id("http-bad")
    module = images.archive_entrypoint(cgi_archive)[0]
    extra = ["--net-host", "--annotation", annotation]
    if not annotation.startswith("pywasm.io/trigger"):
        extra += ["--annotation", "pywasm.io/trigger=http"]
    r = containerd.ctr(*run_args(cgi_image, cid, module, extra=extra), timeout=60)
    containerd.ctr("containers", "rm", cid, timeout=20)
    assert r.returncode != 0
    assert message in r.stderr, explain(r)


PROXY_IMAGE = images.ref("http-proxy")
_proxy_imported: set[str] = set()


@pytest.fixture(scope="session")
def proxy_archive() -> Path:
    return images.build_wasm_archive("http-proxy", http_guests.build())


@pytest.fixture
def proxy_image(containerd: Containerd, proxy_archive: Path) -> tuple[str, str]:
    if containerd.address not in _proxy_imported:
        images.import_archive(containerd, PROXY_IMAGE, proxy_archive)
        _proxy_imported.add(containerd.address)
    return PROXY_IMAGE, images.archive_entrypoint(proxy_archive)[0]


def test_wasi_http_proxy_component(
    containerd: Containerd, function: Any, proxy_image: tuple[str, str]
) -> None:
    """The componentize-py function of integration/guests/http/proxy_echo.py, a fresh instance
    per request through pywasm's own wasi:http/types host."""
    f = function("pywasm.io/http-timeout=2", env=("GREETING=hi",), image=proxy_image)
    status, headers, body = _request(
        f.port, "/items?id=7", method="POST", body=b"hello", headers={"X-Test": "t"}
    )
    assert (status, headers.get("x-echo-method"), headers.get("content-type")) == (
        200,
        "POST",
        "text/plain",
    )
    assert body == b"method=POST\npath=/items?id=7\nheader=t\nbody=hello"
    # Bodies cross the component boundary in bulk (~0.1 s per MiB each way in the engine).
    big = os.urandom(1 << 20)
    began = time.monotonic()
    status, _, body = _request(f.port, "/big", method="POST", body=big)
    print(
        f"containerd {containerd.version}: proxy, 1 MiB echoed in {time.monotonic() - began:.2f}s"
    )
    assert (status, body.endswith(b"body=" + big)) == (200, True)
    # The headers as sent: bytes that are not UTF-8 unchanged, a name with "_", Proxy and
    # repeated headers (CGI's rules are for p1 modules); not the connection's own.
    answer = _raw(
        f.port,
        b"GET /headers HTTP/1.1\r\nHost: h\r\nX-Raw: \xff\xfe\r\nX_Under: u\r\n"
        b"Proxy: http://proxy.invalid\r\nX-Multi: a\r\nX-Multi: b\r\nConnection: close\r\n\r\n",
    )
    head, _, chunked_body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    assert b"\r\nx-echo-method: GET" in head
    assert b"content-type" not in head.lower(), head  # none set, none added
    seen = b"host: h\nx-raw: \xff\xfe\nx_under: u\nproxy: http://proxy.invalid\n"
    seen += b"x-multi: a\nx-multi: b\n"
    assert chunked_body == b"%x\r\n%s\r\n0\r\n\r\n" % (len(seen), seen), answer
    # A CR LF the component copies into a header is refused by the host: no response splitting.
    split = _raw(
        f.port, b"GET /reflect?x%0D%0ASet-Cookie:%20a=1 HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    assert split.startswith(b"HTTP/1.1 200 OK\r\n"), split
    split_head, _, split_body = split.partition(b"\r\n\r\n")
    assert b"set-cookie" not in split_head.lower(), split
    assert b"refused: HeaderError_InvalidSyntax HeaderError_InvalidSyntax\n" in split_body, split
    # wasi:cli/environment is the container's env (its OCI spec's), no CGI variable.
    info = containerd.ctr("containers", "info", f.cid, timeout=20)
    spec_env = json.loads(info.stdout)["Spec"]["process"]["env"]
    expected = "".join(f"{k}={v}\n" for k, v in sorted(e.split("=", 1) for e in spec_env))
    assert "GREETING=hi\n" in expected
    assert _request(f.port, "/env", headers={"X-Test": "t"})[2].decode() == expected
    assert _request(f.port, "/empty", method="POST", body=b"")[2].endswith(b"\nbody=")
    chunked = subprocess.run(
        ["curl", "-s", "--max-time", "10", "-H", "Transfer-Encoding: chunked"]
        + ["--data-binary", "chunky", f"http://127.0.0.1:{f.port}/c"],
        capture_output=True,
        check=False,
    )
    assert chunked.stdout == b"method=POST\npath=/c\nheader=-\nbody=chunky", chunked
    assert _request(f.port, "/notfound")[0] == 404
    assert _request(f.port, "/trap")[0] == 500
    began = time.monotonic()
    assert _request(f.port, "/loop")[0] == 504
    assert time.monotonic() - began < 4.0
    assert _request(f.port, "/after")[0] == 200
    log = f.log_text()
    assert re.search(r'"POST /items\?id=7 HTTP/1\.1" 200 \d+ [\d.]+ms', log), log[-2000:]
    assert "GET /trap from 127.0.0.1: 500: the guest trapped" in log, log[-2000:]

    assert containerd.ctr("tasks", "kill", f.cid, timeout=20).returncode == 0
    assert _wait_status(containerd, f.cid, "STOPPED", timeout=10) == "STOPPED"
    rm = containerd.ctr("tasks", "rm", f.cid, timeout=20)
    assert "non-zero exit code" not in rm.stderr, rm.stderr


def test_wasi_http_proxy_no_growth(
    containerd: Containerd, function: Any, proxy_image: tuple[str, str]
) -> None:
    """1000 requests to the proxy function (a CPython instance each) on 2 kept-alive
    connections leave the server processes' fds where they were and their RSS, and PSS beyond
    pages that stopped being shared, within 8 MiB (1 KiB a request would not fit in 1 MiB
    either: the instances' own memory is mapped and unmapped per request)."""
    f = function("pywasm.io/http-concurrency=4", image=proxy_image)
    pid = _task_pid(containerd, f.cid)

    def expect(i: int, status: int, body: bytes) -> None:
        assert (status, body) == (200, f"method=POST\npath=/n{i}\nheader=-\nbody={i}".encode())

    _warm_every_server(pid, f.port, expect)
    _keepalive_load(f.port, 100, 2, expect)
    time.sleep(0.3)
    fds, (rss, pss, shared) = _fds(pid), _memory_kib(pid)
    took, used = _keepalive_load(f.port, 1000, 2, expect)
    assert used == 2, f"1000 requests on 2 kept-alive connections used {used} connections"
    time.sleep(0.3)
    fds_after, (rss_after, pss_after, shared_after) = _fds(pid), _memory_kib(pid)
    unshared = max(0, shared - shared_after)
    print(
        f"containerd {containerd.version}: proxy, 1000 requests on 2 connections in {took:.1f}s "
        f"({1000 / took:.0f}/s); fds {fds} -> {fds_after}, RSS {rss} -> {rss_after} KiB, "
        f"PSS {pss} -> {pss_after} KiB ({unshared} KiB of shared pages turned private)"
    )
    assert fds_after <= fds + len(_servers(pid))
    assert rss_after < rss + 8 * 1024
    assert pss_after < pss + unshared + 8 * 1024
