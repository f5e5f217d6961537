"""Finding the module of a Wasm OCI artifact in containerd's content store.

containerd cannot unpack an artifact (its only layer is the module, not a tar), so the
container's rootfs holds nothing to run. At Create, the shim asks containerd over its gRPC API
(the `-address` socket) which image the container was made from, reads that image's manifest
and the module layer from the content store, checks the digest and hands the engine a file.

- Compat images (module in the rootfs) are answered before any gRPC call: when
  `process.args[0]` already names a Wasm file in the rootfs, the lookup returns None at once.
- The image name comes from the container record (`ctr run IMAGE`, CRI), or, for containers
  made with `ctr run --rootfs` (ctr refuses to make containers from artifacts, whose config
  type it does not know), from the container label or OCI annotation `io.pywasm.image`.
- A lease (`pywasm.<container id>`) holds the layer while it is read, so `ctr images rm`
  cannot make containerd's GC delete it mid-read. Once our verified copy exists the run no
  longer depends on the content store, so the lease ends with the lookup. Its `gc.expire`
  label lets containerd drop it on its own if the shim dies before ending it.
- Modules are written content-addressed under `<compile cache>/modules/`, atomically, after
  their digest checked out: a second container of the same artifact reads nothing again.

grpc and the generated stubs are imported on first use only: the shim's `start` and `delete`
paths never load this module's dependencies. This module lives in the shim, not in the pure
`pywasmd.oci`, because importing it changes the process (GRPC_ENABLE_FORK_SUPPORT below).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pywasmd.errors import Internal, InvalidArgument, NotFound, ShimError, Unavailable
from pywasmd.image import artifact
from pywasmd.image.mediatypes import INDEX_TYPES
from pywasmd.oci.module import locate_module
from pywasmd.wasmbin import is_wasm

if TYPE_CHECKING:
    from pywasmd.oci.spec import RuntimeSpec

# The shim server forks container workers after it may have talked gRPC to containerd.
# gRPC's fork handlers restart its poller threads in the child, which then die on fds the
# worker closed (SIGABRT); with them off, the child simply has no gRPC state to trip on.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"

log = logging.getLogger("pywasmd.artifact")

IMAGE_LABEL = "io.pywasm.image"
LEASE_PREFIX = "pywasm."
#: How long containerd keeps a lease whose shim died before releasing it.
LEASE_EXPIRY = datetime.timedelta(hours=24)
_GC_EXPIRE = "containerd.io/gc.expire"
_NAMESPACE_HEADER = "containerd-namespace"
_MAX_DOCUMENT = 4 << 20
_RPC_TIMEOUT = 30.0


def module_dir() -> str:
    from pywasmd.cache import DEFAULT_DIR

    root = os.environ.get("PYWASM_CACHE_DIR") or DEFAULT_DIR
    return os.path.join(root, "modules")


def module_path(directory: str, digest: str) -> str:
    return os.path.join(directory, digest.replace(":", "-") + ".wasm")


def choose_manifest(index: Mapping[str, Any], what: str) -> Mapping[str, Any] | None:
    """The index entry pywasm runs: a wasi/wasm (or wasip1/wasip2) platform, else an entry
    without a platform when it is the only one; None when the index has no Wasm image."""
    entries = [e for e in index.get("manifests") or [] if isinstance(e, Mapping)]
    for entry in entries:
        p = entry.get("platform") or {}
        if p.get("os") in ("wasi", "wasip1", "wasip2") or p.get("architecture") in (
            "wasm",
            "wasm32",
        ):
            return entry
    if len(entries) == 1 and not entries[0].get("platform"):
        return entries[0]
    return None


class ContainerdArtifacts:
    """An `ArtifactLookup` (see pywasmd.shim.wasm_container) backed by containerd's gRPC API."""

    def __init__(self, address: str, namespace: str, directory: str | None = None) -> None:
        self.address = address
        self.namespace = namespace
        self.directory = directory or module_dir()
        self._channel: Any = None

    # --- the lookup ----------------------------------------------------------------------

    async def lookup(self, container_id: str, spec: RuntimeSpec, rootfs: str) -> str | None:
        if _module_in_rootfs(spec, rootfs):
            return None
        if not self.address:
            return None
        container = await self._container(container_id)
        name = (
            container.image
            or container.labels.get(IMAGE_LABEL, "")
            or spec.annotations.get(IMAGE_LABEL, "")
        )
        if not name:
            return None
        manifest = await self._manifest(name)
        if manifest is None or not artifact.is_artifact_manifest(manifest):
            return None
        layer = artifact.wasm_layer(manifest, f"image {name}")
        path = module_path(self.directory, layer.digest)
        cached = _present(path, layer.size)
        if cached:
            log.info("container %s: Wasm artifact %s, module %s (cached)", container_id, name, path)
            return path
        await self._lease(container_id, layer.digest)
        try:
            await self._fetch(name, layer, path)
        finally:
            await self._end_lease(container_id)
        log.info("container %s: Wasm artifact %s, module %s", container_id, name, path)
        return path

    async def entrypoint(self, container_id: str) -> list[str] | None:
        """The image's entrypoint, for a command line that replaced it.

        ``ctr run IMAGE ID arg...`` replaces the image's entrypoint and cmd with ``arg...``
        (Docker appends them instead); for a Wasm image the module must still come first.
        """
        if not self.address:
            return None
        container = await self._container(container_id)
        if not container.image:
            return None
        manifest = await self._manifest(container.image)
        if manifest is None or artifact.is_artifact_manifest(manifest):
            return None
        config_digest = str((manifest.get("config") or {}).get("digest", ""))
        if not config_digest:
            return None
        config = await self._document(config_digest, f"image {container.image}")
        entry = (config.get("config") or {}).get("Entrypoint") or []
        if not isinstance(entry, list) or not all(isinstance(a, str) for a in entry):
            return None
        return list(entry) or None

    async def _end_lease(self, container_id: str) -> None:
        """Drop the lease taken for reading the module; a missing lease is fine."""
        if self._channel is None and not self.address:
            return
        from pywasmd.api.containerd.services.leases.v1 import leases_pb2 as pb
        from pywasmd.api.containerd.services.leases.v1 import leases_pb2_grpc as rpc

        stub = _stub(rpc.LeasesStub, self._connect())
        try:
            await self._call(stub.Delete, pb.DeleteRequest(id=LEASE_PREFIX + container_id))
        except NotFound:
            pass

    # --- containerd calls ----------------------------------------------------------------

    def _connect(self) -> Any:
        if self._channel is None:
            import grpc.aio

            self._channel = grpc.aio.insecure_channel("unix:" + self.address)
        return self._channel

    async def _call(self, method: Any, request: Any, **extra: str) -> Any:
        import grpc

        metadata = ((_NAMESPACE_HEADER, self.namespace), *extra.items())
        try:
            return await method(request, metadata=metadata, timeout=_RPC_TIMEOUT)
        except grpc.aio.AioRpcError as e:
            raise self._error(e) from None

    def _error(self, e: Any) -> ShimError:
        import grpc

        code, detail = e.code(), e.details() or ""
        if code == grpc.StatusCode.NOT_FOUND:
            return NotFound(detail)
        if code == grpc.StatusCode.ALREADY_EXISTS:
            return _AlreadyExists(detail)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return Unavailable(f"cannot reach containerd at {self.address}: {detail}")
        return Internal(f"containerd: {code.name}: {detail}")

    async def _container(self, container_id: str) -> Any:
        from pywasmd.api.containerd.services.containers.v1 import containers_pb2 as pb
        from pywasmd.api.containerd.services.containers.v1 import containers_pb2_grpc as rpc

        stub = _stub(rpc.ContainersStub, self._connect())
        try:
            reply = await self._call(stub.Get, pb.GetContainerRequest(id=container_id))
        except NotFound:
            raise NotFound(
                f"container {container_id!r} is not known to containerd in namespace "
                f"{self.namespace!r}"
            ) from None
        return reply.container

    async def _manifest(self, name: str) -> Mapping[str, Any] | None:
        from pywasmd.api.containerd.services.images.v1 import images_pb2 as pb
        from pywasmd.api.containerd.services.images.v1 import images_pb2_grpc as rpc

        stub = _stub(rpc.ImagesStub, self._connect())
        try:
            reply = await self._call(stub.Get, pb.GetImageRequest(name=name))
        except NotFound:
            raise InvalidArgument(
                f"image {name!r} is not in containerd (namespace {self.namespace!r}); pull it "
                "first: ctr images pull --platform wasi/wasm " + name
            ) from None
        target = reply.image.target
        media_type, digest = target.media_type, target.digest
        for _ in range(4):
            doc = await self._document(digest, f"image {name}")
            if media_type not in INDEX_TYPES and doc.get("mediaType") not in INDEX_TYPES:
                return doc
            entry = choose_manifest(doc, name)
            if entry is None:
                return None
            media_type, digest = str(entry.get("mediaType", "")), str(entry.get("digest", ""))
        raise InvalidArgument(f"image {name!r}: indexes nested too deep")

    async def _document(self, digest: str, what: str) -> dict[str, Any]:
        data = await self._read(digest, _MAX_DOCUMENT, what)
        if _digest(data) != digest:
            raise Internal(
                f"{what}: containerd's content store returned blob {digest} with other content "
                "(a damaged content store): remove the image and pull it again"
            )
        try:
            doc = json.loads(data)
        except ValueError:
            raise InvalidArgument(f"{what}: {digest} is not JSON") from None
        if not isinstance(doc, dict):
            raise InvalidArgument(f"{what}: {digest} is not a JSON object")
        return doc

    async def _read(self, digest: str, limit: int, what: str) -> bytes:
        chunks = []
        total = 0
        async for chunk in self._stream(digest, what):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise InvalidArgument(f"{what}: {digest} is larger than {limit} bytes")
        return b"".join(chunks)

    async def _stream(self, digest: str, what: str) -> Any:
        import grpc

        from pywasmd.api.containerd.services.content.v1 import content_pb2 as pb
        from pywasmd.api.containerd.services.content.v1 import content_pb2_grpc as rpc

        stub = _stub(rpc.ContentStub, self._connect())
        call = stub.Read(
            pb.ReadContentRequest(digest=digest),
            metadata=((_NAMESPACE_HEADER, self.namespace),),
            timeout=_RPC_TIMEOUT * 10,
        )
        try:
            async for reply in call:
                yield reply.data
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise InvalidArgument(
                    f"{what}: blob {digest} is not in containerd's content store; pull the "
                    "image again (ctr images pull --platform wasi/wasm)"
                ) from None
            raise self._error(e) from None

    async def _lease(self, container_id: str, digest: str) -> None:
        from pywasmd.api.containerd.services.leases.v1 import leases_pb2 as pb
        from pywasmd.api.containerd.services.leases.v1 import leases_pb2_grpc as rpc

        stub = _stub(rpc.LeasesStub, self._connect())
        lease_id = LEASE_PREFIX + container_id
        expire = datetime.datetime.now(datetime.timezone.utc) + LEASE_EXPIRY
        labels = {_GC_EXPIRE: expire.strftime("%Y-%m-%dT%H:%M:%SZ")}
        try:
            await self._call(stub.Create, pb.CreateRequest(id=lease_id, labels=labels))
        except _AlreadyExists:
            pass  # a Create retried after a failure: the lease is ours already
        resource = pb.Resource(id=digest, type="content")
        await self._call(stub.AddResource, pb.AddResourceRequest(id=lease_id, resource=resource))

    async def _fetch(self, name: str, layer: artifact.WasmLayer, path: str) -> None:
        what = f"image {name}: Wasm layer {layer.digest}"
        # Readable by all: the guest may run under the image's user, and the module is no secret
        # (anyone who can run the image can read it from the content store anyway).
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        h = hashlib.sha256()
        size = 0
        head = b""
        # Chunks are small and the file local: plain writes cost less than a thread hop each.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            try:
                async for chunk in self._stream(layer.digest, what):
                    if len(head) < 8:
                        head += chunk[: 8 - len(head)]
                    h.update(chunk)
                    size += len(chunk)
                    if size > layer.size:
                        break
                    _write_all(fd, chunk)
            finally:
                os.close(fd)
            digest = "sha256:" + h.hexdigest()
            if size != layer.size or digest != layer.digest:
                # containerd serves content by digest: a mismatch is a damaged store, or a
                # manifest whose layer size lies (containerd checks digests, not sizes).
                raise (Internal if digest != layer.digest else InvalidArgument)(
                    f"{what}: content does not match the manifest (got {size} bytes with "
                    f"digest {digest}, the manifest says {layer.size} bytes); refusing to run it"
                )
            if not is_wasm(head):
                raise InvalidArgument(
                    f"{what} ({layer.media_type}) is not a WebAssembly module (starts with "
                    f"{head[:4]!r})"
                )
            os.replace(tmp, path)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


class _AlreadyExists(ShimError):
    pass


def _stub(cls: Any, channel: Any) -> Any:
    # The generated stub classes are untyped; one Any-typed call site keeps mypy strict elsewhere.
    return cls(channel)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _module_in_rootfs(spec: RuntimeSpec, rootfs: str) -> bool:
    if not spec.process.args or not os.path.isdir(rootfs):
        return False
    try:
        locate_module(rootfs, spec.process.args[0], spec.process.cwd or "/")
    except InvalidArgument:
        return False
    return True


def _present(path: str, size: int) -> bool:
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
