"""Every Task RPC in every state, against TaskService with the shipped fakes (no processes).

The expected outcome of each (RPC, state) is written out below as a table, independently of
``pywasmd.shim.state.TRANSITIONS``: a change to the table or to the service that moves any
cell fails here.  The cgroup is a fake cgroup v2 tree under tmp_path, so Stats, Update and
the freezer have something to work on.
"""

from __future__ import annotations

import asyncio
import functools
import json
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from google.protobuf import any_pb2
from google.protobuf.message import Message

from pywasmd.api.containerd.task.v2 import shim_pb2 as pb
from pywasmd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ShimError,
)
from pywasmd.shim import wasm_container
from pywasmd.shim.cgroups import Cgroup
from pywasmd.shim.factory import ContainerFactory
from pywasmd.shim.service import TaskService
from pywasmd.shim.state import Status
from pywasmd.shim.stats import V2_TYPE_URL
from pywasmd.testing import (
    FAKE_PID_BASE,
    FakeLauncher,
    FakeReaper,
    RecordingPublisher,
)

#: The fake worker never runs it, but Create looks the module up in the rootfs.
MODULE = wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "_start")))')
CGROUP = "/pywasm-test/c1"
EXIT_STATUS = 3


def write_bundle(tmp_path: Path, cgroup: bool = True) -> Path:
    bundle = tmp_path / "bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    (rootfs / "app.wasm").write_bytes(MODULE)
    config: dict[str, Any] = {
        "process": {"args": ["/app.wasm"], "env": ["A=1"], "cwd": "/"},
        "root": {"path": "rootfs"},
    }
    if cgroup:
        config["linux"] = {"cgroupsPath": CGROUP}
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


@dataclass
class Env:
    svc: TaskService
    launcher: FakeLauncher
    publisher: RecordingPublisher
    bundle: Path
    cgroup_dir: Path
    pid: int = 0
    exec_pid: int = 0
    #: A Delete held in DELETING (its worker ignores SIGKILL until the test ends it).
    deleting: asyncio.Task[pb.DeleteResponse] | None = None
    seen: int = 0

    async def create(self) -> None:
        created = await self.svc.create(pb.CreateTaskRequest(id="c1", bundle=str(self.bundle)))
        self.pid = created.pid
        if self.cgroup_dir.is_dir():
            # What the kernel offers in a cgroup v2 directory: the freezer.
            (self.cgroup_dir / "cgroup.freeze").write_text("0")

    async def bring(self, state: str) -> None:
        """Create c1 and move it to ``state`` through the API (and the fakes for exits)."""
        await self.create()
        if state in ("running", "paused", "stopped"):
            await self.svc.start(pb.StartRequest(id="c1"))
        if state == "paused":
            await self.svc.pause(pb.PauseRequest(id="c1"))
        if state == "stopped":
            self.launcher.exit(self.pid, EXIT_STATUS)
        if state == "deleting":
            self.launcher.worker(self.pid).exits_on_signal = False
            self.deleting = asyncio.create_task(self.svc.delete(pb.DeleteRequest(id="c1")))
            await settle()
            assert (self.pid, signal.SIGKILL) in self.launcher.signals
            assert not self.deleting.done()
        self.seen = len(self.publisher.events)

    async def finish(self) -> None:
        """Let a held Delete end: its worker dies as SIGKILL would have killed it."""
        if self.deleting is not None:
            self.launcher.exit(self.pid, 128 + signal.SIGKILL)
            deleted = await asyncio.wait_for(self.deleting, 5)
            assert deleted.exit_status == 137

    def new_topics(self) -> list[str]:
        return [topic for topic, _ in self.publisher.events[self.seen :]]

    async def status(self, exec_id: str = "") -> Status | None:
        """The wire status of c1 (or of its exec), None when it is gone."""
        try:
            state = await self.svc.state(pb.StateRequest(id="c1", exec_id=exec_id))
        except NotFound:
            return None
        return Status(state.status)


async def settle() -> None:
    """Let every task that can run do so (a held Delete reaches its wait for the exit)."""
    for _ in range(10):
        await asyncio.sleep(0)


