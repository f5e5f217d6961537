"""A Wasm guest as a container: one worker process per Wasm process (its init, each exec).

The container owns its workers, the host setups its grants need (tmpfs, single-file binds
under ``pywasm-mounts``), its cgroup (made here from ``linux.cgroupsPath``) and its rootfs
mounts.  A worker is spawned and loaded at Create or Exec, so its pid exists before Start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import posixpath
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from pywasmd import paths
from pywasmd.engine import TIMEOUT_EXIT_STATUS
from pywasmd.errors import FailedPrecondition, Internal, InvalidArgument, ShimError
from pywasmd.nodeconfig import config_path, load_node_config
from pywasmd.oci.engine_choice import choose_engine
from pywasmd.oci.module import locate_module
from pywasmd.oci.plan import WasiPlan, host_path, missing_cwd, plan_from_spec, split_env
from pywasmd.oci.runtime_options import runtime_options
from pywasmd.oci.sandbox import for_exec
from pywasmd.oci.spec import RuntimeSpec, check_wasm_resources, parse_resources
from pywasmd.shim import hostsetup
from pywasmd.shim.cgroups import Cgroup, prime_migration
from pywasmd.shim.console import TerminalIO
from pywasmd.shim.container import (
    ContainerBase,
    CreateRequest,
    ExitHandler,
    Rootfs,
    parse_exec_spec,
)
from pywasmd.shim.launcher import Launcher, Worker
from pywasmd.shim.process import Kill, Process, Stdio, kill_quietly
from pywasmd.shim.reaper import Reaper
from pywasmd.shim.state import Status
from pywasmd.shim.stdio import ProcessIO

log = logging.getLogger("pywasmd.shim")

#: Finds the module of a Wasm OCI artifact (which containerd cannot unpack into the
#: rootfs): ``(container id, spec, rootfs) -> host path of the module``, or None when the
#: container is not an artifact.
ArtifactLookup = Callable[[str, RuntimeSpec, str], Awaitable[str | None]]
#: The image's entrypoint of a container, or None: ``container id -> entrypoint``.
EntrypointLookup = Callable[[str], Awaitable[list[str] | None]]


@dataclass(frozen=True)
class Workers:
    """Workers with a plan loaded, and rid of them again."""

    launcher: Launcher
    reaper: Reaper
    kill: Kill

    async def ready(self, io: ProcessIO | TerminalIO, plan: WasiPlan, bundle: str = "") -> Worker:
        """A worker with ``plan`` loaded and waiting for Start; on failure none is left."""
        worker = self.launcher.spawn(io.open(), plan.engine)
        # Pids are reused: an old exit kept under this number is not this worker's.
        self.reaper.forget(worker.pid)
        try:
            io.after_spawn()
            spawned = worker.pid
            if bundle:
                _write_pid(bundle, spawned)
            await worker.prepare(plan)
            if worker.pid != spawned:
                # The container's pid 1 took over from the process that loaded the module:
                # claim that one's exit, or a later process given its pid would inherit it.
                self.reaper.watch(spawned, lambda _status: None)
                self.reaper.forget(worker.pid)
                if bundle:
                    _write_pid(bundle, worker.pid)
        except BaseException:
            self.discard(worker)
            raise
        return worker

    def discard(self, worker: Worker) -> None:
        kill_quietly(self.kill, worker.pid, signal.SIGKILL)
        self.reaper.watch(worker.pid, lambda _status: None)
        worker.close()


class WasmContainer(ContainerBase):
    def __init__(
        self,
        request: CreateRequest,
        rootfs: Rootfs,
        init: Process,
        worker: Worker,
        plan: WasiPlan,
        cgroup: Cgroup | None,
        workers: Workers,
        on_exit: ExitHandler,
    ) -> None:
        super().__init__(
            request.id,
            request.bundle,
            rootfs,
            init,
            cgroup,
            workers.reaper,
            workers.kill,
            on_exit,
        )
        self.plan = plan
        self._worker = worker
        self._workers = workers
        self._exec_workers: dict[str, Worker] = {}

    async def start(self) -> None:
        if self.cgroup is not None:
            try:
                self.cgroup.add(self.init.pid)
            except OSError as exc:
                log.warning("%s: cannot join cgroup %s: %s", self.id, self.cgroup.path, exc)
        try:
            await self._worker.start()
        except OSError as exc:
            log.warning("start %s: worker %d is gone: %s", self.id, self.init.pid, exc)

    def _init_ended(self, status: int) -> bool:
        said = self._worker.report()
        self._worker.close()
        oom = "oom" in said.split() or super()._init_ended(status)
        if oom:
            limit = self.plan.memory_limit
            log.warning("container %s ran out of memory (limit %s bytes)", self.id, limit)
        if status == TIMEOUT_EXIT_STATUS and self.plan.timeout:
            log.warning(
                "container %s exceeded its pywasm.io/timeout of %ss", self.id, self.plan.timeout
            )
        return oom

    def _release(self) -> None:
        hostsetup.release(self.bundle)

    async def pids(self) -> list[int]:
        running = [
            ex.pid
            for ex in self.execs.values()
            if ex.pid and ex.status in (Status.STARTING, Status.RUNNING)
        ]
        return [self.init.pid, *running]

    async def update(self, resources: bytes) -> None:
        try:
            raw = json.loads(resources or b"{}")
        except ValueError as exc:
            raise InvalidArgument(f"Update {self.id!r}: resources are not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise InvalidArgument(f"Update {self.id!r}: resources must be a LinuxResources object")
        parsed = parse_resources(raw)
        check_wasm_resources(parsed)
        if self.cgroup is None or self.cgroup.shared:
            raise FailedPrecondition(
                f"container {self.id!r} has no cgroup of its own (no linux.cgroupsPath, or one "
                "shared with others): its resources cannot be changed while it runs"
            )
        try:
            self.cgroup.update(parsed)
        except OSError as exc:
            # The limits parsed and passed the Wasm checks: the kernel's refusal is the host's.
            raise Internal(f"Update {self.id!r}: cgroup {self.cgroup.path} refused: {exc}") from exc
        if parsed.memory_limit and parsed.memory_limit != self.plan.memory_limit:
            # The engine's own cap was fixed when the guest started; the cgroup's is live.
            log.info(
                "%s: memory limit now %d bytes in the cgroup (the engine keeps %s)",
                self.id,
                parsed.memory_limit,
                self.plan.memory_limit,
            )

    async def pause(self) -> None:
        self._freeze(True)

    async def resume(self) -> None:
        self._freeze(False)

    def _freeze(self, frozen: bool) -> None:
        # The cgroup freezer when the container has one, else job control on the worker.
        try:
            if self.cgroup is not None and self.cgroup.freeze(frozen):
                return
        except OSError as exc:
            log.warning("%s: cgroup freezer failed (%s); stopping the process", self.id, exc)
        kill_quietly(self._kill, self.init.pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    async def exec(self, exec_id: str, spec: bytes, stdio: Stdio) -> Process:
        process = parse_exec_spec(exec_id, spec)
        module = locate_module(self.rootfs.path, process.args[0], process.cwd)
        # The container's grants, limits and engine; the exec's own argv, env, cwd and user;
        # the container's namespaces, joined.
        sandbox = (
            for_exec(self.plan.sandbox, self.init.pid, json.loads(spec))
            if self.plan.sandbox is not None
            else None
        )
        plan = dataclasses.replace(
            self.plan,
            module=module,
            argv=process.args,
            env=split_env(process.env),
            cwd=posixpath.normpath(process.cwd or "/"),
            uid=process.user.uid,
            gid=process.user.gid,
            additional_gids=process.user.additional_gids,
            sandbox=sandbox,
        )
        _check_cwd(plan)
        io = stdio.io()
        try:
            worker = await self._workers.ready(io, plan)
        except BaseException:
            io.close()
            raise
        ex = Process(exec_id, io, worker.pid)
        self._exec_workers[exec_id] = worker
        self.execs[exec_id] = ex
        self._watch_exec(ex, worker.close)
        log.info("exec %s in %s: wasm module %s, worker pid %d", exec_id, self.id, module, ex.pid)
        return ex

    async def start_exec(self, process: Process) -> None:
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.add(process.pid)
        try:
            await self._exec_workers[process.id].start()
        except OSError as exc:
            log.warning("exec %s: worker %d is gone: %s", process.id, process.pid, exc)

    async def delete_exec(self, process: Process) -> None:
        await super().delete_exec(process)
        self._exec_workers.pop(process.id, None)


class WasmContainers:
    """Makes Wasm containers: the module, the plan, the node's engine choice, a worker."""

    def __init__(
        self,
        workers: Workers,
        artifact_lookup: ArtifactLookup | None = None,
        entrypoint_lookup: EntrypointLookup | None = None,
    ) -> None:
        self._workers = workers
        self._artifact_lookup = artifact_lookup
        self._entrypoint_lookup = entrypoint_lookup

    async def create(
        self, request: CreateRequest, spec: RuntimeSpec, rootfs: Rootfs, on_exit: ExitHandler
    ) -> WasmContainer:
        io = request.stdio.io()
        worker: Worker | None = None
        cgroup: Cgroup | None = None
        try:
            spec = await self._restore_entrypoint(request.id, spec, rootfs.path)
            module = await self._find_module(request.id, spec, rootfs.path)
            scratch = hostsetup.scratch_dir(request.bundle)
            plan = plan_from_spec(spec, rootfs.path, module, scratch)
            options = runtime_options(request.options_type, request.options)
            plan = _choose_engine(plan, spec, options)
            hostsetup.prepare(plan.setups)
            _check_cwd(plan)
            # Before the worker: its sandbox binds the container's own cgroup directories.
            cgroup = _make_cgroup(request.bundle, spec)
            if cgroup is not None and plan.sandbox is not None:
                plan = dataclasses.replace(
                    plan, sandbox=dataclasses.replace(plan.sandbox, cgroup_path=cgroup.path)
                )
                if plan.sandbox and plan.sandbox.pid_namespace is not None:
                    # The worker moves its pid 1 into the cgroup ~10 ms from now.
                    prime_migration()
            worker = await self._workers.ready(io, plan, request.bundle)
        except BaseException as exc:
            # pid 1 joins the cgroup during Create: a memory limit below what it needs kills
            # it there, and the user must learn that it was the limit (runc says the same).
            oom = isinstance(exc, Internal) and cgroup is not None and cgroup.oom_killed()
            if worker is not None:
                self._workers.discard(worker)
            if cgroup is not None:
                cgroup.destroy()
            io.close()
            hostsetup.release(request.bundle)
            if oom:
                raise _too_little_memory(spec) from None
            raise
        log.info("created %s: wasm module %s, worker pid %d", request.id, module, worker.pid)
        init = Process(request.id, io, worker.pid)
        return WasmContainer(request, rootfs, init, worker, plan, cgroup, self._workers, on_exit)

    async def _restore_entrypoint(self, id: str, spec: RuntimeSpec, rootfs: str) -> RuntimeSpec:
        """``ctr run IMAGE ID a b`` drops the image's entrypoint; put a Wasm one back."""
        if self._entrypoint_lookup is None:
            return spec
        try:
            locate_module(rootfs, spec.process.args[0], spec.process.cwd)
            return spec
        except InvalidArgument:
            pass
        try:
            entry = await self._entrypoint_lookup(id)
        except ShimError as exc:
            log.info("%s: no image entrypoint to restore: %s", id, exc.message)
            return spec
        if not entry or entry[0] == spec.process.args[0]:
            return spec
        try:
            locate_module(rootfs, entry[0], spec.process.cwd)
        except InvalidArgument:
            return spec
        log.info(
            "%s: args %s do not start with a Wasm module; prepending the image's entrypoint %s",
            id,
            list(spec.process.args),
            entry,
        )
        process = dataclasses.replace(spec.process, args=tuple(entry) + spec.process.args)
        return dataclasses.replace(spec, process=process)

    async def _find_module(self, id: str, spec: RuntimeSpec, rootfs: str) -> str:
        if self._artifact_lookup is not None:
            found = await self._artifact_lookup(id, spec, rootfs)
            if found is not None:
                return found
        return locate_module(rootfs, spec.process.args[0], spec.process.cwd)


