"""The ``Stats`` RPC: a container's cgroup counters as containerd's cgroup ``Metrics``.

``docker stats``, ``ctr task metrics`` and CRI's ``ContainerStats`` decode the Any a shim
returns as ``io.containerd.cgroups.v1.Metrics`` (cgroup v1 hosts) or
``io.containerd.cgroups.v2.Metrics`` (unified hierarchy), exactly as runc's shim fills them
from the container's cgroup files. The worker joined that cgroup before the guest ran, so the
numbers cover the engine and the guest. Unreadable files read as zero: a counter that a kernel
does not offer must not make the whole call fail. Limits are passed on as the kernel states
them (cgroup v1's "unlimited" is a huge number), as runc's shim does; Docker replaces a limit
above the host's memory by the host's memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from google.protobuf import any_pb2

from pywasmd.api.cgroups.v1 import metrics_pb2 as v1
from pywasmd.api.cgroups.v2 import metrics_pb2 as v2
from pywasmd.shim.cgroups import Cgroup

#: Any type URLs as containerd's typeurl names them: the full proto name, no prefix.
V1_TYPE_URL = "io.containerd.cgroups.v1.Metrics"
V2_TYPE_URL = "io.containerd.cgroups.v2.Metrics"


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _number(text: str) -> int:
    """A counter file's value; "max" (no limit) and anything unreadable are 0."""
    text = text.strip()
    return int(text) if text.isdigit() else 0


def _flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, cpuacct.stat, oom_control, events)."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        value = value.strip()
        if key and value.isdigit():
            found[key] = int(value)
    return found


def _dir(cgroup: Cgroup, controller: str) -> str:
    rel = cgroup.path.lstrip("/")
    if cgroup.v2:
        return os.path.join(cgroup.root, rel)
    return os.path.join(cgroup.root, controller, rel)


def _repeated(field: object) -> bool:
    # protobuf 5+ has `is_repeated`; older ones only `label`.
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return getattr(field, "label", 0) == 3  # LABEL_REPEATED


def _fill(message: object, values: dict[str, int]) -> None:
    """Copy every ``values`` key that names a field of ``message``."""
    fields = message.DESCRIPTOR.fields_by_name  # type: ignore[attr-defined]
    for key, value in values.items():
        field = fields.get(key)
        # Scalar counters only: memory.stat's "swap" must not land on the MemoryEntry "swap".
        if field is not None and field.message_type is None and not _repeated(field):
            setattr(message, key, value)


# --- cgroup v1 -------------------------------------------------------------------------------


def _v1_memory_entry(memory: str, prefix: str) -> v1.MemoryEntry:
    return v1.MemoryEntry(
        usage=_number(_read(f"{memory}/{prefix}.usage_in_bytes")),
        limit=_number(_read(f"{memory}/{prefix}.limit_in_bytes")),
        max=_number(_read(f"{memory}/{prefix}.max_usage_in_bytes")),
        failcnt=_number(_read(f"{memory}/{prefix}.failcnt")),
    )


def _v1_blkio(blkio: str, name: str) -> Iterator[v1.BlkIOEntry]:
    for line in _read(f"{blkio}/{name}").splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0] or not parts[2].isdigit():
            continue
        major, _, minor = parts[0].partition(":")
        if major.isdigit() and minor.isdigit():
            yield v1.BlkIOEntry(
                op=parts[1], major=int(major), minor=int(minor), value=int(parts[2])
            )


