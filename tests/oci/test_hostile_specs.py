"""Hostile config.json corpus (issue 8, "Hostile input"): every spec is refused with an
InvalidArgument that names the offending field, or yields a plan that is right.

This is what the shim does at Create before anything touches the host: `load_spec`, then
`plan_from_spec`, then the plan's trip to the worker (`to_json` / `from_json`). Specs that
ctr can carry are also run end to end in integration/test_hostile.py; most of these (wrong
JSON types, numbers beyond int64) never get through Go's decoder, so only a bundle written
by hand or by a hostile client reaches the shim with them.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pywasmd.errors import InvalidArgument
from pywasmd.oci.plan import WasiPlan, plan_from_spec
from pywasmd.oci.spec import load_spec

Spec = dict[str, Any]


def good() -> Spec:
    return {
        "ociVersion": "1.0.2",
        "process": {
            "args": ["/app.wasm", "a"],
            "env": ["PATH=/bin", "A=1"],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0},
        },
        "root": {"path": "rootfs"},
        "mounts": [],
        "annotations": {},
        "linux": {"resources": {}},
    }


def _set(path: str, value: Any) -> Callable[[Spec], None]:
    """A mutation that sets dotted `path` (list indexes as numbers) to `value`."""

    def mutate(spec: Spec) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _drop(path: str) -> Callable[[Spec], None]:
    def mutate(spec: Spec) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for part in parents:
            node = node[part]
        del node[last]

    return mutate


def _mounts(*mounts: Any) -> Callable[[Spec], None]:
    return _set("mounts", list(mounts))


HOST_DIR = "/tmp"  # any directory that exists on every host

# (id, mutation, field the error must name). Each must be refused with InvalidArgument.
REFUSED: list[tuple[str, Callable[[Spec], None], str]] = [
    ("no-process", _drop("process"), "process"),
    ("process-string", _set("process", "app.wasm"), "process"),
    ("no-args", _drop("process.args"), "process.args"),
    ("args-empty", _set("process.args", []), "process.args"),
    ("args-string", _set("process.args", "/app.wasm"), "process.args"),
    ("args-number", _set("process.args", ["/app.wasm", 5]), "process.args"),
    ("args-nul", _set("process.args", ["/app.wasm", "a\0b"]), "process.args"),
    ("env-string", _set("process.env", "A=1"), "process.env"),
    ("env-number", _set("process.env", ["A=1", 7]), "process.env"),
    ("env-no-equals", _set("process.env", ["JUSTANAME"]), "process.env"),
    ("env-empty-key", _set("process.env", ["=value"]), "process.env"),
    ("env-nul", _set("process.env", ["A=x\0y"]), "process.env"),
    ("cwd-relative", _set("process.cwd", "data"), "process.cwd"),
    ("cwd-number", _set("process.cwd", 3), "process.cwd"),
    ("terminal-string", _set("process.terminal", "false"), "process.terminal"),
    ("user-list", _set("process.user", [0, 0]), "process.user"),
    ("uid-string", _set("process.user.uid", "root"), "process.user.uid"),
    ("uid-negative", _set("process.user.uid", -1), "process.user.uid"),
    ("uid-huge", _set("process.user.uid", 2**40), "process.user.uid"),
    ("gid-float", _set("process.user.gid", 1.5), "process.user.gid"),
    ("gids-string", _set("process.user.additionalGids", "10"), "additionalGids"),
    ("root-string", _set("root", "rootfs"), "root"),
    ("root-path-number", _set("root.path", 1), "root.path"),
    ("root-path-escapes-bundle", _set("root.path", "../../../etc"), "root.path"),
    ("root-readonly-string", _set("root.readonly", "false"), "root.readonly"),
    ("mounts-object", _set("mounts", {"destination": "/data"}), "mounts"),
    ("mount-string", _mounts("/data"), "mounts[0]"),
    ("mount-no-destination", _mounts({"type": "bind", "source": HOST_DIR}), "mounts[0]"),
    (
        "mount-destination-relative",
        _mounts({"destination": "data", "type": "bind", "source": HOST_DIR, "options": ["rbind"]}),
        "mounts[0]",
    ),
    (
        "mount-destination-dotdot",
        _mounts(
            {"destination": "../../etc", "type": "bind", "source": HOST_DIR, "options": ["rbind"]}
        ),
        "mounts[0]",
    ),
    (
        "mount-options-string",
        _mounts({"destination": "/data", "type": "bind", "source": HOST_DIR, "options": "ro"}),
        "mounts[0]",
    ),
    (
        "mount-source-missing",
        _mounts(
            {"destination": "/d", "type": "bind", "source": "/nonexistent/x", "options": ["bind"]}
        ),
        "mounts[0]",
    ),
    ("mount-type-overlay", _mounts({"destination": "/d", "type": "overlay"}), "mounts[0]"),
    (
        "tmpfs-size-garbage",
        _mounts({"destination": "/t", "type": "tmpfs", "options": ["size=lots"]}),
        "mounts[0]",
    ),
    ("annotations-list", _set("annotations", ["a=b"]), "annotations"),
    ("linux-string", _set("linux", "yes"), "linux"),
    ("resources-list", _set("linux.resources", []), "resources"),
    ("memory-limit-string", _set("linux.resources.memory", {"limit": "1g"}), "memory.limit"),
    ("memory-limit-negative", _set("linux.resources.memory", {"limit": -5}), "memory.limit"),
    ("memory-limit-over-int64", _set("linux.resources.memory", {"limit": 2**70}), "memory.limit"),
    ("cpu-quota-float", _set("linux.resources.cpu", {"quota": 0.5}), "cpu.quota"),
    ("pids-limit-string", _set("linux.resources.pids", {"limit": "10"}), "pids.limit"),
    ("cgroups-path-number", _set("linux.cgroupsPath", 5), "linux.cgroupsPath"),
    ("timeout-negative", _set("annotations", {"pywasm.io/timeout": "-1"}), "pywasm.io/timeout"),
    ("timeout-nan", _set("annotations", {"pywasm.io/timeout": "nan"}), "pywasm.io/timeout"),
    ("timeout-inf", _set("annotations", {"pywasm.io/timeout": "inf"}), "pywasm.io/timeout"),
    ("timeout-1e400", _set("annotations", {"pywasm.io/timeout": "1e400"}), "pywasm.io/timeout"),
    ("fuel-over-u64", _set("annotations", {"pywasm.io/fuel": str(2**70)}), "pywasm.io/fuel"),
]


def write_bundle(tmp_path: Path, spec: Any, raw: bytes | None = None) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
    (bundle / "rootfs" / "app.wasm").write_bytes(b"\0asm\1\0\0\0")
    (bundle / "config.json").write_bytes(raw if raw is not None else json.dumps(spec).encode())
    return bundle


def create_plan(bundle: Path) -> WasiPlan:
    """What Create does with config.json before touching the host, then the worker's view."""
    spec = load_spec(str(bundle))
    rootfs = str(bundle / spec.root.path)
    plan = plan_from_spec(spec, rootfs, rootfs + "/app.wasm", str(bundle / "scratch"))
    return WasiPlan.from_json(json.loads(json.dumps(plan.to_json())))


