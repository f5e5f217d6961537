"""A small CRI (runtime.v1) client for the integration tests: what kubelet does, minus kubelet.

`CriClient` speaks gRPC to containerd's CRI plugin on its unix socket (RuntimeService and
ImageService from proto/pywasmd/api/cri/runtime/v1/api.proto) and records every call it makes in
`calls`, so a test can show the exact sequence. `pod_config` and `container_config` build the
configs kubelet would send for a pod on the node's network (NamespaceOption network=NODE: no CNI
involved) with a log directory, and `read_log` parses the CRI log file containerd writes for each
container (`<RFC3339Nano timestamp> <stdout|stderr> <F|P> <message>`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from pywasmd.api.cri.runtime.v1 import api_pb2 as cri
from pywasmd.api.cri.runtime.v1 import api_pb2_grpc as cri_grpc

#: containerd's CRI plugin keeps its containers, images and tasks in this namespace.
K8S_NAMESPACE = "k8s.io"

CREATED = cri.CONTAINER_CREATED
RUNNING = cri.CONTAINER_RUNNING
EXITED = cri.CONTAINER_EXITED
UNKNOWN = cri.CONTAINER_UNKNOWN
SANDBOX_READY = cri.SANDBOX_READY
SANDBOX_NOTREADY = cri.SANDBOX_NOTREADY


def state_name(state: int) -> str:
    return str(cri.ContainerState.Name(state))


class CriError(RuntimeError):
    """A CRI call failed: which call, the gRPC status code and containerd's message."""

    def __init__(self, method: str, code: grpc.StatusCode | None, details: str) -> None:
        name = code.name if code is not None else "?"
        super().__init__(f"CRI {method} failed: {name}: {details}")
        self.method = method
        self.code = code
        self.details = details


