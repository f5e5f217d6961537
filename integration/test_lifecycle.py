"""The life of a Wasm container through real containerd 1.6 and 2.1, driven by ctr.

Every test runs once per containerd version (ids ctrd1.6 / ctrd2.1) and is followed by a leak
check (conftest.no_leaks): no task, container, shim process, mount or stale socket left.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from integration import images
from integration.containerd import (
    HOST_SENTINEL,
    Background,
    Containerd,
    new_id,
    run,
    run_args,
    task_status,
)

PYWASM = "io.containerd.pywasm.v1"
RUNC = "io.containerd.runc.v2"
MIB = 1024 * 1024
PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyz\n"


def pattern(n: int) -> bytes:
    """What integration/guests/bigout.c writes: PATTERN repeated, cut to n bytes."""
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


def explain(r: subprocess.CompletedProcess[Any]) -> str:
    out, err = r.stdout, r.stderr
    return f"exit {r.returncode}\nstdout: {out!r:.2000}\nstderr: {err!r:.2000}"


def wait_status(ctrd: Containerd, cid: str, want: str, timeout: float = 20) -> str | None:
    deadline = time.monotonic() + timeout
    status = task_status(ctrd, cid)
    while status != want and time.monotonic() < deadline:
        time.sleep(0.1)
        status = task_status(ctrd, cid)
    return status


def exit_code_from_rm(stderr: str) -> int:
    """`ctr task rm` warns "task X exit with non-zero exit code N"; silence means 0."""
    m = re.search(r"exit with non-zero exit code (\d+)", stderr)
    return int(m.group(1)) if m else 0


def remove(ctrd: Containerd, cid: str) -> None:
    """Best-effort removal of a detached container after a failed assertion."""
    if task_status(ctrd, cid) is not None:
        ctrd.ctr("tasks", "kill", "-s", "SIGKILL", cid, timeout=20)
        wait_status(ctrd, cid, "STOPPED", timeout=10)
        ctrd.ctr("tasks", "rm", "-f", cid, timeout=20)
    ctrd.ctr("containers", "rm", cid, timeout=20)


# --- the environment itself -------------------------------------------------------------------


def test_runc_busybox_echo(containerd: Containerd) -> None:
    """runc on the same containerd works: proves the environment, not the shim."""
    r = run(containerd, images.BUSYBOX, new_id("runc"), "echo", "hi", runtime=RUNC)
    assert r.returncode == 0, explain(r)
    assert r.stdout == "hi\n"


def test_runc_busybox_stdin(containerd: Containerd) -> None:
    """The harness's stdin path (`run(..., input=...)`) works with runc."""
    r = run(containerd, images.BUSYBOX, new_id("runc"), "cat", runtime=RUNC, input="hi\n")
    assert r.returncode == 0, explain(r)
    assert r.stdout == "hi\n"


# --- output, arguments, environment, exit codes -----------------------------------------------


def test_hello_args_and_env(containerd: Containerd) -> None:
    r = run(
        containerd,
        images.ref("hello"),
        new_id("hello"),
        images.module("hello"),
        "arg1",
        "two words",
        extra=["--env", "GREETING=x"],
    )
    assert r.returncode == 0, explain(r)
    assert r.stdout == "hello from wasm\narg1\ntwo words\nGREETING=x\n", explain(r)


def test_args_without_the_module_keep_the_images_entrypoint(containerd: Containerd) -> None:
    # `ctr run IMAGE ID a b` replaces the image's entrypoint with `a b`; pywasm puts the
    # image's Wasm entrypoint back in front when `a` is not a module of the image.
    r = run(containerd, images.ref("hello"), new_id("entry"), "arg1", "arg2")
    assert r.returncode == 0, explain(r)
    assert r.stdout == "hello from wasm\narg1\narg2\n", explain(r)


