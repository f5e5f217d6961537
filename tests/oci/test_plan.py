import pytest

from pywasmd.errors import InvalidArgument
from pywasmd.oci.grants import HostSetup
from pywasmd.oci.plan import Preopen, WasiPlan, plan_from_spec
from pywasmd.oci.spec import parse_spec


def spec(**process: object) -> dict[str, object]:
    base: dict[str, object] = {"args": ["/app.wasm", "a"], "env": ["A=1", "B=x=y"], "cwd": "/"}
    base.update(process)
    return {"process": base, "root": {"path": "rootfs"}}


def test_plan_carries_args_env_and_rootfs_exactly():
    plan = plan_from_spec(parse_spec(spec()), "/b/rootfs", "/b/rootfs/app.wasm")
    assert plan == WasiPlan(
        module="/b/rootfs/app.wasm",
        argv=("/app.wasm", "a"),
        env=(("A", "1"), ("B", "x=y")),
        cwd="/",
        preopens=(Preopen("/b/rootfs", "/", readonly=False),),
    )


def test_readonly_root_is_a_readonly_preopen():
    raw = spec()
    raw["root"] = {"path": "rootfs", "readonly": True}
    plan = plan_from_spec(parse_spec(raw), "/r", "/r/app.wasm")
    assert plan.preopens[0] == Preopen("/r", "/", readonly=True)


KINDS = {"/srv/data": "dir", "/srv/c": "dir", "/x/app.yaml": "file", "/dev/fuse": "other"}


def kind_of(path: str) -> str:
    return KINDS.get(path, "missing")


def plan_with(mounts: list[dict[str, object]]) -> WasiPlan:
    raw = spec()
    raw["mounts"] = mounts
    return plan_from_spec(parse_spec(raw), "/r", "/r/app.wasm", "/b/scratch", kind_of)


@pytest.mark.parametrize(
    ("mount", "grant", "setup"),
    [
        ({"destination": "/proc", "type": "proc", "source": "proc"}, None, None),
        ({"destination": "/dev/shm", "type": "tmpfs", "source": "shm"}, None, None),
        (
            {
                "destination": "/etc/hosts",
                "type": "bind",
                "source": "/x/hosts",
                "options": ["rbind"],
            },
            None,
            None,
        ),
        (
            {
                "destination": "/data",
                "type": "bind",
                "source": "/srv/data",
                "options": ["rbind", "ro"],
            },
            Preopen("/srv/data", "/data", readonly=True),
            None,
        ),
        (
            {"destination": "/cache/", "source": "/srv/c", "options": ["bind", "rw"]},
            Preopen("/srv/c", "/cache", readonly=False),
            None,
        ),
        (
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["size=8m"]},
            Preopen("/b/scratch/m0", "/tmp"),
            HostSetup("tmpfs", "/b/scratch/m0", size=8 << 20),
        ),
        (
            {
                "destination": "/app/app.yaml",
                "type": "bind",
                "source": "/x/app.yaml",
                "options": ["rbind", "ro"],
            },
            Preopen("/b/scratch/m0", "/app", readonly=True),
            HostSetup(
                "file", "/b/scratch/m0", source="/x/app.yaml", name="app.yaml", readonly=True
            ),
        ),
    ],
)
def test_each_mount_kind(mount, grant, setup):
    plan = plan_with([mount])
    assert plan.preopens[1:] == ((grant,) if grant else ())
    assert plan.setups == ((setup,) if setup else ())


@pytest.mark.parametrize(
    ("mount", "needle"),
    [
        (
            {"destination": "/d", "type": "bind", "source": "/nope", "options": ["rbind"]},
            "does not exist",
        ),
        (
            {"destination": "/d", "type": "bind", "source": "/dev/fuse", "options": ["rbind"]},
            "device, socket or pipe",
        ),
        ({"destination": "/d", "type": "nfs", "source": "srv:/x"}, "no WASI meaning"),
        (
            {"destination": "/t", "type": "tmpfs", "source": "t", "options": ["size=lots"]},
            "not a size",
        ),
        (
            {"destination": "rel", "type": "bind", "source": "/srv/c", "options": ["rbind"]},
            "absolute",
        ),
    ],
)
def test_mounts_that_cannot_be_granted_are_refused_by_name(mount, needle):
    with pytest.raises(InvalidArgument, match=needle):
        plan_with([mount])


def test_a_mount_at_root_replaces_the_rootfs_grant():
    plan = plan_with(
        [{"destination": "/", "type": "bind", "source": "/srv/c", "options": ["rbind"]}]
    )
    assert plan.preopens == (Preopen("/srv/c", "/"),)


def test_plan_json_round_trip():
    raw = spec(user={"uid": 1000, "gid": 1000, "additionalGids": [5]})
    plan = plan_from_spec(parse_spec(raw), "/r", "/r/app.wasm")
    assert WasiPlan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"process": {"args": []}}, "process.args"),
        ({"process": {"args": ["/a.wasm"], "env": "A=1"}}, "process.env"),
        ({"root": {}}, "process"),
        ({"process": {"args": ["/a.wasm"]}, "mounts": [{"source": "x"}]}, r"mounts\[0\]"),
    ],
)
def test_bad_configs_name_the_field(raw, needle):
    with pytest.raises(InvalidArgument, match=needle):
        parse_spec(raw)


def test_env_entry_without_equals_is_refused():
    with pytest.raises(InvalidArgument, match="KEY=VALUE"):
        plan_from_spec(parse_spec(spec(env=["NOPE"])), "/r", "/r/a.wasm")


def test_host_path_picks_the_longest_grant(tmp_path):
    from pywasmd.oci.plan import host_path

    (tmp_path / "root" / "app").mkdir(parents=True)
    (tmp_path / "data" / "sub").mkdir(parents=True)
    plan = WasiPlan(
        module="m",
        argv=("m",),
        env=(),
        cwd="/",
        preopens=(Preopen(str(tmp_path / "root"), "/"), Preopen(str(tmp_path / "data"), "/data")),
    )
    assert host_path(plan, "/app") == str(tmp_path / "root" / "app")
    assert host_path(plan, "/data/sub") == str(tmp_path / "data" / "sub")
    assert host_path(plan, "/database") == str(tmp_path / "root" / "database")


def test_timeout_and_fuel_annotations_are_checked():
    raw = spec()
    raw["annotations"] = {"pywasm.io/timeout": "2.5", "pywasm.io/fuel": "1000"}
    plan = plan_from_spec(parse_spec(raw), "/r", "/r/app.wasm")
    assert (plan.timeout, plan.fuel) == (2.5, 1000)
    raw["annotations"] = {"pywasm.io/timeout": "-1"}
    with pytest.raises(InvalidArgument, match="pywasm.io/timeout"):
        plan_from_spec(parse_spec(raw), "/r", "/r/app.wasm")


def test_pids_limit_too_low_for_a_wasm_guest_is_refused_by_the_plan():
    from pywasmd.errors import InvalidArgument
    from pywasmd.oci.plan import plan_from_spec
    from pywasmd.oci.spec import parse_spec

    spec = parse_spec(
        {"process": {"args": ["/a.wasm"]}, "linux": {"resources": {"pids": {"limit": 4}}}}
    )
    # A Linux container with this limit is runc's business: parsing accepts it...
    assert spec.resources.pids_limit == 4
    # ...but a Wasm guest needs room for the engine's threads.
    with pytest.raises(InvalidArgument, match="pids.limit 4 is too low"):
        plan_from_spec(spec, "/rootfs", "/rootfs/a.wasm")
