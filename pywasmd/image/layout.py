"""OCI image layouts packed in a tar (what `ctr images import` and `docker load` read).

The archive is reproducible like the image itself: sorted entries, fixed owners and times.
Next to the OCI layout it carries Docker's `manifest.json`, as `docker save` does: Docker's
classic (graph driver) store reads only that file, and containerd 1.6 and 2.1 still take the
image from index.json when both are present (checked by importing both ways).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import posixpath
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pywasmd.errors import InvalidArgument
from pywasmd.image import mediatypes
from pywasmd.image.build import (
    Descriptor,
    Image,
    Platform,
    canonical_json,
    index_document,
    reproducible_tarinfo,
)
from pywasmd.image.reference import Reference, parse_reference

_BLOB_DIR = "blobs/sha256/"
_MAX_SYMLINK_HOPS = 16


def archive_bytes(image: Image, reference: str | Reference) -> bytes:
    """The image as an OCI layout tar whose index names it `reference` (normalized)."""
    ref = reference if isinstance(reference, Reference) else parse_reference(reference)
    annotations = {mediatypes.ANNOTATION_IMAGE_NAME: str(ref)}
    if ref.tag:
        annotations[mediatypes.ANNOTATION_REF_NAME] = ref.tag
    m = image.manifest
    entry = Descriptor(m.media_type, m.digest, m.size, m.platform, annotations)
    files = {
        "oci-layout": canonical_json({"imageLayoutVersion": mediatypes.OCI_LAYOUT_VERSION}),
        "index.json": canonical_json(index_document([entry])),
    }
    if ref.tag:
        files["manifest.json"] = _docker_manifest(image, ref)
    for digest, data in image.blobs.items():
        files[_blob_name(digest)] = data
    return _tar(files)


def _docker_manifest(image: Image, ref: Reference) -> bytes:
    manifest = json.loads(image.blobs[image.manifest.digest])
    tagged = Reference(ref.domain, ref.path, ref.tag)  # Docker's RepoTags take no digest
    entry = {
        "Config": _blob_name(image.config.digest),
        "RepoTags": [tagged.familiar],
        "Layers": [_blob_name(layer["digest"]) for layer in manifest["layers"]],
    }
    return json.dumps([entry], separators=(",", ":")).encode()


def write_archive(image: Image, reference: str | Reference, out: Path) -> None:
    """Write `archive_bytes` to `out` atomically, so a reader never sees half an archive."""
    data = archive_bytes(image, reference)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Layer:
    descriptor: Mapping[str, Any]
    data: bytes  # as stored in the archive (usually gzip'd)

    def tar_bytes(self) -> bytes:
        if self.data[:2] == b"\x1f\x8b":
            return gzip.decompress(self.data)
        if self.descriptor.get("mediaType", "").endswith("+zstd"):
            raise InvalidArgument(f"layer {self.descriptor.get('digest')}: zstd is not supported")
        return self.data


@dataclass(frozen=True)
class ArchivedImage:
    index: Mapping[str, Any]
    manifest_descriptor: Mapping[str, Any]  # the top-level index entry (holds the name)
    manifest_digest: str
    manifest: Mapping[str, Any]
    config: Mapping[str, Any]
    layers: tuple[Layer, ...]

    @property
    def reference(self) -> str | None:
        annotations = self.manifest_descriptor.get("annotations") or {}
        name = annotations.get(mediatypes.ANNOTATION_IMAGE_NAME)
        return str(name) if name else None

    @property
    def platform(self) -> Platform:
        c = self.config
        return Platform(str(c.get("os", "")), str(c.get("architecture", "")), c.get("variant"))

    @property
    def entrypoint(self) -> list[str]:
        return list(self._run_config.get("Entrypoint") or [])

    @property
    def cmd(self) -> list[str]:
        return list(self._run_config.get("Cmd") or [])

    @property
    def env(self) -> list[str]:
        return list(self._run_config.get("Env") or [])

    @property
    def _run_config(self) -> Mapping[str, Any]:
        return self.config.get("config") or {}

    def read_file(self, path: str) -> bytes | None:
        """Content of the regular file at `path` in the image's rootfs (symlinks followed)."""
        for _ in range(_MAX_SYMLINK_HOPS):
            found = self._lookup(posixpath.normpath("/" + path).lstrip("/"))
            if found is None or isinstance(found, bytes):
                return found
            path = posixpath.join(posixpath.dirname("/" + path), found.linkname)
        return None

    def _lookup(self, rel: str) -> bytes | tarfile.TarInfo | None:
        # Upper layers win; a whiteout in an upper layer hides the path below it.
        head, base = posixpath.split(rel)
        whiteout = posixpath.join(head, ".wh." + base)
        for layer in reversed(self.layers):
            with tarfile.open(fileobj=io.BytesIO(layer.tar_bytes())) as tar:
                for member in tar:
                    name = posixpath.normpath(member.name).lstrip("/")
                    name = name[2:] if name.startswith("./") else name
                    if name == whiteout:
                        return None
                    if name != rel:
                        continue
                    if member.issym():
                        return member
                    f = tar.extractfile(member) if member.isreg() else None
                    return f.read() if f else None
        return None


