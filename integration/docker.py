"""A private Docker 28 daemon (unpacked from Debian sid) on a private containerd 2.1, for tests.

The daemon uses containerd's image store (`containerd-snapshotter`), no bridge and no
iptables, and keeps everything it owns apart from any system Docker: its data-root lives under
the containerd's temporary directory, its exec-root, pidfile and API socket under /run with
this instance's own name. `stop()` removes every container, ends dockerd by pid, unmounts what
is left under its directories and removes them; the containerd it runs on is stopped by its own
fixture. Run `scripts/fetch-docker.sh` (part of `make install`) to unpack Docker first.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from integration.containerd import Containerd, ContainerdError, mounts_under
from pywasmd import nodesetup

REPO = Path(__file__).resolve().parent.parent
DOCKER_PREFIX = REPO / ".cache" / "docker-28"
DOCKERD = DOCKER_PREFIX / "usr" / "sbin" / "dockerd"
DOCKER_CLI = DOCKER_PREFIX / "usr" / "bin" / "docker"
#: Debian sid's docker-buildx, a CLI plugin: found by the client in $DOCKER_CONFIG/cli-plugins.
BUILDX = DOCKER_PREFIX / "usr" / "libexec" / "docker" / "cli-plugins" / "docker-buildx"
PYWASM = "io.containerd.pywasm.v1"
#: The containerd namespace Docker keeps its containers and images in.
NAMESPACE = "moby"


class DockerError(RuntimeError):
    pass


class Dockerd:
    """One private dockerd on `ctrd` (which must be containerd 2.1). start()/stop().

    `bridge=True` keeps Docker's default bridge network (docker0, a veth per container); such a
    daemon configures network interfaces, so it must run in a network namespace of the test's
    own: `launcher` is then e.g. `["nsenter", "--net=/run/netns/N"]` (integration/netns.py)."""

    def __init__(
        self, ctrd: Containerd, *, bridge: bool = False, launcher: Sequence[str] = ()
    ) -> None:
        if bridge and not launcher:
            raise DockerError(
                "a bridge-network dockerd would configure this machine's own network: give it "
                "a launcher that enters a test network namespace (integration/netns.py)"
            )
        self.bridge = bridge
        self.launcher = list(launcher)
        if ctrd.version != "2.1":
            raise DockerError(f"Docker 28 needs containerd 2.x, not {ctrd.version}")
        self.ctrd = ctrd
        self.name = ctrd.state.name + "-docker"
        self.dir = ctrd.tmp / "docker"
        self.data_root = self.dir / "data"
        self.exec_root = Path(f"/run/{self.name}")
        self.pidfile = Path(f"/run/{self.name}.pid")
        self.socket = Path(f"/run/{self.name}.sock")
        self.host = f"unix://{self.socket}"
        self.config = self.dir / "daemon.json"
        self.log = self.dir / "dockerd.log"
        self.config_dir = self.dir / "client"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0
        self.env = dict(ctrd.env)
        bins = f"{DOCKER_PREFIX / 'usr' / 'bin'}:{DOCKER_PREFIX / 'usr' / 'sbin'}"
        self.env["PATH"] = f"{bins}:{ctrd.env['PATH']}"
        self.env["DOCKER_HOST"] = self.host
        # The client keeps its own config (no credentials, no contexts of the machine's user).
        self.env["DOCKER_CONFIG"] = str(self.config_dir)
        for var in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
            self.env.pop(var, None)

    def daemon_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "features": {"containerd-snapshotter": True},
            "iptables": False,
            "ip6tables": False,
            "bridge": "none",
            "data-root": str(self.data_root),
            "exec-root": str(self.exec_root),
            "pidfile": str(self.pidfile),
            "hosts": [self.host],
            "containerd": self.ctrd.address,
            "log-level": "debug",
            # What `pywasm config docker` installs: `--runtime pywasm` as a short name.
            "runtimes": nodesetup.docker_config()["runtimes"],
        }
        if self.bridge:
            del config["bridge"]
        return config

    def start(self, timeout: float = 60.0) -> Dockerd:
        for binary in (DOCKERD, DOCKER_CLI):
            if not binary.exists():
                raise DockerError(f"{binary} is missing (run scripts/fetch-docker.sh)")
        for path in (self.exec_root, self.pidfile, self.socket):
            if path.exists():
                raise DockerError(f"{path} already exists")
        self.data_root.mkdir(parents=True)
        self.config_dir.mkdir(parents=True)
        if BUILDX.exists():
            (self.config_dir / "cli-plugins").mkdir()
            (self.config_dir / "cli-plugins" / "docker-buildx").symlink_to(BUILDX)
        self.config.write_text(json.dumps(self.daemon_config(), indent=2) + "\n")
        t0 = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.launcher, str(DOCKERD), "--config-file", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                cwd=self.dir,
                start_new_session=True,
            )
        deadline = t0 + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"dockerd exited with {self.proc.returncode}")
            if self.socket.exists():
                r = self.docker("version", "--format", "{{.Server.Version}}", timeout=10)
                if r.returncode == 0:
                    self.start_seconds = time.monotonic() - t0
                    return self
                last = r.stderr
            time.sleep(0.1)
        self._fail(f"dockerd did not answer within {timeout:.0f}s: {last}")
        raise AssertionError("unreachable")

    def _fail(self, why: str) -> None:
        tail = self.log_tail(40)
        self.stop()
        raise DockerError(f"{why}\n--- {self.log} (tail) ---\n{tail}")

    # --- use ------------------------------------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        return [str(DOCKER_CLI), "--host", self.host, *args]

    def docker(
        self,
        *args: str,
        input: str | None = None,
        timeout: float = 60,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker client against this daemon. stdin is empty unless `input` is given.

        Output is decoded without newline translation, so a terminal's CRLF stays visible."""
        argv = self.argv(*args)
        raw = subprocess.run(
            argv,
            input=None if input is None else input.encode(),
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )
        r = subprocess.CompletedProcess(
            argv,
            raw.returncode,
            raw.stdout.decode(errors="replace"),
            raw.stderr.decode(errors="replace"),
        )
        if check and r.returncode != 0:
            raise DockerError(
                f"{' '.join(argv)} exited {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
            )
        return r

    def background(self, *args: str, stdin_pipe: bool = False) -> DockerBackground:
        return DockerBackground(self, *args, stdin_pipe=stdin_pipe)

    def inspect(self, name: str) -> dict[str, Any]:
        r = self.docker("inspect", "--type", "container", name, check=True)
        found = json.loads(r.stdout)
        assert isinstance(found, list), r.stdout
        assert len(found) == 1, r.stdout
        item = found[0]
        assert isinstance(item, dict)
        return item

    def container_state(self, name: str) -> dict[str, Any]:
        state = self.inspect(name)["State"]
        assert isinstance(state, dict)
        return state

    def wait_state(self, name: str, status: str, timeout: float = 20) -> dict[str, Any]:
        """Poll `inspect` until State.Status is `status` (or time runs out); the last state."""
        deadline = time.monotonic() + timeout
        state = self.container_state(name)
        while state["Status"] != status and time.monotonic() < deadline:
            time.sleep(0.1)
            state = self.container_state(name)
        return state

    def container_ids(self) -> list[str]:
        return self.docker("ps", "-aq", "--no-trunc", timeout=30).stdout.split()

    def remove_all(self) -> None:
        ids = self.container_ids()
        if ids:
            self.docker("rm", "-f", *ids, timeout=60)

    def load(self, archive: Path) -> str:
        r = self.docker("load", "-i", str(archive), timeout=120, check=True)
        return r.stdout

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text.splitlines()[-lines:])

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

    # --- tear-down ------------------------------------------------------------------------

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.remove_all()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for point in mounts_under(self.data_root, self.exec_root):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        for path in (self.pidfile, self.socket):
            path.unlink(missing_ok=True)
        if os.environ.get("PYWASMD_IT_KEEP"):
            return
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Dockerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Dockerd(host={self.host!r}, containerd={self.ctrd.address!r})"


