"""The engine's per-request entry point (``Engine.prepare_instances``) on the C CGI guest.

A fresh instance per call with exactly the given env, stdin bytes and captured stdout; a looping
guest stopped at its deadline by epoch; calls from several threads at once kept apart; 2000
calls without fd or memory growth.  wasmer and components are refused with the fix.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pywasmd.engine import Engine, Instances, get_engine
from pywasmd.errors import InvalidArgument
from pywasmd.oci.http import HttpPlan
from pywasmd.oci.plan import WasiPlan

pytest.importorskip("wasmtime")


def _plan(module: Path, tmp_path: Path) -> WasiPlan:
    return WasiPlan(
        module=str(module),
        argv=("cgi.wasm",),
        env=(),
        cwd="/",
        preopens=(),
        memory_limit=64 << 20,
        http=HttpPlan(),
    )


@pytest.fixture
def instances(guests: dict[str, Path], tmp_path: Path) -> Instances:
    engine = get_engine("wasmtime")
    plan = _plan(guests["cgi"], tmp_path)
    return engine.prepare_instances(engine.load(plan), plan)


def _echo_env(path: str, length: int) -> list[tuple[str, str]]:
    return [
        ("REQUEST_METHOD", "POST"),
        ("PATH_INFO", path),
        ("QUERY_STRING", "q=1"),
        ("HTTP_X_TEST", "t"),
        ("CONTENT_LENGTH", str(length)),
    ]


def test_echo_with_stdin_and_exact_env(instances: Instances) -> None:
    result = instances.call(_echo_env("/e", 5), b"hello", 5)
    assert (result.outcome, result.status) == ("exit", 0)
    assert result.stdout == (
        b"Content-Type: text/plain\r\nX-Echo-Method: POST\r\n\r\n"
        b"method=POST\npath=/e\nquery=q=1\nheader=t\nlength=5\nbody=hello"
    )
    env = instances.call([("PATH_INFO", "/env"), ("A", "b=c")], b"", 5)
    assert env.stdout == b"Content-Type: text/plain\n\nPATH_INFO=/env\nA=b=c\n"


def test_a_mebibyte_each_way(instances: Instances) -> None:
    body = os.urandom(1 << 20)
    result = instances.call(_echo_env("/big", len(body)), body, 5)
    assert result.stdout.endswith(b"body=" + body)


def test_outcomes(instances: Instances) -> None:
    call = instances.call
    trap = call([("PATH_INFO", "/trap")], b"", 5)
    assert (trap.outcome, trap.stdout) == ("trap", b"")
    assert "unreachable" in trap.detail
    exit3 = call([("PATH_INFO", "/exit3")], b"", 5)
    assert (exit3.outcome, exit3.status, exit3.stdout) == ("exit", 3, b"")
    began = time.monotonic()
    loop = call([("PATH_INFO", "/loop")], b"", 0.3)
    took = time.monotonic() - began
    assert loop.outcome == "timeout"
    assert 0.25 < took < 1.0, took
    # The next call of the same thread starts clean: a fresh instance, an empty stdout.
    assert call([("PATH_INFO", "/notfound")], b"", 5).stdout.startswith(b"Status: 404")


def test_threads_keep_their_calls_apart(instances: Instances) -> None:
    def one(i: int) -> bytes:
        body = str(i).encode() * 100
        out: bytes = instances.call(_echo_env(f"/{i}", len(body)), body, 5).stdout
        return out

    with ThreadPoolExecutor(max_workers=4) as pool:
        outs = list(pool.map(one, range(400)))
    for i, out in enumerate(outs):
        assert out.endswith(
            f"path=/{i}\nquery=q=1\nheader=t\nlength={len(str(i)) * 100}\nbody=".encode()
            + str(i).encode() * 100
        )


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_no_growth_over_2000_calls(instances: Instances) -> None:
    call = instances.call
    for _ in range(200):
        call(_echo_env("/w", 2), b"hi", 5)
    fds, rss = len(os.listdir("/proc/self/fd")), _rss_kib()
    began = time.monotonic()
    for _ in range(2000):
        call(_echo_env("/w", 2), b"hi", 5)
    per_call = (time.monotonic() - began) / 2000
    print(f"per call {per_call * 1e6:.0f} us")
    assert len(os.listdir("/proc/self/fd")) == fds
    assert _rss_kib() < rss + 4096


def test_command_components_are_refused(component: Path, tmp_path: Path) -> None:
    engine: Engine = get_engine("wasmtime")
    with pytest.raises(InvalidArgument, match="exports no wasi:http/incoming-handler"):
        engine.load(_plan(component, tmp_path))


def test_epoch_is_part_of_the_cache_key(guests: dict[str, Path], tmp_path: Path) -> None:
    engine = get_engine("wasmtime")
    plan = _plan(guests["cgi"], tmp_path)
    command = WasiPlan(plan.module, plan.argv, (), "/", ())
    assert engine.fingerprint(plan) != engine.fingerprint(command)


@pytest.mark.skipif(
    sys.version_info >= (3, 11),
    reason="wasmer-python imports on CPython <= 3.10 only (scripts/test-engines310.sh)",
)
def test_wasmer_refuses_http_functions(guests: dict[str, Path], tmp_path: Path) -> None:
    engine = get_engine("wasmer")
    with pytest.raises(InvalidArgument, match="HTTP functions .* need the wasmtime engine"):
        engine.load(_plan(guests["cgi"], tmp_path))
    with pytest.raises(InvalidArgument, match="need the wasmtime engine"):
        engine.prepare_instances(object(), _plan(guests["cgi"], tmp_path))
