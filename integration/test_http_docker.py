"""An HTTP function published with `docker run -p` on Docker 28's default bridge (docs/http.md).

Docker on a private containerd 2.1 inside a network namespace the test makes (the harness of
integration/test_network_docker.py, integration/netns.py; used as is, with its check that a
test leaves no container, shim process or docker-proxy behind). The functions are the C CGI
guest (integration/guests/cgi.c) and the wasi:http/proxy component
(integration/guests/http/proxy_echo.py):

    docker run -d -p 8080:8080 --annotation pywasm.io/trigger=http \\
        --runtime=io.containerd.pywasm.v1 --platform=wasi/wasm pw-http-cgi
    curl -X POST --data-binary @body 'http://127.0.0.1:8080/api/items?id=7'
    docker logs      # one access line per request
    docker stop      # returns at once, exit code 0

Every request is made from inside the test namespace.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration import guests, http_guests, images
from integration.containerd import new_id
from integration.docker import DOCKERD, PYWASM
from integration.netns import Stack
from integration.test_docker_bridge import explain
from integration.test_network_docker import curl, docker_proxies, wait_200
from integration.test_network_docker import (  # noqa: F401 - the leak check after each test
    docker_clean as docker_clean,
)

WASM = (f"--runtime={PYWASM}", "--platform=wasi/wasm")
IMAGE = images.ref("http-cgi")
PROXY_IMAGE = images.ref("http-proxy")
PORT = 8080


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if not DOCKERD.exists():
        pytest.fail(f"{DOCKERD} is missing: run scripts/fetch-docker.sh (make install)")
    s = Stack("2.1", docker=True)
    try:
        s.start()
        s.docker.load(images.build_wasm_archive("http-cgi", guests.build("cgi")))
        s.docker.load(images.build_wasm_archive("http-proxy", http_guests.build()))
    except Exception:
        s.stop()
        raise
    try:
        yield s
    finally:
        left = s.stop()
        assert not left, f"tearing the bridge stack down found: {left}"


def test_function_behind_published_port(stack: Stack, tmp_path: Path) -> None:
    d = stack.docker
    name = new_id("http-p")
    began = time.monotonic()
    r = d.docker(
        "run",
        "-d",
        "--name",
        name,
        "-p",
        f"{PORT}:{PORT}",
        "--annotation",
        "pywasm.io/trigger=http",
        "--annotation",
        "pywasm.io/http-timeout=1",
        "-e",
        "GREETING=hi",
        *WASM,
        IMAGE,
        timeout=60,
    )
    assert r.returncode == 0, explain(r)
    url = f"http://127.0.0.1:{PORT}"
    try:
        took, _ = wait_200(stack, f"{url}/ready")
        print(f"docker run -d to the first 200 through -p: {time.monotonic() - began:.2f}s")

        answer = curl(
            stack, f"{url}/api/items?id=7", "-H", "X-Test: via-docker", "--data-binary", "{}"
        )
        assert answer.returncode == 0, explain(answer)
        assert answer.stdout.startswith("HTTP/1.1 200 OK\r\n"), explain(answer)
        assert answer.stdout.endswith(
            "\r\n\r\nmethod=POST\npath=/api/items\nquery=id=7\nheader=via-docker\nlength=2\nbody={}"
        ), explain(answer)
        env = curl(stack, f"{url}/env")
        assert "\nGREETING=hi\n" in env.stdout, explain(env)
        # Through the userland proxy the client is the bridge's gateway, not 127.0.0.1.
        assert "\nREMOTE_ADDR=172." in env.stdout, explain(env)
        assert curl(stack, f"{url}/notfound").stdout.startswith("HTTP/1.1 404 ")
        redirect = curl(stack, f"{url}/redirect").stdout
        assert redirect.startswith("HTTP/1.1 302 "), redirect
        assert "\r\nLocation: http://example.invalid/elsewhere\r\n" in redirect, redirect
        chunked = curl(stack, f"{url}/c", "-H", "Transfer-Encoding: chunked", "-d", "chunky")
        assert chunked.stdout.endswith(
            "\r\n\r\nmethod=POST\npath=/c\nquery=\nheader=-\nlength=6\nbody=chunky"
        ), explain(chunked)
        mib = tmp_path / "mib"
        mib.write_bytes(b"m" * (1 << 20))
        big = curl(stack, f"{url}/big", "--data-binary", f"@{mib}")
        assert big.stdout.endswith("\nlength=1048576\nbody=" + "m" * (1 << 20)), explain(big)
        assert curl(stack, f"{url}/trap").stdout.startswith("HTTP/1.1 500 ")
        assert curl(stack, f"{url}/loop").stdout.startswith("HTTP/1.1 504 ")
        assert curl(stack, f"{url}/after-loop").stdout.startswith("HTTP/1.1 200 ")
        assert docker_proxies(stack), "no docker-proxy serves the published port"

        logs = d.docker("logs", name, timeout=20)
        assert '"POST /api/items?id=7 HTTP/1.1" 200 ' in logs.stdout, explain(logs)
        assert '"GET /notfound HTTP/1.1" 404 14 ' in logs.stdout, explain(logs)
        assert '"GET /loop HTTP/1.1" 504 ' in logs.stdout, explain(logs)
        assert "listening on 0.0.0.0:8080" in logs.stderr, explain(logs)
        assert "GET /loop from 172." in logs.stderr, explain(logs)
        assert ": 504: the guest ran over its 1 s" in logs.stderr, explain(logs)

        t0 = time.monotonic()
        stop = d.docker("stop", name, timeout=30)
        stop_seconds = time.monotonic() - t0
        print(f"docker stop of an idle function: {stop_seconds:.3f}s")
        assert stop.returncode == 0, explain(stop)
        state = d.container_state(name)
        assert (state["Status"], state["ExitCode"]) == ("exited", 0), state
        assert stop_seconds < 2.0, f"docker stop took {stop_seconds:.2f}s"
    finally:
        rm = d.docker("rm", "-f", name, timeout=60)
    assert rm.returncode == 0, explain(rm)


def test_proxy_component_behind_published_port(stack: Stack) -> None:
    """The wasi:http/proxy function through Docker's -p: exact echo, env, 404, the access line
    in `docker logs`, docker stop at once with exit code 0."""
    d = stack.docker
    name = new_id("http-px")
    began = time.monotonic()
    r = d.docker(
        "run",
        "-d",
        "--name",
        name,
        "-p",
        f"{PORT}:{PORT}",
        "--annotation",
        "pywasm.io/trigger=http",
        "-e",
        "GREETING=hi",
        *WASM,
        PROXY_IMAGE,
        timeout=60,
    )
    assert r.returncode == 0, explain(r)
    url = f"http://127.0.0.1:{PORT}"
    try:
        # a first start compiles the component (CPython inside, 18 MB)
        wait_200(stack, f"{url}/ready", timeout=180)
        print(f"docker run -d to the first 200 through -p: {time.monotonic() - began:.2f}s")

        answer = curl(
            stack, f"{url}/api/items?id=7", "-H", "X-Test: via-docker", "--data-binary", "{}"
        )
        assert answer.returncode == 0, explain(answer)
        head, _, body = answer.stdout.partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 200 OK\r\n"), explain(answer)
        assert "\r\ncontent-type: text/plain" in head.lower(), explain(answer)
        assert "\r\nx-echo-method: POST" in head, explain(answer)
        assert body == "method=POST\npath=/api/items?id=7\nheader=via-docker\nbody={}", body
        big = "x" * 65536
        echoed = curl(stack, f"{url}/big", "--data-binary", big)
        assert echoed.stdout.endswith("\r\n\r\nmethod=POST\npath=/big\nheader=-\nbody=" + big)
        env = curl(stack, f"{url}/env")
        assert "\nGREETING=hi\n" in env.stdout, explain(env)
        assert curl(stack, f"{url}/notfound").stdout.startswith("HTTP/1.1 404 ")
        assert docker_proxies(stack), "no docker-proxy serves the published port"

        logs = d.docker("logs", name, timeout=20)
        assert '"POST /api/items?id=7 HTTP/1.1" 200 ' in logs.stdout, explain(logs)
        assert '"GET /notfound HTTP/1.1" 404 ' in logs.stdout, explain(logs)
        assert "listening on 0.0.0.0:8080" in logs.stderr, explain(logs)

        t0 = time.monotonic()
        stop = d.docker("stop", name, timeout=30)
        stop_seconds = time.monotonic() - t0
        print(f"docker stop of an idle proxy function: {stop_seconds:.3f}s")
        assert stop.returncode == 0, explain(stop)
        state = d.container_state(name)
        assert (state["Status"], state["ExitCode"]) == ("exited", 0), state
        assert stop_seconds < 2.0, f"docker stop took {stop_seconds:.2f}s"
    finally:
        rm = d.docker("rm", "-f", name, timeout=60)
    assert rm.returncode == 0, explain(rm)
