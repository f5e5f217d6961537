"""A CRI pod with a Wasm server, a busybox sidecar and a Wasm client talking over localhost.

containerd 1.6.20 and 2.1.9 with CRI run inside a network namespace the test makes
(integration/netns.py); the pod gets a network namespace of its own from the test CNI plugin
(integration/testcni.py: `lo` and an `eth0`), shared by all its containers, as kubelet's pods
are. In the pod (runtime handler `pywasm`):

- `server`: the HTTP/1.1 echo server (integration/guests/net/echo_server.py, a WASI p2
  component) listening on 8080;
- `sidecar`: busybox `httpd` serving a static file on 8081 (runc, linux/amd64);
- the sidecar reaches the Wasm server: `busybox wget http://localhost:8080/...` by ExecSync;
- `client`: the Wasm TCP client (integration/guests/net/tcp_fetch.py) fetches
  `http://localhost:8081/index.html` from the sidecar and exits 0;
- the pod's ports are not those of the node: nothing answers on 8080 in containerd's namespace;
- StopContainer ends the server blocked waiting for connections at once, with 143.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from integration import cri_images, images, net_guests, netns
from integration.conftest import _stale_sockets, find_leaks
from integration.containerd import PAUSE_IMAGE, VERSIONS, Containerd
from integration.cri import (
    EXITED,
    RUNNING,
    CriClient,
    container_config,
    cri,
    log_file,
    log_messages,
    pod_config,
    verbose_pid,
)
from integration.netns import Stack

ECHO = images.ref("net-echo")
TCP_FETCH = images.ref("net-tcp_fetch")
SERVER_PORT = 8080
SIDECAR_PORT = 8081
SIDECAR_FILE = "hello from the sidecar"
LEAK_GRACE_SECONDS = 10.0

_START_ERRORS: dict[str, str] = {}


def explain(r: subprocess.CompletedProcess[Any]) -> str:
    return f"exit {r.returncode}\nstdout: {r.stdout!r:.2000}\nstderr: {r.stderr!r:.2000}"


def _archives() -> dict[str, tuple[Path, str]]:
    """Image -> (OCI archive, platform) of everything the pod runs."""
    return {
        PAUSE_IMAGE: (cri_images.build_pause_archive(), "linux/amd64"),
        images.BUSYBOX: (images.build_busybox_archive(), "linux/amd64"),
        ECHO: (
            images.build_wasm_archive("net-echo", net_guests.build("echo_server")),
            "wasi/wasm",
        ),
        TCP_FETCH: (
            images.build_wasm_archive("net-tcp_fetch", net_guests.build("tcp_fetch")),
            "wasi/wasm",
        ),
    }


@dataclass
class Node:
    stack: Stack

    @property
    def ctrd(self) -> Containerd:
        return self.stack.ctrd


@pytest.fixture(scope="module", params=VERSIONS, ids=[f"ctrd{v}" for v in VERSIONS])
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    version: str = request.param
    if version in _START_ERRORS:
        pytest.fail(_START_ERRORS[version], pytrace=False)
    wanted = _archives()
    stack = Stack(version, cri=True)
    try:
        stack.start()
        netns.install_test_cni(stack.ctrd)
        for image, (archive, platform) in wanted.items():
            cri_images.import_image(stack.ctrd, image, archive, platform)
    except Exception as e:
        stack.stop()
        _START_ERRORS[version] = f"CRI node {version} could not be set up: {e}"
        pytest.fail(_START_ERRORS[version], pytrace=False)
    try:
        yield Node(stack)
    finally:
        left = stack.stop()
        assert not left, f"tearing the CRI node down found: {left}"


@pytest.fixture(autouse=True)
def pod_leaks(node: Node, request: pytest.FixtureRequest) -> Iterator[None]:
    sockets_before = _stale_sockets()
    request.node.pywasmd_containerd = node.ctrd
    request.node.pywasmd_log_offset = node.ctrd.log_size()
    yield
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    while True:
        leaks = find_leaks(node.ctrd, sockets_before)
        if not leaks or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if leaks:
        node.ctrd.cleanup_cri()
        node.ctrd.cleanup_tasks()
        for pid in node.ctrd.all_shim_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        pytest.fail("the pod test left resources behind:\n" + "\n".join(leaks), pytrace=False)


def _own_network(config: Any) -> None:
    """The pod's own network namespace (the test CNI), not the node's."""
    config.linux.security_context.namespace_options.network = cri.POD


def _wait_wget(
    client: CriClient, side: str, url: str, timeout: float = 60
) -> tuple[int, bytes, bytes]:
    """busybox wget in the sidecar until it gets an answer (the server may still be compiling)."""
    deadline = time.monotonic() + timeout
    while True:
        found = client.exec_sync(side, ["busybox", "wget", "-S", "-q", "-O", "-", url], timeout=10)
        if found[0] == 0 or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_pod_sidecar_and_wasm_talk_over_localhost(node: Node) -> None:
    client = CriClient(node.ctrd.address)
    node.ctrd.shim_ids = client.pod_ids
    pc = pod_config("net-pod", node.ctrd.pod_logs)
    _own_network(pc)
    pod = client.run_pod_sandbox(pc, handler="pywasm")
    try:
        server_cc = container_config(pc, "server", ECHO, args=[str(SERVER_PORT)])
        side_cc = container_config(
            pc,
            "sidecar",
            images.BUSYBOX,
            command=["sh", "-c"],
            args=[
                f"echo {SIDECAR_FILE} > /tmp/index.html && "
                f"exec busybox httpd -f -p {SIDECAR_PORT} -h /tmp"
            ],
        )
        for cc in (server_cc, side_cc):
            _own_network(cc)
        server = client.create_container(pod, server_cc, pc)
        side = client.create_container(pod, side_cc, pc)
        for cid in (server, side):
            client.start_container(cid)
        for cid in (server, side):
            status = client.wait_container(cid, [RUNNING, EXITED])
            assert status.state == RUNNING, f"{cid}: {status}"

        # The sidecar reaches the Wasm server on localhost.
        code, out, err = _wait_wget(client, side, f"http://localhost:{SERVER_PORT}/from-sidecar")
        assert (code, out) == (0, b"GET /from-sidecar\n"), (code, out, err)
        assert b"X-Served-By: pywasm-echo" in err, err
        server_pid = verbose_pid(client.container_status_response(server, verbose=True).info)
        pause_pid = verbose_pid(client.pod_sandbox_status(pod, verbose=True).info)
        assert min(server_pid, pause_pid) > 0, (server_pid, pause_pid)
        assert netns.net_of(server_pid) == netns.net_of(pause_pid), "not in the pod's namespace"
        assert netns.net_of(server_pid) != node.stack.netns.inode, "in the node's namespace"
        # localhost is the pod's: containerd's (the node's) namespace has nothing on the port.
        r = node.stack.netns.run(
            "curl", "-s", "--max-time", "3", f"http://127.0.0.1:{SERVER_PORT}/", timeout=10
        )
        assert r.returncode == 7, f"the node's namespace answers on {SERVER_PORT}: {explain(r)}"

        # The Wasm TCP client reaches the sidecar on localhost (a name lookup in the guest).
        client_cc = container_config(
            pc, "client", TCP_FETCH, args=[f"http://localhost:{SIDECAR_PORT}/index.html"]
        )
        _own_network(client_cc)
        fetcher = client.create_container(pod, client_cc, pc)
        client.start_container(fetcher)
        status = client.wait_container(fetcher, [EXITED], timeout=120)
        lines = log_messages(log_file(pc, client_cc))
        assert (status.state, status.exit_code) == (EXITED, 0), (status, lines)
        assert lines == [SIDECAR_FILE], lines

        # StopContainer: SIGTERM ends the guest waiting for connections, no SIGKILL timeout.
        began = time.monotonic()
        client.stop_container(server, 10)
        took = time.monotonic() - began
        status = client.container_status(server)
        print(f"containerd {node.ctrd.version}: StopContainer of the Wasm server {took:.3f}s")
        assert (status.state, status.exit_code) == (EXITED, 143), status
        assert took < 2.0, f"StopContainer took {took:.2f}s"
        code, out, err = client.exec_sync(
            side, ["busybox", "wget", "-q", "-O", "-", f"http://localhost:{SERVER_PORT}/"]
        )
        assert code != 0, f"the port still answers after StopContainer: {out!r}"
    finally:
        errors = client.remove_everything()
        client.close()
    assert not errors, errors
