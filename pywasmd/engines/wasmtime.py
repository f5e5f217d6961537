"""The default engine, on wasmtime-py.  The only module that imports wasmtime.

Runs WASI preview 1 command modules (``_start``) and WASI preview 2 command components
(``wasi:cli/run``), told apart by their binary header.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import wasmtime
from wasmtime import _bindings as _capi
from wasmtime import component as wc

from pywasmd.engine import (
    FUEL_EXIT_STATUS,
    TRAP_EXIT_STATUS,
    CallResult,
    GuestOutOfMemory,
    Instances,
)
from pywasmd.engines.wasmtime_proxy import EPOCH_TICK as _EPOCH_TICK
from pywasmd.engines.wasmtime_proxy import HANDLER_INTERFACE, ProxyInstances
from pywasmd.errors import InvalidArgument
from pywasmd.oci.plan import WasiPlan
from pywasmd.wasmbin import binary_kind

# Every feature of the allow-list (pywasmd.oci.engine_choice) and the Config switch it flips.
# They are all switched off unless asked for, so a module behaves the same whatever this
# wasmtime release happens to enable by default.
_SWITCHES: dict[str, str] = {
    "gc": "wasm_gc",
    "exceptions": "wasm_exceptions",
    "tail-call": "wasm_tail_call",
    "threads": "wasm_threads",
    "relaxed-simd": "wasm_relaxed_simd",
    "memory64": "wasm_memory64",
    "multi-memory": "wasm_multi_memory",
    "function-references": "wasm_function_references",
}
# wasmtime refuses a Config that enables a proposal without the ones it builds on.
_IMPLIES: dict[str, frozenset[str]] = {
    "gc": frozenset({"function-references"}),
    "exceptions": frozenset({"gc", "function-references"}),
}

_RUN_INTERFACE = "wasi:cli/run@0.2"

# Network of WASI p2 components (docs/networking.md).  wasmtime 48 made TCP and UDP socket
# creation opt-in (wasmtime PR 13936) and the C API under wasmtime-py has no switch for it:
# wasi_config_inherit_network only opens every address.  So pyproject holds wasmtime-py below
# 48, where inheriting the network also lets guests create sockets, and
# tests/engines/test_network.py fails the day an upgrade takes sockets away.
# Socket constructors, the only function of their interface, so an instance of our own can
# stand in for wasmtime's: the guest's socket() gets access-denied from WASI itself.
_SOCKET_CONSTRUCTORS: dict[str, str] = {
    "wasi:sockets/tcp-create-socket@": "create-tcp-socket",
    "wasi:sockets/udp-create-socket@": "create-udp-socket",
}
_HTTP_IMPORTS = "wasi:http/"


@dataclass
class _Loaded:
    engine: wasmtime.Engine
    code: wasmtime.Module | wc.Component


def _first_line(exc: BaseException, default: str) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else default


def _cause(exc: BaseException, default: str) -> str:
    # A trap's text is a backtrace followed by "Caused by:"; its last line is the reason.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else default


def _enabled(features: tuple[str, ...]) -> frozenset[str]:
    wanted = set(features)
    for feature in features:
        wanted |= _IMPLIES.get(feature, frozenset())
    return frozenset(wanted)


def _engine(plan: WasiPlan) -> wasmtime.Engine:
    config = wasmtime.Config()
    config.wasm_component_model = True
    enabled = _enabled(plan.features)
    for feature, switch in _SWITCHES.items():
        setattr(config, switch, feature in enabled)
    if "threads" in enabled:
        config.shared_memory = True
    # Fuel metering changes the compiled code, so it is part of ``fingerprint`` too.
    config.consume_fuel = plan.fuel is not None
    # HTTP functions stop a guest at its per-request deadline by epoch (a check in every loop).
    config.epoch_interruption = plan.http is not None
    try:
        return wasmtime.Engine(config)
    except wasmtime.WasmtimeError as exc:
        wanted = ", ".join(plan.features)
        raise InvalidArgument(
            f"engine wasmtime cannot enable features {wanted}: {_first_line(exc, 'refused')}"
        ) from exc


def _kind(plan: WasiPlan) -> str:
    try:
        with open(plan.module, "rb") as f:
            header = f.read(8)
    except OSError as exc:
        raise InvalidArgument(f"Wasm module {plan.argv[0]!r} cannot be read: {exc}") from exc
    return binary_kind(header, f"Wasm module {plan.argv[0]!r}")


def _check(engine: wasmtime.Engine, code: wasmtime.Module | wc.Component, plan: WasiPlan) -> None:
    if isinstance(code, wasmtime.Module):
        if not any(e.name == "_start" for e in code.exports):
            raise InvalidArgument(
                f"Wasm module {plan.argv[0]!r} exports no _start function: build it as a "
                "WASI command (e.g. `zig cc --target=wasm32-wasi`), not as a library"
            )
        return
    if plan.http is not None:
        if not any(n.startswith(HANDLER_INTERFACE) for n in code.type.exports(engine)):
            raise InvalidArgument(
                f"Wasm component {plan.argv[0]!r} exports no {HANDLER_INTERFACE}.x "
                "incoming-handler: an HTTP function (pywasm.io/trigger=http) is a WASI p1 "
                "module served as CGI or a wasi:http/proxy component"
            )
        return
    if not any(name.startswith(_RUN_INTERFACE) for name in code.type.exports(engine)):
        raise InvalidArgument(
            f"Wasm component {plan.argv[0]!r} exports no {_RUN_INTERFACE}.x run interface: "
            "build it as a wasi:cli/command component, not as a library"
        )
    if plan.network == "none":
        http = sorted(n for n in code.type.imports(engine) if n.startswith(_HTTP_IMPORTS))
        if http:
            raise InvalidArgument(
                f"Wasm component {plan.argv[0]!r} imports {http[0]} (outgoing HTTP) but "
                "annotation pywasm.io/network=none allows no network; use "
                "pywasm.io/network=http (outgoing HTTP only) or all"
            )


def _wasi(plan: WasiPlan, component: bool) -> wasmtime.WasiConfig:
    wasi = wasmtime.WasiConfig()
    wasi.argv = list(plan.argv)
    wasi.env = [list(kv) for kv in plan.env]
    wasi.inherit_stdin()
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    for grant in plan.preopens:
        _preopen(wasi, grant.host, grant.guest, grant.readonly)
    if component and plan.network == "all":
        # Every address of the worker's network namespace, which is the container's: the
        # namespace, not WASI, is the boundary (as with runwasi).  WASI p1 has no sockets.
        _inherit_network(wasi)
        _allow_ip_name_lookup(wasi, True)
    return wasi


def _preopen(wasi: wasmtime.WasiConfig, host: str, guest: str, readonly: bool) -> None:
    # wasmtime-py 48 replaced the DirPerms/FilePerms pair with one fs_mutable flag; both read
    # "read-only" the same way (read files and directories, change nothing).
    preopen: Any = wasi.preopen_dir
    dir_perms: Any = getattr(wasmtime, "DirPerms", None)
    if dir_perms is None:
        preopen(host, guest, fs_mutable=not readonly)
        return
    perms = "READ_ONLY" if readonly else "READ_WRITE"
    file_perms: Any = getattr(wasmtime, "FilePerms", None)
    preopen(host, guest, getattr(dir_perms, perms), getattr(file_perms, perms))


def _inherit_network(wasi: wasmtime.WasiConfig) -> None:
    """``wasi_config_inherit_network``, which ``WasiConfig`` does not wrap."""
    _capi.wasi_config_inherit_network(wasi.ptr())


def _allow_ip_name_lookup(wasi: wasmtime.WasiConfig, enable: bool) -> None:
    """``wasi_config_allow_ip_name_lookup``, which ``WasiConfig`` does not wrap."""
    _capi.wasi_config_allow_ip_name_lookup(wasi.ptr(), enable)


# Looked up once, at import (the zygote preloads this module): importlib.metadata costs each
# freshly forked worker 13 ms.
_VERSION = version("wasmtime")


class WasmtimeEngine:
    name = "wasmtime"

    def load(self, plan: WasiPlan) -> object:
        engine = _engine(plan)
        what = f"Wasm module {plan.argv[0]!r}"
        code: wasmtime.Module | wc.Component
        try:
            if _kind(plan) == "component":
                code = wc.Component.from_file(engine, plan.module)
            else:
                code = wasmtime.Module.from_file(engine, plan.module)
        except wasmtime.WasmtimeError as exc:
            raise InvalidArgument(
                f"{what} cannot be compiled: {_first_line(exc, 'invalid module')}"
            ) from exc
        _check(engine, code, plan)
        return _Loaded(engine, code)

    def precompile(self, plan: WasiPlan) -> bytes:
        loaded = self.load(plan)
        assert isinstance(loaded, _Loaded)
        return bytes(loaded.code.serialize())

    def load_precompiled(self, data: bytes, plan: WasiPlan) -> object:
        return self._deserialize(plan, data=data)

    def load_precompiled_file(self, path: str, plan: WasiPlan) -> object:
        """``load_precompiled`` from a cache file, mapped rather than read (26 MB: 1 ms, not 60)."""
        return self._deserialize(plan, path=path)

    def _deserialize(self, plan: WasiPlan, data: bytes = b"", path: str = "") -> object:
        engine = _engine(plan)
        code: wasmtime.Module | wc.Component
        try:
            if _kind(plan) == "component":
                code = (
                    wc.Component.deserialize_file(engine, path)
                    if path
                    else wc.Component.deserialize(engine, data)
                )
            else:
                code = (
                    wasmtime.Module.deserialize_file(engine, path)
                    if path
                    else wasmtime.Module.deserialize(engine, data)
                )
        except wasmtime.WasmtimeError as exc:
            raise InvalidArgument(
                f"precompiled code for {plan.argv[0]!r} does not fit this engine: "
                f"{_first_line(exc, 'incompatible')}"
            ) from exc
        _check(engine, code, plan)
        return _Loaded(engine, code)

    def fingerprint(self, plan: WasiPlan) -> str:
        features = ",".join(sorted(_enabled(plan.features)))
        epoch = " epoch" if plan.http is not None else ""
        return f"wasmtime {_VERSION} features={features} fuel={plan.fuel is not None}{epoch}"

    def prepare_instances(self, loaded: object, plan: WasiPlan) -> Instances:
        assert isinstance(loaded, _Loaded)
        _start_epoch(loaded.engine)
        if isinstance(loaded.code, wc.Component):
            return ProxyInstances(loaded.engine, loaded.code, plan.memory_limit, plan.env)
        return _CgiInstances(loaded.engine, loaded.code, plan)

    def run(self, loaded: object, plan: WasiPlan, ready: Callable[[], None] | None = None) -> int:
        assert isinstance(loaded, _Loaded)
        store = wasmtime.Store(loaded.engine)
        if plan.memory_limit is not None:
            store.set_limits(memory_size=plan.memory_limit)
        if plan.fuel is not None:
            store.set_fuel(plan.fuel)
        store.set_wasi(_wasi(plan, isinstance(loaded.code, wc.Component)))
        if ready is not None:
            ready()
        memories: list[wasmtime.Memory] = []
        try:
            if isinstance(loaded.code, wc.Component):
                return _run_component(loaded.engine, store, loaded.code, plan.network)
            status = _run_module(loaded.engine, store, loaded.code, memories)
        except wasmtime.ExitTrap as exc:
            status = int(exc.code)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            _out_of_memory(plan, store, memories)
            if plan.fuel is not None and "fuel" in str(exc):
                print(
                    f"pywasm: guest ran out of fuel (pywasm.io/fuel={plan.fuel})",
                    file=sys.stderr,
                    flush=True,
                )
                return FUEL_EXIT_STATUS
            # Component traps arrive as plain WasmtimeError; the text tells them apart.
            trapped = isinstance(exc, wasmtime.Trap) or "wasm trap" in str(exc)
            what = "trapped" if trapped else "failed"
            print(f"pywasm: guest {what}: {_cause(exc, 'trap')}", file=sys.stderr, flush=True)
            return TRAP_EXIT_STATUS
        if status != 0:
            _out_of_memory(plan, store, memories)
        return status


def _out_of_memory(plan: WasiPlan, store: wasmtime.Store, memories: list[wasmtime.Memory]) -> None:
    """A guest that failed with its memory grown close to the limit ran out of memory.

    wasmtime-py does not report a refused ``memory.grow``, so this judges by how much is
    left: less than an eighth of the limit (or a page) when the guest gave up.
    """
    if plan.memory_limit is None or not memories:
        return
    used = memories[0].size(store) * 65536
    if used + max(65536, plan.memory_limit // 8) > plan.memory_limit:
        raise GuestOutOfMemory(
            f"guest used {used} bytes of linear memory, its limit is {plan.memory_limit}"
        )


class _GuestExit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _proc_exit(code: int) -> None:
    raise _GuestExit(code)


def _run_module(
    engine: wasmtime.Engine,
    store: wasmtime.Store,
    module: wasmtime.Module,
    memories: list[wasmtime.Memory],
) -> int:
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    # wasmtime's own proc_exit refuses statuses 126-255, which native programs (and runc
    # containers) may use; ours passes every byte through, as a process exit would.
    linker.allow_shadowing = True
    linker.define_func(
        "wasi_snapshot_preview1",
        "proc_exit",
        wasmtime.FuncType([wasmtime.ValType.i32()], []),
        _proc_exit,
    )
    instance = linker.instantiate(store, module)
    memory = instance.exports(store).get("memory")
    if isinstance(memory, wasmtime.Memory):
        memories.append(memory)
    start = instance.exports(store)["_start"]
    assert isinstance(start, wasmtime.Func)
    try:
        start(store)
    except _GuestExit as exc:
        return exc.code & 0xFF
    return 0


def _run_component(
    engine: wasmtime.Engine, store: wasmtime.Store, code: wc.Component, network: str
) -> int:
    linker = wc.Linker(engine)
    linker.add_wasip2()
    if network != "none":
        linker.add_wasi_http()
        store.set_wasi_http()
    if network != "all":
        _refuse_sockets(linker, code.type.imports(engine))
    instance = linker.instantiate(store, code)
    interface = next(n for n in code.type.exports(engine) if n.startswith(_RUN_INTERFACE))
    iface = instance.get_export_index(store, interface)
    index = instance.get_export_index(store, "run", iface) if iface is not None else None
    run = instance.get_func(store, index) if index is not None else None
    if run is None:
        raise wasmtime.WasmtimeError(f"the component exports no {interface}#run function")
    result = run(store)
    run.post_return(store)
    # wasi:cli/run returns result<_, _>: ok is a clean exit, err the generic failure status.
    return 0 if getattr(result, "tag", None) == "ok" else 1


def _refuse_sockets(linker: wc.Linker, imports: Iterable[str]) -> None:
    """Stand in for the socket constructors ``imports`` names: each answers access-denied.

    Under the exact imported name, so it wins over wasmtime's own (newer) version of the
    interface; nothing else of wasi:sockets is reachable without a socket.
    """
    linker.allow_shadowing = True
    with linker.root() as root:
        for name in imports:
            for prefix, func in _SOCKET_CONSTRUCTORS.items():
                if name.startswith(prefix):
                    with root.add_instance(name) as instance:
                        instance.add_func(func, _access_denied)
    linker.allow_shadowing = False


def _access_denied(store: object, *args: object) -> str:
    # result<own<socket>, error-code>: the enum case alone is its err arm.
    return "access-denied"


# --- HTTP functions: a fresh instance per request ---------------------------------------------


def _start_epoch(engine: wasmtime.Engine) -> None:
    """The clock of every deadline: the engine's epoch advances every tick."""

    def tick() -> None:
        while True:
            time.sleep(_EPOCH_TICK)
            engine.increment_epoch()

    threading.Thread(target=tick, name="pywasm-epoch", daemon=True).start()


