"""A Wasm server published with `docker run -p` on Docker 28's default bridge network.

Docker (on a private containerd 2.1) runs inside a network namespace the test makes
(integration/netns.py), with its default bridge `docker0` and, since the test dockerd does not
touch iptables, its userland proxy (`docker-proxy`, unpacked by scripts/fetch-docker.sh next to
dockerd) for published ports. The guest is the HTTP/1.1 echo server of
integration/guests/net/echo_server.py (a WASI p2 component, integration/net_guests.py), loaded
into Docker from the OCI archive `pywasm build` makes.

    docker run -d -p 8080:8080 --runtime=io.containerd.pywasm.v1 --platform=wasi/wasm pw-net-echo
    curl http://127.0.0.1:8080/           # inside the test namespace: answered by the guest
    docker stop <name>                    # SIGTERM ends the guest (143) in well under a second
    docker rm <name>                      # no container, veth, netns file or proxy left

`docker run --annotation pywasm.io/network=none` refuses the guest's socket inside WASI.

Every HTTP request is made from inside the test namespace (`nsenter --net=/run/netns/<name>
curl`); the machine's own namespace never sees the published port.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration import images, net_guests, netns
from integration.containerd import new_id
from integration.docker import DOCKERD, PYWASM
from integration.netns import Stack
from integration.test_docker_bridge import (
    BRIDGE_PREFIX,
    docker_netns_files,
    explain,
    wait_links,
)

WASM = (f"--runtime={PYWASM}", "--platform=wasi/wasm")
ECHO = images.ref("net-echo")
PORT = 8080
LEAK_GRACE_SECONDS = 15.0

_START_ERROR: list[str] = []


def echo_archive() -> Path:
    return images.build_wasm_archive("net-echo", net_guests.build("echo_server"))


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if _START_ERROR:
        pytest.fail(_START_ERROR[0], pytrace=False)
    if not DOCKERD.exists():
        pytest.fail(f"{DOCKERD} is missing: run scripts/fetch-docker.sh (make install)")
    archive = echo_archive()
    s = Stack("2.1", docker=True)
    try:
        s.start()
        s.docker.load(archive)
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
def docker_clean(stack: Stack, request: pytest.FixtureRequest) -> Iterator[None]:
    request.node.pywasmd_containerd = stack.ctrd
    request.node.pywasmd_log_offset = stack.ctrd.log_size()
    yield
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    while True:
        leaks = []
        if ids := stack.docker.container_ids():
            leaks.append(f"containers left: {ids}")
        if pids := stack.ctrd.all_shim_pids():
            leaks.append(f"shim processes left: {pids}")
        if proxies := docker_proxies(stack):
            leaks.append(f"docker-proxy processes left: {proxies}")
        if not leaks or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if leaks:
        stack.docker.remove_all()
        for pid in stack.ctrd.all_shim_pids():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        pytest.fail("the -p test left resources behind:\n" + "\n".join(leaks), pytrace=False)


def docker_proxies(stack: Stack) -> list[int]:
    """docker-proxy processes in the stack's namespace (one per published port and family)."""
    found = []
    for pid in stack.netns.pids():
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "docker-proxy":
                    found.append(pid)
        except OSError:
            continue
    return found