class DockerBackground:
    """A docker client process running in the background, output collected by threads."""

    def __init__(self, dockerd: Dockerd, *args: str, stdin_pipe: bool = False) -> None:
        self.argv = dockerd.argv(*args)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dockerd.env,
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

    @property
    def stdout(self) -> str:
        with self._cond:
            return self._out.decode(errors="replace")

    @property
    def stderr(self) -> str:
        with self._cond:
            return self._err.decode(errors="replace")

    def send(self, data: bytes, close: bool = True) -> None:
        assert self.proc.stdin is not None, "started without stdin_pipe"
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        if close:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()

    def wait_for(self, text: str, timeout: float = 30) -> bool:
        """Wait until `text` appears in stdout (True), or the process ends, or time runs out."""
        deadline = time.monotonic() + timeout
        needle = text.encode()
        with self._cond:
            while needle not in self._out:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if self.proc.poll() is not None and not any(t.is_alive() for t in self._threads):
                    return needle in self._out
                self._cond.wait(min(left, 0.1))
            return True

    def wait(self, timeout: float = 30) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        for t in self._threads:
            t.join(5)
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

    def __enter__(self) -> DockerBackground:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["BUILDX", "DOCKER_CLI", "DOCKERD", "ContainerdError", "DockerError", "Dockerd", "PYWASM"]
