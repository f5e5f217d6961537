"""Faults a node goes through, against real containerd 1.6 and 2.1 (issue 8, "Faults").

containerd restarts, the shim server or a worker SIGKILLed, guests that trap, output floods,
a compile cache on a full or read-only file system, containerd's event socket gone for a
while. Every test runs once per containerd version and ends with the leak check of
conftest.no_leaks (tests that start a second, private containerd check it the same way).

Knob: PYWASMD_IT_FLOOD_MIB (default 1024, the issue's 1 GiB: about 6 s here) is the size of
the stdout flood.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration import images
from integration.conftest import _stale_sockets, find_leaks
from integration.containerd import Background, Containerd, new_id, run, run_args, task_status
from integration.probes import (
    EventLog,
    alive,
    detached,
    listing,
    sample,
    server_of,
    task_pid,
    wait_gone,
)
from integration.test_lifecycle import exit_code_from_rm, explain, remove, wait_status

MIB = 1024 * 1024
FLOOD_MIB = int(os.environ.get("PYWASMD_IT_FLOOD_MIB", "1024"))
TRAP_LINE = re.compile(r"^pywasm: guest trapped: (.+)$")


def faults(*args: str) -> tuple[str, ...]:
    """Arguments that run the faults guest (integration/guests/faults.c) in MODE."""
    return (images.module("faults"), *args)


def stop_and_rm(ctrd: Containerd, cid: str, sig: str, code: int) -> None:
    """`ctr task kill -s SIG`, wait for STOPPED, `ctr task rm` reports `code`, rm container."""
    k = ctrd.ctr("tasks", "kill", "-s", sig, cid, timeout=20)
    assert k.returncode == 0, f"kill {cid}: " + explain(k)
    assert wait_status(ctrd, cid, "STOPPED") == "STOPPED", f"{cid} did not stop after {sig}"
    rm = ctrd.ctr("tasks", "rm", cid, timeout=20)
    assert rm.returncode == 0, f"task rm {cid}: " + explain(rm)
    assert exit_code_from_rm(rm.stderr) == code, f"{cid}: " + explain(rm)
    c = ctrd.ctr("containers", "rm", cid, timeout=20)
    assert c.returncode == 0, f"containers rm {cid}: " + explain(c)


def _cleanup(ctrd: Containerd, *cids: str) -> None:
    for cid in cids:
        remove(ctrd, cid)


# --- 1. containerd restarts -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_containerd_restart_keeps_containers_running(containerd: Containerd, how: str) -> None:
    """Stop containerd by its pid (clean or crash), start it again on the same config: the
    Wasm containers run on, are RUNNING again within 5 s, and end with the right codes."""
    sleeper, looper, grouped = new_id("rs-sleep"), new_id("rs-loop"), new_id("rs-grp")
    cids = (sleeper, looper, grouped)
    try:
        detached(containerd, images.ref("sleep"), sleeper)
        detached(containerd, images.ref("loop"), looper)
        detached(containerd, images.ref("sleep"), grouped, group=new_id("g"))
        pids = {}
        for cid in cids:
            assert wait_status(containerd, cid, "RUNNING") == "RUNNING", cid
            pids[cid] = task_pid(containerd, cid)
        servers = {cid: server_of(pid) for cid, pid in pids.items()}

        down = containerd.restart(getattr(signal, how))
        back = time.monotonic()
        for cid in cids:
            status = wait_status(containerd, cid, "RUNNING", timeout=5)
            assert status == "RUNNING", (
                f"{cid} is {status} {time.monotonic() - back:.1f}s after containerd came back "
                f"(down {down:.1f}s)"
            )
            assert task_pid(containerd, cid) == pids[cid], f"{cid}: pid changed"
            assert alive(pids[cid]), f"{cid}: worker gone"
            assert alive(servers[cid]), f"{cid}: shim gone"
            ps = containerd.ctr("tasks", "ps", cid, timeout=20)
            listed = [int(line.split()[0]) for line in ps.stdout.splitlines()[1:] if line.strip()]
            assert ps.returncode == 0, f"Pids of {cid} after restart: " + explain(ps)
            assert listed, f"Pids of {cid} after restart: " + explain(ps)
        assert wait_status(containerd, sleeper, "RUNNING", timeout=2) == "RUNNING", (
            "containerd's reload dropped a container after the first check (leaked-shim cleanup?)"
        )
        stop_and_rm(containerd, sleeper, "SIGTERM", 143)
        stop_and_rm(containerd, looper, "SIGKILL", 137)
        stop_and_rm(containerd, grouped, "SIGKILL", 137)
        for cid in cids:
            assert wait_gone(servers[cid], 10), f"shim {servers[cid]} of {cid} outlived it"
    finally:
        _cleanup(containerd, *cids)


def test_containerd_restart_while_creating(containerd: Containerd) -> None:
    """containerd is stopped while a `ctr run` is in its Create: whatever the outcome for that
    container, nothing is left half-done and the next container runs."""
    cid = new_id("rs-create")
    argv = run_args(images.ref("sleep"), cid, images.module("sleep"), "1", rm=False, detach=True)
    try:
        with Background(containerd, *argv) as bg:
            time.sleep(0.15)  # ctr is unpacking / creating
            containerd.restart(signal.SIGKILL)
            bg.wait(60)
        # ctr lost containerd somewhere between Create and Start: the task may not exist, be
        # CREATED (never started: the client must delete it, as with runc), or RUNNING/STOPPED.
        status = task_status(containerd, cid)
        assert status in (None, "CREATED", "RUNNING", "STOPPED"), status
        if status is not None:
            worker = task_pid(containerd, cid)
            rm = containerd.ctr("tasks", "rm", "-f", cid, timeout=30)
            assert rm.returncode == 0, f"{cid} was {status}: " + explain(rm)
            assert not worker or wait_gone(worker, 5), f"worker {worker} outlived task rm -f"
        c = containerd.ctr("containers", "rm", cid, timeout=20)
        assert c.returncode == 0 or "not found" in c.stderr, explain(c)
        r = run(containerd, images.ref("hello"), new_id("rs-after"))
        assert r.returncode == 0, explain(r)
        assert r.stdout == "hello from wasm\n", explain(r)
    finally:
        _cleanup(containerd, cid)


def test_events_queued_while_containerd_is_down(containerd: Containerd) -> None:
    """Two containers of one shim exit while containerd is down: their /tasks/exit events are
    queued and reach containerd, in order, once it is back (issue 8, fault 7, real socket).

    A third container of the group keeps running, so the shim stays up across the restart:
    containerd 2.x deletes stopped tasks it finds at boot ("cleaning leaked shim process"),
    and a shim left with no container drains its queue at once, while containerd is still
    booting and before any `ctr events` can subscribe (the events then reach containerd, but
    no subscriber could see them)."""
    group = new_id("g")
    first, second, keeper = new_id("ev-first"), new_id("ev-second"), new_id("ev-keep")
    try:
        for cid in (first, second, keeper):
            detached(containerd, images.ref("sleep"), cid, group=group)
        for cid in (first, second, keeper):
            assert wait_status(containerd, cid, "RUNNING") == "RUNNING", cid
        workers = [task_pid(containerd, cid) for cid in (first, second, keeper)]
        assert len({server_of(w) for w in workers}) == 1, "the group shares no shim"

        def while_down() -> None:
            # The shim's publisher retries with back-off (0.25 s doubling): after 8 s down its
            # next attempt is ~15 s after the first, when ctr events below is subscribed.
            os.kill(workers[0], signal.SIGKILL)
            time.sleep(0.3)
            os.kill(workers[1], signal.SIGKILL)
            time.sleep(8)

        offset = containerd.log_size()
        containerd.restart(signal.SIGKILL, during=while_down)
        with EventLog(containerd) as log:
            log.ready()
            deadline = time.monotonic() + 40
            exits: list[str] = []
            while time.monotonic() < deadline:
                exits = [e.get("container_id", "") for t, e in log.events() if t == "/tasks/exit"]
                if first in exits and second in exits:
                    break
                time.sleep(0.2)
            got = [(t, e.get("container_id"), e.get("exit_status")) for t, e in log.events()]
        ours = [c for c in exits if c in (first, second)]
        assert ours == [first, second], (
            f"exit events after containerd came back: {got}\n"
            f"shim log: {_shim_lines(containerd.log_since(offset))}"
        )
        statuses = {e.get("container_id"): e.get("exit_status") for t, e in log.events()}
        assert statuses.get(first) == 137, got
        assert statuses.get(second) == 137, got
        assert wait_status(containerd, keeper, "RUNNING") == "RUNNING", "the third stopped"
        for cid in (first, second):
            # containerd 2.x may already have deleted the task: on restart it finds the
            # stopped containers' Pids empty and runs its "leaked shim" cleanup (Delete).
            status = wait_status(containerd, cid, "STOPPED")
            assert status in ("STOPPED", None), (cid, status)
            if status == "STOPPED":
                rm = containerd.ctr("tasks", "rm", cid, timeout=20)
                assert exit_code_from_rm(rm.stderr) == 137, explain(rm)
            containerd.ctr("containers", "rm", cid, timeout=20)
    finally:
        _cleanup(containerd, first, second, keeper)


def _shim_lines(log: str) -> str:
    return "\n".join(
        line for line in log.splitlines() if "runtime=io.containerd.pywasm.v1" in line
    )[-6000:]


# --- 2. the shim server SIGKILLed -------------------------------------------------------------


def test_shim_server_sigkilled(containerd: Containerd) -> None:
    """containerd runs `delete`: the guest is gone, its rootfs unmounted, exit 137 reported;
    the next container starts normally."""
    cid = new_id("shimkill")
    try:
        detached(containerd, images.ref("sleep"), cid)
        assert wait_status(containerd, cid, "RUNNING") == "RUNNING"
        worker = task_pid(containerd, cid)
        server = server_of(worker)
        assert [m for m in containerd.mounts() if cid in m], "no rootfs mount to check"
        with EventLog(containerd) as log:
            log.ready()
            os.kill(server, signal.SIGKILL)
            exit_event = log.wait_for(cid, "/tasks/exit", timeout=20)
            delete_event = log.wait_for(cid, "/tasks/delete", timeout=10)
        assert wait_gone(worker, 5), f"guest {worker} outlived its shim"
        assert exit_event is not None, f"no /tasks/exit for {cid}: {log.events(cid)}"
        assert exit_event.get("exit_status") == 137, exit_event
        assert delete_event is not None, f"no /tasks/delete for {cid}: {log.events(cid)}"
        deadline = time.monotonic() + 10
        while task_status(containerd, cid) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert task_status(containerd, cid) is None, "containerd still lists the task"
        left = [m for m in containerd.mounts() if cid in m]
        assert not left, f"rootfs still mounted: {left}"
        c = containerd.ctr("containers", "rm", cid, timeout=20)
        assert c.returncode == 0, explain(c)
        r = run(containerd, images.ref("hello"), new_id("after-shimkill"))
        assert r.returncode == 0, explain(r)
        assert r.stdout == "hello from wasm\n", explain(r)
    finally:
        _cleanup(containerd, cid)


# --- 3. a worker SIGKILLed by someone else ----------------------------------------------------


def test_worker_sigkilled_by_someone_else(containerd: Containerd) -> None:
    """Exit 137 and its events; the shim serves its other container on."""
    group = new_id("g")
    victim, neighbour = new_id("wk-victim"), new_id("wk-neighbour")
    try:
        detached(containerd, images.ref("sleep"), victim, group=group)
        detached(containerd, images.ref("sleep"), neighbour, group=group)
        for cid in (victim, neighbour):
            assert wait_status(containerd, cid, "RUNNING") == "RUNNING", cid
        worker = task_pid(containerd, victim)
        server = server_of(worker)
        assert server_of(task_pid(containerd, neighbour)) == server, "the group shares no shim"
        with EventLog(containerd) as log:
            log.ready()
            os.kill(worker, signal.SIGKILL)
            exit_event = log.wait_for(victim, "/tasks/exit", timeout=20)
            assert exit_event is not None, f"no /tasks/exit: {log.events(victim)}"
            assert exit_event.get("exit_status") == 137, exit_event
            assert wait_status(containerd, victim, "STOPPED") == "STOPPED"
            rm = containerd.ctr("tasks", "rm", victim, timeout=20)
            assert rm.returncode == 0, explain(rm)
            assert exit_code_from_rm(rm.stderr) == 137, explain(rm)
            assert log.wait_for(victim, "/tasks/delete", timeout=10) is not None
            containerd.ctr("containers", "rm", victim, timeout=20)
        assert alive(server), "the shim died with one of its workers"
        assert task_status(containerd, neighbour) == "RUNNING"
        stop_and_rm(containerd, neighbour, "SIGTERM", 143)
    finally:
        _cleanup(containerd, victim, neighbour)


# --- 4. guest traps ---------------------------------------------------------------------------

TRAPS = {
    "unreachable": "unreachable",
    "recurse": "call stack exhausted",
    "oob": "out of bounds memory access",
    "div0": "integer divide by zero",
}


@pytest.mark.parametrize("mode", sorted(TRAPS))
def test_guest_trap(containerd: Containerd, mode: str) -> None:
    """134, one clear stderr line naming the trap; the shim (shared with a neighbour) is
    unaffected."""
    group = new_id("g")
    neighbour, cid = new_id("trap-neighbour"), new_id(f"trap-{mode}")
    try:
        detached(containerd, images.ref("sleep"), neighbour, group=group)
        assert wait_status(containerd, neighbour, "RUNNING") == "RUNNING"
        server = server_of(task_pid(containerd, neighbour))
        extra = ["--annotation", f"pywasm.io/group={group}"]
        r = run(containerd, images.ref("faults"), cid, *faults(mode), extra=extra, timeout=60)
        assert r.returncode == 134, explain(r)
        assert r.stdout == f"fault {mode}\n", explain(r)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, "want exactly one stderr line\n" + explain(r)
        m = TRAP_LINE.match(lines[0])
        assert m, explain(r)
        assert TRAPS[mode] in m.group(1), explain(r)
        assert alive(server), "the shim died with a trapping guest"
        assert task_status(containerd, neighbour) == "RUNNING"
        stop_and_rm(containerd, neighbour, "SIGKILL", 137)
    finally:
        _cleanup(containerd, neighbour, cid)


# --- 5. output floods -------------------------------------------------------------------------


def test_stdout_flood_with_slow_reader(containerd: Containerd) -> None:
    """FLOOD_MIB to stdout; the reader is slow for its first seconds. Every byte arrives, the
    shim's memory stays flat (sampled), the worker's is bounded."""
    total = FLOOD_MIB * MIB
    cid = new_id("flood")
    argv = containerd.ctr_argv(*run_args(images.ref("faults"), cid, *faults("flood", str(total))))
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=containerd.env,
    )
    received = 0
    slow_until = time.monotonic() + 3.0
    samples: list[tuple[float, str, int, int]] = []
    stop = threading.Event()

    def sampler() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            worker = task_pid(containerd, cid)
            if worker:
                try:
                    server = server_of(worker)
                except (OSError, AssertionError):
                    server = 0
                s, w = sample(server) if server else None, sample(worker)
                if s and w:
                    samples.append((time.monotonic() - t0, "", s.rss_kib, w.rss_kib))
            stop.wait(0.25)

    t = threading.Thread(target=sampler, daemon=True)
    t.start()
    t_start = time.monotonic()
    try:
        assert proc.stdout is not None
        while True:
            if time.monotonic() < slow_until:
                chunk = proc.stdout.read1(4096)  # type: ignore[attr-defined]
                time.sleep(0.01)
            else:
                chunk = proc.stdout.read1(1 << 20)  # type: ignore[attr-defined]
            if not chunk:
                break
            received += len(chunk)
            if time.monotonic() - t_start > 240:
                raise AssertionError(f"flood still running after 240s ({received} bytes)")
        code = proc.wait(60)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    finally:
        stop.set()
        t.join(5)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        remove(containerd, cid)
    elapsed = time.monotonic() - t_start
    curve = ", ".join(
        f"{at:.1f}s shim={s}K worker={w}K" for at, _, s, w in samples[:: max(1, len(samples) // 12)]
    )
    print(f"\nflood {FLOOD_MIB} MiB in {elapsed:.1f}s; RSS samples: {curve}")
    assert code == 0, f"ctr run exited {code}: {err}"
    assert received == total, f"received {received} of {total} bytes"
    assert len(samples) >= 2, f"too few RSS samples: {samples}"
    shim = [s for _, _, s, _ in samples]
    worker = [w for _, _, _, w in samples]
    assert max(shim) - shim[0] < 16 * 1024, f"shim RSS grew: {shim}"
    assert max(worker) < 512 * 1024, f"worker RSS unbounded: {worker}"


def test_reader_gone_while_flooding(containerd: Containerd) -> None:
    """The client (ctr) dies while the guest floods stdout: nothing deadlocks; the shim still
    answers, and kill/wait/delete end the container."""
    cid = new_id("flood-gone")
    argv = run_args(images.ref("faults"), cid, *faults("flood", str(64 * 1024 * MIB)), rm=False)
    try:
        with Background(containerd, *argv) as bg:
            deadline = time.monotonic() + 30
            while len(bg.stdout_bytes) < MIB and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(bg.stdout_bytes) >= MIB, f"no flood: {bg.stderr}"
            bg.proc.kill()
            bg.proc.wait(10)
        time.sleep(1.0)
        t0 = time.monotonic()
        status = task_status(containerd, cid)
        assert time.monotonic() - t0 < 5, "the shim took more than 5 s to answer State"
        if status == "RUNNING":
            stop_and_rm(containerd, cid, "SIGKILL", 137)
        else:
            # The guest met the closed stdout and ended by itself (faults exits 3 on EPIPE).
            assert status == "STOPPED", status
            rm = containerd.ctr("tasks", "rm", cid, timeout=20)
            assert rm.returncode == 0, explain(rm)
            containerd.ctr("containers", "rm", cid, timeout=20)
    finally:
        _cleanup(containerd, cid)


def test_guest_writes_to_its_closed_stdout(containerd: Containerd) -> None:
    r = run(containerd, images.ref("faults"), new_id("closedout"), *faults("closedout"))
    assert r.returncode == 0, explain(r)
    assert r.stdout == "", explain(r)
    assert "closedout: write returned -1: Bad file descriptor" in r.stderr, explain(r)


# --- 6. compile cache on a full / read-only file system ---------------------------------------


@pytest.fixture
def cache_containerd(
    containerd: Containerd, archives: dict[str, Path]
) -> Iterator[tuple[Containerd, Path]]:
    """A second private containerd of the same version whose shims use PYWASM_CACHE_DIR=<dir>
    (the server's environment is containerd's); the leak check runs on it at the end."""
    base = Path(tempfile.mkdtemp(prefix="pywasmd-it-cache-"))
    cache = base / "cache"
    cache.mkdir()
    sibling = Containerd(containerd.version)
    sibling.env["PYWASM_CACHE_DIR"] = str(cache)
    sockets_before = _stale_sockets()
    try:
        sibling.start()
        images.import_archive(sibling, images.ref("hello"), archives[images.ref("hello")])
        yield sibling, cache
        leaks = find_leaks(sibling, sockets_before)
        deadline = time.monotonic() + 10
        while leaks and time.monotonic() < deadline:
            time.sleep(0.2)
            leaks = find_leaks(sibling, sockets_before)
        assert not leaks, "the test left resources behind:\n" + "\n".join(leaks)
    finally:
        sibling.stop()
        subprocess.run(["umount", "-l", str(cache)], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def _mount_tmpfs(where: Path, options: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "pywasmd-it", str(where)], check=True)


def _umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], check=True)


def _hello(ctrd: Containerd, label: str) -> None:
    r = run(ctrd, images.ref("hello"), new_id(label))
    assert r.returncode == 0, f"{label}: " + explain(r)
    assert r.stdout == "hello from wasm\n", f"{label}: " + explain(r)


def test_compile_cache_full_disk_then_read_only_then_recovers(
    cache_containerd: tuple[Containerd, Path],
) -> None:
    ctrd, cache = cache_containerd
    offset = ctrd.log_size()
    # A tmpfs far smaller than a compiled module: the write fails part-way (ENOSPC).
    _mount_tmpfs(cache, "size=16k,mode=0700")
    try:
        _hello(ctrd, "cache-full")
        full = listing(cache)
    finally:
        _umount(cache)
    assert not full, f"a full cache kept a torn or temporary entry: {full}"
    log = ctrd.log_since(offset)
    assert "compiling in memory" in log or "cannot write compile cache entry" in log, (
        "the worker did not say why the cache was not written\n" + _shim_lines(log)
    )
    _mount_tmpfs(cache, "ro,size=1m")
    try:
        _hello(ctrd, "cache-ro")
        ro = listing(cache)
    finally:
        _umount(cache)
    assert not ro, ro
    # Writable again: the next start stores a whole entry, the one after uses it.
    _hello(ctrd, "cache-recover")
    entries = listing(cache)
    assert len(entries) == 1, entries
    [(name, size)] = entries.items()
    assert name.endswith(".cwasm"), entries
    assert not name.startswith(".tmp-"), entries
    assert size > 16 * 1024, entries
    mode = os.stat(cache / name).st_mode & 0o777
    assert mode & 0o022 == 0, f"cache entry {name} is group/world-writable: {oct(mode)}"
    _hello(ctrd, "cache-hit")
    assert listing(cache) == entries, "a cache hit rewrote the entry"
    # A torn entry (as after a crash of something that bypassed the rename) is dropped.
    with open(cache / name, "r+b") as f:
        f.truncate(size // 2)
    _hello(ctrd, "cache-torn")
    assert listing(cache) == entries, f"the torn entry was not replaced: {listing(cache)}"
