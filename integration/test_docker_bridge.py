"""Docker 28 on its DEFAULT bridge network (no `--network` flag), pywasm and runc side by side.

Most Docker users never change Docker's network: a container gets a veth on `docker0` with a
172.17.x address inside the network namespace of the task's pid. Such a dockerd configures
interfaces, so it runs (with its containerd 2.1 and the shims' fork-server) inside a network
namespace this module makes and deletes (integration/netns.py); conftest's guard fails any test
after which the machine's own namespace has a new interface.

For each runtime: `docker run` in the foreground, `run -d` of a sleeping container whose own
network namespace (read through /proc/<task pid>/ns/net) has `eth0` with the 172.17 address
Docker reports, `stop`, `rm`; afterwards nothing is left in dockerd's namespace (no veth, no
netns file) nor in the machine's.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from integration import images, netns
from integration.containerd import new_id
from integration.docker import DOCKERD, PYWASM, Dockerd
from integration.netns import Stack

WASM = (f"--runtime={PYWASM}", "--platform=wasi/wasm")
BRIDGE_PREFIX = "172.17."
LEAK_GRACE_SECONDS = 15.0

_START_ERROR: list[str] = []


def explain(r: subprocess.CompletedProcess[Any]) -> str:
    return f"exit {r.returncode}\nstdout: {r.stdout!r:.2000}\nstderr: {r.stderr!r:.2000}"


@pytest.fixture(scope="module")
def stack(archives: dict[str, Path]) -> Iterator[Stack]:
    if _START_ERROR:
        pytest.fail(_START_ERROR[0], pytrace=False)
    if not DOCKERD.exists():
        pytest.fail(f"{DOCKERD} is missing: run scripts/fetch-docker.sh (make install)")
    s = Stack("2.1", docker=True)
    try:
        s.start()
        for name in ("hello", "sleep", "busybox"):
            s.docker.load(archives[images.ref(name)])
    except Exception as e:
        s.stop()
        _START_ERROR.append(f"Docker on its bridge network could not be set up: {e}")
        pytest.fail(_START_ERROR[0], pytrace=False)
    try:
        yield s
    finally:
        left = s.stop()
        assert not left, f"tearing the bridge stack down found: {left}"


@pytest.fixture(autouse=True)
def bridge_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    if "stack" not in request.fixturenames:
        yield
        return
    s: Stack = request.getfixturevalue("stack")
    request.node.pywasmd_containerd = s.ctrd
    request.node.pywasmd_log_offset = s.ctrd.log_size()
    yield
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    while True:
        leaks = []
        if ids := s.docker.container_ids():
            leaks.append(f"containers left: {ids}")
        if pids := s.ctrd.all_shim_pids():
            leaks.append(f"shim processes left: {pids}")
        if not leaks or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if leaks:
        s.docker.remove_all()
        for pid in s.ctrd.all_shim_pids():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        pytest.fail("the bridge test left resources behind:\n" + "\n".join(leaks), pytrace=False)


@dataclass(frozen=True)
class Runtime:
    name: str
    opts: tuple[str, ...]
    hello: tuple[str, ...]
    hello_out: str
    sleeper: tuple[str, ...]
    #: `docker stop -t 2`: a Wasm guest ends on SIGTERM (128+15); busybox sleep as pid 1 has
    #: no SIGTERM handler, so the kernel drops it and SIGKILL follows (128+9).
    stop_code: int


RUNTIMES = {
    "pywasm": Runtime(
        "pywasm",
        WASM,
        ("pw-hello", "a", "b"),
        "hello from wasm\na\nb\n",
        ("pw-sleep", "300"),
        143,
    ),
    "runc": Runtime(
        "runc", (), ("pw-busybox", "echo", "a", "b"), "a b\n", ("pw-busybox", "sleep", "300"), 137
    ),
}


def container_addresses(pid: int) -> dict[str, list[str]]:
    """Interface -> addresses in the network namespace of `pid` (`ip -br addr` there)."""
    r = subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-br", "addr"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert r.returncode == 0, explain(r)
    found = {}
    for line in r.stdout.splitlines():
        fields = line.split()
        if fields:
            found[fields[0].split("@", 1)[0]] = fields[2:]
    return found


def docker_netns_files(d: Dockerd) -> list[str]:
    try:
        return sorted(os.listdir(d.exec_root / "netns"))
    except FileNotFoundError:
        return []


def wait_links(s: Stack, want: set[str], timeout: float = 10) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        links = set(s.netns.links())
        if links == want or time.monotonic() > deadline:
            return links
        time.sleep(0.1)


@pytest.mark.parametrize("runtime", ["runc", "pywasm"])
def test_default_bridge_network(stack: Stack, runtime: str) -> None:
    rt = RUNTIMES[runtime]
    d = stack.docker
    machine = netns.host_links()
    links_before = set(stack.netns.links())
    assert "docker0" in links_before, f"dockerd made no bridge: {links_before}"

    r = d.docker("run", "--rm", *rt.opts, *rt.hello, timeout=60)
    assert r.returncode == 0, explain(r)
    assert r.stdout == rt.hello_out, explain(r)

    cname = new_id(f"bridge-{runtime}")
    r = d.docker("run", "-d", "--name", cname, *rt.opts, *rt.sleeper, timeout=60)
    assert r.returncode == 0, explain(r)
    try:
        info = d.inspect(cname)
        pid = int(info["State"]["Pid"])
        assert info["State"]["Status"] == "running", info["State"]
        assert pid > 0, info["State"]
        ip = info["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        assert ip.startswith(BRIDGE_PREFIX), json.dumps(info["NetworkSettings"], indent=1)
        own = netns.net_of(pid)
        assert own not in (stack.netns.inode, netns.net_of(os.getpid())), (
            f"task pid {pid} is in dockerd's or the machine's network namespace, not its own"
        )
        addrs = container_addresses(pid)
        assert "eth0" in addrs, f"no eth0 in the namespace of task pid {pid}: {addrs}"
        assert f"{ip}/16" in addrs["eth0"], f"eth0 of task pid {pid}: {addrs['eth0']}, want {ip}"
        assert set(addrs) == {"lo", "eth0"}, addrs
        during = set(stack.netns.links()) - links_before
        want = "one veth on docker0"
        assert len(during) == 1, f"dockerd's namespace gained {during}, want {want}"
        assert next(iter(during)).startswith("veth"), f"gained {during}, want {want}"

        t0 = time.monotonic()
        r = d.docker("stop", "-t", "2", cname, timeout=60)
        took = time.monotonic() - t0
        assert r.returncode == 0, explain(r)
        state = d.container_state(cname)
        assert (state["Status"], state["ExitCode"]) == ("exited", rt.stop_code), state
        assert took < 8, f"docker stop took {took:.1f}s"
    finally:
        r = d.docker("rm", "-f", cname, timeout=60)
    assert r.returncode == 0, explain(r)
    assert cname not in d.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert wait_links(stack, links_before) == links_before, "a veth outlived the container"
    assert docker_netns_files(d) == [], "Docker's netns file outlived the container"
    assert netns.host_links() == machine, "the machine's own interfaces changed"


def test_netns_harness_and_host_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness sees what appears in its namespace and removes it with the namespace; the
    session guard reports an interface that appears in the machine's namespace."""
    from integration import conftest

    n = netns.Netns().create()
    try:
        assert set(n.links()) == {"lo"}, n.links()
        assert "UP" in n.links()["lo"], n.links()
        r = n.run("ip", "link", "add", "pwt0", "type", "veth", "peer", "name", "pwt1")
        assert r.returncode == 0, explain(r)
        assert set(n.links()) == {"lo", "pwt0", "pwt1"}, n.links()
        sleeper = subprocess.Popen([*n.launcher, "sleep", "60"])
        deadline = time.monotonic() + 5
        while sleeper.pid not in n.pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert n.pids() == [sleeper.pid]
    finally:
        n.delete()
    assert sleeper.wait(5) == -9, "delete() did not end the namespace's process"
    assert not n.path.exists()
    assert n.name not in netns.named_netns()

    real = netns.host_links()
    fake = "pw-guard-probe"  # no such interface: the guard's `ip link del` fails, and says so
    monkeypatch.setattr(netns, "host_links", lambda: {**real, fake: f"{fake} DOWN"})
    found = conftest._new_host_links(real)
    assert len(found) == 1, found
    assert fake in found[0], found
    assert "ip link del failed" in found[0], found
