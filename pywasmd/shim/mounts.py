"""Mounting the rootfs mounts containerd hands to Create, and undoing it."""

from __future__ import annotations

import os
from collections.abc import Iterable

from pywasmd.errors import InvalidArgument
from pywasmd.mountflags import FLAG_OPTIONS as _FLAGS
from pywasmd.mountflags import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOSUID,
    MS_RDONLY,
    MS_REMOUNT,
)

# Not from typing, and no dataclasses: ``delete`` imports this module on every teardown.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes


class RootfsMount:
    __slots__ = ("type", "source", "options")

    def __init__(self, type: str, source: str, options: tuple[str, ...]) -> None:
        self.type = type
        self.source = source
        self.options = options


def parse_options(options: Iterable[str]) -> tuple[int, str]:
    """containerd's convention: known words are flags, the rest is fs data."""
    flags = 0
    data: list[str] = []
    for option in options:
        if option in _FLAGS:
            set_, clear = _FLAGS[option]
            flags = (flags | set_) & ~clear
        else:
            data.append(option)
    return flags, ",".join(data)


def _libc() -> ctypes.CDLL:
    import ctypes  # only when something is really mounted: ``delete`` checks first

    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    import ctypes

    rc = _libc().mount(
        source.encode(), target.encode(), fstype.encode(), flags, data.encode() if data else None
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise InvalidArgument(
            f"cannot mount {fstype or 'bind'} {source!r} on {target!r}: {os.strerror(err)}"
        )


def mount_all(mounts: Iterable[RootfsMount], target: str) -> None:
    done = False
    for m in mounts:
        flags, data = parse_options(m.options)
        fstype = "" if flags & MS_BIND else m.type
        _mount(m.source, target, fstype, flags & ~MS_RDONLY if flags & MS_BIND else flags, data)
        done = True
        if flags & MS_BIND and flags & MS_RDONLY:
            # A bind mount ignores MS_RDONLY until it is remounted.
            _mount("", target, "", flags | MS_REMOUNT, "")
    if not done:
        return


def is_mountpoint(path: str) -> bool:
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            return any(line.split()[4] == real for line in f)
    except OSError:
        return False


def unmount_all(target: str) -> None:
    """Unmount everything stacked on ``target``; quietly a no-op when nothing is."""
    for _ in range(16):
        if not is_mountpoint(target):
            return
        libc = _libc()
        if libc.umount2(target.encode(), 0) != 0:
            libc.umount2(target.encode(), MNT_DETACH)


def mounts_under(prefix: str) -> list[str]:
    """Mount points at or below ``prefix``, deepest first."""
    real = os.path.realpath(prefix)
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                point = line.split()[4].replace("\\040", " ")
                if point == real or point.startswith(real.rstrip("/") + "/"):
                    found.append(point)
    except OSError:
        return []
    return sorted(set(found), key=len, reverse=True)


def unmount_under(prefix: str) -> None:
    for _ in range(4):
        points = mounts_under(prefix)
        if not points:
            return
        libc = _libc()
        for point in points:
            if libc.umount2(point.encode(), 0) != 0:
                libc.umount2(point.encode(), MNT_DETACH)


def mount_tmpfs(target: str, size: int, readonly: bool) -> None:
    flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if readonly else 0)
    _mount("tmpfs", target, "tmpfs", flags, f"size={size},mode=1777")


def bind_file(source: str, target: str, readonly: bool) -> None:
    _mount(source, target, "", MS_BIND, "")
    if readonly:
        _mount("", target, "", MS_BIND | MS_REMOUNT | MS_RDONLY, "")