def run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    body: Callable[[Env], Coroutine[Any, Any, None]],
    cgroup: bool = True,
) -> Env:
    monkeypatch.setenv("PYWASM_CONFIG", str(tmp_path / "no-node-config.yaml"))
    root = tmp_path / "cgroupfs"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    monkeypatch.setattr(wasm_container, "Cgroup", functools.partial(Cgroup, root=str(root)))
    bundle = write_bundle(tmp_path, cgroup)

    async def main() -> Env:
        reaper = FakeReaper()
        launcher = FakeLauncher(reaper)
        publisher = RecordingPublisher()
        svc = TaskService(ContainerFactory(launcher, reaper, kill=launcher.kill), publisher)
        env = Env(svc, launcher, publisher, bundle, root / CGROUP.lstrip("/"))
        try:
            await body(env)
        finally:
            await env.finish()
        return env

    return asyncio.run(main())


# --- the table ------------------------------------------------------------------------------

STATES = ("created", "running", "paused", "stopped", "deleting")
GONE = "gone"
WIRE = {
    "created": Status.CREATED,
    "running": Status.RUNNING,
    "paused": Status.PAUSED,
    "stopped": Status.STOPPED,
    "deleting": Status.STOPPED,
}


@dataclass(frozen=True)
class Ok:
    """Success: these events, then this status (GONE: deleted; None: unchanged)."""

    topics: tuple[str, ...] = ()
    after: Status | str | None = None
    check: Callable[[Env, Any], None] | None = None


#: Wait does not return until the process exits.
PENDING = "pending"

Outcome = type[ShimError] | Ok | str


def _resources(memory: int) -> any_pb2.Any:
    return any_pb2.Any(value=json.dumps({"memory": {"limit": memory}}).encode())


def _exec_request(exec_id: str = "e1") -> pb.ExecProcessRequest:
    spec = {"args": ["/app.wasm"], "env": ["B=2"], "cwd": "/"}
    return pb.ExecProcessRequest(
        id="c1",
        exec_id=exec_id,
        spec=any_pb2.Any(
            type_url="types.containerd.io/opencontainers/runtime-spec/1/Process",
            value=json.dumps(spec).encode(),
        ),
    )


RPC = Callable[[Env], Awaitable[Message]]

TASK_RPCS: dict[str, RPC] = {
    "create": lambda e: e.svc.create(pb.CreateTaskRequest(id="c1", bundle=str(e.bundle))),
    "start": lambda e: e.svc.start(pb.StartRequest(id="c1")),
    "wait": lambda e: e.svc.wait(pb.WaitRequest(id="c1")),
    "kill": lambda e: e.svc.kill(pb.KillRequest(id="c1", signal=signal.SIGKILL)),
    "kill-all": lambda e: e.svc.kill(pb.KillRequest(id="c1", signal=signal.SIGKILL, all=True)),
    "delete": lambda e: e.svc.delete(pb.DeleteRequest(id="c1")),
    "state": lambda e: e.svc.state(pb.StateRequest(id="c1")),
    "pids": lambda e: e.svc.pids(pb.PidsRequest(id="c1")),
    "stats": lambda e: e.svc.stats(pb.StatsRequest(id="c1")),
    "connect": lambda e: e.svc.connect(pb.ConnectRequest(id="c1")),
    "close-io": lambda e: e.svc.close_io(pb.CloseIORequest(id="c1", stdin=True)),
    "pause": lambda e: e.svc.pause(pb.PauseRequest(id="c1")),
    "resume": lambda e: e.svc.resume(pb.ResumeRequest(id="c1")),
    "resize-pty": lambda e: e.svc.resize_pty(pb.ResizePtyRequest(id="c1", width=80, height=24)),
    "update": lambda e: e.svc.update(pb.UpdateTaskRequest(id="c1", resources=_resources(64 << 20))),
    "exec": lambda e: e.svc.exec(_exec_request()),
    "shutdown": lambda e: e.svc.shutdown(pb.ShutdownRequest(id="c1")),
}


