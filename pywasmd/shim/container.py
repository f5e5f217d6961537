"""What the Task API asks of a container, whatever runs it.

Two kinds implement :class:`Container`: a Wasm guest in pywasm's own workers
(:mod:`pywasmd.shim.wasm_container`) and a Linux program run by runc
(:mod:`pywasmd.shim.runc_container`); :mod:`pywasmd.shim.factory` picks one at Create.  Each
owns its rootfs mounts, its cgroup and its processes; the service owns their states.
:class:`ContainerBase` is what both kinds do alike.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from google.protobuf import any_pb2

from pywasmd.errors import InvalidArgument, NotFound
from pywasmd.oci import spec as oci_spec
from pywasmd.shim import mounts, stats
from pywasmd.shim.cgroups import Cgroup
from pywasmd.shim.process import Kill, Process, Stdio, kill_quietly, send_signal
from pywasmd.shim.reaper import Reaper

log = logging.getLogger("pywasmd.shim")

#: How long Delete waits for a process it killed.
KILL_WAIT = 5.0


@dataclass(frozen=True)
class Mount:
    """One of Create's rootfs mounts (containerd's ``types.Mount``)."""

    type: str
    source: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class CreateRequest:
    id: str
    bundle: str
    #: Mounted on the bundle's rootfs before anything looks at it; empty: already there.
    rootfs: tuple[Mount, ...] = ()
    stdio: Stdio = Stdio()
    #: The runtime options (``options`` of CreateTaskRequest): type URL and bytes.
    options_type: str = ""
    options: bytes = b""


#: Called once per process when it has exited: ``(process, status, out of memory)``.
ExitHandler = Callable[[Process, int, bool], None]


class Container(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def bundle(self) -> str: ...
    @property
    def init(self) -> Process: ...
    @property
    def execs(self) -> Mapping[str, Process]: ...

    async def start(self) -> None:
        """Let the init run (it exists since Create)."""

    async def kill(self, process: Process, sig: int, all: bool = False) -> None:
        """Signal one of this container's processes (``all``: the init and the rest)."""

    async def delete(self) -> None:
        """Release everything: the processes (killed when still there), mounts, cgroup."""

    async def pids(self) -> list[int]:
        """The init's pid first."""

    def stats(self) -> any_pb2.Any:
        """The cgroup's metrics; NotFound without a cgroup."""

    async def update(self, resources: bytes) -> None:
        """Apply OCI LinuxResources JSON."""

    async def pause(self) -> None: ...
    async def resume(self) -> None: ...

    async def exec(self, exec_id: str, spec: bytes, stdio: Stdio) -> Process:
        """Add a process (OCI Process JSON ``spec``), not started; it is in ``execs`` after."""

    async def start_exec(self, process: Process) -> None: ...

    async def delete_exec(self, process: Process) -> None:
        """Forget an exec, killed first when it has not exited."""


class Containers(Protocol):
    """Makes the container a Create asks for; ``on_exit`` hears of each of its processes."""

    async def create(self, request: CreateRequest, on_exit: ExitHandler) -> Container: ...


def parse_exec_spec(exec_id: str, spec: bytes) -> oci_spec.Process:
    try:
        return oci_spec.parse_process(json.loads(spec or b"null"))
    except ValueError as exc:
        raise InvalidArgument(f"exec {exec_id!r}: the process spec is not JSON: {exc}") from None


class Rootfs:
    """The bundle's rootfs, with Create's mounts on it when there were any."""

    def __init__(self, path: str, mounted: bool = False) -> None:
        self.path = path
        self.mounted = mounted

    def release(self) -> None:
        if self.mounted:
            mounts.unmount_all(self.path)
            self.mounted = False


class ContainerBase:
    """The processes, the exits and the release that both kinds of container share."""

    def __init__(
        self,
        id: str,
        bundle: str,
        rootfs: Rootfs,
        init: Process,
        cgroup: Cgroup | None,
        reaper: Reaper,
        kill: Kill,
        on_exit: ExitHandler,
    ) -> None:
        self.id = id
        self.bundle = bundle
        self.rootfs = rootfs
        self.init = init
        self.cgroup = cgroup
        self.execs: dict[str, Process] = {}
        self._reaper = reaper
        self._kill = kill
        self._on_exit = on_exit

    def watch(self) -> None:
        """From now on the init's exit ends the container."""
        self._reaper.watch(self.init.pid, self._init_exited)

    def _init_exited(self, status: int) -> None:
        # The container ends with its init, as under runc: exec'd processes go with it.
        for ex in self.execs.values():
            if not ex.exited.is_set() and ex.pid:
                kill_quietly(self._kill, ex.pid, signal.SIGKILL)
        oom = self._init_ended(status)
        self.init.io.close()
        log.info("container %s exited with status %d", self.id, status)
        self._on_exit(self.init, status, oom)

    def _init_ended(self, status: int) -> bool:
        """What the kind does when its init is gone; True when memory ran out."""
        return self.cgroup is not None and self.cgroup.oom_killed()

    def _watch_exec(self, ex: Process, ended: Callable[[], None] = lambda: None) -> None:
        def exited(status: int) -> None:
            ended()
            ex.io.close()
            self._on_exit(ex, status, False)

        self._reaper.watch(ex.pid, exited)

    async def kill(self, process: Process, sig: int, all: bool = False) -> None:
        if process is self.init:
            send_signal(self._kill, process.pid, sig, f"container {self.id!r}", group=all)
        else:
            send_signal(self._kill, process.pid, sig, f"exec {process.id!r}")

    async def _stop(self, process: Process, what: str) -> None:
        if process.exited.is_set() or not process.pid:
            return
        kill_quietly(self._kill, process.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(process.exited.wait(), KILL_WAIT)
        except TimeoutError:
            log.warning("%s: pid %d did not die after SIGKILL", what, process.pid)

    async def delete(self) -> None:
        await self._stop(self.init, f"delete {self.id}")
        for ex in list(self.execs.values()):
            await self.delete_exec(ex)
        self.init.io.close()
        self._release()
        self.rootfs.release()
        if self.cgroup is not None:
            self.cgroup.destroy()

    def _release(self) -> None:
        """What else the kind holds on the host."""

    async def delete_exec(self, process: Process) -> None:
        await self._stop(process, f"delete exec {process.id}")
        process.io.close()
        self.execs.pop(process.id, None)

    def stats(self) -> any_pb2.Any:
        if self.cgroup is None:
            raise NotFound(f"container {self.id!r}: no cgroup statistics (not running in one)")
        return stats.metrics(self.cgroup)
