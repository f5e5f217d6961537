"""`pywasm doctor` against real private containerds (1.6.20 and 2.1.9): a good node passes and
then really runs a Wasm container; nodes broken one way at a time (the shim missing from
containerd's PATH, the runtime missing from containerd's config, a read-only compile cache) fail
with exit status 1 and print the command that fixes the problem; the fix, applied, makes the
doctor pass again where the test can apply it without touching the machine's own setup."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration import guests
from integration.containerd import VENV_BIN, Containerd, new_id, run
from integration.images import import_archive, ref
from integration.registry import LocalRegistry
from pywasmd import nodesetup


def doctor(ctrd: Containerd, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(VENV_BIN / "pywasm"), "doctor", "--address", ctrd.address, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def findings(ctrd: Containerd, *args: str) -> tuple[int, dict[str, list[dict[str, Any]]]]:
    r = doctor(ctrd, "--json", *args)
    doc = json.loads(r.stdout)
    by_check: dict[str, list[dict[str, Any]]] = {}
    for f in doc["findings"]:
        by_check.setdefault(f["check"], []).append(f)
    assert doc["ok"] == (r.returncode == 0), r.stdout
    return r.returncode, by_check


def status(by_check: dict[str, list[dict[str, Any]]], check: str) -> str:
    return str(by_check[check][0]["status"])


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    d = tmp_path / "cache"
    d.mkdir()
    return d


def test_good_node_passes_and_runs_a_container(containerd: Containerd, cache_dir: Path) -> None:
    r = doctor(containerd, "--cache-dir", str(cache_dir))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "this node can run Wasm containers" in r.stdout
    code, by_check = findings(containerd, "--cache-dir", str(cache_dir))
    assert code == 0
    ctr_finding = by_check["containerd"][0]
    assert ctr_finding["status"] == "ok"
    assert ctr_finding["details"]["version"].startswith(containerd.version + ".")
    assert ctr_finding["details"]["pid"] == containerd.proc.pid  # type: ignore[union-attr]
    # The shim as containerd finds it: on the PATH of containerd's own environment.
    shim = by_check["shim"][0]
    assert shim["status"] == "ok"
    assert shim["details"]["path"] == containerd.env["PATH"]
    # The test containerd runs without CRI: no handler needed, said so.
    assert status(by_check, "runtime-config") == "info"
    assert str(containerd.config) in by_check["runtime-config"][0]["summary"]
    assert status(by_check, "cache") == "ok"
    assert status(by_check, "engine-wasmtime") == "ok"
    # wasmer through the node config's Python 3.10, as the shim would launch it.
    wasmer = by_check["engine-wasmer"][0]
    assert wasmer["status"] == "ok", wasmer
    assert "3.10" in wasmer["details"]["python"] or ".venv310" in wasmer["details"]["python"]
    assert by_check["sockets"][0]["details"]["wasi_config_inherit_network"] is True
    # The verdict means something: this node does run a Wasm container.
    cid = new_id("doctor-good")
    out = run(containerd, ref("hello"), cid)
    assert out.returncode == 0, out.stderr
    assert "hello" in out.stdout.lower()


@pytest.mark.parametrize("version", ["1.6", "2.1"])
def test_cri_node_with_the_shipped_snippet(version: str, cache_dir: Path) -> None:
    """With CRI on, the handler is needed: the doctor reads the config file containerd runs
    with (from its command line) and finds the snippet `pywasm config containerd` shipped."""
    with Containerd(version, cri=True) as ctrd:
        code, by_check = findings(ctrd, "--cache-dir", str(cache_dir))
        assert code == 0, by_check
        entry = by_check["runtime-config"][0]
        assert entry["status"] == "ok"
        assert entry["details"]["config"] == str(ctrd.config)
        assert entry["details"]["config_version"] == ctrd.flavor.config_version


def test_shim_missing_from_path(containerd: Containerd, cache_dir: Path) -> None:
    r = doctor(containerd, "--cache-dir", str(cache_dir), "--path", "/usr/sbin:/usr/bin:/bin")
    assert r.returncode == 1, r.stdout
    assert "FAIL  shim" in r.stdout
    assert "containerd-shim-pywasm-v1 is not on the PATH=/usr/sbin:/usr/bin:/bin" in r.stdout
    assert "fix: ln -s " in r.stdout
    assert "/usr/local/bin/containerd-shim-pywasm-v1" in r.stdout
    assert "this node cannot run Wasm containers: 1 problem(s)" in r.stdout


@pytest.mark.parametrize("version", ["1.6", "2.1"])
def test_containerd_started_without_the_shim_on_its_path(
    version: str, cache_dir: Path, archives: dict[str, Path]
) -> None:
    """No --path: the doctor reads the PATH of the running containerd from /proc, and what it
    predicts is what containerd then answers."""
    ctrd = Containerd(version)
    ctrd.env["PATH"] = ":".join([*ctrd.flavor.extra_path, "/usr/sbin:/usr/bin:/sbin:/bin"])
    with ctrd:
        r = doctor(ctrd, "--cache-dir", str(cache_dir))
        assert r.returncode == 1, r.stdout
        assert f"is not on containerd's PATH={ctrd.env['PATH']}" in r.stdout
        import_archive(ctrd, ref("hello"), archives[ref("hello")])
        cid = new_id("doctor-noshim")
        out = run(ctrd, ref("hello"), cid)
        ctrd.ctr("containers", "rm", cid, timeout=20)
        assert out.returncode != 0
        assert 'binary not installed "containerd-shim-pywasm-v1"' in out.stderr


def _config_without_runtime(ctrd: Containerd, tmp_path: Path) -> Path:
    """containerd's own config with CRI on and no pywasm runtime entry."""
    text = ctrd.config.read_text()
    lines = [line for line in text.splitlines() if not line.startswith("disabled_plugins")]
    broken = tmp_path / "config.toml"
    broken.write_text("\n".join(lines) + "\n")
    return broken