def _pids_are(alive: bool) -> Callable[[Env, Any], None]:
    def check(env: Env, resp: pb.PidsResponse) -> None:
        assert [p.pid for p in resp.processes] == ([env.pid] if alive else [])

    return check


def _state_is(state: str) -> Callable[[Env, Any], None]:
    def check(env: Env, resp: pb.StateResponse) -> None:
        assert (resp.id, resp.pid, resp.status) == ("c1", env.pid, WIRE[state])
        assert resp.exit_status == (EXIT_STATUS if state == "stopped" else 0)

    return check


def _signalled(group: bool) -> Callable[[Env, Any], None]:
    def check(env: Env, _resp: object) -> None:
        assert env.launcher.signals[-1] == (-env.pid if group else env.pid, signal.SIGKILL)

    return check


def _frozen(value: str) -> Callable[[Env, Any], None]:
    def check(env: Env, _resp: object) -> None:
        assert (env.cgroup_dir / "cgroup.freeze").read_text() == value
        # The freezer did it: no SIGSTOP/SIGCONT to the worker.
        assert all(sig not in (signal.SIGSTOP, signal.SIGCONT) for _, sig in env.launcher.signals)

    return check


def _started(env: Env, resp: pb.StartResponse) -> None:
    assert resp.pid == env.pid
    assert env.launcher.worker(env.pid).started
    assert (env.cgroup_dir / "cgroup.procs").read_text() == str(env.pid)


def _stats(env: Env, resp: pb.StatsResponse) -> None:
    assert resp.stats.type_url == V2_TYPE_URL


def _connected(env: Env, resp: pb.ConnectResponse) -> None:
    assert resp.task_pid == env.pid


def _memory_limit(env: Env, _resp: object) -> None:
    assert (env.cgroup_dir / "memory.max").read_text() == str(64 << 20)


def _deleted(exit_status: int) -> Callable[[Env, Any], None]:
    def check(env: Env, resp: pb.DeleteResponse) -> None:
        assert (resp.pid, resp.exit_status) == (env.pid, exit_status)
        assert env.svc.task_count == 0

    return check


def _waited(exit_status: int) -> Callable[[Env, Any], None]:
    def check(env: Env, resp: pb.WaitResponse) -> None:
        assert resp.exit_status == exit_status
        assert resp.exited_at.seconds > 0

    return check


def _shutdown_waits(env: Env, _resp: object) -> None:
    assert not env.svc.shutdown_requested.is_set()


FP, NF = FailedPrecondition, NotFound
KILLED = Ok(("/tasks/exit",), Status.STOPPED)

