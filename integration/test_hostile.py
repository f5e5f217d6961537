"""Hostile input through real containerd 1.6 and 2.1 (issue 8, "Hostile input").

- config.json: specs that ctr can carry (`ctr run --config SPEC ID`, root.path a host
  directory holding the guests): `..` and relative mount destinations, 10 000 mounts, 1 MiB
  of environment, absurd limits. Each is refused at Create naming the field, or runs right.
  The rest of the corpus (wrong JSON types, numbers beyond int64...) cannot pass Go's
  decoder; tests/oci/test_hostile_specs.py feeds it to the shim's Create path directly.
- modules: not Wasm, truncated, an import nobody provides, a start function that traps, no
  _start, 100 MB: each a clear error (or, for the big one, a right run).
- the shim's own surface: its socket is 0600, its bundle and cache files are not
  world-writable, the container's environment values never reach the shim log.

Every test ends with the leak check (conftest.no_leaks).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from integration import guests, images
from integration.containerd import Containerd, new_id, run
from integration.probes import PYWASM, detached
from integration.test_lifecycle import explain, remove, wait_status

MIB = 1024 * 1024
CACHE = images.CACHE

# --- modules ------------------------------------------------------------------------------

UNKNOWN_IMPORT_WAT = """(module
  (import "pywasm_nobody" "provides_this" (func $f))
  (memory (export "memory") 1)
  (func (export "_start") (call $f)))"""
START_TRAPS_WAT = """(module
  (memory (export "memory") 1)
  (func $boom unreachable)
  (start $boom)
  (func (export "_start")))"""
NO_START_WAT = """(module (memory (export "memory") 1) (func (export "main")))"""


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _custom_section(name: str, size: int) -> bytes:
    body = _leb(len(name)) + name.encode() + b"\0" * size
    return b"\0" + _leb(len(body)) + body


def hostile_modules() -> dict[str, bytes]:
    hello = guests.build("hello").read_bytes()
    return {
        "truncated": hello[: len(hello) // 2],
        "unknown-import": bytes(wasmtime.wat2wasm(UNKNOWN_IMPORT_WAT)),
        "start-traps": bytes(wasmtime.wat2wasm(START_TRAPS_WAT)),
        "no-start": bytes(wasmtime.wat2wasm(NO_START_WAT)),
        # hello with a 100 MB custom section: valid, runs like hello.
        "huge": hello + _custom_section("pywasm.padding", 100 * 1000 * 1000),
    }


MODULE_PATH = "/m.wasm"


def module_ref(name: str) -> str:
    return f"docker.io/library/pw-hostile-{name}:latest"


def module_archive(name: str, data: bytes) -> Path:
    import hashlib

    from pywasmd.image.build import File, build_image
    from pywasmd.image.layout import write_archive

    out = CACHE / f"pw-hostile-{name}-{hashlib.sha256(data).hexdigest()[:16]}.tar"
    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        image = build_image(files={MODULE_PATH: File(data, 0o755)}, entrypoint=[MODULE_PATH])
        write_archive(image, module_ref(name), tmp)
        tmp.replace(out)
    return out


_imported: set[tuple[str, str]] = set()


def module_image(ctrd: Containerd, name: str) -> str:
    """Image `pw-hostile-NAME` (entrypoint /m.wasm), imported into `ctrd` once."""
    ref = module_ref(name)
    if (ctrd.address, name) not in _imported:
        images.import_archive(ctrd, ref, module_archive(name, hostile_modules()[name]))
        _imported.add((ctrd.address, name))
    return ref


def _no_traceback(r: subprocess.CompletedProcess[Any]) -> None:
    assert "Traceback" not in r.stderr, "a Python traceback reached the user\n" + explain(r)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("truncated", ["/m.wasm"]),
        ("unknown-import", ["pywasm_nobody", "provides_this"]),
        ("start-traps", ["unreachable"]),
        ("no-start", ["/m.wasm", "_start"]),
    ],
)
def test_bad_module_is_a_clear_error(containerd: Containerd, name: str, says: list[str]) -> None:
    r = run(containerd, module_image(containerd, name), new_id(f"mod-{name}"), timeout=120)
    assert r.returncode != 0, explain(r)
    _no_traceback(r)
    for word in says:
        assert word in r.stderr, f"the error does not say {word!r}\n" + explain(r)
    if name == "start-traps":
        assert r.returncode == 134, explain(r)


def test_not_wasm_names_the_module(containerd: Containerd) -> None:
    r = run(containerd, images.BADWASM, new_id("mod-notwasm"))
    assert r.returncode != 0, explain(r)
    _no_traceback(r)
    assert images.BADWASM_PATH in r.stderr, explain(r)
    assert "not a WebAssembly module" in r.stderr, explain(r)


def test_hundred_megabyte_module(containerd: Containerd) -> None:
    ref = module_image(containerd, "huge")
    t0 = time.monotonic()
    r = run(containerd, ref, new_id("mod-huge"), timeout=180)
    took = time.monotonic() - t0
    print(f"\n100 MB module on containerd {containerd.version}: exit {r.returncode} in {took:.1f}s")
    _no_traceback(r)
    assert r.returncode == 0, explain(r)
    assert r.stdout == "hello from wasm\n", explain(r)


# --- config.json through ctr run --config -------------------------------------------------


@pytest.fixture
def spec_root(tmp_path: Path) -> Path:
    """A host directory used as root.path, holding the env and fs guests."""
    root = tmp_path / "root"
    root.mkdir()
    for name in ("env", "fs", "hello"):
        shutil.copy(guests.build(name), root / f"{name}.wasm")
    root.chmod(0o755)
    return root


def base_spec(ctrd: Containerd, root: Path, *args: str) -> dict[str, Any]:
    r = ctrd.ctr("oci", "spec", timeout=20)
    assert r.returncode == 0, explain(r)
    spec: dict[str, Any] = json.loads(r.stdout)
    spec["process"]["args"] = list(args)
    spec["process"]["terminal"] = False
    spec["root"] = {"path": str(root), "readonly": False}
    return spec


def run_spec(
    ctrd: Containerd, spec: dict[str, Any], cid: str, tmp_path: Path, timeout: float = 120
) -> subprocess.CompletedProcess[Any]:
    # `ctr oci spec` says cgroupsPath "/default": the parent of every container of the
    # namespace. Limits written there would throttle them all; `ctr run` uses /default/ID.
    spec.setdefault("linux", {})["cgroupsPath"] = f"/default/{cid}"
    path = tmp_path / f"{cid}.json"
    path.write_text(json.dumps(spec))
    argv = ["run", "--rm", "--runtime", PYWASM, "--config", str(path), cid]
    try:
        return ctrd.ctr(*argv, timeout=timeout)
    finally:
        remove(ctrd, cid)


def test_one_mib_env_runs_and_stays_out_of_the_log(
    containerd: Containerd, spec_root: Path, tmp_path: Path
) -> None:
    secret = f"pywasm-secret-{uuid.uuid4().hex}"
    big = "y" * MIB
    spec = base_spec(containerd, spec_root, "/env.wasm")
    spec["process"]["env"] = [f"SECRET={secret}", f"BIG={big}"] + [
        f"V{i}=value-{i}-{secret}" for i in range(2000)
    ]
    offset = containerd.log_size()
    r = run_spec(containerd, spec, new_id("env1m"), tmp_path)
    assert r.returncode == 0, explain(r)
    lines = r.stdout.splitlines()
    assert f"SECRET={secret}" in lines, explain(r)
    assert f"BIG={big}" in lines, f"BIG has {len(r.stdout)} bytes of output"
    assert f"V1999=value-1999-{secret}" in lines
    # A Create that fails must not log the environment either.
    spec["process"]["args"] = ["/missing.wasm"]
    r2 = run_spec(containerd, spec, new_id("env1m-bad"), tmp_path)
    assert r2.returncode != 0, explain(r2)
    assert secret not in r2.stderr, "the Create error carries an env value\n" + explain(r2)
    log = containerd.log_since(offset)
    assert secret not in log, "an environment value reached containerd's (shim) log"


def test_ten_thousand_bind_mounts(containerd: Containerd, spec_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_text("in the mount\n")
    spec = base_spec(containerd, spec_root, "/fs.wasm", "read", "/m/9999/f.txt")
    spec["mounts"] = [
        {"destination": f"/m/{i}", "type": "bind", "source": str(data), "options": ["rbind", "ro"]}
        for i in range(10_000)
    ]
    t0 = time.monotonic()
    r = run_spec(containerd, spec, new_id("mounts10k"), tmp_path)
    took = time.monotonic() - t0
    print(f"\n10 000 bind mounts on containerd {containerd.version}: {took:.1f}s")
    _no_traceback(r)
    if r.returncode != 0:
        assert "mounts" in r.stderr, "refused without naming the mounts\n" + explain(r)
    else:
        assert r.stdout == "in the mount\n", explain(r)


@pytest.mark.parametrize(
    "destination", ["../../etc", "data", "../outside"], ids=["dotdot", "relative", "dotdot2"]
)
def test_bad_mount_destination_is_refused(
    containerd: Containerd, spec_root: Path, tmp_path: Path, destination: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    spec = base_spec(containerd, spec_root, "/hello.wasm")
    spec["mounts"] = [
        *spec.get("mounts", []),
        {"destination": destination, "type": "bind", "source": str(data), "options": ["rbind"]},
    ]
    index = len(spec["mounts"]) - 1
    r = run_spec(containerd, spec, new_id("dest"), tmp_path)
    assert r.returncode != 0, explain(r)
    _no_traceback(r)
    assert f"mounts[{index}]" in r.stderr, explain(r)
    assert "absolute" in r.stderr, explain(r)


@pytest.mark.parametrize(
    ("resources", "why"),
    [
        ({"memory": {"limit": 1}}, "a 1-byte memory limit"),
        ({"memory": {"limit": 2**62}}, "a 4 EiB memory limit"),
        ({"cpu": {"shares": 2**40, "quota": 1000, "period": 1_000_000}}, "absurd cpu"),
        ({"pids": {"limit": 1}}, "one pid"),
    ],
    ids=["mem-1B", "mem-4EiB", "cpu", "pids-1"],
)
def test_absurd_limits(
    containerd: Containerd,
    spec_root: Path,
    tmp_path: Path,
    resources: dict[str, Any],
    why: str,
) -> None:
    """Runs right, or fails with a clear reason (out of memory: 137 or a memory error)."""
    spec = base_spec(containerd, spec_root, "/hello.wasm")
    spec.setdefault("linux", {})["resources"] = resources
    r = run_spec(containerd, spec, new_id("limits"), tmp_path)
    _no_traceback(r)
    if r.returncode == 0:
        assert r.stdout == "hello from wasm\n", f"{why}: " + explain(r)
    else:
        text = r.stderr.lower()
        assert r.returncode == 137 or "memory" in text or "limit" in text, (
            f"{why}: failed without a clear reason\n" + explain(r)
        )


# --- the shim's own surface ---------------------------------------------------------------


def _bundle(ctrd: Containerd, cid: str) -> Path:
    return ctrd.state / "io.containerd.runtime.v2.task" / "default" / cid


def test_shim_socket_and_files_are_private(containerd: Containerd) -> None:
    cid = new_id("surface")
    try:
        detached(containerd, images.ref("sleep"), cid)
        assert wait_status(containerd, cid, "RUNNING") == "RUNNING"
        bundle = _bundle(containerd, cid)
        address = (bundle / "address").read_text().strip().removeprefix("unix://")
        st = os.stat(address)
        assert stat.S_ISSOCK(st.st_mode), address
        assert st.st_mode & 0o777 == 0o600, f"shim socket {address} is {oct(st.st_mode & 0o777)}"
        assert st.st_uid == 0, f"shim socket {address} belongs to uid {st.st_uid}"
        writable = []
        for entry in bundle.iterdir():
            if entry.name == "rootfs":
                continue
            mode = entry.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & 0o002:
                writable.append(f"{entry.name} {oct(mode & 0o7777)}")
        assert not writable, f"world-writable files in the bundle: {writable}"
        k = containerd.ctr("tasks", "kill", "-s", "SIGKILL", cid, timeout=20)
        assert k.returncode == 0, explain(k)
        assert wait_status(containerd, cid, "STOPPED") == "STOPPED"
        containerd.ctr("tasks", "rm", cid, timeout=20)
        containerd.ctr("containers", "rm", cid, timeout=20)
    finally:
        remove(containerd, cid)


def test_zygote_socket_and_cache_are_private(containerd: Containerd) -> None:
    r = run(containerd, images.ref("hello"), new_id("surface-cache"))
    assert r.returncode == 0, explain(r)
    from pywasmd.cache import CompileCache
    from pywasmd.shim import zygote

    problems = []
    zpath = zygote.socket_path()
    if os.path.exists(zpath):
        mode = os.stat(zpath).st_mode & 0o777
        if mode != 0o600:
            problems.append(f"zygote socket {zpath} is {oct(mode)}")
        dmode = os.stat(os.path.dirname(zpath)).st_mode & 0o777
        if dmode & 0o022:
            problems.append(f"zygote directory is {oct(dmode)}")
    root = Path(containerd.env.get("PYWASM_CACHE_DIR") or CompileCache().root)
    if root.exists():
        if root.stat().st_mode & 0o022:
            problems.append(f"cache directory {root} is {oct(root.stat().st_mode & 0o777)}")
        for entry in root.iterdir():
            mode = entry.lstat().st_mode
            if mode & 0o022:
                problems.append(f"cache entry {entry.name} is {oct(mode & 0o777)}")
    assert not problems, problems
