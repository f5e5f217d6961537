"""The second engine, on wasmer-python 1.1.0 with Cranelift.  The only module importing wasmer.

wasmer-python has wheels for CPython <= 3.10 only, and its WASI lacks two things the plan asks
for; both are enforced another way rather than dropped:

- memory caps: the cap is written into the module's own memory type (``cap_memories``), so a
  ``memory.grow`` past it fails in the guest exactly as under wasmtime's store limits;
- read-only preopens: the worker moves into a private mount namespace and re-binds each
  read-only directory read-only there, so the kernel refuses writes with EROFS.

Optional Wasm features cannot be switched on: a plan asking for any is refused at load.
Components (WASI preview 2) are refused at load: wasmer-python runs core modules only.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from dataclasses import dataclass
from importlib.metadata import version

try:
    import wasmer
    from wasmer import wasi as wasmer_wasi
    from wasmer_compiler_cranelift import Compiler
except Exception as exc:  # noqa: BLE001 - on CPython >= 3.11 a stub wheel raises at import
    raise ImportError(f"wasmer-python does not import: {exc}") from exc

from pywasmd.engine import TRAP_EXIT_STATUS, WASM_CONTENT_LAYER, WASM_LAYER
from pywasmd.engines._wasmbin import binary_kind, cap_memories
from pywasmd.errors import InvalidArgument
from pywasmd.oci.plan import Preopen, WasiPlan

_EXIT = re.compile(r"WASI exited with code: (\d+)")

_CLONE_NEWNS = 0x00020000
_MS_RDONLY = 0x1
_MS_REMOUNT = 0x20
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000


@dataclass
class _Loaded:
    store: wasmer.Store
    module: wasmer.Module


def _new_store() -> wasmer.Store:
    return wasmer.Store(wasmer.engine.Universal(Compiler))


def _code(plan: WasiPlan) -> bytes:
    """The module's bytes, checked to be something this engine can run, memory cap applied."""
    what = f"Wasm module {plan.argv[0]!r}"
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
    if binary_kind(wasm[:8], what) == "component":
        raise InvalidArgument(
            f"{what} is a WASI preview 2 component; engine wasmer runs core modules only: "
            "use engine wasmtime (annotation pywasm.io/engine=wasmtime)"
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


def _libc_call(name: str, *args: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _mount(source: str | None, target: str, flags: int) -> None:
    _libc_call(
        "mount",
        source.encode() if source else None,
        target.encode(),
        None,
        ctypes.c_ulong(flags),
        None,
    )


def _unescape(field: str) -> str:
    # /proc/self/mountinfo writes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [_unescape(line.split()[4]) for line in f]
    prefix = path.rstrip("/") + "/"
    return [p for p in points if p == path or p.startswith(prefix)]


def _bind(host: str, readonly: bool) -> None:
    # A new bind copies the flags of the mount it comes from, so rw grants under a ro one are
    # re-bound and remounted rw; every mount below a ro grant is remounted ro too.
    _mount(host, host, _MS_BIND | _MS_REC)
    for point in _mounts_under(host):
        _mount(None, point, _MS_BIND | _MS_REMOUNT | (_MS_RDONLY if readonly else 0))


def _readonly_view(plan: WasiPlan) -> None:
    """Make the plan's read-only preopens read-only for this process (the worker) only."""
    readonly = [p for p in plan.preopens if p.readonly]
    if not readonly:
        return
    grants: dict[str, Preopen] = {}
    for grant in plan.preopens:
        host = os.path.realpath(grant.host)
        other = grants.get(host)
        if other is not None and other.readonly != grant.readonly:
            ro, rw = (other, grant) if other.readonly else (grant, other)
            raise InvalidArgument(
                f"engine wasmer cannot grant {host} both read-only (at {ro.guest}) and "
                f"writable (at {rw.guest}): use engine wasmtime"
            )
        grants[host] = grant

    def under_readonly(host: str) -> bool:
        return any(
            g.readonly and host != h and host.startswith(h.rstrip("/") + "/")
            for h, g in grants.items()
        )

    todo = [(h, g.readonly) for h, g in grants.items() if g.readonly or under_readonly(h)]
    try:
        _libc_call("unshare", _CLONE_NEWNS)
        # Nothing done here may reach the host's mount table.
        _mount(None, "/", _MS_REC | _MS_PRIVATE)
        # Parents first, so that a grant nested in another one gets the last word.
        for host, ro in sorted(todo, key=lambda item: item[0].count("/")):
            _bind(host, ro)
    except OSError as exc:
        raise InvalidArgument(
            f"engine wasmer enforces read-only preopens ({', '.join(g.guest for g in readonly)}) "
            f"with a read-only bind mount in a private mount namespace, which failed ({exc}); "
            "run the shim as root or use engine wasmtime"
        ) from exc


def _reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else "trap"
    return first.removeprefix("RuntimeError: ")


class WasmerEngine:
    name = "wasmer"
    media_types = frozenset({WASM_LAYER, WASM_CONTENT_LAYER})

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
        loaded = self._compile(plan)
        _readonly_view(plan)
        return loaded

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
        _readonly_view(plan)
        return _Loaded(store, module)

    def fingerprint(self, plan: WasiPlan) -> str:
        # The memory cap is compiled into the module, so it is part of what precompile made.
        cap = "none" if plan.memory_limit is None else str(plan.memory_limit // 65536)
        return f"wasmer {version('wasmer')} cranelift memory-pages={cap}"

    def run(self, loaded: object, plan: WasiPlan) -> int:
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
            instance = wasmer.Instance(loaded.module, imports)
            instance.exports._start()
        except RuntimeError as exc:
            exited = _EXIT.search(str(exc))
            if exited:
                return int(exited.group(1))
            print(f"pywasm: guest trapped: {_reason(exc)}", file=sys.stderr, flush=True)
            return TRAP_EXIT_STATUS
        return 0
