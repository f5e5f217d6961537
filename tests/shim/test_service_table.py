"""TaskService over the shipped in-memory FakeContainer: every RPC in every state, and races.

Here the container is a fake, so what is tested is the Task API's own part: the state table,
the events and their order, what overlapping RPCs see.  The in-between states (STARTING,
PAUSING, RESUMING, DELETING) are reached by holding the fake's step half-way.  The expected
outcome of each (RPC, state) is written out, independently of ``TRANSITIONS``.
tests/shim/test_service_states.py runs the same API over the real Wasm container.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message

from pywasmd.api.containerd.task.v2 import shim_pb2 as pb
from pywasmd.errors import AlreadyExists, FailedPrecondition, Internal, NotFound, ShimError
from pywasmd.shim.service import TaskService
from pywasmd.shim.state import Status
from pywasmd.testing import FakeContainer, FakeContainers, RecordingPublisher

EXIT_STATUS = 3
RESOURCES = b'{"memory": {"limit": 67108864}}'


@dataclass
class Env:
    svc: TaskService
    containers: FakeContainers
    publisher: RecordingPublisher
    #: An RPC held half-way (its step waits), ended by finish().
    held: asyncio.Task[Message] | None = None
    seen: int = 0
    gates: list[asyncio.Event] = field(default_factory=list)

    @property
    def c(self) -> FakeContainer:
        return self.containers.made["c1"]

    @property
    def pid(self) -> int:
        return self.c.init.pid

    async def hold(self, step: str, rpc: Awaitable[Message]) -> None:
        gate = asyncio.Event()
        self.gates.append(gate)
        self.c.hold[step] = gate
        self.held = asyncio.ensure_future(rpc)
        await settle()
        assert not self.held.done()

    async def bring(self, state: str) -> None:
        """Create c1 and move it to ``state`` through the API."""
        await self.svc.create(pb.CreateTaskRequest(id="c1", bundle="/b"))
        if state == "starting":
            await self.hold("start", self.svc.start(pb.StartRequest(id="c1")))
        if state in ("running", "pausing", "paused", "resuming", "stopped"):
            await self.svc.start(pb.StartRequest(id="c1"))
        if state == "pausing":
            await self.hold("pause", self.svc.pause(pb.PauseRequest(id="c1")))
        if state in ("paused", "resuming"):
            await self.svc.pause(pb.PauseRequest(id="c1"))
        if state == "resuming":
            await self.hold("resume", self.svc.resume(pb.ResumeRequest(id="c1")))
        if state == "stopped":
            self.c.exit(self.c.init, EXIT_STATUS)
        if state == "deleting":
            await self.hold("delete", self.svc.delete(pb.DeleteRequest(id="c1")))
        self.seen = len(self.publisher.events)

    async def finish(self) -> Message | None:
        """Let the held RPC end."""
        for gate in self.gates:
            gate.set()
        if self.held is None:
            return None
        held, self.held = self.held, None
        return await asyncio.wait_for(held, 5)

    def new_topics(self) -> list[str]:
        return [topic for topic, _ in self.publisher.events[self.seen :]]

    async def status(self, exec_id: str = "") -> Status | None:
        try:
            state = await self.svc.state(pb.StateRequest(id="c1", exec_id=exec_id))
        except NotFound:
            return None
        return Status(state.status)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def run(body: Callable[[Env], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        containers = FakeContainers()
        publisher = RecordingPublisher()
        env = Env(TaskService(containers, publisher), containers, publisher)
        try:
            # A step held by mistake must fail the test, not hang it.
            await asyncio.wait_for(body(env), 10)
        finally:
            for gate in env.gates:
                gate.set()
            env.containers.release()
            for container in env.containers.made.values():
                container.release()
            await env.finish()

    asyncio.run(main())


# --- the table ------------------------------------------------------------------------------

STATES = (
    "created",
    "starting",
    "running",
    "pausing",
    "paused",
    "resuming",
    "stopped",
    "deleting",
)
LIVE = STATES[:6]
GONE = "gone"
PENDING = "pending"
WIRE = {
    "created": Status.CREATED,
    "starting": Status.RUNNING,
    "running": Status.RUNNING,
    "pausing": Status.PAUSING,
    "paused": Status.PAUSED,
    "resuming": Status.PAUSED,
    "stopped": Status.STOPPED,
    "deleting": Status.STOPPED,
}


@dataclass(frozen=True)
class Ok:
    """Success: these events, then this wire status (GONE: deleted; None: unchanged)."""

    topics: tuple[str, ...] = ()
    after: Status | str | None = None
    check: Callable[[Env, Any], None] | None = None


Outcome = type[ShimError] | Ok | str
FP, NF = FailedPrecondition, NotFound
RPC = Callable[[Env], Awaitable[Message]]


def _exec_request(exec_id: str = "e1") -> pb.ExecProcessRequest:
    return pb.ExecProcessRequest(
        id="c1", exec_id=exec_id, stdout="/out", spec=any_pb2.Any(value=b'{"args": ["/x"]}')
    )


TASK_RPCS: dict[str, RPC] = {
    "create": lambda e: e.svc.create(pb.CreateTaskRequest(id="c1", bundle="/b")),
    "start": lambda e: e.svc.start(pb.StartRequest(id="c1")),
    "wait": lambda e: e.svc.wait(pb.WaitRequest(id="c1")),
    "kill": lambda e: e.svc.kill(pb.KillRequest(id="c1", signal=signal.SIGKILL)),
    "kill-all": lambda e: e.svc.kill(pb.KillRequest(id="c1", signal=signal.SIGTERM, all=True)),
    "delete": lambda e: e.svc.delete(pb.DeleteRequest(id="c1")),
    "state": lambda e: e.svc.state(pb.StateRequest(id="c1")),
    "pids": lambda e: e.svc.pids(pb.PidsRequest(id="c1")),
    "stats": lambda e: e.svc.stats(pb.StatsRequest(id="c1")),
    "connect": lambda e: e.svc.connect(pb.ConnectRequest(id="c1")),
    "close-io": lambda e: e.svc.close_io(pb.CloseIORequest(id="c1", stdin=True)),
    "pause": lambda e: e.svc.pause(pb.PauseRequest(id="c1")),
    "resume": lambda e: e.svc.resume(pb.ResumeRequest(id="c1")),
    "resize-pty": lambda e: e.svc.resize_pty(pb.ResizePtyRequest(id="c1", width=80, height=24)),
    "update": lambda e: e.svc.update(
        pb.UpdateTaskRequest(id="c1", resources=any_pb2.Any(value=RESOURCES))
    ),
    "exec": lambda e: e.svc.exec(_exec_request()),
    "shutdown": lambda e: e.svc.shutdown(pb.ShutdownRequest(id="c1")),
}


def _started(env: Env, resp: pb.StartResponse) -> None:
    assert resp.pid == env.pid
    assert env.c.started


def _signalled(sig: int, all: bool) -> Callable[[Env, Any], None]:
    def check(env: Env, _resp: object) -> None:
        assert env.c.signals == [(env.pid, sig, all)]

    return check


def _deleted(exit_status: int) -> Callable[[Env, Any], None]:
    def check(env: Env, resp: pb.DeleteResponse) -> None:
        assert (resp.pid, resp.exit_status) == (env.pid, exit_status)
        assert env.c.deleted
        assert env.svc.task_count == 0

    return check


def _state_is(state: str) -> Callable[[Env, Any], None]:
    def check(env: Env, resp: pb.StateResponse) -> None:
        assert (resp.id, resp.bundle, resp.pid, resp.status) == ("c1", "/b", env.pid, WIRE[state])
        assert resp.exit_status == (EXIT_STATUS if state == "stopped" else 0)

    return check


def _pids_are(alive: bool) -> Callable[[Env, Any], None]:
    def check(env: Env, resp: pb.PidsResponse) -> None:
        assert [p.pid for p in resp.processes] == ([env.pid] if alive else [])

    return check


def _stats(env: Env, resp: pb.StatsResponse) -> None:
    assert resp.stats.type_url == "pywasm.test/fake-stats"


def _connected(env: Env, resp: pb.ConnectResponse) -> None:
    assert resp.task_pid == env.pid


def _frozen(value: bool) -> Callable[[Env, Any], None]:
    def check(env: Env, _resp: object) -> None:
        assert env.c.frozen is value

    return check


def _updated(env: Env, _resp: object) -> None:
    assert env.c.resources == RESOURCES


def _exec_added(env: Env, _resp: object) -> None:
    assert env.c.exec_specs["e1"] == b'{"args": ["/x"]}'
    assert env.c.execs["e1"].io.stdout == "/out"


def _shutdown_waits(env: Env, _resp: object) -> None:
    assert not env.svc.shutdown_requested.is_set()


def _waited(env: Env, resp: pb.WaitResponse) -> None:
    assert resp.exit_status == EXIT_STATUS


def _live(ok: Ok, stopped: Outcome) -> dict[str, Outcome]:
    return {**{s: ok for s in LIVE}, "stopped": stopped, "deleting": NF}


def _only(state: str, ok: Ok, deleting: Outcome = NF) -> dict[str, Outcome]:
    return {**{s: FP for s in STATES}, state: ok, "deleting": deleting}


KILLED = Ok(("/tasks/exit",), Status.STOPPED, _signalled(signal.SIGKILL, False))
TERMINATED = Ok(("/tasks/exit",), Status.STOPPED, _signalled(signal.SIGTERM, True))

TASK_TABLE: dict[str, dict[str, Outcome]] = {
    "create": {s: AlreadyExists for s in STATES},
    "start": _only("created", Ok(("/tasks/start",), Status.RUNNING, _started)),
    "wait": {**{s: PENDING for s in STATES}, "stopped": Ok(check=_waited)},
    "kill": _live(KILLED, NF),
    "kill-all": _live(TERMINATED, NF),
    "delete": {
        **_only("created", Ok(("/tasks/exit", "/tasks/delete"), GONE, _deleted(137))),
        "stopped": Ok(("/tasks/delete",), GONE, _deleted(EXIT_STATUS)),
    },
    "state": {s: Ok(check=_state_is(s)) for s in STATES},
    "pids": {s: Ok(check=_pids_are(s in LIVE)) for s in STATES},
    "stats": _live(Ok(check=_stats), NF),
    "connect": {s: Ok(check=_connected) for s in STATES},
    "close-io": _live(Ok(), Ok()),
    "pause": _only("running", Ok(("/tasks/paused",), Status.PAUSED, _frozen(True))),
    "resume": _only("paused", Ok(("/tasks/resumed",), Status.RUNNING, _frozen(False))),
    "resize-pty": {s: Ok() for s in STATES},
    "update": _live(Ok(check=_updated), FP),
    "exec": _live(Ok(("/tasks/exec-added",), check=_exec_added), FP),
    "shutdown": {s: Ok(check=_shutdown_waits) for s in STATES},
}


async def _expect(env: Env, call: Awaitable[Message], outcome: Outcome) -> None:
    before = await env.status()
    if isinstance(outcome, type):
        with pytest.raises(ShimError) as raised:
            await call
        assert type(raised.value) is outcome, raised.value
        assert env.new_topics() == []
        assert await env.status() == before
        return
    if outcome == PENDING:
        waiting = asyncio.ensure_future(call)
        await settle()
        assert not waiting.done()
        assert env.new_topics() == []
        if env.c.hold.get("delete") is None:
            env.c.exit(env.c.init, 9)
        await env.finish()
        waited = await asyncio.wait_for(waiting, 5)
        assert waited.exit_status == (137 if "delete" in env.c.calls else 9)
        return
    assert isinstance(outcome, Ok)
    resp = await call
    assert env.new_topics() == list(outcome.topics)
    after = await env.status()
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
def test_task_rpc_in_state(rpc: str, state: str) -> None:
    async def body(env: Env) -> None:
        await env.bring(state)
        await _expect(env, TASK_RPCS[rpc](env), TASK_TABLE[rpc][state])

    run(body)


# --- overlapping Deletes --------------------------------------------------------------------


@pytest.mark.parametrize("state", ["created", "stopped", "held"])
def test_overlapping_deletes_one_succeeds_the_other_is_not_found(state: str) -> None:
    async def body(env: Env) -> None:
        await env.bring("stopped" if state == "stopped" else "created")
        gate = asyncio.Event()
        if state == "held":
            env.c.hold["delete"] = gate
        both = asyncio.gather(
            env.svc.delete(pb.DeleteRequest(id="c1")),
            env.svc.delete(pb.DeleteRequest(id="c1")),
            return_exceptions=True,
        )
        if state == "held":
            await settle()
            assert not both.done()
            gate.set()
        first, second = await asyncio.wait_for(both, 5)
        assert isinstance(first, pb.DeleteResponse), first
        assert type(second) is NotFound, second
        assert env.c.calls.count("delete") == 1
        assert env.publisher.topics.count("/tasks/delete") == 1
        assert env.svc.task_count == 0

    run(body)


def test_overlapping_exec_deletes_one_succeeds_the_other_is_not_found() -> None:
    async def body(env: Env) -> None:
        await env.bring("running")
        await env.svc.exec(_exec_request())
        gate = asyncio.Event()
        env.c.hold["delete_exec"] = gate
        first = asyncio.ensure_future(env.svc.delete(pb.DeleteRequest(id="c1", exec_id="e1")))
        await settle()
        with pytest.raises(NotFound, match="already being deleted"):
            await env.svc.delete(pb.DeleteRequest(id="c1", exec_id="e1"))
        gate.set()
        assert (await asyncio.wait_for(first, 5)).exit_status == 137
        assert env.c.calls.count("delete_exec") == 1
        assert "e1" not in env.c.execs

    run(body)


def test_a_failed_delete_keeps_the_container_being_deleted() -> None:
    """containerd then runs the shim's `delete` command, which cleans up from the bundle."""

    async def body(env: Env) -> None:
        await env.bring("stopped")
        env.c.fail["delete"] = Internal("runc delete failed: boom")
        with pytest.raises(Internal, match="boom"):
            await env.svc.delete(pb.DeleteRequest(id="c1"))
        assert env.c.init.status is Status.DELETING
        with pytest.raises(NotFound, match="already being deleted"):
            await env.svc.delete(pb.DeleteRequest(id="c1"))
        assert "/tasks/delete" not in env.publisher.topics

    run(body)


