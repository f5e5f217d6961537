"""Docker's own builder makes Wasm images: `docker buildx build --platform wasi/wasm` (Debian
sid's docker-buildx 0.29.1, unpacked by scripts/fetch-docker.sh, a CLI plugin in the private
daemon's $DOCKER_CONFIG/cli-plugins) on Docker 28 with the containerd image store, over
containerd 2.1.9; the image runs with `--runtime=io.containerd.pywasm.v1`, with and without
`--platform`. One Dockerfile also builds `wasi/wasm` and `linux/amd64` (a static busybox) under
one tag, and each platform runs on its runtime."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration import guests
from integration.containerd import VENV_BIN, Containerd
from integration.docker import BUILDX, DOCKERD, NAMESPACE, PYWASM, Dockerd, DockerError
from integration.images import BUSYBOX_BINARY

DOCKERFILE = """\
FROM scratch
COPY app.wasm /app.wasm
ENTRYPOINT ["/app.wasm"]
"""

# One Dockerfile, two platforms: the final stage is picked by the platform being built.
MULTI_DOCKERFILE = """\
ARG TARGETOS
FROM scratch AS wasi
COPY app.wasm /app.wasm
ENTRYPOINT ["/app.wasm"]

FROM scratch AS linux
COPY busybox /bin/busybox
ENTRYPOINT ["/bin/busybox", "echo", "hello from linux"]

FROM ${TARGETOS}
"""


def explain(r: subprocess.CompletedProcess[Any]) -> str:
    return f"exit {r.returncode}\nstdout: {r.stdout[-3000:]}\nstderr: {r.stderr[-3000:]}"


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    for binary in (DOCKERD, BUILDX):
        if not binary.exists():
            pytest.fail(f"{binary} is missing: run scripts/fetch-docker.sh", pytrace=False)
    ctrd = Containerd("2.1")
    daemon = Dockerd(ctrd)
    try:
        ctrd.start()
        daemon.start()
    except (DockerError, RuntimeError, OSError) as e:
        daemon.stop()
        ctrd.stop()
        pytest.fail(f"Docker could not be set up: {e}", pytrace=False)
    try:
        yield daemon
    finally:
        daemon.stop()
        ctrd.stop()


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ctx = tmp_path_factory.mktemp("buildx")
    shutil.copy(guests.build("hello"), ctx / "app.wasm")
    shutil.copy(BUSYBOX_BINARY, ctx / "busybox")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "Dockerfile.multi").write_text(MULTI_DOCKERFILE)
    return ctx


def platforms(d: Dockerd, ref: str) -> str:
    """The PLATFORMS column of `ctr images ls` for `ref` in Docker's containerd namespace."""
    r = subprocess.run(
        [*d.ctrd.ctr_argv("images", "ls", namespace=NAMESPACE)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for line in r.stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == ref:
            return fields[-2]
    raise AssertionError(f"{ref} not in containerd's image store:\n{r.stdout}")


def run(d: Dockerd, *args: str) -> subprocess.CompletedProcess[str]:
    return d.docker("run", "--rm", "--network", "none", *args, timeout=120)


def test_buildx_is_the_unpacked_plugin(dockerd: Dockerd) -> None:
    r = dockerd.docker("buildx", "version", timeout=60)
    assert r.returncode == 0, explain(r)
    assert "github.com/docker/buildx 0.29.1" in r.stdout


def test_build_and_run_a_wasi_image(dockerd: Dockerd, context: Path) -> None:
    r = dockerd.docker(
        "buildx",
        "build",
        "--platform",
        "wasi/wasm",
        "-t",
        "bx-hello:1",
        "--load",
        str(context),
        timeout=300,
    )
    assert r.returncode == 0, explain(r)
    assert platforms(dockerd, "docker.io/library/bx-hello:1") == "wasi/wasm"
    inspect = dockerd.docker(
        "image",
        "inspect",
        "--format",
        "{{.Os}}/{{.Architecture}} {{json .Config.Entrypoint}}",
        "bx-hello:1",
    )
    assert inspect.stdout.strip() == 'wasi/wasm ["/app.wasm"]', explain(inspect)
    with_platform = run(
        dockerd, f"--runtime={PYWASM}", "--platform", "wasi/wasm", "bx-hello:1", "a"
    )
    assert with_platform.returncode == 0, explain(with_platform)
    assert with_platform.stdout == "hello from wasm\na\n"
    # The only platform of the image: Docker warns that it is not the host's, and runs it.
    without = run(dockerd, f"--runtime={PYWASM}", "bx-hello:1", "b")
    assert without.returncode == 0, explain(without)
    assert without.stdout == "hello from wasm\nb\n"
    assert "does not match the detected host platform" in without.stderr
    # The same image from Docker's containerd namespace, with pywasm run (Docker's snapshots
    # reused, its attestation manifest skipped).
    argv = [str(VENV_BIN / "pywasm"), "run", "--address", dockerd.ctrd.address]
    argv += ["--namespace", NAMESPACE, "--pull", "never", "docker.io/library/bx-hello:1", "c"]
    direct = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert direct.returncode == 0, explain(direct)
    assert direct.stdout == "hello from wasm\nc\n"


def test_multi_platform_build(dockerd: Dockerd, context: Path) -> None:
    r = dockerd.docker(
        "buildx",
        "build",
        "--platform",
        "wasi/wasm,linux/amd64",
        "-f",
        str(context / "Dockerfile.multi"),
        "-t",
        "bx-multi:1",
        "--load",
        str(context),
        timeout=300,
    )
    assert r.returncode == 0, explain(r)
    # The containerd image store keeps both platforms under one tag (an OCI index).
    assert platforms(dockerd, "docker.io/library/bx-multi:1") == "linux/amd64,wasi/wasm"
    wasm = run(dockerd, f"--runtime={PYWASM}", "--platform", "wasi/wasm", "bx-multi:1", "c")
    assert wasm.returncode == 0, explain(wasm)
    assert wasm.stdout == "hello from wasm\nc\n"
    linux = run(dockerd, "--platform", "linux/amd64", "bx-multi:1")
    assert linux.returncode == 0, explain(linux)
    assert linux.stdout == "hello from linux\n"
    # Without --platform Docker picks the host's (linux/amd64) variant; the pywasm shim sees a
    # Linux program and hands it to runc, so the tag still runs, as Linux.
    default = run(dockerd, f"--runtime={PYWASM}", "bx-multi:1")
    assert default.returncode == 0, explain(default)
    assert default.stdout == "hello from linux\n"
