"""Fakes for tests of code built on pywasmd; they ship with the package so tests can share them.

:class:`FakeLauncher`, :class:`FakeWorker` and :class:`FakeReaper` let ``TaskService`` run
without processes::

    reaper = FakeReaper()
    launcher = FakeLauncher(reaper)
    containers = ContainerFactory(launcher, reaper, kill=launcher.kill)
    service = TaskService(containers, RecordingPublisher())

A fake process "exits" when the test calls ``reaper.exit(pid, status)``, or when it is sent a
signal whose default action ends a process.  Fake pids start at 2**30, above the kernel's
``PID_MAX_LIMIT`` (2**22): even a real ``kill(2)`` that slipped past the fakes could never reach
a process.

:class:`FakeContainers` and :class:`FakeContainer` go one level up: ``TaskService`` over
in-memory containers, for the Task API's own rules (states, events, races)::

    containers = FakeContainers()
    service = TaskService(containers, RecordingPublisher())

Any of a fake container's awaited steps can be held (``hold``) or made to fail (``fail``).

:class:`FakeEngine` is the engine seam (:mod:`pywasmd.engine`) with nothing behind it, for
what sits on the seam (the compile cache, the worker's loading, HTTP instances).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

from google.protobuf import any_pb2
from google.protobuf.message import Message

from pywasmd.engine import CallResult
from pywasmd.errors import InvalidArgument, NotFound
from pywasmd.shim.process import Process, Stdio
from pywasmd.shim.reaper import Reaper
from pywasmd.wasmbin import is_wasm

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pywasmd.engine import Engine
    from pywasmd.errors import ShimError
    from pywasmd.oci.plan import WasiPlan
    from pywasmd.shim.container import CreateRequest, ExitHandler
    from pywasmd.shim.launcher import ChildStdio

__all__ = [
    "FAKE_PID_BASE",
    "FakeContainer",
    "FakeContainers",
    "FakeEngine",
    "FakeLauncher",
    "FakeReaper",
    "FakeWorker",
    "RecordingPublisher",
]

#: Above Linux's PID_MAX_LIMIT (4194304 on 64-bit): no process can ever have such a pid.
FAKE_PID_BASE = 1 << 30

#: Signals whose default action ends a process; a fake process ends on these, as a real
#: worker does (it installs no handlers of its own for them).
_FATAL = frozenset(
    {
        signal.SIGHUP,
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGKILL,
        signal.SIGTERM,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGALRM,
    }
)
_SIGNALS = frozenset(int(s) for s in signal.valid_signals())


class RecordingPublisher:
    """An EventPublisher that remembers what was published, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Message]] = []

    def publish(self, topic: str, event: Message) -> None:
        # A copy, because the real publisher serializes at publish time: a later change to
        # the caller's message must not show up here either.
        copy = type(event)()
        copy.CopyFrom(event)
        self.events.append((topic, copy))

    @property
    def topics(self) -> list[str]:
        return [topic for topic, _ in self.events]


class FakeReaper(Reaper):
    """A :class:`Reaper` whose exits come from the test, never from ``waitpid``.

    ``watch`` is the real one (an exit delivered before the watch is kept for it), so the
    service sees the same ordering rules as in production.
    """

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """No SIGCHLD handler: the test process's own children are none of the fake's business."""

    def reap(self) -> None:
        """Nothing to reap: exits arrive through :meth:`exit`."""

    def exit(self, pid: int, status: int) -> None:
        """Deliver ``pid``'s exit ``status`` (containerd's convention: 128+n for signal n)."""
        callback = self._waiting.pop(pid, None)
        if callback is None:
            self._unclaimed[pid] = status
        else:
            callback(status)

    def watching(self, pid: int) -> bool:
        return pid in self._waiting


class FakeWorker:
    """A worker that never runs anything; it records what the service asked of it."""

    def __init__(
        self,
        pid: int,
        engine: str,
        stdio: ChildStdio,
        prepare_error: ShimError | None = None,
        takeover_pid: int | None = None,
    ) -> None:
        self.pid = pid
        self.engine = engine
        self.stdio = stdio
        #: The pid the worker was spawned with; ``pid`` changes when a "pid 1" takes over.
        self.spawned_pid = pid
        self.plan: WasiPlan | None = None
        self.started = False
        self.closed = False
        #: What :meth:`report` returns once, as a real worker's lines after ``started``.
        self.said = ""
        #: False: signals are recorded but never end this process (it ignores them).
        self.exits_on_signal = True
        self._prepare_error = prepare_error
        self._takeover_pid = takeover_pid

    async def prepare(self, plan: WasiPlan) -> None:
        self.plan = plan
        if self._takeover_pid is not None:
            self.pid = self._takeover_pid
        if self._prepare_error is not None:
            raise self._prepare_error

    async def start(self) -> None:
        self.started = True

    def report(self) -> str:
        said, self.said = self.said, ""
        return said

    def close(self) -> None:
        self.closed = True


