"""Linux containers inside the pywasm shim: the path a pod's pause container and sidecars take.

A container whose entrypoint is a Linux program (ELF or #! script), run with the pywasm runtime,
is handed to runc by the shim: real namespaces, real cgroup, real pids. Driven through ctr on
containerd 1.6 and 2.1 here; test_cri.py drives the same path through CRI.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from integration import images
from integration.containerd import Containerd, new_id, run_args, task_status
from integration.probes import (
    EventLog,
    alive,
    cmdline,
    parent_of,
    task_pid,
    wait_gone,
)
from integration.test_lifecycle import exit_code_from_rm, explain, remove, wait_status

PYWASM = "io.containerd.pywasm.v1"
RUNC_STATE = Path("/run/pywasm/runc/default")
LINUX = "linux/amd64"


def _shim_log(ctrd: Containerd, since: int) -> str:
    return "\n".join(
        line
        for line in ctrd.log_since(since).splitlines()
        if "runtime=io.containerd.pywasm.v1" in line
    )


def _runc_state(cid: str) -> bool:
    return (RUNC_STATE / cid).exists()


def _linux(ctrd: Containerd, cid: str, *args: str, detach: bool = False, group: str = "") -> None:
    extra = ("--annotation", f"pywasm.io/group={group}") if group else ()
    argv = run_args(
        images.BUSYBOX,
        cid,
        *args,
        runtime=PYWASM,
        platform=LINUX,
        rm=not detach,
        detach=detach,
        extra=extra,
    )
    r = ctrd.ctr(*argv, timeout=60)
    assert r.returncode == 0, f"ctr {' '.join(argv)}\n" + explain(r)


def test_linux_program_runs_on_runc(containerd: Containerd) -> None:
    """Output, exit code, and a log line naming the path taken."""
    since = containerd.log_size()
    cid = new_id("linux")
    argv = run_args(
        images.BUSYBOX,
        cid,
        "sh",
        "-c",
        "echo out; echo err >&2; cat /proc/1/cmdline | tr '\\0' ' '; exit 3",
        runtime=PYWASM,
        platform=LINUX,
    )
    r = containerd.ctr(*argv, timeout=60)
    assert r.returncode == 3, explain(r)
    # PID 1 is the program itself: runc gave it a pid namespace of its own.
    assert (
        r.stdout == "out\nsh -c echo out; echo err >&2; cat /proc/1/cmdline | tr '\\0' ' '; exit 3 "
    ), explain(r)
    assert r.stderr == "err\n", explain(r)
    log = _shim_log(containerd, since)
    assert f"{cid}: sh is a Linux program: handing it to runc" in log, log
    assert not _runc_state(cid), f"runc still has state for {cid}"


def test_linux_detached_lifecycle(containerd: Containerd) -> None:
    """ps, metrics, pause/resume, SIGTERM reaching a trap, rm: as with runc."""
    cid = new_id("linux-d")
    script = "trap 'echo got term; exit 7' TERM; echo ready; while true; do sleep 0.1; done"
    try:
        _linux(containerd, cid, "sh", "-c", script, detach=True)
        assert wait_status(containerd, cid, "RUNNING") == "RUNNING"
        init = task_pid(containerd, cid)
        assert init > 0
        assert alive(init)
        assert cmdline(parent_of(init)).startswith("containerd-shim-pywasm-v1"), (
            "the init of a Linux container should be the pywasm shim's child (subreaper)"
        )
        ps = containerd.ctr("tasks", "ps", cid, timeout=20)
        assert ps.returncode == 0, explain(ps)
        pids = [int(line.split()[0]) for line in ps.stdout.splitlines()[1:] if line.strip()]
        assert init in pids, ps.stdout
        assert len(pids) >= 2, f"expected sh and its sleep: {ps.stdout}"
        metrics = containerd.ctr("tasks", "metrics", cid, timeout=20)
        assert metrics.returncode == 0, explain(metrics)
        usage = [
            line.split()[1]
            for line in metrics.stdout.splitlines()
            if line.startswith(("memory.usage_in_bytes", "memory.usage"))
        ]
        assert usage, metrics.stdout
        assert int(usage[0]) > 0, metrics.stdout
        assert containerd.ctr("tasks", "pause", cid, timeout=20).returncode == 0
        assert task_status(containerd, cid) == "PAUSED"
        assert containerd.ctr("tasks", "resume", cid, timeout=20).returncode == 0
        assert task_status(containerd, cid) == "RUNNING"
        k = containerd.ctr("tasks", "kill", cid, timeout=20)
        assert k.returncode == 0, explain(k)
        assert wait_status(containerd, cid, "STOPPED") == "STOPPED"
        rm = containerd.ctr("tasks", "rm", cid, timeout=20)
        assert rm.returncode == 0, explain(rm)
        assert exit_code_from_rm(rm.stderr) == 7, explain(rm)
        assert not _runc_state(cid), f"runc still has state for {cid}"
    finally:
        remove(containerd, cid)


def test_wasm_and_linux_in_one_shim(containerd: Containerd) -> None:
    """A grouped shim serves both kinds at once and leaves when the last one is gone."""
    group = new_id("mixed")
    wasm, linux = new_id("mixed-wasm"), new_id("mixed-linux")
    try:
        argv = run_args(
            images.ref("sleep"),
            wasm,
            rm=False,
            detach=True,
            extra=("--annotation", f"pywasm.io/group={group}"),
        )
        r = containerd.ctr(*argv, timeout=60)
        assert r.returncode == 0, explain(r)
        _linux(containerd, linux, "sleep", "1000", detach=True, group=group)
        assert wait_status(containerd, wasm, "RUNNING") == "RUNNING"
        assert wait_status(containerd, linux, "RUNNING") == "RUNNING"
        shims = {parent_of(task_pid(containerd, wasm)), parent_of(task_pid(containerd, linux))}
        assert len(shims) == 1, f"two shims for one group: {shims}"
        (shim,) = shims
        for cid in (wasm, linux):
            assert containerd.ctr("tasks", "kill", "-s", "SIGKILL", cid, timeout=20).returncode == 0
            assert wait_status(containerd, cid, "STOPPED") == "STOPPED"
            rm = containerd.ctr("tasks", "rm", cid, timeout=20)
            assert exit_code_from_rm(rm.stderr) == 137, explain(rm)
            assert containerd.ctr("containers", "rm", cid, timeout=20).returncode == 0
        assert wait_gone(shim, 10), "the shim outlived its last container"
    finally:
        remove(containerd, wasm)
        remove(containerd, linux)


def test_shim_killed_under_a_linux_container(containerd: Containerd) -> None:
    """containerd's `delete` runs `runc delete --force`: the container's processes die too."""
    cid = new_id("linux-orphan")
    try:
        _linux(containerd, cid, "sleep", "1000", detach=True)
        assert wait_status(containerd, cid, "RUNNING") == "RUNNING"
        init = task_pid(containerd, cid)
        shim = parent_of(init)
        with EventLog(containerd) as events:
            events.ready()
            os.kill(shim, signal.SIGKILL)
            exit_event = events.wait_for(cid, "/tasks/exit", timeout=20)
        assert exit_event is not None, f"no /tasks/exit for {cid}"
        assert wait_gone(init, 10), f"container init {init} outlived the shim and its delete"
        assert not _runc_state(cid), f"runc still has state for {cid}"
        deadline = time.monotonic() + 10
        while task_status(containerd, cid) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [m for m in containerd.mounts() if cid in m]
        assert not left, f"rootfs still mounted: {left}"
    finally:
        remove(containerd, cid)


def test_missing_program_is_named(containerd: Containerd) -> None:
    cid = new_id("linux-missing")
    argv = run_args(images.BUSYBOX, cid, "/no/such/program", runtime=PYWASM, platform=LINUX)
    r = containerd.ctr(*argv, timeout=60)
    assert r.returncode != 0, explain(r)
    assert "/no/such/program" in r.stderr, explain(r)
    assert "not found" in r.stderr, explain(r)
