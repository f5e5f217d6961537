"""Every file name and root that two pywasmd processes agree on, and nothing else.

The server writes these files into a container's bundle; ``delete`` (a fresh process,
run when the server may be gone) reads them to clean up.  Both sides import the names
from here, so the contract is written once.  Standard library only, and only ``os``:
``start`` and ``delete`` import this on every container and must stay cheap.

The bundle contract (paths relative to the bundle directory containerd passes)::

    config.json        OCI runtime config (containerd writes it)
    rootfs/            the container's root; the server mounts ``Create``'s rootfs mounts here
    address            the shim's ttrpc address (``start`` writes it)
    log                FIFO containerd reads the shim's log from
    init.pid           pid of the container's init: the Wasm worker, or runc's init
    pywasm-cgroup      the cgroup the server created (absent when it made none)
    pywasm-mounts/     scratch dir of tmpfs and single-file grants, mounts under it
    pywasm-runc        runc's --root for a Linux container (absent once runc deleted it)
    pywasm-runc.log    runc's JSON log
"""

from __future__ import annotations

import os

# --- names inside a bundle -----------------------------------------------------------

CONFIG = "config.json"
ROOTFS = "rootfs"
ADDRESS = "address"
LOG_FIFO = "log"
INIT_PID = "init.pid"
CGROUP = "pywasm-cgroup"
SCRATCH = "pywasm-mounts"
RUNC_ROOT = "pywasm-runc"
RUNC_LOG = "pywasm-runc.log"

# --- roots on the host ----------------------------------------------------------------

#: Where containerd's shim library puts shim sockets; ``start`` binds ours there.
SOCKET_ROOT = "/run/containerd/s"
#: runc state of the Linux containers a pywasm shim runs, per namespace; apart from the
#: runc shim's, so the two never see each other's containers.
RUNC_STATE_ROOT = "/run/pywasm/runc"
#: The zygote's socket directory.
ZYGOTE_DIR = "/run/pywasm"
CGROUP_ROOT = "/sys/fs/cgroup"
#: The cgroup v1 hierarchies a container's cgroup is made in (and removed from).
CGROUP_V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer", "devices")
#: Searched for runc, and the PATH of processes the shim spawns and of a container whose
#: config sets none (the same default runc and Docker use).
BIN_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
DEFAULT_PATH = ":".join(BIN_DIRS)


def in_bundle(bundle: str, name: str) -> str:
    return os.path.join(bundle, name)


def find_binary(name: str) -> str | None:
    """``name`` in :data:`BIN_DIRS`, whatever the caller's own PATH says."""
    for d in BIN_DIRS:
        path = os.path.join(d, name)
        if os.access(path, os.X_OK):
            return path
    return None


def _read(bundle: str, name: str) -> str:
    """The file's stripped text; "" when it is missing or unreadable."""
    try:
        with open(os.path.join(bundle, name), encoding="utf-8") as f:
            return f.read().strip()
    except (OSError, ValueError):
        return ""


def _write(bundle: str, name: str, text: str) -> None:
    with open(os.path.join(bundle, name), "w", encoding="utf-8") as f:
        f.write(text)


def _remove(bundle: str, name: str) -> None:
    try:
        os.unlink(os.path.join(bundle, name))
    except OSError:
        pass


def write_init_pid(bundle: str, pid: int) -> None:
    _write(bundle, INIT_PID, str(pid))


def read_init_pid(bundle: str) -> int:
    """The init pid, or 0 when there is none."""
    text = _read(bundle, INIT_PID)
    return int(text) if text.isdigit() else 0


def write_cgroup(bundle: str, path: str) -> None:
    _write(bundle, CGROUP, path)


def read_cgroup(bundle: str) -> str:
    """The cgroup path relative to the cgroup root, or "" when absent or not a plain path."""
    path = _read(bundle, CGROUP).lstrip("/")
    return "" if ".." in path.split("/") else path


def cgroup_dirs(path: str, root: str = CGROUP_ROOT) -> list[str]:
    """Every directory a cgroup at ``path`` can have: v2's one, then each v1 controller's."""
    rel = path.lstrip("/")
    return [os.path.join(root, rel)] + [os.path.join(root, c, rel) for c in CGROUP_V1_CONTROLLERS]


def write_runc_root(bundle: str, root: str) -> None:
    _write(bundle, RUNC_ROOT, root)


def read_runc_root(bundle: str) -> str:
    """runc's --root for this bundle, or "" when absent or outside :data:`RUNC_STATE_ROOT`."""
    root = _read(bundle, RUNC_ROOT)
    if not root.startswith(RUNC_STATE_ROOT + "/") or ".." in root.split("/"):
        return ""
    return root


def forget_runc_root(bundle: str) -> None:
    _remove(bundle, RUNC_ROOT)


def write_address(bundle: str, address: str) -> None:
    _write(bundle, ADDRESS, address)


def read_socket_path(bundle: str) -> str:
    """The shim's socket path from ``address``, or "" when it is not under SOCKET_ROOT."""
    path = _read(bundle, ADDRESS).removeprefix("unix://")
    return path if os.path.dirname(path) == SOCKET_ROOT else ""
