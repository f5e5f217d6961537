"""Cgroup.add leaves a directory that already holds the pid alone (a write to cgroup.procs
can wait for an RCU grace period even when it moves nothing): the worker's first process
moves the container's pid 1 at Create, and Start's add must then cost nothing."""

import os
from pathlib import Path

from pywasmd.shim.cgroups import Cgroup


def own_v1_paths() -> dict[str, str]:
    """controller -> this process's cgroup in it, from /proc/self/cgroup."""
    found = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(","):
            if c:
                found[c] = path
    return found


def fake_v1(root: Path, rel: str) -> None:
    for controller in ("memory", "cpu", "pids"):
        (root / controller / rel.lstrip("/")).mkdir(parents=True, exist_ok=True)


def test_add_skips_the_directories_that_hold_the_pid(tmp_path: Path) -> None:
    own = own_v1_paths()
    rel = own.get("memory", "/")
    fake_v1(tmp_path, rel)
    cg = Cgroup(rel, root=str(tmp_path))
    cg.add(os.getpid())
    for controller in ("memory", "cpu", "pids"):
        procs = tmp_path / controller / rel.lstrip("/") / "cgroup.procs"
        # Held where /proc/self/cgroup names `rel` for that controller: left alone.
        assert procs.exists() == (own.get(controller) != rel), controller
    assert not (tmp_path / "memory" / rel.lstrip("/") / "cgroup.procs").exists()


def test_add_writes_a_pid_that_is_elsewhere(tmp_path: Path) -> None:
    fake_v1(tmp_path, "/pywasm-test/not-ours")
    cg = Cgroup("/pywasm-test/not-ours", root=str(tmp_path))
    cg.add(1)
    for d in cg.dirs():
        assert Path(d, "cgroup.procs").read_text() == "1"
