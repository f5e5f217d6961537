"""The Task API, written once and free of any transport.

Each RPC looks the container (or its exec) up, asks the state table
(:mod:`pywasmd.shim.state`) whether it may run, calls the container
(:mod:`pywasmd.shim.container`) and publishes the event.  Methods take and return
containerd's ``containerd.task.v2`` messages; the ttrpc binding only decodes, calls and
encodes.  Errors are raised as :mod:`pywasmd.errors` classes and turned into status codes at
the edge.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from google.protobuf import empty_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from pywasmd.api.containerd.events import task_pb2 as ev
from pywasmd.api.containerd.task.v2 import shim_pb2 as pb
from pywasmd.api.containerd.types import mount_pb2
from pywasmd.api.containerd.types.task import task_pb2 as types
from pywasmd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unimplemented,
)
from pywasmd.shim.container import Container, Containers, CreateRequest, ExitHandler, Mount
from pywasmd.shim.process import Process, Stdio
from pywasmd.shim.state import Op, Status, next_state

if TYPE_CHECKING:
    from pywasmd.shim.events import EventPublisher


def _timestamp(ns: int) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(ns)
    return ts


class TaskService:
    def __init__(self, containers: Containers, publisher: EventPublisher) -> None:
        self._containers = containers
        self._publish = publisher.publish
        self._tasks: dict[str, Container] = {}
        #: Ids of Creates and Execs under way, so that a second one with the same id waits
        #: for nothing and is refused at once.
        self._adding: set[tuple[str, str]] = set()
        self.shutdown_requested = asyncio.Event()

    @property
    def task_count(self) -> int:
        return len(self._tasks)

    def _task(self, id: str) -> Container:
        try:
            return self._tasks[id]
        except KeyError:
            raise NotFound(f"container {id!r} not found in this shim") from None

    def _process(self, id: str, exec_id: str = "") -> tuple[Container, Process]:
        container = self._task(id)
        if not exec_id:
            return container, container.init
        try:
            return container, container.execs[exec_id]
        except KeyError:
            raise NotFound(f"exec {exec_id!r} of container {id!r} not found") from None

    async def _settle(self, process: Process, what: str, work: Awaitable[None]) -> None:
        """Await ``work`` in the state already taken, then SETTLE, or ROLL_BACK if it fails."""
        try:
            await work
        except BaseException:
            process.status = next_state(process.status, Op.ROLL_BACK, what)
            raise
        process.status = next_state(process.status, Op.SETTLE, what)

    # --- lifecycle -------------------------------------------------------------------

    async def create(self, req: pb.CreateTaskRequest) -> pb.CreateTaskResponse:
        if req.id in self._tasks or (req.id, "") in self._adding:
            raise AlreadyExists(f"container {req.id!r} already exists")
        if req.checkpoint:
            raise Unimplemented("checkpoint/restore is not supported by pywasm")
        request = CreateRequest(
            req.id,
            req.bundle,
            tuple(Mount(m.type, m.source, tuple(m.options)) for m in req.rootfs),
            Stdio(req.stdin, req.stdout, req.stderr, req.terminal),
            req.options.type_url,
            bytes(req.options.value),
        )
        self._adding.add((req.id, ""))
        try:
            container = await self._containers.create(request, self._on_exit(req.id))
        finally:
            self._adding.discard((req.id, ""))
        self._tasks[req.id] = container
        pid = container.init.pid
        mounts = [
            mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=m.options)
            for m in req.rootfs
        ]
        io = ev.TaskIO(stdin=req.stdin, stdout=req.stdout, stderr=req.stderr, terminal=req.terminal)
        self._publish(
            "/tasks/create",
            ev.TaskCreate(container_id=req.id, bundle=req.bundle, rootfs=mounts, io=io, pid=pid),
        )
        return pb.CreateTaskResponse(pid=pid)

    def _on_exit(self, container_id: str) -> ExitHandler:
        def exited(process: Process, status: int, oom: bool) -> None:
            process.status = next_state(process.status, Op.EXIT, process.id)
            process.exit_status = status
            process.exited_at_ns = time.time_ns()
            process.exited.set()
            if oom:
                self._publish("/tasks/oom", ev.TaskOOM(container_id=container_id))
            exit_event = ev.TaskExit(
                container_id=container_id,
                id=process.id,
                pid=process.pid,
                exit_status=status,
                exited_at=_timestamp(process.exited_at_ns),
            )
            self._publish("/tasks/exit", exit_event)

        return exited

    async def start(self, req: pb.StartRequest) -> pb.StartResponse:
        container, process = self._process(req.id, req.exec_id)
        if req.exec_id:
            next_state(container.init.status, Op.EXEC, req.id)
            what = f"exec {req.exec_id!r}"
            process.status = next_state(process.status, Op.START, what)
            await self._settle(process, what, container.start_exec(process))
            started = ev.TaskExecStarted(container_id=req.id, exec_id=req.exec_id, pid=process.pid)
            self._publish("/tasks/exec-started", started)
        else:
            process.status = next_state(process.status, Op.START, req.id)
            # Published before the program can run, so its exit can never overtake it.
            self._publish("/tasks/start", ev.TaskStart(container_id=req.id, pid=process.pid))
            await self._settle(process, req.id, container.start())
        return pb.StartResponse(pid=process.pid)

    async def wait(self, req: pb.WaitRequest) -> pb.WaitResponse:
        _, process = self._process(req.id, req.exec_id)
        await process.exited.wait()
        exited_at = _timestamp(process.exited_at_ns)
        return pb.WaitResponse(exit_status=process.exit_status, exited_at=exited_at)

    async def kill(self, req: pb.KillRequest) -> empty_pb2.Empty:
        container, process = self._process(req.id, req.exec_id)
        what = f"exec {req.exec_id!r}" if req.exec_id else req.id
        next_state(process.status, Op.KILL, what)
        if not process.pid:
            raise FailedPrecondition(f"{what} has not started: nothing to kill")
        await container.kill(process, req.signal, req.all)
        return empty_pb2.Empty()

    async def delete(self, req: pb.DeleteRequest) -> pb.DeleteResponse:
        container, process = self._process(req.id, req.exec_id)
        if req.exec_id:
            what = f"exec {req.exec_id!r}"
            if process.status is Status.RUNNING:
                raise FailedPrecondition(f"{what} is running: kill it first")
            # Taken before the first await: an overlapping Delete gets NotFound.
            process.status = next_state(process.status, Op.DELETE, what)
            await container.delete_exec(process)
        else:
            process.status = next_state(process.status, Op.DELETE, req.id)
            await container.delete()
            del self._tasks[req.id]
        exited_at = _timestamp(process.exited_at_ns or time.time_ns())
        if not req.exec_id:
            deleted = ev.TaskDelete(
                container_id=req.id,
                pid=process.pid,
                exit_status=process.exit_status,
                exited_at=exited_at,
            )
            self._publish("/tasks/delete", deleted)
        return pb.DeleteResponse(
            pid=process.pid, exit_status=process.exit_status, exited_at=exited_at
        )

    # --- queries ---------------------------------------------------------------------

    async def state(self, req: pb.StateRequest) -> pb.StateResponse:
        container, process = self._process(req.id, req.exec_id)
        resp = pb.StateResponse(
            id=process.id,
            bundle=container.bundle,
            pid=process.pid,
            status=process.status.wire,  # type: ignore[arg-type]
            stdin=process.io.stdin,
            stdout=process.io.stdout,
            stderr=process.io.stderr,
            terminal=process.terminal,
            exit_status=process.exit_status,
            exec_id=req.exec_id,
        )
        if process.exited_at_ns:
            resp.exited_at.CopyFrom(_timestamp(process.exited_at_ns))
        return resp

    async def pids(self, req: pb.PidsRequest) -> pb.PidsResponse:
        container = self._task(req.id)
        if container.init.status.finished:
            return pb.PidsResponse()
        pids = await container.pids()
        return pb.PidsResponse(processes=[types.ProcessInfo(pid=p) for p in pids])

    async def stats(self, req: pb.StatsRequest) -> pb.StatsResponse:
        container = self._task(req.id)
        next_state(container.init.status, Op.STATS, req.id)
        return pb.StatsResponse(stats=container.stats())

    async def connect(self, req: pb.ConnectRequest) -> pb.ConnectResponse:
        container = self._tasks.get(req.id)
        pid = container.init.pid if container else 0
        return pb.ConnectResponse(shim_pid=os.getpid(), task_pid=pid)

    async def close_io(self, req: pb.CloseIORequest) -> empty_pb2.Empty:
        _, process = self._process(req.id, req.exec_id)
        if not req.exec_id:
            next_state(process.status, Op.CLOSE_IO, req.id)
        if req.stdin:
            process.io.close_stdin()
        return empty_pb2.Empty()

    async def pause(self, req: pb.PauseRequest) -> empty_pb2.Empty:
        container, process = self._process(req.id)
        process.status = next_state(process.status, Op.PAUSE, req.id)
        await self._settle(process, req.id, container.pause())
        # An exit while it froze leaves the container stopped: no paused event for it.
        if process.status is Status.PAUSED:
            self._publish("/tasks/paused", ev.TaskPaused(container_id=req.id))
        return empty_pb2.Empty()

    async def resume(self, req: pb.ResumeRequest) -> empty_pb2.Empty:
        container, process = self._process(req.id)
        process.status = next_state(process.status, Op.RESUME, req.id)
        await self._settle(process, req.id, container.resume())
        if process.status is Status.RUNNING:
            self._publish("/tasks/resumed", ev.TaskResumed(container_id=req.id))
        return empty_pb2.Empty()

    async def resize_pty(self, req: pb.ResizePtyRequest) -> empty_pb2.Empty:
        _, process = self._process(req.id, req.exec_id)
        process.resize(req.width, req.height)
        return empty_pb2.Empty()

    async def shutdown(self, req: pb.ShutdownRequest) -> empty_pb2.Empty:
        if not self._tasks:
            self.shutdown_requested.set()
        return empty_pb2.Empty()

    async def update(self, req: pb.UpdateTaskRequest) -> empty_pb2.Empty:
        container = self._task(req.id)
        next_state(container.init.status, Op.UPDATE, req.id)
        await container.update(bytes(req.resources.value))
        return empty_pb2.Empty()

    # --- exec ------------------------------------------------------------------------

    async def exec(self, req: pb.ExecProcessRequest) -> empty_pb2.Empty:
        container = self._task(req.id)
        _check_exec_id(req.exec_id)
        if req.exec_id in container.execs or (req.id, req.exec_id) in self._adding:
            raise AlreadyExists(f"exec {req.exec_id!r} already exists in container {req.id!r}")
        next_state(container.init.status, Op.EXEC, req.id)
        stdio = Stdio(req.stdin, req.stdout, req.stderr, req.terminal)
        self._adding.add((req.id, req.exec_id))
        try:
            process = await container.exec(req.exec_id, bytes(req.spec.value), stdio)
        finally:
            self._adding.discard((req.id, req.exec_id))
        if self._tasks.get(req.id) is not container or container.init.status is Status.DELETING:
            # Delete overtook it and will not see it: nothing else would ever end it.
            await container.delete_exec(process)
            raise NotFound(f"container {req.id!r} is being deleted")
        added = ev.TaskExecAdded(container_id=req.id, exec_id=req.exec_id)
        self._publish("/tasks/exec-added", added)
        return empty_pb2.Empty()

    # --- not offered yet ---------------------------------------------------------------

    async def unimplemented(self, method: str) -> None:
        raise Unimplemented(f"{method} is not implemented by the pywasm shim yet")


def _check_exec_id(exec_id: str) -> None:
    # The id names files in the bundle (runc's process spec): keep it a plain name.
    if (
        not exec_id
        or len(exec_id) > 128
        or exec_id.strip("._-") == ""
        or not all(c.isascii() and (c.isalnum() or c in "._-") for c in exec_id)
    ):
        raise InvalidArgument(f"exec id {exec_id!r} must be 1-128 letters, digits, '.', '_' or '-'")


__all__ = ["TaskService"]
