"""`pywasm doctor`: can this node run a Wasm container, and if not, what fixes it.

Each check looks at one thing the way the component that uses it does: the shim is looked up on
the PATH of the running containerd (its /proc environ), the runtime entry is read from the config
file containerd was started with, the compile cache is tried with a real write. Every finding
carries the command that fixes it. Every input is a field of `Node`, so tests can point a check
at a broken copy of one thing while the rest of the node stays good.

Severities: `ok`, `info` (worth knowing, changes nothing), `warn` (a feature is degraded: slower
starts, a Docker short name missing) and `fail` (a Wasm container cannot start). Exit status 1
when any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pywasmd import paths

SHIM_BINARY = "containerd-shim-pywasm-v1"
DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
DEFAULT_CONTAINERD_CONFIG = "/etc/containerd/config.toml"
DEFAULT_DOCKER_CONFIG = "/etc/docker/daemon.json"
FALLBACK_PATH = paths.DEFAULT_PATH
#: Below this much free space a large module's compiled code (tens of MB) may not fit.
MIN_FREE_BYTES = 256 << 20

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    summary: str
    fix: str = ""
    details: dict[str, object] = field(default_factory=dict)


@dataclass
class Node:
    """Where to look. `None` means "as the running containerd sees it" (or the default)."""

    address: str = DEFAULT_ADDRESS
    containerd_config: str | None = None
    docker_config: str = DEFAULT_DOCKER_CONFIG
    cache_dir: str | None = None
    node_config: str | None = None
    path: str | None = None
    zygote_socket: str | None = None
    cgroup_root: str = "/sys/fs/cgroup"
    dockerd: str | None = None


@dataclass
class _Containerd:
    """What the running containerd (the one serving the socket) tells about itself."""

    pid: int | None = None
    exe: str = ""
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


# --- process discovery -------------------------------------------------------------------------


def _socket_inodes(path: str) -> set[str]:
    inodes = set()
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as f:
            next(f, None)
            for line in f:
                parts = line.split()
                # Listening sockets only (flags 00010000 = __SO_ACCEPTCON).
                if len(parts) >= 8 and parts[7] == path and parts[3] == "00010000":
                    inodes.add(parts[6])
    except OSError:
        pass
    return inodes


def listener_pid(path: str) -> int | None:
    """The process that listens on the unix socket `path` (its lowest pid)."""
    wanted = {f"socket:[{i}]" for i in _socket_inodes(path)}
    if not wanted:
        return None
    for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return pid
            except OSError:
                continue
    return None


def _read_environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, eq, value = item.decode(errors="replace").partition("=")
        if eq:
            env[key] = value
    return env


def _read_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _find_containerd(address: str) -> _Containerd:
    pid = listener_pid(address)
    if pid is None:
        return _Containerd()
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    return _Containerd(pid, exe, _read_cmdline(pid), _read_environ(pid))


def _config_from_argv(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            return argv[i + 1]
        for prefix in ("--config=", "-c="):
            if arg.startswith(prefix):
                return arg[len(prefix) :]
    return None


def _run(argv: list[str], timeout: float = 20, env: dict[str, str] | None = None) -> str | None:
    try:
        r = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def _version_of(binary: str) -> str:
    out = _run([binary, "--version"]) or ""
    m = re.search(r"\sv?(\d+\.\d+\.\d+\S*)", out)
    return m.group(1) if m else ""


def _which(name: str, path: str) -> str | None:
    for d in path.split(":"):
        candidate = os.path.join(d or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _installed_shim() -> str:
    """The shim installed next to this `pywasm` (what a fix should link onto PATH)."""
    here = os.path.join(os.path.dirname(sys.executable), SHIM_BINARY)
    return here if os.path.exists(here) else shutil.which(SHIM_BINARY) or SHIM_BINARY


def _interpreter_of(script: str) -> str | None:
    try:
        with open(script, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env" and len(words) > 1:
        return shutil.which(words[1])
    return words[0]


# --- the checks --------------------------------------------------------------------------------


class Doctor:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.ctrd = _find_containerd(node.address)
        self.major: int | None = None
        self.shim: str | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment the shim will inherit: containerd's own, or ours when it is down."""
        return self.ctrd.env if self.ctrd.pid is not None else dict(os.environ)

    def checks(self) -> list[Callable[[], Iterator[Finding]]]:
        return [
            self.containerd,
            self.shim_on_path,
            self.containerd_config,
            self.docker,
            self.cgroups,
            self.zygote,
            self.cache,
            self.engines,
        ]

    def run(self) -> list[Finding]:
        findings: list[Finding] = []
        for check in self.checks():
            try:
                findings.extend(check())
            except Exception as exc:  # a broken check must not hide the others' findings
                name = check.__name__.replace("_", "-")
                findings.append(Finding(name, FAIL, f"the check itself failed: {exc!r}"))
        return findings

    # containerd ------------------------------------------------------------------------------

    def containerd(self) -> Iterator[Finding]:
        address = self.node.address
        if self.ctrd.pid is None:
            binary = shutil.which("containerd")
            version = _version_of(binary) if binary else ""
            if version:
                self.major = int(version.split(".")[0])
            exists = os.path.exists(address)
            why = "exists but nobody listens on it" if exists else "does not exist"
            yield Finding(
                "containerd",
                FAIL,
                f"no containerd serves {address} (the socket {why})"
                + (f"; containerd {version} is installed at {binary}" if binary else ""),
                "systemctl start containerd   (or: containerd --config /etc/containerd/"
                "config.toml &; another socket: pywasm doctor --address SOCK)"
                if binary
                else "apt-get install containerd   (containerd 1.6 or newer)",
                {"address": address, "installed": binary or "", "version": version},
            )
            return
        version = _version_of(self.ctrd.exe) if self.ctrd.exe else ""
        if version:
            self.major = int(version.split(".")[0])
        answers = _connects(address)
        details: dict[str, object] = {
            "address": address,
            "pid": self.ctrd.pid,
            "binary": self.ctrd.exe,
            "version": version,
        }
        if not answers:
            yield Finding(
                "containerd",
                FAIL,
                f"containerd (pid {self.ctrd.pid}) holds {address} but refuses connections",
                f"check containerd's log, then restart it (kill {self.ctrd.pid}; systemctl "
                "restart containerd)",
                details,
            )
            return
        major_minor = tuple(int(x) for x in re.findall(r"\d+", version)[:2]) if version else ()
        if major_minor and major_minor < (1, 6):
            yield Finding(
                "containerd",
                FAIL,
                f"containerd {version} is too old: pywasm needs the runtime v2 API of 1.6+",
                "apt-get install containerd   (1.6 or newer)",
                details,
            )
            return
        yield Finding(
            "containerd",
            OK,
            f"containerd {version or '(version unknown)'} (pid {self.ctrd.pid}) serves {address}",
            details=details,
        )

    def shim_on_path(self) -> Iterator[Finding]:
        path = self.node.path or self.env.get("PATH") or FALLBACK_PATH
        whose = "containerd's" if self.ctrd.pid is not None and not self.node.path else "the"
        found = _which(SHIM_BINARY, path)
        where = f"PATH={path}"
        if found is None and self.ctrd.exe:
            # containerd also looks next to its own binary when PATH has no shim.
            found = _which(SHIM_BINARY, os.path.dirname(self.ctrd.exe))
            where += f" (and {os.path.dirname(self.ctrd.exe)})"
        if found is None:
            target = _installed_shim()
            yield Finding(
                "shim",
                FAIL,
                f"{SHIM_BINARY} is not on {whose} {where}: containerd answers "
                f'"runtime io.containerd.pywasm.v1 binary not installed"',
                f"ln -s {target} /usr/local/bin/{SHIM_BINARY}",
                {"path": path},
            )
            return
        self.shim = found
        interpreter = _interpreter_of(found)
        if interpreter is not None and not os.access(interpreter, os.X_OK):
            yield Finding(
                "shim",
                FAIL,
                f"{found} runs {interpreter}, which is missing or not executable",
                "reinstall pywasmd (make install), then ln -sf "
                f"{_installed_shim()} /usr/local/bin/{SHIM_BINARY}",
                {"binary": found, "interpreter": interpreter},
            )
            self.shim = None
            return
        yield Finding(
            "shim",
            OK,
            f"{found} on {whose} PATH" + (f" (Python {interpreter})" if interpreter else ""),
            details={"binary": found, "interpreter": interpreter or "", "path": path},
        )

    def containerd_config(self) -> Iterator[Finding]:
        import tomllib

        from pywasmd import nodesetup

        path = (
            self.node.containerd_config
            or _config_from_argv(self.ctrd.argv)
            or DEFAULT_CONTAINERD_CONFIG
        )
        major = self.major or nodesetup.detect_containerd_version()
        fix_version = 1 if major == 1 else 2
        fix = f"pywasm config containerd --version {fix_version} --install {path} && "
        fix += "systemctl restart containerd"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            yield Finding("runtime-config", FAIL, f"cannot read {path}: {exc.strerror}", "")
            return
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            yield Finding(
                "runtime-config",
                FAIL,
                f"{path} is not valid TOML ({exc}): containerd does not start with it",
                f"fix the syntax of {path}, then: {fix}",
            )
            return
        disabled = doc.get("disabled_plugins") or []
        cri_names = {"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "cri"}
        if cri_names & set(disabled if isinstance(disabled, list) else []):
            yield Finding(
                "runtime-config",
                INFO,
                f"{path}: containerd's CRI plugin is disabled, so no runtime entry is needed "
                "(ctr and Docker name io.containerd.pywasm.v1 directly)",
                details={"config": path},
            )
            return
        config_version = doc.get("version", 1)
        layout = 2 if config_version == 3 else 1
        if text and config_version not in (2, 3):
            yield Finding(
                "runtime-config",
                FAIL,
                f"{path}: config version {config_version!r}; pywasm's runtime entry needs the "
                "version 2 (containerd 1.x) or 3 (containerd 2.x) layout",
                f"containerd config migrate > {path}.new (containerd 2.x), then: {fix}",
                {"config": path},
            )
            return
        if major == 1 and config_version == 3:
            yield Finding(
                "runtime-config",
                FAIL,
                f"{path}: version = 3 is containerd 2.x's layout; containerd {major}.x reads 2",
                f"rewrite {path} for version = 2, then: {fix}",
                {"config": path},
            )
            return
        try:
            nodesetup.check_containerd(text, layout)
        except Exception:
            where = f"{path} does not declare" if text else f"{path} is missing, so no"
            yield Finding(
                "runtime-config",
                FAIL,
                f"{where} CRI runtime handler {nodesetup.HANDLER!r} "
                f"(runtime_type {nodesetup.RUNTIME_TYPE}): Kubernetes pods with "
                f"runtimeClassName {nodesetup.HANDLER} fail with "
                '"no runtime for \\"pywasm\\" is configured"',
                fix,
                {"config": path, "config_version": config_version},
            )
            return
        yield Finding(
            "runtime-config",
            OK,
            f"{path} (version {config_version}) declares the CRI handler {nodesetup.HANDLER}",
            details={"config": path, "config_version": config_version},
        )

    # Docker ----------------------------------------------------------------------------------

    def docker(self) -> Iterator[Finding]:
        from pywasmd import nodesetup

        dockerd = self.node.dockerd or shutil.which("dockerd")
        path = self.node.docker_config
        if dockerd is None and not os.path.exists(path):
            yield Finding("docker", INFO, "Docker is not installed (nothing to check)")
            return
        fix = f"pywasm config docker --install {path} && systemctl restart docker"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            text = "{}"
        except OSError as exc:
            yield Finding("docker", WARN, f"cannot read {path}: {exc.strerror}", fix)
            return
        try:
            doc = json.loads(text or "{}")
        except ValueError as exc:
            yield Finding(
                "docker",
                FAIL,
                f"{path} is not valid JSON ({exc}): dockerd refuses to start",
                f"fix {path}, then: {fix}",
            )
            return
        if not isinstance(doc, dict):
            yield Finding("docker", FAIL, f"{path} must hold a JSON object", fix)
            return
        runtime = (doc.get("runtimes") or {}).get(nodesetup.HANDLER)
        if not isinstance(runtime, dict) or runtime.get("runtimeType") != nodesetup.RUNTIME_TYPE:
            yield Finding(
                "docker",
                WARN,
                f"{path} has no runtimes.{nodesetup.HANDLER} entry: `docker run --runtime "
                f"{nodesetup.HANDLER}` fails (`--runtime {nodesetup.RUNTIME_TYPE}` still works)",
                fix,
                {"config": path},
            )
        else:
            yield Finding("docker", OK, f"{path} declares the runtime {nodesetup.HANDLER}")
        if not (doc.get("features") or {}).get("containerd-snapshotter"):
            yield Finding(
                "docker",
                WARN,
                f"{path}: Docker's classic image store cannot keep wasi/wasm images (needs "
                '"features": {"containerd-snapshotter": true})',
                fix,
                {"config": path},
            )

    # the host ---------------------------------------------------------------------------------

    def cgroups(self) -> Iterator[Finding]:
        root = self.node.cgroup_root
        if os.path.exists(os.path.join(root, "cgroup.controllers")):
            layout = "v2 (unified)"
            try:
                controllers = Path(root, "cgroup.controllers").read_text().split()
            except OSError:
                controllers = []
        else:
            layout = "v1" + (" + v2 at unified/" if os.path.isdir(f"{root}/unified") else "")
            try:
                controllers = [e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e))]
            except OSError:
                controllers = []
        missing = [c for c in ("memory", "cpu", "pids") if c not in controllers]
        if not controllers:
            yield Finding(
                "cgroups",
                WARN,
                f"no cgroup hierarchy at {root}: memory, CPU and pids limits are not enforced "
                "(the engine's own memory cap still holds)",
                "mount -t cgroup2 none /sys/fs/cgroup",
            )
        elif missing:
            yield Finding(
                "cgroups",
                WARN,
                f"cgroup {layout} at {root} lacks the {', '.join(missing)} controller(s): "
                "those limits are not enforced",
                "enable them on the kernel command line (e.g. cgroup_enable=memory) and reboot",
                {"layout": layout},
            )
        else:
            yield Finding(
                "cgroups",
                OK,
                f"cgroup {layout} at {root}, memory, cpu and pids controllers present",
                details={"layout": layout},
            )

    def zygote(self) -> Iterator[Finding]:
        from pywasmd.shim import zygote

        env = self.env
        if env.get("PYWASM_ZYGOTE", "on") == "off":
            yield Finding(
                "fork-server",
                INFO,
                "PYWASM_ZYGOTE=off in containerd's environment: every start pays the imports",
            )
            return
        path = self.node.zygote_socket or env.get("PYWASM_ZYGOTE_SOCKET") or zygote.socket_path()
        if not os.path.exists(path):
            yield Finding(
                "fork-server",
                INFO,
                f"not running ({path}); the next container start spawns it",
                details={"socket": path},
            )
            return
        pid = listener_pid(path)
        if pid is None or not _connects(path):
            yield Finding(
                "fork-server",
                WARN,
                f"{path} is left from a fork-server that is gone: starts take the slow path",
                f"rm {path}",
                {"socket": path},
            )
            return
        started = _process_start(pid)
        newest = _newest_source()
        if started is not None and newest > started:
            yield Finding(
                "fork-server",
                WARN,
                f"fork-server pid {pid} runs code older than the installed pywasmd (updated "
                "after it started); it replaces itself at the next start, one slow start",
                f"kill {pid}",
                {"socket": path, "pid": pid},
            )
            return
        yield Finding(
            "fork-server",
            OK,
            f"pid {pid} serves {path}",
            details={"socket": path, "pid": pid},
        )

    def cache(self) -> Iterator[Finding]:
        from pywasmd.cache import DEFAULT_DIR

        root = self.node.cache_dir or self.env.get("PYWASM_CACHE_DIR") or DEFAULT_DIR
        existing = root
        while not os.path.exists(existing) and existing not in ("/", ""):
            existing = os.path.dirname(existing)
        size = _tree_size(root)
        try:
            st = os.statvfs(existing)
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = -1
        details: dict[str, object] = {"dir": root, "size_bytes": size, "free_bytes": free}
        writable, why = _try_write(root)
        if not writable:
            yield Finding(
                "cache",
                FAIL,
                f"the compile cache {root} is not writable ({why}): every start compiles "
                "again and Wasm OCI artifacts cannot run (their module is stored there)",
                f"mount -o remount,rw {_mount_point(existing)}   (or give the shim a writable "
                "PYWASM_CACHE_DIR in containerd's environment)",
                details,
            )
            return
        if 0 <= free < MIN_FREE_BYTES:
            yield Finding(
                "cache",
                FAIL,
                f"the compile cache {root} has only {_human(free)} free: compiled modules "
                "(tens of MB) no longer fit",
                f"free space on {_mount_point(existing)}, or rm -rf {root}/*",
                details,
            )
            return
        yield Finding(
            "cache",
            OK,
            f"{root}: {_human(size)} used, {_human(free)} free, writable",
            details=details,
        )

    # engines ---------------------------------------------------------------------------------

    def engines(self) -> Iterator[Finding]:
        from pywasmd.nodeconfig import DEFAULT_PATH, load_node_config

        config_file = self.node.node_config or self.env.get("PYWASM_CONFIG") or DEFAULT_PATH
        try:
            config = load_node_config(config_file)
        except Exception as exc:
            yield Finding(
                "node-config", FAIL, str(exc), f"fix or remove {config_file}: every start fails"
            )
            config = {}
        raw = config.get("engine_python") or {}
        interpreters = dict(raw) if isinstance(raw, dict) else {}
        default = (
            (self.shim and _interpreter_of(self.shim))
            or _interpreter_of(_installed_shim())
            or sys.executable
        )
        default_engine = str(config.get("engine") or "wasmtime")
        for name in ("wasmtime", "wasmer"):
            python = str(interpreters.get(name) or default)
            probe = _probe_engine(python, name)
            where = f"under {python}" + (" (engine_python in " + config_file + ")")
            if name not in interpreters:
                where = f"under the shim's Python {python}"
            needed = name == default_engine
            if probe is None or "error" in probe:
                error = probe["error"] if probe else f"{python} cannot be run"
                fix = (
                    f"{python} -m pip install wasmtime"
                    if name == "wasmtime"
                    else "scripts/venv310.sh, then in "
                    f"{config_file}: engine_python: {{wasmer: <venv310>/bin/python}}"
                )
                yield Finding(
                    f"engine-{name}",
                    FAIL if needed else WARN,
                    f"{name} does not import {where}: {error}"
                    + ("" if needed else f" (only workloads that ask for {name} need it)"),
                    fix,
                    {"python": python},
                )
                continue
            yield Finding(
                f"engine-{name}",
                OK,
                f"{name} {probe['version']} {where}",
                details={"python": python, "version": probe["version"]},
            )
            if name == "wasmtime":
                yield self._sockets(probe)

    def _sockets(self, probe: dict[str, str]) -> Finding:
        version = probe["version"]
        has = probe.get("inherit_network") == "yes"
        summary = (
            f"wasmtime-py {version}: wasmtime._bindings "
            + ("has" if has else "lacks")
            + " wasi_config_inherit_network"
        )
        return Finding(
            "sockets",
            INFO,
            summary,
            details={"wasmtime": version, "wasi_config_inherit_network": has},
        )


