"""`pywasm run` against real private containerds (1.6.20 and 2.1.9) through their gRPC API: a
local module (with a read-only `-v` mount), an image and a CNCF Wasm artifact pulled from a
loopback registry, an image containerd already has (from `ctr images import`), exit codes,
`-d` then `ctr task ls`, `-t`, `-i`, `-e`, annotations, signals. After each test the leak check
of conftest.py finds no task, container, shim or mount left (`--rm` is the default)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration import guests
from integration.containerd import VENV_BIN, Containerd, new_id, task_status
from integration.images import BUSYBOX
from integration.registry import LocalRegistry

PYWASM_CLI = str(VENV_BIN / "pywasm")


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    with LocalRegistry() as r:
        yield r


FIFO_ROOT = Path("/run/pywasm/run")


@pytest.fixture(autouse=True)
def no_fifo_left() -> Iterator[None]:
    """Every run removes the FIFO directory it made, failed runs included."""
    before = set(os.listdir(FIFO_ROOT)) if FIFO_ROOT.exists() else set()
    yield
    after = set(os.listdir(FIFO_ROOT)) if FIFO_ROOT.exists() else set()
    assert after <= before, f"FIFO directories left in {FIFO_ROOT}: {sorted(after - before)}"


def pywasm_run(
    ctrd: Containerd, *args: str | Path, input: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    argv = [PYWASM_CLI, "run", "--address", ctrd.address, *map(str, args)]
    return subprocess.run(
        argv,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def explain(r: subprocess.CompletedProcess[Any]) -> str:
    return f"exit {r.returncode}\nstdout: {r.stdout!r}\nstderr: {r.stderr!r}"


def push(module: Path, ref: str, fmt: str) -> None:
    argv = [PYWASM_CLI, "build", str(module), "-t", ref, "--format", fmt, "--push", "--insecure"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, explain(r)


def ctr_images(ctrd: Containerd) -> list[str]:
    return ctrd.ctr("images", "ls", "-q", timeout=30).stdout.split()


def test_local_module_with_a_readonly_volume(containerd: Containerd, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "greeting.txt").write_text("from the host\n")
    fs = guests.build("fs")
    vol = f"{data}:/data:ro"
    r = pywasm_run(containerd, "-v", vol, fs, "read", "/data/greeting.txt")
    assert r.returncode == 0, explain(r)
    assert r.stdout == "from the host\n"
    # :ro is a WASI grant without write permission: the guest's write fails, nothing lands.
    w = pywasm_run(containerd, "-v", vol, fs, "write", "/data/new.txt", "x")
    assert w.returncode == 1, explain(w)
    assert "error: write /data/new.txt" in w.stderr
    assert not (data / "new.txt").exists()
    # The module was wrapped into an image that containerd now lists.
    assert any(name.startswith("pywasm.local/fs:") for name in ctr_images(containerd))


def test_exit_codes_are_the_guests(containerd: Containerd) -> None:
    exitcode = guests.build("exitcode")
    for code in (0, 3, 42, 255):
        r = pywasm_run(containerd, exitcode, str(code))
        assert r.returncode == code, explain(r)
    trap = pywasm_run(containerd, guests.build("trap"))
    assert trap.returncode == 134, explain(trap)


def test_large_output_arrives_complete(containerd: Containerd) -> None:
    pattern = b"0123456789abcdefghijklmnopqrstuvwxyz\n"
    n, m = 3_000_000, 200_000
    argv = [PYWASM_CLI, "run", "--address", containerd.address, str(guests.build("bigout"))]
    r = subprocess.run([*argv, str(n), str(m)], capture_output=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == (pattern * (n // len(pattern) + 1))[:n]
    assert r.stderr == (pattern * (m // len(pattern) + 1))[:m]


def test_env_annotation_and_stdin(containerd: Containerd, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=yes\n")
    r = pywasm_run(
        containerd, "-e", "GREETING=hi", "--env-file", env_file, guests.build("env"), "GREETING"
    )
    assert r.returncode == 0, explain(r)
    assert "GREETING=hi" in r.stdout
    cat = pywasm_run(containerd, "-i", guests.build("cat"), input="piped in\n")
    assert cat.returncode == 0, explain(cat)
    assert cat.stdout == "piped in\n"
    # An annotation reaches the shim: the engine it names runs the guest (wasmer on 3.10).
    wasmer = pywasm_run(
        containerd, "--annotation", "pywasm.io/engine=wasmer", guests.build("hello"), "w"
    )
    assert wasmer.returncode == 0, explain(wasmer)
    assert wasmer.stdout == "hello from wasm\nw\n"
    bad = pywasm_run(containerd, "--annotation", "pywasm.io/engine=nope", guests.build("hello"))
    assert bad.returncode != 0
    assert "unknown engine 'nope'" in bad.stderr


def test_user_memory_tmpfs_workdir_cpus(containerd: Containerd, tmp_path: Path) -> None:
    fs = guests.build("fs")
    private = tmp_path / "private.txt"
    private.write_text("root only\n")
    private.chmod(0o600)
    tmp_path.chmod(0o755)
    vol = f"{tmp_path}:/data:ro"
    # pywasm run sets process.user itself, so this works on 1.6 too (ctr 1.6 has no --user).
    as_user = pywasm_run(
        containerd, "-v", vol, "--user", "1000:1000", fs, "read", "/data/private.txt"
    )
    assert as_user.returncode == 1, explain(as_user)
    assert "error: read /data/private.txt" in as_user.stderr
    as_root = pywasm_run(containerd, "-v", vol, fs, "read", "/data/private.txt")
    assert as_root.stdout == "root only\n", explain(as_root)
    oom = pywasm_run(containerd, "--memory", "32m", guests.build("memhog"))
    assert oom.returncode == 137, explain(oom)
    assert "out of memory" in oom.stderr
    tmpfs = pywasm_run(containerd, "--tmpfs", "/scratch:size=1m", fs, "write", "/scratch/x", "y")
    assert tmpfs.returncode == 0, explain(tmpfs)
    missing = pywasm_run(containerd, "-w", "/no/such/dir", guests.build("hello"))
    assert missing.returncode != 0
    assert "process.cwd '/no/such/dir' does not exist" in missing.stderr
    cpus = pywasm_run(containerd, "--cpus", "0.5", "-w", "/data", "-v", vol, guests.build("hello"))
    assert cpus.returncode == 0, explain(cpus)


def test_image_from_a_registry(containerd: Containerd, registry: LocalRegistry) -> None:
    ref = f"{registry.host}/run-image-{containerd.version.replace('.', '')}:1"
    push(guests.build("hello"), ref, "image")
    assert ref not in ctr_images(containerd)
    r = pywasm_run(containerd, "--insecure", ref, "one", "two")
    assert r.returncode == 0, explain(r)
    assert r.stdout == "hello from wasm\none\ntwo\n"
    assert ref in ctr_images(containerd)
    # ctr sees what pywasm run pulled, unpacked and usable by ctr itself.
    ctr = containerd.ctr(
        "run",
        "--rm",
        "--runtime",
        "io.containerd.pywasm.v1",
        "--platform",
        "wasi/wasm",
        ref,
        new_id("ctr-after-run"),
        "/hello.wasm",
        timeout=60,
    )
    assert ctr.returncode == 0, explain(ctr)
    assert ctr.stdout.startswith("hello from wasm")


def test_image_already_in_containerd(containerd: Containerd) -> None:
    r = pywasm_run(containerd, "--pull", "never", "docker.io/library/pw-args:latest", "x y", "z")
    assert r.returncode == 0, explain(r)
    assert "x y" in r.stdout
    missing = pywasm_run(containerd, "--pull", "never", "example.invalid/none:1")
    assert missing.returncode != 0
    assert "is not in containerd and --pull never was given" in missing.stderr


def test_artifact_from_a_registry(containerd: Containerd, registry: LocalRegistry) -> None:
    ref = f"{registry.host}/run-artifact-{containerd.version.replace('.', '')}:1"
    push(guests.build("args"), ref, "artifact")
    r = pywasm_run(containerd, "--insecure", ref, "a1", "a2")
    # Stored through the content API, an artifact never meets containerd's unpacker: 1.6.20,
    # whose `ctr images pull` refuses Wasm layers, runs it as 2.1 does.
    assert r.returncode == 0, explain(r)
    assert "a1" in r.stdout
    assert "a2" in r.stdout


@pytest.mark.parametrize("runtime", ["io.containerd.runc.v2", "io.containerd.pywasm.v1"])
def test_a_linux_image(containerd: Containerd, runtime: str) -> None:
    """The spec pywasm run builds is containerd's default one: runc takes it, and so does the
    pywasm shim's Linux path (a Linux entrypoint is handed to runc)."""
    r = pywasm_run(
        containerd,
        "--runtime",
        runtime,
        "--pull",
        "never",
        "--platform",
        "linux/amd64",
        BUSYBOX,
        "echo",
        "hi from",
        runtime,
    )
    assert r.returncode == 0, explain(r)
    assert r.stdout == f"hi from {runtime}\n"


