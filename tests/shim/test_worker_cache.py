"""The worker's load through the compile cache, on the shipped FakeEngine."""

from __future__ import annotations

from pathlib import Path

import pytest

from pywasmd.cache import CompileCache
from pywasmd.errors import InvalidArgument
from pywasmd.oci.plan import WasiPlan
from pywasmd.shim import worker
from pywasmd.testing import FakeEngine


@pytest.fixture
def plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WasiPlan:
    module = tmp_path / "app.wasm"
    module.write_bytes(b"\0asm\x01\0\0\0")
    monkeypatch.setenv("PYWASM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PYWASM_CACHE", raising=False)
    return WasiPlan(module=str(module), argv=("/app.wasm",), env=(), cwd="/", preopens=())


def _compile_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real one compiles in a child process with the named engine; the fake is here.
    monkeypatch.setattr(worker, "_compile_apart", lambda engine, plan: engine.precompile(plan))


def test_the_first_load_compiles_and_the_next_reads_the_cache(
    plan: WasiPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    _compile_in_process(monkeypatch)
    engine = FakeEngine()
    assert worker._load(engine, plan) == ("loaded", plan.module)
    assert worker._load(engine, plan) == ("loaded", plan.module)
    assert engine.compiles == 1
    assert CompileCache().lookup(CompileCache().key(engine, plan)) is not None


def test_another_engine_version_compiles_under_its_own_key(
    plan: WasiPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    _compile_in_process(monkeypatch)
    worker._load(FakeEngine(version="1"), plan)
    newer = FakeEngine(version="2")
    assert worker._load(newer, plan) == ("loaded", plan.module)
    assert newer.compiles == 1
    assert CompileCache().key(FakeEngine(version="1"), plan) != CompileCache().key(newer, plan)


def test_an_entry_the_engine_refuses_is_dropped_and_compiled_again(
    plan: WasiPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    _compile_in_process(monkeypatch)
    engine = FakeEngine()
    cache = CompileCache()
    key = cache.key(engine, plan)
    cache.store(key, b"corrupt")
    assert worker._load(engine, plan) == ("loaded", plan.module)
    assert engine.compiles == 1
    assert Path(cache.path(key)).read_bytes() == f"fake 1 {plan.module}".encode()


def test_a_file_that_is_no_wasm_is_refused_by_name(
    plan: WasiPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    _compile_in_process(monkeypatch)
    Path(plan.module).write_bytes(b"#!/bin/sh\n")
    with pytest.raises(InvalidArgument, match="app.wasm: not a WebAssembly binary"):
        worker._load(FakeEngine(), plan)
