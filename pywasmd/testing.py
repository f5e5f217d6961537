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
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from pywasmd.shim.reaper import Reaper

if TYPE_CHECKING:
    from pywasmd.errors import ShimError
    from pywasmd.oci.plan import WasiPlan
    from pywasmd.shim.launcher import ChildStdio

__all__ = [
    "FAKE_PID_BASE",
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
