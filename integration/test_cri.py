"""Kubernetes without kubelet: pods driven through containerd's CRI (runtime.v1), on a private
containerd 1.6.20 and 2.1.9 whose pywasm runtime handler comes from the shipped config snippet
(`pywasm config containerd`), with a locally built pause image and host-network pods (no CNI).

- baseline: a runc pod (handler "") running busybox, proving the harness itself;
- a Wasm-only pod (handler pywasm): the pause container and a Wasm container in one pywasm shim,
  exit code and log through CRI, the shim gone once the pod is;
- a Wasm + Linux sidecar pod: both running at once in ONE shim, both logging, StopContainer
  (SIGTERM, then SIGKILL after the timeout) and the exit codes CRI reports, the path each
  container took in the shim's log;
- the shipped RuntimeClass names the handler the containerd snippet declares.

After every test nothing may be left: no pod, container or task in k8s.io, no shim process, no
mount, no cgroup of a pod or container, no runc state, no stale shim socket, and no image pull
attempted.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
import yaml

from integration import cri_images, images
from integration.conftest import _stale_sockets, runc_state_of
from integration.containerd import PAUSE_IMAGE, VERSIONS, Containerd, ContainerdError
from integration.cri import (
    EXITED,
    K8S_NAMESPACE,
    RUNNING,
    SANDBOX_NOTREADY,
    SANDBOX_READY,
    CriClient,
    CriError,
    container_config,
    cri,
    log_file,
    log_messages,
    pod_config,
    read_log,
    state_name,
    verbose_pid,
    wait_log,
)
from integration.probes import alive, cmdline, parent_of, wait_gone
from pywasmd import nodesetup

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
PYWASM_SHIM = "containerd-shim-pywasm-v1"
RUNC_SHIM = "containerd-shim-runc-v2"
HANDLER = "pywasm"
SHIM_EXIT_SECONDS = 15.0
LEAK_GRACE_SECONDS = 10.0
# CRI gives a container without a cgroup_parent the cgroup /k8s.io/<id> (cgroupfs, v1 here).
CGROUP_ROOT = Path("/sys/fs/cgroup")

_START_ERRORS: dict[str, str] = {}


@dataclass
class Node:
    """A CRI-enabled containerd and a client on its socket."""

    ctrd: Containerd
    client: CriClient

    @property
    def version(self) -> str:
        return self.ctrd.version


@pytest.fixture(scope="module", params=VERSIONS, ids=[f"ctrd{v}" for v in VERSIONS])
def node(request: pytest.FixtureRequest, archives: dict[str, Path]) -> Iterator[Node]:
    version: str = request.param
    if version in _START_ERRORS:
        pytest.fail(_START_ERRORS[version], pytrace=False)
    ctrd = Containerd(version, cri=True)
    try:
        ctrd.start()
        cri_images.import_cri_images(ctrd, archives)
        client = CriClient(ctrd.address)
        # Shim servers titled with one of this client's pod ids are this containerd's.
        ctrd.shim_ids = client.pod_ids
        ready = {c.type: c.status for c in client.status().status.conditions}
        if not ready.get("RuntimeReady"):
            raise ContainerdError(f"CRI reports the runtime not ready: {ready}")
    except (ContainerdError, CriError, RuntimeError, OSError) as e:
        ctrd.stop()
        _START_ERRORS[version] = f"CRI on containerd {version} could not be set up: {e}"
        pytest.fail(_START_ERRORS[version], pytrace=False)
    try:
        yield Node(ctrd, client)
    finally:
        client.close()
        ctrd.stop()


# --- leaks ------------------------------------------------------------------------------


def find_leaks(n: Node, sockets_before: set[str]) -> list[str]:
    leaks = []
    try:
        pods = [p.id for p in n.client.list_pod_sandboxes()]
        containers = [c.id for c in n.client.list_containers()]
    except CriError as e:
        return [f"CRI does not answer: {e}"]
    if pods:
        leaks.append(f"pods left: {pods}")
    if containers:
        leaks.append(f"CRI containers left: {containers}")
    tasks = n.ctrd.ctr("tasks", "ls", "-q", namespace=K8S_NAMESPACE, timeout=20).stdout.split()
    if tasks:
        leaks.append(f"tasks left in {K8S_NAMESPACE}: {tasks}")
    pids = n.ctrd.all_shim_pids()
    if pids:
        leaks.append("processes left: " + "; ".join(f"{p}: {cmdline(p)[:200]}" for p in pids))
    mounts = n.ctrd.mounts()
    if mounts:
        leaks.append(f"mounts left: {mounts}")
    cgroups = [
        str(d)
        for d in CGROUP_ROOT.glob(f"*/{K8S_NAMESPACE}/*")
        if d.is_dir() and d.name in n.client.pod_ids | n.client.container_ids
    ]
    if cgroups:
        leaks.append(f"cgroups left: {cgroups}")
    runc_left = runc_state_of(n.ctrd)
    if runc_left:
        leaks.append(f"runc state left by the shim's Linux path: {runc_left}")
    stale = _stale_sockets() - sockets_before
    if stale:
        leaks.append(f"stale shim sockets left: {sorted(stale)}")
    return leaks


@pytest.fixture(autouse=True)
def no_cri_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    if "node" not in request.fixturenames:
        yield
        return
    n: Node = request.getfixturevalue("node")
    sockets_before = _stale_sockets()
    offset = n.ctrd.log_size()
    # conftest's report hook attaches containerd's log of the test to a failure.
    request.node.pywasmd_log_offset = offset
    request.node.pywasmd_containerd = n.ctrd
    yield
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    leaks = find_leaks(n, sockets_before)
    while leaks and time.monotonic() < deadline:
        time.sleep(0.2)
        leaks = find_leaks(n, sockets_before)
    log = n.ctrd.log_since(offset)
    pulls = [line for line in log.splitlines() if "PullImage" in line]
    if pulls:
        leaks.append("CRI tried to pull an image:\n  " + "\n  ".join(pulls[:5]))
    if leaks:
        n.client.remove_everything()
        n.ctrd.cleanup_tasks()
        for pid in n.ctrd.all_shim_pids():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        pytest.fail(
            f"containerd {n.version} (CRI): the test left resources behind:\n" + "\n".join(leaks),
            pytrace=False,
        )


# --- helpers ----------------------------------------------------------------------------


def pywasm_servers(n: Node) -> list[int]:
    """Live pywasm shim servers of this containerd's pods. Their title, set by the shim, is
    `containerd-shim-pywasm-v1 -namespace k8s.io -id POD -address ADDR`, cut short after the
    pod id (the title gets the argv+environ space of the zygote that forked the server)."""
    title = re.compile(rf"{PYWASM_SHIM} -namespace {K8S_NAMESPACE} -id (\S+)( .*)?")
    found = []
    for p in n.ctrd.all_shim_pids():
        m = title.fullmatch(cmdline(p))
        if m and m.group(1) in n.client.pod_ids and alive(p):
            found.append(p)
    return found


def runc_shims(n: Node) -> list[int]:
    return [p for p in n.ctrd.shim_pids(RUNC_SHIM) if alive(p)]


def shim_log(n: Node, since: int) -> list[str]:
    """Lines containerd copied from the pywasm shim's stderr."""
    return [
        line
        for line in n.ctrd.log_since(since).splitlines()
        if "runtime=io.containerd.pywasm.v1" in line
    ]