def test_runtime_missing_from_config(
    containerd: Containerd, cache_dir: Path, tmp_path: Path
) -> None:
    broken = _config_without_runtime(containerd, tmp_path)
    args = ("--cache-dir", str(cache_dir), "--containerd-config", str(broken))
    r = doctor(containerd, *args)
    assert r.returncode == 1, r.stdout
    major = containerd.version.split(".")[0]
    assert f"{broken} does not declare CRI runtime handler 'pywasm'" in r.stdout
    fix = f"pywasm config containerd --version {major} --install {broken}"
    assert fix in r.stdout
    # The printed fix, applied to the copy, is what the doctor asked for.
    nodesetup.install("containerd", broken, int(major))
    code, by_check = findings(containerd, *args)
    assert code == 0, by_check
    assert status(by_check, "runtime-config") == "ok"


def test_config_layout_must_match_the_major_version(
    containerd: Containerd, cache_dir: Path, tmp_path: Path
) -> None:
    v3 = tmp_path / "config.toml"
    v3.write_text("version = 3\n\n" + nodesetup.containerd_snippet(2))
    r = doctor(containerd, "--cache-dir", str(cache_dir), "--containerd-config", str(v3))
    if containerd.version == "1.6":
        assert r.returncode == 1, r.stdout
        assert "version = 3 is containerd 2.x's layout; containerd 1.x reads 2" in r.stdout
    else:
        assert r.returncode == 0, r.stdout
        assert f"{v3} (version 3) declares the CRI handler pywasm" in r.stdout


@pytest.fixture
def readonly_cache(cache_dir: Path) -> Iterator[Path]:
    subprocess.run(["mount", "--bind", str(cache_dir), str(cache_dir)], check=True)
    try:
        subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(cache_dir)], check=True, capture_output=True
        )
        yield cache_dir
    finally:
        subprocess.run(["umount", str(cache_dir)], check=True)


def test_readonly_cache(containerd: Containerd, readonly_cache: Path) -> None:
    r = doctor(containerd, "--cache-dir", str(readonly_cache))
    assert r.returncode == 1, r.stdout
    assert f"the compile cache {readonly_cache} is not writable (Read-only file system)" in (
        r.stdout
    )
    assert f"fix: mount -o remount,rw {readonly_cache}" in r.stdout
    code, by_check = findings(containerd, "--cache-dir", str(readonly_cache))
    assert code == 1
    assert status(by_check, "cache") == "fail"
    failed = [c for c, fs in by_check.items() if any(f["status"] == "fail" for f in fs)]
    assert failed == ["cache"]


def test_containerd_with_a_readonly_cache(readonly_cache: Path, tmp_path: Path) -> None:
    """The cache containerd's shims use (PYWASM_CACHE_DIR in its environment) is read-only:
    the doctor finds it without being told, and an artifact then cannot run."""
    ctrd = Containerd("2.1")
    ctrd.env["PYWASM_CACHE_DIR"] = str(readonly_cache)
    with ctrd, LocalRegistry() as registry:
        r = doctor(ctrd)
        assert r.returncode == 1, r.stdout
        assert f"the compile cache {readonly_cache} is not writable" in r.stdout
        artifact = f"{registry.host}/doctor-ro:1"
        build = subprocess.run(
            [str(VENV_BIN / "pywasm"), "build", str(guests.build("hello")), "-t", artifact]
            + ["--format", "artifact", "--push", "--insecure"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert build.returncode == 0, build.stderr
        argv = [str(VENV_BIN / "pywasm"), "run", "--address", ctrd.address, "--insecure", artifact]
        ran = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert ran.returncode != 0, ran.stdout
        assert f"Read-only file system: '{readonly_cache}/modules'" in ran.stderr, ran.stderr


def test_no_containerd_on_the_socket(tmp_path: Path) -> None:
    sock = tmp_path / "nothing.sock"
    argv = [str(VENV_BIN / "pywasm"), "doctor", "--address", str(sock)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1
    assert f"no containerd serves {sock} (the socket does not exist)" in r.stdout
    assert "fix: systemctl start containerd" in r.stdout
