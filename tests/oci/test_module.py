import os

import pytest

from pywasmd.errors import InvalidArgument
from pywasmd.oci.module import LINUX, MISSING, WASM, locate_module, program_kind, resolve_in_root


def test_symlinks_stay_inside_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "app.wasm").write_bytes(b"\0asm\1\0\0\0")
    os.symlink("/bin/app.wasm", root / "abs")
    os.symlink("../../../../bin/app.wasm", root / "bin" / "rel")
    os.symlink("/etc/passwd", root / "escape")
    assert resolve_in_root(str(root), "/abs") == str(root / "bin" / "app.wasm")
    assert resolve_in_root(str(root), "/bin/rel") == str(root / "bin" / "app.wasm")
    assert resolve_in_root(str(root), "/escape") == str(root / "etc" / "passwd")
    assert resolve_in_root(str(root), "/../../x") == str(root / "x")


def test_locate_module_checks_existence_and_magic(tmp_path):
    (tmp_path / "app.wasm").write_bytes(b"\0asm\1\0\0\0")
    (tmp_path / "sh").write_bytes(b"\x7fELF....")
    assert locate_module(str(tmp_path), "/app.wasm") == str(tmp_path / "app.wasm")
    assert locate_module(str(tmp_path), "app.wasm", "/") == str(tmp_path / "app.wasm")
    with pytest.raises(InvalidArgument, match="not found"):
        locate_module(str(tmp_path), "/missing.wasm")
    with pytest.raises(InvalidArgument, match="not a WebAssembly module"):
        locate_module(str(tmp_path), "/sh")
    with pytest.raises(InvalidArgument, match="not a regular file"):
        locate_module(str(tmp_path), "/")


def _file(path, data: bytes, mode: int = 0o755) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def test_program_kind_reads_the_first_bytes(tmp_path):
    root = str(tmp_path)
    _file(tmp_path / "app.wasm", b"\0asm\1\0\0\0", 0o644)
    _file(tmp_path / "pause", b"\x7fELF\2\1\1\0")
    _file(tmp_path / "bin" / "busybox", b"\x7fELF\2\1\1\0")
    os.symlink("busybox", tmp_path / "bin" / "sh")
    _file(tmp_path / "run.sh", b"#!/bin/sh\necho hi\n")
    _file(tmp_path / "notes.txt", b"just text\n")
    _file(tmp_path / "elf-not-exec", b"\x7fELF\2\1\1\0", 0o644)
    assert program_kind(root, "/app.wasm") == WASM
    assert program_kind(root, "app.wasm", "/") == WASM
    assert program_kind(root, "/pause") == LINUX
    assert program_kind(root, "/run.sh") == LINUX
    # A bare name goes along PATH, as runc's exec would, symlinks resolved inside the root.
    assert program_kind(root, "sh", "/", ("PATH=/usr/bin:/bin",)) == LINUX
    assert program_kind(root, "sh", "/", ("PATH=/usr/bin",)) == MISSING
    # ...but next to the cwd only a module counts (pywasm's reading of a bare name).
    assert program_kind(root, "pause", "/", ("PATH=/usr/bin",)) == MISSING
    for name in ("/notes.txt", "/elf-not-exec", "/missing", "/bin"):
        assert program_kind(root, name) == MISSING, name


def test_program_kind_never_leaves_the_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/bin/sh", root / "sh")  # on the host this is a real ELF
    assert program_kind(str(root), "/sh") == MISSING