def container_pid(n: Node, cid: str) -> int:
    pid = verbose_pid(n.client.container_status_response(cid, verbose=True).info)
    assert pid > 0, f"CRI's verbose ContainerStatus of {cid} names no pid"
    return pid


def sandbox_pid(n: Node, pod: str) -> int:
    pid = verbose_pid(n.client.pod_sandbox_status(pod, verbose=True).info)
    assert pid > 0, f"CRI's verbose PodSandboxStatus of {pod} names no pid"
    return pid


def pod_state(n: Node, pod: str) -> int:
    return int(n.client.pod_sandbox_status(pod).status.state)


def remove_pod(n: Node, pod: str) -> None:
    """What kubelet does when a pod is deleted: StopPodSandbox, then RemovePodSandbox."""
    n.client.stop_pod_sandbox(pod)
    assert pod_state(n, pod) == SANDBOX_NOTREADY
    n.client.remove_pod_sandbox(pod)
    assert pod not in [p.id for p in n.client.list_pod_sandboxes()]


def describe(status: cri.ContainerStatus) -> str:
    return (
        f"state={state_name(status.state)} exit_code={status.exit_code} "
        f"reason={status.reason!r} message={status.message!r}"
    )


# --- tests ------------------------------------------------------------------------------


def test_images_are_local_and_the_snippet_is_the_shipped_one(node: Node) -> None:
    """CRI sees the imported images (no pull needed) and the runtime entry in the config is
    packaging/containerd/config-N.x.toml byte for byte."""
    for image in (PAUSE_IMAGE, images.BUSYBOX, images.ref("hello"), images.ref("sleep")):
        found = node.client.image_status(image)
        assert found is not None, f"CRI does not see {image} in {K8S_NAMESPACE}"
        assert image in found.repo_tags, found.repo_tags
    major = node.version.split(".")[0]
    shipped = (PACKAGING / "containerd" / f"config-{major}.x.toml").read_text()
    assert node.ctrd.cri_snippet == shipped
    assert node.ctrd.cri_snippet in node.ctrd.config.read_text()


