"""Each piece of format or contract knowledge is written in one module (issue 12).

Scans every string and bytes constant in pywasmd (the generated api/ excluded) with ast and
fails when one of these values appears outside its home: a second copy is how the bundle
contract and the Wasm format drifted apart before.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "pywasmd"

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: value -> the module that owns it (relative to pywasmd/)
HOMES: dict[str | bytes, str] = {
    b"\0asm": "wasmbin.py",
    "init.pid": "paths.py",
    "pywasm-cgroup": "paths.py",
    "pywasm-mounts": "paths.py",
    "pywasm-runc": "paths.py",
    "pywasm-runc.log": "paths.py",
    "/run/pywasm/runc": "paths.py",
    "/run/containerd/s": "paths.py",
    DEFAULT_PATH: "paths.py",
    "application/wasm": "image/mediatypes.py",
    "application/vnd.wasm.content.layer.v1+wasm": "image/mediatypes.py",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm": "image/mediatypes.py",
    "application/vnd.wasm.config.v0+json": "image/mediatypes.py",
    "application/vnd.oci.image.index.v1+json": "image/mediatypes.py",
    "application/vnd.oci.image.manifest.v1+json": "image/mediatypes.py",
}
#: Copies that wait for the Task service rewrite (issue 12) to take them from pywasmd.paths.
PENDING: set[tuple[str, str | bytes]] = set()
# `pywasm --help` must not import pywasmd.image (tests/image/test_pywasm_cli.py), and
# client/run.py reads these at import: they move when its image handling is imported lazily.
PENDING |= {
    ("client/run.py", "application/vnd.wasm.config.v0+json"),
    ("client/run.py", "application/vnd.oci.image.index.v1+json"),
    ("client/run.py", "application/vnd.oci.image.manifest.v1+json"),
}


def _copies() -> list[tuple[str, str | bytes]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        if where.startswith("api/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in HOMES:
                if HOMES[node.value] != where and (where, node.value) not in PENDING:
                    found.append((where, node.value))
    return found


def test_format_and_contract_constants_live_in_one_module() -> None:
    assert _copies() == []


def test_every_home_really_holds_its_value() -> None:
    # The scan above would pass vacuously if a home stopped spelling its value out.
    for value, home in HOMES.items():
        constants = {
            n.value
            for n in ast.walk(ast.parse((ROOT / home).read_text()))
            if isinstance(n, ast.Constant)
        }
        assert value in constants or (value == DEFAULT_PATH and home == "paths.py"), value