_PROBE = r"""
import json, sys
from importlib.metadata import version
name = sys.argv[1]
out = {}
try:
    mod = __import__(name)
    if name == "wasmer":
        mod.Store()
    out["version"] = version(name)
    if name == "wasmtime":
        import wasmtime._bindings as b
        out["inherit_network"] = "yes" if hasattr(b, "wasi_config_inherit_network") else "no"
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def _probe_engine(python: str, name: str) -> dict[str, str] | None:
    # A fresh interpreter: the engine must import where the worker runs, not only here.
    out = _run([python, "-I", "-c", _PROBE, name], timeout=60)
    if not out:
        return None
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return result if isinstance(result, dict) else None


def _connects(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _process_start(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def _newest_source() -> float:
    root = Path(__file__).resolve().parent
    newest = 0.0
    for sub in ("shim", "engines", "oci", "ttrpc"):
        for p in (root / sub).glob("*.py"):
            try:
                newest = max(newest, p.stat().st_mtime)
            except OSError:
                pass
    return newest


def _tree_size(root: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _try_write(root: str) -> tuple[bool, str]:
    """A real write, as the worker does: access(2) says yes to root on a read-only mount."""
    try:
        os.makedirs(root, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".doctor-")
    except OSError as exc:
        return False, exc.strerror or str(exc)
    os.close(fd)
    os.unlink(tmp)
    return True, ""


def _mount_point(path: str) -> str:
    """The mount `path` lives on; from mountinfo, since a bind mount of a directory onto itself
    has the same device as its parent and `os.path.ismount` misses it."""
    path = os.path.realpath(path)
    best = "/"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                point = line.split()[4].encode().decode("unicode_escape")
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best = point
    except OSError:
        pass
    return best


def _human(n: int) -> str:
    if n < 0:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


# --- report ------------------------------------------------------------------------------------


def healthy(findings: list[Finding]) -> bool:
    return all(f.status != FAIL for f in findings)


def render(findings: list[Finding], address: str) -> str:
    lines = [f"pywasm doctor: the node as containerd at {address} sees it", ""]
    for f in findings:
        mark = f.status.upper() if f.status in (WARN, FAIL) else f.status
        lines.append(f"  {mark:5} {f.check:15} {f.summary}")
        if f.fix:
            lines.append(f"  {'':5} {'':15} fix: {f.fix}")
    failed = [f for f in findings if f.status == FAIL]
    warned = [f for f in findings if f.status == WARN]
    lines.append("")
    if failed:
        lines.append(
            f"this node cannot run Wasm containers: {len(failed)} problem(s)"
            + (f", {len(warned)} warning(s)" if warned else "")
            + "; run the fix commands above, then pywasm doctor again"
        )
    else:
        lines.append(
            "this node can run Wasm containers" + (f" ({len(warned)} warning(s))" if warned else "")
        )
    return "\n".join(lines)


def to_json(findings: list[Finding], address: str) -> str:
    return json.dumps(
        {
            "address": address,
            "ok": healthy(findings),
            "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "findings": [asdict(f) for f in findings],
        },
        indent=2,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        metavar="SOCK",
        help="containerd's socket (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument(
        "--containerd-config",
        metavar="PATH",
        help="containerd's config.toml (default: the --config containerd runs with, else "
        f"{DEFAULT_CONTAINERD_CONFIG})",
    )
    p.add_argument(
        "--docker-config",
        default=DEFAULT_DOCKER_CONFIG,
        metavar="PATH",
        help="Docker's daemon.json (default: %(default)s)",
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="the compile cache (default: containerd's PYWASM_CACHE_DIR, else "
        "/var/lib/pywasm/cache)",
    )
    p.add_argument(
        "--node-config",
        metavar="PATH",
        help="the pywasm node config (default: containerd's PYWASM_CONFIG, else "
        "/etc/pywasm/config.yaml)",
    )
    p.add_argument(
        "--path",
        metavar="PATH",
        help="the PATH containerd looks the shim up in (default: the running containerd's)",
    )


def run(args: argparse.Namespace) -> int:
    node = Node(
        address=args.address,
        containerd_config=args.containerd_config,
        docker_config=args.docker_config,
        cache_dir=args.cache_dir,
        node_config=args.node_config,
        path=args.path,
    )
    findings = Doctor(node).run()
    if args.json:
        print(to_json(findings, node.address))
    else:
        print(render(findings, node.address))
    return 0 if healthy(findings) else 1


__all__ = ["Doctor", "Finding", "Node", "healthy", "listener_pid", "render", "run", "to_json"]
