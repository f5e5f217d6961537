"""One contract, every engine: each test runs for every engine that imports on this Python.

Guests run in the real worker process (see engine_harness).  A capability an engine lacks is
asserted to be refused clearly at Create, never silently dropped; docs/engines.md lists them.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_harness import make_plan, run, start

from pywasmd.engine import TRAP_EXIT_STATUS, Engine
from pywasmd.errors import InvalidArgument
from pywasmd.oci.plan import Preopen

Wat = Callable[[str, str], Path]

GROW_4MIB = """
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (if (i32.eq (memory.grow (i32.const 64)) (i32.const -1)) (then (call $exit (i32.const 1))))))
"""
TAIL_CALL = """
(module
  (memory (export "memory") 1)
  (func $g)
  (func $f (return_call $g))
  (func (export "_start") (call $f)))
"""
LIBRARY = '(module (memory (export "memory") 1) (func (export "f")))'


def test_args_reach_the_guest_exactly(engine: Engine, guests: dict[str, Path], tmp_path: Path):
    plan = make_plan(guests["hello"], "a", "b c", "", "ü", engine=engine.name)
    out = run(plan, tmp_path)
    assert (out.status, out.stdout) == (0, "hello from wasm\na\nb c\n\nü\n")


def test_env_is_exactly_the_plans(engine: Engine, guests: dict[str, Path], tmp_path: Path):
    env = (("A", "1"), ("B", "x=y"), ("EMPTY", ""))
    out = run(make_plan(guests["env"], engine=engine.name, env=env), tmp_path)
    assert (out.status, out.stdout) == (0, "A=1\nB=x=y\nEMPTY=\n")


def test_stdout_stderr_and_stdin_are_the_containers(
    engine: Engine, guests: dict[str, Path], tmp_path: Path
):
    pattern = "0123456789abcdefghijklmnopqrstuvwxyz\n"
    out = run(make_plan(guests["bigout"], "100000", "3000", engine=engine.name), tmp_path / "o")
    assert out.status == 0
    assert out.stdout == (pattern * 3000)[:100000]
    assert out.stderr == (pattern * 100)[:3000]
    data = bytes(range(256)) * 100
    echoed = run(make_plan(guests["cat"], engine=engine.name), tmp_path / "c", data)
    assert (echoed.status, echoed.stdout.encode(errors="surrogateescape")) == (0, data)


@pytest.mark.parametrize("code", [0, 1, 3, 125, 126, 255])
def test_exit_status_is_the_guests(
    engine: Engine, guests: dict[str, Path], tmp_path: Path, code: int
):
    out = run(make_plan(guests["exitcode"], str(code), engine=engine.name), tmp_path)
    assert (out.status, out.stderr) == (code, "")


def test_exit_status_above_125(engine: Engine, guests: dict[str, Path], tmp_path: Path):
    # Statuses a shell might confuse with signals still pass through, as for a native process.
    out = run(make_plan(guests["exitcode"], "200", engine=engine.name), tmp_path)
    assert (out.status, out.stderr) == (200, "")


def test_trap_is_134_with_one_line_on_stderr(
    engine: Engine, guests: dict[str, Path], tmp_path: Path
):
    out = run(make_plan(guests["trap"], engine=engine.name), tmp_path)
    assert out.status == TRAP_EXIT_STATUS
    assert out.stdout == "about to trap\n"
    lines = out.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("pywasm: guest trapped: ")
    assert "unreachable" in lines[0]


def test_writable_preopen_is_writable(engine: Engine, guests: dict[str, Path], tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("hello")
    grants = (Preopen(str(data), "/data"),)
    wrote = run(
        make_plan(
            guests["fs"], "write", "/data/out.txt", "hi", engine=engine.name, preopens=grants
        ),
        tmp_path / "w",
    )
    assert (wrote.status, wrote.stdout) == (0, "ok\n")
    assert (data / "out.txt").read_text() == "hi"
    listed = run(
        make_plan(guests["fs"], "ls", "/data", engine=engine.name, preopens=grants), tmp_path / "l"
    )
    assert (listed.status, listed.stdout) == (0, "in.txt\nout.txt\n")


def test_readonly_preopen_refuses_writes(engine: Engine, guests: dict[str, Path], tmp_path: Path):
    root, data = tmp_path / "root", tmp_path / "data"
    root.mkdir()
    data.mkdir()
    (data / "in.txt").write_text("hello")
    # A read-only volume inside a writable root, as `docker run -v host:/data:ro` gives.
    grants = (Preopen(str(root), "/"), Preopen(str(data), "/data", readonly=True))

    if engine.name == "wasmer":
        # No read-only preopens in wasmer-python: refused at Create, never silently writable.
        plan = make_plan(guests["fs"], "ls", "/", engine=engine.name, preopens=grants)
        with pytest.raises(InvalidArgument, match="cannot make preopen.s. /data read-only"):
            start(plan, tmp_path / "refused")
        return

    def fs(*args: str) -> tuple[int, str, str]:
        plan = make_plan(guests["fs"], *args, engine=engine.name, preopens=grants)
        out = run(plan, tmp_path / f"run{len(list(tmp_path.iterdir()))}")
        return out.status, out.stdout, out.stderr

    status, _, stderr = fs("write", "/data/new.txt", "x")
    assert status == 1
    assert stderr.startswith("error: write /data/new.txt: ")
    assert sorted(os.listdir(data)) == ["in.txt"]
    assert fs("read", "/data/in.txt")[:2] == (0, "hello")
    assert fs("write", "/root.txt", "y")[:2] == (0, "ok\n")
    assert (root / "root.txt").read_text() == "y"


def test_kill_ends_a_looping_guest(engine: Engine, guests: dict[str, Path], tmp_path: Path):
    running = start(make_plan(guests["loop"], engine=engine.name), tmp_path)
    running.wait_for_output("looping\n")
    running.kill(signal.SIGKILL)
    assert running.wait(10).status == 128 + signal.SIGKILL


def test_sigterm_ends_a_blocked_guest(engine: Engine, guests: dict[str, Path], tmp_path: Path):
    running = start(make_plan(guests["sleep"], engine=engine.name), tmp_path)
    running.wait_for_output("sleeping 3600\n")
    running.kill(signal.SIGTERM)
    assert running.wait(10).status == 128 + signal.SIGTERM


def test_memory_cap_stops_growth(engine: Engine, wat: Wat, tmp_path: Path):
    module = wat("grow", GROW_4MIB)
    assert run(make_plan(module, engine=engine.name), tmp_path / "free").status == 0
    capped = make_plan(module, engine=engine.name, memory_limit=2 << 20)
    assert run(capped, tmp_path / "capped").status == 1


def test_module_without_start_is_refused_at_create(engine: Engine, wat: Wat, tmp_path: Path):
    with pytest.raises(InvalidArgument, match="exports no _start function"):
        start(make_plan(wat("library", LIBRARY), engine=engine.name), tmp_path)


def test_garbage_is_refused_at_create(engine: Engine, tmp_path: Path):
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"#!/bin/sh\necho hi\n")
    with pytest.raises(InvalidArgument, match="not a WebAssembly binary"):
        start(make_plan(junk, engine=engine.name), tmp_path / "w")


def test_precompile_round_trip(engine: Engine, guests: dict[str, Path], tmp_path: Path):
    plan = make_plan(guests["hello"], "again", engine=engine.name)
    data = engine.precompile(plan)
    assert data
    assert engine.fingerprint(plan) == engine.fingerprint(plan)
    out, err = tmp_path / "out", tmp_path / "err"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's report is its exit status
        try:
            os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT), 1)
            os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT), 2)
            os._exit(engine.run(engine.load_precompiled(data, plan), plan))
        except BaseException:
            os._exit(99)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    assert (status, out.read_text()) == (0, "hello from wasm\nagain\n")


def test_precompiled_garbage_is_refused(engine: Engine, guests: dict[str, Path]):
    plan = make_plan(guests["hello"], engine=engine.name)
    with pytest.raises(InvalidArgument, match="does not fit this engine"):
        engine.load_precompiled(b"not compiled code", plan)


def test_features_are_applied_or_refused(engine: Engine, wat: Wat, tmp_path: Path):
    module = wat("tailcall", TAIL_CALL)
    if engine.name == "wasmer":
        with pytest.raises(InvalidArgument, match="cannot enable Wasm features tail-call"):
            start(make_plan(module, engine=engine.name, features=("tail-call",)), tmp_path)
        return
    # Off unless asked for, whatever the library enables by default.
    with pytest.raises(InvalidArgument, match="cannot be compiled"):
        start(make_plan(module, engine=engine.name), tmp_path / "off")
    plan = make_plan(module, engine=engine.name, features=("tail-call",))
    assert run(plan, tmp_path / "on").status == 0
    assert engine.fingerprint(plan) != engine.fingerprint(make_plan(module, engine=engine.name))


def test_component_runs_like_a_module(engine: Engine, component: Path, tmp_path: Path):
    if engine.name == "wasmer":
        with pytest.raises(InvalidArgument, match="engine wasmer runs core modules only"):
            start(make_plan(component, "echo", engine=engine.name), tmp_path)
        return
    env = (("A", "1"), ("B", "x=y"))
    out = run(make_plan(component, "echo", "a b", "c", engine=engine.name, env=env), tmp_path / "e")
    assert (out.status, out.stdout) == (0, "a b\nc\nA=1\nB=x=y\n")
    assert run(make_plan(component, "fail", engine=engine.name), tmp_path / "f").status == 1
    trapped = run(make_plan(component, "trap", engine=engine.name), tmp_path / "t")
    assert trapped.status == TRAP_EXIT_STATUS
    assert trapped.stderr.startswith("pywasm: guest trapped: ")
    assert len(trapped.stderr.splitlines()) == 1
    assert run(make_plan(component, "grow", engine=engine.name), tmp_path / "g").status == 0
    capped = make_plan(component, "grow", engine=engine.name, memory_limit=8 << 20)
    assert run(capped, tmp_path / "gc").status == 1
