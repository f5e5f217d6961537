"""The default engine, on wasmtime-py.  The only module that imports wasmtime."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import wasmtime

from pywasmd.engine import TRAP_EXIT_STATUS
from pywasmd.errors import InvalidArgument
from pywasmd.oci.plan import WasiPlan


@dataclass
class _Loaded:
    engine: wasmtime.Engine
    module: wasmtime.Module


class WasmtimeEngine:
    name = "wasmtime"

    def load(self, plan: WasiPlan) -> object:
        engine = wasmtime.Engine(wasmtime.Config())
        try:
            module = wasmtime.Module.from_file(engine, plan.module)
        except wasmtime.WasmtimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid module"
            raise InvalidArgument(
                f"Wasm module {plan.argv[0]!r} cannot be compiled: {first}"
            ) from exc
        if not any(e.name == "_start" for e in module.exports):
            raise InvalidArgument(
                f"Wasm module {plan.argv[0]!r} exports no _start function: build it as a "
                "WASI command (e.g. `zig cc --target=wasm32-wasi`), not as a library"
            )
        return _Loaded(engine, module)

    def run(self, loaded: object, plan: WasiPlan) -> int:
        assert isinstance(loaded, _Loaded)
        store = wasmtime.Store(loaded.engine)
        if plan.memory_limit is not None:
            store.set_limits(memory_size=plan.memory_limit)
        wasi = wasmtime.WasiConfig()
        wasi.argv = list(plan.argv)
        wasi.env = [list(kv) for kv in plan.env]
        wasi.inherit_stdin()
        wasi.inherit_stdout()
        wasi.inherit_stderr()
        for grant in plan.preopens:
            wasi.preopen_dir(grant.host, grant.guest, fs_mutable=not grant.readonly)
        store.set_wasi(wasi)
        linker = wasmtime.Linker(loaded.engine)
        linker.define_wasi()
        try:
            instance = linker.instantiate(store, loaded.module)
            start = instance.exports(store)["_start"]
            assert isinstance(start, wasmtime.Func)
            start(store)
        except wasmtime.ExitTrap as exc:
            return int(exc.code)
        except wasmtime.Trap as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "trap"
            print(f"pywasm: guest trapped: {reason}", file=sys.stderr, flush=True)
            return TRAP_EXIT_STATUS
        except wasmtime.WasmtimeError as exc:
            print(f"pywasm: guest failed: {str(exc).strip()}", file=sys.stderr, flush=True)
            return TRAP_EXIT_STATUS
        return 0
