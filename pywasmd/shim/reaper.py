"""One owner for every waitpid in the shim process.

The shim is a child subreaper, so orphaned descendants come back to it too.
Exits are routed by pid; an exit that arrives before its pid was registered is
kept until someone asks for it (the fork/exit race).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
from collections.abc import Callable

_PR_SET_CHILD_SUBREAPER = 36
_MAX_UNCLAIMED = 256

ExitCallback = Callable[[int], None]


def exit_status(wait_status: int) -> int:
    """containerd's convention: the exit code, or 128+signal for a killed process."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class Reaper:
    def __init__(self) -> None:
        self._waiting: dict[int, ExitCallback] = {}
        self._unclaimed: dict[int, int] = {}

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGCHLD, self.reap)

    def watch(self, pid: int, callback: ExitCallback) -> None:
        if pid in self._unclaimed:
            callback(self._unclaimed.pop(pid))
            return
        self._waiting[pid] = callback

    def forget(self, pid: int) -> None:
        """``pid`` names a live process now: an exit kept under that number belongs to an
        earlier process that had it, and must never reach whoever watches the new one."""
        self._unclaimed.pop(pid, None)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = exit_status(status)
            callback = self._waiting.pop(pid, None)
            if callback is None:
                # Orphans nobody will ask for (runc's intermediate processes) end up here
                # too: keep the newest few, enough for any fork/exit race.
                if len(self._unclaimed) >= _MAX_UNCLAIMED:
                    del self._unclaimed[next(iter(self._unclaimed))]
                self._unclaimed[pid] = code
            else:
                callback(code)
