"""Entering a container's Linux sandbox from a worker, in the order runc's init uses.

Two steps, both in the worker process:

- :func:`enter` at Create, after the module is loaded (so nothing is read from the
  host afterwards): join or make the namespaces, bring ``lo`` up, set the hostname,
  build the root (mounts, devices, ``pivot_root``, sysctl, read-only and masked
  paths, a read-only root) and set rlimits.  Docker wires the network namespace
  of the task pid right after Create, so it must exist by then.
- :func:`finish` at Start, right before the guest: a cgroup namespace (the process
  is in its cgroup by then: moved during Create, checked at Start), user and groups, capabilities,
  no_new_privs and seccomp.

A process cannot move itself into a pid namespace, only its children: the worker
that loaded the module starts the container's pid 1 (:func:`start_in_pid_namespace`),
hands it over to the shim and exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import os
import platform
import resource
import signal
import socket
import stat
import struct
import tempfile
import threading
from typing import Any

import pyseccomp  # type: ignore[import-untyped]

from pywasmd.cache import CompileCache
from pywasmd.errors import Internal, InvalidArgument
from pywasmd.mountflags import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SLAVE,
)
from pywasmd.oci.module import resolve_in_root
from pywasmd.oci.sandbox import (
    Capabilities,
    Device,
    MountStep,
    Sandbox,
)
from pywasmd.paths import CGROUP_ROOT

log = logging.getLogger("pywasmd.sandbox")

_libc = ctypes.CDLL(None, use_errno=True)
_pylibc = ctypes.PyDLL(None, use_errno=True)
_CLONE_PARENT = 0x00008000

CLONE_FLAGS = {
    "mount": 0x00020000,
    "cgroup": 0x02000000,
    "uts": 0x04000000,
    "ipc": 0x08000000,
    "pid": 0x20000000,
    "network": 0x40000000,
}
_NS_FILES = {"mount": "mnt", "cgroup": "cgroup", "uts": "uts", "ipc": "ipc", "network": "net"}
_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "capset": 126, "clone": 56},
    "aarch64": {"pivot_root": 41, "capset": 91, "clone": 220},
}
_NR = _SYSCALLS.get(platform.machine(), _SYSCALLS["x86_64"])
_MNT_DETACH = 2
_PR_SET_KEEPCAPS = 8
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_V3 = 0x20080522
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_ST_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC))
#: Signals a pid-1 guest must still die of: the kernel drops them for an init without a handler.
_INIT_SIGNALS = frozenset(
    {
        signal.SIGHUP,
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGTERM,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGALRM,
        signal.SIGXCPU,
    }
)
try:
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as _f:
        _CAP_LAST = int(_f.read())
except OSError:
    _CAP_LAST = 40


def _call(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _call(
        _libc.mount(
            source.encode() if source is not None else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source or fstype or ''} on {target}",
    )


# --- the pid namespace: only a new process can be in a new one ---------------------------------


def start_in_pid_namespace(path: str) -> int:
    """Make the process that will be the container's pid 1 (or join ``path``, as ``runc
    exec`` does): 0 in that new process, its host pid in the caller.

    The new process is a sibling (CLONE_PARENT): a child of the shim server, which reaps
    it and which it dies with, as runc's init is its shim's child.  A raw clone, not
    fork(): the caller is a single-threaded worker, and nothing of the engine's or gRPC's
    fork handlers may run while its children are due in another pid namespace.
    """
    try:
        if path:
            _setns_path(path, "pid")
        else:
            _call(_libc.unshare(CLONE_FLAGS["pid"]), "unshare(CLONE_NEWPID)")
    except OSError as exc:
        raise Internal(f"cannot prepare the container's pid namespace: {exc}") from None
    # PyDLL keeps the GIL across the call, so the copy's interpreter state is consistent.
    pid = int(_pylibc.syscall(_NR["clone"], _CLONE_PARENT | signal.SIGCHLD, 0, 0, 0, 0))
    if pid < 0:
        code = ctypes.get_errno()
        raise Internal(f"cannot start the container's first process: {os.strerror(code)}")
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
    return pid


def _setns_path(path: str, kind: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidArgument(
            f"linux.namespaces: cannot open the {kind} namespace {path}: {exc.strerror}; "
            "is the process that owns it still running?"
        ) from None
    try:
        _call(_libc.setns(fd, CLONE_FLAGS[kind]), f"setns {path}")
    finally:
        os.close(fd)


# --- Create: namespaces and the root ---------------------------------------------------------


def enter(sb: Sandbox, graceful_stop: bool = False) -> None:
    """``graceful_stop``: SIGTERM and SIGINT stay blocked (so queued, even for a pid 1) for
    the caller to unblock once it handles them (an HTTP function's server); the guard thread
    takes the rest."""
    global _graceful_stop, _seccomp_program
    _graceful_stop = graceful_stop
    # On the host's filesystem still: the node's cache of compiled filters is there.
    _seccomp_program = _seccomp_bpf(sb.seccomp) if sb.seccomp else b""
    if sb.oom_score_adj is not None:
        _write("/proc/self/oom_score_adj", str(sb.oom_score_adj), "process.oomScoreAdj")
    _join_and_unshare(sb)
    net = sb.has("network")
    if net is not None and not net.path:
        _loopback_up()
    uts = sb.has("uts")
    if uts is not None and not uts.path:
        if sb.hostname:
            host = sb.hostname.encode()
            _call(_libc.sethostname(host, len(host)), "hostname")
        if sb.domainname:
            domain = sb.domainname.encode()
            _call(_libc.setdomainname(domain, len(domain)), "domainname")
    if sb.pivots:
        _build_root(sb)
    for name, hard, soft in sb.rlimits:
        try:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        except (ValueError, OSError) as exc:
            raise InvalidArgument(f"process.rlimits {name} {soft}/{hard}: {exc}") from None
    if os.getpid() == 1:
        # Until Start, Python handlers end a pid 1 that is told to stop: the worker is in
        # Python code then.  finish() hands the signals to a thread once the sandbox is whole.
        for sig in _INIT_SIGNALS:
            signal.signal(sig, _exit_by_signal)


def _exit_by_signal(sig: int, _frame: object) -> None:
    os._exit(128 + sig)


#: Set by enter(), used by finish(): what was decided on the host's filesystem.
_graceful_stop = False
_seccomp_program = b""


def _join_and_unshare(sb: Sandbox) -> None:
    # Open every namespace to join first: once in another mount namespace, /proc/<pid>/ns
    # paths would be looked up in the container's /proc.
    joins: list[tuple[str, int]] = []
    try:
        for ns in sb.namespaces:
            if ns.path and ns.type in _NS_FILES:
                try:
                    joins.append((ns.type, os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)))
                except OSError as exc:
                    raise InvalidArgument(
                        f"linux.namespaces: cannot open the {ns.type} namespace {ns.path}: "
                        f"{exc.strerror}"
                    ) from None
        joins.sort(key=lambda j: j[0] == "mount")
        for kind, fd in joins:
            try:
                _call(_libc.setns(fd, CLONE_FLAGS[kind]), f"setns {kind}")
            except OSError as exc:
                raise Internal(f"cannot join the container's {kind} namespace: {exc}") from None
    finally:
        for _, fd in joins:
            os.close(fd)
    flags = 0
    for ns in sb.namespaces:
        # pid: the launcher's; cgroup: at Start, once we are surely in the container's cgroup.
        if not ns.path and ns.type in _NS_FILES and ns.type != "cgroup":
            flags |= CLONE_FLAGS[ns.type]
    if flags:
        try:
            _call(_libc.unshare(flags), "unshare")
        except OSError as exc:
            raise Internal(f"cannot create the container's namespaces: {exc}") from None


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def _build_root(sb: Sandbox) -> None:
    rootfs = sb.rootfs
    try:
        # Nothing done in here may reach the host's mount table.
        _mount(None, "/", None, sb.root_propagation)
        _mount(rootfs, rootfs, None, MS_BIND | MS_REC)
    except OSError as exc:
        raise Internal(f"cannot prepare the container's root {rootfs}: {exc}") from None
    # Read-only binds become read-only once every mount is in place, so a mount nested
    # inside one (`/data` ro, `/data/cache` rw) still finds or makes its mount point.
    remounts: list[tuple[int, str, MountStep]] = []
    for index, step in enumerate(sb.mounts):
        try:
            remount = _mount_step(rootfs, step, sb.cgroup_path)
        except OSError as exc:
            raise InvalidArgument(
                f"mounts[{index}] ({step.destination}): {exc}; fix the mount or drop it"
            ) from None
        if remount:
            remounts.append((index, remount, step))
    for index, dest, step in remounts:
        extra = step.flags & ~(MS_BIND | MS_REC | MS_REMOUNT)
        try:
            _mount(step.source, dest, None, MS_BIND | MS_REMOUNT | extra | _kept_flags(dest))
        except OSError as exc:
            raise InvalidArgument(f"mounts[{index}] ({step.destination}): {exc}") from None
    if not any(m.destination == "/dev" and m.is_bind for m in sb.mounts):
        old = os.umask(0)
        try:
            for device in sb.devices:
                _make_device(rootfs, device)
            _dev_links(rootfs)
        finally:
            os.umask(old)
    try:
        _pivot_root(rootfs)
    except OSError as exc:
        raise Internal(f"cannot pivot_root into {rootfs}: {exc}") from None
    for key, value in sb.sysctl:
        _write(
            "/proc/sys/" + key.replace(".", "/"), value, f"linux.sysctl {key}={value}", missing=True
        )
    for path in sb.readonly_paths:
        _readonly(path)
    for path in sb.masked_paths:
        _mask(path)
    if sb.readonly_root:
        _mount("/", "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | _kept_flags("/"))


def _inside(rootfs: str, path: str) -> str:
    # Symlinks in the image resolve inside the rootfs, never to the host.
    return resolve_in_root(rootfs, path)


def _mount_step(rootfs: str, step: MountStep, cgroup_path: str) -> str:
    """Mount one step; for a bind that needs flags, the path to remount afterwards."""
    dest = _inside(rootfs, step.destination)
    if step.is_bind:
        st = os.stat(step.source)
        if stat.S_ISDIR(st.st_mode):
            os.makedirs(dest, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if not os.path.exists(dest):
                with open(dest, "a", encoding="utf-8"):
                    pass
        _mount(step.source, dest, None, MS_BIND | (step.flags & MS_REC))
        if step.propagation:
            _mount(None, dest, None, step.propagation)
        return dest if step.flags & ~(MS_BIND | MS_REC | MS_REMOUNT) else ""
    else:
        os.makedirs(dest, exist_ok=True)
        if step.type in ("cgroup", "cgroup2"):
            _mount_cgroups(dest, step, cgroup_path)
        else:
            _mount(step.source or step.type, dest, step.type, step.flags & ~MS_REMOUNT, step.data)
    if step.propagation:
        _mount(None, dest, None, step.propagation)
    return ""


def _mount_cgroups(dest: str, step: MountStep, cgroup_path: str) -> None:
    """The container's own cgroup at ``dest``, never the host's tree: on cgroup v1 a tmpfs with
    one bind per hierarchy (an empty read-only tmpfs where the container has no cgroup of
    its own there), as runc lays it out; on cgroup v2 the container's directory."""
    root = CGROUP_ROOT
    rel = cgroup_path.lstrip("/")
    flags = step.flags & ~MS_BIND
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        own = os.path.join(root, rel)
        if rel and os.path.isdir(own):
            _mount(own, dest, None, MS_BIND)
            _mount(own, dest, None, MS_BIND | MS_REMOUNT | flags)
        else:
            _mount("tmpfs", dest, "tmpfs", flags | MS_RDONLY, "mode=755")
        return
    _mount("tmpfs", dest, "tmpfs", flags & ~MS_RDONLY, "mode=755")
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        target = os.path.join(dest, entry.name)
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
            continue
        hierarchy = entry.path
        if not os.path.ismount(hierarchy) or os.path.exists(
            os.path.join(hierarchy, "cgroup.controllers")
        ):
            continue  # not a v1 hierarchy (the hybrid layout's cgroup2 stays out, as in runc)
        os.makedirs(target, exist_ok=True)
        own = os.path.join(hierarchy, rel)
        if rel and os.path.isdir(own):
            _mount(own, target, None, MS_BIND)
            _mount(own, target, None, MS_BIND | MS_REMOUNT | flags)
        else:
            _mount("tmpfs", target, "tmpfs", flags, "mode=755")


def _make_device(rootfs: str, device: Device) -> None:
    path = _inside(rootfs, device.path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    kind = stat.S_IFBLK if device.type == "b" else stat.S_IFCHR
    try:
        os.mknod(path, kind | device.mode, os.makedev(device.major, device.minor))
    except FileExistsError:
        return
    except PermissionError:
        # Without CAP_MKNOD (a nested container): the host's node, bound in, as runc does.
        with open(path, "a", encoding="utf-8"):
            pass
        _mount(device.path, path, None, MS_BIND)
        return
    os.chown(path, device.uid, device.gid)
    os.chmod(path, device.mode)


def _dev_links(rootfs: str) -> None:
    links = {
        "/dev/fd": "/proc/self/fd",
        "/dev/stdin": "/proc/self/fd/0",
        "/dev/stdout": "/proc/self/fd/1",
        "/dev/stderr": "/proc/self/fd/2",
    }
    if os.path.exists("/proc/kcore"):
        links["/dev/core"] = "/proc/kcore"
    for link, target in links.items():
        with contextlib.suppress(FileExistsError):
            os.symlink(target, _inside(rootfs, link))
    if os.path.isdir(_inside(rootfs, "/dev/pts")):
        ptmx = _inside(rootfs, "/dev/ptmx")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ptmx)
        os.symlink("pts/ptmx", ptmx)


def _pivot_root(rootfs: str) -> None:
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new)
        _call(_libc.syscall(_NR["pivot_root"], b".", b"."), "pivot_root")
        # The old root now sits on top of the new one: detach it, without telling the host.
        os.fchdir(old)
        _mount(None, ".", None, MS_SLAVE | MS_REC)
        _call(_libc.umount2(b".", _MNT_DETACH), "umount the old root")
    finally:
        os.close(old)
        os.close(new)
    os.chdir("/")


