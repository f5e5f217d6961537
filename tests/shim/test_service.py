"""TaskService with real worker processes and real wasmtime, no transport."""

import asyncio
import json
import os
import signal

import pytest
import wasmtime

from pywasmd.api.containerd.task.v2 import shim_pb2 as pb
from pywasmd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from pywasmd.shim.factory import ContainerFactory
from pywasmd.shim.launcher import ProcessLauncher
from pywasmd.shim.reaper import Reaper
from pywasmd.shim.service import TaskService
from pywasmd.shim.state import Status

EXIT_WAT = """(module
 (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "proc_exit" (func $e (param i32)))
 (memory (export "memory") 1)
 (data (i32.const 8) "hi from wasm")
 (func (export "_start")
   (i32.store (i32.const 0) (i32.const 8)) (i32.store (i32.const 4) (i32.const 12))
   (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))
   (call $e (i32.const 7))))"""
LOOP_WAT = '(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))'


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def publish(self, topic: str, event: object) -> None:
        self.events.append((topic, event))


def make_bundle(tmp_path, wat: str | None, args=("/app.wasm",), raw: bytes | None = None):
    bundle = tmp_path / "bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    (rootfs / "app.wasm").write_bytes(raw if raw is not None else wasmtime.wat2wasm(wat))
    (bundle / "config.json").write_text(
        json.dumps(
            {
                "process": {"args": list(args), "env": ["A=1"], "cwd": "/"},
                "root": {"path": "rootfs"},
            }
        )
    )
    return bundle


def create_req(bundle, tmp_path, id="c1"):
    return pb.CreateTaskRequest(id=id, bundle=str(bundle), stdout=f"file://{tmp_path}/out.log")


def run(coro_fn):
    async def main():
        loop = asyncio.get_running_loop()
        reaper = Reaper()
        reaper.install(loop)
        rec = Recorder()
        try:
            await coro_fn(TaskService(ContainerFactory(ProcessLauncher(), reaper), rec), rec)
        finally:
            loop.remove_signal_handler(signal.SIGCHLD)

    asyncio.run(main())


def test_full_lifecycle_exit_code_output_and_event_order(tmp_path):
    bundle = make_bundle(tmp_path, EXIT_WAT)

    async def body(svc: TaskService, rec: Recorder):
        created = await svc.create(create_req(bundle, tmp_path))
        assert created.pid > 0
        assert os.path.exists(f"/proc/{created.pid}")
        state = await svc.state(pb.StateRequest(id="c1"))
        assert state.status == Status.CREATED
        assert (await svc.connect(pb.ConnectRequest(id="c1"))).task_pid == created.pid
        await svc.start(pb.StartRequest(id="c1"))
        waited = await asyncio.wait_for(svc.wait(pb.WaitRequest(id="c1")), 30)
        assert waited.exit_status == 7
        state = await svc.state(pb.StateRequest(id="c1"))
        assert (state.status, state.exit_status) == (Status.STOPPED, 7)
        with pytest.raises(NotFound, match="already finished"):
            await svc.kill(pb.KillRequest(id="c1", signal=9))
        deleted = await svc.delete(pb.DeleteRequest(id="c1"))
        assert (deleted.pid, deleted.exit_status) == (created.pid, 7)
        with pytest.raises(NotFound):
            await svc.state(pb.StateRequest(id="c1"))
        assert [t for t, _ in rec.events] == [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete",
        ]
        assert svc.task_count == 0

    run(body)
    assert (tmp_path / "out.log").read_bytes() == b"hi from wasm"


def test_kill_of_a_looping_guest_reports_128_plus_signal(tmp_path):
    bundle = make_bundle(tmp_path, LOOP_WAT)

    async def body(svc: TaskService, rec: Recorder):
        await svc.create(create_req(bundle, tmp_path))
        await svc.start(pb.StartRequest(id="c1"))
        with pytest.raises(FailedPrecondition):
            await svc.start(pb.StartRequest(id="c1"))
        with pytest.raises(FailedPrecondition):
            await svc.delete(pb.DeleteRequest(id="c1"))
        await asyncio.sleep(0.2)
        await svc.kill(pb.KillRequest(id="c1", signal=signal.SIGTERM))
        waited = await asyncio.wait_for(svc.wait(pb.WaitRequest(id="c1")), 30)
        assert waited.exit_status == 143
        await svc.delete(pb.DeleteRequest(id="c1"))

    run(body)


def test_bad_module_fails_create_and_leaves_no_process(tmp_path):
    bundle = make_bundle(tmp_path, None, raw=b"\0asm\x01\0\0\0\xff\xff")

    async def body(svc: TaskService, rec: Recorder):
        with pytest.raises(InvalidArgument, match="cannot be compiled"):
            await svc.create(create_req(bundle, tmp_path))
        assert svc.task_count == 0
        assert rec.events == []
        pid = int((bundle / "init.pid").read_text())
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}"):
                break
            await asyncio.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}")

    run(body)


def test_missing_module_and_duplicate_ids(tmp_path):
    bundle = make_bundle(tmp_path, LOOP_WAT, args=("/nope.wasm",))

    async def body(svc: TaskService, rec: Recorder):
        with pytest.raises(InvalidArgument, match="'/nope.wasm' not found"):
            await svc.create(create_req(bundle, tmp_path))
        good = make_bundle(tmp_path / "g", LOOP_WAT)
        await svc.create(create_req(good, tmp_path, id="c2"))
        with pytest.raises(AlreadyExists):
            await svc.create(create_req(good, tmp_path, id="c2"))
        deleted = await svc.delete(pb.DeleteRequest(id="c2"))  # never started: killed
        assert deleted.exit_status == 137

    run(body)


