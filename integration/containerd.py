"""A private containerd (1.6 from Debian bookworm, or 2.1 unpacked from Debian sid) for tests.

Each instance has its own root (under a temporary directory), its own state directory and
socket under /run, its own log file, and never touches a system containerd. `stop()` ends it by
pid, ends the processes its shims started (found by this containerd's address in their arguments
or environment, plus their descendants), unmounts whatever is left under its directories and
removes them. Set PYWASMD_IT_KEEP=1 to keep the temporary directory (log, config, root).

`Containerd(version, cri=True)` keeps containerd's CRI plugin on, as on a Kubernetes node: the
pywasm runtime handler comes from the shipped snippet (`pywasm config containerd --version N`,
the text of packaging/containerd/config-N.x.toml) appended to the config unchanged; the sandbox
(pause) image is a locally imported one (`sandbox_image`), so no image is ever pulled; CNI's conf
and bin dirs are empty private directories (pods use the node's network); CRI's own root and
state live under this instance's root and state (containerd gives each plugin a directory
there), pod logs under `<tmp>/pods`. `stop()` first stops and removes every pod through CRI.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
C21_PREFIX = REPO / ".cache" / "containerd-2.1"
SYSTEM_PATH = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"

VERSIONS = ("1.6", "2.1")
#: The pause image the CRI tests import (integration/cri_images.py) and CRI is told to use.
PAUSE_IMAGE = "docker.io/library/pw-pause:latest"
HOST_SENTINEL = "PYWASMD_IT_HOST_SENTINEL"
_counter = itertools.count()
_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    """A container id unique within the session: PREFIX-PID-N."""
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


@dataclass(frozen=True)
class Flavor:
    version: str
    containerd: Path
    ctr: Path
    config_version: int
    extra_path: tuple[str, ...]


def flavor(version: str) -> Flavor:
    if version == "1.6":
        return Flavor(version, Path("/usr/bin/containerd"), Path("/usr/bin/ctr"), 2, ())
    if version == "2.1":
        bindir = C21_PREFIX / "usr" / "bin"
        return Flavor(version, bindir / "containerd", bindir / "ctr", 3, (str(bindir),))
    raise ValueError(f"unknown containerd version {version!r}; known: {', '.join(VERSIONS)}")


class ContainerdError(RuntimeError):
    pass


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.splitlines()[-lines:])


def mounts_under(*dirs: Path | str) -> list[str]:
    """Mount points (from /proc/self/mountinfo) at or below any of `dirs`, deepest first."""
    prefixes = [str(d).rstrip("/") for d in dirs]
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if any(point == p or point.startswith(p + "/") for p in prefixes):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def _pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


class Containerd:
    """One private containerd process. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        version: str,
        *,
        log_level: str = "debug",
        cri: bool = False,
        sandbox_image: str = PAUSE_IMAGE,
    ) -> None:
        self.flavor = flavor(version)
        self.version = version
        self.log_level = log_level
        self.cri = cri
        self.sandbox_image = sandbox_image
        n = next(_counter)
        suffix = f"{os.getpid()}" + (f"-{n}" if n else "")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"pywasmd-it-{version}-"))
        self.root = self.tmp / "root"
        self.state = Path(f"/run/pywasmd-it-{version}-{suffix}")
        self.address = str(self.state / "containerd.sock")
        self.config = self.tmp / "config.toml"
        self.log = self.tmp / "containerd.log"
        self.cni_conf_dir = self.tmp / "cni" / "net.d"
        self.cni_bin_dir = self.tmp / "cni" / "bin"
        self.pod_logs = self.tmp / "pods"
        #: the runtime snippet appended to the config (CRI only), as `pywasm config` printed it
        self.cri_snippet = ""
        #: ids (CRI pod sandbox ids) whose shim servers belong to this containerd even when
        #: their process title does not show its address: the pywasm server's title
        #: (`containerd-shim-pywasm-v1 -namespace NS -id ID -address ADDR`) is cut to the
        #: argv+environ space of the process that forked it, and with a 64-character CRI id
        #: the address is cut off.
        self.shim_ids: set[str] = set()
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = self._environment()
        self.start_seconds = 0.0
        #: argv prefix containerd is started with, e.g. `nsenter --net=/run/netns/N` (which
        #: execs containerd: the pid stays containerd's)
        self.launcher: list[str] = []

    # --- set-up ---------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        path = ["/usr/local/bin", str(VENV_BIN), *self.flavor.extra_path, SYSTEM_PATH]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}
        env["PATH"] = ":".join(path)
        # Visible to containerd and its shims, never to a guest: tests check it does not leak.
        env[HOST_SENTINEL] = "host-only"
        return env

    def _config_text(self) -> str:
        if self.cri:
            return self._cri_config_text()
        if self.flavor.config_version == 2:
            disabled = '["io.containerd.grpc.v1.cri"]'
        else:
            disabled = (
                '["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images",'
                ' "io.containerd.cri.v1.runtime", "io.containerd.nri.v1.nri"]'
            )
        return self._base_config(disabled)

    def _base_config(self, disabled: str) -> str:
        return (
            f"version = {self.flavor.config_version}\n"
            f'root = "{self.root}"\n'
            f'state = "{self.state}"\n'
            f"disabled_plugins = {disabled}\n"
            "[grpc]\n"
            f'  address = "{self.address}"\n'
            "[debug]\n"
            f'  level = "{self.log_level}"\n'
        )

    def shipped_cri_snippet(self) -> str:
        """What `pywasm config containerd --version N` prints for this containerd."""
        major = self.version.split(".")[0]
        argv = [str(VENV_BIN / "pywasm"), "config", "containerd", "--version", major]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if r.returncode != 0 or not r.stdout.strip():
            raise ContainerdError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        return r.stdout

    def _cri_config_text(self) -> str:
        """CRI on, NRI off (its socket would be the host's /var/run/nri), CDI off, nothing
        read from /etc/cni or /opt/cni, runc (cgroupfs) as the default handler, pywasm from
        the shipped snippet. `restrict_oom_score_adj`: CRI gives a sandbox oom_score_adj -998,
        which these machines refuse (no CAP_SYS_RESOURCE; runc init fails with "failed to
        update /proc/self/oom_score_adj: Permission denied"); restricted, CRI asks for no less
        than containerd's own score."""
        self.cri_snippet = self.shipped_cri_snippet()
        if self.flavor.config_version == 2:  # containerd 1.6
            cri = '"io.containerd.grpc.v1.cri"'
            body = (
                f"[plugins.{cri}]\n"
                f'  sandbox_image = "{self.sandbox_image}"\n'
                '  stream_server_address = "127.0.0.1"\n'
                '  stream_server_port = "0"\n'
                "  enable_selinux = false\n"
                "  restrict_oom_score_adj = true\n"
                f"[plugins.{cri}.cni]\n"
                f'  bin_dir = "{self.cni_bin_dir}"\n'
                f'  conf_dir = "{self.cni_conf_dir}"\n'
                f"[plugins.{cri}.containerd]\n"
                '  snapshotter = "overlayfs"\n'
                '  default_runtime_name = "runc"\n'
                f"[plugins.{cri}.containerd.runtimes.runc]\n"
                '  runtime_type = "io.containerd.runc.v2"\n'
                f"[plugins.{cri}.containerd.runtimes.runc.options]\n"
                "  SystemdCgroup = false\n"
            )
            disabled = "[]"
        else:  # containerd 2.x
            images = '"io.containerd.cri.v1.images"'
            runtime = '"io.containerd.cri.v1.runtime"'
            body = (
                f"[plugins.{images}]\n"
                '  snapshotter = "overlayfs"\n'
                f"[plugins.{images}.pinned_images]\n"
                f'  sandbox = "{self.sandbox_image}"\n'
                f"[plugins.{runtime}]\n"
                "  enable_selinux = false\n"
                "  enable_cdi = false\n"
                "  restrict_oom_score_adj = true\n"
                f"[plugins.{runtime}.cni]\n"
                f'  bin_dirs = ["{self.cni_bin_dir}"]\n'
                f'  conf_dir = "{self.cni_conf_dir}"\n'
                f"[plugins.{runtime}.containerd]\n"
                '  default_runtime_name = "runc"\n'
                f"[plugins.{runtime}.containerd.runtimes.runc]\n"
                '  runtime_type = "io.containerd.runc.v2"\n'
                f"[plugins.{runtime}.containerd.runtimes.runc.options]\n"
                "  SystemdCgroup = false\n"
                '[plugins."io.containerd.grpc.v1.cri"]\n'
                '  stream_server_address = "127.0.0.1"\n'
                '  stream_server_port = "0"\n'
            )
            disabled = '["io.containerd.nri.v1.nri"]'
        return (
            self._base_config(disabled)
            + body
            + "\n# --- the shipped pywasm snippet, unchanged ---\n"
            + self.cri_snippet
        )

    def start(self, timeout: float = 30.0) -> Containerd:
        for binary in (self.flavor.containerd, self.flavor.ctr):
            if not binary.exists():
                hint = "make containerd21" if self.version == "2.1" else "make install"
                raise ContainerdError(f"containerd {self.version}: {binary} is missing ({hint})")
        if self.state.exists():
            raise ContainerdError(f"state directory {self.state} already exists")
        self.root.mkdir(parents=True)
        self.state.mkdir(parents=True)
        if self.cri:
            for d in (self.cni_conf_dir, self.cni_bin_dir, self.pod_logs):
                d.mkdir(parents=True)
        self.config.write_text(self._config_text())
        return self._launch(timeout)

    def _launch(self, timeout: float) -> Containerd:
        """Run containerd on the existing config, root and state; wait until it answers."""
        t0 = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.launcher, str(self.flavor.containerd), "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                cwd=self.tmp,
                start_new_session=True,
            )
        deadline = t0 + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"containerd {self.version} exited with {self.proc.returncode}")
            if os.path.exists(self.address):
                r = self.ctr("version", timeout=5)
                if r.returncode == 0:
                    self.start_seconds = time.monotonic() - t0
                    return self
                last = r.stderr
            time.sleep(0.05)
        self._fail(f"containerd {self.version} did not answer within {timeout:.0f}s: {last}")
        raise AssertionError("unreachable")

    def _fail(self, why: str) -> None:
        tail = self.log_tail(40)
        self.stop()
        raise ContainerdError(f"{why}\n--- {self.log} (tail) ---\n{tail}")

    def restart(
        self,
        sig: int = signal.SIGTERM,
        during: Callable[[], None] | None = None,
        timeout: float = 30.0,
    ) -> float:
        """Stop containerd by its pid with `sig` (its shims live on), call `during` while it is
        down, start it again on the same config, root and state; returns the seconds it was
        unreachable."""
        if self.proc is None or self.proc.poll() is not None:
            raise ContainerdError(f"containerd {self.version} is not running")
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if during is not None:
            during()
        self._launch(timeout)
        return time.monotonic() - t0

    # --- use ------------------------------------------------------------------------------

    def ctr_argv(self, *args: str, namespace: str = "default") -> list[str]:
        return [str(self.flavor.ctr), "-a", self.address, "-n", namespace, *args]

    def ctr(
        self,
        *args: str,
        input: str | bytes | None = None,
        timeout: float = 60,
        check: bool = False,
        namespace: str = "default",
        text: bool = True,
    ) -> subprocess.CompletedProcess[Any]:
        """Run ctr against this containerd. stdin is empty unless `input` is given."""
        if isinstance(input, str) and not text:
            input = input.encode()
        if isinstance(input, bytes) and text:
            input = input.decode()
        argv = self.ctr_argv(*args, namespace=namespace)
        r = subprocess.run(
            argv,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=text,
            timeout=timeout,
            env=self.env,
            check=False,
        )
        if check and r.returncode != 0:
            raise ContainerdError(
                f"{' '.join(argv)} exited {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
            )
        return r

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log, lines)

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError as e:
            return f"(no log: {e})"

    def shim_pids(self, binary: str = "containerd-shim-pywasm-v1") -> list[int]:
        """Pids of live shim processes (of `binary`) that serve this containerd."""
        return [
            pid
            for pid in _pids()
            if (argv := _cmdline(pid))
            and any(os.path.basename(a) == binary for a in argv[:2])
            and any(self.address in a for a in argv)
        ]

    def all_shim_pids(self) -> list[int]:
        """Every live process this containerd's shims started: the shims (their arguments name
        this containerd's address), anything that inherited the shim environment (containerd
        gives shims GRPC_ADDRESS/TTRPC_ADDRESS), and all of their descendants."""
        own = self.proc.pid if self.proc else -1
        needle = ("=" + self.address).encode()
        children: dict[int, list[int]] = {}
        roots = set()
        for pid in _pids():
            if pid in (own, os.getpid()):
                continue
            stat = _stat(pid)
            if stat is None or stat[0] in ("Z", "X"):  # gone, or a zombie nobody reaped yet
                continue
            children.setdefault(stat[1], []).append(pid)
            argv = _cmdline(pid)
            # A shim server renamed by setproctitle has one argv entry: its whole title.
            titled = bool(argv) and (
                f"-address {self.address}" in argv[0] or self._known_title(argv[0])
            )
            if titled or any(self.address in a for a in argv[1:]) or needle in _environ(pid):
                roots.add(pid)
        found, todo = set(), list(roots)
        while todo:
            pid = todo.pop()
            if pid not in found:
                found.add(pid)
                todo += children.get(pid, [])
        return sorted(found)

    def _known_title(self, title: str) -> bool:
        if not self.shim_ids or not title.startswith("containerd-shim-"):
            return False
        m = re.search(r" -id (\S+)", title)
        return m is not None and m.group(1) in self.shim_ids

    def mounts(self) -> list[str]:
        return mounts_under(self.root, self.state)

    # --- tear-down ------------------------------------------------------------------------

    def cleanup_tasks(self) -> None:
        """Kill and delete every task and container in every namespace (best effort)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        r = self.ctr("namespaces", "ls", "-q", timeout=10)
        for ns in r.stdout.split() if r.returncode == 0 else ["default"]:
            tasks = self.ctr("tasks", "ls", "-q", namespace=ns, timeout=10).stdout.split()
            for task in tasks:
                self.ctr("tasks", "kill", "-a", "-s", "SIGKILL", task, namespace=ns, timeout=10)
            for task in tasks:
                self.ctr("tasks", "rm", "-f", task, namespace=ns, timeout=20)
            containers = self.ctr("containers", "ls", "-q", namespace=ns, timeout=10).stdout
            for c in containers.split():
                self.ctr("containers", "rm", c, namespace=ns, timeout=20)

    def cleanup_cri(self) -> list[str]:
        """Stop and remove every pod and container through CRI (best effort, CRI only)."""
        if not self.cri or self.proc is None or self.proc.poll() is not None:
            return []
        from integration.cri import CriClient

        with CriClient(self.address, timeout=30) as client:
            return client.remove_everything()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.cleanup_cri()
        with contextlib.suppress(Exception):
            self.cleanup_tasks()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # Shims this containerd started outlive it; they are ours, end them by pid.
        for pid in self.all_shim_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for point in mounts_under(self.root, self.state):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(self.state, ignore_errors=True)
        if os.environ.get("PYWASMD_IT_KEEP"):
            return
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Containerd({self.version!r}, address={self.address!r})"


def run_args(
    image: str,
    cid: str,
    *args: str,
    runtime: str = "io.containerd.pywasm.v1",
    platform: str | None = "wasi/wasm",
    extra: Sequence[str] = (),
    rm: bool = True,
    detach: bool = False,
) -> list[str]:
    """The ctr arguments of `ctr run ... IMAGE ID ARGS...`."""
    argv = ["run"]
    if rm:
        argv.append("--rm")
    if detach:
        argv.append("-d")
    argv += ["--runtime", runtime]
    if platform:
        argv += ["--platform", platform]
    argv += [*extra, image, cid, *args]
    return argv


def run(
    ctrd: Containerd,
    image: str,
    cid: str,
    *args: str,
    runtime: str = "io.containerd.pywasm.v1",
    extra: Sequence[str] = (),
    input: str | bytes | None = None,
    timeout: float = 60,
    text: bool = True,
) -> subprocess.CompletedProcess[Any]:
    """`ctr run --rm --runtime RUNTIME --platform wasi/wasm IMAGE ID ARGS...` (the platform is
    linux/amd64 for runc).

    With `input`, stdin is written only once the task runs, then closed: ctr closes the task's
    stdin on end of file only if the end comes after the task exists (ctr's `stdinCloser` has
    no closer before that), so `echo hi | ctr run ...` can hang forever with any runtime.
    """
    platform = "wasi/wasm" if "pywasm" in runtime else "linux/amd64"
    argv = run_args(image, cid, *args, runtime=runtime, platform=platform, extra=extra)
    if input is None:
        return ctrd.ctr(*argv, timeout=timeout, text=text)
    data = input.encode() if isinstance(input, str) else input
    with Background(ctrd, *argv, stdin_pipe=True) as bg:
        deadline = time.monotonic() + timeout
        while bg.proc.poll() is None and task_status(ctrd, cid) != "RUNNING":
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(bg.argv, timeout)
            time.sleep(0.05)
        bg.send(data)
        code = bg.wait(max(1.0, deadline - time.monotonic()))
        out, err = bytes(bg.stdout_bytes), bytes(bg.stderr_bytes)
    if text:
        return subprocess.CompletedProcess(
            bg.argv, code, out.decode(errors="replace"), err.decode(errors="replace")
        )
    return subprocess.CompletedProcess(bg.argv, code, out, err)


def task_status(ctrd: Containerd, cid: str, namespace: str = "default") -> str | None:
    """STATUS column of `ctr task ls` for `cid` (None when there is no such task)."""
    r = ctrd.ctr("tasks", "ls", timeout=20, namespace=namespace)
    for line in r.stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[-1]
    return None


class Background:
    """A ctr process running in the background whose output is collected by reader threads."""

    def __init__(self, ctrd: Containerd, *args: str, stdin_pipe: bool = False) -> None:
        self.argv = ctrd.ctr_argv(*args)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ctrd.env,
        )
        self._out = bytearray()
        self._err = bytearray()
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream: IO[bytes], buf: bytearray) -> None:
        while chunk := stream.read1(65536):  # type: ignore[attr-defined]
            with self._cond:
                buf.extend(chunk)
                self._cond.notify_all()
        stream.close()

    def send(self, data: bytes, close: bool = True) -> None:
        """Write `data` to ctr's stdin (needs stdin_pipe=True), then close it."""
        assert self.proc.stdin is not None, "started without stdin_pipe"
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        if close:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()

    @property
    def stdout_bytes(self) -> bytes:
        with self._cond:
            return bytes(self._out)

    @property
    def stderr_bytes(self) -> bytes:
        with self._cond:
            return bytes(self._err)

    @property
    def stdout(self) -> str:
        with self._cond:
            return self._out.decode(errors="replace")

    @property
    def stderr(self) -> str:
        with self._cond:
            return self._err.decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 30) -> bool:
        """Wait until `text` appears in stdout (True) or the process ends or time runs out."""
        deadline = time.monotonic() + timeout
        needle = text.encode()
        with self._cond:
            while needle not in self._out:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._alive()):
                    return needle in self._out
                self._cond.wait(min(left, 0.1))
            return True

    def _alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def wait(self, timeout: float = 30) -> int:
        """Wait for the exit status; kills the process (and raises) when it takes too long."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        for t in self._threads:
            t.join(5)
        if self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for t in self._threads:
            t.join(5)
        if self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