def _choose_engine(plan: WasiPlan, spec: RuntimeSpec, options: Mapping[str, object]) -> WasiPlan:
    # Read per container, so an edit to the node config applies to the next one.
    choice = choose_engine(spec.annotations, options, load_node_config(), config_path())
    return dataclasses.replace(plan, engine=choice.name, features=choice.feature_tuple)


def _check_cwd(plan: WasiPlan) -> None:
    if plan.sandbox is not None and plan.sandbox.has("mount"):
        return  # a path of the container's own mount namespace: the worker checks it there
    where = host_path(plan, plan.cwd)
    if where is None or not os.path.isdir(where):
        raise missing_cwd(plan.cwd)


def _too_little_memory(spec: RuntimeSpec) -> InvalidArgument:
    limit = spec.resources.memory_limit
    return InvalidArgument(
        f"linux.resources.memory.limit ({limit} bytes) is too low: the out-of-memory killer "
        "ended the container's first process while it was being created; raise the limit "
        "(docker run --memory, ctr run --memory-limit)"
    )


def _make_cgroup(bundle: str, spec: RuntimeSpec) -> Cgroup | None:
    if not spec.cgroups_path:
        return None
    cgroup = Cgroup(spec.cgroups_path)
    try:
        cgroup.create(spec.resources)
    except OSError as exc:
        log.warning(
            "cgroup %s unavailable (%s): limits other than the engine's memory cap are not applied",
            cgroup.path,
            exc,
        )
        cgroup.destroy()
        return None
    with contextlib.suppress(OSError):
        paths.write_cgroup(bundle, cgroup.path)
    return cgroup


def _write_pid(bundle: str, pid: int) -> None:
    """``delete`` reads it when the shim is gone and the worker must still be killed."""
    try:
        paths.write_init_pid(bundle, pid)
    except OSError as exc:
        log.warning("cannot write %s in %s: %s", paths.INIT_PID, bundle, exc)
