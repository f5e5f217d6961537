"""The ttrpc binding of TaskService: decode, call, encode; nothing else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from google.protobuf.message import DecodeError, Message

from pywasmd.api.containerd.task.v2 import shim_pb2 as pb
from pywasmd.errors import Code, ShimError
from pywasmd.shim.service import TaskService
from pywasmd.ttrpc.server import Handler, Metadata
from pywasmd.ttrpc.status import RpcError

# containerd 1.6 and 1.7 speak v2; 2.x speaks v3.  The messages are byte-identical,
# so both names share one table of v2 message classes.
TASK_SERVICES = ("containerd.task.v2.Task", "containerd.task.v3.Task")

_REQUESTS: dict[str, type[Message]] = {
    "State": pb.StateRequest,
    "Create": pb.CreateTaskRequest,
    "Start": pb.StartRequest,
    "Delete": pb.DeleteRequest,
    "Pids": pb.PidsRequest,
    "Pause": pb.PauseRequest,
    "Resume": pb.ResumeRequest,
    "Checkpoint": pb.CheckpointTaskRequest,
    "Kill": pb.KillRequest,
    "Exec": pb.ExecProcessRequest,
    "ResizePty": pb.ResizePtyRequest,
    "CloseIO": pb.CloseIORequest,
    "Update": pb.UpdateTaskRequest,
    "Wait": pb.WaitRequest,
    "Stats": pb.StatsRequest,
    "Connect": pb.ConnectRequest,
    "Shutdown": pb.ShutdownRequest,
}

_IMPLEMENTED = {
    "State": "state",
    "Create": "create",
    "Start": "start",
    "Delete": "delete",
    "Pids": "pids",
    "Kill": "kill",
    "Exec": "exec",
    "Update": "update",
    "CloseIO": "close_io",
    "ResizePty": "resize_pty",
    "Pause": "pause",
    "Resume": "resume",
    "Wait": "wait",
    "Stats": "stats",
    "Connect": "connect",
    "Shutdown": "shutdown",
}


def _handler(service: TaskService, method: str) -> Handler:
    request_type = _REQUESTS[method]
    attr = _IMPLEMENTED.get(method)
    call: Callable[[Any], Awaitable[Message | None]] = (
        getattr(service, attr) if attr else (lambda _req: service.unimplemented(method))
    )

    async def handle(payload: bytes, metadata: Metadata) -> bytes:
        try:
            request = request_type.FromString(payload)
        except DecodeError as exc:
            what = f"{method}: cannot decode {request_type.__name__}: {exc}"
            raise RpcError(Code.INVALID_ARGUMENT, what) from exc
        try:
            response = await call(request)
        except ShimError as exc:
            raise RpcError(exc.code, exc.message) from exc
        return response.SerializeToString() if response is not None else b""

    return handle


def task_services(service: TaskService) -> Mapping[str, Mapping[str, Handler]]:
    methods = {name: _handler(service, name) for name in _REQUESTS}
    return {name: methods for name in TASK_SERVICES}
