import os

import pytest

from pywasmd.errors import InvalidArgument
from pywasmd.oci.module import locate_module, resolve_in_root


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
