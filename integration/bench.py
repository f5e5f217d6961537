"""pywasm vs runc on the same containerd, in one run: `python -m integration.bench` (make bench).

For each containerd (1.6 and 2.1, private instances) it interleaves N `ctr run --rm` of the
pw-hello Wasm guest through io.containerd.pywasm.v1 with N `ctr run --rm` of busybox
`echo hi` through io.containerd.runc.v2, measures wall time end to end (ctr start to ctr exit),
prints medians and p90s, and writes BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from integration import images
from integration.containerd import VERSIONS, Containerd, run

REPO = Path(__file__).resolve().parent.parent
PYWASM = "io.containerd.pywasm.v1"
RUNC = "io.containerd.runc.v2"


@dataclass
class Series:
    times: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    def p90(self) -> float:
        if not self.times:
            return float("nan")
        ordered = sorted(self.times)
        return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def _one(ctrd: Containerd, runtime: str, cid: str, series: Series) -> None:
    if runtime == PYWASM:
        image, args, want = images.ref("hello"), [], "hello from wasm\n"
    else:
        image, args, want = images.BUSYBOX, ["echo", "hi"], "hi\n"
    t0 = time.perf_counter()
    r = run(ctrd, image, cid, *args, runtime=runtime, timeout=120)
    elapsed = time.perf_counter() - t0
    if r.returncode == 0 and r.stdout == want:
        series.times.append(elapsed)
    else:
        series.failures.append(f"{cid}: exit {r.returncode}: {(r.stdout + r.stderr).strip()[:300]}")


def bench(version: str, runs: int, archives: dict[str, Path]) -> tuple[dict[str, Series], str]:
    with Containerd(version, log_level="info") as ctrd:
        images.import_all(ctrd, archives)
        results = {PYWASM: Series(), RUNC: Series()}
        # One warm-up each: the first run pays one-time costs (module compile, page cache).
        _one(ctrd, PYWASM, "warm-pywasm", Series())
        _one(ctrd, RUNC, "warm-runc", Series())
        for i in range(runs):
            _one(ctrd, PYWASM, f"bench-pywasm-{i}", results[PYWASM])
            _one(ctrd, RUNC, f"bench-runc-{i}", results[RUNC])
        full = ctrd.ctr("version", timeout=20).stdout
        server = [line.split(":", 1)[1].strip() for line in full.splitlines() if "Version:" in line]
        return results, server[-1] if server else version


def _ms(x: float) -> str:
    return "n/a" if x != x else f"{x * 1000:.0f} ms"


def report(all_results: dict[str, tuple[dict[str, Series], str]], runs: int) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        "`make bench` (`python -m integration.bench`): end-to-end wall time of `ctr run --rm`",
        f"({runs} runs each, interleaved, after one warm-up each) on the same private containerd:",
        "the pw-hello Wasm guest through `io.containerd.pywasm.v1` versus busybox `echo hi`",
        "through `io.containerd.runc.v2`.",
        "",
        f"- date: {now}",
        f"- machine: {os.cpu_count()} CPUs (nproc), kernel {platform.release()}, "
        f"Python {platform.python_version()}",
        "",
        "| containerd | runtime | median | p90 | ok runs | pywasm/runc (median) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    failures = []
    for version, (results, server) in all_results.items():
        pw, rc = results[PYWASM], results[RUNC]
        ratio = pw.median() / rc.median() if pw.times and rc.times else float("nan")
        ratio_s = "n/a" if ratio != ratio else f"{ratio:.2f}"
        for name, s in ((PYWASM, pw), (RUNC, rc)):
            lines.append(
                f"| {version} ({server}) | `{name}` | {_ms(s.median())} | {_ms(s.p90())} "
                f"| {len(s.times)}/{runs} | {ratio_s if name == PYWASM else ''} |"
            )
            failures += [f"- containerd {version}, {name}: {f}" for f in s.failures[:3]]
            if len(s.failures) > 3:
                failures.append(f"- containerd {version}, {name}: {len(s.failures) - 3} more")
    if failures:
        lines += ["", "Failed runs (not counted):", "", *failures]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--versions", nargs="+", default=list(VERSIONS), choices=VERSIONS)
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    archives = images.build_archives()
    all_results = {}
    for version in args.versions:
        print(f"containerd {version}: {args.runs} + {args.runs} runs ...", flush=True)
        all_results[version] = bench(version, args.runs, archives)
    text = report(all_results, args.runs)
    print(text)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    ok = all(r.times for res, _ in all_results.values() for r in res.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
