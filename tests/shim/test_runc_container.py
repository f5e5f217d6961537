"""The runc kind of container against a stand-in for the runc driver: what it asks runc, when."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from pywasmd.errors import Internal, InvalidArgument
from pywasmd.oci.spec import load_spec
from pywasmd.shim.container import CreateRequest, Rootfs
from pywasmd.shim.launcher import ChildStdio
from pywasmd.shim.process import Process, Stdio
from pywasmd.shim.runc_container import RuncContainer
from pywasmd.testing import FAKE_PID_BASE, FakeReaper

INIT_PID = FAKE_PID_BASE + 1
EXEC_PID = FAKE_PID_BASE + 2


class StubRunc:
    """Records each runc command; ``create`` and ``exec`` answer fake pids."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail_create = False

    async def create(self, id: str, bundle: str, stdio: ChildStdio, cgroups_path: str) -> int:
        self.calls.append(("create", id, cgroups_path))
        if self.fail_create:
            raise Internal("runc create failed: boom")
        return INIT_PID

    async def exec(self, id: str, bundle: str, exec_id: str, spec: bytes, stdio: ChildStdio) -> int:
        self.calls.append(("exec", exec_id, spec.decode()))
        return EXEC_PID

    async def delete(self, id: str, bundle: str) -> None:
        self.calls.append(("delete", id))

    async def kill_all(self, id: str, bundle: str, sig: int) -> None:
        self.calls.append(("kill --all", id, str(sig)))

    async def pids(self, id: str, bundle: str) -> list[int]:
        return [EXEC_PID, INIT_PID]


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.bundle = tmp_path
        (tmp_path / "rootfs").mkdir()
        config = {"process": {"args": ["/pause"]}, "root": {"path": "rootfs"}}
        (tmp_path / "config.json").write_text(json.dumps(config))
        self.runc = StubRunc()
        self.reaper = FakeReaper()
        self.signals: list[tuple[int, int]] = []
        self.exits: list[tuple[str, int]] = []

    def kill(self, pid: int, sig: int) -> None:
        self.signals.append((pid, sig))
        if sig == signal.SIGKILL:
            self.reaper.exit(pid, 137)

    def on_exit(self, process: Process, status: int, oom: bool) -> None:
        self.exits.append((process.id, status))
        process.exited.set()

    async def create(self, stdio: Stdio | None = None) -> RuncContainer:
        request = CreateRequest("c1", str(self.bundle), stdio=stdio or Stdio())
        container = await RuncContainer.create(
            request,
            load_spec(str(self.bundle)),
            Rootfs(str(self.bundle / "rootfs")),
            self.runc,  # type: ignore[arg-type]
            self.reaper,
            self.kill,
            self.on_exit,
        )
        container.watch()
        return container


def run(tmp_path: Path, body: Any) -> World:
    world = World(tmp_path)

    async def main() -> None:
        coro: Coroutine[Any, Any, None] = body(world)
        await asyncio.wait_for(coro, 10)

    asyncio.run(main())
    return world


def test_a_terminal_is_refused_before_runc_is_asked(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        with pytest.raises(InvalidArgument, match="drop -t"):
            await w.create(Stdio(terminal=True))
        assert w.runc.calls == []

    run(tmp_path, body)


def test_a_failed_create_asks_runc_to_delete_what_it_left(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        w.runc.fail_create = True
        with pytest.raises(Internal, match="boom"):
            await w.create()
        assert w.runc.calls == [("create", "c1", ""), ("delete", "c1")]

    run(tmp_path, body)


def test_kill_all_goes_to_runc_and_kill_to_the_init(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        c = await w.create()
        await c.kill(c.init, signal.SIGTERM, all=True)
        assert w.runc.calls[-1] == ("kill --all", "c1", str(int(signal.SIGTERM)))
        await c.kill(c.init, signal.SIGTERM)
        assert w.signals == [(INIT_PID, signal.SIGTERM)]

    run(tmp_path, body)


def test_delete_asks_runc_first_then_ends_an_init_never_started(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        c = await w.create()
        await c.delete()
        assert w.runc.calls[-1] == ("delete", "c1")
        assert w.signals == [(INIT_PID, signal.SIGKILL)]
        assert w.exits == [("c1", 137)]

    run(tmp_path, body)


def test_an_exec_is_run_by_runc_at_start_and_watched(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        c = await w.create()
        spec = b'{"args": ["/bin/true"]}'
        ex = await c.exec("e1", spec, Stdio())
        assert (ex.pid, c.execs) == (0, {"e1": ex})
        await c.start_exec(ex)
        assert w.runc.calls[-1] == ("exec", "e1", spec.decode())
        assert ex.pid == EXEC_PID
        w.reaper.exit(EXEC_PID, 0)
        assert w.exits == [("e1", 0)]
        assert await c.pids() == [INIT_PID, EXEC_PID]

    run(tmp_path, body)


def test_an_exec_with_a_terminal_is_refused(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        c = await w.create()
        with pytest.raises(InvalidArgument, match="drop -t"):
            await c.exec("e1", b'{"args": ["/bin/sh"], "terminal": true}', Stdio())
        assert c.execs == {}

    run(tmp_path, body)
