"""Create: the rootfs mounted, then the kind of container its entrypoint asks for.

A Linux program (or a pod's sandbox container) goes to runc; everything else is a Wasm
guest.  The rootfs is mounted first because the entrypoint is read from it.
"""

from __future__ import annotations

import logging
import os

from pywasmd.oci.module import LINUX, program_kind
from pywasmd.oci.spec import RuntimeSpec, load_spec
from pywasmd.shim import mounts
from pywasmd.shim.container import Container, CreateRequest, ExitHandler, Rootfs
from pywasmd.shim.launcher import Launcher
from pywasmd.shim.linux import Runc
from pywasmd.shim.process import Kill
from pywasmd.shim.reaper import Reaper
from pywasmd.shim.runc_container import RuncContainer
from pywasmd.shim.wasm_container import (
    ArtifactLookup,
    EntrypointLookup,
    WasmContainer,
    WasmContainers,
    Workers,
)

log = logging.getLogger("pywasmd.shim")

_CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type"


class ContainerFactory:
    """The :class:`~pywasmd.shim.container.Containers` of a shim server."""

    def __init__(
        self,
        launcher: Launcher,
        reaper: Reaper,
        artifact_lookup: ArtifactLookup | None = None,
        entrypoint_lookup: EntrypointLookup | None = None,
        runc: Runc | None = None,
        kill: Kill = os.kill,
    ) -> None:
        self._wasm = WasmContainers(
            Workers(launcher, reaper, kill), artifact_lookup, entrypoint_lookup
        )
        #: Runs the containers whose entrypoint is a Linux program; None refuses them.
        self._runc = runc
        self._reaper = reaper
        #: os.kill; tests pass a fake one with their fake launcher, whose pids are no process's.
        self._kill = kill

    async def create(self, request: CreateRequest, on_exit: ExitHandler) -> Container:
        spec = load_spec(request.bundle)
        rootfs = Rootfs(os.path.join(request.bundle, spec.root.path))
        try:
            if request.rootfs:
                os.makedirs(rootfs.path, mode=0o711, exist_ok=True)
                mounts.mount_all(
                    (mounts.RootfsMount(m.type, m.source, m.options) for m in request.rootfs),
                    rootfs.path,
                )
                rootfs.mounted = True
            container: RuncContainer | WasmContainer
            if self._runc is not None and _runs_on_runc(request.id, spec, rootfs.path):
                container = await RuncContainer.create(
                    request, spec, rootfs, self._runc, self._reaper, self._kill, on_exit
                )
            else:
                container = await self._wasm.create(request, spec, rootfs, on_exit)
        except BaseException:
            rootfs.release()
            raise
        container.watch()
        return container


def _runs_on_runc(id: str, spec: RuntimeSpec, rootfs: str) -> bool:
    process = spec.process
    if spec.annotations.get(_CRI_CONTAINER_TYPE) == "sandbox":
        log.info("%s: pod sandbox container: a Linux program, handing it to runc", id)
        return True
    if program_kind(rootfs, process.args[0], process.cwd, process.env) == LINUX:
        log.info("%s: %s is a Linux program: handing it to runc", id, process.args[0])
        return True
    return False