TASK_TABLE: dict[str, dict[str, Outcome]] = {
    "create": {s: AlreadyExists for s in STATES},
    "start": {
        "created": Ok(("/tasks/start",), Status.RUNNING, _started),
        "running": FP,
        "paused": FP,
        "stopped": FP,
        "deleting": NF,
    },
    "wait": {
        "created": PENDING,
        "running": PENDING,
        "paused": PENDING,
        "stopped": Ok(check=_waited(EXIT_STATUS)),
        "deleting": PENDING,
    },
    "kill": {
        "created": Ok(("/tasks/exit",), Status.STOPPED, _signalled(group=False)),
        "running": Ok(("/tasks/exit",), Status.STOPPED, _signalled(group=False)),
        "paused": Ok(("/tasks/exit",), Status.STOPPED, _signalled(group=False)),
        "stopped": NF,
        "deleting": NF,
    },
    "kill-all": {
        "created": Ok(("/tasks/exit",), Status.STOPPED, _signalled(group=True)),
        "running": Ok(("/tasks/exit",), Status.STOPPED, _signalled(group=True)),
        "paused": Ok(("/tasks/exit",), Status.STOPPED, _signalled(group=True)),
        "stopped": NF,
        "deleting": NF,
    },
    "delete": {
        "created": Ok(("/tasks/exit", "/tasks/delete"), GONE, _deleted(137)),
        "running": FP,
        "paused": FP,
        "stopped": Ok(("/tasks/delete",), GONE, _deleted(EXIT_STATUS)),
        "deleting": NF,
    },
    "state": {s: Ok(check=_state_is(s)) for s in STATES},
    "pids": {s: Ok(check=_pids_are(s in ("created", "running", "paused"))) for s in STATES},
    "stats": {
        "created": Ok(check=_stats),
        "running": Ok(check=_stats),
        "paused": Ok(check=_stats),
        "stopped": NF,
        "deleting": NF,
    },
    "connect": {s: Ok(check=_connected) for s in STATES},
    "close-io": {
        "created": Ok(),
        "running": Ok(),
        "paused": Ok(),
        "stopped": Ok(),
        "deleting": NF,
    },
    "pause": {
        "created": FP,
        "running": Ok(("/tasks/paused",), Status.PAUSED, _frozen("1")),
        "paused": FP,
        "stopped": FP,
        "deleting": NF,
    },
    "resume": {
        "created": FP,
        "running": FP,
        "paused": Ok(("/tasks/resumed",), Status.RUNNING, _frozen("0")),
        "stopped": FP,
        "deleting": NF,
    },
    "resize-pty": {s: Ok() for s in STATES},
    "update": {
        "created": Ok(check=_memory_limit),
        "running": Ok(check=_memory_limit),
        "paused": Ok(check=_memory_limit),
        "stopped": FP,
        "deleting": NF,
    },
    "exec": {
        "created": Ok(("/tasks/exec-added",)),
        "running": Ok(("/tasks/exec-added",)),
        "paused": Ok(("/tasks/exec-added",)),
        "stopped": FP,
        "deleting": NF,
    },
    "shutdown": {s: Ok(check=_shutdown_waits) for s in STATES},
}


async def _expect(env: Env, call: Awaitable[Message], outcome: Outcome, exec_id: str = "") -> None:
    before = await env.status(exec_id)
    if isinstance(outcome, type):
        with pytest.raises(ShimError) as raised:
            await call
        # The exact class: a subclass or a sibling (Unknown on the wire) is a failure.
        assert type(raised.value) is outcome, raised.value
        assert env.new_topics() == []
        assert await env.status(exec_id) == before
        return
    if outcome == PENDING:
        waiting = asyncio.ensure_future(call)
        await settle()
        assert not waiting.done()
        assert env.new_topics() == []
        if env.deleting is None:
            pid = env.exec_pid if exec_id else env.pid
            env.launcher.exit(pid, 9)
            waited = await asyncio.wait_for(waiting, 5)
            assert waited.exit_status == 9
        else:
            await env.finish()
            env.deleting = None
            waited = await asyncio.wait_for(waiting, 5)
            assert waited.exit_status == 137
        return
    assert isinstance(outcome, Ok)
    resp = await call
    assert env.new_topics() == list(outcome.topics)
    after = await env.status(exec_id)
    if outcome.after is GONE:
        assert after is None
    else:
        assert after == (before if outcome.after is None else outcome.after)
    if outcome.check is not None:
        outcome.check(env, resp)


def test_the_table_covers_every_rpc_in_every_state() -> None:
    assert set(TASK_TABLE) == set(TASK_RPCS)
    assert all(set(row) == set(STATES) for row in TASK_TABLE.values())


@pytest.mark.parametrize(("rpc", "state"), [(rpc, state) for rpc in TASK_TABLE for state in STATES])
def test_task_rpc_in_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rpc: str, state: str
) -> None:
    async def body(env: Env) -> None:
        await env.bring(state)
        await _expect(env, TASK_RPCS[rpc](env), TASK_TABLE[rpc][state])

    run(tmp_path, monkeypatch, body)


# --- exec processes -------------------------------------------------------------------------

EXEC_STATES = ("created", "running", "stopped")
EXEC_EXIT_STATUS = 4

