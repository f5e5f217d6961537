"""OCI config -> the Linux sandbox plan: pure translation and refusals."""

from __future__ import annotations

from typing import Any

import pytest

from pywasmd.errors import InvalidArgument
from pywasmd.mountflags import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_SLAVE,
)
from pywasmd.oci.sandbox import (
    CAPABILITIES,
    DEFAULT_DEVICES,
    Capabilities,
    Namespace,
    Sandbox,
    for_exec,
    mount_options,
    parse_sandbox,
)
from pywasmd.shim.sandbox import after_exec

DEFAULT_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]


def config(**linux: Any) -> dict[str, Any]:
    return {
        "process": {
            "args": ["/app.wasm"],
            "capabilities": {k: DEFAULT_CAPS for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "box",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"],
            **linux,
        },
    }


def test_ctr_default_config() -> None:
    sb = parse_sandbox(config(), "/b/rootfs")
    assert [ns.type for ns in sb.namespaces] == ["pid", "ipc", "uts", "mount", "network"]
    assert sb.pivots
    assert sb.pid_namespace == ""
    assert sb.rootfs == "/b/rootfs"
    assert sb.readonly_root
    assert sb.hostname == "box"
    assert sb.root_propagation == MS_SLAVE | MS_REC
    proc, dev, data = sb.mounts
    assert (proc.type, proc.flags, proc.data) == ("proc", 0, "")
    assert dev.flags == MS_NOSUID | 0x1000000
    assert dev.data == "mode=755,size=65536k"
    assert data.is_bind
    assert data.flags == MS_BIND | MS_REC | MS_RDONLY
    assert sb.devices == DEFAULT_DEVICES
    assert sb.masked_paths == ("/proc/kcore",)
    assert sb.readonly_paths == ("/proc/sys",)
    assert sb.capabilities is not None
    assert sum(1 << c for c in sb.capabilities.bounding) == 0xA80425FB
    assert sb.no_new_privileges
    assert sb.rlimits == (("RLIMIT_NOFILE", 1024, 1024),)


def test_joined_namespaces_and_no_pid_namespace() -> None:
    raw = config(
        namespaces=[
            {"type": "network", "path": "/proc/7/ns/net"},
            {"type": "mount"},
        ]
    )
    sb = parse_sandbox(raw, "/r")
    assert sb.has("network") == Namespace("network", "/proc/7/ns/net")
    assert sb.pid_namespace is None
    assert sb.has("uts") is None


def test_no_mount_namespace_means_no_pivot() -> None:
    sb = parse_sandbox(config(namespaces=[{"type": "pid"}]), "/r")
    assert not sb.pivots
    assert sb.pid_namespace == ""


@pytest.mark.parametrize(
    ("linux", "needle"),
    [
        ({"namespaces": [{"type": "user"}]}, "linux.namespaces[0]: a user namespace"),
        ({"namespaces": [{"type": "bogus"}]}, "unknown namespace type 'bogus'"),
        ({"namespaces": [{"type": "pid"}, {"type": "pid"}]}, "listed twice"),
        ({"namespaces": [{"type": "network", "path": "net"}]}, "must be absolute"),
        ({"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}, "uidMappings"),
        ({"rootfsPropagation": "sideways"}, "linux.rootfsPropagation 'sideways'"),
        ({"seccomp": {"listenerPath": "/run/x.sock"}}, "linux.seccomp.listenerPath"),
        ({"seccomp": "strict"}, "linux.seccomp must be an object"),
        ({"devices": [{"type": "c", "path": "/etc/passwd", "major": 1, "minor": 3}]}, "under /dev"),
        ({"devices": [{"type": "x", "path": "/dev/x"}]}, "linux.devices[0]"),
    ],
)
def test_refusals_name_the_field(linux: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidArgument, match=None) as info:
        parse_sandbox(config(**linux), "/r")
    assert needle in info.value.message


def test_rlimit_soft_above_hard_is_refused() -> None:
    raw = config()
    raw["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 20}]
    with pytest.raises(InvalidArgument) as info:
        parse_sandbox(raw, "/r")
    assert "process.rlimits[0]: soft limit 20 is above the hard limit 10" in info.value.message


def test_unknown_capabilities_are_kept_aside() -> None:
    raw = config()
    raw["process"]["capabilities"] = {"bounding": ["CAP_KILL", "CAP_FROM_THE_FUTURE"]}
    sb = parse_sandbox(raw, "/r")
    assert sb.capabilities is not None
    assert sb.capabilities.bounding == {CAPABILITIES["CAP_KILL"]}
    assert sb.unknown_capabilities == ("CAP_FROM_THE_FUTURE",)


def test_devices_add_to_the_defaults() -> None:
    fuse = {"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229, "fileMode": 0o620}
    sb = parse_sandbox(config(devices=[fuse]), "/r")
    assert sb.devices[: len(DEFAULT_DEVICES)] == DEFAULT_DEVICES
    assert (sb.devices[-1].path, sb.devices[-1].mode) == ("/dev/fuse", 0o620)


def test_mount_options() -> None:
    assert mount_options(("ro", "nosuid", "nodev", "noexec", "rprivate", "size=8m")) == (
        MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
        MS_PRIVATE | MS_REC,
        "size=8m",
    )
    assert mount_options(("ro", "rw", "defaults")) == (0, 0, "")


def test_json_round_trip() -> None:
    sb = parse_sandbox(config(seccomp={"defaultAction": "SCMP_ACT_ERRNO"}), "/r")
    assert Sandbox.from_json(sb.to_json()) == sb


def test_exec_joins_every_namespace_of_the_init() -> None:
    init = parse_sandbox(config(), "/r")
    process = {"args": ["/x.wasm"], "capabilities": {"bounding": ["CAP_KILL"]}}
    sb = for_exec(init, 4242, process)
    assert [(ns.type, ns.path) for ns in sb.namespaces] == [
        ("pid", "/proc/4242/ns/pid"),
        ("ipc", "/proc/4242/ns/ipc"),
        ("uts", "/proc/4242/ns/uts"),
        ("mount", "/proc/4242/ns/mnt"),
        ("network", "/proc/4242/ns/net"),
    ]
    assert not sb.pivots
    assert sb.pid_namespace == "/proc/4242/ns/pid"
    assert sb.capabilities is not None
    assert sb.capabilities.bounding == {CAPABILITIES["CAP_KILL"]}
    assert sb.seccomp == init.seccomp
    assert sb.no_new_privileges


def _caps(**sets: set[int]) -> Capabilities:
    names = ("bounding", "effective", "permitted", "inheritable", "ambient")
    return Capabilities(**{n: frozenset(sets.get(n, set())) for n in names})


def test_capabilities_after_exec_as_root_and_as_a_user() -> None:
    caps = _caps(bounding={0, 5}, effective={0}, permitted={0}, inheritable={7})
    root = after_exec(caps, 0)
    assert root.permitted == root.effective == {0, 5, 7}
    user = after_exec(caps, 1000)
    assert user.permitted == user.effective == frozenset()
    assert user.inheritable == {7}
    ambient = after_exec(_caps(bounding={5}, permitted={5}, inheritable={5}, ambient={5}), 1000)
    assert ambient.effective == ambient.permitted == ambient.ambient == {5}