class _CgiInstances:
    """``Instances`` on an ``InstancePre``: imports resolved once, a Store per call.

    Host functions are wasmtime's own WASI only (no Python callback such as pywasm's
    ``proc_exit``): wasmtime-py 47 passes a Python exception from a host function through one
    process-wide variable, which calls on several threads would mix up.  For the same reason
    stdout is not a Python callback (``stdout_custom``): wasmtime calls it from its own tokio
    threads, which panic when the interpreter ends.  Each calling thread has a memfd instead,
    which wasmtime opens (and truncates) by its /proc/self/fd path for every call.
    """

    def __init__(self, engine: wasmtime.Engine, module: wasmtime.Module, plan: WasiPlan) -> None:
        self._engine = engine
        self._plan = plan
        self._local = threading.local()
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        self._pre = linker.instantiate_pre(module)
        self._out_fd()  # fails here, at start, when the container has no /proc

    def _out_fd(self) -> int:
        fd: int | None = getattr(self._local, "fd", None)
        if fd is None:
            fd = os.memfd_create("pywasm-cgi-stdout", os.MFD_CLOEXEC)
            if not os.path.exists(f"/proc/self/fd/{fd}"):
                os.close(fd)
                raise InvalidArgument(
                    "HTTP functions need /proc mounted in the container (the guest's stdout is "
                    "captured through /proc/self/fd): keep the default proc mount"
                )
            self._local.fd = fd
        return fd

    def call(self, env: Sequence[tuple[str, str]], stdin: bytes, timeout: float) -> CallResult:
        plan = self._plan
        fd = self._out_fd()
        wasi = wasmtime.WasiConfig()
        wasi.argv = list(plan.argv)
        wasi.env = [list(kv) for kv in env]
        _stdin_bytes(wasi, stdin)
        wasi.stdout_file = f"/proc/self/fd/{fd}"
        wasi.inherit_stderr()
        for grant in plan.preopens:
            _preopen(wasi, grant.host, grant.guest, grant.readonly)
        store = wasmtime.Store(self._engine)
        store.set_wasi(wasi)
        if plan.memory_limit is not None:
            store.set_limits(memory_size=plan.memory_limit)
        store.set_epoch_deadline(max(1, math.ceil(timeout / _EPOCH_TICK)))
        outcome, status, detail = "exit", 0, ""
        try:
            instance = self._pre.instantiate(store)
            start = instance.exports(store)["_start"]
            assert isinstance(start, wasmtime.Func)
            start(store)
        except wasmtime.ExitTrap as exc:
            status = int(exc.code) & 0xFF
        except wasmtime.Trap as exc:
            if exc.trap_code == wasmtime.TrapCode.INTERRUPT:
                outcome, detail = "timeout", f"over {timeout:g} s"
            else:
                outcome, detail = "trap", _cause(exc, "trap")
        except wasmtime.WasmtimeError as exc:
            outcome, detail = "trap", _cause(exc, "failed")
        finally:
            # Closes wasmtime's own descriptor of the memfd before it is read.
            store.close()
        return CallResult(outcome, status, os.pread(fd, os.fstat(fd).st_size, 0), detail)


def _stdin_bytes(wasi: wasmtime.WasiConfig, data: bytes) -> None:
    """``wasi_config_set_stdin_bytes``, which ``WasiConfig`` does not wrap (it takes the vector)."""
    vec = _capi.wasm_byte_vec_t()
    buf = (_capi.wasm_byte_t * len(data)).from_buffer_copy(data) if data else None
    _capi.wasm_byte_vec_new(ctypes.byref(vec), len(data), buf)
    _capi.wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(vec))
