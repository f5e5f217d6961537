"""`pywasm warm` writes the very entry a container's first start looks up."""

import wasmtime

from pywasmd.cli import main
from pywasmd.engine import get_engine
from pywasmd.oci.grants import Preopen
from pywasmd.oci.plan import WasiPlan
from pywasmd.shim import worker

HELLO_WAT = '(module (memory (export "memory") 1) (func (export "_start")))'


def test_a_warmed_module_is_never_compiled_at_start(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    module = tmp_path / "app.wasm"
    module.write_bytes(wasmtime.wat2wasm(HELLO_WAT))
    monkeypatch.setenv("PYWASM_CONFIG", str(tmp_path / "no-node-config.yaml"))
    assert main(["warm", "--cache-dir", str(cache), str(module)]) == 0
    assert "compiled into" in capsys.readouterr().out
    assert main(["warm", "--cache-dir", str(cache), str(module)]) == 0
    assert "already compiled" in capsys.readouterr().out

    # What the shim's worker does for a container of this module with the node's defaults.
    monkeypatch.setenv("PYWASM_CACHE_DIR", str(cache))
    engine = get_engine("wasmtime")

    def no_compile(plan):
        raise AssertionError("the worker compiled a module that pywasm warm had compiled")

    monkeypatch.setattr(engine, "precompile", no_compile)
    plan = WasiPlan(
        module=str(module),
        argv=("/app.wasm",),
        env=(),
        cwd="/",
        preopens=(Preopen(str(tmp_path), "/", True),),
    )
    assert worker._load(engine, plan) is not None


def test_warm_names_a_missing_target(tmp_path, capsys):
    assert main(["warm", "--cache-dir", str(tmp_path), str(tmp_path / "none.tar")]) == 2
    assert "none.tar" in capsys.readouterr().err
