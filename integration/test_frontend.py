"""The compiled front end of `start` and `delete` under a real containerd (1.6 and 2.1): the
common case never runs Python (grouped containers included), and what it leaves to Python (a
group name with JSON escapes, no zygote, a server that died with its container running)
reaches the Python launcher and works.

containerd finds the shim in a directory of this module's own, first on its PATH: the front
end built from pywasmd/shim/native/frontend.c whose fallback is a wrapper that records each
deferral and then execs the generated Python launcher. A private zygote serves the servers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration import images
from integration.bench_node import Zygote
from integration.containerd import Containerd, ContainerdError, new_id, run
from integration.probes import alive, detached, server_of, task_pid, wait_gone
from integration.test_lifecycle import explain, remove, wait_status
from pywasmd.shim import install

MARKER_NAME = "deferred"


class FrontEnd:
    def __init__(self, tmp: Path) -> None:
        (tmp / "bin").mkdir()
        (tmp / "libexec").mkdir()
        launcher = tmp / "libexec" / "launcher"
        launcher.write_text(install.launcher_text(sys.executable, install.package_root()))
        launcher.chmod(0o755)
        self.marker = tmp / MARKER_NAME
        wrapper = tmp / "libexec" / "wrapper"
        wrapper.write_text(f"#!/bin/sh\necho \"$*\" >> '{self.marker}'\nexec '{launcher}' \"$@\"\n")
        wrapper.chmod(0o755)
        self.bindir = tmp / "bin"
        # no watched files: others editing pywasmd meanwhile must not turn it into Python
        install.build_frontend(
            str(self.bindir / install.SHIM_NAME), str(wrapper), str(tmp / "no-default.sock"), ()
        )

    def deferred(self, cid: str) -> list[str]:
        """The subcommands of `cid` that ran in Python."""
        if not self.marker.exists():
            return []
        return [
            line.split()[-1] for line in self.marker.read_text().splitlines() if f" {cid} " in line
        ]


@pytest.fixture(scope="module")
def frontend(tmp_path_factory: pytest.TempPathFactory) -> FrontEnd:
    return FrontEnd(tmp_path_factory.mktemp("frontend"))


ZYGOTES: dict[str, Zygote] = {}


@pytest.fixture(scope="module", params=["1.6", "2.1"], ids=["ctrd1.6", "ctrd2.1"])
def containerd(
    request: pytest.FixtureRequest, archives: dict[str, Path], frontend: FrontEnd
) -> Iterator[Containerd]:
    """A containerd of this module's own: the front end first on PATH, a private zygote."""
    version: str = request.param
    zygote = Zygote(f"/run/pywasm/frontend-test-{os.getpid()}-{version}.sock")
    ZYGOTES[version] = zygote
    ctrd = Containerd(version)
    ctrd.env["PATH"] = f"{frontend.bindir}:{ctrd.env['PATH']}"
    ctrd.env["PYWASM_ZYGOTE_SOCKET"] = zygote.socket_path
    try:
        zygote.ensure()
        ctrd.start()
        for name in ("hello", "sleep"):
            ref = images.ref(name)
            images.import_archive(ctrd, ref, archives[ref])
    except (ContainerdError, RuntimeError, OSError) as e:
        ctrd.stop()
        zygote.stop()
        pytest.fail(f"containerd {version} could not be set up: {e}", pytrace=False)
    try:
        yield ctrd
    finally:
        ctrd.stop()
        _stop_zygotes_at(zygote.socket_path)
        zygote.stop()


def _listeners_of(path: str) -> list[int]:
    """Pids holding a unix socket bound at `path` (a zygote the shim spawned itself)."""
    inodes = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[7] == path:
                inodes.add(f"socket:[{parts[6]}]")
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                        pids.append(int(pid))
                        break
    return pids


def _stop_zygotes_at(path: str) -> None:
    for pid in _listeners_of(path):
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            wait_gone(pid, 5)


def test_a_plain_run_never_runs_python(containerd: Containerd, frontend: FrontEnd) -> None:
    ZYGOTES[containerd.version].ensure()
    cid = new_id("fe-plain")
    r = run(containerd, images.ref("hello"), cid)
    assert r.returncode == 0, explain(r)
    assert r.stdout == "hello from wasm\n", explain(r)
    assert frontend.deferred(cid) == []


@pytest.mark.parametrize(("name", "via_python"), [("fe-group", False), ("fe&group", True)])
def test_grouped_containers_share_one_server(
    containerd: Containerd, frontend: FrontEnd, name: str, via_python: bool
) -> None:
    """containerd writes `&` in an annotation as `\\u0026` (Go's JSON encoder): a value with
    escapes is Python's to decode; a plain one the front end reads itself."""
    ZYGOTES[containerd.version].ensure()
    group = new_id(name)
    cids = [new_id("fe-g1"), new_id("fe-g2")]
    try:
        for cid in cids:
            detached(containerd, images.ref("sleep"), cid, group=group)
        for cid in cids:
            assert wait_status(containerd, cid, "RUNNING") == "RUNNING"
        servers = {server_of(task_pid(containerd, cid)) for cid in cids}
        assert len(servers) == 1, f"a group has one server, found {servers}"
        for cid in cids:
            assert frontend.deferred(cid) == (["start"] if via_python else [])
    finally:
        for cid in cids:
            remove(containerd, cid)


def test_without_a_zygote_python_serves_and_respawns_it(
    containerd: Containerd, frontend: FrontEnd
) -> None:
    zygote = ZYGOTES[containerd.version]
    zygote.stop()
    cid = new_id("fe-nozygote")
    try:
        r = run(containerd, images.ref("hello"), cid)
        assert r.returncode == 0, explain(r)
        assert r.stdout == "hello from wasm\n", explain(r)
        assert frontend.deferred(cid) == ["start"]
        # the Python `start` spawned a zygote at the same socket: the next start is native
        deadline = time.monotonic() + 30
        while not _listeners_of(zygote.socket_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _listeners_of(zygote.socket_path), "no zygote was respawned"
        again = new_id("fe-respawned")
        r = run(containerd, images.ref("hello"), again)
        assert r.returncode == 0, explain(r)
        assert frontend.deferred(again) == []
    finally:
        _stop_zygotes_at(zygote.socket_path)
        zygote.ensure()


def test_delete_after_the_server_died_runs_python(
    containerd: Containerd, frontend: FrontEnd
) -> None:
    """The server SIGKILLed with its guest running: the front end leaves the worker and the
    rootfs mount to Python's `delete`, which cleans up; containerd sees exit 137."""
    ZYGOTES[containerd.version].ensure()
    cid = new_id("fe-srvkill")
    try:
        detached(containerd, images.ref("sleep"), cid)
        assert wait_status(containerd, cid, "RUNNING") == "RUNNING"
        worker = task_pid(containerd, cid)
        os.kill(server_of(worker), signal.SIGKILL)
        assert wait_status(containerd, cid, "STOPPED") in ("STOPPED", None)
        assert wait_gone(worker, 10), f"guest {worker} outlived its shim"
        deadline = time.monotonic() + 10
        while "delete" not in frontend.deferred(cid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert frontend.deferred(cid) == ["delete"]
        assert not [m for m in containerd.mounts() if cid in m]
        assert not alive(worker)
    finally:
        remove(containerd, cid)
