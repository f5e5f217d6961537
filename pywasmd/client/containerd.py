"""A small synchronous client of containerd's gRPC API: the calls `pywasm run` makes.

Every call carries the namespace header; calls made while content or snapshots are being put
in place also carry a lease header, so containerd's garbage collector cannot remove what is
not yet referenced by an image or a container. gRPC errors become pywasmd's error classes with
a message that names containerd's socket and what was asked.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pywasmd.errors import (
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ShimError,
    Unavailable,
)

# A forked guest never needs gRPC state; and this process forks nothing after connecting.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

NAMESPACE_HEADER = "containerd-namespace"
LEASE_HEADER = "containerd-lease"
SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
_CHUNK = 1 << 20
_TIMEOUT = 60.0
#: How long a lease outlives a `pywasm run` that died before removing it.
LEASE_EXPIRY = datetime.timedelta(hours=1)


class Client:
    def __init__(self, address: str, namespace: str) -> None:
        import grpc

        self.address = address
        self.namespace = namespace
        self._channel = grpc.insecure_channel("unix:" + address)
        self.lease: str | None = None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing --------------------------------------------------------------------------

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        md: tuple[tuple[str, str], ...] = ((NAMESPACE_HEADER, self.namespace),)
        if self.lease:
            md += ((LEASE_HEADER, self.lease),)
        return md

    def _call(self, method: Any, request: Any, what: str, timeout: float | None = _TIMEOUT) -> Any:
        import grpc

        try:
            return method(request, metadata=self._metadata(), timeout=timeout)
        except grpc.RpcError as e:
            raise self.error(e, what) from None

    def error(self, e: Any, what: str) -> ShimError:
        import grpc

        code, detail = e.code(), e.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE:
            return Unavailable(
                f"cannot reach containerd at {self.address} ({what}): {detail}; is containerd "
                "running? (--address SOCK; pywasm doctor checks the node)"
            )
        if code == grpc.StatusCode.NOT_FOUND:
            return NotFound(f"{what}: {detail}")
        if code == grpc.StatusCode.ALREADY_EXISTS:
            return AlreadyExists(f"{what}: {detail}")
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            return FailedPrecondition(f"{what}: {detail}")
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidArgument(f"{what}: {detail}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return Unavailable(f"containerd at {self.address} did not answer in time ({what})")
        return Internal(f"{what}: containerd answered {code.name}: {detail}")

    def _stub(self, module: Any, name: str) -> Any:
        return getattr(module, name)(self._channel)

    # --- leases ----------------------------------------------------------------------------

    def lease_create(self, lease_id: str) -> None:
        from pywasmd.api.containerd.services.leases.v1 import leases_pb2 as pb
        from pywasmd.api.containerd.services.leases.v1 import leases_pb2_grpc as rpc

        expire = datetime.datetime.now(datetime.timezone.utc) + LEASE_EXPIRY
        labels = {"containerd.io/gc.expire": expire.strftime("%Y-%m-%dT%H:%M:%SZ")}
        stub = self._stub(rpc, "LeasesStub")
        self._call(stub.Create, pb.CreateRequest(id=lease_id, labels=labels), "create a lease")
        self.lease = lease_id

    def lease_delete(self) -> None:
        from pywasmd.api.containerd.services.leases.v1 import leases_pb2 as pb
        from pywasmd.api.containerd.services.leases.v1 import leases_pb2_grpc as rpc

        if self.lease is None:
            return
        lease, self.lease = self.lease, None
        stub = self._stub(rpc, "LeasesStub")
        try:
            self._call(stub.Delete, pb.DeleteRequest(id=lease), "delete the lease")
        except NotFound:
            pass

    # --- images and content ----------------------------------------------------------------

    def image_get(self, name: str) -> Any | None:
        from pywasmd.api.containerd.services.images.v1 import images_pb2 as pb
        from pywasmd.api.containerd.services.images.v1 import images_pb2_grpc as rpc

        stub = self._stub(rpc, "ImagesStub")
        try:
            return self._call(stub.Get, pb.GetImageRequest(name=name), f"image {name}").image
        except NotFound:
            return None

    def image_put(self, name: str, media_type: str, digest: str, size: int) -> None:
        from pywasmd.api.containerd.services.images.v1 import images_pb2 as pb
        from pywasmd.api.containerd.services.images.v1 import images_pb2_grpc as rpc
        from pywasmd.api.containerd.types import descriptor_pb2

        target = descriptor_pb2.Descriptor(media_type=media_type, digest=digest, size=size)
        image = pb.Image(name=name, target=target)
        stub = self._stub(rpc, "ImagesStub")
        try:
            self._call(stub.Create, pb.CreateImageRequest(image=image), f"record image {name}")
        except AlreadyExists:
            self._call(stub.Update, pb.UpdateImageRequest(image=image), f"update image {name}")

    def content_exists(self, digest: str) -> bool:
        from pywasmd.api.containerd.services.content.v1 import content_pb2 as pb
        from pywasmd.api.containerd.services.content.v1 import content_pb2_grpc as rpc

        stub = self._stub(rpc, "ContentStub")
        try:
            self._call(stub.Info, pb.InfoRequest(digest=digest), f"blob {digest}")
        except NotFound:
            return False
        return True

    def content_read(self, digest: str, limit: int = 64 << 20) -> bytes:
        import grpc

        from pywasmd.api.containerd.services.content.v1 import content_pb2 as pb
        from pywasmd.api.containerd.services.content.v1 import content_pb2_grpc as rpc

        stub = self._stub(rpc, "ContentStub")
        chunks: list[bytes] = []
        total = 0
        try:
            for reply in stub.Read(
                pb.ReadContentRequest(digest=digest), metadata=self._metadata(), timeout=300
            ):
                chunks.append(reply.data)
                total += len(reply.data)
                if total > limit:
                    raise InvalidArgument(f"blob {digest} is larger than {limit} bytes")
        except grpc.RpcError as e:
            raise self.error(e, f"read blob {digest}") from None
        return b"".join(chunks)

    def content_write(self, digest: str, data: bytes, labels: Mapping[str, str]) -> bool:
        """Store `data` as `digest`; False when containerd had it already."""
        import grpc

        from pywasmd.api.containerd.services.content.v1 import content_pb2 as pb
        from pywasmd.api.containerd.services.content.v1 import content_pb2_grpc as rpc

        ref = f"pywasm-run-{digest}"
        total = len(data)

        def requests() -> Iterator[Any]:
            yield pb.WriteContentRequest(action=pb.STAT, ref=ref, total=total, expected=digest)
            for offset in range(0, total, _CHUNK):
                yield pb.WriteContentRequest(
                    action=pb.WRITE, ref=ref, offset=offset, data=data[offset : offset + _CHUNK]
                )
            yield pb.WriteContentRequest(
                action=pb.COMMIT,
                ref=ref,
                total=total,
                expected=digest,
                offset=total,
                labels=dict(labels),
            )

        stub = self._stub(rpc, "ContentStub")
        try:
            for _reply in stub.Write(requests(), metadata=self._metadata(), timeout=300):
                pass
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.ALREADY_EXISTS:
                return False
            raise self.error(e, f"write blob {digest}") from None
        return True

    # --- snapshots and diffs ---------------------------------------------------------------

    def snapshot_exists(self, snapshotter: str, key: str) -> bool:
        from pywasmd.api.containerd.services.snapshots.v1 import snapshots_pb2 as pb
        from pywasmd.api.containerd.services.snapshots.v1 import snapshots_pb2_grpc as rpc

        stub = self._stub(rpc, "SnapshotsStub")
        request = pb.StatSnapshotRequest(snapshotter=snapshotter, key=key)
        try:
            self._call(stub.Stat, request, f"snapshot {key}")
        except NotFound:
            return False
        return True

    def snapshot_prepare(
        self, snapshotter: str, key: str, parent: str, labels: Mapping[str, str] | None = None
    ) -> list[Any]:
        from pywasmd.api.containerd.services.snapshots.v1 import snapshots_pb2 as pb
        from pywasmd.api.containerd.services.snapshots.v1 import snapshots_pb2_grpc as rpc

        stub = self._stub(rpc, "SnapshotsStub")
        request = pb.PrepareSnapshotRequest(
            snapshotter=snapshotter, key=key, parent=parent, labels=dict(labels or {})
        )
        return list(self._call(stub.Prepare, request, f"prepare snapshot {key}").mounts)

    def snapshot_commit(self, snapshotter: str, name: str, key: str) -> None:
        from pywasmd.api.containerd.services.snapshots.v1 import snapshots_pb2 as pb
        from pywasmd.api.containerd.services.snapshots.v1 import snapshots_pb2_grpc as rpc

        stub = self._stub(rpc, "SnapshotsStub")
        request = pb.CommitSnapshotRequest(snapshotter=snapshotter, name=name, key=key)
        self._call(stub.Commit, request, f"commit snapshot {name}")

    def snapshot_remove(self, snapshotter: str, key: str) -> None:
        from pywasmd.api.containerd.services.snapshots.v1 import snapshots_pb2 as pb
        from pywasmd.api.containerd.services.snapshots.v1 import snapshots_pb2_grpc as rpc

        stub = self._stub(rpc, "SnapshotsStub")
        request = pb.RemoveSnapshotRequest(snapshotter=snapshotter, key=key)
        try:
            self._call(stub.Remove, request, f"remove snapshot {key}")
        except NotFound:
            pass

    def diff_apply(self, media_type: str, digest: str, size: int, mounts: Sequence[Any]) -> str:
        """Unpack the layer blob onto `mounts`; the digest of the uncompressed layer."""
        from pywasmd.api.containerd.services.diff.v1 import diff_pb2 as pb
        from pywasmd.api.containerd.services.diff.v1 import diff_pb2_grpc as rpc
        from pywasmd.api.containerd.types import descriptor_pb2

        stub = self._stub(rpc, "DiffStub")
        layer = descriptor_pb2.Descriptor(media_type=media_type, digest=digest, size=size)
        reply = self._call(
            stub.Apply, pb.ApplyRequest(diff=layer, mounts=mounts), f"unpack layer {digest}", 600
        )
        return str(reply.applied.digest)

    # --- containers and tasks --------------------------------------------------------------

    def container_create(
        self,
        container_id: str,
        spec_json: bytes,
        runtime: str,
        image: str,
        snapshotter: str,
        snapshot_key: str,
        labels: Mapping[str, str],
    ) -> None:
        from google.protobuf import any_pb2

        from pywasmd.api.containerd.services.containers.v1 import containers_pb2 as pb
        from pywasmd.api.containerd.services.containers.v1 import containers_pb2_grpc as rpc

        container = pb.Container(
            id=container_id,
            labels=dict(labels),
            image=image,
            runtime=pb.Container.Runtime(name=runtime),
            spec=any_pb2.Any(type_url=SPEC_TYPE_URL, value=spec_json),
            snapshotter=snapshotter,
            snapshot_key=snapshot_key,
        )
        stub = self._stub(rpc, "ContainersStub")
        try:
            self._call(
                stub.Create,
                pb.CreateContainerRequest(container=container),
                f"create container {container_id}",
            )
        except AlreadyExists:
            raise self.exists(container_id) from None

    def exists(self, container_id: str) -> AlreadyExists:
        return AlreadyExists(
            f"a container named {container_id!r} already exists in namespace "
            f"{self.namespace!r}; pick another --name, or remove it: ctr -n "
            f"{self.namespace} containers rm {container_id}"
        )

    def container_exists(self, container_id: str) -> bool:
        from pywasmd.api.containerd.services.containers.v1 import containers_pb2 as pb
        from pywasmd.api.containerd.services.containers.v1 import containers_pb2_grpc as rpc

        stub = self._stub(rpc, "ContainersStub")
        try:
            self._call(
                stub.Get, pb.GetContainerRequest(id=container_id), f"container {container_id}"
            )
        except NotFound:
            return False
        return True

    def container_delete(self, container_id: str) -> None:
        from pywasmd.api.containerd.services.containers.v1 import containers_pb2 as pb
        from pywasmd.api.containerd.services.containers.v1 import containers_pb2_grpc as rpc

        stub = self._stub(rpc, "ContainersStub")
        try:
            self._call(
                stub.Delete,
                pb.DeleteContainerRequest(id=container_id),
                f"delete container {container_id}",
            )
        except NotFound:
            pass

    def _tasks(self) -> tuple[Any, Any]:
        from pywasmd.api.containerd.services.tasks.v1 import tasks_pb2 as pb
        from pywasmd.api.containerd.services.tasks.v1 import tasks_pb2_grpc as rpc

        return pb, self._stub(rpc, "TasksStub")

    def task_create(
        self,
        container_id: str,
        rootfs: Sequence[Any],
        stdin: str,
        stdout: str,
        stderr: str,
        terminal: bool,
    ) -> int:
        pb, stub = self._tasks()
        request = pb.CreateTaskRequest(
            container_id=container_id,
            rootfs=rootfs,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            terminal=terminal,
        )
        return int(self._call(stub.Create, request, f"create task {container_id}", 120).pid)

    def task_start(self, container_id: str) -> int:
        pb, stub = self._tasks()
        request = pb.StartRequest(container_id=container_id)
        return int(self._call(stub.Start, request, f"start task {container_id}").pid)

    def task_wait(self, container_id: str) -> int:
        pb, stub = self._tasks()
        request = pb.WaitRequest(container_id=container_id)
        return int(
            self._call(stub.Wait, request, f"wait for task {container_id}", None).exit_status
        )

    def task_kill(self, container_id: str, signal: int, all_processes: bool = False) -> None:
        pb, stub = self._tasks()
        request = pb.KillRequest(container_id=container_id, signal=signal, all=all_processes)
        try:
            self._call(stub.Kill, request, f"signal task {container_id}")
        except (NotFound, FailedPrecondition):
            pass  # it ended meanwhile

    def task_resize(self, container_id: str, width: int, height: int) -> None:
        pb, stub = self._tasks()
        request = pb.ResizePtyRequest(container_id=container_id, width=width, height=height)
        try:
            self._call(stub.ResizePty, request, f"resize the terminal of {container_id}")
        except ShimError:
            pass  # a resize racing the exit is harmless

    def task_close_stdin(self, container_id: str) -> None:
        pb, stub = self._tasks()
        request = pb.CloseIORequest(container_id=container_id, stdin=True)
        try:
            self._call(stub.CloseIO, request, f"close stdin of {container_id}")
        except (NotFound, FailedPrecondition):
            pass

    def task_delete(self, container_id: str) -> int | None:
        pb, stub = self._tasks()
        request = pb.DeleteTaskRequest(container_id=container_id)
        try:
            reply = self._call(stub.Delete, request, f"delete task {container_id}")
        except NotFound:
            return None
        return int(reply.exit_status)
