"""pywasm vs runc on the same containerd, in one run: `python -m integration.bench` (make bench).

For each containerd (1.6 and 2.1, private instances) it measures the targets of issue 7, every
pywasm figure side by side with runc on the same containerd, interleaved:

1. start: `ctr run --rm` of the hello guest vs busybox `echo hi`, end to end, plus the shim's own
   span (exec of `start` to the end of `delete`, stamped by integration/native/spanwrap.c for
   both runtimes; see integration/bench_node.py);
2. large module: CPython for WASI (`pw-python`) running a one-line script, first start (compiles)
   and later starts, against hello starts interleaved with them;
3. throughput: `ctr run --rm` tasks per second, 4 in parallel;
4. density: PSS per idle container (20 sleeping containers), every process each runtime adds;
5. guest speed: integration/guests/cpuhash.c as Wasm under pywasm vs native under runc;
6. HTTP (issue 14, once, on Docker 28 + containerd 2.1 in a test network namespace): the Wasm
   echo server in a pywasm container vs busybox httpd's static file in a runc container, both
   behind `docker run -p`: wrk requests/s and p50/p99 at 10 and 50 connections, and `docker run
   -d` to the first 200 (integration/bench_http.py);
7. issue 17 (integration/bench_scale.py): PSS per idle container at 200 (and 20 with
   `--only density200`), idle HTTP functions against busybox httpd (PSS per container, how
   many fit in 1 GiB), the second start of the 75 MB clang module;
8. HTTP functions (issue 15, in 6's run, integration/bench_functions.py): the C CGI function and
   the wasi:http/proxy function against busybox httpd's native CGI and static file behind `-p`;

plus a start-up breakdown (containerd at debug level, timestamps from `ctr` to guest exit).
It prints the summary table, writes BENCHMARKS.md, a PNG chart (docs/bench-start-latency.png,
when matplotlib is installed: `pip install matplotlib`) and the raw figures
(.cache/bench/results.json). `--smoke` is a quick check of the suite itself (containerd 1.6, a
few runs, no large module, about a minute): it prints the table and writes nothing. `--only ctr`
(targets 1-5), `--only http` (6) or `--only functions|clang|density200` (7) runs one part; it
prints the report and writes only .cache/bench/results-<part>.json (BENCHMARKS.md too when
--out is given).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integration import bench_functions, bench_http, bench_scale, images
from integration.bench_node import (
    NATIVE,
    PYTHON,
    PYTHON_MODULE,
    Node,
    archives,
    descendants,
    import_images,
)
from integration.containerd import VERSIONS, run, run_args

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / ".cache" / "bench" / "results.json"
CHART = REPO / "docs" / "bench-start-latency.png"
PYWASM = "io.containerd.pywasm.v1"
RUNC = "io.containerd.runc.v2"
RUNTIMES = {"pywasm": PYWASM, "runc": RUNC}
#: what `--only` selects: the per-containerd targets 1-5, the HTTP section (6), and issue 17's
#: parts in integration/bench_scale.py (idle PSS at 20 and 200 containers, the 75 MB clang
#: module, idle HTTP functions)
SCALE_PARTS = ("density200", "clang", "functions")
PARTS = ("ctr", "http", *SCALE_PARTS)
#: what a run without `--only` measures (~8 minutes on 2 busy cores). With ctr, density200
#: measures only 200 containers (ctr's density has the 20): 600 container starts and removals
#: per containerd, ~75 s; `--only density200` measures 20 and 200. clang's compile (1-2
#: minutes) is reused after the first run on a machine (bench_scale._seed).
DEFAULT_PARTS = ("ctr", "http", "density200", "functions", "clang")
GROUP_ANNOTATION = "pywasm.io/group"

Json = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    versions: tuple[str, ...]
    runs: int  # start latency: runs of each kind
    python_runs: int  # later starts of the large module (0: skip the target)
    tasks: int  # throughput: tasks per runtime
    parallel: int
    containers: int  # density
    cpu_runs: int
    cpu_rounds: int
    breakdown_runs: int
    settle: float  # density: seconds between the last start and the measurement

    @classmethod
    def full(cls, versions: Sequence[str]) -> Settings:
        return cls(tuple(versions), 20, 10, 100, 4, 20, 5, 80, 10, 2.0)

    @classmethod
    def smoke(cls) -> Settings:
        return cls(("1.6",), 3, 0, 8, 4, 3, 1, 4, 2, 0.5)


# --- statistics ---------------------------------------------------------------------------


nan = float("nan")


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b and a == a and b == b else float("nan")


def ms(x: float) -> str:
    return "n/a" if x != x else f"{x * 1000:.0f} ms"


def spread(xs: Sequence[float], scale: float = 1000.0, unit: str = "ms") -> str:
    """`median (min-max)`."""
    if not xs:
        return "n/a"
    digits = 0 if scale == 1000.0 else 2
    m, lo, hi = median(xs) * scale, min(xs) * scale, max(xs) * scale
    return f"{m:.{digits}f} {unit} ({lo:.{digits}f}-{hi:.{digits}f})"


def fmt_ratio(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f}×"


# --- one container ------------------------------------------------------------------------


def _expect(runtime: str, kind: str) -> tuple[str, list[str], str | None]:
    """(image, args, wanted stdout or None) of a short-lived container."""
    if kind == "hello":
        if runtime == PYWASM:
            return images.ref("hello"), [], "hello from wasm\n"
        return images.BUSYBOX, ["echo", "hi"], "hi\n"
    if kind == "stamp":
        if runtime == PYWASM:
            return images.ref("stamp"), [], None
        return NATIVE, ["/stamp"], None
    raise ValueError(kind)


@dataclass
class Outcome:
    ok: bool
    seconds: float
    t0_ns: int
    t1_ns: int
    stdout: str
    error: str = ""


def run_one(
    node: Node, runtime: str, cid: str, image: str, args: Sequence[str], want: str | None
) -> Outcome:
    t0 = time.time_ns()
    p0 = time.perf_counter()
    try:
        r = run(node.ctrd, image, cid, *args, runtime=runtime, timeout=300)
    except subprocess.TimeoutExpired as exc:
        return Outcome(False, 0.0, t0, time.time_ns(), "", f"timed out: {exc}")
    elapsed = time.perf_counter() - p0
    t1 = time.time_ns()
    ok = r.returncode == 0 and (want is None or r.stdout == want)
    error = "" if ok else f"exit {r.returncode}: {(r.stdout + r.stderr).strip()[:300]}"
    return Outcome(ok, elapsed, t0, t1, r.stdout, error)


def kind_run(node: Node, runtime: str, cid: str, kind: str = "hello") -> Outcome:
    if runtime == PYWASM:
        node.zygote.ensure()
    image, args, want = _expect(runtime, kind)
    return run_one(node, runtime, cid, image, args, want)


def _fail(bucket: Json, name: str, cid: str, out: Outcome) -> None:
    bucket.setdefault("failures", {}).setdefault(name, []).append(f"{cid}: {out.error}")


# --- 1. start latency and the shim's span -------------------------------------------------


def span_of(node: Node, cid: str, out: Outcome) -> Json | None:
    spans = {s.action: s for s in node.spans() if s.cid == cid}
    start, delete = spans.get("start"), spans.get("delete")
    if start is None or delete is None:
        return None
    return {
        "span": (delete.exit_ns - start.exec_ns) / 1e9,
        "start": start.seconds,
        "delete": delete.seconds,
        "before": (start.exec_ns - out.t0_ns) / 1e9,
        "after": (out.t1_ns - delete.exit_ns) / 1e9,
        "e2e": out.seconds,
    }


def start_latency(node: Node, s: Settings, res: Json) -> None:
    """Interleaved: pywasm, runc, pywasm timed, runc timed (order flipped every iteration)."""
    e2e: dict[str, list[float]] = {"pywasm": [], "runc": []}
    spans: dict[str, list[Json]] = {"pywasm": [], "runc": []}
    for name, rt in RUNTIMES.items():  # warm-up: compile the module, page cache, zygote
        kind_run(node, rt, f"warm-{name}", "hello")
    for i in range(s.runs):
        order = list(RUNTIMES.items()) if i % 2 == 0 else list(reversed(RUNTIMES.items()))
        for timed in (False, True):
            node.timing(timed)
            for name, rt in order:
                cid = f"{'span' if timed else 'start'}-{name}-{i}"
                out = kind_run(node, rt, cid, "hello")
                if not out.ok:
                    _fail(res, f"start/{name}", cid, out)
                elif not timed:
                    e2e[name].append(out.seconds)
                elif (span := span_of(node, cid, out)) is not None:
                    spans[name].append(span)
                else:
                    _fail(res, f"span/{name}", cid, Outcome(False, 0, 0, 0, "", "no span logged"))
    node.timing(False)
    res["start"] = e2e
    res["spans"] = spans


# --- 2. a large module --------------------------------------------------------------------


def large_module(node: Node, s: Settings, res: Json) -> None:
    args = [PYTHON_MODULE, "-c", "import json; print(json.dumps({'sum': 1 + 1}))"]
    want = '{"sum": 2}\n'
    before = len(list(node.cache_dir.glob("*.cwasm")))
    node.zygote.ensure()
    first = run_one(node, PYWASM, "python-first", PYTHON, args, want)
    compiled = len(list(node.cache_dir.glob("*.cwasm"))) > before
    later: list[float] = []
    hello: list[float] = []
    for i in range(s.python_runs):
        node.zygote.ensure()
        out = run_one(node, PYWASM, f"python-{i}", PYTHON, args, want)
        if out.ok:
            later.append(out.seconds)
        else:
            _fail(res, "python", f"python-{i}", out)
        out = kind_run(node, PYWASM, f"python-hello-{i}", "hello")
        if out.ok:
            hello.append(out.seconds)
        else:
            _fail(res, "python/hello", f"python-hello-{i}", out)
    entry_sizes = sorted(p.stat().st_size for p in node.cache_dir.glob("*.cwasm"))
    res["python"] = {
        "first": first.seconds if first.ok else None,
        "first_error": first.error,
        "compiled_on_first": compiled,
        "later": later,
        "hello": hello,
        "cache_entry_bytes": entry_sizes[-1] if entry_sizes else 0,
    }


# --- 3. throughput ------------------------------------------------------------------------


def throughput(node: Node, s: Settings, res: Json) -> None:
    """`tasks` runs per runtime, `parallel` at a time, in blocks ABBA to cancel drift."""
    half = max(1, s.tasks // 2)
    totals = {name: {"tasks": 0, "ok": 0, "seconds": 0.0} for name in RUNTIMES}
    counter = iter(range(1_000_000))

    def block(name: str, n: int) -> None:
        rt = RUNTIMES[name]
        if rt == PYWASM:
            node.zygote.ensure()
        ids = [f"tp-{name}-{next(counter)}" for _ in range(n)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=s.parallel) as pool:
            outs = list(pool.map(lambda cid: kind_run(node, rt, cid, "hello"), ids))
        totals[name]["seconds"] += time.perf_counter() - t0
        totals[name]["tasks"] += n
        totals[name]["ok"] += sum(o.ok for o in outs)
        for cid, o in zip(ids, outs, strict=True):
            if not o.ok:
                _fail(res, f"throughput/{name}", cid, o)

    for name in ("pywasm", "runc", "runc", "pywasm"):
        block(name, half)
    res["throughput"] = {
        name: {**t, "per_second": t["ok"] / t["seconds"] if t["seconds"] else 0.0}
        for name, t in totals.items()
    }


# --- 4. density ---------------------------------------------------------------------------


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _classify(title: str) -> str:
    if title.startswith("pywasm-worker"):
        return "worker"
    if title.startswith("pywasm-zygote") or "pywasmd.shim.zygote" in title:
        return "zygote"
    if "containerd-shim" in title:
        return "shim"
    return "process"


def runtime_pids(node: Node, runtime: str) -> list[int]:
    """Every live process the runtime added for this containerd: its shims and their
    descendants (Containerd.all_shim_pids) and, for pywasm, the benchmark's zygote and every
    process it forked (shim servers forked by the zygote carry the containerd address neither
    in their argv, which setproctitle rewrote into one string, nor in their initial
    environment, so all_shim_pids does not see them)."""
    roots = set(node.ctrd.all_shim_pids())
    if runtime == PYWASM and node.zygote.pid is not None:
        roots.add(node.zygote.pid)
    return descendants(roots)


def _wait_no_shims(node: Node, timeout: float = 20.0) -> None:
    """Until no shim of this containerd is left (the zygote itself stays)."""
    zygote = node.zygote.pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [p for p in runtime_pids(node, PYWASM) if p != zygote]:
            return
        time.sleep(0.1)


def density_one(node: Node, name: str, n: int, settle: float, grouped: bool = False) -> Json:
    rt = RUNTIMES[name]
    if rt == PYWASM:
        node.zygote.ensure()
        image, args = images.ref("sleep"), [images.module("sleep"), "3600"]
        platform_ = "wasi/wasm"
    else:
        image, args = images.BUSYBOX, ["sleep", "3600"]
        platform_ = "linux/amd64"
    extra = ["--annotation", f"{GROUP_ANNOTATION}=bench-density"] if grouped else []
    started = 0
    errors = []
    try:
        for i in range(n):
            cid = f"idle-{name}{'-grouped' if grouped else ''}-{i}"
            argv = run_args(image, cid, *args, runtime=rt, platform=platform_, extra=extra)
            argv = [a for a in argv if a != "--rm"]
            argv.insert(1, "-d")
            r = node.ctrd.ctr(*argv, timeout=120)
            if r.returncode == 0:
                started += 1
            else:
                errors.append(f"{cid}: exit {r.returncode}: {(r.stdout + r.stderr).strip()[:200]}")
        time.sleep(settle)  # let every shim and guest settle into its idle state
        parts: dict[str, list[int]] = {}
        for pid in runtime_pids(node, rt):
            parts.setdefault(_classify(_title(pid)), []).append(pss_kb(pid))
    finally:
        node.ctrd.cleanup_tasks()
        _wait_no_shims(node)
    total = sum(sum(v) for v in parts.values())
    return {
        "containers": started,
        "errors": errors,
        "total_kb": total,
        "per_container_kb": total / started if started else float("nan"),
        "parts": {k: {"count": len(v), "kb": sum(v)} for k, v in sorted(parts.items())},
    }


def density(node: Node, s: Settings, res: Json, flip: bool) -> None:
    order = ["pywasm", "runc"] if not flip else ["runc", "pywasm"]
    out = {name: density_one(node, name, s.containers, s.settle) for name in order}
    out["pywasm-grouped"] = density_one(node, "pywasm", s.containers, s.settle, grouped=True)
    res["density"] = out


# --- 5. guest speed -----------------------------------------------------------------------

_CPU_LINE = re.compile(r"digest=(\w+) acc=(\w+) seconds=([0-9.]+)")


def guest_speed(node: Node, s: Settings, res: Json) -> None:
    wasm_module = images.module("cpuhash")
    cmds = {
        "pywasm": (images.ref("cpuhash"), [wasm_module]),
        "runc": (NATIVE, ["/cpuhash"]),
    }
    out: Json = {name: {"guest": [], "wall": [], "digests": []} for name in RUNTIMES}
    for name, (image, argv) in cmds.items():  # warm-up: the first Wasm start compiles
        kind = RUNTIMES[name]
        run_one(node, kind, f"cpu-warm-{name}", image, [*argv, "1"], None)
    for i in range(s.cpu_runs):
        order = list(cmds) if i % 2 == 0 else list(reversed(cmds))
        for name in order:
            image, argv = cmds[name]
            if name == "pywasm":
                node.zygote.ensure()
            o = run_one(
                node, RUNTIMES[name], f"cpu-{name}-{i}", image, [*argv, str(s.cpu_rounds)], None
            )
            m = _CPU_LINE.search(o.stdout)
            if not o.ok or m is None:
                _fail(res, f"cpu/{name}", f"cpu-{name}-{i}", o)
                continue
            out[name]["guest"].append(float(m.group(3)))
            out[name]["wall"].append(o.seconds)
            out[name]["digests"].append(m.group(1) + m.group(2))
    digests = {d for name in RUNTIMES for d in out[name]["digests"]}
    out["same_result"] = len(digests) == 1
    out["rounds"] = s.cpu_rounds
    res["cpu"] = out


# --- breakdown: where the time of one start goes ------------------------------------------

_TIME = re.compile(r'^time="(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z"')


def log_time_ns(line: str) -> int | None:
    m = _TIME.match(line)
    if m is None:
        return None
    base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    seconds = int(base.replace(tzinfo=datetime.timezone.utc).timestamp())
    frac = (m.group(2) or "0")[:9].ljust(9, "0")
    return seconds * 1_000_000_000 + int(frac)


# (milestone, substring of a containerd log line); the first match after the run's start wins.
# Event lines are containerd 1.6's (2.1 does not log events); shim lines have ms precision.
LOG_MILESTONES = [
    ("container created", "topic=/containers/create"),
    ("containerd connects to the shim", 'msg="connecting to shim'),
    ("shim server ready", 'msg="pywasm shim '),
    ("worker ready (shim log)", 'msg="created '),
    ("task created (Create done)", "topic=/tasks/create"),
    ("task started (Start done)", "topic=/tasks/start"),
    ("guest exit seen (shim log)", "exited with status"),
    ("task exited", "topic=/tasks/exit"),
    ("task deleted", "topic=/tasks/delete"),
    ("shim disconnected", 'msg="shim disconnected"'),
    ("container removed", "topic=/containers/delete"),
]
MILESTONE_ORDER = [
    "ctr started",
    "container created",
    "shim `start` exec",
    "shim `start` exit",
    "containerd connects to the shim",
    "shim server ready",
    "worker ready (shim log)",
    "task created (Create done)",
    "task started (Start done)",
    "guest main()",
    "guest exit seen (shim log)",
    "task exited",
    "task deleted",
    "shim disconnected",
    "shim `delete` exec",
    "shim `delete` exit",
    "container removed",
    "ctr exited",
]


def _milestones(node: Node, cid: str, out: Outcome, log: str) -> dict[str, float]:
    at: dict[str, int] = {"ctr started": out.t0_ns, "ctr exited": out.t1_ns}
    for span in node.spans():
        if span.cid == cid:
            at[f"shim `{span.action}` exec"] = span.exec_ns
            at[f"shim `{span.action}` exit"] = span.exit_ns
    m = re.search(r"stamp (\d+)", out.stdout)
    if m:
        at["guest main()"] = int(m.group(1))
    for line in log.splitlines():
        for name, needle in LOG_MILESTONES:
            if name not in at and needle in line and (t := log_time_ns(line)) is not None:
                at[name] = t
    return {k: (v - out.t0_ns) / 1e9 for k, v in at.items()}


def breakdown(version: str, s: Settings) -> Json:
    """Stamp-guest runs with containerd at debug level (its event log has ns timestamps)."""
    res: Json = {"pywasm": [], "runc": []}
    with Node(version, log_level="debug") as node:
        import_images(node.ctrd, {k: v for k, v in ARCHIVES.items() if k != PYTHON})
        for name, rt in RUNTIMES.items():
            kind_run(node, rt, f"bd-warm-{name}", "stamp")
        node.timing(True)
        for i in range(s.breakdown_runs):
            for name, rt in RUNTIMES.items():
                cid = f"bd-{name}-{i}"
                offset = node.ctrd.log_size()
                out = kind_run(node, rt, cid, "stamp")
                time.sleep(0.3)  # containerd's log lines of the run's tail
                if out.ok:
                    res[name].append(_milestones(node, cid, out, node.ctrd.log_since(offset)))
                else:
                    _fail(res, f"breakdown/{name}", cid, out)
    return res


# --- one containerd -----------------------------------------------------------------------

ARCHIVES: dict[str, Path] = {}


def server_version(node: Node) -> str:
    full = node.ctrd.ctr("version", timeout=20).stdout
    found = [line.split(":", 1)[1].strip() for line in full.splitlines() if "Version:" in line]
    return found[-1] if found else node.ctrd.version


def bench_version(version: str, s: Settings, flip: bool, log: Callable[[str], None]) -> Json:
    res: Json = {}
    with Node(version) as node:
        t0 = time.monotonic()
        import_images(node.ctrd, ARCHIVES)
        res["server"] = server_version(node)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("start latency + shim span", lambda: start_latency(node, s, res)),
            ("large module", lambda: large_module(node, s, res)),
            ("throughput", lambda: throughput(node, s, res)),
            ("density", lambda: density(node, s, res, flip)),
            ("guest speed", lambda: guest_speed(node, s, res)),
        ]
        for title, step in steps:
            if title == "large module" and not s.python_runs:
                continue
            t1 = time.monotonic()
            step()
            log(f"  {title}: {time.monotonic() - t1:.1f}s")
        res["zygote_restarts"] = node.zygote.restarts
        res["seconds"] = time.monotonic() - t0
    if s.breakdown_runs:
        t1 = time.monotonic()
        res["breakdown"] = breakdown(version, s)
        log(f"  breakdown: {time.monotonic() - t1:.1f}s")
    return res


# --- machine ------------------------------------------------------------------------------


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine() -> Json:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    runc = subprocess.run(["runc", "--version"], capture_output=True, text=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wasmtime": importlib.metadata.version("wasmtime"),
        "runc": runc.stdout.splitlines()[0] if runc.stdout else "unknown",
    }


# --- report -------------------------------------------------------------------------------


def _verdict(value: float, target: float, at_most: bool) -> str:
    if value != value:
        return "n/a"
    met = value <= target if at_most else value >= target
    return "met" if met else "missed"


def summary_rows(results: Json) -> list[list[str]]:
    """One row per target and containerd: target, containerd, pywasm, runc, ratio, goal, verdict."""
    rows = []
    for version, r in results["versions"].items():
        label = f"{version} ({r.get('server', '?')})"
        st = r.get("start", {})
        pw, rc = median(st.get("pywasm", [])), median(st.get("runc", []))
        x = ratio(pw, rc)
        if st:
            rows.append(
                ["1 start", label, ms(pw), ms(rc), fmt_ratio(x), "≤ 0.75×", _verdict(x, 0.75, True)]
            )
        sp = r.get("spans", {})
        spw = median([d["span"] for d in sp.get("pywasm", [])])
        src = median([d["span"] for d in sp.get("runc", [])])
        if sp:
            rows.append(
                ["1 shim span", label, ms(spw), ms(src), fmt_ratio(ratio(spw, src)), "", ""]
            )
        py = r.get("python")
        if py:
            later, hello = median(py["later"]), median(py["hello"])
            x = ratio(later, hello)
            rows.append(
                [
                    "2 large module, 2nd start",
                    label,
                    ms(later),
                    f"hello {ms(hello)}",
                    fmt_ratio(x),
                    "≤ 1.5× hello",
                    _verdict(x, 1.5, True),
                ]
            )
        tp = r.get("throughput", {})
        if tp:
            a, b = tp["pywasm"]["per_second"], tp["runc"]["per_second"]
            x = ratio(a, b)
            rows.append(
                [
                    "3 throughput",
                    label,
                    f"{a:.1f}/s",
                    f"{b:.1f}/s",
                    fmt_ratio(x),
                    "≥ 1.5×",
                    _verdict(x, 1.5, False),
                ]
            )
        dn = r.get("density", {})
        if dn:
            b = dn["runc"]["per_container_kb"]
            for key, goal, target in (("pywasm", "≤ 1.0×", 1.0), ("pywasm-grouped", "≤ 0.5×", 0.5)):
                a = dn[key]["per_container_kb"]
                x = ratio(a, b)
                title = "4 density" if key == "pywasm" else "4 density, grouped"
                rows.append(
                    [
                        title,
                        label,
                        f"{a / 1024:.2f} MB",
                        f"{b / 1024:.2f} MB",
                        fmt_ratio(x),
                        goal,
                        _verdict(x, target, True),
                    ]
                )
        rows += bench_scale.summary_rows(r, label)
        cpu = r.get("cpu", {})
        if cpu:
            a, b = median(cpu["pywasm"]["guest"]), median(cpu["runc"]["guest"])
            x = ratio(b, a)
            rows.append(
                [
                    "5 guest speed (native/wasm time)",
                    label,
                    f"{a:.2f} s",
                    f"{b:.2f} s",
                    fmt_ratio(x),
                    "≥ 0.7×",
                    _verdict(x, 0.7, False),
                ]
            )
    http = results.get("http")
    if http:
        label = f"2.1 + Docker {http.get('docker', '?')}"
        for c in http.get("connections", []):
            a, b = bench_http.summary(http, c)
            x = ratio(a, b)
            rows.append(
                [
                    f"6 HTTP req/s, {c} connections (`-p`)",
                    label,
                    f"{a:.0f}/s",
                    f"{b:.0f}/s (busybox httpd)",
                    fmt_ratio(x),
                    "≥ 1.0×",
                    _verdict(x, 1.0, False),
                ]
            )
        st = http.get("start", {})
        a, b = median(st.get("pywasm", [])), median(st.get("runc", []))
        rows.append(
            ["6 `docker run -d` to first 200", label, ms(a), ms(b), fmt_ratio(ratio(a, b)), "", ""]
        )
        if http.get("functions"):
            rows += bench_functions.summary_rows(http["functions"], label)
    return rows


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


SUMMARY_HEADER = ["target", "containerd", "pywasm", "runc", "ratio", "goal", "verdict"]


def _breakdown_lines(version: str, bd: Json) -> list[str]:
    rows = []
    for name in MILESTONE_ORDER:
        cells = []
        for rt in RUNTIMES:
            values = [run[name] for run in bd.get(rt, []) if name in run]
            cells.append(f"{median(values) * 1000:.1f}" if values else "")
        if any(cells):
            rows.append([name, *cells])
    n = len(bd.get("pywasm", []))
    return [
        f"### Where one start goes, containerd {version} (median of {n} runs, ms after ctr's exec)",
        "",
        *table(["milestone", "pywasm (stamp guest)", "runc (native stamp)"], rows),
        "",
    ]


def closing_note(results: Json) -> list[str]:
    """Each target: met or missed, with its numbers on every containerd."""
    by_target: dict[str, list[str]] = {}
    for row in summary_rows(results):
        target, label, _, _, x, goal, verdict = row
        if goal:
            by_target.setdefault(f"{target} ({goal})", []).append(
                f"{verdict} on {label.split()[0]} ({x})"
            )
    lines = ["## Closing note", ""]
    lines += [f"- {target}: {'; '.join(v)}" for target, v in by_target.items()]
    lines += [
        "",
        "Why, measured step by step (`start` and `delete` interpreter and imports, the server's",
        "imports after the fork, per-start module hashing and cache reads, per-process memory):",
        "docs/performance.md.",
        "",
    ]
    return lines


def report(results: Json, chart: Path | None) -> str:
    m = results["machine"]
    s = results["settings"]
    lines = [
        "# Benchmarks",
        "",
        "`make bench` (`python -m integration.bench`) measures the targets of issue 7 with pywasm",
        "(`io.containerd.pywasm.v1`) and runc (`io.containerd.runc.v2`) side by side on the same",
        "private containerd, interleaved, for containerd 1.6 and 2.1; see docs/performance.md for",
        "what the figures mean and how they are taken. Ratios are pywasm/runc unless stated.",
        "Target 6 (issue 14) is a Wasm HTTP server against busybox httpd behind Docker's `-p`",
        "(docs/networking.md); target 8 (issue 15), HTTP functions against busybox httpd's CGI",
        "and static file (docs/http.md).",
        "",
        f"- date: {results['date']}",
        f"- machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gb']} GB, kernel {m['kernel']},"
        f" Python {m['python']}, wasmtime {m['wasmtime']}, {m['runc']}",
        f"- load average (1/5/15 min) before: {results['load_before']}, after: "
        f"{results['load_after']} (a shared 2-core machine; others ran tests meanwhile)",
        f"- wall time of the run: {results['seconds']:.0f} s",
        "",
        "## Summary",
        "",
        *table(SUMMARY_HEADER, summary_rows(results)),
        "",
    ]
    if chart is not None:
        lines += [f"![start latency distributions]({chart.relative_to(REPO)})", ""]
    lines += closing_note(results)
    if results.get("http"):
        lines += bench_http.report_lines(results["http"])
    for version, r in results["versions"].items():
        lines += [f"## containerd {version} ({r.get('server', '?')})", ""]
        st, sp = r.get("start", {}), r.get("spans", {})
        rows = []
        for name in RUNTIMES:
            xs = st.get(name, [])
            spans = sp.get(name, [])

            def col(key: str, spans: list[Json] = spans) -> str:
                return spread([d[key] for d in spans])

            rows.append(
                [
                    name,
                    spread(xs),
                    str(len(xs)),
                    col("span"),
                    col("start"),
                    col("delete"),
                    col("before"),
                    col("after"),
                ]
            )
        lines += (
            []
            if not st
            else [
                f"### 1. `ctr run --rm` hello ({s['runs']} runs each; median (min-max))",
                "",
                *table(
                    [
                        "runtime",
                        "end to end",
                        "ok runs",
                        "shim span (`start` exec → `delete` exit)",
                        "`start` process",
                        "`delete` process",
                        "ctr exec → `start` exec",
                        "`delete` exit → ctr exit",
                    ],
                    rows,
                ),
                "",
            ]
        )
        py = r.get("python")
        if py:
            first = "failed: " + py["first_error"] if py["first"] is None else ms(py["first"])
            compiled = "compiles" if py["compiled_on_first"] else "NO new compile cache entry"
            x = ratio(median(py["later"]), median(py["hello"]))
            lines += [
                f"### 2. Large module: CPython for WASI ({PYTHON}, 26 MB module), one-line script",
                "",
                f"- first start ({compiled}): {first}",
                f"- later starts: {spread(py['later'])}; hello starts interleaved with them: "
                f"{spread(py['hello'])}; ratio {fmt_ratio(x)}",
                f"- compile cache entry: {py['cache_entry_bytes'] / 1e6:.0f} MB",
                "",
            ]
        tp = r.get("throughput")
        if tp:
            rows = [
                [
                    n,
                    str(t["tasks"]),
                    str(t["ok"]),
                    f"{t['seconds']:.1f} s",
                    f"{t['per_second']:.1f}",
                ]
                for n, t in tp.items()
            ]
            lines += [
                f"### 3. Throughput: `ctr run --rm` hello, {s['parallel']} in parallel"
                " (blocks ABBA)",
                "",
                *table(["runtime", "tasks", "ok", "wall", "tasks/s"], rows),
                "",
            ]
        dn = r.get("density")
        if dn:
            rows = []
            for n, d in dn.items():
                parts = ", ".join(
                    f"{k} {v['count']}× = {v['kb'] / 1024:.1f} MB" for k, v in d["parts"].items()
                )
                rows.append(
                    [
                        n,
                        str(d["containers"]),
                        f"{d['total_kb'] / 1024:.1f} MB",
                        f"{d['per_container_kb'] / 1024:.2f} MB",
                        parts,
                    ]
                )
            lines += [
                "### 4. Density: idle containers (pywasm: sleep guest; runc: busybox sleep)",
                "",
                *table(["runtime", "containers", "sum of PSS", "per container", "processes"], rows),
                "",
            ]
        cpu = r.get("cpu")
        if cpu:
            rows = [
                [n, spread(cpu[n]["guest"], 1.0, "s"), spread(cpu[n]["wall"], 1.0, "s")]
                for n in RUNTIMES
            ]
            lines += [
                f"### 5. Guest speed: cpuhash.c, {cpu['rounds']} rounds"
                f" ({s['cpu_runs']} runs each)",
                "",
                *table(["runtime", "compute time (in guest)", "ctr run wall"], rows),
                "",
                f"Both builds printed the same digest: {'yes' if cpu['same_result'] else 'NO'}."
                " native/wasm by the fastest run of each (least disturbed by other load): "
                + fmt_ratio(
                    ratio(
                        min(cpu["runc"]["guest"], default=nan),
                        min(cpu["pywasm"]["guest"], default=nan),
                    )
                ),
                "",
            ]
        lines += bench_scale.report_lines(r)
        if r.get("breakdown"):
            lines += _breakdown_lines(version, r["breakdown"])
        fails = [(k, v) for k, v in r.get("failures", {}).items()]
        fails += [(k, v) for k, v in r.get("breakdown", {}).get("failures", {}).items()]
        if fails:
            lines += ["Failed runs (not counted):", ""]
            for k, v in fails:
                lines += [f"- {k}: {e}" for e in v[:3]]
                if len(v) > 3:
                    lines.append(f"- {k}: {len(v) - 3} more")
            lines.append("")
        if r.get("zygote_restarts"):
            lines += [
                f"The benchmark's zygote was restarted {r['zygote_restarts']} time(s) "
                "(pywasmd's files changed during the run).",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


def write_chart(results: Json, path: Path) -> Path | None:
    try:
        from integration.bench_chart import start_latency_chart
    except ImportError:
        return None
    return start_latency_chart(results, path)


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="quick check; writes nothing")
    parser.add_argument("--runs", type=int, help="start-latency runs of each kind (default 20)")
    parser.add_argument("--versions", nargs="+", default=list(VERSIONS), choices=VERSIONS)
    parser.add_argument(
        "--out", type=Path, help="the report (default: BENCHMARKS.md unless --only)"
    )
    parser.add_argument(
        "--only",
        choices=PARTS,
        help="one part: ctr (targets 1-5), http (6), density200, clang or functions (issue 17;"
        f" integration/bench_scale.py); default: {', '.join(DEFAULT_PARTS)}",
    )
    parser.add_argument(
        "--report-only", action="store_true", help=f"rewrite the report from {RESULTS}"
    )
    args = parser.parse_args(argv)
    if args.report_only:
        results = json.loads(RESULTS.read_text())
    else:
        s = Settings.smoke() if args.smoke else Settings.full(args.versions)
        if args.runs:
            s = Settings(**{**s.__dict__, "runs": args.runs})
        http = bench_http.HttpSettings.smoke() if args.smoke else bench_http.HttpSettings.full()
        default = ("ctr", "http") if args.smoke else DEFAULT_PARTS
        results = run_all(s, (args.only,) if args.only else default, http, smoke=args.smoke)
    text = report(results, None)
    print(text, flush=True)
    if args.smoke:
        return 0 if _complete(results) else 1
    if args.only and not args.report_only:
        part = RESULTS.with_name(f"results-{args.only}.json")
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_text(json.dumps(results, indent=1))
        print(f"wrote {part}")
        if args.out is not None:
            # No chart: the start-latency chart belongs to the full run's figures.
            args.out.write_text(report(results, None))
            print(f"wrote {args.out}")
        return 0 if _complete(results) else 1
    args.out = args.out or REPO / "BENCHMARKS.md"
    if not args.report_only:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1))
    chart = write_chart(results, CHART)
    args.out.write_text(report(results, chart))
    print(
        f"wrote {args.out}" + (f" and {chart}" if chart else " (no chart: pip install matplotlib)")
    )
    return 0 if _complete(results) else 1


def _complete(results: Json) -> bool:
    """Every target has figures for both runtimes."""
    if "http" in results and not bench_http.complete(results["http"]):
        return False
    for r in results["versions"].values():
        if not bench_scale.complete(r):
            return False
        if "start" not in r:  # only issue 17's scale parts ran
            continue
        if not all(r["start"][n] for n in RUNTIMES) or not all(r["spans"][n] for n in RUNTIMES):
            return False
        if not all(r["cpu"][n]["guest"] for n in RUNTIMES):
            return False
        if not all(r["throughput"][n]["ok"] for n in RUNTIMES):
            return False
    return True


def run_all(
    s: Settings,
    parts: Sequence[str] = ("ctr", "http"),
    http: bench_http.HttpSettings | None = None,
    smoke: bool = False,
) -> Json:
    t0 = time.monotonic()
    results: Json = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "settings": s.__dict__ | {"versions": list(s.versions)},
        "load_before": loadavg(),
        "versions": {},
    }
    if "ctr" in parts:
        ARCHIVES.update(archives(with_python=bool(s.python_runs)))
    for i, version in enumerate(s.versions if "ctr" in parts else ()):
        print(f"containerd {version} ...", flush=True)
        results["versions"][version] = bench_version(
            version, s, flip=bool(i % 2), log=lambda m: print(m, flush=True)
        )
    scale = [p for p in SCALE_PARTS if p in parts]
    for version in s.versions if scale else ():
        print(f"containerd {version}: {', '.join(scale)} ...", flush=True)
        counts = (200,) if "ctr" in parts else (20, 200)
        found = bench_scale.measure(
            version, scale, lambda m: print(m, flush=True), smoke=smoke, counts=counts
        )
        results["versions"].setdefault(version, {}).update(found)
    if "http" in parts:
        print("http (Docker 28 -p, containerd 2.1) ...", flush=True)
        results["http"] = bench_http.measure(http or bench_http.HttpSettings.full())
    results["load_after"] = loadavg()
    results["seconds"] = time.monotonic() - t0
    return results


if __name__ == "__main__":
    sys.exit(main())
