"""OCI config -> the Linux sandbox around a guest's worker: pure data, as runc reads it.

The worker enters this sandbox before the guest runs (``pywasmd.shim.sandbox``
applies it): the Wasm engine is the inner wall, this is the outer one.  Nothing
here touches the host, so the translation is table-tested; every field the shim
cannot honour is refused here, naming the field and the fix.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pywasmd.errors import InvalidArgument
from pywasmd.mountflags import (
    FLAG_OPTIONS,
    MS_BIND,
    MS_PRIVATE,
    MS_REC,
    MS_SHARED,
    MS_SLAVE,
    MS_UNBINDABLE,
)
from pywasmd.oci.spec import _list, _obj

#: OCI namespace type -> the name of its file under /proc/<pid>/ns.
NAMESPACE_FILES: dict[str, str] = {
    "pid": "pid",
    "network": "net",
    "mount": "mnt",
    "ipc": "ipc",
    "uts": "uts",
    "cgroup": "cgroup",
    "user": "user",
    "time": "time",
}

#: Linux capability numbers (include/uapi/linux/capability.h).
CAPABILITIES: dict[str, int] = {
    name: number
    for number, name in enumerate(
        (
            "CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID CAP_KILL "
            "CAP_SETGID CAP_SETUID CAP_SETPCAP CAP_LINUX_IMMUTABLE CAP_NET_BIND_SERVICE "
            "CAP_NET_BROADCAST CAP_NET_ADMIN CAP_NET_RAW CAP_IPC_LOCK CAP_IPC_OWNER "
            "CAP_SYS_MODULE CAP_SYS_RAWIO CAP_SYS_CHROOT CAP_SYS_PTRACE CAP_SYS_PACCT "
            "CAP_SYS_ADMIN CAP_SYS_BOOT CAP_SYS_NICE CAP_SYS_RESOURCE CAP_SYS_TIME "
            "CAP_SYS_TTY_CONFIG CAP_MKNOD CAP_LEASE CAP_AUDIT_WRITE CAP_AUDIT_CONTROL "
            "CAP_SETFCAP CAP_MAC_OVERRIDE CAP_MAC_ADMIN CAP_SYSLOG CAP_WAKE_ALARM "
            "CAP_BLOCK_SUSPEND CAP_AUDIT_READ CAP_PERFMON CAP_BPF CAP_CHECKPOINT_RESTORE"
        ).split()
    )
}

RLIMITS = frozenset(
    "RLIMIT_AS RLIMIT_CORE RLIMIT_CPU RLIMIT_DATA RLIMIT_FSIZE RLIMIT_LOCKS RLIMIT_MEMLOCK "
    "RLIMIT_MSGQUEUE RLIMIT_NICE RLIMIT_NOFILE RLIMIT_NPROC RLIMIT_RSS RLIMIT_RTPRIO "
    "RLIMIT_RTTIME RLIMIT_SIGPENDING RLIMIT_STACK".split()
)

PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}
#: Options that only a userspace mount helper understands; runc drops them too.
_IGNORED_OPTIONS = frozenset({"defaults", "auto", "noauto", "user", "nouser", "_netdev"})


@dataclass(frozen=True)
class Namespace:
    type: str
    #: An existing namespace to join (a pod's, ``--network container:x``); "" makes a new one.
    path: str = ""


@dataclass(frozen=True)
class MountStep:
    destination: str
    type: str
    source: str
    flags: int
    propagation: int
    data: str

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & MS_BIND)


@dataclass(frozen=True)
class Device:
    path: str
    type: str  # "c" or "b"
    major: int
    minor: int
    mode: int = 0o666
    uid: int = 0
    gid: int = 0


#: The devices every OCI container has, whatever its config lists (runtime-spec "Default Devices").
DEFAULT_DEVICES = (
    Device("/dev/null", "c", 1, 3),
    Device("/dev/zero", "c", 1, 5),
    Device("/dev/full", "c", 1, 7),
    Device("/dev/random", "c", 1, 8),
    Device("/dev/urandom", "c", 1, 9),
    Device("/dev/tty", "c", 5, 0),
)


@dataclass(frozen=True)
class Capabilities:
    bounding: frozenset[int]
    effective: frozenset[int]
    permitted: frozenset[int]
    inheritable: frozenset[int]
    ambient: frozenset[int]


@dataclass(frozen=True)
class Sandbox:
    namespaces: tuple[Namespace, ...] = ()
    rootfs: str = ""
    readonly_root: bool = False
    root_propagation: int = MS_SLAVE | MS_REC
    mounts: tuple[MountStep, ...] = ()
    devices: tuple[Device, ...] = ()
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    sysctl: tuple[tuple[str, str], ...] = ()
    hostname: str = ""
    domainname: str = ""
    capabilities: Capabilities | None = None
    no_new_privileges: bool = False
    rlimits: tuple[tuple[str, int, int], ...] = ()
    oom_score_adj: int | None = None
    #: ``linux.seccomp`` as JSON text; the worker builds the filter with libseccomp.
    seccomp: str = ""
    apparmor_profile: str = ""
    selinux_label: str = ""
    #: Cap names the kernel table does not know: dropped with a log line, as runc does.
    unknown_capabilities: tuple[str, ...] = ()
    #: The container's cgroup (normalized ``linux.cgroupsPath``), once the shim made it.
    cgroup_path: str = ""

    def has(self, kind: str) -> Namespace | None:
        return next((ns for ns in self.namespaces if ns.type == kind), None)

    @property
    def pivots(self) -> bool:
        """A mount namespace of its own: the container's root is the rootfs, via pivot_root."""
        ns = self.has("mount")
        return ns is not None and not ns.path

    @property
    def pid_namespace(self) -> str | None:
        """None: the shim's; "": a new one; a path: join it."""
        ns = self.has("pid")
        return None if ns is None else ns.path

    def to_json(self) -> dict[str, object]:
        caps = self.capabilities
        return {
            "namespaces": [[n.type, n.path] for n in self.namespaces],
            "rootfs": self.rootfs,
            "readonly_root": self.readonly_root,
            "root_propagation": self.root_propagation,
            "mounts": [
                [m.destination, m.type, m.source, m.flags, m.propagation, m.data]
                for m in self.mounts
            ],
            "devices": [
                [d.path, d.type, d.major, d.minor, d.mode, d.uid, d.gid] for d in self.devices
            ],
            "masked_paths": list(self.masked_paths),
            "readonly_paths": list(self.readonly_paths),
            "sysctl": [list(kv) for kv in self.sysctl],
            "hostname": self.hostname,
            "domainname": self.domainname,
            "capabilities": None
            if caps is None
            else [
                sorted(caps.bounding),
                sorted(caps.effective),
                sorted(caps.permitted),
                sorted(caps.inheritable),
                sorted(caps.ambient),
            ],
            "no_new_privileges": self.no_new_privileges,
            "rlimits": [list(r) for r in self.rlimits],
            "oom_score_adj": self.oom_score_adj,
            "seccomp": self.seccomp,
            "apparmor_profile": self.apparmor_profile,
            "selinux_label": self.selinux_label,
            "unknown_capabilities": list(self.unknown_capabilities),
            "cgroup_path": self.cgroup_path,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Sandbox:
        caps = raw["capabilities"]
        return cls(
            namespaces=tuple(Namespace(str(t), str(p)) for t, p in raw["namespaces"]),
            rootfs=str(raw["rootfs"]),
            readonly_root=bool(raw["readonly_root"]),
            root_propagation=int(raw["root_propagation"]),
            mounts=tuple(
                MountStep(str(d), str(t), str(s), int(f), int(p), str(data))
                for d, t, s, f, p, data in raw["mounts"]
            ),
            devices=tuple(
                Device(str(p), str(t), int(a), int(b), int(m), int(u), int(g))
                for p, t, a, b, m, u, g in raw["devices"]
            ),
            masked_paths=tuple(str(p) for p in raw["masked_paths"]),
            readonly_paths=tuple(str(p) for p in raw["readonly_paths"]),
            sysctl=tuple((str(k), str(v)) for k, v in raw["sysctl"]),
            hostname=str(raw["hostname"]),
            domainname=str(raw["domainname"]),
            capabilities=None
            if caps is None
            else Capabilities(*(frozenset(int(c) for c in s) for s in caps)),
            no_new_privileges=bool(raw["no_new_privileges"]),
            rlimits=tuple((str(n), int(h), int(s)) for n, h, s in raw["rlimits"]),
            oom_score_adj=None if raw["oom_score_adj"] is None else int(raw["oom_score_adj"]),
            seccomp=str(raw["seccomp"]),
            apparmor_profile=str(raw["apparmor_profile"]),
            selinux_label=str(raw["selinux_label"]),
            unknown_capabilities=tuple(str(c) for c in raw["unknown_capabilities"]),
            cgroup_path=str(raw.get("cgroup_path", "")),
        )


def mount_options(options: tuple[str, ...]) -> tuple[int, int, str]:
    """``mounts[].options`` -> (mount flags, propagation flags, data for the filesystem)."""
    flags = 0
    propagation = 0
    data: list[str] = []
    for option in options:
        if option in FLAG_OPTIONS:
            on, off = FLAG_OPTIONS[option]
            flags = (flags | on) & ~off
        elif option in PROPAGATION:
            propagation = PROPAGATION[option]
        elif option not in _IGNORED_OPTIONS:
            data.append(option)
    return flags, propagation, ",".join(data)


def parse_sandbox(raw: Mapping[str, Any], rootfs: str) -> Sandbox:
    """The sandbox a config asks for; ``rootfs`` is the container's root on the host."""
    linux = _obj(raw, "linux", required=False)
    process = _obj(raw, "process", required=False)
    namespaces = _namespaces(linux)
    mounts = tuple(_mount_step(i, m) for i, m in enumerate(_list(raw, "mounts")))
    propagation_name = str(linux.get("rootfsPropagation") or "rslave")
    if propagation_name not in PROPAGATION:
        raise InvalidArgument(
            f"linux.rootfsPropagation {propagation_name!r} is not one of "
            f"{', '.join(sorted(PROPAGATION))}"
        )
    caps, unknown = _capabilities(process.get("capabilities"))
    seccomp = linux.get("seccomp")
    if seccomp is not None and not isinstance(seccomp, dict):
        raise InvalidArgument("linux.seccomp must be an object (a seccomp profile)")
    if isinstance(seccomp, dict) and seccomp.get("listenerPath"):
        raise InvalidArgument(
            "linux.seccomp.listenerPath: seccomp user notification is not supported by the "
            "pywasm shim; drop SCMP_ACT_NOTIFY rules from the profile"
        )
    oom = process.get("oomScoreAdj")
    root = _obj(raw, "root", required=False)
    return Sandbox(
        namespaces=namespaces,
        rootfs=rootfs,
        readonly_root=bool(root.get("readonly", False)),
        root_propagation=PROPAGATION[propagation_name],
        mounts=mounts,
        devices=_devices(linux),
        masked_paths=tuple(str(p) for p in _list(linux, "maskedPaths")),
        readonly_paths=tuple(str(p) for p in _list(linux, "readonlyPaths")),
        sysctl=tuple(
            sorted((str(k), str(v)) for k, v in _obj(linux, "sysctl", required=False).items())
        ),
        hostname=str(raw.get("hostname") or ""),
        domainname=str(raw.get("domainname") or ""),
        capabilities=caps,
        no_new_privileges=bool(process.get("noNewPrivileges", False)),
        rlimits=_rlimits(process),
        oom_score_adj=int(oom) if isinstance(oom, int) else None,
        seccomp=json.dumps(seccomp, sort_keys=True) if seccomp else "",
        apparmor_profile=str(process.get("apparmorProfile") or ""),
        selinux_label=str(process.get("selinuxLabel") or ""),
        unknown_capabilities=unknown,
    )


def for_exec(init: Sandbox, init_pid: int, process: Mapping[str, Any]) -> Sandbox:
    """An exec'd process joins every namespace of the container's init, as ``runc exec``."""
    joined = tuple(
        Namespace(ns.type, f"/proc/{init_pid}/ns/{NAMESPACE_FILES[ns.type]}")
        for ns in init.namespaces
    )
    caps, unknown = (
        _capabilities(process["capabilities"])
        if "capabilities" in process
        else (init.capabilities, init.unknown_capabilities)
    )
    return Sandbox(
        namespaces=joined,
        rootfs="",
        capabilities=caps,
        no_new_privileges=bool(process.get("noNewPrivileges", init.no_new_privileges)),
        rlimits=_rlimits(process) if "rlimits" in process else init.rlimits,
        seccomp=init.seccomp,
        apparmor_profile=str(process.get("apparmorProfile") or init.apparmor_profile),
        selinux_label=init.selinux_label,
        unknown_capabilities=unknown,
    )


def _namespaces(linux: Mapping[str, Any]) -> tuple[Namespace, ...]:
    found: list[Namespace] = []
    for index, entry in enumerate(_list(linux, "namespaces")):
        where = f"linux.namespaces[{index}]"
        if not isinstance(entry, dict):
            raise InvalidArgument(f"{where} must be an object with a type")
        kind = str(entry.get("type", ""))
        path = str(entry.get("path") or "")
        if kind not in NAMESPACE_FILES:
            raise InvalidArgument(
                f"{where}: unknown namespace type {kind!r}; known: "
                f"{', '.join(sorted(NAMESPACE_FILES))}"
            )
        if kind in ("user", "time"):
            raise InvalidArgument(
                f"{where}: a {kind} namespace is not supported by the pywasm shim yet; run "
                "without it (Docker: no --userns / userns-remap) or use io.containerd.runc.v2"
            )
        if any(ns.type == kind for ns in found):
            raise InvalidArgument(f"{where}: the {kind} namespace is listed twice")
        if path and not path.startswith("/"):
            raise InvalidArgument(f"{where}: path {path!r} must be absolute")
        found.append(Namespace(kind, path))
    if _list(linux, "uidMappings") or _list(linux, "gidMappings"):
        raise InvalidArgument(
            "linux.uidMappings/gidMappings: user namespaces are not supported by the pywasm "
            "shim yet; run without --userns / userns-remap or use io.containerd.runc.v2"
        )
    return tuple(found)


def _mount_step(index: int, raw: object) -> MountStep:
    where = f"mounts[{index}]"
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where} must be an object")
    destination = str(raw.get("destination", ""))
    if not destination.startswith("/"):
        raise InvalidArgument(f"{where}: destination {destination!r} must be an absolute path")
    options = tuple(str(o) for o in raw.get("options") or ())
    flags, propagation, data = mount_options(options)
    kind = str(raw.get("type") or "")
    if kind in ("bind", "rbind"):
        flags |= MS_BIND | (MS_REC if kind == "rbind" else 0)
    if kind in ("", "none") and not flags & MS_BIND:
        raise InvalidArgument(f"{where} ({destination}): a mount needs a type, or bind/rbind")
    return MountStep(
        destination=posixpath.normpath(destination),
        type=kind,
        source=str(raw.get("source") or ""),
        flags=flags,
        propagation=propagation,
        data=data,
    )


