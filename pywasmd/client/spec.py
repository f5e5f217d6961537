"""The OCI runtime config `pywasm run` gives containerd: containerd's defaults for a Linux
container (as `ctr run` makes them), the image's config, then the user's options, in that
order, the way `docker run` layers them. Pure: data in, JSON-able data out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pywasmd import paths
from pywasmd.errors import InvalidArgument

DEFAULT_PATH = "PATH=" + paths.DEFAULT_PATH
#: containerd's default capability set for a container (oci/spec.go, defaultUnixCaps).
DEFAULT_CAPS = (
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
)
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
)
READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)
_CPU_PERIOD = 100_000
_SIZE = re.compile(r"^(\d+)([bkmg]?)b?$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass(frozen=True)
class Mount:
    """A `-v SRC:DST[:ro]` bind or a `--tmpfs DST[:OPTS]`."""

    destination: str
    source: str
    type: str = "bind"
    readonly: bool = False
    options: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        if self.type == "tmpfs":
            return {
                "destination": self.destination,
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", *self.options],
            }
        return {
            "destination": self.destination,
            "type": "bind",
            "source": self.source,
            "options": ["rbind", "ro" if self.readonly else "rw"],
        }


@dataclass(frozen=True)
class ImageConfig:
    """What the image's config (`config` of an OCI image config) says about running it."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ImageConfig:
        config = doc.get("config") or {}

        def strings(key: str) -> tuple[str, ...]:
            value = config.get(key) or []
            return tuple(str(v) for v in value) if isinstance(value, list) else ()

        return cls(
            entrypoint=strings("Entrypoint"),
            cmd=strings("Cmd"),
            env=strings("Env"),
            working_dir=str(config.get("WorkingDir") or ""),
            user=str(config.get("User") or ""),
        )


@dataclass(frozen=True)
class RunOptions:
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    workdir: str = ""
    user: str = ""
    memory: int | None = None
    cpus: float | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    net_host: bool = False
    terminal: bool = False
    readonly_rootfs: bool = False
    hostname: str = ""


def parse_size(text: str, flag: str) -> int:
    m = _SIZE.match(text.strip())
    if not m or int(m.group(1)) <= 0:
        raise InvalidArgument(f"{flag} {text!r}: expected a size such as 64m, 1g or 1048576")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def parse_volume(spec: str) -> Mount:
    """`-v SRC:DST[:ro|rw]`, SRC an absolute host path."""
    parts = spec.split(":")
    mode = ""
    if len(parts) == 3:
        mode = parts.pop()
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise InvalidArgument(f"-v {spec!r}: expected SRC:DST[:ro], e.g. -v /srv/data:/data:ro")
    source, destination = parts
    if mode not in ("", "ro", "rw"):
        raise InvalidArgument(f"-v {spec!r}: the mode must be ro or rw, not {mode!r}")
    if not source.startswith("/"):
        raise InvalidArgument(
            f"-v {spec!r}: the host path must be absolute (named volumes are Docker's); "
            f"e.g. -v $PWD/{source}:{destination}"
        )
    if not destination.startswith("/"):
        raise InvalidArgument(f"-v {spec!r}: the container path {destination!r} must be absolute")
    return Mount(destination, source, readonly=mode == "ro")


def parse_tmpfs(spec: str) -> Mount:
    """`--tmpfs DST[:size=64m,mode=1777]`."""
    destination, _, opts = spec.partition(":")
    if not destination.startswith("/"):
        raise InvalidArgument(f"--tmpfs {spec!r}: the path must be absolute, e.g. /tmp")
    options = tuple(o for o in opts.split(",") if o)
    return Mount(destination, "tmpfs", type="tmpfs", options=options)


def parse_user(text: str, flag: str = "--user") -> tuple[int, int]:
    """Numeric `UID[:GID]` only: the rootfs of a Wasm image has no /etc/passwd to look up."""
    uid_text, _, gid_text = text.partition(":")
    try:
        uid = int(uid_text)
        gid = int(gid_text) if gid_text else 0
    except ValueError:
        raise InvalidArgument(
            f"{flag} {text!r}: give numeric ids, UID[:GID] (e.g. 1000:1000); names need an "
            "/etc/passwd, which Wasm images do not have"
        ) from None
    if not (0 <= uid < 2**32 and 0 <= gid < 2**32):
        raise InvalidArgument(f"{flag} {text!r}: ids must be 0 to 4294967295")
    return uid, gid


def _merge_env(*layers: Sequence[str]) -> list[str]:
    merged: dict[str, str] = {}
    for layer in layers:
        for item in layer:
            key, eq, _ = item.partition("=")
            if not eq or not key:
                raise InvalidArgument(f"environment entry {item!r}: expected KEY=VALUE")
            merged[key] = item
    return list(merged.values())


def process_args(image: ImageConfig, args: Sequence[str]) -> list[str]:
    """docker's rule: user arguments replace the image's Cmd, never its Entrypoint."""
    argv = [*image.entrypoint, *(args or image.cmd)]
    if not argv:
        raise InvalidArgument(
            "the image has no entrypoint or command: name the module to run after the image, "
            "e.g. pywasm run IMAGE /app.wasm"
        )
    return argv


def build_spec(
    container_id: str,
    namespace: str,
    image: ImageConfig,
    opts: RunOptions,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    args = list(argv) if argv is not None else process_args(image, opts.args)
    uid, gid = parse_user(opts.user or image.user or "0", "--user" if opts.user else "image User")
    env = _merge_env([DEFAULT_PATH], image.env, opts.env)
    if opts.terminal and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    cwd = opts.workdir or image.working_dir or "/"
    if not cwd.startswith("/"):
        raise InvalidArgument(f"-w {cwd!r}: the working directory must be an absolute path")
    caps = list(DEFAULT_CAPS)
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if not opts.net_host:
        namespaces.append({"type": "network"})
    mounts: list[dict[str, Any]] = [
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
    ]
    mounts += [m.to_json() for m in opts.mounts]
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if opts.memory is not None:
        resources["memory"] = {"limit": opts.memory}
    if opts.cpus is not None:
        if opts.cpus <= 0:
            raise InvalidArgument(f"--cpus {opts.cpus}: must be more than 0, e.g. 0.5")
        resources["cpu"] = {"period": _CPU_PERIOD, "quota": int(opts.cpus * _CPU_PERIOD)}
    spec: dict[str, Any] = {
        "ociVersion": "1.1.0",
        "process": {
            "terminal": opts.terminal,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": opts.readonly_rootfs},
        "hostname": opts.hostname,
        "mounts": mounts,
        "annotations": dict(opts.annotations),
        "linux": {
            "resources": resources,
            "cgroupsPath": f"/{namespace}/{container_id}",
            "namespaces": namespaces,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
    return spec