# --- pause and resume while something else happens -----------------------------------------


def test_an_exit_while_pausing_leaves_the_container_stopped_and_unpaused() -> None:
    async def body(env: Env) -> None:
        await env.bring("pausing")
        env.c.exit(env.c.init, 137)
        assert await env.status() == Status.STOPPED
        await env.finish()
        assert env.c.init.status is Status.STOPPED
        assert env.new_topics() == ["/tasks/exit"]

    run(body)


def test_a_kill_while_pausing_is_delivered_and_the_pause_settles_on_stopped() -> None:
    async def body(env: Env) -> None:
        await env.bring("pausing")
        await env.svc.kill(pb.KillRequest(id="c1", signal=signal.SIGKILL))
        await env.finish()
        assert await env.status() == Status.STOPPED
        assert env.new_topics() == ["/tasks/exit"]

    run(body)


def test_a_kill_that_does_not_end_it_while_pausing_leaves_it_paused() -> None:
    async def body(env: Env) -> None:
        await env.bring("pausing")
        env.c.ignores_signals = True
        await env.svc.kill(pb.KillRequest(id="c1", signal=signal.SIGTERM))
        assert await env.status() == Status.PAUSING
        await env.finish()
        assert await env.status() == Status.PAUSED
        assert env.new_topics() == ["/tasks/paused"]

    run(body)


