"""The node's fork-server: shim servers for new containers, imports already paid.

A shim server needs asyncio, protobuf, the generated API and the engine: about
200 ms of imports, paid on every container start if each server began as a
fresh interpreter.  The zygote imports all of it once and forks a ready server
for each ``start``, which then forks its workers with the engine loaded.

``start`` talks to it over a root-only unix socket: one request, the listening
socket of the new shim passed as an fd, one reply::

    start -> zygote   length(4 bytes) + body, SCM_RIGHTS [listener]
                      body = NUL-separated: PROTOCOL, N, N x name=value (the ShimArgs
                             fields and socket_path), then the environment as KEY=VALUE
    zygote -> start   ok <pid> | stale | err <message>

``stale`` means the zygote's code is older than the files on disk: it exits, and
``start`` serves this container itself and spawns a fresh zygote.  The zygote
holds no container state, so losing it costs only speed.  It exits after
``IDLE_SECONDS`` without a request.
"""

from __future__ import annotations

import os
import sys

from pywasmd import paths

# ``start`` imports this module for the client side: ``socket`` (enum, selectors), ``signal``
# and ``hashlib`` (OpenSSL) would cost it ~17 ms, so the client uses ``_socket`` and
# ``_sha256`` and the zygote side imports the rest where it needs it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

    from pywasmd.shim.cli import ShimArgs

IDLE_SECONDS = 900.0
PROTOCOL = b"pywasm-zygote-2"
#: The request field that is not a ShimArgs field: where the listener is bound.
SOCKET_PATH = "socket_path"


def socket_path() -> str:
    """One zygote per installed copy of pywasmd: a zygote serves only its own code."""
    override = os.environ.get("PYWASM_ZYGOTE_SOCKET")
    if override:
        return override
    return default_socket_path()


def default_socket_path() -> str:
    """The socket without ``PYWASM_ZYGOTE_SOCKET``; the compiled ``start`` has it built in."""
    from _sha256 import sha256  # type: ignore[import-not-found]

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return f"{paths.ZYGOTE_DIR}/zygote-{sha256(root.encode()).hexdigest()[:16]}.sock"


def enabled() -> bool:
    return os.environ.get("PYWASM_ZYGOTE", "on") != "off"


# --- the client side, used by ``start`` (stdlib only, nothing heavy) ------------------


def _pairs(items: dict[str, str]) -> list[bytes]:
    return [f"{k}={v}".encode() for k, v in items.items() if "\0" not in k + v]


def encode_request(args: ShimArgs, listen_path: str, env: dict[str, str]) -> bytes:
    fields = _pairs({**args.to_fields(), SOCKET_PATH: listen_path})
    body = b"\0".join([PROTOCOL, str(len(fields)).encode(), *fields, *_pairs(env)])
    return len(body).to_bytes(4, "big") + body


def decode_request(body: bytes) -> tuple[ShimArgs, str, dict[str, str]]:
    """The server's arguments, its socket path and its environment."""
    from pywasmd.shim.cli import ShimArgs

    parts = body.split(b"\0")
    if len(parts) < 2 or parts[0] != PROTOCOL:
        raise ValueError("not a pywasm zygote request (or one of another pywasm version)")
    count = int(parts[1])
    fields = dict(p.decode().partition("=")[::2] for p in parts[2 : 2 + count])
    env = dict(p.decode().partition("=")[::2] for p in parts[2 + count :] if p)
    if not fields.get(SOCKET_PATH) or not fields.get("bundle"):
        raise ValueError("request needs a bundle and a socket_path")
    return ShimArgs.from_fields(fields), fields[SOCKET_PATH], env


def request_server(listener_fd: int, args: ShimArgs, listen_path: str) -> int | None:
    """Ask a running zygote to serve the listening socket ``listener_fd``; the server's pid,
    or None if no zygote."""
    if not enabled():
        return None
    import _socket

    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        conn.settimeout(5.0)
        conn.connect(socket_path())
        payload = encode_request(args, listen_path, dict(os.environ))
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, listener_fd.to_bytes(4, sys.byteorder))]
        conn.sendmsg([payload], rights)
        reply = b""
        while chunk := conn.recv(256):
            reply += chunk
    except OSError:
        return None
    finally:
        conn.close()
    if reply.startswith(b"ok "):
        return int(reply[3:])
    return None


