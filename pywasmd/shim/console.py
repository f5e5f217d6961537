"""A terminal for a container (``process.terminal``: ``ctr run -t``, ``docker run -t``).

The guest gets the slave side of a fresh pty as stdin, stdout and stderr (and as
its controlling terminal); the shim relays between the master side and the
client's FIFOs: stdin FIFO -> master, master -> stdout FIFO.  There is no
stderr stream with a terminal, as with runc.  ``ResizePty`` sets the window size.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import termios

from pywasmd.shim.launcher import ChildStdio


def _nonblocking(fd: int) -> int:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    return fd


class TerminalIO:
    def __init__(self, stdin: str, stdout: str, stderr: str) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._master = -1
        self._slave = -1
        self._in = -1  # stdin FIFO, read side
        self._hold = -1  # stdin FIFO, a write side held until CloseIO
        self._out = -1  # stdout FIFO, write side
        self._out_hold = -1  # stdout FIFO, a read side so the guest never sees EPIPE
        self._pending = b""
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> ChildStdio:
        try:
            self._master, self._slave = os.openpty()
            _nonblocking(self._master)
            if self.stdin:
                self._in = os.open(self.stdin, os.O_RDONLY | os.O_NONBLOCK)
                self._hold = os.open(self.stdin, os.O_WRONLY | os.O_NONBLOCK)
            if self.stdout:
                self._out_hold = os.open(self.stdout, os.O_RDONLY | os.O_NONBLOCK)
                self._out = _nonblocking(os.open(self.stdout, os.O_WRONLY))
        except BaseException:
            self.close()
            raise
        return ChildStdio(self._slave, self._slave, self._slave)

    def after_spawn(self) -> None:
        os.close(self._slave)
        self._slave = -1
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._master, self._from_guest)
        if self._in >= 0:
            self._loop.add_reader(self._in, self._to_guest)

    def resize(self, width: int, height: int) -> None:
        if self._master >= 0:
            fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def close_stdin(self) -> None:
        if self._hold >= 0:
            os.close(self._hold)
            self._hold = -1

    def _to_guest(self) -> None:
        try:
            data = os.read(self._in, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            # Every writer is gone: send the terminal's end-of-file character.
            assert self._loop is not None
            self._loop.remove_reader(self._in)
            self._write_master(b"\x04")
            return
        self._write_master(data)

    def _write_master(self, data: bytes) -> None:
        try:
            os.write(self._master, data)
        except OSError:
            pass

    def _from_guest(self) -> None:
        try:
            data = os.read(self._master, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: the guest closed its side
        if not data:
            assert self._loop is not None
            self._loop.remove_reader(self._master)
            return
        self._emit(data)

    def _emit(self, data: bytes) -> None:
        if self._out < 0:
            return
        data = self._pending + data
        try:
            written = os.write(self._out, data)
        except BlockingIOError:
            written = 0
        except OSError:
            written = len(data)
        # A client that does not read loses output beyond 1 MiB rather than stall the shim.
        self._pending = data[written:][-(1 << 20) :]

    def drain(self) -> None:
        """At guest exit: pass on what is still in the pty, then end the output stream."""
        while self._master >= 0:
            try:
                data = os.read(self._master, 65536)
            except OSError:
                break
            if not data:
                break
            self._emit(data)
        if self._pending and self._out >= 0:
            fcntl.fcntl(
                self._out, fcntl.F_SETFL, fcntl.fcntl(self._out, fcntl.F_GETFL) & ~os.O_NONBLOCK
            )
            try:
                os.write(self._out, self._pending)
            except OSError:
                pass
            self._pending = b""

    def close(self) -> None:
        if self._loop is not None:
            for fd in (self._master, self._in):
                if fd >= 0:
                    self._loop.remove_reader(fd)
        if self._master >= 0:
            self.drain()
        for name in ("_master", "_slave", "_in", "_hold", "_out", "_out_hold"):
            fd = getattr(self, name)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, name, -1)