@pytest.mark.parametrize(("mutate", "field"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_naming_the_field(
    tmp_path: Path, mutate: Callable[[Spec], None], field: str
) -> None:
    spec = good()
    mutate(spec)
    bundle = write_bundle(tmp_path, spec)
    # Anything but InvalidArgument (a crash: ValueError, AttributeError...) fails the test too.
    with pytest.raises(InvalidArgument) as refused:
        create_plan(bundle)
    assert field in refused.value.message, f"the error does not name {field!r}"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "empty"),
        (b"{", "truncated"),
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b"[]", "a list"),
        (b"null", "null"),
        (b"[" * 100_000 + b"]" * 100_000, "nested 100 000 deep"),
        (b'{"process": ' * 50_000 + b"{}" + b"}" * 50_000, "objects nested 50 000 deep"),
    ],
    ids=["empty", "truncated", "not-utf8", "list", "null", "deep-lists", "deep-objects"],
)
def test_unreadable_config_is_refused(tmp_path: Path, raw: bytes, why: str) -> None:
    bundle = write_bundle(tmp_path, None, raw)
    with pytest.raises(InvalidArgument) as refused:
        create_plan(bundle)
    assert "config.json" in refused.value.message, why


# --- accepted, and right ------------------------------------------------------------------


def test_ten_thousand_bind_mounts(tmp_path: Path) -> None:
    spec = good()
    spec["mounts"] = [
        {"destination": f"/m/{i}", "type": "bind", "source": HOST_DIR, "options": ["rbind", "ro"]}
        for i in range(10_000)
    ]
    t0 = time.monotonic()
    plan = create_plan(write_bundle(tmp_path, spec))
    took = time.monotonic() - t0
    grants = [p for p in plan.preopens if p.guest.startswith("/m/")]
    assert len(grants) == 10_000
    assert all(p.readonly for p in grants)
    assert took < 5, f"10 000 mounts took {took:.1f}s to plan"