EXEC_RPCS: dict[str, RPC] = {
    "start": lambda e: e.svc.start(pb.StartRequest(id="c1", exec_id="e1")),
    "wait": lambda e: e.svc.wait(pb.WaitRequest(id="c1", exec_id="e1")),
    "kill": lambda e: e.svc.kill(pb.KillRequest(id="c1", exec_id="e1", signal=signal.SIGKILL)),
    "delete": lambda e: e.svc.delete(pb.DeleteRequest(id="c1", exec_id="e1")),
    "state": lambda e: e.svc.state(pb.StateRequest(id="c1", exec_id="e1")),
    "close-io": lambda e: e.svc.close_io(pb.CloseIORequest(id="c1", exec_id="e1", stdin=True)),
    "resize-pty": lambda e: e.svc.resize_pty(
        pb.ResizePtyRequest(id="c1", exec_id="e1", width=80, height=24)
    ),
}


def _exec_started(env: Env, resp: pb.StartResponse) -> None:
    assert resp.pid == env.exec_pid
    assert env.launcher.worker(env.exec_pid).started
    topic, event = env.publisher.events[-1]
    assert (topic, event.exec_id, event.pid) == ("/tasks/exec-started", "e1", env.exec_pid)


def _exec_state_is(state: str) -> Callable[[Env, Any], None]:
    wire = {"created": Status.CREATED, "running": Status.RUNNING, "stopped": Status.STOPPED}

    def check(env: Env, resp: pb.StateResponse) -> None:
        assert (resp.id, resp.exec_id, resp.pid, resp.status) == (
            "e1",
            "e1",
            env.exec_pid,
            wire[state],
        )
        assert resp.exit_status == (EXEC_EXIT_STATUS if state == "stopped" else 0)

    return check


def _exec_deleted(exit_status: int) -> Callable[[Env, Any], None]:
    def check(env: Env, resp: pb.DeleteResponse) -> None:
        assert (resp.pid, resp.exit_status) == (env.exec_pid, exit_status)

    return check


def _exec_killed(env: Env, _resp: object) -> None:
    assert env.launcher.signals[-1] == (env.exec_pid, signal.SIGKILL)
    topic, event = env.publisher.events[-1]
    assert (topic, event.id, event.exit_status) == ("/tasks/exit", "e1", 137)


EXEC_TABLE: dict[str, dict[str, Outcome]] = {
    "start": {
        "created": Ok(("/tasks/exec-started",), Status.RUNNING, _exec_started),
        "running": FP,
        "stopped": FP,
    },
    "wait": {
        "created": PENDING,
        "running": PENDING,
        "stopped": Ok(check=_waited(EXEC_EXIT_STATUS)),
    },
    "kill": {
        "created": Ok(("/tasks/exit",), Status.STOPPED, _exec_killed),
        "running": Ok(("/tasks/exit",), Status.STOPPED, _exec_killed),
        "stopped": NF,
    },
    "delete": {
        "created": Ok(("/tasks/exit",), GONE, _exec_deleted(137)),
        "running": FP,
        "stopped": Ok((), GONE, _exec_deleted(EXEC_EXIT_STATUS)),
    },
    "state": {s: Ok(check=_exec_state_is(s)) for s in EXEC_STATES},
    "close-io": {s: Ok() for s in EXEC_STATES},
    "resize-pty": {s: Ok() for s in EXEC_STATES},
}


def test_the_exec_table_covers_every_exec_rpc_in_every_state() -> None:
    assert set(EXEC_TABLE) == set(EXEC_RPCS)
    assert all(set(row) == set(EXEC_STATES) for row in EXEC_TABLE.values())


@pytest.mark.parametrize(
    ("rpc", "state"), [(rpc, state) for rpc in EXEC_TABLE for state in EXEC_STATES]
)
def test_exec_rpc_in_exec_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rpc: str, state: str
) -> None:
    async def body(env: Env) -> None:
        await env.bring("running")
        await env.svc.exec(_exec_request())
        env.exec_pid = env.launcher.workers[-1].pid
        if state in ("running", "stopped"):
            await env.svc.start(pb.StartRequest(id="c1", exec_id="e1"))
        if state == "stopped":
            env.launcher.exit(env.exec_pid, EXEC_EXIT_STATUS)
        env.seen = len(env.publisher.events)
        await _expect(env, EXEC_RPCS[rpc](env), EXEC_TABLE[rpc][state], exec_id="e1")
        # The container itself is untouched by anything done to its exec.
        assert await env.status() == Status.RUNNING

    run(tmp_path, monkeypatch, body)