class CriClient:
    """RuntimeService and ImageService of one containerd, over its unix socket."""

    def __init__(self, address: str, timeout: float = 60.0) -> None:
        self.address = address
        self.timeout = timeout
        self.channel = grpc.insecure_channel(f"unix://{address}")
        # grpc_tools writes no type stubs for the service modules.
        self._runtime = cri_grpc.RuntimeServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self._images = cri_grpc.ImageServiceStub(self.channel)  # type: ignore[no-untyped-call]
        #: every call made, in order: "RunPodSandbox(handler=pywasm)", "StartContainer(<id>)"...
        self.calls: list[str] = []
        #: every pod sandbox id RunPodSandbox returned, every container id CreateContainer did
        self.pod_ids: set[str] = set()
        self.container_ids: set[str] = set()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, stub: Any, method: str, request: Any, note: str, timeout: float | None) -> Any:
        self.calls.append(f"{method}({note})")
        try:
            return getattr(stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise CriError(method, exc.code(), exc.details() or str(exc)) from None

    # --- runtime: node --------------------------------------------------------------------

    def version(self) -> cri.VersionResponse:
        resp: cri.VersionResponse = self._call(
            self._runtime, "Version", cri.VersionRequest(version="v1"), "", None
        )
        return resp

    def status(self, verbose: bool = False) -> cri.StatusResponse:
        resp: cri.StatusResponse = self._call(
            self._runtime, "Status", cri.StatusRequest(verbose=verbose), "", None
        )
        return resp

    # --- runtime: pods --------------------------------------------------------------------

    def run_pod_sandbox(self, config: cri.PodSandboxConfig, handler: str = "") -> str:
        req = cri.RunPodSandboxRequest(config=config, runtime_handler=handler)
        resp: cri.RunPodSandboxResponse = self._call(
            self._runtime,
            "RunPodSandbox",
            req,
            f"{config.metadata.name}, handler={handler!r}",
            None,
        )
        self.pod_ids.add(str(resp.pod_sandbox_id))
        return str(resp.pod_sandbox_id)

    def stop_pod_sandbox(self, pod_id: str, timeout: float | None = None) -> None:
        req = cri.StopPodSandboxRequest(pod_sandbox_id=pod_id)
        self._call(self._runtime, "StopPodSandbox", req, pod_id, timeout)

    def remove_pod_sandbox(self, pod_id: str, timeout: float | None = None) -> None:
        req = cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id)
        self._call(self._runtime, "RemovePodSandbox", req, pod_id, timeout)

    def pod_sandbox_status(
        self, pod_id: str, verbose: bool = False
    ) -> cri.PodSandboxStatusResponse:
        req = cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=verbose)
        resp: cri.PodSandboxStatusResponse = self._call(
            self._runtime, "PodSandboxStatus", req, pod_id, None
        )
        return resp

    def list_pod_sandboxes(self) -> list[cri.PodSandbox]:
        resp: cri.ListPodSandboxResponse = self._call(
            self._runtime, "ListPodSandbox", cri.ListPodSandboxRequest(), "", None
        )
        return list(resp.items)

    # --- runtime: containers --------------------------------------------------------------

    def create_container(
        self, pod_id: str, config: cri.ContainerConfig, sandbox_config: cri.PodSandboxConfig
    ) -> str:
        req = cri.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=config, sandbox_config=sandbox_config
        )
        resp: cri.CreateContainerResponse = self._call(
            self._runtime, "CreateContainer", req, f"{pod_id[:12]}, {config.metadata.name}", None
        )
        self.container_ids.add(str(resp.container_id))
        return str(resp.container_id)

    def start_container(self, container_id: str) -> None:
        req = cri.StartContainerRequest(container_id=container_id)
        self._call(self._runtime, "StartContainer", req, container_id, None)

    def stop_container(self, container_id: str, timeout: int) -> None:
        """SIGTERM (or the image's stop signal), SIGKILL after `timeout` seconds."""
        req = cri.StopContainerRequest(container_id=container_id, timeout=timeout)
        self._call(
            self._runtime,
            "StopContainer",
            req,
            f"{container_id}, timeout={timeout}",
            self.timeout + timeout,
        )

    def exec_sync(
        self, container_id: str, cmd: list[str], timeout: int = 20
    ) -> tuple[int, bytes, bytes]:
        """What kubelet's exec probes and `crictl exec -s` do: exit code, stdout, stderr."""
        req = cri.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout)
        resp: cri.ExecSyncResponse = self._call(
            self._runtime, "ExecSync", req, f"{container_id}, {cmd}", self.timeout + timeout
        )
        return int(resp.exit_code), bytes(resp.stdout), bytes(resp.stderr)

    def container_stats(self, container_id: str) -> cri.ContainerStats:
        req = cri.ContainerStatsRequest(container_id=container_id)
        resp: cri.ContainerStatsResponse = self._call(
            self._runtime, "ContainerStats", req, container_id, None
        )
        return resp.stats

    def update_memory_limit(self, container_id: str, limit: int) -> None:
        """UpdateContainerResources with a new memory limit (kubelet's in-place resize)."""
        req = cri.UpdateContainerResourcesRequest(
            container_id=container_id,
            linux=cri.LinuxContainerResources(memory_limit_in_bytes=limit),
        )
        self._call(self._runtime, "UpdateContainerResources", req, container_id, None)

    def remove_container(self, container_id: str) -> None:
        req = cri.RemoveContainerRequest(container_id=container_id)
        self._call(self._runtime, "RemoveContainer", req, container_id, None)

    def container_status(self, container_id: str, verbose: bool = False) -> cri.ContainerStatus:
        return self.container_status_response(container_id, verbose).status

    def container_status_response(
        self, container_id: str, verbose: bool = False
    ) -> cri.ContainerStatusResponse:
        req = cri.ContainerStatusRequest(container_id=container_id, verbose=verbose)
        resp: cri.ContainerStatusResponse = self._call(
            self._runtime, "ContainerStatus", req, container_id, None
        )
        return resp

    def list_containers(self, pod_id: str | None = None) -> list[cri.Container]:
        flt = cri.ContainerFilter(pod_sandbox_id=pod_id) if pod_id else None
        resp: cri.ListContainersResponse = self._call(
            self._runtime,
            "ListContainers",
            cri.ListContainersRequest(filter=flt),
            pod_id or "",
            None,
        )
        return list(resp.containers)

    # --- images ---------------------------------------------------------------------------

    def image_status(self, image: str) -> cri.Image | None:
        req = cri.ImageStatusRequest(image=cri.ImageSpec(image=image))
        resp: cri.ImageStatusResponse = self._call(self._images, "ImageStatus", req, image, None)
        return resp.image if resp.HasField("image") else None

    def list_images(self) -> list[cri.Image]:
        resp: cri.ListImagesResponse = self._call(
            self._images, "ListImages", cri.ListImagesRequest(), "", None
        )
        return list(resp.images)

    # --- waiting (what kubelet's PLEG polling amounts to) ----------------------------------

    def wait_container(
        self, container_id: str, states: Iterable[int], timeout: float = 30.0
    ) -> cri.ContainerStatus:
        """Poll ContainerStatus until the container is in one of `states`; the last status is
        returned either way (the caller asserts on it). Polls are not recorded in `calls`
        beyond the last one."""
        want = set(states)
        deadline = time.monotonic() + timeout
        before = len(self.calls)
        while True:
            status = self.container_status(container_id)
            done = status.state in want or time.monotonic() > deadline
            if done:
                del self.calls[before:-1]
                return status
            time.sleep(0.1)

    # --- clean-up -------------------------------------------------------------------------

    def remove_everything(self, timeout: float = 30.0) -> list[str]:
        """Stop and remove every pod and container (best effort); returns the errors seen."""
        errors: list[str] = []
        for c in self._quiet(self.list_containers, errors) or []:
            self._quiet(lambda c=c: self.stop_container(c.id, 0), errors)
            self._quiet(lambda c=c: self.remove_container(c.id), errors)
        for p in self._quiet(self.list_pod_sandboxes, errors) or []:
            self._quiet(lambda p=p: self.stop_pod_sandbox(p.id, timeout), errors)
            self._quiet(lambda p=p: self.remove_pod_sandbox(p.id, timeout), errors)
        return errors

    @staticmethod
    def _quiet(fn: Any, errors: list[str]) -> Any:
        try:
            return fn()
        except CriError as exc:
            errors.append(str(exc))
            return None


