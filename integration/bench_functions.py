"""HTTP functions in the benchmark (issue 15; target 8 of `make bench`, run with the HTTP section
of integration/bench_http.py on the same Docker): pywasm's functions against busybox `httpd`
in a runc container, all published with `docker run -p` on Docker 28's default bridge inside the
benchmark's network namespace (nothing is configured in the machine's own one).

- `cgi`: the C CGI function (integration/guests/cgi.c as WASI p1) with
  `--annotation pywasm.io/trigger=http`, a fresh instance per request;
- `proxy`: the componentize-py `wasi:http/proxy` function (integration/guests/http/proxy_echo.py,
  built by integration/http_guests.py), a fresh instance per request;
- `busybox`: one runc container, `busybox httpd -f`, serving the same cgi.c compiled natively
  (static musl, `zig cc -O2`, the Wasm build's flags) from /www/cgi-bin/fn and a static file
  holding exactly the body the CGI answers for the benchmark's request.

Every server answers `GET /bench?x=1` (busybox: `/cgi-bin/fn/bench?x=1`, and the static file).
For 10 and 50 connections, `wrk --latency -t2 -c<n> -d<s>` per cell after a 1 s warm-up, the
order of the cells reversed every other round; requests/s, p50, p99. busybox closes every
connection (`Connection: close`); pywasm keeps them alive, and a `cgi-close` row sends
`Connection: close` to the CGI function, like for like. Start: `docker run -d -p` to the first
200 through the published port, the three servers in rotating order; the first start of each
(the compile of the Wasm, in the stack's private cache) is kept apart.

    python -m integration.bench_functions [--seconds 2] [--rounds 3] [--starts 3] [--smoke]

runs it alone on its own Docker stack and prints the section (and the summary rows).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from integration import guests, http_guests, images
from integration.docker import DOCKERD, PYWASM
from integration.netns import Stack

Json = dict[str, Any]

REPO = Path(__file__).resolve().parent.parent
NATIVE_CACHE = REPO / ".cache" / "bench" / "native-cgi"
CGI = images.ref("http-cgi")
PROXY = images.ref("http-proxy")
BUSYBOX_CGI = images.ref("bench-busybox-cgi")
CONTAINER_PORT = 8080
REQUEST = "/bench?x=1"
CGI_PATH = "/cgi-bin/fn" + REQUEST
STATIC_PATH = "/echo.txt"
#: cgi.c's body for `GET /bench?x=1` (no X-Test header, no request body): busybox's static file
#: holds these bytes, so every row sends the same answer
BODY = "method=GET\npath=/bench\nquery=x=1\nheader=-\nlength=-\nbody="
SERVERS = ("cgi", "proxy", "busybox")
#: host ports (in the test namespace): the servers under load, and the start runs
LOAD_PORTS = {"cgi": 18090, "proxy": 18091, "busybox": 18092}
START_PORTS = {"cgi": 19090, "proxy": 19091, "busybox": 19092}
#: what wrk loads: row -> (server, path, extra wrk arguments)
VARIANTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "cgi": ("cgi", REQUEST, ()),
    "cgi-close": ("cgi", REQUEST, ("-H", "Connection: close")),
    "proxy": ("proxy", REQUEST, ()),
    "busybox-cgi": ("busybox", CGI_PATH, ()),
    "busybox-static": ("busybox", STATIC_PATH, ()),
}
LABELS = {
    "cgi": "pywasm CGI function (C, WASI p1)",
    "cgi-close": "pywasm CGI function, `Connection: close`",
    "proxy": "pywasm `wasi:http/proxy` function (componentize-py)",
    "busybox-cgi": "busybox httpd, the same C as a native CGI (runc)",
    "busybox-static": "busybox httpd, static file (runc)",
}
CONNECTIONS = (10, 50)
#: runwasi's wasmtime shim, its published wasi-http hello figure: 19-22k requests/s with
#: `hey -c 50` on 4-core CI runners
RUNWASI_PER_CORE = 5000.0
CGI_GOAL = 2.0  # the CGI function against busybox's CGI of the same program
STATIC_GOAL = 1.0  # ... and against busybox's static file


@dataclass(frozen=True)
class FunctionSettings:
    seconds: int  # per wrk cell
    rounds: int  # wrk runs per cell
    starts: int  # `docker run -d` to the first 200, per server (after the first)

    @classmethod
    def full(cls) -> FunctionSettings:
        return cls(2, 3, 3)

    @classmethod
    def smoke(cls) -> FunctionSettings:
        return cls(1, 1, 1)


# --- the images ---------------------------------------------------------------------------


def native_cgi() -> Path:
    """integration/guests/cgi.c as a static x86_64 musl executable (zig cc, the Wasm build's
    -O2 -s); cached by source and zig version."""
    src = guests.SOURCES / "cgi.c"
    key = hashlib.sha256(src.read_bytes() + version("ziglang").encode()).hexdigest()[:16]
    out = NATIVE_CACHE / f"cgi-{key}"
    if out.exists():
        return out
    NATIVE_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    cmd = [sys.executable, "-m", "ziglang", "cc", "-target", "x86_64-linux-musl", "-O2", "-s"]
    env = dict(os.environ, ZIG_GLOBAL_CACHE_DIR=str(REPO / ".cache" / "zig"))
    r = subprocess.run(
        [*cmd, "-o", str(tmp), str(src)], capture_output=True, text=True, env=env, check=False
    )
    if r.returncode != 0:
        raise RuntimeError(f"zig cc of {src} (native CGI) exited {r.returncode}:\n{r.stderr}")
    tmp.replace(out)
    return out


def busybox_cgi_archive() -> Path:
    """linux/amd64 image: static busybox running `httpd -f` on /www, with the native CGI at
    /www/cgi-bin/fn and the static file."""
    from pywasmd.image.build import Directory, File, FileSource, Platform, Symlink, build_image
    from pywasmd.image.layout import write_archive

    busybox = images.BUSYBOX_BINARY.read_bytes()
    cgi = native_cgi().read_bytes()
    key = hashlib.sha256(busybox + cgi + BODY.encode() + images._image_code()).hexdigest()[:16]
    out = images.CACHE / f"pw-bench-busybox-cgi-{key}.tar"
    if out.exists():
        return out
    images.CACHE.mkdir(parents=True, exist_ok=True)
    files: dict[str, FileSource] = {
        "/bin/busybox": File(busybox, 0o755),
        "/bin/sh": Symlink("busybox"),
        "/www": Directory(),
        "/www/cgi-bin": Directory(),
        "/www/cgi-bin/fn": File(cgi, 0o755),
        STATIC_PATH.replace("/", "/www/", 1): File(BODY.encode(), 0o644),
        "/tmp": Directory(0o1777),
    }
    image = build_image(
        files=files,
        cmd=["/bin/busybox", "httpd", "-f", "-p", str(CONTAINER_PORT), "-h", "/www"],
        env=["PATH=/bin"],
        platform=Platform("linux", "amd64"),
    )
    write_archive(image, BUSYBOX_CGI, out)
    return out


def archives() -> list[Path]:
    return [
        images.build_wasm_archive("http-cgi", guests.build("cgi")),
        images.build_wasm_archive("http-proxy", http_guests.build()),
        busybox_cgi_archive(),
    ]


def run_args(server: str, port: int) -> list[str]:
    """`docker run` arguments after `-d --name N` for `server` published on host `port`."""
    publish = ["-p", f"{port}:{CONTAINER_PORT}"]
    if server == "busybox":
        return [*publish, BUSYBOX_CGI]
    wasm = [f"--runtime={PYWASM}", "--platform=wasi/wasm"]
    image = CGI if server == "cgi" else PROXY
    return [*publish, "--annotation", "pywasm.io/trigger=http", *wasm, image]


def ready_path(server: str) -> str:
    """What the first 200 is asked of: the function itself (busybox: its CGI)."""
    return CGI_PATH if server == "busybox" else REQUEST


# --- the run ------------------------------------------------------------------------------


def measure_in(
    stack: Stack,
    client: ThreadPoolExecutor,
    s: FunctionSettings,
    log: Callable[[str], None] = lambda m: print(m, flush=True),
) -> Json:
    """The whole section on a running Docker stack (its images loaded here); `client` runs in
    the stack's namespace (bench_http.inside)."""
    t0 = time.monotonic()
    res: Json = {
        "settings": s.__dict__,
        "connections": list(CONNECTIONS),
        "cpus": os.cpu_count() or 1,
        "failures": [],
        "native_cgi_bytes": native_cgi().stat().st_size,
    }
    for archive in archives():
        stack.docker.load(archive)
    res["docker"] = stack.docker.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    try:
        res["first"], res["load"] = _loads(stack, client, s, res["failures"])
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        # Reported (and the run counted incomplete) rather than ending the whole benchmark.
        res["failures"].append(f"servers under load: {e}")
    log(f"  functions: loads {time.monotonic() - t0:.1f}s")
    res["start"] = _starts(stack, client, s, res["failures"])
    res["seconds"] = time.monotonic() - t0
    log(f"  functions: {res['seconds']:.1f}s")
    return res


