"""A private OCI registry (Debian's `docker-registry`) on 127.0.0.1 for tests.

Each instance listens on a free loopback port with its storage in a temporary directory, and is
ended by pid. `stop()` leaves the port refusing connections, which is what the "registry is
down" tests use.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BINARY = Path("/usr/bin/docker-registry")


class RegistryError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRegistry:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="pywasmd-registry-"))
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.config = self.tmp / "config.yml"
        self.log = self.tmp / "registry.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> LocalRegistry:
        if not BINARY.exists():
            raise RegistryError(f"{BINARY} is missing; run `make install` (apt docker-registry)")
        (self.tmp / "storage").mkdir()
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {self.tmp / 'storage'}\n"
            "  delete:\n    enabled: true\n"
            "http:\n"
            f"  addr: {self.host}\n"
        )
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(BINARY), "serve", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RegistryError(f"docker-registry exited {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RegistryError(f"docker-registry did not answer on {self.host}: {self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.tmp)

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
