"""What the fault, load and hostile-input tests look at: processes, events and the cache.

- `sample(pid)`: RSS, threads and open fds of a process, from /proc.
- `task_pid` / `server_of`: a container's worker (the task pid) and the shim server that
  forked it (its parent).
- `EventLog`: `ctr events` in the background, parsed into (topic, event) per container.
- `tree_bytes` / `listing`: what a cache directory holds.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integration.containerd import Background, Containerd

PYWASM = "io.containerd.pywasm.v1"
GROUP_ANNOTATION = "pywasm.io/group"


@dataclass(frozen=True)
class Sample:
    rss_kib: int
    threads: int
    fds: int

    def __str__(self) -> str:
        return f"rss={self.rss_kib}KiB threads={self.threads} fds={self.fds}"


def sample(pid: int) -> Sample | None:
    """RSS, thread count and open fds of `pid`; None when it is gone."""
    try:
        fields: dict[str, str] = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        # A zombie has no VmRSS: it is gone for our purpose.
        return Sample(int(fields["VmRSS"].split()[0]), int(fields["Threads"]), fds)
    except (OSError, ValueError, KeyError, IndexError):
        return None


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def task_pid(ctrd: Containerd, cid: str) -> int:
    """The PID column of `ctr task ls` for `cid` (the worker process); 0 when not listed."""
    r = ctrd.ctr("tasks", "ls", timeout=20)
    for line in r.stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return int(fields[1])
    return 0


def server_of(worker: int) -> int:
    """The shim server of a worker: its parent, checked to be a pywasm shim."""
    parent = parent_of(worker)
    title = cmdline(parent)
    assert title.startswith("containerd-shim-pywasm-v1"), f"parent {parent} of {worker}: {title}"
    return parent


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def listing(root: Path) -> dict[str, int]:
    """name -> size of every file directly in `root`."""
    try:
        return {e.name: e.stat().st_size for e in os.scandir(root) if e.is_file()}
    except OSError:
        return {}


# --- events ------------------------------------------------------------------------------

_EVENT_LINE = re.compile(r".*? UTC (\S+) (/\S+) (\{.*\})$")


class EventLog:
    """`ctr events` running in the background; call `ready()` before causing events."""

    def __init__(self, ctrd: Containerd) -> None:
        self.ctrd = ctrd
        self.bg = Background(ctrd, "events")
        self._probe = 0

    def ready(self, timeout: float = 20) -> None:
        """Cause an event and wait until it shows: the subscription is live."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._probe += 1
            n = f"{os.getpid()}-{self._probe}"
            self.ctrd.ctr("namespaces", "label", "default", f"pywasmd-it-probe={n}", timeout=20)
            if self.bg.wait_for(f'"pywasmd-it-probe":"{n}"', timeout=0.5):
                return
        raise AssertionError(f"ctr events never showed an event\n{self.bg.stdout}{self.bg.stderr}")

    def events(self, cid: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(topic, event) of every /tasks/ event (of container `cid`), in arrival order."""
        found = []
        for line in self.bg.stdout.splitlines():
            m = _EVENT_LINE.match(line)
            if not m or not m.group(2).startswith("/tasks/"):
                continue
            try:
                event = json.loads(m.group(3))
            except ValueError:
                continue
            if cid is None or event.get("container_id") == cid:
                found.append((m.group(2), event))
        return found

    def wait_for(self, cid: str, topic: str, timeout: float = 20) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            for t, event in self.events(cid):
                if t == topic:
                    return event
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def close(self) -> None:
        self.bg.stop()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def detached(
    ctrd: Containerd,
    image: str,
    cid: str,
    *args: str,
    group: str = "",
    extra: tuple[str, ...] = (),
) -> None:
    """`ctr run -d` (optionally in a shim group); raises with ctr's output when it fails."""
    from integration.containerd import run_args

    opts = [*extra]
    if group:
        opts += ["--annotation", f"{GROUP_ANNOTATION}={group}"]
    r = ctrd.ctr(*run_args(image, cid, *args, rm=False, detach=True, extra=opts), timeout=60)
    assert r.returncode == 0, f"ctr run -d {cid}: exit {r.returncode}\n{r.stdout}{r.stderr}"