# --- what is not found ----------------------------------------------------------------------

NO_SUCH_TASK = [rpc for rpc in TASK_RPCS if rpc not in ("create", "connect", "shutdown")]


@pytest.mark.parametrize("rpc", NO_SUCH_TASK)
def test_every_rpc_on_a_missing_container_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rpc: str
) -> None:
    async def body(env: Env) -> None:
        with pytest.raises(ShimError) as raised:
            await TASK_RPCS[rpc](env)
        assert type(raised.value) is NotFound
        assert "'c1'" in raised.value.message
        assert env.publisher.events == []

    run(tmp_path, monkeypatch, body)


@pytest.mark.parametrize("rpc", list(EXEC_RPCS))
def test_every_exec_rpc_on_a_missing_exec_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rpc: str
) -> None:
    async def body(env: Env) -> None:
        await env.bring("running")
        with pytest.raises(ShimError) as raised:
            await EXEC_RPCS[rpc](env)
        assert type(raised.value) is NotFound
        assert "exec 'e1'" in raised.value.message
        assert env.new_topics() == []

    run(tmp_path, monkeypatch, body)


def test_connect_and_shutdown_without_a_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(env: Env) -> None:
        assert (await env.svc.connect(pb.ConnectRequest(id="c1"))).task_pid == 0
        await env.svc.shutdown(pb.ShutdownRequest())
        assert env.svc.shutdown_requested.is_set()

    run(tmp_path, monkeypatch, body)


def test_shutdown_is_honoured_once_the_last_container_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(env: Env) -> None:
        await env.bring("stopped")
        await env.svc.shutdown(pb.ShutdownRequest())
        assert not env.svc.shutdown_requested.is_set()
        await env.svc.delete(pb.DeleteRequest(id="c1"))
        await env.svc.shutdown(pb.ShutdownRequest())
        assert env.svc.shutdown_requested.is_set()

    run(tmp_path, monkeypatch, body)


# --- overlapping Deletes --------------------------------------------------------------------


@pytest.mark.parametrize("state", ["created", "created-slow", "stopped"])
def test_overlapping_deletes_one_succeeds_the_other_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: str
) -> None:
    async def body(env: Env) -> None:
        await env.bring("created" if state == "created-slow" else state)
        if state == "created-slow":
            # The first Delete waits for the killed worker; the second comes in meanwhile.
            env.launcher.worker(env.pid).exits_on_signal = False
        both = asyncio.gather(
            env.svc.delete(pb.DeleteRequest(id="c1")),
            env.svc.delete(pb.DeleteRequest(id="c1")),
            return_exceptions=True,
        )
        if state == "created-slow":
            await settle()
            assert not both.done()
            env.launcher.exit(env.pid, 137)
        first, second = await asyncio.wait_for(both, 5)
        assert isinstance(first, pb.DeleteResponse), first
        assert first.pid == env.pid
        assert type(second) is NotFound, second
        assert env.svc.task_count == 0
        assert env.publisher.topics.count("/tasks/delete") == 1
        assert env.launcher.signals.count((env.pid, signal.SIGKILL)) == (state != "stopped")

    run(tmp_path, monkeypatch, body)


# --- what only the fakes can show -----------------------------------------------------------


def test_a_worker_that_cannot_load_fails_create_and_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(env: Env) -> None:
        env.launcher.prepare_error = InvalidArgument("the module cannot be compiled: bad")
        with pytest.raises(InvalidArgument, match="cannot be compiled"):
            await env.create()
        [worker] = env.launcher.workers
        assert worker.closed
        assert env.launcher.signals == [(worker.pid, signal.SIGKILL)]
        assert env.svc.task_count == 0
        assert env.publisher.events == []
        # No cgroup is left behind for a container that does not exist.
        assert not env.cgroup_dir.exists()

    run(tmp_path, monkeypatch, body)