def test_detach_then_ctr_task_ls(containerd: Containerd) -> None:
    cid = new_id("run-detached")
    r = pywasm_run(containerd, "-d", "--name", cid, guests.build("sleep"), "30")
    assert r.returncode == 0, explain(r)
    assert r.stdout.strip() == cid
    try:
        assert task_status(containerd, cid) == "RUNNING"
        again = pywasm_run(containerd, "-d", "--name", cid, guests.build("sleep"), "30")
        assert again.returncode != 0
        assert f"a container named {cid!r} already exists" in again.stderr
    finally:
        containerd.ctr("tasks", "kill", "-s", "SIGKILL", cid, timeout=20)
        deadline = time.monotonic() + 20
        while task_status(containerd, cid) == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.1)
        containerd.ctr("tasks", "rm", cid, timeout=20)
        containerd.ctr("containers", "rm", cid, timeout=20)


def test_terminal(containerd: Containerd) -> None:
    hello = guests.build("hello")
    cmd = f"{PYWASM_CLI} run -t --address {containerd.address} {hello} tty"
    r = subprocess.run(
        ["script", "-qec", cmd, "/dev/null"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, explain(r)
    # A terminal turns \n into \r\n: the guest wrote to a pty, not a pipe.
    assert r.stdout.replace(b"\r\r\n", b"\r\n") == b"hello from wasm\r\ntty\r\n", r.stdout


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_reach_the_guest(containerd: Containerd, sig: int, code: int) -> None:
    argv = [PYWASM_CLI, "run", "--address", containerd.address, str(guests.build("sleep")), "60"]
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"sleeping 60\n"
            os.kill(proc.pid, sig)
            assert proc.wait(30) == code
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_bad_input_is_named(containerd: Containerd, tmp_path: Path) -> None:
    not_wasm = tmp_path / "script.wasm"
    not_wasm.write_text("#!/bin/sh\necho hi\n")
    r = pywasm_run(containerd, not_wasm)
    assert r.returncode == 2, explain(r)
    assert f"{not_wasm}: not a WebAssembly binary" in r.stderr
    v = pywasm_run(containerd, "-v", "relative:/data", guests.build("hello"))
    assert v.returncode == 2
    assert "the host path must be absolute" in v.stderr
    down = subprocess.run(
        [PYWASM_CLI, "run", "--address", str(tmp_path / "no.sock"), str(guests.build("hello"))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert down.returncode == 1
    assert f"no containerd socket at {tmp_path / 'no.sock'}" in down.stderr
