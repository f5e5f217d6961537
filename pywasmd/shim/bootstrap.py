"""The ``start`` and ``delete`` subcommands: short-lived, run on every container.

Both import next to nothing: containerd waits for them on every start and stop.
``start``'s stdout *and* stderr are read together as the address, so nothing
else may be printed there.
"""

from __future__ import annotations

import os
import sys
import time

from pywasmd import paths
from pywasmd.shim.cli import ShimArgs

# Not from typing: importing typing costs ``start`` and ``delete`` 20 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket

# ``delete`` must stay cheap: socket, hashlib and signal (enum) are imported only by ``start``.
SIGKILL = 9

GROUP_ANNOTATIONS = ("io.kubernetes.cri.sandbox-id", "pywasm.io/group")


def grouping_key(bundle: str, container_id: str) -> str:
    """Containers of one pod share a shim; everything else gets its own."""
    try:
        with open(paths.in_bundle(bundle, paths.CONFIG), "rb") as f:
            raw = f.read()
    except OSError:
        return container_id
    # Parsing JSON costs ``start`` more (the ``json`` import) than everything else it does.
    if not any(key.encode() in raw for key in GROUP_ANNOTATIONS):
        return container_id
    import json

    try:
        annotations = json.loads(raw).get("annotations") or {}
    except (ValueError, AttributeError):
        return container_id
    if not isinstance(annotations, dict):  # not an OCI config: no group, and no traceback
        return container_id
    for key in GROUP_ANNOTATIONS:
        if annotations.get(key):
            return str(annotations[key])
    return container_id


def socket_address(grpc_address: str, namespace: str, key: str) -> str:
    """Same formula as containerd's shim library, so tools find our sockets."""
    from _sha256 import sha256  # type: ignore[import-not-found]  # hashlib loads OpenSSL: ~6 ms

    digest = sha256(os.path.join(grpc_address, namespace, key).encode()).hexdigest()
    return f"unix://{paths.SOCKET_ROOT}/{digest}"


def _spawn_server(listener: _socket.socket, args: ShimArgs, bundle: str, path: str) -> None:
    """Hand ``listener`` to a server forked by the zygote, or to one of our own."""
    from pywasmd.shim import zygote

    args = ShimArgs.from_fields({**args.to_fields(), "action": "serve", "bundle": bundle})
    if zygote.request_server(listener.fileno(), args, path) is not None:
        return
    sys.stdout.flush()
    if os.fork() == 0:
        os.setsid()
        from pywasmd.shim.unixsock import detach_stdio

        detach_stdio(listener.fileno())
        try:
            if sys.flags.no_site:  # the fast wrapper runs `start` with -S; the server needs site
                import site

                site.main()
            import socket

            from pywasmd.shim.serve import serve

            serve(socket.socket(fileno=listener.detach()), args, path)
        finally:
            os._exit(0)
    zygote.spawn_zygote()


def start(args: ShimArgs) -> int:
    bundle = args.bundle or os.getcwd()
    address = socket_address(args.address, args.namespace, grouping_key(bundle, args.id))
    path = address.removeprefix("unix://")
    try:
        from pywasmd.shim.unixsock import listen  # not on the ``delete`` path

        listener = listen(path, 0o711, 128)
    except OSError as exc:
        sys.stdout.write(f"pywasm shim: cannot listen on {path}: {exc}")
        return 1
    if listener is not None:
        _spawn_server(listener, args, bundle, path)
        listener.close()
    paths.write_address(bundle, address)
    sys.stdout.write(address)
    sys.stdout.flush()
    return 0


# --- delete ------------------------------------------------------------------------


def encode_delete_response(pid: int, exit_status: int, exited_at_ns: int) -> bytes:
    """DeleteResponse{1 pid, 2 exit_status, 3 exited_at}, encoded by hand.

    ``delete`` runs on every container teardown; importing protobuf for three
    fields would cost more than the whole subcommand.  A unit test pins this
    against the generated class.
    """
    # protobuf's varint; imported here, as ``start`` needs none
    from pywasmd.leb128 import encode as _varint

    seconds, nanos = divmod(exited_at_ns, 1_000_000_000)
    stamp = b"\x08" + _varint(seconds) + (b"\x10" + _varint(nanos) if nanos else b"")
    body = b""
    if pid:
        body += b"\x08" + _varint(pid)
    if exit_status:
        body += b"\x10" + _varint(exit_status)
    return body + b"\x1a" + _varint(len(stamp)) + stamp


def _is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"pywasmd.shim.worker" in f.read()
    except OSError:
        return False


def _kill_worker(pid: int) -> None:
    if not _is_worker(pid):
        return
    try:
        os.killpg(pid, SIGKILL)
    except OSError:
        try:
            os.kill(pid, SIGKILL)
        except OSError:
            return
    deadline = time.monotonic() + 2.0
    while _is_worker(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _runc_delete(bundle: str, id: str) -> None:
    """A Linux container that the server could not delete: ``runc delete --force``.

    The server removes ``pywasm-runc`` once runc deleted the container, so this runs only
    when the server died first.
    """
    root = paths.read_runc_root(bundle)
    runc = paths.find_binary("runc") if root else None
    if runc is None:
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        child = os.posix_spawn(
            runc,
            [runc, "--root", root, "delete", "--force", id],
            {"PATH": paths.DEFAULT_PATH},
            file_actions=[(os.POSIX_SPAWN_DUP2, null, fd) for fd in (0, 1, 2)],
        )
        os.waitpid(child, 0)
    except OSError:
        pass
    finally:
        os.close(null)


def _remove_cgroup(bundle: str) -> None:
    path = paths.read_cgroup(bundle)
    if not path:
        return
    for d in paths.cgroup_dirs(path):
        try:
            os.rmdir(d)
        except OSError:
            pass


def _remove_stale_socket(bundle: str) -> None:
    """The socket of a server that died (SIGKILL) stays behind: remove it if nobody listens.

    A live server (another container of the group) answers the probe and keeps its socket.
    """
    path = paths.read_socket_path(bundle)
    if not path:
        return
    import _socket  # the C module: ``socket`` (and its enums) costs ``delete`` more

    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        try:
            os.unlink(path)
        except OSError:
            pass
    except OSError:
        pass
    finally:
        probe.close()


def delete(args: ShimArgs) -> int:
    """Clean up one container when the shim can no longer be asked to; idempotent."""
    bundle = args.bundle or os.getcwd()
    pid = paths.read_init_pid(bundle)
    if pid > 0:
        _kill_worker(pid)
    _runc_delete(bundle, args.id)
    _remove_cgroup(bundle)
    if os.path.isdir(paths.in_bundle(bundle, paths.SCRATCH)):
        from pywasmd.shim.hostsetup import release

        release(bundle)
    rootfs = paths.in_bundle(bundle, paths.ROOTFS)
    if os.path.isdir(rootfs):
        from pywasmd.shim.mounts import unmount_all

        unmount_all(rootfs)
    _remove_stale_socket(bundle)
    sys.stdout.buffer.write(encode_delete_response(pid, 128 + SIGKILL, time.time_ns()))
    sys.stdout.flush()
    return 0
