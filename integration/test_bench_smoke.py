"""The benchmark suite still works: `python -m integration.bench --smoke` (containerd 1.6, a few
runs of every target but the large module; the HTTP section on Docker) completes, prints the
summary table and writes nothing. No figure is checked: timings on a shared machine are not
test material."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from integration import bench

REPO = Path(__file__).resolve().parent.parent
OUTPUTS = (REPO / "BENCHMARKS.md", bench.CHART, bench.RESULTS)
TARGETS = (
    "1 start",
    "1 shim span",
    "3 throughput",
    "4 density",
    "5 guest speed",
    "6 HTTP",
    "8 CGI function",
    "8 proxy function",
)


def _stamps() -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in OUTPUTS if p.exists()}


def test_bench_smoke() -> None:
    before = _stamps()
    # Generous: the first run on a fresh machine also builds musl for the native programs.
    r = subprocess.run(
        [sys.executable, "-m", "integration.bench", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "| " + " | ".join(bench.SUMMARY_HEADER) + " |" in r.stdout, out[-4000:]
    for target in TARGETS:
        assert f"| {target}" in r.stdout, f"no row for {target}:\n{r.stdout[-4000:]}"
    assert "Failed runs" not in r.stdout, r.stdout[-4000:]
    assert _stamps() == before, "the smoke run must not write the report, chart or results"