def test_one_mib_of_environment(tmp_path: Path) -> None:
    spec = good()
    big = "x" * (1 << 20)
    many = [f"V{i}={i}" for i in range(20_000)]
    spec["process"]["env"] = ["BIG=" + big, *many, "EQ=a=b=c"]
    plan = create_plan(write_bundle(tmp_path, spec))
    env = dict(plan.env)
    assert env["BIG"] == big
    assert env["V19999"] == "19999"
    assert env["EQ"] == "a=b=c"


def test_dotdot_inside_an_absolute_destination_stays_in_the_guest(tmp_path: Path) -> None:
    spec = good()
    spec["mounts"] = [
        {"destination": "/data/../../etc", "type": "bind", "source": HOST_DIR, "options": ["bind"]}
    ]
    plan = create_plan(write_bundle(tmp_path, spec))
    assert [(p.host, p.guest) for p in plan.preopens if p.host == HOST_DIR] == [(HOST_DIR, "/etc")]


def test_absurd_but_well_typed_limits(tmp_path: Path) -> None:
    spec = good()
    spec["linux"]["resources"] = {
        "memory": {"limit": 1},
        "cpu": {"shares": 2**40, "quota": -1, "period": 1},
        "pids": {"limit": 0},
    }
    plan = create_plan(write_bundle(tmp_path, spec))
    assert plan.memory_limit == 1


def test_ten_thousand_tmpfs_mounts_are_bounded(tmp_path: Path) -> None:
    """Each tmpfs becomes a real host mount at Create: 10 000 of them must be refused (or
    capped) before the shim mounts anything, naming the field."""
    spec = good()
    spec["mounts"] = [
        {"destination": f"/t/{i}", "type": "tmpfs", "options": ["size=1g"]} for i in range(10_000)
    ]
    refusal = ""
    try:
        plan = create_plan(write_bundle(tmp_path, spec))
    except InvalidArgument as exc:
        refusal = exc.message
    else:
        total = sum(s.size for s in plan.setups)
        pytest.fail(
            f"accepted: {len(plan.setups)} host tmpfs mounts, {total >> 30} GiB of caps, would "
            "be mounted at Create"
        )
    assert "mounts" in refusal, refusal


def test_spec_is_not_changed_by_planning(tmp_path: Path) -> None:
    spec = good()
    before = copy.deepcopy(spec)
    create_plan(write_bundle(tmp_path, spec))
    assert spec == before