def test_runc_pod_baseline(node: Node) -> None:
    """Handler "" (runc): the harness alone, without the pywasm shim."""
    since = node.ctrd.log_size()
    pc = pod_config("baseline", node.ctrd.pod_logs)
    pod = node.client.run_pod_sandbox(pc, handler="")
    try:
        assert pod_state(node, pod) == SANDBOX_READY
        assert runc_shims(node), "no runc shim serves the runc pod"
        assert not pywasm_servers(node), "a pywasm shim serves a runc pod"
        cc = container_config(
            pc,
            "busybox",
            images.BUSYBOX,
            command=["sh", "-c", "echo out; echo err >&2; exit 3"],
        )
        cid = node.client.create_container(pod, cc, pc)
        assert node.client.container_status(cid).state == cri.CONTAINER_CREATED
        node.client.start_container(cid)
        status = node.client.wait_container(cid, [EXITED])
        assert status.state == EXITED, describe(status)
        assert status.exit_code == 3, describe(status)
        assert status.image.image == images.BUSYBOX, status.image
        assert status.image_ref.startswith("sha256:"), status.image_ref
        path = log_file(pc, cc)
        entries = read_log(path)  # raises on a line that is not CRI log format
        # Two pipes: the order between the streams is not defined, within each it is.
        assert sorted((e.stream, e.message) for e in entries) == [
            ("stderr", "err"),
            ("stdout", "out"),
        ], entries
        assert all(e.tag == "F" for e in entries), entries
        assert status.log_path == str(path)
        node.client.remove_container(cid)
        assert cid not in [c.id for c in node.client.list_containers()]
    finally:
        remove_pod(node, pod)
    assert not shim_log(node, since), "the pywasm shim took part in a runc pod"


def test_wasm_pod(node: Node) -> None:
    """Handler pywasm: the pause container goes to runc inside the pywasm shim, the Wasm
    container runs to completion; the shim outlives the Wasm container (it still serves the
    sandbox) and exits once the pod is removed."""
    since = node.ctrd.log_size()
    pc = pod_config("wasm-only", node.ctrd.pod_logs)
    pod = node.client.run_pod_sandbox(pc, handler=HANDLER)
    removed = False
    try:
        assert pod_state(node, pod) == SANDBOX_READY
        servers = pywasm_servers(node)
        assert len(servers) == 1, f"pywasm shim servers after RunPodSandbox: {servers}"
        (shim,) = servers
        assert f"-id {pod} " in cmdline(shim), cmdline(shim)
        assert parent_of(sandbox_pid(node, pod)) == shim, "the pause process is not the shim's"
        assert not runc_shims(node), "a runc shim took part in a pywasm pod"

        cc = container_config(
            pc,
            "hello",
            images.ref("hello"),
            args=["arg-one", "arg two"],
            envs={"GREETING": "from CRI"},
        )
        cid = node.client.create_container(pod, cc, pc)
        node.client.start_container(cid)
        status = node.client.wait_container(cid, [EXITED])
        assert status.state == EXITED, describe(status)
        assert status.exit_code == 0, describe(status)
        assert status.reason == "Completed", describe(status)
        assert status.image.image == images.ref("hello"), status.image
        assert log_messages(log_file(pc, cc), "stdout") == [
            "hello from wasm",
            "arg-one",
            "arg two",
            "GREETING=from CRI",
        ]
        assert log_messages(log_file(pc, cc), "stderr") == []
        assert pywasm_servers(node) == [shim], "the Wasm container was not served by the pod's shim"

        node.client.remove_container(cid)
        assert alive(shim), "the shim exited while the pod's sandbox still needed it"
        remove_pod(node, pod)
        removed = True
        assert wait_gone(shim, SHIM_EXIT_SECONDS), (
            f"pywasm shim {shim} still alive {SHIM_EXIT_SECONDS:.0f}s after the pod was removed"
        )
    finally:
        if not removed:
            node.client.remove_everything()
    log = "\n".join(shim_log(node, since))
    assert f"{pod}: pod sandbox container: a Linux program, handing it to runc" in log, log
    assert re.search(rf"created {cid}: wasm module \S*/hello\.wasm", log), log
    assert len(re.findall(r"pywasm shim \d+ serving", log)) == 1, log