def test_the_plan_reaches_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(env: Env) -> None:
        await env.create()
        worker = env.launcher.worker(env.pid)
        assert worker.plan is not None
        assert worker.plan.argv == ("/app.wasm",)
        assert worker.plan.module == str(env.bundle / "rootfs" / "app.wasm")
        assert worker.engine == worker.plan.engine
        assert (env.bundle / "init.pid").read_text().strip() == str(env.pid)
        assert env.pid >= FAKE_PID_BASE
        [(topic, event)] = env.publisher.events
        assert (topic, event.pid) == ("/tasks/create", env.pid)

    run(tmp_path, monkeypatch, body)


def test_a_pid_1_that_takes_over_is_the_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(env: Env) -> None:
        env.launcher.takeover = True
        await env.create()
        worker = env.launcher.worker(env.pid)
        assert env.pid != worker.spawned_pid
        assert (env.bundle / "init.pid").read_text().strip() == str(env.pid)
        # The loader's exit is claimed and ignored; the container's pid 1 ends it.
        env.launcher.reaper.exit(worker.spawned_pid, 0)
        assert await env.status() == Status.CREATED
        env.launcher.exit(env.pid, 5)
        assert await env.status() == Status.STOPPED
        assert env.publisher.topics == ["/tasks/create", "/tasks/exit"]

    run(tmp_path, monkeypatch, body)


def test_an_oom_report_publishes_the_oom_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(env: Env) -> None:
        await env.bring("running")
        env.launcher.worker(env.pid).said = "oom\n"
        env.launcher.exit(env.pid, 137)
        assert env.new_topics() == ["/tasks/oom", "/tasks/exit"]

    run(tmp_path, monkeypatch, body)


def test_the_container_ends_with_its_init_and_takes_its_execs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(env: Env) -> None:
        await env.bring("running")
        await env.svc.exec(_exec_request())
        exec_pid = env.launcher.workers[-1].pid
        await env.svc.start(pb.StartRequest(id="c1", exec_id="e1"))
        env.seen = len(env.publisher.events)
        env.launcher.exit(env.pid, 0)
        assert (exec_pid, signal.SIGKILL) in env.launcher.signals
        assert await env.status("e1") == Status.STOPPED
        exits = [(e.id, e.exit_status) for _, e in env.publisher.events[env.seen :]]
        assert exits == [("e1", 137), ("c1", 0)]

    run(tmp_path, monkeypatch, body)


def test_without_a_cgroup_pause_stops_the_process_and_stats_and_update_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(env: Env) -> None:
        await env.bring("running")
        await env.svc.pause(pb.PauseRequest(id="c1"))
        await env.svc.resume(pb.ResumeRequest(id="c1"))
        assert env.launcher.signals == [(env.pid, signal.SIGSTOP), (env.pid, signal.SIGCONT)]
        with pytest.raises(NotFound, match="no cgroup statistics"):
            await env.svc.stats(pb.StatsRequest(id="c1"))
        with pytest.raises(FailedPrecondition, match="no cgroup of its own"):
            await TASK_RPCS["update"](env)

    run(tmp_path, monkeypatch, body, cgroup=False)


@pytest.mark.parametrize("sig", [0x7FFF, 0xFFFFFFFF], ids=["huge", "minus-one"])
def test_a_signal_number_that_is_no_signal_is_invalid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: int
) -> None:
    async def body(env: Env) -> None:
        await env.bring("running")
        with pytest.raises(ShimError, match="is not a signal number") as raised:
            await env.svc.kill(pb.KillRequest(id="c1", signal=sig))
        assert type(raised.value) is InvalidArgument
        assert await env.status() == Status.RUNNING

    run(tmp_path, monkeypatch, body)


def test_bad_update_resources_are_invalid_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(env: Env) -> None:
        await env.bring("running")
        for value, message in ((b"{not json", "not JSON"), (b"[1]", "LinuxResources")):
            req = pb.UpdateTaskRequest(id="c1", resources=any_pb2.Any(value=value))
            with pytest.raises(ShimError, match=message) as raised:
                await env.svc.update(req)
            assert type(raised.value) is InvalidArgument

    run(tmp_path, monkeypatch, body)
