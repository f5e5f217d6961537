"""Build an OCI image (config, one layer, manifest, index) in memory.

Everything here is deterministic: the same inputs give the same bytes and hence the same
digests, so images can be cached and compared by digest. That is why the layer tar has fixed
owners and times, sorted entries, and a gzip header without name or time, and why the config
carries no `created` time.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from pywasmd.errors import InvalidArgument
from pywasmd.image import mediatypes

# Level 6 is zlib's default: level 9 costs several times more on large modules for ~1% less.
_GZIP_LEVEL = 6
_DIR_MODE = 0o755


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`os/arch[/variant]`, as `--platform` flags spell it."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidArgument(f"bad platform {text!r}: expected OS/ARCH, e.g. wasi/wasm")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


WASI = Platform("wasi", "wasm")


@dataclass(frozen=True)
class File:
    """A regular file; `source` is a host path read at build time, or the content itself."""

    source: Path | bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class Directory:
    mode: int = _DIR_MODE


# A bare Path is a host file whose exec bits decide between 0755 and 0644 (the host's other
# mode bits follow the umask, which must not leak into digests); bare bytes are a 0644 file.
FileSource: TypeAlias = Path | bytes | File | Symlink | Directory


@dataclass(frozen=True)
class ImageSpec:
    files: Mapping[str, FileSource]
    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Sequence[str] = ()
    working_dir: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    platform: Platform = WASI


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Image:
    blobs: Mapping[str, bytes]  # digest -> content: config, layers and manifest
    manifest: Descriptor  # carries the platform, as an index entry should
    config: Descriptor

    @property
    def index(self) -> dict[str, Any]:
        """An OCI index naming only this image's manifest (no name annotations)."""
        return index_document([self.manifest])


def build(spec: ImageSpec) -> Image:
    layer_tar = _layer_tar(_entries(spec.files))
    layer_gz = _gzip(layer_tar)
    diff_id = digest_of(layer_tar)
    layer = Descriptor(mediatypes.LAYER_TAR_GZIP, digest_of(layer_gz), len(layer_gz))

    config_bytes = canonical_json(_config(spec, [diff_id]))
    config = Descriptor(mediatypes.CONFIG, digest_of(config_bytes), len(config_bytes))
    manifest_bytes = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.MANIFEST,
            "config": config.to_json(),
            "layers": [layer.to_json()],
        }
    )
    manifest = Descriptor(
        mediatypes.MANIFEST, digest_of(manifest_bytes), len(manifest_bytes), spec.platform
    )
    blobs = {
        layer.digest: layer_gz,
        config.digest: config_bytes,
        manifest.digest: manifest_bytes,
    }
    return Image(blobs, manifest, config)


def build_image(
    *,
    files: Mapping[str, FileSource],
    entrypoint: Sequence[str] = (),
    cmd: Sequence[str] = (),
    env: Sequence[str] = (),
    working_dir: str = "",
    labels: Mapping[str, str] | None = None,
    platform: Platform = WASI,
) -> Image:
    """Keyword form of `build`, e.g. for a linux/amd64 busybox image in tests."""
    spec = ImageSpec(
        files, tuple(entrypoint), tuple(cmd), tuple(env), working_dir, dict(labels or {}), platform
    )
    return build(spec)


def tree(host_dir: Path, guest_dir: str) -> dict[str, FileSource]:
    """Every file, directory and symlink under `host_dir`, placed under `guest_dir`."""
    if not host_dir.is_dir():
        raise InvalidArgument(f"{host_dir}: not a directory")
    guest_dir = posixpath.normpath(guest_dir)
    out: dict[str, FileSource] = {} if guest_dir == "/" else {guest_dir: Directory()}
    for root, dirs, names in os.walk(host_dir):
        rel = Path(root).relative_to(host_dir)
        for name in sorted(dirs + names):
            host = Path(root, name)
            guest = posixpath.join(guest_dir, rel.as_posix(), name)
            if host.is_symlink():
                out[posixpath.normpath(guest)] = Symlink(os.readlink(host))
            elif host.is_dir():
                out[posixpath.normpath(guest)] = Directory()
            else:
                out[posixpath.normpath(guest)] = host
    return out


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def index_document(manifests: Iterable[Descriptor]) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": mediatypes.INDEX,
        "manifests": [m.to_json() for m in manifests],
    }


