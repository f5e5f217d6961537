import json
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

from pywasmd.cli import main
from pywasmd.image.layout import read_archive


@pytest.fixture
def module(tmp_path: Path) -> Path:
    path = tmp_path / "hello.wasm"
    path.write_bytes(wasmtime.wat2wasm('(module (func (export "_start")))'))
    return path


def test_build_writes_an_importable_archive(
    module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = tmp_path / "data.txt"
    extra.write_text("data\n")
    out = tmp_path / "hello.tar"
    argv = [str(module), "-t", "hello", "-o", str(out), "--env", "A=1", "--env", "B=x=y"]
    argv += ["--arg", "one", "--arg", "two", "--file", f"{extra}:/etc/data.txt"]
    assert main(["build", *argv]) == 0
    image = read_archive(out)
    printed = capsys.readouterr().out.split()
    assert printed == ["docker.io/library/hello:latest", image.manifest_digest]
    assert image.reference == "docker.io/library/hello:latest"
    assert str(image.platform) == "wasi/wasm"
    assert image.entrypoint == ["/hello.wasm"]
    assert image.cmd == ["one", "two"]
    assert image.env == ["A=1", "B=x=y"]
    assert image.read_file("/hello.wasm") == module.read_bytes()
    assert image.read_file("/etc/data.txt") == b"data\n"


def test_build_is_reproducible(module: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    assert main(["build", str(module), "-t", "hello", "-o", str(a)]) == 0
    assert main(["build", str(module), "-t", "hello:latest", "-o", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_build_copies_directories_and_sets_platform(module: Path, tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("<p>hi</p>")
    out = tmp_path / "x.tar"
    argv = ["build", str(module), "-t", "x", "-o", str(out), "--file", f"{tmp_path / 'www'}:/www"]
    assert main([*argv, "--platform", "wasip2/wasm", "--workdir", "/www"]) == 0
    image = read_archive(out)
    assert image.read_file("/www/index.html") == b"<p>hi</p>"
    assert str(image.platform) == "wasip2/wasm"
    assert image.config["config"]["WorkingDir"] == "/www"


def test_inspect(module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hello.tar"
    assert main(["build", str(module), "-t", "hello", "-o", str(out), "--arg", "x"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    lines = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    fields = {k.strip(): v.strip() for k, v in lines.items()}
    assert fields["platform"] == "wasi/wasm"
    assert json.loads(fields["entrypoint"]) == ["/hello.wasm"]
    assert fields["module"] == f"/hello.wasm ({module.stat().st_size} bytes)"
    assert fields["module digest"].startswith("sha256:")


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("pywasm: error: "), err
    return err


def test_not_wasm_names_the_file_and_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "o.tar")
    cases = {
        "elf.wasm": (b"\x7fELF\x02\x01\x01", "ELF executable"),
        "text.wasm": (b'(module (func (export "_start")))', "WebAssembly text"),
        "script.wasm": (b"#!/bin/sh\necho\n", "script"),
        "empty.wasm": (b"", "empty"),
        "short.wasm": (b"\0asm", "truncated"),
        "blob.wasm": (b"\x00\x01\x02\x03\xff\xfe", "00 01 02 03 ff fe"),
        "notes.wasm": (b"hello world\n", "text starting 'hello world"),
    }
    for name, (content, what) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        err = _fails(["build", str(path), "-t", "x", "-o", out], capsys)
        assert f"{path}: not a WebAssembly binary" in err
        assert what in err
    assert not (tmp_path / "o.tar").exists()


def test_missing_files(module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "o.tar")
    missing = tmp_path / "nope.wasm"
    err = _fails(["build", str(missing), "-t", "x", "-o", out], capsys)
    assert f"{missing}: no such file" in err
    err = _fails(["build", str(tmp_path), "-t", "x", "-o", out], capsys)
    assert f"{tmp_path}: is a directory" in err
    gone = tmp_path / "gone.txt"
    err = _fails(["build", str(module), "-t", "x", "-o", out, "--file", f"{gone}:/g"], capsys)
    assert str(gone) in err
    err = _fails(["inspect", str(tmp_path / "missing.tar")], capsys)
    assert "missing.tar" in err


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--env", "NOEQUALS"], "--env 'NOEQUALS'"),
        (["--env", "=v"], "--env '=v'"),
        (["--label", "x"], "--label 'x'"),
        (["--file", "relative"], "HOST:GUEST"),
        (["--platform", "wasi"], "bad platform"),
        (["--workdir", "rel"], "--workdir"),
    ],
)
def test_bad_flags(
    module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], match: str
) -> None:
    out = str(tmp_path / "o.tar")
    err = _fails(["build", str(module), "-t", "x", "-o", out, *extra], capsys)
    assert match in err


def test_bad_reference_and_usage(
    module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "o.tar")
    assert "Hello" in _fails(["build", str(module), "-t", "Hello", "-o", out], capsys)
    assert "-t/--tag" in _fails(["build", str(module), "-o", out], capsys)
    assert "COMMAND" in _fails([], capsys)
    assert "invalid choice" in _fails(["frobnicate"], capsys)


def test_unwritable_output_is_exit_1(
    module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "no" / "such" / "dir" / "o.tar"
    err = _fails(["build", str(module), "-t", "x", "-o", str(out)], capsys, code=1)
    assert str(out) in err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "build" in text
    assert "inspect" in text
    assert main(["build", "--help"]) == 0
    assert "--file HOST:GUEST" in capsys.readouterr().out


def test_console_script_help_does_not_import_image_code() -> None:
    code = "import sys; from pywasmd.cli import main; main(['--help']); "
    code += "print(sorted(m for m in sys.modules if m.startswith('pywasmd.image')))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip().splitlines()[-1] == "[]"
