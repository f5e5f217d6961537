"""A Linux program as a container, run by runc (a pod's pause container, sidecars).

The container wraps :class:`pywasmd.shim.linux.Runc`: runc's state for it (its ``--root``,
the ``init.pid`` runc writes) and its exec'd processes, which ``runc exec`` starts at Start
as containerd's runc shim does.  runc makes and removes the cgroup; the shim only reads it.
"""

from __future__ import annotations

import contextlib
import logging

from pywasmd.errors import InvalidArgument, ShimError
from pywasmd.oci.spec import RuntimeSpec
from pywasmd.shim.cgroups import Cgroup
from pywasmd.shim.container import (
    ContainerBase,
    CreateRequest,
    ExitHandler,
    Rootfs,
    parse_exec_spec,
)
from pywasmd.shim.linux import Runc
from pywasmd.shim.process import Kill, Process, Stdio
from pywasmd.shim.reaper import Reaper
from pywasmd.shim.stdio import ProcessIO

log = logging.getLogger("pywasmd.shim")


class RuncContainer(ContainerBase):
    def __init__(
        self,
        request: CreateRequest,
        rootfs: Rootfs,
        init: Process,
        cgroup: Cgroup | None,
        runc: Runc,
        reaper: Reaper,
        kill: Kill,
        on_exit: ExitHandler,
    ) -> None:
        super().__init__(request.id, request.bundle, rootfs, init, cgroup, reaper, kill, on_exit)
        self._runc = runc
        #: The OCI process JSON of each exec not started yet.
        self._exec_specs: dict[str, bytes] = {}

    @classmethod
    async def create(
        cls,
        request: CreateRequest,
        spec: RuntimeSpec,
        rootfs: Rootfs,
        runc: Runc,
        reaper: Reaper,
        kill: Kill,
        on_exit: ExitHandler,
    ) -> RuncContainer:
        if request.stdio.terminal:
            raise InvalidArgument(
                f"container {request.id!r} runs a Linux program with a terminal (-t), which the "
                "pywasm shim does not offer for Linux containers: drop -t, or run it with "
                "io.containerd.runc.v2"
            )
        stdio = request.stdio
        io = ProcessIO(stdio.stdin, stdio.stdout, stdio.stderr)
        try:
            pid = await runc.create(request.id, request.bundle, io.open(), spec.cgroups_path)
        except BaseException:
            io.close()
            with contextlib.suppress(ShimError, OSError):
                await runc.delete(request.id, request.bundle)
            raise
        io.after_spawn()
        # runc's init waits for `runc start`: an exit kept under its pid is an older process's.
        reaper.forget(pid)
        # runc made the cgroup and removes it; the shim only reads it (stats, OOM).
        cgroup = Cgroup(spec.cgroups_path) if spec.cgroups_path else None
        if cgroup is not None:
            cgroup.shared = True
        log.info("created %s: Linux container run by runc, init pid %d", request.id, pid)
        init = Process(request.id, io, pid)
        return cls(request, rootfs, init, cgroup, runc, reaper, kill, on_exit)

    def _init_ended(self, status: int) -> bool:
        oom = super()._init_ended(status)
        if oom:
            log.warning("container %s ran out of memory (its cgroup's limit)", self.id)
        return oom

    async def start(self) -> None:
        await self._runc.start(self.id, self.bundle)

    async def kill(self, process: Process, sig: int, all: bool = False) -> None:
        if process is self.init and all:
            await self._runc.kill_all(self.id, self.bundle, sig)
        else:
            await super().kill(process, sig, all)

    async def delete(self) -> None:
        await self._runc.delete(self.id, self.bundle)
        await super().delete()

    async def pids(self) -> list[int]:
        found = await self._runc.pids(self.id, self.bundle)
        return [self.init.pid] + [p for p in found if p != self.init.pid]

    async def update(self, resources: bytes) -> None:
        await self._runc.update(self.id, self.bundle, resources)

    async def pause(self) -> None:
        await self._runc.pause(self.id, self.bundle)

    async def resume(self) -> None:
        await self._runc.resume(self.id, self.bundle)

    async def exec(self, exec_id: str, spec: bytes, stdio: Stdio) -> Process:
        if stdio.terminal or parse_exec_spec(exec_id, spec).terminal:
            raise InvalidArgument(
                f"exec {exec_id!r}: a terminal (-t) in a Linux container of a pywasm "
                "shim is not offered; drop -t"
            )
        ex = Process(exec_id, ProcessIO(stdio.stdin, stdio.stdout, stdio.stderr))
        self._exec_specs[exec_id] = spec
        self.execs[exec_id] = ex
        return ex

    async def start_exec(self, process: Process) -> None:
        spec = self._exec_specs[process.id]
        try:
            pid = await self._runc.exec(self.id, self.bundle, process.id, spec, process.io.open())
        finally:
            process.io.after_spawn()
        process.pid = pid
        del self._exec_specs[process.id]
        self._watch_exec(process)

    async def delete_exec(self, process: Process) -> None:
        await super().delete_exec(process)
        self._exec_specs.pop(process.id, None)
