"""A container's cgroup (``linux.cgroupsPath``), cgroup v1 or v2, as runc would make it.

The worker joins it before the guest runs, so the kernel accounts and limits
everything the container does (memory, CPU, pids) and ``Stats`` can report it.
Failures to set a cgroup up are logged, not fatal: the engine's own memory cap
still holds.
"""

from __future__ import annotations

import _thread
import errno
import logging
import os
import time

from pywasmd.oci.spec import Resources
from pywasmd.paths import CGROUP_ROOT as ROOT
from pywasmd.paths import CGROUP_V1_CONTROLLERS

log = logging.getLogger("pywasmd.cgroups")
#: How long removing a cgroup waits for processes that are dying in it.
_BUSY_WAIT = 0.25


def is_v2(root: str = ROOT) -> bool:
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def normalize(path: str) -> str:
    """``/docker/<id>`` stays; systemd's ``slice:prefix:name`` becomes its scope path."""
    if path.count(":") == 2 and not path.startswith("/"):
        slice_, prefix, name = path.split(":")
        slice_ = slice_ or "system.slice"
        return f"/{slice_}/{prefix}-{name}.scope"
    return "/" + path.strip("/")


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


#: What runc (1.1) appends to every container's device rules: mknod of any node, the default
#: devices, ptys and tun.
RUNC_ALLOWED_DEVICES = (
    (True, "c", -1, -1, "m"),
    (True, "b", -1, -1, "m"),
    (True, "c", 1, 3, "rwm"),
    (True, "c", 1, 8, "rwm"),
    (True, "c", 1, 7, "rwm"),
    (True, "c", 5, 0, "rwm"),
    (True, "c", 1, 5, "rwm"),
    (True, "c", 1, 9, "rwm"),
    (True, "c", 136, -1, "rwm"),
    (True, "c", 5, 2, "rwm"),
    (True, "c", 10, 200, "rwm"),
)


def _any(number: int) -> str:
    return "*" if number < 0 else str(number)


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except OSError:
        return ""


def _in_use(directory: str) -> bool:
    """An existing cgroup with member processes or child cgroups."""
    try:
        with os.scandir(directory) as entries:
            if any(e.is_dir(follow_symlinks=False) for e in entries):
                return True
    except OSError:
        return False
    return bool(_read(os.path.join(directory, "cgroup.procs")).strip())


