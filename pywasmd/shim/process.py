"""A container's processes as the Task API sees them: its init and its execs.

One :class:`Process` type for both, in both kinds of container; what runs it (a worker, runc)
stays with the container.  Only the service changes ``status``, through the state table.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from dataclasses import dataclass, field

from pywasmd.errors import Internal, InvalidArgument, NotFound
from pywasmd.shim.console import TerminalIO
from pywasmd.shim.state import Status
from pywasmd.shim.stdio import ProcessIO

#: ``os.kill``, or a test's stand-in for it; a negative pid is a process group.
Kill = Callable[[int, int], None]


@dataclass(frozen=True)
class Stdio:
    """Where a process's streams go, as the client named them (FIFOs, ``file://``)."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False

    def io(self) -> ProcessIO | TerminalIO:
        """The streams, not opened yet."""
        if self.terminal:
            return TerminalIO(self.stdin, self.stdout, self.stderr)
        return ProcessIO(self.stdin, self.stdout, self.stderr)


@dataclass(eq=False)
class Process:
    #: The container's id for its init, the exec id for an exec.
    id: str
    io: ProcessIO | TerminalIO
    #: 0 until the process exists (a runc exec gets it at Start).
    pid: int = 0
    status: Status = Status.CREATED
    exit_status: int = 0
    exited_at_ns: int = 0
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def terminal(self) -> bool:
        return isinstance(self.io, TerminalIO)

    def resize(self, width: int, height: int) -> None:
        if isinstance(self.io, TerminalIO):
            self.io.resize(width, height)


def send_signal(kill: Kill, pid: int, sig: int, what: str, group: bool = False) -> None:
    """Kill's answer as the Task API gives it."""
    try:
        kill(-pid if group else pid, sig)
    except ProcessLookupError:
        raise NotFound(f"{what}: process already finished") from None
    except (ValueError, OSError) as exc:
        # EINVAL (and ValueError) is the request's signal number; anything else the host's.
        if isinstance(exc, ValueError) or exc.errno == errno.EINVAL:
            raise InvalidArgument(f"{what}: {sig} is not a signal number: {exc}") from exc
        raise Internal(f"{what}: cannot send signal {sig} to pid {pid}: {exc}") from exc


def kill_quietly(kill: Kill, pid: int, sig: int) -> None:
    try:
        kill(pid, sig)
    except OSError:
        pass
