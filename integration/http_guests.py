"""Build the wasi:http/proxy test function (integration/guests/http/proxy_echo.py).

componentize-py (the ``dev`` extra) turns the Python app into a component of the world in
integration/guests/http/wit/world.wit (``include wasi:http/proxy@0.2.0``); the WASI WIT packages
come from the spin-sdk wheel, as for integration/net_guests.py. Rebuilt only when an input
changes (its sha256 is in the file name); about 10 s.

    python -m integration.http_guests        # build, print the path
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

from integration.net_guests import WASI_PACKAGES, WASI_VERSION, _componentize_py, _wasi_wit

REPO = Path(__file__).resolve().parent.parent
SOURCES = REPO / "integration" / "guests" / "http"
OUT = REPO / ".cache" / "http-guests"


def build(name: str = "proxy_echo") -> Path:
    deps = _wasi_wit()
    h = hashlib.sha256(version("componentize-py").encode() + b"\0")
    for path in (SOURCES / f"{name}.py", SOURCES / "wit" / "world.wit"):
        h.update(path.read_bytes() + b"\0")
    for package in WASI_PACKAGES:
        for wit in sorted((deps / f"{package}@{WASI_VERSION}").glob("*.wit")):
            h.update(wit.name.encode() + b"\0" + wit.read_bytes() + b"\0")
    out = OUT / f"{name}-{h.hexdigest()[:16]}.wasm"
    if out.exists():
        return out
    OUT.mkdir(parents=True, exist_ok=True)
    wit = OUT / f"wit-{os.getpid()}"
    tmp = OUT / f".{name}.{os.getpid()}.wasm"
    shutil.rmtree(wit, ignore_errors=True)
    (wit / "deps").mkdir(parents=True)
    try:
        shutil.copy(SOURCES / "wit" / "world.wit", wit / "world.wit")
        for package in WASI_PACKAGES:
            src = deps / f"{package}@{WASI_VERSION}"
            shutil.copytree(src, wit / "deps" / f"{package}@{WASI_VERSION}")
        cmd = [_componentize_py(), "-q", "-d", str(wit), "-w", "handler", "componentize"]
        cmd += ["-p", str(SOURCES), name, "-o", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"building {name} failed ({proc.returncode}):\n{proc.stderr}")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(wit, ignore_errors=True)
    for stale in OUT.glob(f"{name}-*.wasm"):
        if stale != out:
            stale.unlink(missing_ok=True)
    return out


if __name__ == "__main__":
    print(build())