def metrics_v1(cgroup: Cgroup) -> v1.Metrics:
    cpuacct, cpu = _dir(cgroup, "cpuacct"), _dir(cgroup, "cpu")
    memory, pids, blkio = _dir(cgroup, "memory"), _dir(cgroup, "pids"), _dir(cgroup, "blkio")
    ticks = _flat_keyed(_read(f"{cpuacct}/cpuacct.stat"))
    ns_per_tick = 1_000_000_000 // (os.sysconf("SC_CLK_TCK") or 100)
    throttle = _flat_keyed(_read(f"{cpu}/cpu.stat"))
    metrics = v1.Metrics(
        pids=v1.PidsStat(
            current=_number(_read(f"{pids}/pids.current")),
            limit=_number(_read(f"{pids}/pids.max")),
        ),
        cpu=v1.CPUStat(
            usage=v1.CPUUsage(
                total=_number(_read(f"{cpuacct}/cpuacct.usage")),
                user=ticks.get("user", 0) * ns_per_tick,
                kernel=ticks.get("system", 0) * ns_per_tick,
                per_cpu=[
                    int(v) for v in _read(f"{cpuacct}/cpuacct.usage_percpu").split() if v.isdigit()
                ],
            ),
            throttling=v1.Throttle(
                periods=throttle.get("nr_periods", 0),
                throttled_periods=throttle.get("nr_throttled", 0),
                throttled_time=throttle.get("throttled_time", 0),
            ),
        ),
        memory=v1.MemoryStat(
            usage=_v1_memory_entry(memory, "memory"),
            swap=_v1_memory_entry(memory, "memory.memsw"),
            kernel=_v1_memory_entry(memory, "memory.kmem"),
            kernel_tcp=_v1_memory_entry(memory, "memory.kmem.tcp"),
        ),
        blkio=v1.BlkIOStat(
            io_service_bytes_recursive=list(
                _v1_blkio(blkio, "blkio.throttle.io_service_bytes_recursive")
            ),
            io_serviced_recursive=list(_v1_blkio(blkio, "blkio.throttle.io_serviced_recursive")),
        ),
    )
    # memory.stat names match the fields except the page counters ("pgpgin" -> "pg_pg_in").
    stat = _flat_keyed(_read(f"{memory}/memory.stat"))
    renamed = {
        key.replace("pgpgin", "pg_pg_in")
        .replace("pgpgout", "pg_pg_out")
        .replace("pgmajfault", "pg_maj_fault")
        .replace("pgfault", "pg_fault"): value
        for key, value in stat.items()
    }
    _fill(metrics.memory, renamed)
    oom = _flat_keyed(_read(f"{memory}/memory.oom_control"))
    metrics.memory_oom_control.CopyFrom(
        v1.MemoryOomControl(
            oom_kill_disable=oom.get("oom_kill_disable", 0),
            under_oom=oom.get("under_oom", 0),
            oom_kill=oom.get("oom_kill", 0),
        )
    )
    return metrics


# --- cgroup v2 -------------------------------------------------------------------------------


def _v2_io(d: str) -> Iterator[v2.IOEntry]:
    for line in _read(f"{d}/io.stat").splitlines():
        device, *pairs = line.split()
        major, _, minor = device.partition(":")
        if not (major.isdigit() and minor.isdigit()):
            continue
        entry = v2.IOEntry(major=int(major), minor=int(minor))
        _fill(entry, {k: int(v) for k, _, v in (p.partition("=") for p in pairs) if v.isdigit()})
        yield entry


def metrics_v2(cgroup: Cgroup) -> v2.Metrics:
    d = _dir(cgroup, "")
    cpu = _flat_keyed(_read(f"{d}/cpu.stat"))
    metrics = v2.Metrics(
        pids=v2.PidsStat(
            current=_number(_read(f"{d}/pids.current")), limit=_number(_read(f"{d}/pids.max"))
        ),
        cpu=v2.CPUStat(),
        memory=v2.MemoryStat(
            usage=_number(_read(f"{d}/memory.current")),
            usage_limit=_number(_read(f"{d}/memory.max")),
            swap_usage=_number(_read(f"{d}/memory.swap.current")),
            swap_limit=_number(_read(f"{d}/memory.swap.max")),
            max_usage=_number(_read(f"{d}/memory.peak")),
        ),
        io=v2.IOStat(usage=list(_v2_io(d))),
        memory_events=v2.MemoryEvents(),
    )
    _fill(metrics.cpu, cpu)
    stat = _flat_keyed(_read(f"{d}/memory.stat"))
    stat.pop("usage", None)
    _fill(metrics.memory, stat)
    _fill(metrics.memory_events, _flat_keyed(_read(f"{d}/memory.events")))
    return metrics


def metrics(cgroup: Cgroup) -> any_pb2.Any:
    """The Any that ``StatsResponse.stats`` carries for ``cgroup``."""
    if cgroup.v2:
        return any_pb2.Any(type_url=V2_TYPE_URL, value=metrics_v2(cgroup).SerializeToString())
    return any_pb2.Any(type_url=V1_TYPE_URL, value=metrics_v1(cgroup).SerializeToString())


__all__ = ["V1_TYPE_URL", "V2_TYPE_URL", "metrics", "metrics_v1", "metrics_v2"]
