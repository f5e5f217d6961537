"""The subset of an OCI runtime config (config.json) that pywasmd acts on.

Parsing is pure: a dict in, frozen dataclasses out, and every refusal is an
``InvalidArgument`` that names the field and how to fix it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pywasmd.errors import InvalidArgument


@dataclass(frozen=True)
class User:
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Process:
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    terminal: bool = False
    user: User = User()


@dataclass(frozen=True)
class Mount:
    destination: str
    type: str = ""
    source: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Root:
    path: str = "rootfs"
    readonly: bool = False


@dataclass(frozen=True)
class Resources:
    """``linux.resources`` that pywasm enforces (cgroup, and the engine for memory)."""

    memory_limit: int | None = None
    cpu_shares: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    pids_limit: int | None = None
    #: ``linux.resources.devices`` in order: (allow, type a|c|b, major, minor, access), -1 = any.
    devices: tuple[tuple[bool, str, int, int, str], ...] = ()


@dataclass(frozen=True)
class RuntimeSpec:
    process: Process
    root: Root = Root()
    mounts: tuple[Mount, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    memory_limit: int | None = None
    cgroups_path: str = ""
    resources: Resources = Resources()
    #: The whole config, for the parts read only on one path (the sandbox of a Wasm guest).
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def load_spec(bundle: str) -> RuntimeSpec:
    """Read ``<bundle>/config.json``; errors name the file."""
    path = Path(bundle) / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidArgument(
            f"{path}: no OCI runtime config; the bundle must hold config.json"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"{path}: cannot read the OCI runtime config: {exc}") from exc
    except RecursionError:
        raise InvalidArgument(f"{path}: the OCI runtime config is nested too deeply") from None
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{path}: the OCI runtime config must be a JSON object")
    try:
        return parse_spec(raw)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{path}: {exc.message}") from None
    except RecursionError:
        raise InvalidArgument(f"{path}: the OCI runtime config is nested too deeply") from None


def parse_spec(raw: Mapping[str, Any]) -> RuntimeSpec:
    process = _process(_obj(raw, "process"))
    root_raw = _obj(raw, "root", required=False)
    root_path = _str(root_raw, "root.path", "path", "rootfs")
    if not root_path.startswith("/") and ".." in root_path.split("/"):
        raise InvalidArgument(
            f"root.path {root_path!r} leaves the bundle; give a path inside it or an absolute one"
        )
    root = Root(path=root_path, readonly=_bool(root_raw, "root.readonly", "readonly"))
    mounts = tuple(_mount(i, m) for i, m in enumerate(_list(raw, "mounts")))
    annotations = _obj(raw, "annotations", required=False)
    linux = _obj(raw, "linux", required=False)
    resources = parse_resources(_obj(linux, "resources", required=False))
    return RuntimeSpec(
        process=process,
        root=root,
        mounts=mounts,
        annotations={str(k): str(v) for k, v in annotations.items()},
        memory_limit=resources.memory_limit,
        cgroups_path=_str(linux, "linux.cgroupsPath", "cgroupsPath", ""),
        resources=resources,
        raw=raw,
    )


def parse_resources(res_raw: Mapping[str, Any]) -> Resources:
    """``linux.resources`` (also the body of an Update): what pywasm enforces of it."""
    memory = _obj(res_raw, "memory", required=False)
    cpu = _obj(res_raw, "cpu", required=False)
    pids = _obj(res_raw, "pids", required=False)
    limit = _int(memory, "linux.resources.memory.limit", "limit")
    if limit is not None and limit > _INT64_MAX:
        raise InvalidArgument(f"linux.resources.memory.limit {limit} is above 2^63-1 bytes")
    if limit is not None and limit < 0 and limit != -1:
        raise InvalidArgument(
            f"linux.resources.memory.limit {limit} is negative; give a number of bytes, "
            "or leave it out for no limit"
        )
    pids_limit = _int(pids, "linux.resources.pids.limit", "limit")
    return Resources(
        memory_limit=limit if limit is not None and limit > 0 else None,
        cpu_shares=_int(cpu, "linux.resources.cpu.shares", "shares"),
        cpu_quota=_int(cpu, "linux.resources.cpu.quota", "quota"),
        cpu_period=_int(cpu, "linux.resources.cpu.period", "period"),
        pids_limit=pids_limit,
        devices=_device_rules(res_raw.get("devices")),
    )


def _device_rules(raw: object) -> tuple[tuple[bool, str, int, int, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidArgument("linux.resources.devices must be a list of device rules")
    rules = []
    for index, rule in enumerate(raw):
        where = f"linux.resources.devices[{index}]"
        if not isinstance(rule, dict):
            raise InvalidArgument(f"{where} must be an object")
        kind = str(rule.get("type") or "a")
        access = str(rule.get("access") or "rwm")
        if kind not in ("a", "c", "b") or not access or set(access) - set("rwm"):
            raise InvalidArgument(f"{where}: type must be a, c or b and access a mix of r, w, m")
        numbers = [rule.get("major"), rule.get("minor")]
        if any(n is not None and (isinstance(n, bool) or not isinstance(n, int)) for n in numbers):
            raise InvalidArgument(f"{where}: major and minor must be integers")
        major, minor = (-1 if n is None else int(n) for n in numbers)
        rules.append((bool(rule.get("allow", False)), kind, major, minor, access))
    return tuple(rules)


def check_wasm_resources(res: Resources) -> None:
    """What a Wasm container needs beyond any container (a Linux one goes to runc as it is)."""
    if res.pids_limit is not None and 0 < res.pids_limit < MIN_PIDS:
        raise InvalidArgument(
            f"linux.resources.pids.limit {res.pids_limit} is too low for a Wasm container: the "
            f"engine runs the guest with a few threads of its own; give at least {MIN_PIDS}"
        )


def parse_process(raw: object) -> Process:
    """An OCI ``process`` object on its own: the spec of an exec'd process."""
    if not isinstance(raw, dict):
        raise InvalidArgument("the exec process spec must be a JSON object (an OCI process)")
    return _process(raw)