def spawn_zygote() -> None:
    """Start a zygote in the background for later containers; never waits for it."""
    if not enabled() or os.fork() != 0:
        return
    try:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        from pywasmd.shim.unixsock import detach_stdio

        detach_stdio()
        # A clean environment: servers get theirs from each request, and the zygote must not
        # look like it belongs to the containerd that happened to start it.
        env = {
            "PATH": paths.DEFAULT_PATH,
            # setproctitle can only reuse the zygote's argv and environment area: room for a
            # server's title, whose CRI pod id (64 hex) and address would not fit otherwise.
            "PYWASM_TITLE_ROOM": "-" * 240,
        }
        if os.environ.get("PYWASM_ZYGOTE_SOCKET"):
            # The zygote must listen where ``start`` will look for it.
            env["PYWASM_ZYGOTE_SOCKET"] = os.environ["PYWASM_ZYGOTE_SOCKET"]
        os.execve(sys.executable, [sys.executable, "-I", "-m", "pywasmd.shim.zygote"], env)
    finally:
        os._exit(127)


# --- the zygote itself --------------------------------------------------------------


def _preload() -> dict[str, float]:
    """Import what servers and workers need; remember the files for staleness checks."""
    import asyncio  # noqa: F401
    import hashlib  # noqa: F401
    import logging  # noqa: F401

    import setproctitle  # noqa: F401
    import yaml  # noqa: F401

    import pywasmd.engines.wasmtime  # noqa: F401
    import pywasmd.shim.artifacts  # noqa: F401
    import pywasmd.shim.events  # noqa: F401
    import pywasmd.shim.serve  # noqa: F401
    import pywasmd.shim.server  # noqa: F401
    import pywasmd.shim.service  # noqa: F401
    import pywasmd.shim.worker  # noqa: F401

    stamps: dict[str, float] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and "pywasmd" in path:
            try:
                stamps[path] = os.stat(path).st_mtime
            except OSError:
                pass
    return stamps


def _stale(stamps: dict[str, float]) -> bool:
    for path, mtime in stamps.items():
        try:
            if os.stat(path).st_mtime != mtime:
                return True
        except OSError:
            return True
    return False


def _bind(path: str) -> socket.socket | None:
    import socket

    from pywasmd.shim.unixsock import listen

    raw = listen(path, 0o700, 64)
    return None if raw is None else socket.socket(fileno=raw.detach())


def _read_request(conn: socket.socket) -> tuple[bytes, list[int]]:
    import socket

    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 4)
    if len(data) < 4:
        raise ValueError("short request")
    size = int.from_bytes(data[:4], "big")
    body = data[4:]
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ValueError("truncated request")
        body += chunk
    return body, fds


def _serve_in_child(listener_fd: int, args: ShimArgs, path: str, env: dict[str, str]) -> None:
    import socket

    from pywasmd.shim.serve import serve
    from pywasmd.shim.unixsock import detach_stdio

    os.setsid()
    os.chdir(args.bundle)
    os.environ.clear()
    os.environ.update(env)
    detach_stdio(listener_fd)
    listener = socket.socket(fileno=listener_fd)
    serve(listener, args, path)


def _handle(conn: socket.socket, stamps: dict[str, float]) -> bool:
    """Serve one request; False when this zygote must go away."""
    import signal

    fds: list[int] = []
    try:
        body, fds = _read_request(conn)
        # Checked first: a newer ``start`` may speak a request format this code does not know.
        if _stale(stamps):
            conn.sendall(b"stale")
            return False
        args, path, env = decode_request(body)
        if len(fds) != 1:
            raise ValueError("request needs one listener fd")
        pid = os.fork()
        if pid == 0:
            try:
                conn.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _serve_in_child(fds[0], args, path, env)
            finally:
                os._exit(0)
        conn.sendall(b"ok %d" % pid)
    except (OSError, ValueError) as exc:
        try:
            conn.sendall(b"err " + str(exc).encode())
        except OSError:
            pass
    finally:
        for fd in fds:
            os.close(fd)
        conn.close()
    return True


def main() -> None:
    import signal

    import setproctitle

    setproctitle.setproctitle("pywasm-zygote (python -m pywasmd.shim.zygote)")
    stamps = _preload()
    path = socket_path()
    sock = _bind(path)
    if sock is None:
        return
    # Servers are reaped by the kernel: the zygote never waits for them.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    sock.settimeout(IDLE_SECONDS)
    try:
        while True:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                break
            conn.settimeout(5.0)
            if not _handle(conn, stamps):
                break
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        sock.close()


if __name__ == "__main__":
    main()
