"""Claiming a socket path: a live owner keeps it, a dead one's file is replaced."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pywasmd.shim.unixsock import detach_stdio, listen


def test_live_owner_keeps_the_path_and_a_stale_file_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "d" / "s.sock")
    first = listen(path, 0o700, 8)
    assert first is not None
    assert (os.stat(path).st_mode & 0o777, os.stat(os.path.dirname(path)).st_mode & 0o777) == (
        0o600,
        0o700,
    )
    assert listen(path, 0o700, 8) is None
    first.close()  # the file stays, nobody answers: stale
    second = listen(path, 0o700, 8)
    assert second is not None
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    client.close()
    second.close()


def test_detach_keeps_only_the_one_fd(tmp_path: Path) -> None:
    keep_r, keep_w = os.pipe()
    other_r, other_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            detach_stdio(keep_w)
            os.write(keep_w, b"%d" % sum(1 for fd in (other_r, other_w) if _is_open(fd)))
            os._exit(0 if os.readlink("/proc/self/fd/1") == "/dev/null" else 3)
        finally:
            os._exit(4)
    os.close(keep_w)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.read(keep_r, 16) == b"0"
    for fd in (keep_r, other_r, other_w):
        os.close(fd)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
