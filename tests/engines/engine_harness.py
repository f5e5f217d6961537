"""Running a plan the way the shim does: the real worker process, stdio in files.

The worker is ``python -m pywasmd.shim.worker``, started by the shim's own ProcessLauncher, so
these tests go through the same JSON hand-over, Create reply and Start as production.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pywasmd.oci.plan import Preopen, WasiPlan
from pywasmd.shim.launcher import ChildStdio, ProcessLauncher


def make_plan(
    module: Path,
    *args: str,
    engine: str,
    env: tuple[tuple[str, str], ...] = (),
    preopens: tuple[Preopen, ...] = (),
    memory_limit: int | None = None,
    features: tuple[str, ...] = (),
) -> WasiPlan:
    return WasiPlan(
        module=str(module),
        argv=(f"/{module.name}", *args),
        env=env,
        cwd="/",
        preopens=preopens,
        uid=os.getuid(),
        gid=os.getgid(),
        additional_gids=tuple(os.getgroups()),
        memory_limit=memory_limit,
        engine=engine,
        features=features,
    )


def _text(path: Path) -> str:
    # Bytes as they were written: no newline translation, and undecodable bytes survive.
    return path.read_bytes().decode(errors="surrogateescape")


@dataclass
class Outcome:
    #: The exit status as the shim reports it: the code, or 128+n when signal n ended it.
    status: int
    stdout: str
    stderr: str


class Running:
    """A worker (the real ``python -m pywasmd.shim.worker``) whose guest has been started."""

    def __init__(self, pid: int, out: Path, err: Path) -> None:
        self.pid = pid
        self._out, self._err = out, err

    def stdout(self) -> str:
        return _text(self._out)

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stdout():
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {text!r} on the guest's stdout after {timeout}s")
            time.sleep(0.01)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 60) -> Outcome:
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                pytest.fail(f"the worker did not end within {timeout}s")
            time.sleep(0.005)
        code = os.waitstatus_to_exitcode(status)
        return Outcome(code if code >= 0 else 128 - code, self.stdout(), _text(self._err))


def start(plan: WasiPlan, tmp: Path, stdin: bytes = b"") -> Running:
    """Create + Start, as the shim does them; raises the Create error the shim would report."""
    tmp.mkdir(parents=True, exist_ok=True)
    out, err, inp = tmp / "stdout", tmp / "stderr", tmp / "stdin"
    inp.write_bytes(stdin)
    fds = [os.open(inp, os.O_RDONLY), os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)]
    fds.append(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
    try:
        worker = ProcessLauncher().spawn(ChildStdio(*fds))
    finally:
        for fd in fds:
            os.close(fd)

    async def create_and_start() -> None:
        try:
            await worker.prepare(plan)
            await worker.start()
        finally:
            worker.close()

    try:
        asyncio.run(create_and_start())
    except BaseException:
        os.waitpid(worker.pid, 0)
        raise
    return Running(worker.pid, out, err)


def run(plan: WasiPlan, tmp: Path, stdin: bytes = b"") -> Outcome:
    return start(plan, tmp, stdin).wait()


def http_guest(name: str) -> Path:
    """A componentize-py function of integration/guests/http/ (integration/http_guests.py),
    with its compiled form kept beside it: compiling the CPython inside takes 10-40 s."""
    import importlib.util
    import sys

    from pywasmd.engine import get_engine
    from pywasmd.oci.http import HttpPlan

    repo = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location(
        "_http_guests", repo / "integration" / "http_guests.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    if str(repo) not in sys.path:  # it imports integration.net_guests
        sys.path.insert(0, str(repo))
    spec.loader.exec_module(module)
    built: Path = module.build(name)
    compiled = built.with_suffix(".cwasm")
    if not compiled.exists():
        plan = WasiPlan(
            module=str(built), argv=("f",), env=(), cwd="/", preopens=(), http=HttpPlan()
        )
        tmp = compiled.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(get_engine("wasmtime").precompile(plan))
        tmp.replace(compiled)
    return built