def test_wasm_and_linux_sidecar_pod(node: Node) -> None:
    """A long-running Wasm guest and a busybox sidecar in one pod, one shim; StopContainer
    sends SIGTERM, then SIGKILL after the timeout."""
    since = node.ctrd.log_size()
    pc = pod_config("mixed", node.ctrd.pod_logs)
    pod = node.client.run_pod_sandbox(pc, handler=HANDLER)
    removed = False
    try:
        (shim,) = pywasm_servers(node)
        wasm_cc = container_config(pc, "wasm", images.ref("sleep"), args=["1000"])
        side_cc = container_config(
            pc,
            "sidecar",
            images.BUSYBOX,
            command=["sh", "-c", "echo sidecar up; sleep 1000"],
        )
        wasm = node.client.create_container(pod, wasm_cc, pc)
        side = node.client.create_container(pod, side_cc, pc)
        node.client.start_container(wasm)
        node.client.start_container(side)
        for cid in (wasm, side):
            status = node.client.wait_container(cid, [RUNNING, EXITED])
            assert status.state == RUNNING, f"{cid}: {describe(status)}"
        assert "sleeping 1000" in wait_log(log_file(pc, wasm_cc), "sleeping 1000")
        assert "sidecar up" in wait_log(log_file(pc, side_cc), "sidecar up")
        # Both still running, at once, each a child of the one shim.
        for cid in (wasm, side):
            status = node.client.container_status(cid)
            assert status.state == RUNNING, f"{cid}: {describe(status)}"
        pids = {
            "sandbox": sandbox_pid(node, pod),
            "wasm": container_pid(node, wasm),
            "sidecar": container_pid(node, side),
        }
        # Each in the cgroup CRI asked for (cgroupsPath /k8s.io/<id>, cgroupfs).
        for name, cid in (("sandbox", pod), ("wasm", wasm), ("sidecar", side)):
            procs = CGROUP_ROOT / "memory" / K8S_NAMESPACE / cid / "cgroup.procs"
            assert procs.exists(), f"no memory cgroup for the {name} ({procs})"
            assert str(pids[name]) in procs.read_text().split(), f"{name} not in {procs}"
        parents = {name: parent_of(pid) for name, pid in pids.items()}
        assert set(parents.values()) == {shim}, f"shim {shim}; parents {parents}"
        assert pywasm_servers(node) == [shim]
        assert not runc_shims(node), "a runc shim took part in a pywasm pod"

        # ExecSync (kubelet's exec probes, `crictl exec`): another guest in the Wasm
        # container, `runc exec` in the sidecar.
        code, out, err = node.client.exec_sync(wasm, ["/sleep.wasm", "0"])
        assert (code, out) == (0, b"sleeping 0\nslept\n"), (code, out, err)
        code, out, err = node.client.exec_sync(side, ["sh", "-c", "echo probe; exit 2"])
        assert (code, out) == (2, b"probe\n"), (code, out, err)
        # ContainerStats and UpdateContainerResources, from and to the containers' cgroups.
        for name, cid in (("wasm", wasm), ("sidecar", side)):
            stats = node.client.container_stats(cid)
            assert stats.memory.working_set_bytes.value > 0, f"{name}: {stats}"
            node.client.update_memory_limit(cid, 96 * 1024 * 1024)
            limit = CGROUP_ROOT / "memory" / K8S_NAMESPACE / cid / "memory.limit_in_bytes"
            assert int(limit.read_text()) == 96 * 1024 * 1024, f"{name}: {limit}"

        # The Wasm guest ends on SIGTERM: 128+15, well before the timeout.
        t0 = time.monotonic()
        node.client.stop_container(wasm, timeout=10)
        wasm_stop = time.monotonic() - t0
        status = node.client.container_status(wasm)
        assert status.state == EXITED, describe(status)
        assert status.exit_code == 143, describe(status)
        assert wasm_stop < 8, f"StopContainer of the Wasm guest took {wasm_stop:.1f}s"
        assert node.client.container_status(side).state == RUNNING, "sidecar died with the guest"

        # busybox sh is PID 1 of its pid namespace with no TERM handler: the kernel drops
        # SIGTERM, so only the SIGKILL after the timeout ends it: 128+9.
        t0 = time.monotonic()
        node.client.stop_container(side, timeout=2)
        side_stop = time.monotonic() - t0
        status = node.client.container_status(side)
        assert status.state == EXITED, describe(status)
        assert status.exit_code == 137, describe(status)
        assert side_stop >= 1.5, f"SIGKILL came before the timeout ({side_stop:.1f}s)"
        assert alive(shim), "the shim exited while the pod's sandbox still needed it"

        for cid in (wasm, side):
            node.client.remove_container(cid)
        assert node.client.list_containers(pod) == []
        remove_pod(node, pod)
        removed = True
        assert wait_gone(shim, SHIM_EXIT_SECONDS), (
            f"pywasm shim {shim} still alive {SHIM_EXIT_SECONDS:.0f}s after the pod was removed"
        )
    finally:
        if not removed:
            node.client.remove_everything()
    lines = shim_log(node, since)
    log = "\n".join(lines)
    assert len(re.findall(r"pywasm shim \d+ serving", log)) == 1, log
    assert f"pywasm shim {shim} serving {pod}" in log, log

    def about(cid: str) -> list[str]:
        return [line for line in lines if cid in line]

    assert any("runc" in line and "sandbox" in line for line in about(pod)), log
    assert any(re.search(r"Linux program.*runc", line) for line in about(side)), log
    assert any("wasm module" in line for line in about(wasm)), log
    assert not any("runc" in line for line in about(wasm)), "the Wasm guest went to runc"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_pause_exits_0_on_term_and_int(sig: signal.Signals) -> None:
    """The sandbox program blocks until SIGTERM/SIGINT, then exits 0 (CRI itself stops a
    sandbox with SIGKILL on both versions, so the pods above never show this)."""
    proc = subprocess.Popen([str(cri_images.pause_binary())])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(0.5)
        proc.send_signal(sig)
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_runtimeclass_names_the_configured_handler() -> None:
    """packaging/kubernetes/runtimeclass.yaml (RuntimeClass) points at the handler that both
    containerd snippets declare, and at the one the pods above ran with."""
    doc = yaml.safe_load((PACKAGING / "kubernetes" / "runtimeclass.yaml").read_text())
    assert doc["apiVersion"] == "node.k8s.io/v1"
    assert doc["kind"] == "RuntimeClass"
    handlers = set()
    for major, plugin in ((1, "io.containerd.grpc.v1.cri"), (2, "io.containerd.cri.v1.runtime")):
        snippet = tomllib.loads((PACKAGING / "containerd" / f"config-{major}.x.toml").read_text())
        runtimes = snippet["plugins"][plugin]["containerd"]["runtimes"]
        assert list(runtimes) == [doc["handler"]], runtimes
        assert runtimes[doc["handler"]]["runtime_type"] == nodesetup.RUNTIME_TYPE
        handlers.update(runtimes)
    assert handlers == {doc["handler"]} == {HANDLER}
    assert doc["metadata"]["name"] == HANDLER
