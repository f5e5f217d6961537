"""A tiny, deterministic OCI-archive writer for test images (an OCI image layout in a tar).

It makes the images the tests need that the product's own builder should not make: a
linux/amd64 busybox image for runc, and deliberately broken Wasm images (bad input tests).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass
class Entry:
    path: str  # inside the image, without the leading "/"
    data: bytes = b""
    mode: int = 0o644
    symlink: str | None = None
    directory: bool = False


@dataclass
class Image:
    ref: str  # full reference, e.g. docker.io/library/pw-bad:latest
    os: str
    architecture: str
    entries: list[Entry] = field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=list)


def _layer(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for e in sorted(entries, key=lambda e: e.path):
            parts = e.path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo(e.path)
            info.mode = e.mode
            if e.directory:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                dirs.add(e.path)
                tar.addfile(info)
            elif e.symlink is not None:
                info.type, info.linkname = tarfile.SYMTYPE, e.symlink
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


def _blob(blobs: dict[str, bytes], data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return digest, len(data)


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write(image: Image, out: Path) -> Path:
    """Write `image` as an OCI archive to `out`; returns `out`."""
    blobs: dict[str, bytes] = {}
    layer = _layer(image.entries)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    layer_gz = gzip.compress(layer, mtime=0)
    layer_digest, layer_size = _blob(blobs, layer_gz)
    config: dict[str, object] = {"Env": image.env}
    if image.entrypoint is not None:
        config["Entrypoint"] = image.entrypoint
    if image.cmd is not None:
        config["Cmd"] = image.cmd
    config_digest, config_size = _blob(
        blobs,
        _json(
            {
                "architecture": image.architecture,
                "os": image.os,
                "config": config,
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }
        ),
    )
    manifest_digest, manifest_size = _blob(
        blobs,
        _json(
            {
                "schemaVersion": 2,
                "mediaType": MT_MANIFEST,
                "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": config_size},
                "layers": [
                    {"mediaType": MT_LAYER_GZIP, "digest": layer_digest, "size": layer_size}
                ],
            }
        ),
    )
    tag = image.ref.rsplit(":", 1)[1] if ":" in image.ref.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [
            {
                "mediaType": MT_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": image.architecture, "os": image.os},
                "annotations": {
                    "io.containerd.image.name": image.ref,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }
    files = {"oci-layout": _json({"imageLayoutVersion": "1.0.0"}), "index.json": _json(index)}
    for digest, data in blobs.items():
        files["blobs/sha256/" + digest.split(":", 1)[1]] = data
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out


def busybox_image(ref: str, busybox: Path = Path("/bin/busybox")) -> Image:
    """A linux/amd64 image holding a static busybox and a few applet links."""
    entries = [Entry("bin/busybox", busybox.read_bytes(), 0o755)]
    for applet in ("sh", "echo", "cat", "sleep", "true", "false", "ls", "env"):
        entries.append(Entry(f"bin/{applet}", symlink="busybox"))
    entries += [Entry("tmp", directory=True), Entry("etc", directory=True)]
    return Image(ref, "linux", "amd64", entries, cmd=["/bin/sh"], env=["PATH=/bin"])


def wasm_image(ref: str, path: str, data: bytes, env: list[str] | None = None) -> Image:
    """A wasi/wasm image whose entrypoint is `path` holding `data` (Wasm or deliberately not)."""
    entries = [Entry(path.lstrip("/"), data, 0o755)]
    return Image(ref, "wasi", "wasm", entries, entrypoint=[path], env=env or [])
