"""Network namespaces of the test's own, and containerd/dockerd running inside one.

Tests that let a runtime configure network interfaces (Docker's default bridge network, CRI pods
with a network namespace of their own) must never do it in this machine's own namespace. This
module gives them one to use and throw away:

- `Netns`: `ip netns add pw-<pid>-<random>` with `lo` up; `launcher` is the argv prefix that
  starts a program inside it (`nsenter --net=/run/netns/<name>`, not `ip netns exec`, which
  remounts /sys and hides the cgroup mounts dockerd needs); `pids()` are the processes whose
  /proc/<pid>/ns/net is this namespace; `delete()` ends them by pid and deletes it.
- `Stack`: a netns with a private containerd (1.6 or 2.1, optionally with CRI) started inside it,
  optionally a Docker 28 on its default bridge network too, and a private fork-server socket
  (`PYWASM_ZYGOTE_SOCKET`), so shims started by this containerd never hand their work to a
  zygote that lives in the machine's namespace. `stop()` ends dockerd, containerd, then every
  process left in the namespace (by pid), unmounts what is left under the stack's directories,
  deletes the namespace and returns what it had to clean (empty when nothing was left).
- `host_links()` / `named_netns()`: what the machine's own namespace has, for the session guard
  in conftest.py.
- `install_test_cni(ctrd)`: a minimal CNI plugin (integration/testcni.py) as `loopback` and
  `pw-veth` in a CRI containerd's private CNI bin dir, and a conflist naming it, so CRI can give a
  pod a network namespace of its own (an `eth0` with 10.99.0.2/24 inside the pod's namespace;
  nothing outside it).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from integration.containerd import Containerd, ContainerdError, mounts_under
from integration.docker import Dockerd

NETNS_DIR = Path("/run/netns")
TESTCNI = Path(__file__).resolve().parent / "testcni.py"
#: The pod address the test CNI plugin gives a pod's eth0 (inside the pod's namespace only).
POD_ADDRESS = "10.99.0.2/24"


class NetnsError(RuntimeError):
    pass


def _ip(*args: str, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*launcher, "ip", *args], capture_output=True, text=True, timeout=20, check=False
    )


def parse_links(text: str) -> dict[str, str]:
    """`ip -br link` output as name -> line (a veth's `@peer` suffix is not part of its name)."""
    links = {}
    for line in text.splitlines():
        fields = line.split()
        if fields:
            links[fields[0].split("@", 1)[0]] = " ".join(fields)
    return links


def host_links() -> dict[str, str]:
    """The interfaces of the namespace this process is in (the machine's own, for tests)."""
    r = _ip("-br", "link")
    if r.returncode != 0:
        raise NetnsError(f"ip -br link exited {r.returncode}: {r.stderr}")
    return parse_links(r.stdout)


def named_netns() -> set[str]:
    try:
        return set(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return set()


def net_of(pid: int) -> int | None:
    """Inode of the network namespace of `pid` (None when it is gone)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


class Netns:
    """One named network namespace made by the test; `lo` is up."""

    def __init__(self, prefix: str = "pw") -> None:
        # The pytest process's pid in the name: the session guard tells its own from others'.
        self.name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        self.path = NETNS_DIR / self.name
        self.created = False

    @property
    def launcher(self) -> tuple[str, ...]:
        return ("nsenter", f"--net={self.path}")

    @property
    def inode(self) -> int:
        return os.stat(self.path).st_ino

    def create(self) -> Netns:
        r = _ip("netns", "add", self.name)
        if r.returncode != 0:
            raise NetnsError(f"ip netns add {self.name} exited {r.returncode}: {r.stderr}")
        self.created = True
        r = _ip("link", "set", "lo", "up", launcher=self.launcher)
        if r.returncode != 0:
            self.delete()
            raise NetnsError(f"lo up in {self.name} failed: {r.stderr}")
        return self

    def run(self, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.launcher, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )

    def links(self) -> dict[str, str]:
        r = self.run("ip", "-br", "link")
        if r.returncode != 0:
            raise NetnsError(f"ip -br link in {self.name} exited {r.returncode}: {r.stderr}")
        return parse_links(r.stdout)

    def pids(self) -> list[int]:
        """Processes whose network namespace is this one."""
        if not self.created:
            return []
        ino = self.inode
        return [p for p in _pids() if p != os.getpid() and net_of(p) == ino]

    def kill_all(self, timeout: float = 10.0) -> list[int]:
        """SIGKILL every process in the namespace (by pid) until none is left; the pids seen."""
        seen: list[int] = []
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            for pid in pids:
                if pid not in seen:
                    seen.append(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise NetnsError(f"processes still in {self.name} after SIGKILL: {pids}")
            time.sleep(0.05)
        return seen

    def delete(self) -> None:
        if not self.created:
            return
        self.kill_all()
        r = _ip("netns", "del", self.name)
        if r.returncode != 0 and self.path.exists():
            raise NetnsError(f"ip netns del {self.name} exited {r.returncode}: {r.stderr}")
        self.created = False


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f"{pid}: " + f.read().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return f"{pid}: (gone)"


def _is_zygote(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().startswith(b"pywasm-zygote")
    except OSError:
        return False


class Stack:
    """A test netns with a private containerd (and optionally Docker on its default bridge
    network) inside it, shims on a private fork-server socket."""

    def __init__(
        self,
        version: str,
        *,
        cri: bool = False,
        docker: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.netns = Netns()
        self.ctrd = Containerd(version, cri=cri, log_level="info")
        self.ctrd.launcher = list(self.netns.launcher)
        self.zygote_dir = Path(f"/run/pywasmd-it-zygote-{self.netns.name}")
        self.ctrd.env["PYWASM_ZYGOTE_SOCKET"] = str(self.zygote_dir / "zygote.sock")
        self.ctrd.env.update(env or {})
        self.dockerd: Dockerd | None = None
        if docker:
            self.dockerd = Dockerd(self.ctrd, bridge=True, launcher=self.netns.launcher)

    @property
    def docker(self) -> Dockerd:
        if self.dockerd is None:
            raise NetnsError("this stack runs no dockerd (Stack(..., docker=True))")
        return self.dockerd

    def start(self) -> Stack:
        self.netns.create()
        try:
            self.ctrd.start()
            if self.dockerd is not None:
                self.dockerd.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> list[str]:
        """Tear everything down; what had to be cleaned beyond the daemons' own stop."""
        left: list[str] = []
        if self.dockerd is not None:
            with contextlib.suppress(Exception):
                self.dockerd.stop()
        with contextlib.suppress(ContainerdError):
            self.ctrd.stop()
        if self.netns.created:
            # What outlives the daemons: the zygote, shims, workers; all ours.
            # The zygote stays on purpose (it serves later containers until it idles out).
            pids = [p for p in self.netns.pids() if not _is_zygote(p)]
            left += [f"process left in {self.netns.name}: {_describe(p)}" for p in pids]
            self.netns.kill_all()
        dirs = [self.ctrd.tmp, self.ctrd.state, self.zygote_dir]
        if self.dockerd is not None:
            dirs += [self.dockerd.dir, self.dockerd.exec_root]
        for point in mounts_under(*dirs):
            left.append(f"mount left: {point}")
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(self.zygote_dir, ignore_errors=True)
        self.netns.delete()
        return left

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- CNI for CRI pods with a network namespace of their own -------------------------------

CNI_NETWORK = "pw-test"


def install_test_cni(ctrd: Containerd, timeout: float = 30.0) -> None:
    """Put the test CNI plugin in `ctrd`'s private CNI dirs and wait until CRI's network is
    ready (containerd watches its conf dir)."""
    if not ctrd.cri:
        raise NetnsError("install_test_cni needs a CRI containerd (Containerd(..., cri=True))")
    script = f"#!{sys.executable} -I\n" + TESTCNI.read_text()
    for name in ("loopback", "pw-veth"):
        path = ctrd.cni_bin_dir / name
        path.write_text(script)
        path.chmod(0o755)
    conf = {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [{"type": "pw-veth", "address": POD_ADDRESS}],
    }
    # Written in place, in one write: containerd's conf syncer ignores create (and so
    # rename-in) events and reloads on a write.
    path = ctrd.cni_conf_dir / "10-pw-test.conflist"
    text = json.dumps(conf)
    from integration.cri import CriClient

    deadline = time.monotonic() + timeout
    with CriClient(ctrd.address, timeout=10) as client:
        while True:
            path.write_text(text)
            time.sleep(0.2)
            ready = {c.type: c.status for c in client.status().status.conditions}
            if ready.get("NetworkReady"):
                return
            if time.monotonic() > deadline:
                raise NetnsError(
                    f"CRI network not ready {timeout:.0f}s after the CNI conf: {ready}"
                )


__all__ = [
    "POD_ADDRESS",
    "Netns",
    "NetnsError",
    "Stack",
    "host_links",
    "install_test_cni",
    "named_netns",
    "net_of",
    "parse_links",
]