class Cgroup:
    def __init__(self, path: str, root: str = ROOT) -> None:
        self.path = normalize(path)
        self.root = root
        self.v2 = is_v2(root)
        self.shared = False

    def dirs(self) -> list[str]:
        rel = self.path.lstrip("/")
        if self.v2:
            return [os.path.join(self.root, rel)]
        return [
            os.path.join(self.root, c, rel)
            for c in CGROUP_V1_CONTROLLERS
            if os.path.isdir(os.path.join(self.root, c))
        ]

    def _dir(self, controller: str) -> str:
        rel = self.path.lstrip("/")
        return os.path.join(self.root, rel) if self.v2 else os.path.join(self.root, controller, rel)

    def create(self, res: Resources) -> None:
        if any(_in_use(d) for d in self.dirs()):
            # A cgroup others live in (a parent such as /default, or another container's) is
            # joined as it is: its limits are not ours to change, nor is it ours to remove.
            self.shared = True
            log.warning(
                "cgroup %s is in use by others: joining it without changing its limits", self.path
            )
            return
        for d in self.dirs():
            os.makedirs(d, exist_ok=True)
        if self.v2:
            self._apply_v2(res)
        else:
            self._apply_v1(res)

    def update(self, res: Resources) -> None:
        """New limits for a running container (Update: ``docker update``, kubelet resize)."""
        if self.v2:
            self._apply_v2(res)
        else:
            self._apply_v1(res)

    def _apply_v1(self, res: Resources) -> None:
        mem, cpu, pids = self._dir("memory"), self._dir("cpu"), self._dir("pids")
        if res.memory_limit:
            _write(f"{mem}/memory.limit_in_bytes", str(res.memory_limit))
        if res.cpu_shares:
            _write(f"{cpu}/cpu.shares", str(res.cpu_shares))
        if res.cpu_period:
            _write(f"{cpu}/cpu.cfs_period_us", str(res.cpu_period))
        if res.cpu_quota:
            _write(f"{cpu}/cpu.cfs_quota_us", str(res.cpu_quota))
        if res.pids_limit and res.pids_limit > 0:
            _write(f"{pids}/pids.max", str(res.pids_limit))
        devices = self._dir("devices")
        if res.devices and os.path.isdir(devices):
            # As runc: the rules in order, so a guest that escaped the engine cannot open a
            # device node it made (the host's disk) any more than a runc process can.
            for allow, kind, major, minor, access in res.devices + RUNC_ALLOWED_DEVICES:
                rule = kind if kind == "a" else f"{kind} {_any(major)}:{_any(minor)} {access}"
                _write(f"{devices}/devices.{'allow' if allow else 'deny'}", rule)

    def _apply_v2(self, res: Resources) -> None:
        if res.devices:
            log.warning(
                "cgroup %s: linux.resources.devices needs an eBPF program on cgroup v2, which "
                "pywasm does not load yet; device rules are not enforced",
                self.path,
            )
        d = self._dir("")
        if res.memory_limit:
            _write(f"{d}/memory.max", str(res.memory_limit))
        if res.cpu_shares:
            # runc's conversion of v1 shares (2..262144) to v2 weight (1..10000).
            weight = 1 + ((res.cpu_shares - 2) * 9999) // 262142
            _write(f"{d}/cpu.weight", str(max(1, min(10000, weight))))
        if res.cpu_quota:
            _write(f"{d}/cpu.max", f"{res.cpu_quota} {res.cpu_period or 100000}")
        if res.pids_limit and res.pids_limit > 0:
            _write(f"{d}/pids.max", str(res.pids_limit))

    def add(self, pid: int) -> None:
        """Make ``pid`` a member; a directory it is in already is left alone: every write to
        ``cgroup.procs``, even one that moves nothing, can wait for an RCU grace period."""
        inside = self._holding(pid)
        for d in self.dirs():
            if d not in inside:
                _write(os.path.join(d, "cgroup.procs"), str(pid))

    def _holding(self, pid: int) -> set[str]:
        """The directories of this cgroup that hold ``pid`` now (``/proc/<pid>/cgroup``)."""
        rel = self.path.lstrip("/")
        found: set[str] = set()
        for controllers, path in _memberships(str(pid)):
            if path != rel:
                continue
            if self.v2:
                if not controllers:
                    found.add(os.path.join(self.root, rel))
            else:
                found.update(os.path.join(self.root, c, rel) for c in controllers)
        return found

    def freeze(self, frozen: bool) -> bool:
        """Freeze or thaw every process of the cgroup; False when there is no freezer."""
        if self.v2:
            target = os.path.join(self._dir(""), "cgroup.freeze")
            value = "1" if frozen else "0"
        else:
            target = os.path.join(self._dir("freezer"), "freezer.state")
            value = "FROZEN" if frozen else "THAWED"
        if not os.path.exists(target):
            return False
        _write(target, value)
        return True

    def oom_killed(self) -> bool:
        if self.v2:
            events = _read(os.path.join(self._dir(""), "memory.events"))
        else:
            events = _read(os.path.join(self._dir("memory"), "memory.oom_control"))
        for line in events.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip() not in ("", "0"):
                return True
        return False

    def destroy(self) -> None:
        if self.shared:
            return
        # A container's pid 1 joins at Create: when Create fails it has just been sent
        # SIGKILL and may still be leaving the cgroup.
        deadline = time.monotonic() + _BUSY_WAIT
        for d in self.dirs():
            while True:
                try:
                    os.rmdir(d)
                except OSError as exc:
                    if exc.errno == errno.EBUSY and time.monotonic() < deadline:
                        time.sleep(0.002)
                        continue
                    if exc.errno != errno.ENOENT:
                        log.warning("cannot remove cgroup %s: %s", d, exc)
                break


def _memberships(pid: str) -> list[tuple[list[str], str]]:
    """``/proc/<pid>/cgroup`` as (controllers, path without its leading /) per hierarchy; the
    v2 hierarchy has no controllers."""
    found = []
    for line in _read(f"/proc/{pid}/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        found.append((controllers.split(",") if controllers else [], path.lstrip("/")))
    return found


def prime_migration() -> None:
    """Begin, in a short-lived thread, the RCU grace period that the kernel's first cgroup
    migration in a while waits for (``cgroup_threadgroup_rwsem`` taken for writing: 7-20 ms
    on the 2-core VMs), so that a move made a few ms later (a worker moving its pid 1 into
    the container's cgroup) waits only for what is left of it.

    The thread writes the caller's pid into the caller's own cgroup: nothing moves, but the
    write takes the lock all the same.  Best effort: a failure only means no head start.
    The caller may fork while the thread runs (a shim server forks the worker): os.fork()
    runs glibc's fork handlers, so that is safe, unlike a raw clone; Python 3.12+ would warn
    about it.
    """
    target = ""
    for controllers, rel in _memberships("self"):
        if not controllers and is_v2():
            target = os.path.join(ROOT, rel, "cgroup.procs")
            break
        if "memory" in controllers:
            target = os.path.join(ROOT, "memory", rel, "cgroup.procs")
            break
    if not target:
        return
    pid = str(os.getpid()).encode()

    def write() -> None:
        # Plain fds, no file object: nothing a fork of the caller could inherit locked.
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.write(fd, pid)
        except OSError:
            pass
        finally:
            os.close(fd)

    # Not threading.Thread: its start() waits until the thread runs, and this must not wait.
    _thread.start_new_thread(write, ())
