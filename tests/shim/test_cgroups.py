from pathlib import Path

from pywasmd.oci.spec import Resources
from pywasmd.shim.cgroups import Cgroup, normalize


def fake_v1(root: Path) -> None:
    for controller in ("memory", "cpu", "cpuacct", "pids", "freezer"):
        (root / controller).mkdir(parents=True)


def test_limits_go_to_a_new_cgroup_and_it_is_removed_after(tmp_path: Path) -> None:
    fake_v1(tmp_path)
    cg = Cgroup("/default/c1", root=str(tmp_path))
    cg.create(Resources(memory_limit=1 << 20, cpu_quota=5000, cpu_period=100000, pids_limit=4))
    assert (tmp_path / "memory/default/c1/memory.limit_in_bytes").read_text() == str(1 << 20)
    assert (tmp_path / "cpu/default/c1/cpu.cfs_quota_us").read_text() == "5000"
    assert (tmp_path / "pids/default/c1/pids.max").read_text() == "4"
    for f in (tmp_path / "memory/default/c1").iterdir():
        f.unlink()
    for controller in ("cpu", "pids"):
        for f in (tmp_path / controller / "default/c1").iterdir():
            f.unlink()
    cg.destroy()
    assert not (tmp_path / "memory/default/c1").exists()


def test_a_cgroup_others_use_is_joined_without_touching_its_limits(tmp_path: Path) -> None:
    fake_v1(tmp_path)
    (tmp_path / "cpu/default/other").mkdir(parents=True)
    cg = Cgroup("/default", root=str(tmp_path))
    cg.create(Resources(cpu_quota=1000))
    assert cg.shared
    assert not (tmp_path / "cpu/default/cpu.cfs_quota_us").exists()
    cg.destroy()
    assert (tmp_path / "cpu/default").is_dir()


def test_systemd_paths_become_scopes() -> None:
    assert normalize("system.slice:docker:abc") == "/system.slice/docker-abc.scope"
    assert normalize("docker/abc") == "/docker/abc"