def verbose_pid(info: Mapping[str, str]) -> int:
    """The task pid from a verbose ContainerStatus/PodSandboxStatus `info` (0 when absent)."""
    try:
        return int(json.loads(info["info"]).get("pid", 0))
    except (KeyError, ValueError, TypeError, AttributeError):
        return 0


# --- configs ------------------------------------------------------------------------------


def _namespaces() -> cri.NamespaceOption:
    # The node's network (no CNI), a pod-wide IPC namespace, a pid namespace per container:
    # kubelet's defaults for a hostNetwork pod.
    return cri.NamespaceOption(network=cri.NODE, pid=cri.CONTAINER, ipc=cri.POD)


def pod_config(
    name: str,
    log_root: Path,
    *,
    namespace: str = "default",
    uid: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> cri.PodSandboxConfig:
    """A hostNetwork pod `name`; its logs go to LOG_ROOT/<namespace>_<name>_<uid> as kubelet
    lays them out (the directory is made here, as kubelet does)."""
    uid = uid or str(uuid.uuid4())
    log_dir = log_root / f"{namespace}_{name}_{uid}"
    log_dir.mkdir(parents=True, exist_ok=True)
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
        # No hostname: a hostNetwork pod shares the node's UTS namespace (kubelet sends none).
        log_directory=str(log_dir),
        labels=dict(labels or {}),
        annotations=dict(annotations or {}),
        linux=cri.LinuxPodSandboxConfig(
            security_context=cri.LinuxSandboxSecurityContext(namespace_options=_namespaces())
        ),
    )


def container_config(
    pod: cri.PodSandboxConfig,
    name: str,
    image: str,
    *,
    command: Sequence[str] = (),
    args: Sequence[str] = (),
    envs: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> cri.ContainerConfig:
    """Container `name` of `pod`, logging to <pod log dir>/<name>/0.log (path relative to the
    pod's log_directory, as kubelet sends it; the directory is made here, as kubelet does)."""
    (Path(pod.log_directory) / name).mkdir(parents=True, exist_ok=True)
    return cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=name, attempt=0),
        image=cri.ImageSpec(image=image),
        command=list(command),
        args=list(args),
        # KeyValue.value is bytes since cri-api v0.35 (string before: same wire encoding).
        envs=[cri.KeyValue(key=k, value=v.encode()) for k, v in (envs or {}).items()],
        labels=dict(labels or {}),
        log_path=f"{name}/0.log",
        linux=cri.LinuxContainerConfig(
            security_context=cri.LinuxContainerSecurityContext(namespace_options=_namespaces())
        ),
    )


def log_file(pod: cri.PodSandboxConfig, container: cri.ContainerConfig) -> Path:
    return Path(pod.log_directory) / container.log_path


# --- CRI log files ------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    timestamp: str
    stream: str  # stdout | stderr
    tag: str  # F (full line) | P (partial: continues in the next entry)
    message: str


class LogFormatError(ValueError):
    pass


def parse_log(text: str) -> list[LogLine]:
    """Entries of a CRI log file; a malformed line raises LogFormatError."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split(" ", 3)
        if len(parts) < 3 or parts[1] not in ("stdout", "stderr") or not parts[2]:
            raise LogFormatError(f"line {n} is not `<time> <stream> <tag> <message>`: {line!r}")
        tag = parts[2].split(":")[0]
        if tag not in ("F", "P"):
            raise LogFormatError(f"line {n}: tag {parts[2]!r} is neither F nor P: {line!r}")
        out.append(LogLine(parts[0], parts[1], tag, parts[3] if len(parts) == 4 else ""))
    return out


def read_log(path: Path) -> list[LogLine]:
    try:
        return parse_log(path.read_text(errors="replace"))
    except FileNotFoundError:
        return []


def log_messages(path: Path, stream: str | None = None) -> list[str]:
    """The container's output lines from its CRI log (partial entries joined)."""
    lines: list[str] = []
    pending: dict[str, str] = {}
    for entry in read_log(path):
        if stream is not None and entry.stream != stream:
            continue
        text = pending.pop(entry.stream, "") + entry.message
        if entry.tag == "P":
            pending[entry.stream] = text
        else:
            lines.append(text)
    lines.extend(pending.values())
    return lines


def wait_log(path: Path, text: str, timeout: float = 20.0) -> list[str]:
    """Poll the log until a line contains `text`; returns the lines either way."""
    deadline = time.monotonic() + timeout
    while True:
        lines = log_messages(path)
        if any(text in line for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


__all__ = [
    "CREATED",
    "EXITED",
    "K8S_NAMESPACE",
    "RUNNING",
    "SANDBOX_NOTREADY",
    "SANDBOX_READY",
    "UNKNOWN",
    "CriClient",
    "CriError",
    "LogFormatError",
    "LogLine",
    "container_config",
    "cri",
    "log_file",
    "log_messages",
    "parse_log",
    "pod_config",
    "read_log",
    "state_name",
    "verbose_pid",
    "wait_log",
]
