"""What ``start``, the zygote and the servers they fork share: claiming a unix socket path
unless a live process already serves it, and leaving the parent's file descriptors behind.

Standard library C modules only (``_socket``, not ``socket``, which costs ``start`` ~5 ms of
enum and selectors imports).
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket


def listen(path: str, dir_mode: int, backlog: int) -> _socket.socket | None:
    """A socket listening at ``path`` (mode 0600), or None when a live process answers there.

    A socket file nobody answers on is stale (its process died) and is replaced.
    """
    import _socket

    os.makedirs(os.path.dirname(path), mode=dir_mode, exist_ok=True)
    for _ in range(2):
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            try:
                probe.connect(path)
                return None
            except OSError:
                os.unlink(path)
            finally:
                probe.close()
            continue
        os.chmod(path, 0o600)
        sock.listen(backlog)
        return sock
    raise OSError(errno.EADDRINUSE, f"cannot bind {path}")


def detach_stdio(keep: int = -1) -> None:
    """fds 0-2 to /dev/null and every other fd closed but ``keep``: nothing of the process
    that started us (containerd's pipes, its sockets) stays open in a long-lived one."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    if keep > 2:
        os.closerange(3, keep)
        os.closerange(keep + 1, 65536)
    else:
        os.closerange(3, 65536)