def _run_d(stack: Stack, name: str, server: str, port: int) -> None:
    r = stack.docker.docker("run", "-d", "--name", name, *run_args(server, port), timeout=180)
    if r.returncode != 0:
        raise RuntimeError(f"docker run -d ({server}) exited {r.returncode}: {r.stderr.strip()}")


def _rm(stack: Stack, name: str) -> None:
    stack.docker.docker("rm", "-f", name, timeout=60)


def _start(stack: Stack, client: ThreadPoolExecutor, name: str, server: str, port: int) -> float:
    """Seconds from `docker run -d` to the first 200 (the container is left running)."""
    from integration.bench_http import first_200

    began = time.monotonic()
    _run_d(stack, name, server, port)
    took: float = client.submit(first_200, port, began, 180.0, ready_path(server)).result()
    if took != took:
        raise RuntimeError(f"{server}: no 200 for {ready_path(server)} on {port} within 180 s")
    return took


def _loads(
    stack: Stack, client: ThreadPoolExecutor, s: FunctionSettings, fails: list[str]
) -> tuple[Json, Json]:
    """The three servers up (their first start, compiling, timed), then every wrk cell."""
    from integration.bench_http import wrk

    first: Json = {}
    out: Json = {str(c): {v: [] for v in VARIANTS} for c in CONNECTIONS}
    names = {server: f"pw-bench-fn-{server}" for server in SERVERS}
    try:
        for server in SERVERS:
            first[server] = _start(stack, client, names[server], server, LOAD_PORTS[server])
        for server in SERVERS:  # warm-up: page cache, the servers' first instances
            wrk(stack, LOAD_PORTS[server], CONNECTIONS[0], 1, path=ready_path(server))
        for c in CONNECTIONS:
            for i in range(s.rounds):
                order = list(VARIANTS) if i % 2 == 0 else list(VARIANTS)[::-1]
                for v in order:
                    server, path, extra = VARIANTS[v]
                    try:
                        run = wrk(stack, LOAD_PORTS[server], c, s.seconds, extra, path)
                    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                        fails.append(f"wrk {v} -c{c}: {e}")
                        continue
                    out[str(c)][v].append(run)
    finally:
        for name in names.values():
            _rm(stack, name)
    return first, out


