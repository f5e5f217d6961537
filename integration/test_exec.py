"""`ctr task exec` into Wasm and Linux containers of the pywasm shim (containerd 1.6 and 2.1).

In a Wasm container an exec is another guest with the container's grants and limits, in a
worker process of its own; in a Linux container (the runc path) it is `runc exec`.
"""

from __future__ import annotations

import time

from integration import images
from integration.containerd import Containerd, new_id, run_args
from integration.probes import EventLog, alive, wait_gone
from integration.test_lifecycle import explain, remove, wait_status

PYWASM = "io.containerd.pywasm.v1"


def _start(ctrd: Containerd, cid: str, linux: bool = False) -> None:
    if linux:
        argv = run_args(images.BUSYBOX, cid, "sleep", "1000", runtime=PYWASM,
                        platform="linux/amd64", rm=False, detach=True)  # fmt: skip
    else:
        argv = run_args(images.ref("sleep"), cid, rm=False, detach=True)
    r = ctrd.ctr(*argv, timeout=60)
    assert r.returncode == 0, explain(r)
    assert wait_status(ctrd, cid, "RUNNING") == "RUNNING"


def _pids(ctrd: Containerd, cid: str) -> list[int]:
    r = ctrd.ctr("tasks", "ps", cid, timeout=20)
    assert r.returncode == 0, explain(r)
    return [int(line.split()[0]) for line in r.stdout.splitlines()[1:] if line.strip()]


def test_exec_a_wasm_guest(containerd: Containerd) -> None:
    cid = new_id("exec-wasm")
    try:
        _start(containerd, cid)
        r = containerd.ctr("tasks", "exec", "--exec-id", "once", cid, "/sleep.wasm", "0")
        assert r.returncode == 0, explain(r)
        assert r.stdout == "sleeping 0\nslept\n", explain(r)
        # The same exec id can be used again once the first is gone.
        r = containerd.ctr("tasks", "exec", "--exec-id", "once", cid, "/sleep.wasm", "0")
        assert r.returncode == 0, explain(r)
        bad = containerd.ctr("tasks", "exec", "--exec-id", "bad", cid, "/missing.wasm")
        assert bad.returncode != 0, explain(bad)
        assert "/missing.wasm" in bad.stderr, explain(bad)
        assert "not found" in bad.stderr, explain(bad)
        assert _pids(containerd, cid) == _pids(containerd, cid)[:1], "a failed exec left a process"
    finally:
        remove(containerd, cid)


def test_kill_a_running_exec(containerd: Containerd) -> None:
    cid = new_id("exec-kill")
    try:
        _start(containerd, cid)
        with EventLog(containerd) as events:
            events.ready()
            r = containerd.ctr("tasks", "exec", "--detach", "--exec-id", "long", cid,
                               "/sleep.wasm", "1000")  # fmt: skip
            assert r.returncode == 0, explain(r)
            started = events.wait_for(cid, "/tasks/exec-started")
            assert started is not None, events.events(cid)
            worker = int(started["pid"])
            assert worker in _pids(containerd, cid)
            k = containerd.ctr("tasks", "kill", "--exec-id", "long", "-s", "SIGKILL", cid)
            assert k.returncode == 0, explain(k)
            deadline = time.monotonic() + 20
            exits: list[dict[str, object]] = []
            while not exits and time.monotonic() < deadline:
                exits = [
                    e for t, e in events.events(cid) if t == "/tasks/exit" and e.get("id") == "long"
                ]
                time.sleep(0.1)
            assert exits, events.events(cid)
            assert exits[0]["exit_status"] == 137, exits
        assert wait_gone(worker, 5)
        assert wait_status(containerd, cid, "RUNNING") == "RUNNING", "the container went too"
    finally:
        remove(containerd, cid)


def test_execs_end_with_the_container(containerd: Containerd) -> None:
    cid = new_id("exec-end")
    try:
        _start(containerd, cid)
        r = containerd.ctr("tasks", "exec", "--detach", "--exec-id", "bg", cid,
                           "/sleep.wasm", "1000")  # fmt: skip
        assert r.returncode == 0, explain(r)
        extra = _pids(containerd, cid)[1:]
        assert len(extra) == 1, extra
        assert containerd.ctr("tasks", "kill", "-s", "SIGKILL", cid).returncode == 0
        assert wait_status(containerd, cid, "STOPPED") == "STOPPED"
        assert wait_gone(extra[0], 5), "an exec'd guest outlived its container"
    finally:
        remove(containerd, cid)


def test_exec_in_a_linux_container(containerd: Containerd) -> None:
    cid = new_id("exec-linux")
    try:
        _start(containerd, cid, linux=True)
        r = containerd.ctr("tasks", "exec", "--exec-id", "sh", cid,
                           "sh", "-c", "echo from exec; cat /proc/1/cmdline; exit 4")  # fmt: skip
        assert r.returncode == 4, explain(r)
        # PID 1 of the exec's view is the container's init: it joined the container.
        assert r.stdout == "from exec\nsleep\x001000\x00", explain(r)
        r = containerd.ctr("tasks", "exec", "--detach", "--exec-id", "bg", cid, "sleep", "500")
        assert r.returncode == 0, explain(r)
        pids = _pids(containerd, cid)
        assert len(pids) == 2, pids
        assert all(alive(p) for p in pids)
    finally:
        remove(containerd, cid)
