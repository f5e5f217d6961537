"""CNCF TAG-Runtime "Wasm OCI artifacts": build them, and decide whether a manifest is one.

Pure and stdlib-only: the shim imports the checks on its Create path.

An artifact is an ordinary OCI manifest whose config has the media type
`application/vnd.wasm.config.v0+json` and whose only layer is the module itself. The config is
real JSON (ctr refuses zero-sized descriptors) and carries no `created` time, so that the same
module always gives the same digests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pywasmd.errors import InvalidArgument
from pywasmd.image import mediatypes

WASM_CONFIG: Final = mediatypes.WASM_CONFIG
WASM_LAYER: Final = mediatypes.WASM_LAYER
WASM_CONTENT_LAYER: Final = mediatypes.WASM_CONTENT_LAYER
WASM_LAYER_TYPES: Final = mediatypes.WASM_LAYER_TYPES

ANNOTATION_TITLE: Final = "org.opencontainers.image.title"
DEFAULT_MODULE_NAME: Final = "module.wasm"


@dataclass(frozen=True)
class WasmLayer:
    """The one module layer of an artifact, as its manifest describes it."""

    media_type: str
    digest: str
    size: int
    title: str | None

    @property
    def module_name(self) -> str:
        """argv[0] of the guest: the file name the producer recorded, else a neutral one."""
        name = (self.title or "").rsplit("/", 1)[-1]
        return name or DEFAULT_MODULE_NAME


def accepted_layer_types() -> str:
    return ", ".join(WASM_LAYER_TYPES)


def is_artifact_manifest(manifest: Mapping[str, Any]) -> bool:
    """True when the manifest is (meant as) a Wasm artifact: Wasm config or a Wasm layer.

    A compat image (an OCI config with tar layers) answers False, so its rootfs is used.
    """
    config = manifest.get("config") or {}
    if isinstance(config, Mapping) and config.get("mediaType") == WASM_CONFIG:
        return True
    layers = manifest.get("layers") or []
    return any(isinstance(d, Mapping) and d.get("mediaType") in WASM_LAYER_TYPES for d in layers)


def wasm_layer(manifest: Mapping[str, Any], what: str) -> WasmLayer:
    """The artifact's module layer; refuses several Wasm layers or layers of unknown types,
    naming the media type seen and the ones accepted."""
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        raise InvalidArgument(f"{what}: the Wasm artifact has no layers; expected one module layer")
    unknown = [d.get("mediaType") for d in layers if d.get("mediaType") not in WASM_LAYER_TYPES]
    if unknown:
        raise InvalidArgument(
            f"{what}: unsupported layer media type {unknown[0]!r} in a Wasm artifact; "
            f"accepted: {accepted_layer_types()}"
        )
    if len(layers) > 1:
        raise InvalidArgument(
            f"{what}: the Wasm artifact has {len(layers)} Wasm layers; pywasm runs artifacts "
            "with exactly one (the CNCF layout says to reject more)"
        )
    d = layers[0]
    digest, size = d.get("digest"), d.get("size")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise InvalidArgument(f"{what}: the Wasm layer has a bad digest {digest!r}")
    if not isinstance(size, int) or size < 8:
        raise InvalidArgument(f"{what}: the Wasm layer has a bad size {size!r}")
    annotations = d.get("annotations") or {}
    title = annotations.get(ANNOTATION_TITLE) if isinstance(annotations, Mapping) else None
    return WasmLayer(str(d["mediaType"]), digest, size, str(title) if title else None)


def config_document(
    *,
    os: str,
    layer_digests: Sequence[str],
    imports: Sequence[str] = (),
    exports: Sequence[str] = (),
) -> dict[str, Any]:
    """The artifact's config: `component` only for components (the spec requires it there)."""
    if os not in ("wasip1", "wasip2"):
        raise InvalidArgument(f"artifact os {os!r}: expected wasip1 or wasip2")
    doc: dict[str, Any] = {
        "architecture": "wasm",
        "os": os,
        "layerDigests": list(layer_digests),
    }
    if os == "wasip2":
        doc["component"] = {"imports": list(imports), "exports": list(exports)}
    return doc


def manifest_document(
    config: Mapping[str, Any], layer: Mapping[str, Any], annotations: Mapping[str, str] | None
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mediatypes.MANIFEST,
        "config": dict(config),
        "layers": [dict(layer)],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return doc