def test_delete_exec_and_update_while_pausing() -> None:
    async def body(env: Env) -> None:
        await env.bring("pausing")
        with pytest.raises(FailedPrecondition, match="cannot delete a pausing container"):
            await env.svc.delete(pb.DeleteRequest(id="c1"))
        with pytest.raises(FailedPrecondition, match="cannot pause a pausing container"):
            await env.svc.pause(pb.PauseRequest(id="c1"))
        with pytest.raises(FailedPrecondition, match="cannot resume a pausing container"):
            await env.svc.resume(pb.ResumeRequest(id="c1"))
        await env.svc.exec(_exec_request())
        await TASK_RPCS["update"](env)
        await env.finish()
        assert await env.status() == Status.PAUSED
        assert env.new_topics() == ["/tasks/exec-added", "/tasks/paused"]

    run(body)


def test_a_delete_after_an_exit_while_pausing_wins_and_the_pause_still_answers() -> None:
    async def body(env: Env) -> None:
        await env.bring("pausing")
        env.c.exit(env.c.init, 137)
        await env.svc.delete(pb.DeleteRequest(id="c1"))
        assert env.svc.task_count == 0
        assert isinstance(await env.finish(), empty_pb2.Empty)
        assert env.new_topics() == ["/tasks/exit", "/tasks/delete"]

    run(body)


