"""Error class -> status code: the table, and the codes containerd really receives."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import wasmtime

from pywasmd import errors
from pywasmd.api.containerd.task.v2 import shim_pb2 as pb
from pywasmd.errors import Code
from pywasmd.paths import RUNC_STATE_ROOT
from pywasmd.shim.factory import ContainerFactory
from pywasmd.shim.launcher import ProcessLauncher
from pywasmd.shim.linux import Runc
from pywasmd.shim.reaper import Reaper
from pywasmd.shim.server import task_services
from pywasmd.shim.service import TaskService
from pywasmd.testing import RecordingPublisher
from pywasmd.ttrpc import Client, RpcError, Server

TASK = "containerd.task.v2.Task"


def test_every_error_class_has_its_code() -> None:
    table = {
        cls.__name__: cls.code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.ShimError)
    }
    assert table == {
        "ShimError": Code.UNKNOWN,
        "InvalidArgument": Code.INVALID_ARGUMENT,
        "NotFound": Code.NOT_FOUND,
        "AlreadyExists": Code.ALREADY_EXISTS,
        "FailedPrecondition": Code.FAILED_PRECONDITION,
        "Unimplemented": Code.UNIMPLEMENTED,
        "Unavailable": Code.UNAVAILABLE,
        "Internal": Code.INTERNAL,
    }


def test_code_numbers_are_grpcs() -> None:
    # containerd's errdefs.FromGRPC reads these numbers; a renumbering would misreport errors.
    assert [(c.name, int(c)) for c in Code] == [
        ("OK", 0),
        ("CANCELLED", 1),
        ("UNKNOWN", 2),
        ("INVALID_ARGUMENT", 3),
        ("DEADLINE_EXCEEDED", 4),
        ("NOT_FOUND", 5),
        ("ALREADY_EXISTS", 6),
        ("PERMISSION_DENIED", 7),
        ("RESOURCE_EXHAUSTED", 8),
        ("FAILED_PRECONDITION", 9),
        ("ABORTED", 10),
        ("OUT_OF_RANGE", 11),
        ("UNIMPLEMENTED", 12),
        ("INTERNAL", 13),
        ("UNAVAILABLE", 14),
        ("DATA_LOSS", 15),
        ("UNAUTHENTICATED", 16),
    ]


def _bundle(root: Path, args: list[str], program: bytes) -> Path:
    bundle = root / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "rootfs" / "prog").write_bytes(program)
    (bundle / "rootfs" / "prog").chmod(0o755)
    config = {"process": {"args": args, "cwd": "/"}, "root": {"path": "rootfs"}}
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


Call = Callable[[str, bytes], Awaitable[bytes]]


def _over_the_wire(tmp_path: Path, body: Callable[[Call], Awaitable[None]]) -> None:
    """A real TaskService behind the real ttrpc server on a unix socket; ``body`` calls it."""
    namespace = f"pywasm-test-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        reaper = Reaper()
        reaper.install(loop)
        # A runc that is not there: Create of a Linux program fails on the host, not the input.
        runc = Runc(reaper, namespace, str(tmp_path / "no-such-runc"))
        containers = ContainerFactory(ProcessLauncher(), reaper, runc=runc)
        service = TaskService(containers, RecordingPublisher())
        server = Server(task_services(service))
        path = str(tmp_path / "shim.sock")

        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen()
        serving = asyncio.create_task(server.serve(listener))
        client = await Client.connect(path)
        try:

            async def call(method: str, payload: bytes) -> bytes:
                return await client.call(TASK, method, payload)

            await body(call)
        finally:
            await client.close()
            await server.close()
            await serving
            loop.remove_signal_handler(signal.SIGCHLD)

    try:
        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        shutil.rmtree(os.path.join(RUNC_STATE_ROOT, namespace), ignore_errors=True)


async def _code_of(call: Call, method: str, request: bytes) -> tuple[int, str]:
    with pytest.raises(RpcError) as err:
        await call(method, request)
    return err.value.code, err.value.message


def test_codes_on_the_wire(tmp_path: Path) -> None:
    wasm_bundle = _bundle(tmp_path / "w", ["/prog"], b"\0asm\x01\0\0\0")
    linux_bundle = _bundle(tmp_path / "l", ["/prog"], Path("/bin/true").read_bytes())
    no_args = _bundle(tmp_path / "n", [], b"")
    loop = wasmtime.wat2wasm(
        '(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))'
    )
    loop_bundle = _bundle(tmp_path / "g", ["/prog"], loop)

    async def body(call: Call) -> None:
        code, message = await _code_of(
            call, "Create", pb.CreateTaskRequest(id="c1", bundle=str(no_args)).SerializeToString()
        )
        assert code == Code.INVALID_ARGUMENT
        assert "process.args" in message

        code, message = await _code_of(
            call, "State", pb.StateRequest(id="nope").SerializeToString()
        )
        assert (code, message) == (Code.NOT_FOUND, "container 'nope' not found in this shim")

        code, message = await _code_of(
            call, "Delete", pb.DeleteRequest(id="nope").SerializeToString()
        )
        assert code == Code.NOT_FOUND

        code, message = await _code_of(call, "State", b"\xff\xff\xff")
        assert code == Code.INVALID_ARGUMENT
        assert "cannot decode StateRequest" in message

        code, message = await _code_of(call, "Checkpoint", b"")
        assert code == Code.UNIMPLEMENTED

        # The host failed (no runc binary where the node config says): not the user's input.
        code, message = await _code_of(
            call,
            "Create",
            pb.CreateTaskRequest(id="c2", bundle=str(linux_bundle)).SerializeToString(),
        )
        assert code == Code.INTERNAL, message
        assert "no-such-runc" in message

        # A signal number that is none: the request's fault, on a live container.
        good = pb.CreateTaskRequest(id="c4", bundle=str(loop_bundle)).SerializeToString()
        await call("Create", good)
        try:
            code, message = await _code_of(
                call, "Kill", pb.KillRequest(id="c4", signal=999).SerializeToString()
            )
            assert (code, "999 is not a signal number" in message) == (Code.INVALID_ARGUMENT, True)
        finally:
            await call("Kill", pb.KillRequest(id="c4", signal=9).SerializeToString())
            await call("Delete", pb.DeleteRequest(id="c4").SerializeToString())

        # A Wasm module the engine refuses (no _start): the input again.
        code, message = await _code_of(
            call,
            "Create",
            pb.CreateTaskRequest(id="c3", bundle=str(wasm_bundle)).SerializeToString(),
        )
        assert code == Code.INVALID_ARGUMENT, message

    _over_the_wire(tmp_path, body)