def _starts(
    stack: Stack, client: ThreadPoolExecutor, s: FunctionSettings, fails: list[str]
) -> Json:
    """`docker run -d` to the first 200, compile cache warm, servers in rotating order."""
    out: Json = {server: [] for server in SERVERS}
    for i in range(s.starts):
        order = [SERVERS[(i + k) % len(SERVERS)] for k in range(len(SERVERS))]
        for server in order:
            name = f"pw-bench-fn-start-{server}-{i}"
            try:
                out[server].append(_start(stack, client, name, server, START_PORTS[server]))
            except RuntimeError as e:
                fails.append(f"start {server} {i}: {e}")
            finally:
                _rm(stack, name)
    return out


def measure(s: FunctionSettings, log: Callable[[str], None] = print) -> Json:
    """The section alone, on its own Docker stack (what bench_http.measure does for both)."""
    from integration.bench_http import inside

    if not DOCKERD.exists():
        raise RuntimeError(f"{DOCKERD} is missing: run scripts/fetch-docker.sh (make install)")
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is missing: apt-get install wrk (scripts/install.sh does)")
    archives()  # build before the stack is up
    cache = Path(tempfile.mkdtemp(prefix="pywasm-bench-fn-cache-"))
    stack = Stack("2.1", docker=True, env={"PYWASM_CACHE_DIR": str(cache)})
    try:
        stack.start()
        with inside(stack.netns.path) as client:
            res = measure_in(stack, client, s, log)
    finally:
        left = stack.stop()
        shutil.rmtree(cache, ignore_errors=True)
    if left:
        res["failures"].append(f"tear-down found: {left}")
    return res


# --- report -------------------------------------------------------------------------------


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _ratio(a: float, b: float) -> float:
    return a / b if b and a == a and b == b else float("nan")


def _x(x: float) -> str:
    if x != x:
        return "n/a"
    return f"{x:.3f}×" if x < 0.1 else f"{x:.2f}×"


