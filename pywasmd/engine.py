"""The whole surface an engine offers the shim.

An engine turns a :class:`~pywasmd.oci.plan.WasiPlan` into a running guest.  It
is used only inside a worker process (one per container), so ``run`` may block
and may leave the process in any state: the worker exits right after it.
"""

from __future__ import annotations

from typing import Protocol

from pywasmd.oci.plan import WasiPlan

#: Exit status of a guest that trapped (like a native program killed by SIGABRT).
TRAP_EXIT_STATUS = 134


class Engine(Protocol):
    name: str

    def load(self, plan: WasiPlan) -> object:
        """Compile or load the module; raise ``InvalidArgument`` when it cannot run."""

    def run(self, loaded: object, plan: WasiPlan) -> int:
        """Run the guest with the container's stdio on fds 0-2; return its exit status."""


def get_engine(name: str) -> Engine:
    from pywasmd.errors import InvalidArgument

    if name == "wasmtime":
        from pywasmd.engines.wasmtime import WasmtimeEngine

        return WasmtimeEngine()
    raise InvalidArgument(f"unknown engine {name!r}; available: wasmtime")