def read_archive(path: Path, platform: Platform | None = None) -> ArchivedImage:
    """Read an OCI archive (one image, or the one for `platform`) and check blob digests."""
    try:
        with tarfile.open(path) as tar:
            return _Reader(path, tar).image(platform)
    except FileNotFoundError:
        raise InvalidArgument(f"{path}: no such file") from None
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise InvalidArgument(f"{path}: not a readable tar archive ({e})") from None
    except OSError as e:
        raise InvalidArgument(f"{path}: {e.strerror or e}") from None


class _Reader:
    def __init__(self, path: Path, tar: tarfile.TarFile) -> None:
        self._path = path
        self._tar = tar

    def image(self, platform: Platform | None) -> ArchivedImage:
        index = self._json_file("index.json")
        top = self._pick(index, platform)
        desc = top
        # Follow nested indexes (multi-platform images) down to one manifest.
        for _ in range(8):
            if desc.get("mediaType") not in mediatypes.INDEX_TYPES:
                break
            desc = self._pick(self._json_blob(desc), platform)
        if desc.get("mediaType") not in mediatypes.MANIFEST_TYPES:
            raise self._bad(f"index entry {desc.get('digest')} is not an image manifest")
        manifest = self._json_blob(desc)
        config = self._json_blob(manifest.get("config") or {})
        layers = tuple(Layer(d, self._blob(d)) for d in manifest.get("layers") or [])
        return ArchivedImage(index, top, str(desc["digest"]), manifest, config, layers)

    def _pick(self, index: Mapping[str, Any], platform: Platform | None) -> Mapping[str, Any]:
        manifests = list(index.get("manifests") or [])
        if platform is not None:
            wanted = platform.to_json()
            manifests = [
                m
                for m in manifests
                if all((m.get("platform") or {}).get(k) == v for k, v in wanted.items())
            ]
        if len(manifests) == 1:
            return manifests[0]  # type: ignore[no-any-return]
        if not manifests:
            suffix = f" for platform {platform}" if platform else ""
            raise self._bad(f"the index lists no image{suffix}")
        seen = ", ".join(_platform_text(m) for m in manifests)
        raise self._bad(f"the index lists {len(manifests)} images ({seen}); choose a platform")

    def _json_file(self, name: str) -> dict[str, Any]:
        return self._parse(self._member(name), name)

    def _json_blob(self, desc: Mapping[str, Any]) -> dict[str, Any]:
        return self._parse(self._blob(desc), str(desc.get("digest")))

    def _blob(self, desc: Mapping[str, Any]) -> bytes:
        digest = str(desc.get("digest", ""))
        if not digest.startswith("sha256:"):
            raise self._bad(f"unsupported or missing digest {digest!r}")
        data = self._member(_blob_name(digest))
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise self._bad(f"blob {digest} does not match its digest")
        return data

    def _member(self, name: str) -> bytes:
        try:
            f = self._tar.extractfile(name)
        except KeyError:
            f = None
        if f is None:
            raise self._bad(f"it has no {name}")
        return f.read()

    def _parse(self, data: bytes, what: str) -> dict[str, Any]:
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise self._bad(f"{what} is not JSON ({e})") from None
        if not isinstance(doc, dict):
            raise self._bad(f"{what} is not a JSON object")
        return doc

    def _bad(self, why: str) -> InvalidArgument:
        return InvalidArgument(f"{self._path}: not a usable OCI image archive: {why}")


def _platform_text(desc: Mapping[str, Any]) -> str:
    p = desc.get("platform") or {}
    return "/".join(str(p[k]) for k in ("os", "architecture", "variant") if p.get(k)) or "?"


def _blob_name(digest: str) -> str:
    algorithm, _, hex_part = digest.partition(":")
    return f"blobs/{algorithm}/{hex_part}"


def _tar(files: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("blobs", _BLOB_DIR.rstrip("/")):
            info = reproducible_tarinfo(name, 0, 0o755)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name in sorted(files):
            data = files[name]
            tar.addfile(reproducible_tarinfo(name, len(data), 0o644), io.BytesIO(data))
    return buf.getvalue()