def _ms(x: float) -> str:
    if x != x:
        return "n/a"
    return f"{x * 1000:.0f} ms" if x >= 0.1 else f"{x * 1000:.2f} ms"


def _verdict(x: float, goal: float) -> str:
    return "n/a" if x != x else ("met" if x >= goal else "missed")


def stat(res: Json, c: int, variant: str, key: str) -> float:
    """Median `key` (rps, p50, p99) of `variant`'s runs at `c` connections."""
    return _median([r[key] for r in res.get("load", {}).get(str(c), {}).get(variant, [])])


def rps(res: Json, c: int, variant: str) -> float:
    return stat(res, c, variant, "rps")


def _rps_cell(runs: Sequence[Json]) -> str:
    xs = [r["rps"] for r in runs]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.0f}"
    return f"{_median(xs):.0f} ({min(xs):.0f}-{max(xs):.0f})"


def _start_cell(xs: Sequence[float]) -> str:
    if not xs:
        return "n/a"
    return f"{_median(xs) * 1000:.0f} ms ({min(xs) * 1000:.0f}-{max(xs) * 1000:.0f})"


def per_core(res: Json, c: int) -> float:
    return rps(res, c, "proxy") / int(res.get("cpus", 1))


def summary_rows(res: Json, label: str) -> list[list[str]]:
    """Rows of bench.py's summary table (target, containerd, pywasm, runc, ratio, goal,
    verdict)."""
    rows = []
    for c in res.get("connections", []):
        a, b, st = rps(res, c, "cgi"), rps(res, c, "busybox-cgi"), rps(res, c, "busybox-static")
        for what, base, x, goal in (
            ("busybox CGI", b, _ratio(a, b), CGI_GOAL),
            ("busybox static file", st, _ratio(a, st), STATIC_GOAL),
        ):
            rows.append(
                [
                    f"8 CGI function req/s vs {what}, {c} connections (`-p`)",
                    label,
                    f"{a:.0f}/s",
                    f"{base:.0f}/s ({what})",
                    _x(x),
                    f"≥ {goal:.1f}×",
                    _verdict(x, goal),
                ]
            )
    for c in res.get("connections", []):
        p = per_core(res, c)
        rows.append(
            [
                f"8 proxy function req/s per core, {c} connections",
                label,
                f"{p:.0f}/s ({rps(res, c, 'proxy'):.0f}/s on {res.get('cpus', 1)})",
                f"~{RUNWASI_PER_CORE:.0f}/s (runwasi, published)",
                _x(_ratio(p, RUNWASI_PER_CORE)),
                "",
                "",
            ]
        )
    st = res.get("start", {})
    b = _median(st.get("busybox", []))
    for server, name in (("cgi", "CGI function"), ("proxy", "proxy function")):
        a = _median(st.get(server, []))
        rows.append(
            [
                f"8 `docker run -d` to first 200, {name}",
                label,
                _ms(a),
                f"{_ms(b)} (busybox CGI)",
                _x(_ratio(a, b)),
                "",
                "",
            ]
        )
    return rows


