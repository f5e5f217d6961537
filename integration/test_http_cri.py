"""An HTTP function in a CRI pod whose POD annotations make it one (docs/http.md).

Kubernetes has no container annotations of its own: `pywasm.io/*` annotations reach pywasm only
as pod annotations, which containerd's CRI copies into a container's OCI config when the runtime
handler lists them in `pod_annotations`; the shipped snippet (`pywasm config containerd`) does.
The pod (handler pywasm, host network, the harness of integration/test_cri.py) carries
`pywasm.io/trigger=http` and `pywasm.io/listen=127.0.0.1:PORT`; its container is the C CGI
function, then the wasi:http/proxy component (integration/guests/http/proxy_echo.py). curl
answers come from it, byte for byte; the access lines are in the container's CRI log;
StopContainer (SIGTERM) ends it at once with exit code 0; after the pod is removed nothing is
left (test_cri.py's leak check: pods, containers, tasks, shim processes, mounts, cgroups,
sockets) and the port is free.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from integration import cri_images, guests, http_guests, images
from integration.cri import EXITED, container_config, log_file, log_messages, pod_config
from integration.test_cri import HANDLER, Node, describe, remove_pod
from integration.test_cri import (  # noqa: F401 - the leak check after each test
    no_cri_leaks as no_cri_leaks,
)
from integration.test_cri import node as node  # noqa: F401 - the CRI node fixture

IMAGE = images.ref("http-cgi")
PROXY_IMAGE = images.ref("http-proxy")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _curl(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-s", "--max-time", "5", *extra, url], capture_output=True, text=True, check=False
    )


def test_pod_annotations_make_an_http_function(node: Node) -> None:
    archive: Path = images.build_wasm_archive("http-cgi", guests.build("cgi"))
    cri_images.import_image(node.ctrd, IMAGE, archive, "wasi/wasm")
    port = _free_port()
    pc = pod_config(
        "http-fn",
        node.ctrd.pod_logs,
        annotations={
            "pywasm.io/trigger": "http",
            "pywasm.io/listen": f"127.0.0.1:{port}",
            "pywasm.io/http-timeout": "2",
        },
    )
    pod = node.client.run_pod_sandbox(pc, handler=HANDLER)
    try:
        cc = container_config(pc, "fn", IMAGE, envs={"GREETING": "from CRI"})
        cid = node.client.create_container(pod, cc, pc)
        node.client.start_container(cid)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        answer = _curl(f"{url}/items?id=7", "-H", "X-Test: pod", "--data-binary", "abc")
        while answer.returncode != 0 and time.monotonic() < deadline:
            status = node.client.container_status(cid)
            assert status.state != EXITED, (
                f"the container ran as a command, not as an HTTP function: {describe(status)}; "
                f"stdout {log_messages(log_file(pc, cc), 'stdout')}"
            )
            time.sleep(0.1)
            answer = _curl(f"{url}/items?id=7", "-H", "X-Test: pod", "--data-binary", "abc")
        assert answer.stdout == (
            "method=POST\npath=/items\nquery=id=7\nheader=pod\nlength=3\nbody=abc"
        ), answer
        env = _curl(f"{url}/env").stdout
        assert "\nGREETING=from CRI\n" in env, env
        redirect = _curl(f"{url}/redirect", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}")
        assert redirect.stdout == "302 http://example.invalid/elsewhere", redirect
        code = ("-o", "/dev/null", "-w", "%{http_code}")
        assert _curl(f"{url}/loop", *code).stdout == "504"
        assert _curl(f"{url}/after-loop", *code).stdout == "200"

        node.client.stop_container(cid, timeout=10)
        status = node.client.wait_container(cid, [EXITED])
        assert (status.state, status.exit_code) == (EXITED, 0), describe(status)
        lines = log_messages(log_file(pc, cc), "stdout")
        assert any('"POST /items?id=7 HTTP/1.1" 200 ' in line for line in lines), lines
        errors = log_messages(log_file(pc, cc), "stderr")
        assert any("GET /loop from 127.0.0.1: 504: the guest ran over" in e for e in errors), errors
        node.client.remove_container(cid)
    finally:
        remove_pod(node, pod)
    assert _port_free(port), f"127.0.0.1:{port} is still taken after the pod was removed"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_pod_annotations_make_a_proxy_function(node: Node) -> None:
    archive: Path = images.build_wasm_archive("http-proxy", http_guests.build())
    cri_images.import_image(node.ctrd, PROXY_IMAGE, archive, "wasi/wasm")
    port = _free_port()
    pc = pod_config(
        "http-proxy-fn",
        node.ctrd.pod_logs,
        annotations={
            "pywasm.io/trigger": "http",
            "pywasm.io/listen": f"127.0.0.1:{port}",
            "pywasm.io/http-timeout": "2",
        },
    )
    pod = node.client.run_pod_sandbox(pc, handler=HANDLER)
    try:
        cc = container_config(pc, "fn", PROXY_IMAGE, envs={"GREETING": "from CRI"})
        cid = node.client.create_container(pod, cc, pc)
        node.client.start_container(cid)
        url = f"http://127.0.0.1:{port}"
        # a first start compiles the component (CPython inside)
        deadline = time.monotonic() + 180
        args = ("-i", "-H", "X-Test: pod", "--data-binary", "abc")
        answer = _curl(f"{url}/items?id=7", *args)
        while answer.returncode != 0 and time.monotonic() < deadline:
            status = node.client.container_status(cid)
            assert status.state != EXITED, (
                f"the container ran as a command, not as an HTTP function: {describe(status)}; "
                f"stderr {log_messages(log_file(pc, cc), 'stderr')}"
            )
            time.sleep(0.2)
            answer = _curl(f"{url}/items?id=7", *args)
        # (text mode: the CRLFs read as LFs)
        head, _, body = answer.stdout.partition("\n\n")
        assert head.startswith("HTTP/1.1 200 OK\n"), answer
        assert "\nx-echo-method: POST" in head, answer
        assert body == "method=POST\npath=/items?id=7\nheader=pod\nbody=abc", answer
        # The container's env only (GREETING may be the first line): no CGI variable.
        env = _curl(f"{url}/env").stdout.splitlines()
        assert "GREETING=from CRI" in env, env
        assert not [v for v in env if v.startswith(("GATEWAY_INTERFACE=", "HTTP_"))], env
        assert _curl(f"{url}/notfound", "-o", "/dev/null", "-w", "%{http_code}").stdout == "404"
        assert _curl(f"{url}/trap", "-o", "/dev/null", "-w", "%{http_code}").stdout == "500"

        node.client.stop_container(cid, timeout=10)
        status = node.client.wait_container(cid, [EXITED])
        assert (status.state, status.exit_code) == (EXITED, 0), describe(status)
        lines = log_messages(log_file(pc, cc), "stdout")
        assert any('"POST /items?id=7 HTTP/1.1" 200 ' in line for line in lines), lines
        errors = log_messages(log_file(pc, cc), "stderr")
        assert any("GET /trap from 127.0.0.1: 500: the guest trapped" in e for e in errors), errors
        node.client.remove_container(cid)
    finally:
        remove_pod(node, pod)
    assert _port_free(port), f"127.0.0.1:{port} is still taken after the pod was removed"
