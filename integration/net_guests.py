"""Build the network test guests (integration/guests/net/*.py) into WASI p2 components.

componentize-py (PyPI) turns each Python app into a ``wasi:cli/command`` component; the WASI
WIT packages it needs (wasi:cli, io, clocks, filesystem, random, sockets, http @0.2.0) come
from the spin-sdk wheel, which ships them. Both are in the ``dev`` extra. A component is
rebuilt only when its inputs change: the file name carries the sha256 of the app, the world
file, the WIT packages and the componentize-py version. A build takes about 10-30 s.

    python integration/net_guests.py          # build all, print their paths
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = REPO / "integration" / "guests" / "net"
OUT = REPO / ".cache" / "net-guests"
#: Each guest and the world (in guests/net/wit/guests.wit) it is built for.
GUESTS: dict[str, str] = {
    "echo_server": "sockets",
    "tcp_fetch": "sockets",
    "udp_echo": "sockets",
    "http_get": "http-client",
}
WASI_PACKAGES = ("cli", "clocks", "filesystem", "io", "random", "sockets", "http")
WASI_VERSION = "0.2.0"


def _wasi_wit() -> Path:
    spec = importlib.util.find_spec("spin_sdk")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "spin-sdk is not installed; it ships the WASI WIT packages the network guests "
            "are built against: pip install -e '.[dev]' (or pip install spin-sdk==5.0.0)"
        )
    deps = Path(spec.origin).parent / "wit" / "deps"
    missing = [p for p in WASI_PACKAGES if not (deps / f"{p}@{WASI_VERSION}").is_dir()]
    if missing:
        raise RuntimeError(f"{deps} lacks WASI packages {missing} @{WASI_VERSION}")
    return deps


def _componentize_py() -> str:
    local = Path(sys.executable).parent / "componentize-py"
    found = str(local) if local.exists() else shutil.which("componentize-py")
    if found is None:
        raise RuntimeError(
            "componentize-py is not installed: pip install -e '.[dev]' (or "
            "pip install componentize-py==0.25.1)"
        )
    return found


def _digest(name: str, deps: Path) -> str:
    h = hashlib.sha256()
    h.update(version("componentize-py").encode() + b"\0" + GUESTS[name].encode() + b"\0")
    h.update((SOURCES / f"{name}.py").read_bytes() + b"\0")
    h.update((SOURCES / "wit" / "guests.wit").read_bytes() + b"\0")
    for package in WASI_PACKAGES:
        for wit in sorted((deps / f"{package}@{WASI_VERSION}").glob("*.wit")):
            h.update(wit.name.encode() + b"\0" + wit.read_bytes() + b"\0")
    return h.hexdigest()


def _wit_dir(deps: Path) -> Path:
    """guests.wit plus its WASI dependencies, laid out as componentize-py reads them."""
    wit = OUT / f"wit-{os.getpid()}"
    shutil.rmtree(wit, ignore_errors=True)
    (wit / "deps").mkdir(parents=True)
    shutil.copy(SOURCES / "wit" / "guests.wit", wit / "guests.wit")
    for package in WASI_PACKAGES:
        shutil.copytree(
            deps / f"{package}@{WASI_VERSION}", wit / "deps" / f"{package}@{WASI_VERSION}"
        )
    return wit


def build(name: str) -> Path:
    """Build one guest (if needed) and return the path of its component."""
    if name not in GUESTS:
        raise KeyError(f"no network guest {name!r}; known: {', '.join(GUESTS)}")
    deps = _wasi_wit()
    out = OUT / f"{name}-{_digest(name, deps)[:16]}.wasm"
    if out.exists():
        return out
    OUT.mkdir(parents=True, exist_ok=True)
    wit = _wit_dir(deps)
    tmp = OUT / f".{name}.{os.getpid()}.wasm"
    try:
        cmd = [_componentize_py(), "-q", "-d", str(wit), "-w", GUESTS[name], "componentize"]
        cmd += ["-p", str(SOURCES), name, "-o", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"building {name} failed ({proc.returncode}):\n{proc.stderr}")
        if tmp.read_bytes()[:8] != b"\0asm\x0d\x00\x01\x00":
            raise RuntimeError(f"building {name} produced something that is not a component")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(wit, ignore_errors=True)
    for stale in OUT.glob(f"{name}-*.wasm"):
        if stale != out:
            stale.unlink(missing_ok=True)
    return out


def build_all() -> dict[str, Path]:
    return {name: build(name) for name in GUESTS}


def main() -> None:
    for name, path in build_all().items():
        print(f"{name}: {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
