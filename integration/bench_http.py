"""The HTTP section of the benchmark (integration/bench.py, `--only http`): a Wasm server in a
pywasm container against busybox `httpd` serving a static file in a runc container, both
published with `docker run -p` on Docker 28's default bridge network.

Docker (on a private containerd 2.1) runs inside a network namespace made for the run
(integration/netns.py: nothing is configured in the machine's own namespace); its userland
proxy (`docker-proxy`) forwards the published ports, so every request goes client -> proxy ->
the container's bridge address, the same path for both runtimes. The client, wrk (Debian
package `wrk`), runs inside that namespace against 127.0.0.1. The shims get a private compile
cache, so the Wasm server's first start really compiles.

- throughput and latency: for 10 and 50 connections, `wrk --latency -t2 -c<n> -d<s>` on each
  server, after a 1 s warm-up of each: the echo server with keep-alive (`pywasm`), busybox
  httpd (`runc`; it closes every connection) and the echo server asked to close every
  connection too (`pywasm-close`, like for like), the order reversed every other round;
  requests/s and p50/p99 latency per run (median over runs in the report);
- start: the time from `docker run -d -p` to the first 200 answer through the published port
  (a client polling every 5 ms from inside the namespace), interleaved; the Wasm server's first
  start (compiling the 18 MB component) is kept apart;
- then, on the same Docker, issue 15's HTTP functions (integration/bench_functions.py: the C CGI
  function and the wasi:http/proxy function against busybox httpd's CGI and static file).

The loads are bounded (a few seconds each, loopback of a test namespace only).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from integration import bench_functions, images, net_guests
from integration.docker import DOCKERD, PYWASM
from integration.netns import Stack

Json = dict[str, Any]

ECHO = images.ref("net-echo")
CONTAINER_PORT = 8080
#: host ports (in the test namespace) of the servers under load, and of the start runs
LOAD_PORTS = {"pywasm": 18080, "runc": 18081}
#: what wrk loads: (server, extra wrk arguments). `pywasm-close` asks the echo server to close
#: each connection as busybox httpd always does (its answers carry `Connection: close`): the
#: like-for-like row, besides the keep-alive one the target is about.
VARIANTS = {
    "pywasm": ("pywasm", ()),
    "runc": ("runc", ()),
    "pywasm-close": ("pywasm", ("-H", "Connection: close")),
}
START_PORTS = {"pywasm": 19080, "runc": 19081}
CONNECTIONS = (10, 50)
WRK_THREADS = 2
STATIC_FILE = "GET /\n"  # the echo server's body for `GET /`: both answer the same bytes
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class HttpSettings:
    seconds: int  # per wrk run
    rounds: int  # wrk runs per runtime and connection count (ABBA order)
    starts: int  # `docker run -d` to the first 200, per runtime (after the Wasm compile)
    #: issue 15's HTTP functions (integration/bench_functions.py) on the same Docker, after these
    functions: bench_functions.FunctionSettings | None = None

    @classmethod
    def full(cls) -> HttpSettings:
        return cls(5, 2, 5, bench_functions.FunctionSettings.full())

    @classmethod
    def smoke(cls) -> HttpSettings:
        return cls(1, 1, 1, bench_functions.FunctionSettings.smoke())


def runtime_args(runtime: str, port: int) -> list[str]:
    """`docker run` arguments after `-d --name N` for the server of `runtime` on host `port`."""
    publish = ["-p", f"{port}:{CONTAINER_PORT}"]
    if runtime == "pywasm":
        return [*publish, f"--runtime={PYWASM}", "--platform=wasi/wasm", ECHO]
    serve = (
        f"printf '{STATIC_FILE.encode('unicode_escape').decode()}' > /tmp/index.html && "
        f"exec busybox httpd -f -p {CONTAINER_PORT} -h /tmp"
    )
    return [*publish, images.BUSYBOX, "sh", "-c", serve]


# --- a client inside the namespace --------------------------------------------------------


def _enter(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def inside(netns_path: Path) -> Iterator[ThreadPoolExecutor]:
    """A thread whose network namespace is `netns_path` (setns applies to the calling thread):
    sockets made by what is submitted to it live in that namespace."""
    pool = ThreadPoolExecutor(max_workers=1, initializer=_enter, initargs=(str(netns_path),))
    try:
        yield pool
    finally:
        pool.shutdown()


def get_status(port: int, path: str = "/", timeout: float = 2.0) -> int:
    """Status of `GET path` on 127.0.0.1:port (0 when there is no complete answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
    except OSError:
        return 0
    found = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
    return int(found.group(1)) if found else 0


def first_200(port: int, began: float, timeout: float = 120.0, path: str = "/") -> float:
    """Seconds from `began` (time.monotonic) to the first 200 for `path` on `port`; nan on a
    timeout."""
    while time.monotonic() - began < timeout:
        if get_status(port, path, timeout=1.0) == 200:
            return time.monotonic() - began
        time.sleep(0.005)
    return float("nan")


# --- wrk ----------------------------------------------------------------------------------

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not found:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_wrk(out: str) -> Json:
    """requests/s, p50/p99 (seconds), requests, socket errors and non-2xx/3xx of one run."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"^\s+(\d+) requests in", out, re.M)
    if not (rps and p50 and p99 and total):
        raise ValueError(f"wrk output without requests/s or latency distribution:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(rps.group(1)),
        "p50": _seconds(p50.group(1)),
        "p99": _seconds(p99.group(1)),
        "requests": int(total.group(1)),
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
        "non_2xx": int(bad.group(1)) if bad else 0,
    }


def wrk(
    stack: Stack,
    port: int,
    connections: int,
    seconds: int,
    extra: Sequence[str] = (),
    path: str = "/",
) -> Json:
    argv = [
        *stack.netns.launcher,
        "wrk",
        *extra,
        "--latency",
        f"-t{min(WRK_THREADS, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        f"http://127.0.0.1:{port}{path}",
    ]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr}{r.stdout}")
    return parse_wrk(r.stdout)


# --- the run ------------------------------------------------------------------------------


def _abba(n: int) -> list[tuple[str, str]]:
    """n pairs of runs, the order flipped every other pair: AB BA AB ..."""
    return [("pywasm", "runc") if i % 2 == 0 else ("runc", "pywasm") for i in range(n)]


def measure(s: HttpSettings, log: Callable[[str], None] = lambda m: print(m, flush=True)) -> Json:
    if not DOCKERD.exists():
        raise RuntimeError(f"{DOCKERD} is missing: run scripts/fetch-docker.sh (make install)")
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is missing: apt-get install wrk (scripts/install.sh does)")
    archives = [
        images.build_wasm_archive("net-echo", net_guests.build("echo_server")),
        images.build_busybox_archive(),
    ]
    if s.functions is not None:
        bench_functions.archives()  # built (cached) before the stack is up, loaded with it
    cache = Path(tempfile.mkdtemp(prefix="pywasm-bench-http-cache-"))
    res: Json = {"settings": asdict(s), "connections": list(CONNECTIONS), "failures": []}
    stack = Stack("2.1", docker=True, env={"PYWASM_CACHE_DIR": str(cache)})
    t0 = time.monotonic()
    try:
        stack.start()
        d = stack.docker
        for archive in archives:
            d.load(archive)
        res["docker"] = d.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        with inside(stack.netns.path) as client:
            res["start"] = _starts(stack, client, s, res["failures"])
            log(f"  http: starts {time.monotonic() - t0:.1f}s")
            res["load"] = _loads(stack, client, s, res["failures"])
            if s.functions is not None:
                log(f"  http: target 6 {time.monotonic() - t0:.1f}s; HTTP functions ...")
                res["functions"] = bench_functions.measure_in(stack, client, s.functions, log)
        res["wrk"] = _wrk_version(stack)
    finally:
        left = stack.stop()
        shutil.rmtree(cache, ignore_errors=True)
        if left:
            res["failures"].append(f"tear-down found: {left}")
    res["seconds"] = time.monotonic() - t0
    log(f"  http: {res['seconds']:.1f}s")
    return res


def _wrk_version(stack: Stack) -> str:
    r = stack.netns.run("wrk", "-v")
    found = re.search(r"wrk (\S+)", r.stdout + r.stderr)
    return found.group(1) if found else "?"


def _run_d(stack: Stack, name: str, runtime: str, port: int) -> None:
    r = stack.docker.docker("run", "-d", "--name", name, *runtime_args(runtime, port), timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"docker run -d ({runtime}) exited {r.returncode}: {r.stderr}")


def _rm(stack: Stack, name: str) -> None:
    stack.docker.docker("rm", "-f", name, timeout=60)


def _starts(stack: Stack, client: ThreadPoolExecutor, s: HttpSettings, fails: list[str]) -> Json:
    """`docker run -d` to the first 200; the Wasm server's first (compiling) start apart."""
    out: Json = {"pywasm_first": float("nan"), "pywasm": [], "runc": []}
    order = ["pywasm"] + [rt for pair in _abba(s.starts) for rt in pair]
    for i, runtime in enumerate(order):
        port = START_PORTS[runtime]
        name = f"pw-bench-start-{runtime}-{i}"
        began = time.monotonic()
        try:
            _run_d(stack, name, runtime, port)
            took = client.submit(first_200, port, began).result()
        except RuntimeError as e:
            fails.append(str(e))
            continue
        finally:
            _rm(stack, name)
        if took != took:
            fails.append(f"{runtime} start {i}: no 200 within the timeout")
        elif i == 0:
            out["pywasm_first"] = took
        else:
            out[runtime].append(took)
    return out


def _loads(stack: Stack, client: ThreadPoolExecutor, s: HttpSettings, fails: list[str]) -> Json:
    out: Json = {str(c): {v: [] for v in VARIANTS} for c in CONNECTIONS}
    names = {rt: f"pw-bench-http-{rt}" for rt in LOAD_PORTS}
    try:
        for rt, port in LOAD_PORTS.items():
            _run_d(stack, names[rt], rt, port)
            took = client.submit(first_200, port, time.monotonic()).result()
            if took != took:
                raise RuntimeError(f"the {rt} server gave no 200 on {port}")
            wrk(stack, port, CONNECTIONS[0], 1)  # warm-up
        for c in CONNECTIONS:
            for i in range(s.rounds):
                order = list(VARIANTS) if i % 2 == 0 else list(VARIANTS)[::-1]
                for v in order:
                    rt, extra = VARIANTS[v]
                    try:
                        out[str(c)][v].append(wrk(stack, LOAD_PORTS[rt], c, s.seconds, extra))
                    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                        fails.append(f"wrk {v} -c{c}: {e}")
    finally:
        for name in names.values():
            _rm(stack, name)
    return out


# --- report -------------------------------------------------------------------------------


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summary(res: Json, c: int, variant: str = "pywasm") -> tuple[float, float]:
    """Median requests/s of the pywasm `variant` and of runc at `c` connections."""
    load = res.get("load", {}).get(str(c), {})
    return (
        _median([r["rps"] for r in load.get(variant, [])]),
        _median([r["rps"] for r in load.get("runc", [])]),
    )


def _ms(x: float) -> str:
    return "n/a" if x != x else f"{x * 1000:.2f} ms"


def report_lines(res: Json) -> list[str]:
    s = res["settings"]
    lines = [
        "## HTTP behind Docker `-p` (default bridge, userland proxy)",
        "",
        f"Docker {res.get('docker', '?')} on containerd 2.1, in a test network namespace; "
        f"wrk {res.get('wrk', '?')} (`--latency -t2 -c<n> -d{s['seconds']}s`, keep-alive) "
        "against 127.0.0.1:<published port> from inside it. pywasm: the WASI p2 echo server "
        "(integration/guests/net/echo_server.py, CPython in an 18.6 MB component); runc: "
        f"busybox `httpd -f` serving a {len(STATIC_FILE)}-byte static file (the same body the "
        "echo server sends for `GET /`). busybox answers `Connection: close` and closes every "
        "connection, so wrk reconnects for each request; the echo server keeps connections open "
        "(row `pywasm`) unless asked to close them (row `pywasm-close`: wrk sends "
        f"`Connection: close`, the like-for-like case). {s['rounds']} run(s) per cell, the order "
        "of the three reversed every other round; median over runs.",
        "",
        "| connections | runtime | requests/s | p50 | p99 | socket errors | non-2xx |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in res.get("connections", []):
        for rt in VARIANTS:
            runs = res.get("load", {}).get(str(c), {}).get(rt, [])
            rps = _median([r["rps"] for r in runs])
            lines.append(
                f"| {c} | {rt} | {'n/a' if rps != rps else f'{rps:.0f}'} | "
                f"{_ms(_median([r['p50'] for r in runs]))} | "
                f"{_ms(_median([r['p99'] for r in runs]))} | "
                f"{sum(r['socket_errors'] for r in runs)} | {sum(r['non_2xx'] for r in runs)} |"
            )
    lines.append("")
    for c in res.get("connections", []):
        pw, rc = summary(res, c)
        pc, _ = summary(res, c, "pywasm-close")
        lines.append(
            f"- {c} connections: pywasm/runc requests/s = {_x(pw, rc)} (target ≥ 1.0×); "
            f"pywasm-close/runc = {_x(pc, rc)}"
        )
    st = res.get("start", {})
    first = st.get("pywasm_first", float("nan"))
    lines += [
        "- `docker run -d -p` to the first 200 (median (min-max) of "
        f"{len(st.get('pywasm', []))} / {len(st.get('runc', []))} runs): "
        f"pywasm {_spread(st.get('pywasm', []))}, runc {_spread(st.get('runc', []))}; the Wasm "
        f"server's first start, compiling the component: "
        f"{'n/a' if first != first else f'{first:.1f} s'}",
        "",
    ]
    if res.get("failures"):
        lines += ["Failed runs (HTTP, not counted):", ""]
        lines += [f"- {f}" for f in res["failures"][:6]]
        lines.append("")
    if res.get("functions"):
        lines += bench_functions.report_lines(res["functions"])
    return lines


def _x(a: float, b: float) -> str:
    x = a / b if b and a == a and b == b else float("nan")
    return "n/a" if x != x else f"{x:.2f}×"


def _spread(xs: Sequence[float]) -> str:
    if not xs:
        return "n/a"
    return f"{_median(xs) * 1000:.0f} ms ({min(xs) * 1000:.0f}-{max(xs) * 1000:.0f})"


def complete(res: Json) -> bool:
    load = res.get("load", {})
    if "functions" in res and not bench_functions.complete(res["functions"]):
        return False
    return all(load.get(str(c), {}).get(v) for c in CONNECTIONS for v in VARIANTS) and all(
        res.get("start", {}).get(rt) for rt in LOAD_PORTS
    )