def _config(spec: ImageSpec, diff_ids: list[str]) -> dict[str, Any]:
    for item in spec.env:
        if "=" not in item or item.startswith("="):
            raise InvalidArgument(f"bad environment entry {item!r}: expected NAME=VALUE")
    run: dict[str, Any] = {}
    # Empty fields are left out rather than written as null: Docker and containerd treat a
    # missing Entrypoint/Cmd as "none", and leaving them out keeps digests stable.
    if spec.entrypoint:
        run["Entrypoint"] = list(spec.entrypoint)
    if spec.cmd:
        run["Cmd"] = list(spec.cmd)
    if spec.env:
        run["Env"] = list(spec.env)
    if spec.working_dir:
        run["WorkingDir"] = spec.working_dir
    if spec.labels:
        run["Labels"] = dict(spec.labels)
    return {
        **spec.platform.to_json(),
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }


@dataclass(frozen=True)
class _Entry:
    path: str  # relative, no leading slash
    kind: bytes  # a tarfile type
    mode: int
    data: bytes = b""
    link: str = ""


def _entries(files: Mapping[str, FileSource]) -> list[_Entry]:
    entries: dict[str, _Entry] = {}
    for guest, source in files.items():
        path = _guest_path(guest)
        entries[path] = _entry(path, guest, source)
    for path in list(entries):
        parent = posixpath.dirname(path)
        while parent:
            existing = entries.setdefault(parent, _Entry(parent, tarfile.DIRTYPE, _DIR_MODE))
            if existing.kind != tarfile.DIRTYPE:
                raise InvalidArgument(f"/{path}: its parent /{parent} is not a directory")
            parent = posixpath.dirname(parent)
    # Component-wise order puts every directory right before its own contents.
    return sorted(entries.values(), key=lambda e: e.path.split("/"))


def _guest_path(guest: str) -> str:
    if not guest.startswith("/"):
        raise InvalidArgument(f"{guest}: paths inside the image must be absolute")
    if guest == "/":
        raise InvalidArgument("/: the image root is always a directory; name a path below it")
    # Unnormalized spellings would let two keys name one path and so make the layer ambiguous.
    parts = guest.split("/")[1:]
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidArgument(f"{guest}: path inside the image must be normalized (no //, ., ..)")
    return "/".join(parts)


def _entry(path: str, guest: str, source: FileSource) -> _Entry:
    if isinstance(source, Directory):
        return _Entry(path, tarfile.DIRTYPE, source.mode & 0o7777)
    if isinstance(source, Symlink):
        if not source.target:
            raise InvalidArgument(f"{guest}: symlink target is empty")
        return _Entry(path, tarfile.SYMTYPE, 0o777, link=source.target)
    if isinstance(source, bytes):
        source = File(source)
    elif isinstance(source, Path):
        source = File(source, 0o755 if _host_mode(source, guest) & 0o111 else 0o644)
    data = source.source if isinstance(source.source, bytes) else _read(source.source, guest)
    return _Entry(path, tarfile.REGTYPE, source.mode & 0o7777, data)


def _host_mode(host: Path, guest: str) -> int:
    try:
        st = host.stat()
    except OSError as e:
        raise InvalidArgument(f"{host} (for {guest}): {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(f"{host} (for {guest}): not a regular file")
    return st.st_mode


def _read(host: Path, guest: str) -> bytes:
    try:
        return host.read_bytes()
    except OSError as e:
        raise InvalidArgument(f"{host} (for {guest}): {e.strerror or e}") from None


def _layer_tar(entries: Iterable[_Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = reproducible_tarinfo(e.path, len(e.data), e.mode)
            info.type = e.kind
            info.linkname = e.link
            tar.addfile(info, io.BytesIO(e.data) if e.kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def reproducible_tarinfo(name: str, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    # filename="" and mtime=0 keep the host's name and clock out of the gzip header.
    with gzip.GzipFile("", "wb", _GZIP_LEVEL, buf, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()