@pytest.mark.parametrize(
    ("op", "before"),
    [("pause", Status.RUNNING), ("resume", Status.PAUSED)],
    ids=["pause", "resume"],
)
def test_a_failed_pause_or_resume_rolls_back(op: str, before: Status) -> None:
    async def body(env: Env) -> None:
        await env.bring("running" if op == "pause" else "paused")
        env.c.fail[op] = Internal(f"runc {op} failed: boom")
        rpc = TASK_RPCS[op](env)
        with pytest.raises(Internal, match="boom"):
            await rpc
        assert await env.status() == before
        assert env.new_topics() == []
        # And it can be tried again.
        del env.c.fail[op]
        await TASK_RPCS[op](env)
        assert env.new_topics() == [f"/tasks/{op}d"]

    run(body)


def test_an_exit_while_resuming_leaves_it_stopped_without_a_resumed_event() -> None:
    async def body(env: Env) -> None:
        await env.bring("resuming")
        env.c.exit(env.c.init, 0)
        await env.finish()
        assert await env.status() == Status.STOPPED
        assert env.new_topics() == ["/tasks/exit"]
        assert env.c.frozen is False

    run(body)


# --- start ----------------------------------------------------------------------------------


def test_a_failed_start_rolls_back_to_created_and_can_be_retried() -> None:
    async def body(env: Env) -> None:
        await env.bring("created")
        env.c.fail["start"] = Internal("runc start failed: boom")
        with pytest.raises(Internal):
            await env.svc.start(pb.StartRequest(id="c1"))
        assert env.c.init.status is Status.CREATED
        del env.c.fail["start"]
        await env.svc.start(pb.StartRequest(id="c1"))
        assert await env.status() == Status.RUNNING
        # The event goes out before the program can run, so each attempt published one.
        assert env.new_topics() == ["/tasks/start", "/tasks/start"]

    run(body)