def test_terminal_output_and_exit_code(containerd: Containerd) -> None:
    # ctr -t needs a terminal of its own: script(1) gives it one.
    cmd = " ".join(
        [
            *containerd.ctr_argv("run"),
            "--rm",
            "-t",
            "--runtime",
            "io.containerd.pywasm.v1",
            "--platform",
            "wasi/wasm",
            images.ref("exitcode"),
            new_id("tty"),
            images.module("exitcode"),
            "5",
        ]
    )
    r = subprocess.run(
        ["script", "-qec", cmd, "/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=containerd.env,
    )
    assert r.returncode == 5, explain(r)


def test_hello_without_env(containerd: Containerd) -> None:
    r = run(containerd, images.ref("hello"), new_id("hello"))
    assert r.returncode == 0, explain(r)
    assert r.stdout == "hello from wasm\n", explain(r)


def test_env_is_exactly_the_containers(containerd: Containerd) -> None:
    r = run(containerd, images.ref("env"), new_id("env"), extra=["--env", "A=1", "--env", "B=two"])
    assert r.returncode == 0, explain(r)
    lines = r.stdout.splitlines()
    assert "A=1" in lines, explain(r)
    assert "B=two" in lines, explain(r)
    assert not [line for line in lines if line.startswith(HOST_SENTINEL)], (
        "the host's environment leaked into the guest\n" + explain(r)
    )


@pytest.mark.parametrize("code", [0, 3])
def test_exit_code(containerd: Containerd, code: int) -> None:
    r = run(
        containerd, images.ref("exitcode"), new_id("exit"), images.module("exitcode"), str(code)
    )
    assert r.returncode == code, explain(r)


def test_stdout_and_stderr_complete(containerd: Containerd) -> None:
    n, m = MIB, MIB
    args = images.module("bigout"), str(n), str(m)
    r = run(containerd, images.ref("bigout"), new_id("big"), *args, text=False)
    assert r.returncode == 0, explain(r)
    assert len(r.stdout) == n, f"stdout has {len(r.stdout)} bytes, want {n}"
    assert len(r.stderr) == m, f"stderr has {len(r.stderr)} bytes, want {m}"
    want = hashlib.sha256(pattern(n)).hexdigest()
    assert hashlib.sha256(r.stdout).hexdigest() == want, "stdout differs from the pattern"
    assert hashlib.sha256(r.stderr).hexdigest() == want, "stderr differs from the pattern"


def test_stdin_to_stdout(containerd: Containerd) -> None:
    r = run(containerd, images.ref("cat"), new_id("cat"), input="hi\n")
    assert r.returncode == 0, explain(r)
    assert r.stdout == "hi\n", explain(r)


def test_stdin_large(containerd: Containerd) -> None:
    data = pattern(512 * 1024)
    r = run(containerd, images.ref("cat"), new_id("cat"), input=data, text=False)
    assert r.returncode == 0, explain(r)
    assert len(r.stdout) == len(data)
    assert r.stdout == data


# --- signals ----------------------------------------------------------------------------------


def _kill_foreground(containerd: Containerd, guest: str, ready: str, sig: str, code: int) -> None:
    """`ctr run --rm GUEST` in the background; once it printed `ready`, `ctr task kill -s SIG`;
    `ctr run` must then end with `code`."""
    cid = new_id(guest)
    argv = run_args(images.ref(guest), cid, runtime=PYWASM)
    with Background(containerd, *argv, stdin_pipe=guest == "readstdin") as bg:
        assert bg.wait_for(ready, timeout=30), f"never saw {ready!r}\n{bg.stdout}\n{bg.stderr}"
        assert wait_status(containerd, cid, "RUNNING") == "RUNNING"
        k = containerd.ctr("tasks", "kill", "-s", sig, cid, timeout=20)
        assert k.returncode == 0, explain(k)
        got = bg.wait(timeout=20)
        assert got == code, f"ctr run exited {got}, want {code}\n{bg.stdout}\n{bg.stderr}"


@pytest.mark.parametrize(("sig", "code"), [("SIGKILL", 137), ("SIGTERM", 143)])
def test_kill_sleeping_guest(containerd: Containerd, sig: str, code: int) -> None:
    _kill_foreground(containerd, "sleep", "sleeping", sig, code)


@pytest.mark.parametrize(("sig", "code"), [("SIGKILL", 137), ("SIGTERM", 143)])
def test_kill_looping_guest(containerd: Containerd, sig: str, code: int) -> None:
    _kill_foreground(containerd, "loop", "looping", sig, code)


@pytest.mark.parametrize(("sig", "code"), [("SIGKILL", 137), ("SIGTERM", 143)])
def test_kill_guest_blocked_on_stdin(containerd: Containerd, sig: str, code: int) -> None:
    _kill_foreground(containerd, "readstdin", "reading", sig, code)


@pytest.mark.parametrize(("sig", "code"), [("SIGKILL", 137), ("SIGTERM", 143)])
def test_kill_detached(containerd: Containerd, sig: str, code: int) -> None:
    """`ctr run -d`, `ctr task kill`, wait for STOPPED, `ctr task rm` reports the status."""
    cid = new_id("killd")
    r = containerd.ctr(*run_args(images.ref("sleep"), cid, rm=False, detach=True), timeout=60)
    try:
        assert r.returncode == 0, explain(r)
        assert wait_status(containerd, cid, "RUNNING") == "RUNNING"
        k = containerd.ctr("tasks", "kill", "-s", sig, cid, timeout=20)
        assert k.returncode == 0, explain(k)
        assert wait_status(containerd, cid, "STOPPED") == "STOPPED"
        rm = containerd.ctr("tasks", "rm", cid, timeout=20)
        assert rm.returncode == 0, explain(rm)
        assert exit_code_from_rm(rm.stderr) == code, explain(rm)
        c = containerd.ctr("containers", "rm", cid, timeout=20)
        assert c.returncode == 0, explain(c)
    finally:
        remove(containerd, cid)


# --- the detached life cycle ------------------------------------------------------------------


def test_detached_ls_ps_kill_rm(containerd: Containerd) -> None:
    cid = new_id("detached")
    r = containerd.ctr(*run_args(images.ref("sleep"), cid, rm=False, detach=True), timeout=60)
    try:
        assert r.returncode == 0, explain(r)
        assert wait_status(containerd, cid, "RUNNING") == "RUNNING"
        ls = containerd.ctr("tasks", "ls", timeout=20)
        row = [line.split() for line in ls.stdout.splitlines() if line.split()[:1] == [cid]]
        assert row, explain(ls)
        pid = int(row[0][1])
        assert pid > 0, explain(ls)
        ps = containerd.ctr("tasks", "ps", cid, timeout=20)
        assert ps.returncode == 0, explain(ps)
        ps_pids = [int(line.split()[0]) for line in ps.stdout.splitlines()[1:] if line.strip()]
        assert ps_pids, explain(ps)
        for p in ps_pids:
            assert p > 0, explain(ps)
        assert pid in ps_pids, f"task ls says pid {pid}, task ps says {ps_pids}"
        with open(f"/proc/{pid}/stat") as f:
            assert f.read(), f"pid {pid} does not exist"
        k = containerd.ctr("tasks", "kill", cid, timeout=20)
        assert k.returncode == 0, explain(k)
        assert wait_status(containerd, cid, "STOPPED") == "STOPPED"
        rm = containerd.ctr("tasks", "rm", cid, timeout=20)
        assert rm.returncode == 0, explain(rm)
        assert task_status(containerd, cid) is None
        c = containerd.ctr("containers", "rm", cid, timeout=20)
        assert c.returncode == 0, explain(c)
        assert cid not in containerd.ctr("containers", "ls", "-q").stdout.split()
    finally:
        remove(containerd, cid)


def test_twenty_sequential_runs(containerd: Containerd) -> None:
    for i in range(20):
        r = run(containerd, images.ref("hello"), new_id("seq"), images.module("hello"), str(i))
        assert r.returncode == 0, f"run {i}: " + explain(r)
        assert r.stdout == f"hello from wasm\n{i}\n", f"run {i}: " + explain(r)
    # conftest.no_leaks checks shims, mounts and sockets once the test returns.


# --- events -----------------------------------------------------------------------------------


def _events_ready(containerd: Containerd, events: Background) -> None:
    """Make sure `ctr events` is subscribed: cause an event and wait until it shows."""
    deadline = time.monotonic() + 20
    n = 0
    while time.monotonic() < deadline:
        n += 1
        containerd.ctr("namespaces", "label", "default", f"pywasmd-it-probe={n}", timeout=20)
        if events.wait_for(f'"pywasmd-it-probe":"{n}"', timeout=0.5):
            return
    raise AssertionError(f"ctr events never showed an event\n{events.stdout}\n{events.stderr}")


def test_events_in_order(containerd: Containerd) -> None:
    cid = new_id("events")
    with Background(containerd, "events") as events:
        _events_ready(containerd, events)
        r = run(containerd, images.ref("hello"), cid)
        assert r.returncode == 0, explain(r)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "/tasks/delete" not in _task_topics(
            events.stdout, cid
        ):
            time.sleep(0.1)
        time.sleep(0.3)  # anything that would come after /tasks/delete
        topics = _task_topics(events.stdout, cid)
    want = ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    assert topics == want, f"events for {cid}: {topics}\n{events.stdout}"


def _task_topics(text: str, cid: str) -> list[str]:
    """/tasks/* topics of container `cid`, in the order `ctr events` printed them."""
    topics = []
    for line in text.splitlines():
        m = re.match(r".*? UTC (\S+) (/tasks/\S+) (\{.*\})$", line)
        if not m:
            continue
        try:
            event = json.loads(m.group(3))
        except ValueError:
            continue
        if event.get("container_id") == cid:
            topics.append(m.group(2))
    return topics


# --- files: the rootfs and bind mounts as WASI preopens ---------------------------------------


def _fs(containerd: Containerd, *args: str, extra: Sequence[str] = ()) -> Any:
    """Run the fs guest: `fs read PATH`, `fs write PATH TEXT`, `fs ls DIR`."""
    argv = images.module("fs"), *args
    return run(containerd, images.ref("fs"), new_id("fs"), *argv, extra=extra)


def test_rootfs_is_the_guests_root(containerd: Containerd) -> None:
    r = _fs(containerd, "ls", "/")
    assert r.returncode == 0, explain(r)
    assert images.module("fs").lstrip("/") in r.stdout.splitlines(), explain(r)


def test_rootfs_writable_unless_read_only(containerd: Containerd) -> None:
    r = _fs(containerd, "write", "/scratch.txt", "x")
    assert r.returncode == 0, explain(r)
    r = _fs(containerd, "write", "/scratch.txt", "x", extra=["--read-only"])
    assert r.returncode == 1, explain(r)
    assert "error: write /scratch.txt" in r.stderr, explain(r)


def test_bind_mount_read_write(containerd: Containerd, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from host\n")
    mount = ["--mount", f"type=bind,src={tmp_path},dst=/data,options=rbind:rw"]
    r = _fs(containerd, "read", "/data/in.txt", extra=mount)
    assert r.returncode == 0, explain(r)
    assert r.stdout == "from host\n", explain(r)
    r = _fs(containerd, "write", "/data/out.txt", "from guest", extra=mount)
    assert r.returncode == 0, explain(r)
    assert (tmp_path / "out.txt").read_text() == "from guest"


def test_bind_mount_read_only(containerd: Containerd, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from host\n")
    mount = ["--mount", f"type=bind,src={tmp_path},dst=/data,options=rbind:ro"]
    r = _fs(containerd, "read", "/data/in.txt", extra=mount)
    assert r.returncode == 0, explain(r)
    assert r.stdout == "from host\n", explain(r)
    r = _fs(containerd, "write", "/data/out.txt", "from guest", extra=mount)
    assert r.returncode == 1, explain(r)
    assert "error: write /data/out.txt" in r.stderr, explain(r)
    assert not (tmp_path / "out.txt").exists()


# --- bad input --------------------------------------------------------------------------------


def test_trap_is_134(containerd: Containerd) -> None:
    r = run(containerd, images.ref("trap"), new_id("trap"))
    assert r.returncode == 134, explain(r)
    assert r.stdout == "about to trap\n", explain(r)
    assert r.stderr.strip(), "a trap should explain itself on stderr\n" + explain(r)


def test_entrypoint_not_wasm(containerd: Containerd) -> None:
    r = run(containerd, images.BADWASM, new_id("bad"))
    assert r.returncode != 0, explain(r)
    out = r.stdout + r.stderr
    assert images.BADWASM_PATH in out, "the error should name the module path\n" + explain(r)