def _exec_req(tmp_path, exec_id, args, **kw):
    from google.protobuf import any_pb2

    spec = any_pb2.Any(
        type_url="types.containerd.io/opencontainers/runtime-spec/1/Process",
        value=json.dumps({"args": list(args), "env": ["B=2"], "cwd": "/"}).encode(),
    )
    return pb.ExecProcessRequest(
        id="c1", exec_id=exec_id, stdout=f"file://{tmp_path}/{exec_id}.log", spec=spec, **kw
    )


def test_exec_runs_another_guest_in_the_container(tmp_path):
    bundle = make_bundle(tmp_path, LOOP_WAT)
    (bundle / "rootfs" / "other.wasm").write_bytes(wasmtime.wat2wasm(EXIT_WAT))

    async def body(svc: TaskService, rec: Recorder):
        await svc.create(create_req(bundle, tmp_path))
        await svc.start(pb.StartRequest(id="c1"))
        await svc.exec(_exec_req(tmp_path, "e1", ["/other.wasm"]))
        with pytest.raises(AlreadyExists):
            await svc.exec(_exec_req(tmp_path, "e1", ["/other.wasm"]))
        state = await svc.state(pb.StateRequest(id="c1", exec_id="e1"))
        assert state.status == Status.CREATED
        started = await svc.start(pb.StartRequest(id="c1", exec_id="e1"))
        waited = await asyncio.wait_for(svc.wait(pb.WaitRequest(id="c1", exec_id="e1")), 30)
        assert waited.exit_status == 7
        deleted = await svc.delete(pb.DeleteRequest(id="c1", exec_id="e1"))
        assert (deleted.pid, deleted.exit_status) == (started.pid, 7)
        with pytest.raises(NotFound):
            await svc.state(pb.StateRequest(id="c1", exec_id="e1"))
        # The container itself is untouched.
        assert (await svc.state(pb.StateRequest(id="c1"))).status == Status.RUNNING
        await svc.kill(pb.KillRequest(id="c1", signal=9))
        await asyncio.wait_for(svc.wait(pb.WaitRequest(id="c1")), 30)
        await svc.delete(pb.DeleteRequest(id="c1"))
        topics = [t for t, _ in rec.events]
        assert topics == [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit",
            "/tasks/exit",
            "/tasks/delete",
        ]

    run(body)
    assert (tmp_path / "e1.log").read_bytes() == b"hi from wasm"


def test_exec_refusals_name_what_is_wrong(tmp_path):
    bundle = make_bundle(tmp_path, LOOP_WAT)

    async def body(svc: TaskService, rec: Recorder):
        await svc.create(create_req(bundle, tmp_path))
        await svc.start(pb.StartRequest(id="c1"))
        for bad in ("", "../x", "a/b", "x" * 200):
            with pytest.raises(InvalidArgument, match="exec id"):
                await svc.exec(_exec_req(tmp_path, bad, ["/app.wasm"]))
        with pytest.raises(InvalidArgument, match="not found"):
            await svc.exec(_exec_req(tmp_path, "e2", ["/missing.wasm"]))
        req = _exec_req(tmp_path, "e3", ["/app.wasm"])
        req.spec.value = b"{not json"
        with pytest.raises(InvalidArgument, match="not JSON"):
            await svc.exec(req)
        with pytest.raises(NotFound):
            await svc.start(pb.StartRequest(id="c1", exec_id="e2"))
        await svc.kill(pb.KillRequest(id="c1", signal=9))
        await asyncio.wait_for(svc.wait(pb.WaitRequest(id="c1")), 30)
        with pytest.raises(FailedPrecondition, match="stopped"):
            await svc.exec(_exec_req(tmp_path, "late", ["/app.wasm"]))
        await svc.delete(pb.DeleteRequest(id="c1"))

    run(body)


def test_update_without_a_cgroup_is_refused_clearly(tmp_path):
    from google.protobuf import any_pb2

    bundle = make_bundle(tmp_path, LOOP_WAT)

    async def body(svc: TaskService, rec: Recorder):
        await svc.create(create_req(bundle, tmp_path))
        res = any_pb2.Any(value=json.dumps({"memory": {"limit": 1 << 26}}).encode())
        with pytest.raises(FailedPrecondition, match="no cgroup of its own"):
            await svc.update(pb.UpdateTaskRequest(id="c1", resources=res))
        res.value = json.dumps({"pids": {"limit": 2}}).encode()
        with pytest.raises(InvalidArgument, match="too low"):
            await svc.update(pb.UpdateTaskRequest(id="c1", resources=res))
        await svc.delete(pb.DeleteRequest(id="c1"))

    run(body)


def test_overlapping_deletes_one_succeeds_the_other_is_not_found(tmp_path):
    bundle = make_bundle(tmp_path, LOOP_WAT)

    async def body(svc: TaskService, rec: Recorder):
        created = await svc.create(create_req(bundle, tmp_path))
        first, second = await asyncio.gather(
            svc.delete(pb.DeleteRequest(id="c1")),
            svc.delete(pb.DeleteRequest(id="c1")),
            return_exceptions=True,
        )
        assert isinstance(first, pb.DeleteResponse), first
        assert first.pid == created.pid
        assert isinstance(second, NotFound), second
        assert svc.task_count == 0
        assert [t for t, _ in rec.events].count("/tasks/delete") == 1
        with pytest.raises(NotFound):
            await svc.delete(pb.DeleteRequest(id="c1"))

    run(body)
