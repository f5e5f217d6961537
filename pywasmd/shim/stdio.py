"""Opening a container's stdio the way containerd's clients expect.

The client (ctr, dockerd, CRI) creates FIFOs and opens its ends before Create.
For each FIFO the shim opens ends in an order that never blocks, hands the
worker its ends directly, and keeps only what the protocol needs:

* stdout/stderr: the worker gets a write end; the shim keeps a read end so the
  guest never meets EPIPE if the client goes away.  The shim holds no write end,
  so the client sees EOF exactly when the guest exits (ctr >= 1.6.22 waits for it).
* stdin: the worker gets a read end; the shim keeps a write end until CloseIO,
  so the guest sees EOF only after the client closed *and* asked for it.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from urllib.parse import urlparse

from pywasmd.errors import InvalidArgument
from pywasmd.shim.launcher import ChildStdio


def _blocking(fd: int) -> int:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    return fd


@dataclass
class ProcessIO:
    stdin: str
    stdout: str
    stderr: str
    _child: list[int] = field(default_factory=list)
    _held: list[int] = field(default_factory=list)
    _stdin_hold: int | None = None

    def open(self) -> ChildStdio:
        """Open every stream; on failure nothing stays open."""
        try:
            return ChildStdio(self._open_stdin(), *self._open_outputs())
        except BaseException:
            self.close()
            raise

    def after_spawn(self) -> None:
        """The worker owns its ends now; drop the shim's copies."""
        for fd in self._child:
            os.close(fd)
        self._child.clear()

    def close_stdin(self) -> None:
        if self._stdin_hold is not None:
            os.close(self._stdin_hold)
            self._held.remove(self._stdin_hold)
            self._stdin_hold = None

    def close(self) -> None:
        for fd in self._child + self._held:
            try:
                os.close(fd)
            except OSError:
                pass
        self._child.clear()
        self._held.clear()
        self._stdin_hold = None

    def _devnull(self, flags: int) -> int:
        fd = os.open(os.devnull, flags)
        self._child.append(fd)
        return fd

    def _open_stdin(self) -> int:
        if not self.stdin:
            return self._devnull(os.O_RDONLY)
        reader = os.open(self.stdin, os.O_RDONLY | os.O_NONBLOCK)
        self._child.append(reader)
        self._stdin_hold = os.open(self.stdin, os.O_WRONLY | os.O_NONBLOCK)
        self._held.append(self._stdin_hold)
        return _blocking(reader)

    def _open_outputs(self) -> tuple[int, int]:
        out_uri = urlparse(self.stdout) if self.stdout else None
        if out_uri is not None and out_uri.scheme == "file":
            return self._open_log_file(out_uri.path)
        if out_uri is not None and out_uri.scheme not in ("", "fifo"):
            raise InvalidArgument(
                f"stdout {self.stdout!r}: the {out_uri.scheme}:// log driver is not supported; "
                "use a FIFO (the default) or file:///path"
            )
        return self._open_output(self.stdout), self._open_output(self.stderr)

    def _open_output(self, path: str) -> int:
        if not path:
            return self._devnull(os.O_WRONLY)
        path = urlparse(path).path if path.startswith("fifo://") else path
        holder = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._held.append(holder)
        writer = os.open(path, os.O_WRONLY)
        self._child.append(writer)
        return writer

    def _open_log_file(self, path: str) -> tuple[int, int]:
        os.makedirs(os.path.dirname(path) or "/", mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._child.append(fd)
        return fd, fd