class FakeLauncher:
    """Spawns :class:`FakeWorker` objects with fake pids; its :meth:`kill` stands in for os.kill."""

    def __init__(self, reaper: FakeReaper) -> None:
        self.reaper = reaper
        self.workers: list[FakeWorker] = []
        #: Every signal sent, as ``(pid, signal)``; a negative pid is a process group.
        self.signals: list[tuple[int, int]] = []
        #: Raised by the next workers' ``prepare`` (what ``err``/``fail`` from a worker become).
        self.prepare_error: ShimError | None = None
        #: Workers hand over to a "pid 1" of a new pid namespace while they load.
        self.takeover = False
        self._pids: Iterator[int] = itertools.count(FAKE_PID_BASE)
        self._gone: set[int] = set()

    def spawn(self, stdio: ChildStdio, engine: str = "wasmtime") -> FakeWorker:
        pid = next(self._pids)
        worker = FakeWorker(
            pid,
            engine,
            stdio,
            prepare_error=self.prepare_error,
            takeover_pid=next(self._pids) if self.takeover else None,
        )
        self.workers.append(worker)
        return worker

    def worker(self, pid: int) -> FakeWorker:
        """The worker whose (current) pid is ``pid``."""
        for worker in self.workers:
            if worker.pid == pid:
                return worker
        raise LookupError(f"no fake worker has pid {pid}")

    def exit(self, pid: int, status: int) -> None:
        """End fake process ``pid`` with ``status``; later signals to it find no process."""
        if pid in self._gone:
            raise LookupError(f"fake process {pid} has already exited")
        self._gone.add(pid)
        self.reaper.exit(pid, status)

    def alive(self, pid: int) -> bool:
        return pid not in self._gone and any(w.pid == pid for w in self.workers)

    def kill(self, pid: int, sig: int) -> None:
        """``os.kill`` for fake processes, with its errors: ESRCH for a process that is gone or
        was never spawned here, EINVAL for a number that is no signal."""
        self.signals.append((pid, sig))
        target = abs(pid)
        # In kill(2)'s order: a missing process is ESRCH whatever the signal.
        if not self.alive(target):
            raise ProcessLookupError(errno.ESRCH, "No such process")
        if sig != 0 and sig not in _SIGNALS:
            raise OSError(errno.EINVAL, "Invalid argument")
        if sig in _FATAL and self.worker(target).exits_on_signal:
            self.exit(target, 128 + sig)


class _Steps:
    """What a fake's awaited steps do: record the call, wait while held, raise when told."""

    def __init__(self) -> None:
        #: Method names in call order.
        self.calls: list[str] = []
        #: A step named here waits for the event before it does anything.
        self.hold: dict[str, asyncio.Event] = {}
        #: A step named here raises this (after any hold).
        self.fail: dict[str, ShimError] = {}

    async def step(self, name: str) -> None:
        self.calls.append(name)
        gate = self.hold.get(name)
        if gate is not None:
            await gate.wait()
        error = self.fail.get(name)
        if error is not None:
            raise error

    def release(self) -> None:
        for gate in self.hold.values():
            gate.set()


