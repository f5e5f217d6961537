"""A whole OCI content tree (index or manifest, configs, layers) held in memory.

`pywasm build` makes one, `push` sends one, `pull` receives one, and archives hold one. Unlike
`layout.read_archive`, which picks one image to look into, this keeps every blob reachable from
the root so that a pushed and pulled tree has exactly the digests it had when built.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pywasmd.errors import InvalidArgument
from pywasmd.image import artifact, mediatypes, wasm
from pywasmd.image.build import (
    WASI,
    Descriptor,
    Image,
    Platform,
    canonical_json,
    digest_of,
    index_document,
    reproducible_tarinfo,
)
from pywasmd.image.reference import Reference

_MAX_DEPTH = 4


@dataclass(frozen=True)
class Content:
    root: Descriptor  # a manifest or an index
    blobs: Mapping[str, bytes]  # digest -> bytes, root included

    def document(self, digest: str) -> dict[str, Any]:
        return _parse_json(self.blobs[digest], digest)

    @property
    def is_index(self) -> bool:
        return self.root.media_type in mediatypes.INDEX_TYPES

    def manifests(self) -> list[tuple[Descriptor, dict[str, Any]]]:
        """Every image manifest under the root, with the platform its index gives it."""
        return list(_walk(self, self.root, 0))

    def ordered_blobs(self) -> list[tuple[str, str]]:
        """(digest, media type) children first, so a registry never sees a dangling manifest."""
        out: dict[str, str] = {}
        for desc, manifest in self.manifests():
            config = manifest.get("config") or {}
            for d in [config, *(manifest.get("layers") or [])]:
                out.setdefault(str(d["digest"]), str(d.get("mediaType", "")))
            out.setdefault(desc.digest, desc.media_type)
        out.pop(self.root.digest, None)
        out[self.root.digest] = self.root.media_type
        return list(out.items())


def _walk(content: Content, desc: Descriptor, depth: int) -> Iterator[tuple[Descriptor, Any]]:
    if depth > _MAX_DEPTH:
        raise InvalidArgument(f"{desc.digest}: indexes nested deeper than {_MAX_DEPTH}")
    doc = content.document(desc.digest)
    if desc.media_type in mediatypes.INDEX_TYPES:
        for entry in doc.get("manifests") or []:
            yield from _walk(content, descriptor_from_json(entry), depth + 1)
    else:
        yield desc, doc


def descriptor_from_json(d: Mapping[str, Any]) -> Descriptor:
    try:
        digest, media_type, size = str(d["digest"]), str(d["mediaType"]), int(d["size"])
    except (KeyError, TypeError, ValueError):
        raise InvalidArgument(f"bad descriptor {dict(d)!r}") from None
    p = d.get("platform")
    platform = None
    if isinstance(p, Mapping) and p.get("os") and p.get("architecture"):
        platform = Platform(str(p["os"]), str(p["architecture"]), p.get("variant"))
    annotations = d.get("annotations")
    return Descriptor(media_type, digest, size, platform, annotations or None)


def from_image(image: Image) -> Content:
    return Content(image.manifest, dict(image.blobs))


def build_artifact(module: bytes, name: str, platform: Platform = WASI) -> Content:
    """A CNCF Wasm artifact of `module`; `name` (its file name) becomes the layer title."""
    info = wasm.parse(module, name)
    layer = Descriptor(
        artifact.WASM_LAYER,
        digest_of(module),
        len(module),
        annotations={artifact.ANNOTATION_TITLE: name},
    )
    config_bytes = canonical_json(
        artifact.config_document(
            os=info.wasi,
            layer_digests=[layer.digest],
            imports=info.imports,
            exports=info.exports,
        )
    )
    config = Descriptor(artifact.WASM_CONFIG, digest_of(config_bytes), len(config_bytes))
    manifest_bytes = canonical_json(
        artifact.manifest_document(config.to_json(), layer.to_json(), None)
    )
    manifest = Descriptor(
        mediatypes.MANIFEST, digest_of(manifest_bytes), len(manifest_bytes), platform
    )
    blobs = {layer.digest: module, config.digest: config_bytes, manifest.digest: manifest_bytes}
    return Content(manifest, blobs)


def make_index(parts: Sequence[Content]) -> Content:
    """One index over the image manifests of `parts` (nested indexes are flattened).

    Two manifests for the same platform would make `--platform` ambiguous, so they are refused.
    """
    entries: list[Descriptor] = []
    blobs: dict[str, bytes] = {}
    seen: dict[str, str] = {}
    for part in parts:
        blobs.update(part.blobs)
        for desc, manifest in part.manifests():
            platform = desc.platform or platform_of(part, manifest)
            if platform is None:
                raise InvalidArgument(f"manifest {desc.digest} names no platform")
            key = str(platform)
            if key in seen and seen[key] != desc.digest:
                raise InvalidArgument(f"two images for platform {key} in one index")
            seen[key] = desc.digest
            entries.append(Descriptor(desc.media_type, desc.digest, desc.size, platform))
    entries = list({d.digest: d for d in entries}.values())
    index_bytes = canonical_json(index_document(entries))
    root = Descriptor(mediatypes.INDEX, digest_of(index_bytes), len(index_bytes))
    blobs[root.digest] = index_bytes
    # Blobs only the dropped nested indexes referenced are not carried along.
    keep = {root.digest}
    out = Content(root, blobs)
    for digest, _ in out.ordered_blobs():
        keep.add(digest)
    return Content(root, {d: b for d, b in blobs.items() if d in keep})


def platform_of(content: Content, manifest: Mapping[str, Any]) -> Platform | None:
    """The platform an image's config (or an artifact's config type) declares."""
    config_desc = manifest.get("config") or {}
    if config_desc.get("mediaType") == artifact.WASM_CONFIG:
        return WASI
    try:
        config = content.document(str(config_desc["digest"]))
    except KeyError:
        return None
    if config.get("os") and config.get("architecture"):
        return Platform(str(config["os"]), str(config["architecture"]), config.get("variant"))
    return None


# --- archives --------------------------------------------------------------------------------


def archive_bytes(content: Content, ref: Reference | None) -> bytes:
    """An OCI layout tar of `content`, its index entry named `ref` (ctr/docker read that)."""
    single = _single_image(content)
    if single is not None and ref is not None:
        from pywasmd.image.layout import archive_bytes as image_archive

        # The same bytes `pywasm build -o` always wrote, Docker's manifest.json included.
        return image_archive(single, ref)
    annotations: dict[str, str] = {}
    if ref is not None:
        annotations[mediatypes.ANNOTATION_IMAGE_NAME] = str(ref)
        if ref.tag:
            annotations[mediatypes.ANNOTATION_REF_NAME] = ref.tag
    r = content.root
    entry = Descriptor(r.media_type, r.digest, r.size, r.platform, annotations or None)
    files = {
        "oci-layout": canonical_json({"imageLayoutVersion": mediatypes.OCI_LAYOUT_VERSION}),
        "index.json": canonical_json(index_document([entry])),
    }
    for digest, data in content.blobs.items():
        algorithm, _, hex_part = digest.partition(":")
        files[f"blobs/{algorithm}/{hex_part}"] = data
    return _tar(files)


def _single_image(content: Content) -> Image | None:
    """The content as a plain image (tar layers, OCI config), when it is one."""
    if content.is_index:
        return None
    manifest = content.document(content.root.digest)
    config = manifest.get("config") or {}
    if config.get("mediaType") not in (mediatypes.CONFIG, mediatypes.DOCKER_CONFIG):
        return None
    return Image(content.blobs, content.root, descriptor_from_json(config))


def write_archive(content: Content, ref: Reference | None, out: Path) -> None:
    """Write atomically: a failure leaves no partial archive behind."""
    data = archive_bytes(content, ref)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class ArchivedContent:
    content: Content
    reference: str | None


def read_archive(path: Path) -> ArchivedContent:
    """Every blob of an OCI archive, digests checked; several index.json entries become one
    index (as `docker save` of several tags writes them)."""
    try:
        with tarfile.open(path) as tar:
            return _read(path, tar)
    except FileNotFoundError:
        raise InvalidArgument(f"{path}: no such file") from None
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise InvalidArgument(f"{path}: not a readable tar archive ({e})") from None
    except IsADirectoryError:
        raise InvalidArgument(f"{path}: is a directory, not an OCI archive") from None
    except OSError as e:
        raise InvalidArgument(f"{path}: {e.strerror or e}") from None


def _read(path: Path, tar: tarfile.TarFile) -> ArchivedContent:
    def member(name: str) -> bytes:
        try:
            f = tar.extractfile(name)
        except KeyError:
            f = None
        if f is None:
            raise InvalidArgument(f"{path}: not a usable OCI image archive: it has no {name}")
        return f.read()

    blobs: dict[str, bytes] = {}

    def blob(desc: Mapping[str, Any]) -> bytes:
        digest = str(desc.get("digest", ""))
        if digest in blobs:
            return blobs[digest]
        if not digest.startswith("sha256:"):
            raise InvalidArgument(f"{path}: unsupported or missing digest {digest!r}")
        data = member("blobs/sha256/" + digest.removeprefix("sha256:"))
        if digest_of(data) != digest:
            raise InvalidArgument(f"{path}: blob {digest} does not match its digest")
        blobs[digest] = data
        return data

    def visit(desc: Mapping[str, Any], depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise InvalidArgument(f"{path}: indexes nested deeper than {_MAX_DEPTH}")
        doc = _parse_json(blob(desc), f"{path}: {desc.get('digest')}")
        if desc.get("mediaType") in mediatypes.INDEX_TYPES:
            for entry in doc.get("manifests") or []:
                visit(entry, depth + 1)
            return
        for d in [doc.get("config") or {}, *(doc.get("layers") or [])]:
            blob(d)

    index = _parse_json(member("index.json"), f"{path}: index.json")
    entries = list(index.get("manifests") or [])
    if not entries:
        raise InvalidArgument(f"{path}: not a usable OCI image archive: the index lists nothing")
    for entry in entries:
        visit(entry, 0)
    names = [(e.get("annotations") or {}).get(mediatypes.ANNOTATION_IMAGE_NAME) for e in entries]
    reference = str(names[0]) if names[0] else None
    if len(entries) == 1:
        root = descriptor_from_json({k: v for k, v in entries[0].items() if k != "annotations"})
        return ArchivedContent(Content(root, blobs), reference)
    parts = [
        Content(descriptor_from_json({k: v for k, v in e.items() if k != "annotations"}), blobs)
        for e in entries
    ]
    return ArchivedContent(make_index(parts), reference)


def _parse_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise InvalidArgument(f"{what}: not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what}: not a JSON object")
    return doc


def _tar(files: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    dirs = sorted({os.path.dirname(n) for n in files if "/" in n} | {"blobs"})
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in dirs:
            info = reproducible_tarinfo(name, 0, 0o755)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name in sorted(files):
            data = files[name]
            tar.addfile(reproducible_tarinfo(name, len(data), 0o644), io.BytesIO(data))
    return buf.getvalue()
