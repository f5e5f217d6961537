"""Starting container processes (workers).

``TaskService`` sees only :class:`Launcher` and :class:`Worker`, so how a worker
comes to life (forked from the shim server, or a fresh interpreter for an engine
that needs another Python) can change without touching it.  A worker whose
container has a pid namespace of its own hands over to its pid 1 while it
loads (``pid N`` on the control socket): from then on that process is the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass
from typing import NoReturn, Protocol

from pywasmd.errors import Internal, InvalidArgument
from pywasmd.oci.plan import WasiPlan

#: How long Start waits for a worker to say its sandbox is complete.
_STARTED_WAIT = 10.0


@dataclass(frozen=True)
class ChildStdio:
    """The fds that become the worker's 0, 1 and 2."""

    stdin: int
    stdout: int
    stderr: int


class Worker(Protocol):
    pid: int

    async def prepare(self, plan: WasiPlan) -> None:
        """Hand over the plan; return once the module is compiled, raise if it cannot run."""

    async def start(self) -> None:
        """Let the guest run."""

    def report(self) -> str:
        """What the worker said while its guest ran (``oom``...); never blocks."""

    def close(self) -> None:
        """Forget the control channel (the process itself is left alone)."""


class Launcher(Protocol):
    def spawn(self, stdio: ChildStdio, engine: str = "wasmtime") -> Worker: ...


class _ProcessWorker:
    def __init__(self, pid: int, control: socket.socket) -> None:
        self.pid = pid
        self._control = control
        self._pending = b""

    async def prepare(self, plan: WasiPlan) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(self._control, json.dumps(plan.to_json()).encode() + b"\n")
        text = await self._reply(plan)
        if text.startswith("pid "):
            self.pid = int(text[4:])
            text = await self._reply(plan)
        if text.startswith("err "):
            raise InvalidArgument(text[4:])
        if text.startswith("fail "):
            raise Internal(text[5:])
        if text != "ok":
            raise Internal(f"unexpected reply from worker {self.pid}: {text!r}")

    async def _reply(self, plan: WasiPlan) -> str:
        loop = asyncio.get_running_loop()
        reply = bytearray(self._pending)
        while b"\n" not in reply:
            chunk = await loop.sock_recv(self._control, 65536)
            if not chunk:
                raise Internal(
                    f"the worker process {self.pid} ended before loading {plan.argv[0]!r}; "
                    "see the shim log"
                )
            reply += chunk
        line, _, self._pending = bytes(reply).partition(b"\n")
        return line.decode(errors="replace").strip()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(self._control, b"go\n")
        # Answer Start once the guest's process holds its final credentials, capabilities,
        # no_new_privs and seccomp, as runc answers once its process has exec'd.  A worker
        # that dies first (it could not become the container's user) ends the wait too.
        reply = bytearray(self._pending)

        async def started() -> None:
            while b"\n" not in reply:
                chunk = await loop.sock_recv(self._control, 4096)
                if not chunk:
                    return
                reply.extend(chunk)

        with contextlib.suppress(asyncio.TimeoutError, OSError):
            await asyncio.wait_for(started(), _STARTED_WAIT)
        line, _, rest = bytes(reply).partition(b"\n")
        # Anything after (or other than) "started" is for report().
        self._pending = rest if line == b"started" else bytes(reply)

    def report(self) -> str:
        said, self._pending = self._pending, b""
        try:
            while chunk := self._control.recv(4096):
                said += chunk
        except (BlockingIOError, OSError):
            pass
        return said.decode(errors="replace")

    def close(self) -> None:
        self._control.close()


class ForkLauncher:
    """Workers forked from the shim server, which already imported the engine.

    A fork costs about a millisecond where a fresh interpreter costs ~100 ms.  The
    server runs asyncio in one thread (plus, for a few ms per Create, the thread of
    :func:`pywasmd.shim.cgroups.prime_migration`, blocked in one write; the child never
    has it), and the child never returns to the server's event loop: it runs
    :func:`pywasmd.shim.worker.main` and exits.
    """

    def spawn(self, stdio: ChildStdio, engine: str = "wasmtime") -> Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = os.fork()
        except OSError as exc:
            ours.close()
            theirs.close()
            raise Internal(f"cannot fork a worker process: {exc}") from exc
        if pid == 0:
            _become_worker(stdio, theirs.fileno())
        theirs.close()
        ours.setblocking(False)
        return _ProcessWorker(pid, ours)


def _become_worker(stdio: ChildStdio, control: int) -> NoReturn:
    status = 127
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        import setproctitle

        # `delete` recognises workers by this name when it must kill one without the shim.
        setproctitle.setproctitle("pywasm-worker (pywasmd.shim.worker)")
        # Move everything we need above the target fds before dup2 lands on them.
        fds = [os.dup(fd) for fd in (stdio.stdin, stdio.stdout, stdio.stderr, control, 2)]
        log_fd = 10
        for target, fd in enumerate(fds[:4]):
            os.dup2(fd, target)
        os.dup2(fds[4], log_fd)
        if len(os.listdir("/proc/self/task")) > 1:
            # A library's fork handler started threads in this copy (gRPC does, after the
            # server talked to containerd): they would outlive the sandbox's per-thread
            # settings, so become a fresh interpreter instead, with the same fds.
            argv = [sys.executable, "-I", "-m", "pywasmd.shim.worker", "--log-fd", str(log_fd)]
            os.execv(sys.executable, argv)
        from pywasmd.shim.worker import main

        main(log_fd=log_fd)
        status = 0
    except BaseException as exc:  # noqa: BLE001 - the child must never return to the server
        _report_crash(exc)
    finally:
        os._exit(status)


def _report_crash(exc: BaseException) -> None:
    """An unexpected failure in a worker: one line for the container, the traceback for the log."""
    import traceback

    try:
        os.write(
            2, f"pywasm: internal error starting the guest: {exc!r} (see the shim log)\n".encode()
        )
        os.write(10, "".join(traceback.format_exception(exc)).encode())
    except OSError:
        pass


class ProcessLauncher:
    """One fresh interpreter per container: ``python -m pywasmd.shim.worker``."""

    def __init__(self, python: str = sys.executable) -> None:
        self._python = python

    def spawn(self, stdio: ChildStdio, engine: str = "wasmtime") -> Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = os.posix_spawn(
                self._python,
                [self._python, "-I", "-m", "pywasmd.shim.worker"],
                {},
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, stdio.stdin, 0),
                    (os.POSIX_SPAWN_DUP2, stdio.stdout, 1),
                    (os.POSIX_SPAWN_DUP2, stdio.stderr, 2),
                    (os.POSIX_SPAWN_DUP2, theirs.fileno(), 3),
                ],
                setsid=True,
            )
        except OSError as exc:
            ours.close()
            raise Internal(f"cannot start a worker process: {exc}") from exc
        finally:
            theirs.close()
        ours.setblocking(False)
        return _ProcessWorker(pid, ours)


class EngineLaunchers:
    """Forked workers by default; a fresh interpreter for engines that need another Python.

    wasmer-python runs only on CPython <= 3.10, so the node config may name an interpreter
    for it (``engine_python: {wasmer: /opt/pywasm/venv310/bin/python}``).
    """

    def __init__(self, default: Launcher, interpreters: dict[str, str]) -> None:
        self._default = default
        self._others = {name: ProcessLauncher(path) for name, path in interpreters.items()}

    def spawn(self, stdio: ChildStdio, engine: str = "wasmtime") -> Worker:
        launcher = self._others.get(engine, self._default)
        return launcher.spawn(stdio, engine)
