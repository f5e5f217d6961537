"""The Task API, written once and free of any transport.

Methods take and return containerd's ``containerd.task.v2`` messages; the ttrpc
binding only decodes, calls and encodes.  Errors are raised as
:mod:`pywasmd.errors` classes and turned into status codes at the edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import os
import posixpath
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.protobuf import empty_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from pywasmd import paths
from pywasmd.api.containerd.events import task_pb2 as ev
from pywasmd.api.containerd.task.v2 import shim_pb2 as pb
from pywasmd.api.containerd.types import mount_pb2
from pywasmd.api.containerd.types.task import task_pb2 as types
from pywasmd.engine import TIMEOUT_EXIT_STATUS
from pywasmd.errors import (
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ShimError,
    Unimplemented,
)
from pywasmd.nodeconfig import config_path, load_node_config
from pywasmd.oci.engine_choice import choose_engine
from pywasmd.oci.module import LINUX, locate_module, program_kind
from pywasmd.oci.plan import WasiPlan, host_path, missing_cwd, plan_from_spec, split_env
from pywasmd.oci.runtime_options import runtime_options
from pywasmd.oci.sandbox import for_exec
from pywasmd.oci.spec import (
    Process,
    RuntimeSpec,
    check_wasm_resources,
    load_spec,
    parse_process,
    parse_resources,
)
from pywasmd.shim import hostsetup, mounts, stats
from pywasmd.shim.cgroups import Cgroup
from pywasmd.shim.console import TerminalIO
from pywasmd.shim.launcher import Launcher, Worker
from pywasmd.shim.linux import Runc
from pywasmd.shim.reaper import Reaper
from pywasmd.shim.state import Op, Status, next_state
from pywasmd.shim.stdio import ProcessIO

if TYPE_CHECKING:
    from pywasmd.shim.events import EventPublisher

log = logging.getLogger("pywasmd.shim")

_CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
#: How long Delete of a never-started container waits for its killed worker.
_KILL_WAIT = 5.0


def _timestamp(ns: int) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(ns)
    return ts


@dataclass
class Task:
    id: str
    bundle: str
    rootfs: str
    mounted: bool
    io: ProcessIO | TerminalIO
    worker: Worker
    #: None for a Linux container, which runc runs.
    plan: WasiPlan | None
    cgroup: Cgroup | None = None
    status: Status = Status.CREATED
    oom: bool = False
    exit_status: int = 0
    exited_at_ns: int = 0
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    execs: dict[str, ExecProcess] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.worker.pid

    @property
    def linux(self) -> bool:
        return self.plan is None


@dataclass
class ExecProcess:
    """A process added to a running container (``ctr task exec``, ``docker exec``).

    In a Wasm container it is another guest in the container's grants, in a worker of
    its own; in a Linux container, ``runc exec`` runs it (at Start, as runc's shim does).
    """

    id: str
    io: ProcessIO | TerminalIO
    worker: Worker
    #: The OCI process JSON, for runc; None for a Wasm exec.
    runc_process: bytes | None = None
    status: Status = Status.CREATED
    exit_status: int = 0
    exited_at_ns: int = 0
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pid(self) -> int:
        return self.worker.pid


class _RuncInit:
    """A Linux container's init process, as the service sees a worker."""

    def __init__(self, pid: int = 0) -> None:
        self.pid = pid

    async def prepare(self, plan: WasiPlan) -> None:
        raise Internal("a Linux container takes no Wasm plan")

    async def start(self) -> None:
        pass

    def report(self) -> str:
        return ""

    def close(self) -> None:
        pass


#: Finds the module of a Wasm OCI artifact (which containerd cannot unpack into the
#: rootfs): ``(container id, spec, rootfs) -> host path of the module``, or None when the
#: container is not an artifact.
ArtifactLookup = Callable[[str, RuntimeSpec, str], Awaitable[str | None]]
#: The image's entrypoint of a container, or None: ``container id -> entrypoint``.
EntrypointLookup = Callable[[str], Awaitable[list[str] | None]]


class TaskService:
    def __init__(
        self,
        launcher: Launcher,
        reaper: Reaper,
        publisher: EventPublisher,
        artifact_lookup: ArtifactLookup | None = None,
        entrypoint_lookup: EntrypointLookup | None = None,
        runc: Runc | None = None,
        kill: Callable[[int, int], None] = os.kill,
    ) -> None:
        self._launcher = launcher
        #: os.kill (a negative pid is a process group); tests pass a fake one with their fake
        #: launcher, whose pids are no process's.
        self._kill = kill
        self._reaper = reaper
        self._publish = publisher.publish
        self._artifact_lookup = artifact_lookup
        self._entrypoint_lookup = entrypoint_lookup
        #: Runs the containers whose entrypoint is a Linux program; None refuses them.
        self._runc = runc
        self._tasks: dict[str, Task] = {}
        self.shutdown_requested = asyncio.Event()

    @property
    def task_count(self) -> int:
        return len(self._tasks)

    def _exec(self, id: str, exec_id: str) -> tuple[Task, ExecProcess]:
        task = self._task(id)
        try:
            return task, task.execs[exec_id]
        except KeyError:
            raise NotFound(f"exec {exec_id!r} of container {id!r} not found") from None

    def _task(self, id: str, exec_id: str = "") -> Task:
        if exec_id:
            raise NotFound(f"exec {exec_id!r} of container {id!r} not found")
        try:
            return self._tasks[id]
        except KeyError:
            raise NotFound(f"container {id!r} not found in this shim") from None

    # --- lifecycle -------------------------------------------------------------------

    async def create(self, req: pb.CreateTaskRequest) -> pb.CreateTaskResponse:
        if req.id in self._tasks:
            raise AlreadyExists(f"container {req.id!r} already exists")
        if req.checkpoint:
            raise Unimplemented("checkpoint/restore is not supported by pywasm")
        spec = load_spec(req.bundle)
        rootfs = os.path.join(req.bundle, spec.root.path)
        mounted = False
        try:
            if req.rootfs:
                os.makedirs(rootfs, mode=0o711, exist_ok=True)
                mounts.mount_all(
                    (mounts.RootfsMount(m.type, m.source, tuple(m.options)) for m in req.rootfs),
                    rootfs,
                )
                mounted = True
            if self._runs_on_runc(req.id, spec, rootfs):
                task = await self._create_linux(req, spec, rootfs, mounted)
            else:
                task = await self._create_wasm(req, spec, rootfs, mounted)
        except BaseException:
            if mounted:
                mounts.unmount_all(rootfs)
            raise
        self._tasks[req.id] = task
        self._reaper.watch(task.pid, lambda status: self._on_exit(task, status))
        self._publish(
            "/tasks/create",
            ev.TaskCreate(
                container_id=req.id,
                bundle=req.bundle,
                rootfs=[
                    mount_pb2.Mount(
                        type=m.type, source=m.source, target=m.target, options=m.options
                    )
                    for m in req.rootfs
                ],
                io=ev.TaskIO(
                    stdin=req.stdin, stdout=req.stdout, stderr=req.stderr, terminal=req.terminal
                ),
                checkpoint=req.checkpoint,
                pid=task.pid,
            ),
        )
        return pb.CreateTaskResponse(pid=task.pid)

    def _runs_on_runc(self, id: str, spec: RuntimeSpec, rootfs: str) -> bool:
        """A Linux entrypoint (or a pod's sandbox) goes to runc; everything else is Wasm."""
        if self._runc is None:
            return False
        process = spec.process
        if spec.annotations.get(_CRI_CONTAINER_TYPE) == "sandbox":
            log.info("%s: pod sandbox container: a Linux program, handing it to runc", id)
            return True
        kind = program_kind(rootfs, process.args[0], process.cwd, process.env)
        if kind == LINUX:
            log.info("%s: %s is a Linux program: handing it to runc", id, process.args[0])
            return True
        return False

    async def _create_wasm(
        self, req: pb.CreateTaskRequest, spec: RuntimeSpec, rootfs: str, mounted: bool
    ) -> Task:
        io = _guest_io(req)
        worker: Worker | None = None
        cgroup: Cgroup | None = None
        try:
            spec = await self._restore_entrypoint(req.id, spec, rootfs)
            module = await self._find_module(req.id, spec, rootfs)
            plan = plan_from_spec(spec, rootfs, module, hostsetup.scratch_dir(req.bundle))
            options = runtime_options(req.options.type_url, req.options.value)
            plan = self._choose_engine(plan, spec, options)
            hostsetup.prepare(plan.setups)
            _check_cwd(plan)
            # Before the worker: its sandbox binds the container's own cgroup directories.
            cgroup = _make_cgroup(req.bundle, spec)
            if cgroup is not None and plan.sandbox is not None:
                plan = dataclasses.replace(
                    plan, sandbox=dataclasses.replace(plan.sandbox, cgroup_path=cgroup.path)
                )
            worker = await self._ready_worker(io, plan, req.bundle)
        except BaseException:
            if worker is not None:
                self._discard(worker)
            if cgroup is not None:
                cgroup.destroy()
            io.close()
            hostsetup.release(req.bundle)
            raise
        log.info("created %s: wasm module %s, worker pid %d", req.id, module, worker.pid)
        return Task(req.id, req.bundle, rootfs, mounted, io, worker, plan, cgroup)

    async def _ready_worker(
        self, io: ProcessIO | TerminalIO, plan: WasiPlan, bundle: str = ""
    ) -> Worker:
        """A worker with ``plan`` loaded and waiting for Start; on failure none is left."""
        worker = self._launcher.spawn(io.open(), plan.engine)
        # Pids are reused: an old exit kept under this number is not this worker's.
        self._reaper.forget(worker.pid)
        try:
            io.after_spawn()
            spawned = worker.pid
            if bundle:
                _write_pid(bundle, spawned)
            await worker.prepare(plan)
            if worker.pid != spawned:
                # The container's pid 1 took over from the process that loaded the module:
                # claim that one's exit, or a later process given its pid would inherit it.
                self._reaper.watch(spawned, lambda _status: None)
                self._reaper.forget(worker.pid)
                if bundle:
                    _write_pid(bundle, worker.pid)
        except BaseException:
            self._discard(worker)
            raise
        return worker

    def _discard(self, worker: Worker) -> None:
        _kill_quietly(self._kill, worker.pid, signal.SIGKILL)
        self._reaper.watch(worker.pid, lambda _status: None)
        worker.close()

    async def _create_linux(
        self, req: pb.CreateTaskRequest, spec: RuntimeSpec, rootfs: str, mounted: bool
    ) -> Task:
        assert self._runc is not None
        if req.terminal:
            raise InvalidArgument(
                f"container {req.id!r} runs a Linux program with a terminal (-t), which the "
                "pywasm shim does not offer for Linux containers: drop -t, or run it with "
                "io.containerd.runc.v2"
            )
        io = ProcessIO(req.stdin, req.stdout, req.stderr)
        try:
            pid = await self._runc.create(req.id, req.bundle, io.open(), spec.cgroups_path)
        except BaseException:
            io.close()
            with contextlib.suppress(ShimError, OSError):
                await self._runc.delete(req.id, req.bundle)
            raise
        io.after_spawn()
        # runc's init waits for `runc start`: an exit kept under its pid is an older process's.
        self._reaper.forget(pid)
        # runc made the cgroup and removes it; the shim only reads it (stats, OOM).
        cgroup = Cgroup(spec.cgroups_path) if spec.cgroups_path else None
        if cgroup is not None:
            cgroup.shared = True
        log.info("created %s: Linux container run by runc, init pid %d", req.id, pid)
        return Task(req.id, req.bundle, rootfs, mounted, io, _RuncInit(pid), None, cgroup)

    def _choose_engine(
        self, plan: WasiPlan, spec: RuntimeSpec, options: Mapping[str, object]
    ) -> WasiPlan:
        # Read per container, so an edit to the node config applies to the next one.
        choice = choose_engine(spec.annotations, options, load_node_config(), config_path())
        return dataclasses.replace(plan, engine=choice.name, features=choice.feature_tuple)

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

    async def start(self, req: pb.StartRequest) -> pb.StartResponse:
        if req.exec_id:
            return await self._start_exec(*self._exec(req.id, req.exec_id))
        task = self._task(req.id, req.exec_id)
        if task.linux:
            return await self._start_linux(task)
        task.status = next_state(task.status, Op.START, req.id)
        if task.cgroup is not None:
            try:
                task.cgroup.add(task.pid)
            except OSError as exc:
                log.warning("%s: cannot join cgroup %s: %s", task.id, task.cgroup.path, exc)
        # Published before the guest can run, so its exit can never overtake it.
        self._publish("/tasks/start", ev.TaskStart(container_id=task.id, pid=task.pid))
        try:
            await task.worker.start()
        except OSError as exc:
            log.warning("start %s: worker %d is gone: %s", task.id, task.pid, exc)
        return pb.StartResponse(pid=task.pid)

    async def _start_linux(self, task: Task) -> pb.StartResponse:
        assert self._runc is not None
        # Taken before the first await, so an overlapping Start or Delete sees it.
        task.status = next_state(task.status, Op.START, task.id)
        # Published before the program can run, so its exit can never overtake it.
        self._publish("/tasks/start", ev.TaskStart(container_id=task.id, pid=task.pid))
        try:
            await self._runc.start(task.id, task.bundle)
        except BaseException:
            if task.status is Status.RUNNING:
                task.status = Status.CREATED
            raise
        return pb.StartResponse(pid=task.pid)

    def _on_exit(self, task: Task, status: int) -> None:
        # The container ends with its init, as under runc: exec'd guests go with it.
        for ex in task.execs.values():
            if not ex.status.finished and ex.pid:
                _kill_quietly(self._kill, ex.pid, signal.SIGKILL)
        task.status = next_state(task.status, Op.EXIT, task.id)
        task.exit_status = status
        task.exited_at_ns = time.time_ns()
        said = task.worker.report()
        task.worker.close()
        task.io.close()
        task.oom = "oom" in said.split() or (task.cgroup is not None and task.cgroup.oom_killed())
        task.exited.set()
        log.info("container %s exited with status %d", task.id, status)
        if task.oom:
            limit = task.plan.memory_limit if task.plan is not None else "cgroup"
            log.warning("container %s ran out of memory (limit %s bytes)", task.id, limit)
            self._publish("/tasks/oom", ev.TaskOOM(container_id=task.id))
        if status == TIMEOUT_EXIT_STATUS and task.plan is not None and task.plan.timeout:
            log.warning(
                "container %s exceeded its pywasm.io/timeout of %ss", task.id, task.plan.timeout
            )
        self._publish_exit(task.id, task.id, task.pid, status, task.exited_at_ns)

    def _publish_exit(self, container_id: str, id: str, pid: int, status: int, ns: int) -> None:
        exited = ev.TaskExit(
            container_id=container_id, id=id, pid=pid, exit_status=status, exited_at=_timestamp(ns)
        )
        self._publish("/tasks/exit", exited)

    async def wait(self, req: pb.WaitRequest) -> pb.WaitResponse:
        if req.exec_id:
            _, ex = self._exec(req.id, req.exec_id)
            await ex.exited.wait()
            return pb.WaitResponse(
                exit_status=ex.exit_status, exited_at=_timestamp(ex.exited_at_ns)
            )
        task = self._task(req.id, req.exec_id)
        await task.exited.wait()
        return pb.WaitResponse(
            exit_status=task.exit_status, exited_at=_timestamp(task.exited_at_ns)
        )

    async def kill(self, req: pb.KillRequest) -> empty_pb2.Empty:
        if req.exec_id:
            _, ex = self._exec(req.id, req.exec_id)
            next_state(ex.status, Op.KILL, f"exec {req.exec_id!r}")
            if not ex.pid:
                raise FailedPrecondition(f"exec {req.exec_id!r} has not started: nothing to kill")
            _signal(self._kill, ex.pid, req.signal, f"exec {req.exec_id!r}")
            return empty_pb2.Empty()
        task = self._task(req.id, req.exec_id)
        next_state(task.status, Op.KILL, req.id)
        if task.linux and req.all:
            assert self._runc is not None
            await self._runc.kill_all(task.id, task.bundle, req.signal)
            return empty_pb2.Empty()
        _signal(self._kill, task.pid, req.signal, f"container {req.id!r}", group=req.all)
        return empty_pb2.Empty()

    async def delete(self, req: pb.DeleteRequest) -> pb.DeleteResponse:
        if req.exec_id:
            return await self._delete_exec(*self._exec(req.id, req.exec_id))
        task = self._task(req.id, req.exec_id)
        # Taken before the first await: an overlapping Delete of this task gets NotFound.
        was, task.status = task.status, next_state(task.status, Op.DELETE, req.id)
        if task.linux:
            assert self._runc is not None
            await self._runc.delete(task.id, task.bundle)
        if was is Status.CREATED:
            _kill_quietly(self._kill, task.pid, signal.SIGKILL)
            try:
                await asyncio.wait_for(task.exited.wait(), _KILL_WAIT)
            except TimeoutError:
                log.warning("delete %s: worker %d did not die after SIGKILL", task.id, task.pid)
        for ex in list(task.execs.values()):
            await self._delete_exec(task, ex, force=True)
        task.io.close()
        hostsetup.release(task.bundle)
        if task.mounted:
            mounts.unmount_all(task.rootfs)
        if task.cgroup is not None:
            task.cgroup.destroy()
        del self._tasks[task.id]
        exited_at = _timestamp(task.exited_at_ns or time.time_ns())
        self._publish(
            "/tasks/delete",
            ev.TaskDelete(
                container_id=task.id,
                pid=task.pid,
                exit_status=task.exit_status,
                exited_at=exited_at,
            ),
        )
        return pb.DeleteResponse(pid=task.pid, exit_status=task.exit_status, exited_at=exited_at)

    # --- queries ---------------------------------------------------------------------

    async def state(self, req: pb.StateRequest) -> pb.StateResponse:
        if req.exec_id:
            return self._exec_state(*self._exec(req.id, req.exec_id))
        task = self._task(req.id, req.exec_id)
        return _state(task, task.id, task.bundle, "")

    async def pids(self, req: pb.PidsRequest) -> pb.PidsResponse:
        task = self._task(req.id)
        if task.status.finished:
            return pb.PidsResponse()
        if task.linux:
            assert self._runc is not None
            found = await self._runc.pids(task.id, task.bundle)
            pids = [task.pid] + [p for p in found if p != task.pid]
            return pb.PidsResponse(processes=[types.ProcessInfo(pid=p) for p in pids])
        running = [ex.pid for ex in task.execs.values() if ex.pid and ex.status is Status.RUNNING]
        return pb.PidsResponse(processes=[types.ProcessInfo(pid=p) for p in [task.pid, *running]])

    async def stats(self, req: pb.StatsRequest) -> pb.StatsResponse:
        task = self._task(req.id)
        if task.cgroup is None or task.status.finished:
            raise NotFound(f"container {req.id!r}: no cgroup statistics (not running in one)")
        return pb.StatsResponse(stats=stats.metrics(task.cgroup))

    async def connect(self, req: pb.ConnectRequest) -> pb.ConnectResponse:
        task = self._tasks.get(req.id)
        return pb.ConnectResponse(shim_pid=os.getpid(), task_pid=task.pid if task else 0)

    async def close_io(self, req: pb.CloseIORequest) -> empty_pb2.Empty:
        if req.exec_id:
            _, ex = self._exec(req.id, req.exec_id)
            if req.stdin:
                ex.io.close_stdin()
            return empty_pb2.Empty()
        task = self._task(req.id, req.exec_id)
        next_state(task.status, Op.CLOSE_IO, req.id)
        if req.stdin:
            task.io.close_stdin()
        return empty_pb2.Empty()

    async def pause(self, req: pb.PauseRequest) -> empty_pb2.Empty:
        task = self._task(req.id)
        after = next_state(task.status, Op.PAUSE, req.id)
        await self._freeze(task, True)
        task.status = after
        self._publish("/tasks/paused", ev.TaskPaused(container_id=task.id))
        return empty_pb2.Empty()

    async def resume(self, req: pb.ResumeRequest) -> empty_pb2.Empty:
        task = self._task(req.id)
        after = next_state(task.status, Op.RESUME, req.id)
        await self._freeze(task, False)
        task.status = after
        self._publish("/tasks/resumed", ev.TaskResumed(container_id=task.id))
        return empty_pb2.Empty()

    async def _freeze(self, task: Task, frozen: bool) -> None:
        if task.linux:
            assert self._runc is not None
            if frozen:
                await self._runc.pause(task.id, task.bundle)
            else:
                await self._runc.resume(task.id, task.bundle)
            return
        # The cgroup freezer when the container has one, else job control on the worker.
        try:
            if task.cgroup is not None and task.cgroup.freeze(frozen):
                return
        except OSError as exc:
            log.warning("%s: cgroup freezer failed (%s); stopping the process", task.id, exc)
        _kill_quietly(self._kill, task.pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    async def resize_pty(self, req: pb.ResizePtyRequest) -> empty_pb2.Empty:
        io = self._exec(req.id, req.exec_id)[1].io if req.exec_id else self._task(req.id).io
        if isinstance(io, TerminalIO):
            io.resize(req.width, req.height)
        return empty_pb2.Empty()

    async def shutdown(self, req: pb.ShutdownRequest) -> empty_pb2.Empty:
        if not self._tasks:
            self.shutdown_requested.set()
        return empty_pb2.Empty()

    async def update(self, req: pb.UpdateTaskRequest) -> empty_pb2.Empty:
        task = self._task(req.id)
        _check_live(task, "nothing to update")
        if task.linux:
            assert self._runc is not None
            await self._runc.update(task.id, task.bundle, bytes(req.resources.value))
            return empty_pb2.Empty()
        try:
            raw = json.loads(req.resources.value or b"{}")
        except ValueError as exc:
            raise InvalidArgument(f"Update {req.id!r}: resources are not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise InvalidArgument(f"Update {req.id!r}: resources must be a LinuxResources object")
        resources = parse_resources(raw)
        check_wasm_resources(resources)
        if task.cgroup is None or task.cgroup.shared:
            raise FailedPrecondition(
                f"container {req.id!r} has no cgroup of its own (no linux.cgroupsPath, or one "
                "shared with others): its resources cannot be changed while it runs"
            )
        try:
            task.cgroup.update(resources)
        except OSError as exc:
            # The limits parsed and passed the Wasm checks: the kernel's refusal is the host's.
            raise Internal(f"Update {req.id!r}: cgroup {task.cgroup.path} refused: {exc}") from exc
        assert task.plan is not None
        if resources.memory_limit and resources.memory_limit != task.plan.memory_limit:
            # The engine's own cap was fixed when the guest started; the cgroup's is live.
            log.info(
                "%s: memory limit now %d bytes in the cgroup (the engine keeps %s)",
                task.id,
                resources.memory_limit,
                task.plan.memory_limit,
            )
        return empty_pb2.Empty()

    # --- exec ------------------------------------------------------------------------

    async def exec(self, req: pb.ExecProcessRequest) -> empty_pb2.Empty:
        task = self._task(req.id)
        _check_exec_id(req.exec_id)
        if req.exec_id in task.execs:
            raise AlreadyExists(f"exec {req.exec_id!r} already exists in container {req.id!r}")
        _check_live(task, "cannot exec in it")
        try:
            process = parse_process(json.loads(req.spec.value or b"null"))
        except ValueError as exc:
            raise InvalidArgument(
                f"exec {req.exec_id!r}: the process spec is not JSON: {exc}"
            ) from None
        if task.linux:
            if req.terminal or process.terminal:
                raise InvalidArgument(
                    f"exec {req.exec_id!r}: a terminal (-t) in a Linux container of a pywasm "
                    "shim is not offered; drop -t"
                )
            ex = ExecProcess(
                req.exec_id,
                ProcessIO(req.stdin, req.stdout, req.stderr),
                _RuncInit(),
                runc_process=bytes(req.spec.value),
            )
        else:
            ex = await self._exec_wasm(task, req, process)
        task.execs[req.exec_id] = ex
        self._publish("/tasks/exec-added", ev.TaskExecAdded(container_id=task.id, exec_id=ex.id))
        return empty_pb2.Empty()

    async def _exec_wasm(
        self, task: Task, req: pb.ExecProcessRequest, process: Process
    ) -> ExecProcess:
        assert task.plan is not None
        module = locate_module(task.rootfs, process.args[0], process.cwd)
        cwd = posixpath.normpath(process.cwd or "/")
        # The container's grants, limits and engine; the exec's own argv, env, cwd and user;
        # the container's namespaces, joined.
        sandbox = (
            for_exec(task.plan.sandbox, task.pid, json.loads(req.spec.value))
            if task.plan.sandbox is not None
            else None
        )
        plan = dataclasses.replace(
            task.plan,
            module=module,
            argv=process.args,
            env=split_env(process.env),
            cwd=cwd,
            uid=process.user.uid,
            gid=process.user.gid,
            additional_gids=process.user.additional_gids,
            sandbox=sandbox,
        )
        _check_cwd(plan)
        io = _guest_io(req)
        try:
            worker = await self._ready_worker(io, plan)
        except BaseException:
            io.close()
            raise
        ex = ExecProcess(req.exec_id, io, worker)
        self._reaper.watch(worker.pid, lambda status: self._on_exec_exit(task, ex, status))
        log.info("exec %s in %s: wasm module %s, worker pid %d", ex.id, task.id, module, ex.pid)
        return ex

    async def _start_exec(self, task: Task, ex: ExecProcess) -> pb.StartResponse:
        _check_live(task)
        next_state(ex.status, Op.START, f"exec {ex.id!r}")
        if ex.runc_process is not None:
            assert self._runc is not None
            try:
                pid = await self._runc.exec(
                    task.id, task.bundle, ex.id, ex.runc_process, ex.io.open()
                )
            finally:
                ex.io.after_spawn()
            ex.worker = _RuncInit(pid)
            ex.status = next_state(ex.status, Op.START, f"exec {ex.id!r}")
            self._reaper.watch(pid, lambda status: self._on_exec_exit(task, ex, status))
        else:
            if task.cgroup is not None:
                with contextlib.suppress(OSError):
                    task.cgroup.add(ex.pid)
            ex.status = next_state(ex.status, Op.START, f"exec {ex.id!r}")
            try:
                await ex.worker.start()
            except OSError as exc:
                log.warning("exec %s: worker %d is gone: %s", ex.id, ex.pid, exc)
        self._publish(
            "/tasks/exec-started",
            ev.TaskExecStarted(container_id=task.id, exec_id=ex.id, pid=ex.pid),
        )
        return pb.StartResponse(pid=ex.pid)

    def _on_exec_exit(self, task: Task, ex: ExecProcess, status: int) -> None:
        ex.status = next_state(ex.status, Op.EXIT, f"exec {ex.id!r}")
        ex.exit_status = status
        ex.exited_at_ns = time.time_ns()
        ex.worker.close()
        ex.io.close()
        ex.exited.set()
        self._publish_exit(task.id, ex.id, ex.pid, status, ex.exited_at_ns)

    async def _delete_exec(
        self, task: Task, ex: ExecProcess, force: bool = False
    ) -> pb.DeleteResponse:
        if ex.status is Status.RUNNING and not force:
            raise FailedPrecondition(f"exec {ex.id!r} is running: kill it first")
        if not ex.status.finished and ex.pid:
            _kill_quietly(self._kill, ex.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ex.exited.wait(), _KILL_WAIT)
        ex.io.close()
        task.execs.pop(ex.id, None)
        exited_at = _timestamp(ex.exited_at_ns or time.time_ns())
        return pb.DeleteResponse(pid=ex.pid, exit_status=ex.exit_status, exited_at=exited_at)

    def _exec_state(self, task: Task, ex: ExecProcess) -> pb.StateResponse:
        return _state(ex, ex.id, task.bundle, ex.id)

    # --- not offered yet ---------------------------------------------------------------

    async def unimplemented(self, method: str) -> None:
        raise Unimplemented(f"{method} is not implemented by the pywasm shim yet")


def _guest_io(req: pb.CreateTaskRequest | pb.ExecProcessRequest) -> ProcessIO | TerminalIO:
    if req.terminal:
        return TerminalIO(req.stdin, req.stdout, req.stderr)
    return ProcessIO(req.stdin, req.stdout, req.stderr)


def _state(proc: Task | ExecProcess, id: str, bundle: str, exec_id: str) -> pb.StateResponse:
    resp = pb.StateResponse(
        id=id,
        bundle=bundle,
        pid=proc.pid,
        status=proc.status.wire,  # type: ignore[arg-type]
        stdin=proc.io.stdin,
        stdout=proc.io.stdout,
        stderr=proc.io.stderr,
        terminal=isinstance(proc.io, TerminalIO),
        exit_status=proc.exit_status,
        exec_id=exec_id,
    )
    if proc.exited_at_ns:
        resp.exited_at.CopyFrom(_timestamp(proc.exited_at_ns))
    return resp


def _signal(
    kill: Callable[[int, int], None], pid: int, sig: int, what: str, group: bool = False
) -> None:
    try:
        kill(-pid if group else pid, sig)
    except ProcessLookupError:
        raise NotFound(f"{what}: process already finished") from None
    except (ValueError, OSError) as exc:
        # EINVAL (and ValueError) is the request's signal number; anything else the host's.
        if isinstance(exc, ValueError) or exc.errno == errno.EINVAL:
            raise InvalidArgument(f"{what}: {sig} is not a signal number: {exc}") from exc
        raise Internal(f"{what}: cannot send signal {sig} to pid {pid}: {exc}") from exc


def _kill_quietly(kill: Callable[[int, int], None], pid: int, sig: int) -> None:
    try:
        kill(pid, sig)
    except OSError:
        pass


def _check_live(task: Task, why: str = "cannot start an exec in it") -> None:
    """Exec and Update need a container that is not finished (nor being deleted)."""
    if task.status is Status.DELETING:
        raise NotFound(f"container {task.id!r} is being deleted")
    if task.status.finished:
        raise FailedPrecondition(f"container {task.id!r} has stopped: {why}")


def _check_exec_id(exec_id: str) -> None:
    # The id names files in the bundle (runc's process spec): keep it a plain name.
    if (
        not exec_id
        or len(exec_id) > 128
        or exec_id.strip("._-") == ""
        or not all(c.isascii() and (c.isalnum() or c in "._-") for c in exec_id)
    ):
        raise InvalidArgument(f"exec id {exec_id!r} must be 1-128 letters, digits, '.', '_' or '-'")


def _check_cwd(plan: WasiPlan) -> None:
    if plan.sandbox is not None and plan.sandbox.has("mount"):
        return  # a path of the container's own mount namespace: the worker checks it there
    where = host_path(plan, plan.cwd)
    if where is None or not os.path.isdir(where):
        raise missing_cwd(plan.cwd)


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


__all__ = ["ShimError", "Task", "TaskService"]