def test_an_exit_during_start_is_not_undone_by_it() -> None:
    async def body(env: Env) -> None:
        await env.bring("starting")
        env.c.exit(env.c.init, 1)
        await env.finish()
        assert await env.status() == Status.STOPPED

    run(body)


# --- execs ----------------------------------------------------------------------------------


def test_a_second_start_of_a_starting_exec_is_refused() -> None:
    async def body(env: Env) -> None:
        await env.bring("running")
        await env.svc.exec(_exec_request())
        await env.hold("start_exec", env.svc.start(pb.StartRequest(id="c1", exec_id="e1")))
        with pytest.raises(FailedPrecondition, match="cannot start a starting"):
            await env.svc.start(pb.StartRequest(id="c1", exec_id="e1"))
        assert await env.status("e1") == Status.RUNNING
        await env.finish()
        assert env.new_topics() == ["/tasks/exec-added", "/tasks/exec-started"]

    run(body)


def test_an_exec_cannot_start_once_its_container_stopped() -> None:
    async def body(env: Env) -> None:
        await env.bring("running")
        await env.svc.exec(_exec_request())
        env.c.exit(env.c.init, 0)
        with pytest.raises(FailedPrecondition, match="has stopped"):
            await env.svc.start(pb.StartRequest(id="c1", exec_id="e1"))
        assert "start_exec" not in env.c.calls

    run(body)


@pytest.mark.parametrize("what", ["create", "exec"])
def test_two_overlapping_adds_of_one_id_the_second_already_exists(what: str) -> None:
    async def body(env: Env) -> None:
        gate = asyncio.Event()
        if what == "create":
            env.containers.hold["create"] = gate
            first = asyncio.ensure_future(TASK_RPCS["create"](env))
        else:
            await env.bring("running")
            env.c.hold["exec"] = gate
            first = asyncio.ensure_future(TASK_RPCS["exec"](env))
        await settle()
        with pytest.raises(AlreadyExists):
            await TASK_RPCS[what](env)
        gate.set()
        await asyncio.wait_for(first, 5)
        assert env.svc.task_count == 1

    run(body)


def test_an_exec_that_fails_to_be_added_leaves_its_id_free() -> None:
    async def body(env: Env) -> None:
        await env.bring("running")
        env.c.fail["exec"] = Internal("no worker")
        with pytest.raises(Internal):
            await env.svc.exec(_exec_request())
        del env.c.fail["exec"]
        await env.svc.exec(_exec_request())
        assert env.new_topics() == ["/tasks/exec-added"]

    run(body)


def test_the_init_takes_its_execs_and_their_exits_come_first() -> None:
    async def body(env: Env) -> None:
        await env.bring("running")
        await env.svc.exec(_exec_request())
        await env.svc.start(pb.StartRequest(id="c1", exec_id="e1"))
        env.seen = len(env.publisher.events)
        env.c.exit(env.c.init, 0, oom=True)
        assert env.new_topics() == ["/tasks/exit", "/tasks/oom", "/tasks/exit"]
        assert await env.status("e1") == Status.STOPPED

    run(body)


def test_an_exec_that_a_delete_overtook_is_ended_not_left_behind() -> None:
    async def body(env: Env) -> None:
        await env.bring("created")
        gate = asyncio.Event()
        env.c.hold["exec"] = gate
        adding = asyncio.ensure_future(env.svc.exec(_exec_request()))
        await settle()
        await env.svc.delete(pb.DeleteRequest(id="c1"))
        gate.set()
        with pytest.raises(NotFound, match="being deleted"):
            await asyncio.wait_for(adding, 5)
        [exec_pid] = [pid for pid, _, _ in env.c.signals if pid != env.pid]
        assert (exec_pid, signal.SIGKILL, False) in env.c.signals
        assert env.c.execs == {}
        assert "/tasks/exec-added" not in env.publisher.topics

    run(body)