def report_lines(res: Json) -> list[str]:
    s = res["settings"]
    cpus = res.get("cpus", 1)
    lines = [
        "## HTTP functions behind Docker `-p` (issue 15)",
        "",
        f"Docker {res.get('docker', '?')} on containerd 2.1, the same test namespace and wrk as "
        f"above (`--latency -t2 -c<n> -d{s['seconds']}s`, keep-alive, after a 1 s warm-up), "
        f"{s['rounds']} run(s) per cell, the order of the cells reversed every other round: "
        "requests/s as median (min-max), p50 and p99 medians over the runs. Every server "
        f"answers `GET {REQUEST}` with the same {len(BODY)}-byte body: pywasm's functions "
        "(`--annotation pywasm.io/trigger=http`, default limits, a fresh instance per request, "
        f"a server process per CPU ({cpus}), an access-log line per request through `docker "
        "logs`), and one "
        "runc container with busybox `httpd -f` serving integration/guests/cgi.c compiled "
        f"natively (static musl, `zig cc -O2`, {res.get('native_cgi_bytes', 0) // 1024} KiB) "
        f"as `{CGI_PATH.split('/bench')[0]}` and that body as a static file (`{STATIC_PATH}`). "
        "busybox closes every connection; `cgi-close` sends `Connection: close` to the CGI "
        "function, like for like.",
        "",
        "| connections | server | requests/s | p50 | p99 | socket errors | non-2xx |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in res.get("connections", []):
        for v in VARIANTS:
            runs = res.get("load", {}).get(str(c), {}).get(v, [])
            lines.append(
                f"| {c} | {v}: {LABELS[v]} | {_rps_cell(runs)} | "
                f"{_ms(_median([r['p50'] for r in runs]))} | "
                f"{_ms(_median([r['p99'] for r in runs]))} | "
                f"{sum(r['socket_errors'] for r in runs)} | {sum(r['non_2xx'] for r in runs)} |"
            )
    lines += [
        "",
        "busybox's CGI answers carry neither a length nor `Connection: close`: they end when the "
        "connection closes, which wrk counts as a read error after counting the answer (the "
        "socket errors of the busybox-cgi rows, one per answer); no answer was lost. busybox "
        "writes no access log; pywasm one line per request.",
        "",
    ]
    lines += [
        "Ratios to busybox (pywasm's figure / busybox's; requests/s: higher is better for "
        "pywasm, p50 and p99: lower is), against its CGI and against its static file; the "
        f"targets: the CGI function's requests/s ≥ {CGI_GOAL:.1f}× busybox's CGI and "
        f"≥ {STATIC_GOAL:.1f}× its static file:",
        "",
        "| connections | server | requests/s vs CGI | vs static | p50 vs CGI | vs static "
        "| p99 vs CGI | vs static |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in res.get("connections", []):
        for v in ("cgi", "cgi-close", "proxy"):
            cells = [
                _x(_ratio(stat(res, c, v, key), stat(res, c, base, key)))
                for key in ("rps", "p50", "p99")
                for base in ("busybox-cgi", "busybox-static")
            ]
            lines.append(f"| {c} | {v} | {' | '.join(cells)} |")
    lines.append("")
    for c in res.get("connections", []):
        p = per_core(res, c)
        lines.append(
            f"- proxy function, {c} connections: {rps(res, c, 'proxy'):.0f}/s on {cpus} CPUs "
            f"shared with wrk and docker-proxy = {p:.0f}/s per core, against runwasi's "
            f"~{RUNWASI_PER_CORE:.0f}/s per core (its wasmtime shim's Rust wasi-http hello: "
            f"19-22k/s, `hey -c 50`, 4-core runners): {_x(_ratio(p, RUNWASI_PER_CORE))}"
        )
    st, first = res.get("start", {}), res.get("first", {})
    lines += [
        "",
        f"`docker run -d -p` to the first 200 (`GET {REQUEST}`; busybox: its CGI), compile "
        "cache warm, the three in rotating order; the first start of each (the Wasm compiled "
        "into the stack's empty cache) apart:",
        "",
        "| server | to the first 200, median (min-max) | runs | ratio to busybox | first start |",
        "| --- | --- | --- | --- | --- |",
    ]
    b = _median(st.get("busybox", []))
    for server in SERVERS:
        xs = st.get(server, [])
        lines.append(
            f"| {server} | {_start_cell(xs)} | {len(xs)} | {_x(_ratio(_median(xs), b))} | "
            f"{_ms(first.get(server, float('nan')))} |"
        )
    lines.append("")
    if res.get("failures"):
        lines += ["Failed runs (functions, not counted):", ""]
        lines += [f"- {f}" for f in res["failures"][:6]]
        lines.append("")
    return lines


def complete(res: Json) -> bool:
    load = res.get("load", {})
    return all(load.get(str(c), {}).get(v) for c in CONNECTIONS for v in VARIANTS) and all(
        res.get("start", {}).get(server) for server in SERVERS
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    full = FunctionSettings.full()
    parser.add_argument("--seconds", type=int, default=full.seconds, help="per wrk cell")
    parser.add_argument("--rounds", type=int, default=full.rounds, help="wrk runs per cell")
    parser.add_argument("--starts", type=int, default=full.starts, help="starts per server")
    parser.add_argument("--smoke", action="store_true", help="1 s cells, 1 round, 1 start")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    s = (
        FunctionSettings.smoke()
        if args.smoke
        else FunctionSettings(args.seconds, args.rounds, args.starts)
    )
    res = measure(s)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    label = f"2.1 + Docker {res.get('docker', '?')}"
    print("\n".join(report_lines(res)))
    for row in summary_rows(res, label):
        print("| " + " | ".join(row) + " |")
    return 0 if complete(res) and not res["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
