"""Fixtures for tests against real containerd 1.6 and 2.1 (private instances), runc and ctr.

- `containerd`: a private containerd, once per session per version (ids ctrd1.6, ctrd2.1), with
  every test image imported. Both versions must start: a version that cannot start makes its
  tests fail with the reason and containerd's log, never skip.
- every test that uses `containerd` is checked for leaks afterwards (`no_leaks`): no task or
  container left, no shim process of that containerd alive, no mount under its root or state,
  no new stale socket in /run/containerd/s. The leak is reported as an error, then cleaned up so
  the next test starts clean.
- when a test fails, the part of containerd's log written during the test (shim logs included)
  is attached to the report.
- the machine's own network namespace is never configured by a test: its interfaces
  (`ip -br link`) are recorded before the session; a test after which a new one appears fails
  (and the interface is deleted), and so does the session when one appears at its end or when a
  network namespace this session made (/run/netns/pw-<pytest pid>-*) is still there.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration import images, netns
from integration.containerd import Containerd, ContainerdError, new_id, run

REPO = Path(__file__).resolve().parent.parent
VENV310_PYTHON = REPO / ".venv310" / "bin" / "python"

# The node config every test containerd hands its shims (through PYWASM_CONFIG in its
# environment): workers of the wasmer engine run under the Python 3.10 venv.
NODE_CONFIG = REPO / ".cache" / "pywasm-node-config.yaml"
NODE_CONFIG.parent.mkdir(parents=True, exist_ok=True)
NODE_CONFIG.write_text(f"engine_python:\n  wasmer: {VENV310_PYTHON}\n")
os.environ["PYWASM_CONFIG"] = str(NODE_CONFIG)


__all__ = ["new_id", "run"]

SHIM_SOCKETS = Path("/run/containerd/s")
LOG_TAIL_LINES = 120
LEAK_GRACE_SECONDS = 10.0

_START_ERRORS: dict[str, str] = {}


@pytest.fixture(scope="session", autouse=True)
def host_network() -> Iterator[dict[str, str]]:
    """The machine's own interfaces before the session; checked again at its end."""
    before = netns.host_links()
    yield before
    problems = _new_host_links(before)
    ours = sorted(n for n in netns.named_netns() if n.startswith(f"pw-{os.getpid()}-"))
    for name in ours:
        problems.append(f"network namespace {name} left by this session (deleted)")
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    if problems:
        pytest.fail("the machine's own network changed:\n" + "\n".join(problems), pytrace=False)


def _new_host_links(before: dict[str, str]) -> list[str]:
    """Interfaces of the machine's namespace that were not there before; each is deleted."""
    found = []
    for name, line in netns.host_links().items():
        if name not in before:
            r = subprocess.run(["ip", "link", "del", name], capture_output=True, text=True)
            gone = "deleted" if r.returncode == 0 else f"ip link del failed: {r.stderr.strip()}"
            found.append(f"new interface in the machine's namespace: {line} ({gone})")
    return found


@pytest.fixture(autouse=True)
def host_interfaces_unchanged(host_network: dict[str, str]) -> Iterator[None]:
    yield
    problems = _new_host_links(host_network)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def archives() -> dict[str, Path]:
    return images.build_archives()


@pytest.fixture(scope="session", params=["1.6", "2.1"], ids=["ctrd1.6", "ctrd2.1"])
def containerd(request: pytest.FixtureRequest, archives: dict[str, Path]) -> Iterator[Containerd]:
    version: str = request.param
    if version in _START_ERRORS:
        pytest.fail(_START_ERRORS[version], pytrace=False)
    ctrd = Containerd(version)
    try:
        ctrd.start()
        images.import_all(ctrd, archives)
    except (ContainerdError, RuntimeError, OSError) as e:
        ctrd.stop()
        _START_ERRORS[version] = f"containerd {version} could not be set up: {e}"
        pytest.fail(_START_ERRORS[version], pytrace=False)
    try:
        yield ctrd
    finally:
        ctrd.stop()


def _stale_sockets() -> set[str]:
    """Entries of /run/containerd/s that no process listens on."""
    try:
        entries = {str(SHIM_SOCKETS / n) for n in os.listdir(SHIM_SOCKETS)}
    except FileNotFoundError:
        return set()
    bound = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8:
                bound.add(parts[7])
    return entries - bound


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f"{pid}: " + f.read().replace(b"\0", b" ").decode(errors="replace")[:300]
    except OSError:
        return f"{pid}: (gone)"


def find_leaks(ctrd: Containerd, sockets_before: set[str]) -> list[str]:
    leaks = []
    tasks = ctrd.ctr("tasks", "ls", "-q", timeout=20).stdout.split()
    if tasks:
        leaks.append(f"tasks left: {tasks}")
    containers = ctrd.ctr("containers", "ls", "-q", timeout=20).stdout.split()
    if containers:
        leaks.append(f"containers left: {containers}")
    pids = ctrd.all_shim_pids()
    if pids:
        leaks.append("processes left:\n  " + "\n  ".join(_describe(p) for p in pids))
    mounts = ctrd.mounts()
    if mounts:
        leaks.append(f"mounts left: {mounts}")
    stale = _stale_sockets() - sockets_before
    if stale:
        leaks.append(f"stale shim sockets left: {sorted(stale)}")
    runc_left = runc_state_of(ctrd)
    if runc_left:
        leaks.append(f"runc state left by the shim's Linux path: {runc_left}")
    return leaks


RUNC_STATE = Path("/run/pywasm/runc")


def runc_state_of(ctrd: Containerd) -> list[str]:
    """Containers the shim's runc still knows whose bundle lives in this containerd's state."""
    left = []
    for state in RUNC_STATE.glob("*/*/state.json"):
        try:
            text = state.read_text(errors="replace")
        except OSError:
            continue
        if f"bundle={ctrd.state}/" in text:
            left.append(str(state.parent))
    return left


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    if "containerd" not in request.fixturenames:
        yield
        return
    ctrd: Containerd = request.getfixturevalue("containerd")
    sockets_before = _stale_sockets()
    request.node.pywasmd_log_offset = ctrd.log_size()
    request.node.pywasmd_containerd = ctrd
    yield
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    leaks = find_leaks(ctrd, sockets_before)
    while leaks and time.monotonic() < deadline:
        time.sleep(0.2)
        leaks = find_leaks(ctrd, sockets_before)
    if leaks:
        ctrd.cleanup_tasks()
        for pid in ctrd.all_shim_pids():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        for stale in _stale_sockets() - sockets_before:
            Path(stale).unlink(missing_ok=True)
        pytest.fail(
            f"containerd {ctrd.version}: the test left resources behind:\n" + "\n".join(leaks),
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None] | pytest.TestReport:
    report: pytest.TestReport = yield
    ctrd: Containerd | None = getattr(item, "pywasmd_containerd", None)
    if ctrd is not None and report.failed and report.when in ("call", "teardown"):
        offset = getattr(item, "pywasmd_log_offset", 0)
        lines = ctrd.log_since(offset).splitlines()[-LOG_TAIL_LINES:]
        report.sections.append(
            (f"containerd {ctrd.version} log during the test ({ctrd.log})", "\n".join(lines))
        )
    return report