def _process(raw: Mapping[str, Any]) -> Process:
    args = raw.get("args")
    if isinstance(args, list) and any(isinstance(a, str) and "\0" in a for a in args):
        raise InvalidArgument("process.args must not contain NUL characters")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise InvalidArgument(
            "process.args must be a non-empty list of strings whose first element names "
            'the Wasm module, e.g. ["/app.wasm"]; give the image an entrypoint or pass a command'
        )
    env = raw.get("env", [])
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise InvalidArgument('process.env must be a list of "KEY=VALUE" strings')
    if any("\0" in e for e in env):
        raise InvalidArgument("process.env must not contain NUL characters")
    user_raw = raw.get("user") or {}
    if not isinstance(user_raw, dict):
        raise InvalidArgument("process.user must be an object with uid and gid")
    gids = user_raw.get("additionalGids") or []
    if not isinstance(gids, list):
        raise InvalidArgument("process.user.additionalGids must be a list of group ids")
    user = User(
        uid=_id(user_raw.get("uid", 0), "process.user.uid"),
        gid=_id(user_raw.get("gid", 0), "process.user.gid"),
        additional_gids=tuple(_id(g, "process.user.additionalGids") for g in gids),
    )
    return Process(
        args=tuple(args),
        env=tuple(env),
        cwd=_str(raw, "process.cwd", "cwd", "/") or "/",
        terminal=_bool(raw, "process.terminal", "terminal"),
        user=user,
    )


def _mount(index: int, raw: Any) -> Mount:
    if not isinstance(raw, dict) or not isinstance(raw.get("destination"), str):
        raise InvalidArgument(f"mounts[{index}] must be an object with a string destination")
    options = raw.get("options") or []
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise InvalidArgument(
            f'mounts[{index}].options must be a list of strings, e.g. ["rbind", "ro"]'
        )
    return Mount(
        destination=raw["destination"],
        type=str(raw.get("type", "")),
        source=str(raw.get("source", "")),
        options=tuple(str(o) for o in options),
    )


def _obj(raw: Mapping[str, Any], key: str, *, required: bool = True) -> Mapping[str, Any]:
    value = raw.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{key} must be a JSON object")
    return value


def _list(raw: Mapping[str, Any], key: str) -> list[Any]:
    value = raw.get(key) or []
    if not isinstance(value, list):
        raise InvalidArgument(f"{key} must be a JSON list")
    return value


_INT64_MAX = 2**63 - 1
#: Threads the engine starts besides the guest (wasmtime's WASI runtime), with room to spare.
MIN_PIDS = 16
_ID_MAX = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel


def _id(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _ID_MAX:
        raise InvalidArgument(f"{name} must be a number from 0 to {_ID_MAX}, not {value!r}")
    return value


def _bool(raw: Mapping[str, Any], name: str, key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name} must be true or false, not {value!r}")
    return value


def _int(raw: Mapping[str, Any], name: str, key: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name} must be an integer, not {value!r}")
    return value


def _str(raw: Mapping[str, Any], name: str, key: str, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string")
    return value
