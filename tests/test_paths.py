"""The bundle files ``delete`` trusts after the server is gone: what it refuses to act on."""

from __future__ import annotations

import os
from pathlib import Path

from pywasmd import paths


def test_init_pid_round_trips_and_garbage_reads_as_none(tmp_path: Path) -> None:
    bundle = str(tmp_path)
    assert paths.read_init_pid(bundle) == 0
    paths.write_init_pid(bundle, 4242)
    assert (tmp_path / "init.pid").read_text() == "4242"
    assert paths.read_init_pid(bundle) == 4242
    (tmp_path / "init.pid").write_text("-1\n")
    assert paths.read_init_pid(bundle) == 0


def test_runc_root_outside_the_state_root_is_ignored(tmp_path: Path) -> None:
    bundle = str(tmp_path)
    paths.write_runc_root(bundle, f"{paths.RUNC_STATE_ROOT}/default")
    assert paths.read_runc_root(bundle) == "/run/pywasm/runc/default"
    for hostile in ("/etc", f"{paths.RUNC_STATE_ROOT}/../../etc", paths.RUNC_STATE_ROOT):
        paths.write_runc_root(bundle, hostile)
        assert paths.read_runc_root(bundle) == "", hostile
    paths.forget_runc_root(bundle)
    assert not (tmp_path / "pywasm-runc").exists()


def test_cgroup_path_with_dot_dot_is_ignored(tmp_path: Path) -> None:
    bundle = str(tmp_path)
    paths.write_cgroup(bundle, "/default/c1")
    assert paths.read_cgroup(bundle) == "default/c1"
    assert paths.cgroup_dirs("default/c1", "/cg") == [
        "/cg/default/c1",
        *(
            f"/cg/{c}/default/c1"
            for c in ("memory", "cpu", "cpuacct", "pids", "freezer", "devices")
        ),
    ]
    paths.write_cgroup(bundle, "/default/../../x")
    assert paths.read_cgroup(bundle) == ""


def test_socket_path_only_under_containerds_socket_root(tmp_path: Path) -> None:
    bundle = str(tmp_path)
    paths.write_address(bundle, "unix:///run/containerd/s/abc")
    assert paths.read_socket_path(bundle) == "/run/containerd/s/abc"
    paths.write_address(bundle, "unix:///tmp/elsewhere.sock")
    assert paths.read_socket_path(bundle) == ""


def test_find_binary_looks_only_in_bin_dirs() -> None:
    found = paths.find_binary("sh")
    assert found is not None
    assert os.path.dirname(found) in paths.BIN_DIRS
    assert paths.find_binary("no-such-binary-pywasm") is None
