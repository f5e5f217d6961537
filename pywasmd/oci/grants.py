"""OCI ``mounts[]`` -> WASI grants: one preopen per mount, read-only when asked.

WASI grants directories, so each kind of mount becomes a directory the guest is
given at the mount's destination:

    bind/rbind of a directory   the directory itself
    bind of a single file       a private directory holding only that file (bound in)
    tmpfs                       a private tmpfs, size-capped, gone with the container

Mounts every client adds by default (/proc, /sys, /dev..., Docker's
/etc/hosts-style files) mean nothing to a guest and are left out without a word;
anything else that cannot be granted is refused, naming the mount.  Pure: the
only look at the host is through ``kind_of``, which tests replace.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable
from dataclasses import dataclass

from pywasmd.errors import InvalidArgument
from pywasmd.oci.spec import Mount

KERNEL_MOUNT_TYPES = frozenset(
    {"proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "securityfs", "debugfs"}
)
KERNEL_DESTINATIONS = frozenset(
    {
        "/proc",
        "/sys",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys/fs/cgroup",
        "/etc/resolv.conf",
        "/etc/hostname",
        "/etc/hosts",
        "/run/secrets",
    }
)
BIND_TYPES = frozenset({"bind", "rbind", "none", ""})
DEFAULT_TMPFS_BYTES = 64 << 20
#: Each tmpfs is a real mount on the host: a bound on how many one container may ask for.
MAX_TMPFS_MOUNTS = 64

#: "dir", "file", "missing" or "other" for a host path.
KindOf = Callable[[str], str]


@dataclass(frozen=True)
class Preopen:
    host: str
    guest: str
    readonly: bool = False


@dataclass(frozen=True)
class HostSetup:
    """Something the shim prepares on the host before the guest starts (and removes after)."""

    kind: str  # "tmpfs" or "file"
    target: str  # the private directory that is preopened
    source: str = ""  # "file": the host file bound into ``target``
    name: str = ""  # "file": its name inside ``target``
    size: int = 0  # "tmpfs": the cap in bytes
    readonly: bool = False


def host_kind(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "other"


def is_kernel_mount(mount: Mount) -> bool:
    return mount.type in KERNEL_MOUNT_TYPES or mount.destination in KERNEL_DESTINATIONS


def parse_size(text: str) -> int:
    """tmpfs ``size=`` values: bytes, or with a k/m/g suffix."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower()
    scale = units.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in units else text
    if not digits.isdigit() or int(digits) <= 0:
        raise ValueError(text)
    return int(digits) * scale


def grant_mounts(
    mounts: tuple[Mount, ...], scratch: str, kind_of: KindOf = host_kind
) -> tuple[tuple[Preopen, ...], tuple[HostSetup, ...]]:
    """Preopens for ``mounts``, and what must exist on the host for them (under ``scratch``)."""
    preopens: list[Preopen] = []
    setups: list[HostSetup] = []
    tmpfs = sum(1 for m in mounts if m.type == "tmpfs" and not is_kernel_mount(m))
    if tmpfs > MAX_TMPFS_MOUNTS:
        raise InvalidArgument(
            f"mounts: {tmpfs} tmpfs mounts asked for; pywasm mounts at most {MAX_TMPFS_MOUNTS} "
            "per container"
        )
    for index, mount in enumerate(mounts):
        if is_kernel_mount(mount):
            continue
        where = f"mounts[{index}] ({mount.destination})"
        guest = posixpath.normpath(mount.destination)
        if not guest.startswith("/"):
            raise InvalidArgument(f"{where}: the destination must be an absolute path")
        options = set(mount.options)
        readonly = "ro" in options
        private = os.path.join(scratch, f"m{index}")
        if mount.type == "tmpfs":
            size = _tmpfs_size(mount.options, where)
            setups.append(HostSetup("tmpfs", private, size=size, readonly=readonly))
            preopens.append(Preopen(private, guest, readonly))
            continue
        is_bind = mount.type in ("bind", "rbind") or bool(options & {"bind", "rbind"})
        if mount.type not in BIND_TYPES or not is_bind:
            raise InvalidArgument(
                f"{where}: a {mount.type or 'plain'} mount has no WASI meaning; pywasm grants "
                "bind mounts (directories or files) and tmpfs"
            )
        kind = kind_of(mount.source)
        if kind == "dir":
            preopens.append(Preopen(mount.source, guest, readonly))
        elif kind == "file":
            name = posixpath.basename(guest)
            setups.append(
                HostSetup("file", private, source=mount.source, name=name, readonly=readonly)
            )
            preopens.append(Preopen(private, posixpath.dirname(guest), readonly))
        elif kind == "missing":
            raise InvalidArgument(f"{where}: source {mount.source!r} does not exist on the host")
        else:
            raise InvalidArgument(
                f"{where}: source {mount.source!r} is a device, socket or pipe; WASI grants "
                "only directories and regular files"
            )
    return tuple(preopens), tuple(setups)


def _tmpfs_size(options: tuple[str, ...], where: str) -> int:
    for option in options:
        if option.startswith("size="):
            try:
                return parse_size(option[5:])
            except ValueError:
                raise InvalidArgument(
                    f"{where}: tmpfs {option!r} is not a size; use e.g. size=64m"
                ) from None
    return DEFAULT_TMPFS_BYTES
