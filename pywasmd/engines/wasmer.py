"""The second engine, on wasmer-python 1.1.0 with Cranelift.  The only module importing wasmer.

wasmer-python has wheels for CPython <= 3.10 only, and its WASI lacks two things the plan asks
for; neither is silently dropped:

- memory caps: the cap is written into the module's own memory type (``cap_memories``), so a
  ``memory.grow`` past it fails in the guest exactly as under wasmtime's store limits;
- read-only preopens cannot be had at all: wasmer-python grants every preopen read-write, and
  its ``path_open`` opens even a file read for reading with ``O_RDWR`` (seen with strace), so a
  read-only bind mount underneath would break reads too.  A plan with a read-only preopen is
  refused at load, naming the guest path.

Optional Wasm features cannot be switched on: a plan asking for any is refused at load.
Components (WASI preview 2) are refused at load: wasmer-python runs core modules only.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

try:
    import wasmer
    from wasmer import wasi as wasmer_wasi
    from wasmer_compiler_cranelift import Compiler
except Exception as exc:  # noqa: BLE001 - on CPython >= 3.11 a stub wheel raises at import
    raise ImportError(f"wasmer-python does not import: {exc}") from exc

from pywasmd.engine import TRAP_EXIT_STATUS, Instances
from pywasmd.errors import InvalidArgument
from pywasmd.oci.plan import WasiPlan
from pywasmd.wasmbin import COMPONENT, binary_kind, cap_memories

_EXIT = re.compile(r"WASI exited with code: (\d+)")


@dataclass
class _Loaded:
    store: wasmer.Store
    module: wasmer.Module


def _new_store() -> wasmer.Store:
    return wasmer.Store(wasmer.engine.Universal(Compiler))


_HTTP_NEEDS_WASMTIME = (
    "HTTP functions (pywasm.io/trigger=http) need the wasmtime engine: "
    "set pywasm.io/engine=wasmtime or drop the trigger"
)


def _code(plan: WasiPlan) -> bytes:
    """The module's bytes, checked to be something this engine can run, memory cap applied."""
    what = f"Wasm module {plan.argv[0]!r}"
    if plan.http is not None:
        raise InvalidArgument(_HTTP_NEEDS_WASMTIME)
    if plan.features:
        raise InvalidArgument(
            f"engine wasmer cannot enable Wasm features {', '.join(plan.features)} "
            "(pywasm.io/features): use engine wasmtime for them"
        )
    try:
        with open(plan.module, "rb") as f:
            wasm = f.read()
    except OSError as exc:
        raise InvalidArgument(f"{what} cannot be read: {exc}") from exc
    if binary_kind(wasm[:8], what) == COMPONENT:
        raise InvalidArgument(
            f"{what} is a WASI preview 2 component; engine wasmer runs core modules only: "
            "use engine wasmtime (annotation pywasm.io/engine=wasmtime)"
        )
    readonly = [p.guest for p in plan.preopens if p.readonly]
    if readonly:
        raise InvalidArgument(
            f"engine wasmer cannot make preopen(s) {', '.join(readonly)} read-only (root.readonly "
            "or a mount with option ro): wasmer-python 1.1.0 has no read-only preopens; "
            "use engine wasmtime or drop the read-only option"
        )
    if plan.memory_limit is not None:
        wasm = cap_memories(wasm, plan.memory_limit, what)
    return wasm


def _check(module: wasmer.Module, plan: WasiPlan) -> None:
    if not any(e.name == "_start" for e in module.exports):
        raise InvalidArgument(
            f"Wasm module {plan.argv[0]!r} exports no _start function: build it as a "
            "WASI command (e.g. `zig cc --target=wasm32-wasi`), not as a library"
        )


def _reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else "trap"
    return first.removeprefix("RuntimeError: ")


class WasmerEngine:
    name = "wasmer"

    def _compile(self, plan: WasiPlan) -> _Loaded:
        wasm = _code(plan)
        store = _new_store()
        try:
            module = wasmer.Module(store, wasm)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise InvalidArgument(
                f"Wasm module {plan.argv[0]!r} cannot be compiled: {_reason(exc)}"
            ) from exc
        _check(module, plan)
        return _Loaded(store, module)

    def load(self, plan: WasiPlan) -> object:
        return self._compile(plan)

    def precompile(self, plan: WasiPlan) -> bytes:
        return bytes(self._compile(plan).module.serialize())

    def load_precompiled(self, data: bytes, plan: WasiPlan) -> object:
        _code(plan)  # the same refusals as load
        store = _new_store()
        try:
            module = wasmer.Module.deserialize(store, data)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise InvalidArgument(
                f"precompiled code for {plan.argv[0]!r} does not fit this engine: {_reason(exc)}"
            ) from exc
        _check(module, plan)
        return _Loaded(store, module)

    def prepare_instances(self, loaded: object, plan: WasiPlan) -> Instances:
        raise InvalidArgument(_HTTP_NEEDS_WASMTIME)

    def fingerprint(self, plan: WasiPlan) -> str:
        # The memory cap is compiled into the module, so it is part of what precompile made.
        cap = "none" if plan.memory_limit is None else str(plan.memory_limit // 65536)
        return f"wasmer {version('wasmer')} cranelift memory-pages={cap}"

    def run(self, loaded: object, plan: WasiPlan, ready: Callable[[], None] | None = None) -> int:
        assert isinstance(loaded, _Loaded)
        builder = wasmer_wasi.StateBuilder(plan.argv[0] if plan.argv else "")
        builder.arguments(list(plan.argv[1:]))
        for key, value in plan.env:
            builder.environment(key, value)
        for grant in plan.preopens:
            builder.map_directory(grant.guest, grant.host)
        wasi_version = wasmer_wasi.get_version(loaded.module, strict=False)
        try:
            env = builder.finalize()
            imports = env.generate_import_object(
                loaded.store, wasi_version or wasmer_wasi.Version.SNAPSHOT1
            )
            if ready is not None:
                ready()
            instance = wasmer.Instance(loaded.module, imports)
            instance.exports._start()
        except RuntimeError as exc:
            exited = _EXIT.search(str(exc))
            if exited:
                return int(exited.group(1))
            print(f"pywasm: guest trapped: {_reason(exc)}", file=sys.stderr, flush=True)
            return TRAP_EXIT_STATUS
        return 0
