"""`pywasm` commands around artifacts, indexes and registries (no registry needed)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import wasmtime

from pywasmd.cli import main


@pytest.fixture
def module(tmp_path: Path) -> Path:
    path = tmp_path / "app.wasm"
    path.write_bytes(wasmtime.wat2wasm('(module (func (export "_start")))'))
    return path


def _fields(out: str) -> dict[str, str]:
    rows = (line.split(":", 1) for line in out.splitlines())
    return {k.strip(): v.strip() for k, v in rows}


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("pywasm: error: "), err
    return err


def test_build_artifact_and_inspect(
    module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "a.tar"
    assert main(["build", str(module), "-t", "app:1", "--format", "artifact", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    fields = _fields(capsys.readouterr().out)
    assert fields["kind"] == "Wasm OCI artifact"
    assert fields["reference"] == "docker.io/library/app:1"
    assert fields["config type"] == "application/vnd.wasm.config.v0+json"
    assert fields["layer type"] == "application/wasm"
    assert fields["wasi"] == "wasip1 (core module)"
    assert fields["imports"] == "(none)"
    assert fields["exports"] == "_start"


def test_build_index_and_inspect_a_platform(
    module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    linux = tmp_path / "linux.tar"
    other = tmp_path / "other.wasm"
    other.write_bytes(wasmtime.wat2wasm("(module)"))
    argv = ["build", str(other), "-t", "l:1", "--platform", "linux/amd64", "-o", str(linux)]
    assert main(argv) == 0
    out = tmp_path / "multi.tar"
    assert main(["build", str(module), "-t", "m:1", "--index", str(linux), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    fields = _fields(capsys.readouterr().out)
    assert fields["platforms"] == "wasi/wasm, linux/amd64"
    assert fields["platform"] == "wasi/wasm"
    assert main(["inspect", str(out), "--platform", "linux/amd64"]) == 0
    assert _fields(capsys.readouterr().out)["platform"] == "linux/amd64"
    assert "no image for platform" in _fails(["inspect", str(out), "--platform", "a/b"], capsys)


def test_build_needs_a_destination(module: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "-o OUT.tar, --push" in _fails(["build", str(module), "-t", "x"], capsys)


@pytest.mark.parametrize("flag", [["--env", "A=1"], ["--arg", "x"], ["--workdir", "/w"]])
def test_artifact_refuses_image_only_flags(
    module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str]
) -> None:
    out = tmp_path / "a.tar"
    argv = ["build", str(module), "-t", "x", "--format", "artifact", "-o", str(out), *flag]
    assert f"{flag[0]} cannot be used with --format artifact" in _fails(argv, capsys)
    assert not out.exists()


def test_registry_down_is_exit_1_with_a_hint(
    module: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = _fails(["build", str(module), "-t", f"127.0.0.1:{port}/x:1", "--push"], capsys, 1)
    assert f"cannot reach registry 127.0.0.1:{port}: connection refused" in err
    assert "use --insecure for plain HTTP" in err


def test_push_of_a_broken_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar")
    assert "not a readable tar archive" in _fails(["push", str(bad), "127.0.0.1:1/x:1"], capsys)


def test_import_without_containerd(
    module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "a.tar"
    assert main(["build", str(module), "-t", "x", "-o", str(out)]) == 0
    sock = tmp_path / "none.sock"
    err = _fails(["import", str(out), "--address", str(sock), "--ctr", "sh"], capsys, 1)
    assert f"no containerd socket at {sock}" in err
