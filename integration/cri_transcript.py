"""Print what kubelet would see of a Wasm + Linux sidecar pod with RuntimeClass pywasm.

    .venv/bin/python -m integration.cri_transcript [1.6|2.1]

Starts a private CRI-enabled containerd (the shipped pywasm snippet, a local pause image),
runs the pod through CRI call by call, prints each call with what came back, the CRI log
files, the shim's own log lines, and removes everything. The same scenario is asserted by
integration/test_cri.py; this is the human-readable run.
"""

from __future__ import annotations

import sys
import time

from integration import cri_images, images
from integration.containerd import Containerd
from integration.cri import (
    EXITED,
    RUNNING,
    CriClient,
    container_config,
    log_file,
    log_messages,
    pod_config,
    state_name,
    verbose_pid,
)
from integration.probes import cmdline, parent_of


def main(version: str) -> None:
    ctrd = Containerd(version, cri=True)
    ctrd.start()
    try:
        cri_images.import_cri_images(ctrd, images.build_archives())
        with CriClient(ctrd.address) as client:
            ctrd.shim_ids = client.pod_ids
            _wasm_only_pod(ctrd, client)
            _pod(ctrd, client)
    finally:
        ctrd.stop()


def _say(text: str) -> None:
    print(text, flush=True)


def _wasm_only_pod(ctrd: Containerd, client: CriClient) -> None:
    since = ctrd.log_size()
    _say(f"# containerd {version_of(ctrd)}: a Wasm-only pod")
    pc = pod_config("hello", ctrd.pod_logs)
    pod = client.run_pod_sandbox(pc, handler="pywasm")
    _say(f"RunPodSandbox(hello, runtime_handler=pywasm) -> {pod[:12]}")
    cc = container_config(pc, "hello", images.ref("hello"), args=["a", "b"])
    cid = client.create_container(pod, cc, pc)
    _say(f"CreateContainer(hello, image={images.ref('hello')}, args=[a, b]) -> {cid[:12]}")
    client.start_container(cid)
    _say("StartContainer(hello)")
    status = client.wait_container(cid, [EXITED])
    _say(
        f"ContainerStatus(hello) -> {state_name(status.state)}, exit {status.exit_code}, "
        f"reason {status.reason}"
    )
    _say(f"CRI log of hello: {log_messages(log_file(pc, cc))}")
    client.remove_container(cid)
    client.stop_pod_sandbox(pod)
    client.remove_pod_sandbox(pod)
    _say("RemoveContainer, StopPodSandbox, RemovePodSandbox")
    time.sleep(1.0)
    _shim_log(ctrd, since)


def _shim_log(ctrd: Containerd, since: int) -> None:
    _say("shim log:")
    for line in ctrd.log_since(since).splitlines():
        if "runtime=io.containerd.pywasm.v1" in line and "level=DEBUG" not in line:
            _say("  " + line.split('msg="', 1)[-1].split('" runtime=')[0][:150])


def _pod(ctrd: Containerd, client: CriClient) -> None:
    since = ctrd.log_size()
    _say(f"# containerd {version_of(ctrd)}: a Wasm + Linux sidecar pod")
    pc = pod_config("mixed", ctrd.pod_logs)
    pod = client.run_pod_sandbox(pc, handler="pywasm")
    _say(f"RunPodSandbox(mixed, runtime_handler=pywasm) -> {pod[:12]}")
    wasm_cc = container_config(pc, "wasm", images.ref("sleep"), args=["1000"])
    side_cc = container_config(
        pc, "sidecar", images.BUSYBOX, command=["sh", "-c", "echo sidecar up; sleep 1000"]
    )
    wasm = client.create_container(pod, wasm_cc, pc)
    _say(f"CreateContainer(wasm, image={images.ref('sleep')}, args=[1000]) -> {wasm[:12]}")
    side = client.create_container(pod, side_cc, pc)
    _say(f"CreateContainer(sidecar, image={images.BUSYBOX}, sh -c ...) -> {side[:12]}")
    for name, cid in (("wasm", wasm), ("sidecar", side)):
        client.start_container(cid)
        _say(f"StartContainer({name})")
    for name, cid in (("wasm", wasm), ("sidecar", side)):
        status = client.wait_container(cid, [RUNNING])
        _say(f"ContainerStatus({name}) -> {state_name(status.state)}")
    time.sleep(0.5)
    pids = {
        "sandbox": verbose_pid(client.pod_sandbox_status(pod, verbose=True).info),
        "wasm": verbose_pid(client.container_status_response(wasm, verbose=True).info),
        "sidecar": verbose_pid(client.container_status_response(side, verbose=True).info),
    }
    for name, pid in pids.items():
        parent = parent_of(pid)
        _say(f"  {name:8} pid {pid:<7} {cmdline(pid)[:50]!r:54} parent {parent}")
    _say(f"  shim: {cmdline(parent_of(pids['wasm']))[:200]}")
    code, out, _ = client.exec_sync(wasm, ["/sleep.wasm", "0"])
    _say(f"ExecSync(wasm, [/sleep.wasm, 0]) -> exit {code}, stdout {out!r}")
    code, out, _ = client.exec_sync(side, ["sh", "-c", "echo probe; exit 2"])
    _say(f"ExecSync(sidecar, [sh, -c, 'echo probe; exit 2']) -> exit {code}, stdout {out!r}")
    for name, cid in (("wasm", wasm), ("sidecar", side)):
        stats = client.container_stats(cid)
        _say(f"ContainerStats({name}) -> working set {stats.memory.working_set_bytes.value} B")
    for name, cid, timeout in (("wasm", wasm, 10), ("sidecar", side, 2)):
        t0 = time.monotonic()
        client.stop_container(cid, timeout=timeout)
        took = time.monotonic() - t0
        status = client.container_status(cid)
        _say(
            f"StopContainer({name}, timeout={timeout}) took {took:.2f}s -> "
            f"{state_name(status.state)}, exit {status.exit_code}"
        )
    for name, cc in (("wasm", wasm_cc), ("sidecar", side_cc)):
        _say(f"CRI log of {name}: {log_messages(log_file(pc, cc))}")
    for cid in (wasm, side):
        client.remove_container(cid)
    client.stop_pod_sandbox(pod)
    client.remove_pod_sandbox(pod)
    _say("RemoveContainer x2, StopPodSandbox, RemovePodSandbox")
    time.sleep(1.0)
    _shim_log(ctrd, since)


def version_of(ctrd: Containerd) -> str:
    return ctrd.version


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "1.6")
