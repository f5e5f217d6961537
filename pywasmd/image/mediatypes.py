"""Media types and annotation names from the OCI image spec and the CNCF Wasm artifact spec."""

from __future__ import annotations

from typing import Final

OCI_LAYOUT_VERSION: Final = "1.0.0"

INDEX: Final = "application/vnd.oci.image.index.v1+json"
MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
CONFIG: Final = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
LAYER_TAR_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR: Final = "application/vnd.oci.image.layer.v1.tar"

# Docker's own names for the same things; readers meet them in `docker save` output.
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LAYER_TAR_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# CNCF "Wasm OCI artifact" layout: the module itself is the only layer.
WASM_CONFIG: Final = "application/vnd.wasm.config.v0+json"
WASM_LAYER: Final = "application/wasm"
# Layer types other producers use for the same thing (runwasi's earlier layout; Spin).
# runwasi labels core modules with the component type too: the binary's header, never the
# layer type, tells a module from a component.
BYTECODEALLIANCE_LAYER: Final = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm"
WASM_CONTENT_LAYER: Final = "application/vnd.wasm.content.layer.v1+wasm"
#: Every layer type pywasm runs a module from.
WASM_LAYER_TYPES: Final = (WASM_LAYER, BYTECODEALLIANCE_LAYER, WASM_CONTENT_LAYER)

ANNOTATION_IMAGE_NAME: Final = "io.containerd.image.name"
ANNOTATION_REF_NAME: Final = "org.opencontainers.image.ref.name"

INDEX_TYPES: Final = frozenset({INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES: Final = frozenset({MANIFEST, DOCKER_MANIFEST})
