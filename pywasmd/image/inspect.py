"""What `pywasm inspect` prints: rows of (field, value) about an OCI content tree."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pywasmd.errors import InvalidArgument
from pywasmd.image import artifact, wasm
from pywasmd.image.build import WASI, Descriptor, Platform, digest_of
from pywasmd.image.content import Content
from pywasmd.image.layout import ArchivedImage, Layer
from pywasmd.wasmbin import is_wasm

Rows = list[tuple[str, str]]


def describe(content: Content, reference: str | None, platform: Platform | None) -> Rows:
    rows: Rows = [("reference", reference or "(none)")]
    manifests = content.manifests()
    desc, manifest = _choose(content, manifests, platform)
    if content.is_index:
        rows.append(("index", content.root.digest))
        platforms = ", ".join(str(_platform(content, d, m) or "?") for d, m in manifests)
        rows.append(("platforms", platforms))
    rows.append(("manifest", desc.digest))
    if artifact.is_artifact_manifest(manifest):
        rows += _artifact_rows(content, desc, manifest)
    else:
        rows += _image_rows(content, desc, manifest)
    return rows


def module_of(content: Content, platform: Platform | None = None) -> tuple[str, bytes]:
    """The Wasm module an image or artifact would run: (its name, its bytes)."""
    desc, manifest = _choose(content, content.manifests(), platform)
    if artifact.is_artifact_manifest(manifest):
        layer = artifact.wasm_layer(manifest, desc.digest)
        data = content.blobs.get(layer.digest)
        name = layer.module_name
    else:
        image = _archived_image(content, desc, manifest)
        argv = image.entrypoint + image.cmd
        if not argv:
            raise InvalidArgument(f"image {desc.digest} has no entrypoint or cmd naming a module")
        name = argv[0]
        data = image.read_file(name)
    if data is None:
        raise InvalidArgument(f"module {name} is not in the archive")
    return name, data


def _choose(
    content: Content,
    manifests: list[tuple[Descriptor, dict[str, Any]]],
    platform: Platform | None,
) -> tuple[Descriptor, dict[str, Any]]:
    if platform is not None:
        found = [(d, m) for d, m in manifests if _platform(content, d, m) == platform]
        if not found:
            seen = ", ".join(str(_platform(content, d, m)) for d, m in manifests)
            raise InvalidArgument(f"no image for platform {platform} (there is: {seen})")
        return found[0]
    if len(manifests) == 1:
        return manifests[0]
    # An index: show its Wasm image, since that is the part pywasm cares about.
    for d, m in manifests:
        if _platform(content, d, m) == WASI or artifact.is_artifact_manifest(m):
            return d, m
    return manifests[0]


def _platform(content: Content, desc: Descriptor, manifest: Mapping[str, Any]) -> Platform | None:
    if desc.platform is not None:
        return desc.platform
    config = manifest.get("config") or {}
    if config.get("mediaType") == artifact.WASM_CONFIG:
        return WASI
    doc = _json(content, str(config.get("digest")))
    if doc.get("os") and doc.get("architecture"):
        return Platform(str(doc["os"]), str(doc["architecture"]), doc.get("variant"))
    return None


def _json(content: Content, digest: str) -> dict[str, Any]:
    try:
        return content.document(digest)
    except (KeyError, InvalidArgument):
        return {}


def _artifact_rows(content: Content, desc: Descriptor, manifest: Mapping[str, Any]) -> Rows:
    config_desc = manifest.get("config") or {}
    config = _json(content, str(config_desc.get("digest")))
    rows: Rows = [
        ("kind", "Wasm OCI artifact"),
        ("platform", str(desc.platform or WASI)),
        ("config type", str(config_desc.get("mediaType"))),
        ("artifact os", str(config.get("os", "?"))),
    ]
    layer = artifact.wasm_layer(manifest, desc.digest)
    rows.append(("layer type", layer.media_type))
    data = content.blobs.get(layer.digest)
    return rows + _module_rows(layer.module_name, data)


def _archived_image(
    content: Content, desc: Descriptor, manifest: Mapping[str, Any]
) -> ArchivedImage:
    config_desc = manifest.get("config") or {}
    config = _json(content, str(config_desc.get("digest")))
    layers = tuple(
        Layer(d, content.blobs[str(d.get("digest"))])
        for d in manifest.get("layers") or []
        if str(d.get("digest")) in content.blobs
    )
    return ArchivedImage({}, desc.to_json(), desc.digest, manifest, config, layers)


def _image_rows(content: Content, desc: Descriptor, manifest: Mapping[str, Any]) -> Rows:
    image = _archived_image(content, desc, manifest)
    platform = _platform(content, desc, manifest)
    wasm_image = platform is not None and platform.architecture in ("wasm", "wasm32")
    rows: Rows = [
        ("kind", "Wasm image (module in the rootfs)" if wasm_image else "container image"),
        ("platform", str(image.platform)),
        ("entrypoint", _argv_text(image.entrypoint)),
        ("cmd", _argv_text(image.cmd)),
        ("env", _argv_text(image.env)),
    ]
    argv = image.entrypoint + image.cmd
    if argv and wasm_image:
        data = image.read_file(argv[0])
        if data is None:
            rows.append(("module", f"{argv[0]} (not found in the image)"))
        else:
            rows += _module_rows(argv[0], data)
    return rows


def _module_rows(name: str, data: bytes | None) -> Rows:
    if data is None:
        return [("module", f"{name} (layer not present)")]
    if not is_wasm(data):
        return [
            ("module", f"{name} ({len(data)} bytes, not WebAssembly)"),
            ("module digest", digest_of(data)),
        ]
    rows: Rows = [("module", f"{name} ({len(data)} bytes)"), ("module digest", digest_of(data))]
    try:
        info = wasm.parse(data, name)
    except InvalidArgument as e:
        return rows + [("wasi", f"unknown ({e.message})")]
    kind = "component" if info.kind == "component" else "core module"
    rows.append(("wasi", f"{info.wasi} ({kind})"))
    rows.append(("imports", _imports_text(info) + (" (partial)" if info.partial else "")))
    rows.append(("exports", ", ".join(info.exports) or "(none)"))
    return rows


def _imports_text(info: wasm.WasmInfo) -> str:
    if not info.imports:
        return "(none)"
    if info.kind == "component":
        return ", ".join(info.imports)
    counts: dict[str, int] = {}
    for item in info.imports:
        module = item.split("#", 1)[0]
        counts[module] = counts.get(module, 0) + 1
    return ", ".join(f"{m} ({n})" for m, n in counts.items())


def _argv_text(items: list[str]) -> str:
    return json.dumps(items) if items else "(none)"


__all__ = ["Rows", "describe"]
