"""The whole surface an engine offers the shim.

An engine turns a :class:`~pywasmd.oci.plan.WasiPlan` into a running guest.  ``load`` (or
``load_precompiled``) and ``run`` are used only inside a worker process (one per container), so
they may block and may change process-wide state: the worker exits right after ``run``.
``precompile`` and ``fingerprint`` have no side effects, so the shim may call them anywhere.
Nothing outside ``pywasmd/engines/`` imports an engine library.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pywasmd.errors import InvalidArgument, Unavailable
from pywasmd.oci.plan import WasiPlan

#: Exit status of a guest that trapped (like a native program killed by SIGABRT).
TRAP_EXIT_STATUS = 134
#: Exit status of a guest that used up its ``pywasm.io/fuel`` (as for RLIMIT_CPU: SIGXCPU).
FUEL_EXIT_STATUS = 152
#: Exit status of a guest that outlived its ``pywasm.io/timeout`` (SIGALRM).
TIMEOUT_EXIT_STATUS = 142
#: Exit status of a guest that ran out of its memory limit (as if the OOM killer hit it).
OOM_EXIT_STATUS = 137


class GuestOutOfMemory(Exception):
    """Raised by ``run`` when the guest failed after hitting ``plan.memory_limit``."""


@dataclass(frozen=True)
class CallResult:
    """How one per-request instance ended (HTTP functions, pywasmd.http)."""

    #: "exit" (``_start`` returned or the guest called proc_exit), "trap" or "timeout".
    outcome: str
    #: the exit status for "exit"; 0 otherwise.
    status: int
    #: everything the guest wrote to stdout.
    stdout: bytes
    #: the trap's reason, for the log line.
    detail: str = ""


class Instances(Protocol):
    """Fresh instances of one loaded module, one per call; calls may come from many threads
    (an implementation that takes one call at a time per process has ``max_parallel = 1``)."""

    def call(self, env: Sequence[tuple[str, str]], stdin: bytes, timeout: float) -> CallResult:
        """Run ``_start`` in a new instance with exactly ``env``, ``stdin`` as its stdin and
        stdout captured; stderr is the worker's (the container's log).  ``timeout`` seconds of
        wall time stop a running guest ("timeout")."""


class Engine(Protocol):
    name: str

    def load(self, plan: WasiPlan) -> object:
        """Compile the module; raise ``InvalidArgument`` naming the field when it cannot run."""

    def run(self, loaded: object, plan: WasiPlan, ready: Callable[[], None] | None = None) -> int:
        """Run the guest with the container's stdio on fds 0-2; return its exit status.

        ``ready`` is called once the guest's grants are open and before guest code runs:
        the worker drops to the container's user there, as runc does after its mounts.
        """

    def prepare_instances(self, loaded: object, plan: WasiPlan) -> Instances:
        """Per-request instances of ``loaded`` (``plan.http``), in the worker after ``ready``."""

    def precompile(self, plan: WasiPlan) -> bytes:
        """Compile the module to bytes that ``load_precompiled`` accepts on this node."""

    def load_precompiled(self, data: bytes, plan: WasiPlan) -> object:
        """``load`` from ``precompile``'s output, checking the plan as ``load`` does."""

    def fingerprint(self, plan: WasiPlan) -> str:
        """What, besides the module digest, decides ``precompile``'s output (cache key part)."""


# name -> (module, class, what to install when the module does not import)
_KNOWN: dict[str, tuple[str, str, str]] = {
    "wasmtime": ("pywasmd.engines.wasmtime", "WasmtimeEngine", "`pip install wasmtime`"),
    "wasmer": (
        "pywasmd.engines.wasmer",
        "WasmerEngine",
        "Python <= 3.10 and `pip install 'pywasmd[wasmer]'`",
    ),
}

ENGINE_NAMES = tuple(sorted(_KNOWN))


def get_engine(name: str) -> Engine:
    if name not in _KNOWN:
        raise InvalidArgument(f"unknown engine {name!r}; known engines: {', '.join(ENGINE_NAMES)}")
    module, cls, needs = _KNOWN[name]
    try:
        engine: Engine = getattr(importlib.import_module(module), cls)()
    except ImportError as exc:
        raise Unavailable(f"engine {name} needs {needs} (on this node: {exc})") from exc
    return engine