class FakeContainer(_Steps):
    """A :class:`~pywasmd.shim.container.Container` with no process behind it.

    Its processes exit when the test calls :meth:`exit`, or on a signal whose default action
    ends a process (unless ``ignores_signals``); the init takes its execs with it, as in
    the real kinds.
    """

    def __init__(self, request: CreateRequest, on_exit: ExitHandler, pids: Iterator[int]) -> None:
        super().__init__()
        self.id = request.id
        self.bundle = request.bundle
        self.stdio = request.stdio
        self.init = Process(request.id, request.stdio.io(), next(pids))
        self.execs: dict[str, Process] = {}
        self._on_exit = on_exit
        self._pids = pids
        #: Every signal sent, as ``(pid, signal, all)``.
        self.signals: list[tuple[int, int, bool]] = []
        self.ignores_signals = False
        self.started = False
        self.frozen = False
        self.deleted = False
        self.resources = b""
        self.exec_specs: dict[str, bytes] = {}

    def exit(self, process: Process, status: int, oom: bool = False) -> None:
        """End ``process`` with ``status`` (128+n for signal n)."""
        if process.exited.is_set():
            raise LookupError(f"fake process {process.pid} has already exited")
        if process is self.init:
            for ex in list(self.execs.values()):
                if ex.pid and not ex.exited.is_set():
                    self._on_exit(ex, 128 + signal.SIGKILL, False)
        self._on_exit(process, status, oom)

    async def start(self) -> None:
        await self.step("start")
        self.started = True

    async def kill(self, process: Process, sig: int, all: bool = False) -> None:
        self.signals.append((process.pid, sig, all))
        if process.exited.is_set():
            raise NotFound(f"{process.id}: process already finished")
        if sig not in _SIGNALS:
            raise InvalidArgument(f"{process.id}: {sig} is not a signal number")
        if sig in _FATAL and not self.ignores_signals:
            self.exit(process, 128 + sig)

    async def _stop(self, process: Process) -> None:
        if process.pid and not process.exited.is_set():
            await self.kill(process, signal.SIGKILL)
            await process.exited.wait()

    async def delete(self) -> None:
        await self.step("delete")
        await self._stop(self.init)
        for ex in list(self.execs.values()):
            await self.delete_exec(ex)
        self.deleted = True

    async def pids(self) -> list[int]:
        await self.step("pids")
        running = [p.pid for p in self.execs.values() if p.pid and not p.exited.is_set()]
        return [self.init.pid, *running]

    def stats(self) -> any_pb2.Any:
        return any_pb2.Any(type_url="pywasm.test/fake-stats", value=self.id.encode())

    async def update(self, resources: bytes) -> None:
        await self.step("update")
        self.resources = resources

    async def pause(self) -> None:
        await self.step("pause")
        self.frozen = True

    async def resume(self) -> None:
        await self.step("resume")
        self.frozen = False

    async def exec(self, exec_id: str, spec: bytes, stdio: Stdio) -> Process:
        await self.step("exec")
        process = Process(exec_id, stdio.io(), next(self._pids))
        self.exec_specs[exec_id] = spec
        self.execs[exec_id] = process
        return process

    async def start_exec(self, process: Process) -> None:
        await self.step("start_exec")

    async def delete_exec(self, process: Process) -> None:
        await self.step("delete_exec")
        await self._stop(process)
        self.execs.pop(process.id, None)


class FakeContainers(_Steps):
    """The :class:`~pywasmd.shim.container.Containers` of :class:`FakeContainer`; ``hold`` and
    ``fail`` apply to ``create``, each container's own to the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.made: dict[str, FakeContainer] = {}
        self._pids: Iterator[int] = itertools.count(FAKE_PID_BASE)

    async def create(self, request: CreateRequest, on_exit: ExitHandler) -> FakeContainer:
        await self.step("create")
        container = FakeContainer(request, on_exit, self._pids)
        self.made[request.id] = container
        return container


class FakeEngine:
    """An :class:`~pywasmd.engine.Engine` that compiles and runs nothing.

    ``load`` accepts any file that starts with the Wasm magic; ``precompile`` gives bytes that
    name the module and the engine's ``version``, and ``load_precompiled`` refuses bytes of
    another version (as a real engine refuses a stale cache entry).  ``run`` returns
    ``exit_status``; an instance call answers with its stdin.
    """

    name = "fake"

    def __init__(self, exit_status: int = 0, version: str = "1") -> None:
        self.exit_status = exit_status
        self.version = version
        #: Every plan run, and how many times anything was compiled.
        self.runs: list[WasiPlan] = []
        self.compiles = 0

    def load(self, plan: WasiPlan) -> object:
        with open(plan.module, "rb") as f:
            if not is_wasm(f.read(8)):
                raise InvalidArgument(f"{plan.module}: not a WebAssembly binary")
        return ("loaded", plan.module)

    def run(self, loaded: object, plan: WasiPlan, ready: Callable[[], None] | None = None) -> int:
        if ready is not None:
            ready()
        self.runs.append(plan)
        return self.exit_status

    def prepare_instances(self, loaded: object, plan: WasiPlan) -> _EchoInstances:
        return _EchoInstances()

    def precompile(self, plan: WasiPlan) -> bytes:
        self.load(plan)
        self.compiles += 1
        return f"fake {self.version} {plan.module}".encode()

    def load_precompiled(self, data: bytes, plan: WasiPlan) -> object:
        if data != f"fake {self.version} {plan.module}".encode():
            raise InvalidArgument(f"{plan.module}: compiled code does not fit this engine")
        return ("loaded", plan.module)

    def fingerprint(self, plan: WasiPlan) -> str:
        return f"{self.version} {','.join(plan.features)}"


class _EchoInstances:
    max_parallel = 1

    def call(self, env: Sequence[tuple[str, str]], stdin: bytes, timeout: float) -> CallResult:
        return CallResult("exit", 0, stdin)


if TYPE_CHECKING:
    # mypy holds the fake to the seam.
    _ENGINE: Engine = FakeEngine()