def curl(stack: Stack, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """curl inside the stack's network namespace (where dockerd publishes ports); the output
    is decoded without newline translation, so the answer's CRLFs stay visible."""
    argv = [*stack.netns.launcher, "curl", "-s", "-i", "--max-time", "5", *extra, url]
    raw = subprocess.run(argv, capture_output=True, timeout=15, check=False)
    return subprocess.CompletedProcess(
        argv, raw.returncode, raw.stdout.decode(errors="replace"), raw.stderr.decode()
    )


def wait_200(stack: Stack, url: str, timeout: float = 60) -> tuple[float, str]:
    """Poll `url` from inside the namespace until it answers 200; (seconds, the answer)."""
    began = time.monotonic()
    while True:
        r = curl(stack, url)
        if r.returncode == 0 and r.stdout.startswith("HTTP/1.1 200 "):
            return time.monotonic() - began, r.stdout
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{url} gave no 200 within {timeout:.0f}s: {explain(r)}")
        time.sleep(0.05)


def test_published_port_serves_and_stop_is_prompt(stack: Stack) -> None:
    d = stack.docker
    machine = netns.host_links()
    links_before = set(stack.netns.links())
    assert "docker0" in links_before, f"dockerd made no bridge: {links_before}"
    url = f"http://127.0.0.1:{PORT}"
    refused = curl(stack, url)
    assert refused.returncode == 7, (
        f"something answers on {PORT} before the run: {explain(refused)}"
    )

    name = new_id("net-p")
    began = time.monotonic()
    r = d.docker("run", "-d", "--name", name, "-p", f"{PORT}:{PORT}", *WASM, ECHO, timeout=60)
    assert r.returncode == 0, explain(r)
    try:
        took, _ = wait_200(stack, f"{url}/ready")
        print(f"docker run -d to the first 200 through -p: {time.monotonic() - began:.2f}s")
        assert took < 60

        answer = curl(stack, f"{url}/hi", "--data", "abc")
        assert answer.returncode == 0, explain(answer)
        assert answer.stdout.startswith("HTTP/1.1 200 OK\r\n"), explain(answer)
        assert "\r\nX-Served-By: pywasm-echo\r\n" in answer.stdout, explain(answer)
        assert answer.stdout.endswith("\r\n\r\nPOST /hi\nabc"), explain(answer)

        info = d.inspect(name)
        ip = info["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        assert ip.startswith(BRIDGE_PREFIX), info["NetworkSettings"]
        bindings = info["NetworkSettings"]["Ports"][f"{PORT}/tcp"]
        assert {b["HostPort"] for b in bindings} == {str(PORT)}, bindings
        # The userland proxy forwards to the container's bridge address, where the guest
        # itself listens (in the task's own namespace, not dockerd's).
        assert docker_proxies(stack), "no docker-proxy serves the published port"
        direct = curl(stack, f"http://{ip}:{PORT}/direct")
        assert direct.returncode == 0, explain(direct)
        assert direct.stdout.endswith("\r\n\r\nGET /direct\n"), explain(direct)
        pid = int(info["State"]["Pid"])
        assert netns.net_of(pid) not in (stack.netns.inode, netns.net_of(os.getpid()))
        logs = d.docker("logs", name, timeout=20)
        assert f"listening on {PORT}" in logs.stdout, explain(logs)

        t0 = time.monotonic()
        stop = d.docker("stop", name, timeout=30)
        stop_seconds = time.monotonic() - t0
        print(f"docker stop of the guest waiting for connections: {stop_seconds:.3f}s")
        assert stop.returncode == 0, explain(stop)
        state = d.container_state(name)
        assert (state["Status"], state["ExitCode"]) == ("exited", 143), state
        assert stop_seconds < 1.0, f"docker stop took {stop_seconds:.2f}s (SIGTERM is not enough?)"
        after = curl(stack, url)
        assert after.returncode == 7, f"{PORT} still answers after stop: {explain(after)}"
    finally:
        rm = d.docker("rm", "-f", name, timeout=60)
    assert rm.returncode == 0, explain(rm)
    assert name not in d.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert wait_links(stack, links_before) == links_before, "a veth outlived the container"
    assert docker_netns_files(d) == [], "Docker's netns file outlived the container"
    assert netns.host_links() == machine, "the machine's own interfaces changed"


def test_network_none_annotation_refuses_the_socket(stack: Stack) -> None:
    """`docker run --annotation pywasm.io/network=none`: the guest's socket is refused inside
    WASI even though the container has its eth0 on the bridge and a published port."""
    d = stack.docker
    r = d.docker(
        "run", "--rm", "-p", f"{PORT}:{PORT}", "--annotation", "pywasm.io/network=none",
        *WASM, ECHO, timeout=120,
    )  # fmt: skip
    assert r.returncode == 1, explain(r)
    assert "echo_server: PermissionError" in r.stderr, explain(r)
    assert "listening on" not in r.stdout, explain(r)
