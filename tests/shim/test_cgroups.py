from pathlib import Path

from pywasmd.oci.spec import Resources, parse_resources
from pywasmd.shim import cgroups
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


def test_device_rules_are_written_in_order_on_cgroup_v1(tmp_path: Path) -> None:
    fake_v1(tmp_path)
    (tmp_path / "devices").mkdir()
    cg = Cgroup("/default/c2", root=str(tmp_path))
    rules = parse_resources(
        {
            "devices": [
                {"allow": False, "access": "rwm"},
                {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": True, "type": "c", "major": 136, "access": "rwm"},
            ]
        }
    )
    written: list[tuple[str, str]] = []
    real_write = cgroups._write

    def record(path: str, value: str) -> None:
        written.append((Path(path).name, value))
        real_write(path, value)

    cgroups._write = record
    try:
        cg.create(rules)
    finally:
        cgroups._write = real_write
    assert [w for w in written if w[0].startswith("devices.")][:5] == [
        ("devices.deny", "a"),
        ("devices.allow", "c 1:3 rwm"),
        ("devices.allow", "c 136:* rwm"),
        # runc's own defaults follow: mknod of any character and block node
        ("devices.allow", "c *:* m"),
        ("devices.allow", "b *:* m"),
    ]