def _kept_flags(path: str) -> int:
    flags = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_FLAGS if flags & st)


def _readonly(path: str) -> None:
    try:
        _mount(path, path, None, MS_BIND | MS_REC)
        _mount(path, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC | _kept_flags(path))
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise InvalidArgument(f"linux.readonlyPaths {path}: {exc}") from None


def _mask(path: str) -> None:
    try:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_RDONLY)
        else:
            _mount("/dev/null", path, None, MS_BIND)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise InvalidArgument(f"linux.maskedPaths {path}: {exc}") from None


def _write(path: str, value: str, field: str, missing: bool = False) -> None:
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(value)
    except OSError as exc:
        hint = " (not a sysctl of this kernel)" if missing and exc.errno == errno.ENOENT else ""
        raise InvalidArgument(f"{field}: cannot write {path}{hint}: {exc.strerror}") from None


def _guard_init_signals(graceful_stop: bool = False) -> None:
    """As pid 1 of its namespace the worker would ignore SIGTERM (no handler, and the guest
    runs in native code where a Python handler never gets to run): a thread takes the
    signals and ends the process with 128+n, the status a killed container reports.
    Started last, so it holds the same credentials, capabilities and seccomp filter as the
    guest's thread (all of them are per thread)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _INIT_SIGNALS)
    fatal = _INIT_SIGNALS - {signal.SIGTERM, signal.SIGINT} if graceful_stop else _INIT_SIGNALS

    def wait() -> None:
        sig = signal.sigwait(fatal)
        os._exit(128 + int(sig))

    threading.Thread(target=wait, name="pywasm-init-signals", daemon=True).start()


# --- Start: credentials, capabilities, no_new_privs, seccomp ---------------------------------


def finish(sb: Sandbox, uid: int, gid: int, groups: tuple[int, ...]) -> None:
    cgroup = sb.has("cgroup")
    if cgroup is not None and not cgroup.path:
        _call(_libc.unshare(CLONE_FLAGS["cgroup"]), "unshare(CLONE_NEWCGROUP)")
    seccomp = _seccomp_program if sb.seccomp else b""
    if seccomp and not sb.no_new_privileges:
        # Without no_new_privs the kernel wants CAP_SYS_ADMIN to load a filter: load it
        # while the worker still has it (runc does the same).
        _install_seccomp(seccomp)
    if sb.unknown_capabilities:
        log.warning("capabilities unknown to this kernel ignored: %s", sb.unknown_capabilities)
    caps = sb.capabilities
    if caps is not None:
        for number in range(_CAP_LAST + 1):
            if number not in caps.bounding:
                _call(_libc.prctl(_PR_CAPBSET_DROP, number, 0, 0, 0), "drop a bounding capability")
        _call(_libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0), "keepcaps")
    os.setgroups(list(groups))
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if caps is not None:
        _call(_libc.prctl(_PR_SET_KEEPCAPS, 0, 0, 0, 0), "keepcaps")
        _capset(after_exec(caps, uid))
    if sb.no_new_privileges:
        _call(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _security_labels(sb)
    if seccomp and sb.no_new_privileges:
        _install_seccomp(seccomp)
    if os.getpid() == 1:
        _guard_init_signals(_graceful_stop)


def after_exec(caps: Capabilities, uid: int) -> Capabilities:
    """The sets a runc process holds once it has exec'd its program (no file capabilities):
    runc sets the config's sets and then execve(2) transforms them.  The worker does not
    exec, so it applies the result directly.  Root gets inheritable | bounding | ambient
    in permitted and effective; any other user only its ambient set."""
    ambient = caps.ambient & caps.permitted & caps.inheritable
    if uid == 0:
        held = caps.inheritable | caps.bounding | ambient
    else:
        held = ambient
    return Capabilities(
        bounding=caps.bounding,
        effective=frozenset(held),
        permitted=frozenset(held),
        inheritable=caps.inheritable,
        ambient=ambient,
    )


def _capset(caps: Capabilities) -> None:
    def words(numbers: frozenset[int]) -> tuple[int, int]:
        mask = sum(1 << n for n in numbers if n <= _CAP_LAST)
        return mask & 0xFFFFFFFF, mask >> 32

    eff, prm, inh = words(caps.effective), words(caps.permitted), words(caps.inheritable)
    header = (ctypes.c_uint32 * 2)(_CAP_V3, 0)
    data = (ctypes.c_uint32 * 6)(eff[0], prm[0], inh[0], eff[1], prm[1], inh[1])
    _call(_libc.syscall(_NR["capset"], header, data), "capset")
    _call(_libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "ambient caps")
    for number in sorted(caps.ambient):
        _call(_libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, number, 0, 0), "ambient caps")


def _security_labels(sb: Sandbox) -> None:
    if sb.apparmor_profile:
        if os.path.exists("/sys/module/apparmor/parameters/enabled"):
            _write(
                "/proc/self/attr/current",
                f"changeprofile {sb.apparmor_profile}",
                "process.apparmorProfile",
            )
        else:
            log.info(
                "AppArmor is not enabled on this host: profile %s not applied (as runc)",
                sb.apparmor_profile,
            )
    if sb.selinux_label:
        log.info("SELinux labels are not applied by pywasm: %s ignored", sb.selinux_label)


# --- seccomp ---------------------------------------------------------------------------------

_ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
    "SCMP_ACT_LOG": 0x7FFC0000,
}
_OPS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}


def _action(name: object, errno_ret: object) -> int:
    code = errno_ret if isinstance(errno_ret, int) else errno.EPERM
    if name == "SCMP_ACT_ERRNO":
        return 0x00050000 | (code & 0xFFFF)
    if name == "SCMP_ACT_TRACE":
        return 0x7FF00000 | (code & 0xFFFF)
    if isinstance(name, str) and name in _ACTIONS:
        return _ACTIONS[name]
    raise InvalidArgument(
        f"linux.seccomp: action {name!r} is not supported; use one of "
        f"{', '.join(sorted([*_ACTIONS, 'SCMP_ACT_ERRNO', 'SCMP_ACT_TRACE']))}"
    )


def _seccomp_bpf(profile: str) -> bytes:
    """The profile compiled to BPF by libseccomp, from the node's cache when it was compiled
    before: building a filter for Docker's profile costs ~12 ms, loading one ~0.1 ms."""
    key = hashlib.sha256(
        f"{profile}\0{pyseccomp.get_api()}\0{platform.machine()}".encode()
    ).hexdigest()
    path = os.path.join(CompileCache().root, "seccomp", key + ".bpf")
    try:
        with open(path, "rb") as f:
            cached = f.read()
        if cached and len(cached) % 8 == 0:
            return cached
    except OSError:
        pass
    flt = _seccomp_filter(json.loads(profile))
    with tempfile.TemporaryFile() as out:
        flt.export_bpf(out)
        out.seek(0)
        program = out.read()
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(program)
        os.replace(tmp, path)
    return program


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _install_seccomp(program: bytes) -> None:
    """PR_SET_SECCOMP with the BPF libseccomp made (what seccomp_load does, minus building)."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _call(
        _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0),
        "load the seccomp filter",
    )


def _seccomp_filter(profile: dict[str, Any]) -> Any:
    """libseccomp's filter for an OCI ``linux.seccomp`` profile, built as runc builds it."""
    default = _action(profile.get("defaultAction"), profile.get("defaultErrnoRet"))
    flt = pyseccomp.SyscallFilter(default)
    # no_new_privs is the config's decision, not libseccomp's.
    flt.set_attr(pyseccomp.Attr.CTL_NNP, 0)
    for arch in profile.get("architectures") or ():
        value = getattr(pyseccomp.Arch, str(arch).removeprefix("SCMP_ARCH_"), None)
        if value is None:
            raise InvalidArgument(f"linux.seccomp: unknown architecture {arch!r}")
        with contextlib.suppress(OSError):
            flt.add_arch(value)
    for index, rule in enumerate(profile.get("syscalls") or ()):
        action = _action(rule.get("action"), rule.get("errnoRet"))
        if action == default:
            continue
        args = [_arg(index, a) for a in rule.get("args") or ()]
        same_index = len({a._arg for a in args}) != len(args)
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        for name in names:
            number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, str(name))
            if number < 0:
                continue  # a syscall this libseccomp does not know: runc skips it too
            try:
                if same_index:
                    # Several conditions on one argument: any of them matches (runc).
                    for arg in args:
                        flt.add_rule(action, number, arg)
                else:
                    flt.add_rule(action, number, *args)
            except OSError as exc:
                raise InvalidArgument(
                    f"linux.seccomp.syscalls[{index}] ({name}): libseccomp refused it: {exc}"
                ) from None
    return flt


def _arg(index: int, raw: dict[str, Any]) -> Any:
    op = _OPS.get(str(raw.get("op")))
    if op is None:
        raise InvalidArgument(
            f"linux.seccomp.syscalls[{index}].args: op {raw.get('op')!r} is not one of "
            f"{', '.join(_OPS)}"
        )
    return pyseccomp.Arg(
        int(raw.get("index", 0)), op, int(raw.get("value", 0)), int(raw.get("valueTwo", 0))
    )
