"""OCI runtime config -> WASI plan: what a guest may see and how it starts.

The plan is pure data, built without touching the host, so tests can compare
plans directly.  Worked example::

    config.json                               WasiPlan
    process.args ["/app.wasm", "a"]       ->  argv ("/app.wasm", "a"), module <rootfs>/app.wasm
    process.env  ["A=1", "B=x=y"]         ->  env (("A", "1"), ("B", "x=y"))
    root.path "rootfs", readonly false    ->  Preopen("<bundle>/rootfs", "/", readonly=False)
    mounts [{bind /srv -> /data, ro}]     ->  Preopen("/srv", "/data", readonly=True)
    mounts [{tmpfs -> /tmp, size=8m}]     ->  Preopen("<scratch>/m0", "/tmp"), HostSetup(tmpfs)
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from pywasmd.errors import InvalidArgument
from pywasmd.oci.grants import HostSetup, KindOf, Preopen, grant_mounts, host_kind
from pywasmd.oci.http import HttpPlan, http_plan
from pywasmd.oci.sandbox import Sandbox, parse_sandbox
from pywasmd.oci.spec import RuntimeSpec, check_wasm_resources


@dataclass(frozen=True)
class WasiPlan:
    module: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    cwd: str
    preopens: tuple[Preopen, ...]
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    memory_limit: int | None = None
    engine: str = "wasmtime"
    features: tuple[str, ...] = ()
    timeout: float | None = None
    fuel: int | None = None
    network: str = "all"
    setups: tuple[HostSetup, ...] = ()
    #: The Linux sandbox the worker enters before the guest runs; None: the shim's own.
    sandbox: Sandbox | None = None
    #: Run the sandbox tests' payload in place of the guest (see pywasmd.shim.worker).
    test_payload: bool = False
    #: Serve the module as an HTTP function (pywasm.io/trigger=http, docs/http.md); None: a command.
    http: HttpPlan | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "module": self.module,
            "argv": list(self.argv),
            "env": [list(kv) for kv in self.env],
            "cwd": self.cwd,
            "preopens": [[p.host, p.guest, p.readonly] for p in self.preopens],
            "uid": self.uid,
            "gid": self.gid,
            "additional_gids": list(self.additional_gids),
            "memory_limit": self.memory_limit,
            "engine": self.engine,
            "features": list(self.features),
            "timeout": self.timeout,
            "fuel": self.fuel,
            "network": self.network,
            "setups": [
                [h.kind, h.target, h.source, h.name, h.size, h.readonly] for h in self.setups
            ],
            "sandbox": None if self.sandbox is None else self.sandbox.to_json(),
            "test_payload": self.test_payload,
            "http": None if self.http is None else self.http.to_json(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> WasiPlan:
        def seq(key: str) -> list[list[object]]:
            value = raw[key]
            assert isinstance(value, list)
            return value

        limit = raw.get("memory_limit")
        return cls(
            module=str(raw["module"]),
            argv=tuple(str(a) for a in seq("argv")),
            env=tuple((str(k), str(v)) for k, v in seq("env")),
            cwd=str(raw["cwd"]),
            preopens=tuple(Preopen(str(h), str(g), bool(r)) for h, g, r in seq("preopens")),
            uid=int(str(raw.get("uid", 0))),
            gid=int(str(raw.get("gid", 0))),
            additional_gids=tuple(int(str(g)) for g in seq("additional_gids")),
            memory_limit=int(limit) if isinstance(limit, int) else None,
            engine=str(raw.get("engine", "wasmtime")),
            features=tuple(str(f) for f in seq("features")) if "features" in raw else (),
            timeout=float(str(raw["timeout"])) if raw.get("timeout") is not None else None,
            fuel=int(str(raw["fuel"])) if raw.get("fuel") is not None else None,
            network=str(raw.get("network", "all")),
            setups=tuple(
                HostSetup(str(k), str(t), str(src), str(n), int(str(size)), bool(ro))
                for k, t, src, n, size, ro in (seq("setups") if "setups" in raw else [])
            ),
            sandbox=Sandbox.from_json(sb) if isinstance(sb := raw.get("sandbox"), dict) else None,
            test_payload=bool(raw.get("test_payload", False)),
            http=HttpPlan.from_json(raw.get("http")),
        )


TIMEOUT_ANNOTATION = "pywasm.io/timeout"
TEST_PAYLOAD_ANNOTATION = "pywasm.io/test-payload"
FUEL_ANNOTATION = "pywasm.io/fuel"
_ANNOTATION_MAX: dict[str, float] = {TIMEOUT_ANNOTATION: 10**9, FUEL_ANNOTATION: 2**64 - 1}


def _positive(
    annotations: Mapping[str, str], key: str, kind: type[float] | type[int], example: str
) -> float | int | None:
    text = annotations.get(key)
    if text is None:
        return None
    try:
        value = kind(text)
    except (ValueError, OverflowError):
        value = 0
    if not 0 < value <= _ANNOTATION_MAX[key]:  # also refuses nan and inf
        raise InvalidArgument(
            f"annotation {key}={text!r} must be a positive {kind.__name__}, e.g. {example}"
        )
    return value


def split_env(entries: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"process.env entry {entry!r} is not KEY=VALUE")
        pairs.append((key, value))
    return tuple(pairs)


def plan_from_spec(
    spec: RuntimeSpec,
    rootfs: str,
    module: str,
    scratch: str = "",
    kind_of: KindOf = host_kind,
) -> WasiPlan:
    """Translate ``spec`` for a guest whose root is ``rootfs`` and whose module is ``module``.

    ``scratch`` is a private directory of the container for the host side of tmpfs and
    single-file mounts; ``kind_of`` tells directories from files on the host.
    """
    check_wasm_resources(spec.resources)
    cwd = posixpath.normpath(spec.process.cwd) if spec.process.cwd else "/"
    if not cwd.startswith("/"):
        raise InvalidArgument(f"process.cwd {spec.process.cwd!r} must be an absolute path")
    grants, setups = grant_mounts(spec.mounts, scratch or rootfs + ".pywasm", kind_of)
    sandbox = parse_sandbox(spec.raw, rootfs) if "linux" in spec.raw else None
    if sandbox is not None and sandbox.pivots:
        grants, setups = _in_container(grants, setups)
        rootfs = "/"
    root = (
        ()
        if any(g.guest == "/" for g in grants)
        else (Preopen(rootfs, "/", readonly=spec.root.readonly),)
    )
    preopens = root + grants
    return WasiPlan(
        module=module,
        argv=spec.process.args,
        env=split_env(spec.process.env),
        cwd=cwd,
        preopens=preopens,
        uid=spec.process.user.uid,
        gid=spec.process.user.gid,
        additional_gids=spec.process.user.additional_gids,
        memory_limit=spec.memory_limit,
        timeout=_positive(spec.annotations, TIMEOUT_ANNOTATION, float, "30 (seconds)"),
        fuel=_int_or_none(_positive(spec.annotations, FUEL_ANNOTATION, int, "1000000000")),
        network=network_mode(spec.annotations),
        setups=setups,
        sandbox=sandbox,
        test_payload=spec.annotations.get(TEST_PAYLOAD_ANNOTATION) == "1",
        http=http_plan(spec.annotations),
    )


def _in_container(
    grants: tuple[Preopen, ...], setups: tuple[HostSetup, ...]
) -> tuple[tuple[Preopen, ...], tuple[HostSetup, ...]]:
    """With a mount namespace of its own the worker sees the container's paths after
    pivot_root: each grant is its destination there, and the mounts themselves happen
    inside the namespace (nothing to prepare on the host).  A single-file bind needs no
    grant of its own: it is a file of the root grant, read-only in the kernel when asked."""
    files = {s.target for s in setups if s.kind == "file"}
    return tuple(Preopen(g.guest, g.guest, g.readonly) for g in grants if g.host not in files), ()


def missing_cwd(cwd: str) -> InvalidArgument:
    """The refusal of a ``process.cwd`` the container does not have (checked by the shim on
    the host, or by the worker inside the container's own mount namespace)."""
    return InvalidArgument(
        f"process.cwd {cwd!r} does not exist in the container: create it in the image "
        "(WORKDIR) or mount it, or pass an existing directory (-w/--cwd)"
    )


def host_path(plan: WasiPlan, guest: str) -> str | None:
    """Where ``guest`` lives on the host: the longest preopen that holds it wins."""
    from pywasmd.oci.module import resolve_in_root

    best: Preopen | None = None
    for grant in plan.preopens:
        prefix = grant.guest.rstrip("/") + "/"
        if (guest == grant.guest or guest.startswith(prefix) or grant.guest == "/") and (
            best is None or len(grant.guest) > len(best.guest)
        ):
            best = grant
    if best is None:
        return None
    rest = guest[len(best.guest) :] if best.guest != "/" else guest
    return resolve_in_root(best.host, rest)


def _int_or_none(value: float | int | None) -> int | None:
    return None if value is None else int(value)


NETWORK_ANNOTATION = "pywasm.io/network"
#: What each value lets a WASI p2 component do (docs/networking.md).
NETWORK_MODES: dict[str, str] = {
    "all": "TCP and UDP sockets (listen, accept, connect), name lookup and outgoing HTTP",
    "http": "outgoing HTTP requests (wasi:http) only; socket creation refused",
    "none": "no sockets, no name lookup, no outgoing HTTP",
}


def network_mode(annotations: Mapping[str, str]) -> str:
    value = annotations.get(NETWORK_ANNOTATION, "all")
    if value not in NETWORK_MODES:
        allowed = "; ".join(f"{k} = {v}" for k, v in NETWORK_MODES.items())
        raise InvalidArgument(
            f"annotation {NETWORK_ANNOTATION}={value!r} is not allowed; use one of: {allowed}"
        )
    return value