def _devices(linux: Mapping[str, Any]) -> tuple[Device, ...]:
    devices: dict[str, Device] = {d.path: d for d in DEFAULT_DEVICES}
    for index, raw in enumerate(_list(linux, "devices")):
        where = f"linux.devices[{index}]"
        if not isinstance(raw, dict) or raw.get("type") not in ("c", "b", "u", "p"):
            raise InvalidArgument(f"{where} needs a type c, b, u or p and a path")
        path = posixpath.normpath(str(raw.get("path", "")))
        if not path.startswith("/dev/"):
            raise InvalidArgument(f"{where}: path {path!r} must be under /dev")
        if raw["type"] == "p":
            raise InvalidArgument(f"{where}: FIFO devices are not supported; drop {path}")
        devices[path] = Device(
            path=path,
            type="b" if raw["type"] == "b" else "c",
            major=_int(raw, where, "major"),
            minor=_int(raw, where, "minor"),
            mode=_int(raw, where, "fileMode", 0o666) & 0o7777,
            uid=_int(raw, where, "uid", 0),
            gid=_int(raw, where, "gid", 0),
        )
    return tuple(devices.values())


def _capabilities(raw: object) -> tuple[Capabilities | None, tuple[str, ...]]:
    if raw is None:
        return None, ()
    if not isinstance(raw, dict):
        raise InvalidArgument("process.capabilities must be an object of capability lists")
    unknown: list[str] = []

    def numbers(key: str) -> frozenset[int]:
        found: set[int] = set()
        for name in raw.get(key) or ():
            name = str(name).upper()
            if name in CAPABILITIES:
                found.add(CAPABILITIES[name])
            elif name not in unknown:
                unknown.append(name)
        return frozenset(found)

    caps = Capabilities(
        bounding=numbers("bounding"),
        effective=numbers("effective"),
        permitted=numbers("permitted"),
        inheritable=numbers("inheritable"),
        ambient=numbers("ambient"),
    )
    return caps, tuple(unknown)


def _rlimits(process: Mapping[str, Any]) -> tuple[tuple[str, int, int], ...]:
    limits: list[tuple[str, int, int]] = []
    for index, raw in enumerate(_list(process, "rlimits")):
        where = f"process.rlimits[{index}]"
        if not isinstance(raw, dict) or raw.get("type") not in RLIMITS:
            raise InvalidArgument(f"{where}: type must be one of {', '.join(sorted(RLIMITS))}")
        hard, soft = _int(raw, where, "hard"), _int(raw, where, "soft")
        if soft > hard:
            raise InvalidArgument(f"{where}: soft limit {soft} is above the hard limit {hard}")
        limits.append((str(raw["type"]), hard, soft))
    return tuple(limits)


def _int(raw: Mapping[str, Any], where: str, key: str, default: int | None = None) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{where}.{key} must be an integer")
    return value
