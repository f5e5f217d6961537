"""Wasm OCI artifacts: config, manifest and media type checks (pure parts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from pywasmd.errors import InvalidArgument
from pywasmd.image import artifact, mediatypes
from pywasmd.image.build import WASI, Platform, build_image, digest_of
from pywasmd.image.content import (
    build_artifact,
    from_image,
    make_index,
    read_archive,
    write_archive,
)
from pywasmd.image.reference import parse_reference
from pywasmd.shim.artifacts import choose_manifest, module_path

MODULE = wasmtime.wat2wasm(
    '(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))'
    ' (func (export "_start")))'
)
COMPONENT = wasmtime.wat2wasm('(component (import "wasi:cli/stdout@0.2.0" (instance)))')


def _layer(media_type: str, n: int = 0) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": "sha256:" + f"{n:064x}", "size": 100}


def _manifest(*layers: dict[str, Any], config: str = artifact.WASM_CONFIG) -> dict[str, Any]:
    return {"config": {"mediaType": config}, "layers": list(layers)}


def test_artifact_of_a_core_module() -> None:
    content = build_artifact(MODULE, "app.wasm")
    manifest = content.document(content.root.digest)
    assert content.root.media_type == mediatypes.MANIFEST
    assert content.root.platform == WASI
    assert manifest["config"]["mediaType"] == "application/vnd.wasm.config.v0+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/wasm"]
    layer = manifest["layers"][0]
    assert layer["digest"] == digest_of(MODULE)
    assert layer["annotations"] == {"org.opencontainers.image.title": "app.wasm"}
    config = content.document(manifest["config"]["digest"])
    assert config == {
        "architecture": "wasm",
        "os": "wasip1",
        "layerDigests": [digest_of(MODULE)],
    }
    assert manifest["config"]["size"] > 0  # ctr refuses zero-sized descriptors
    assert content.blobs[layer["digest"]] == MODULE


def test_artifact_of_a_component_carries_its_imports() -> None:
    content = build_artifact(COMPONENT, "c.wasm")
    manifest = content.document(content.root.digest)
    config = content.document(manifest["config"]["digest"])
    assert config["os"] == "wasip2"
    assert config["component"] == {"imports": ["wasi:cli/stdout@0.2.0"], "exports": []}


def test_artifacts_are_reproducible() -> None:
    assert build_artifact(MODULE, "a.wasm").root == build_artifact(MODULE, "a.wasm").root
    assert build_artifact(MODULE, "a.wasm").root != build_artifact(MODULE, "b.wasm").root


def test_artifact_of_a_truncated_module_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="truncated"):
        build_artifact(MODULE[:-2], "a.wasm")


@pytest.mark.parametrize("media_type", artifact.WASM_LAYER_TYPES)
def test_accepted_layer_types(media_type: str) -> None:
    layer = _layer(media_type)
    layer["annotations"] = {artifact.ANNOTATION_TITLE: "dir/app.wasm"}
    found = artifact.wasm_layer(_manifest(layer), "x")
    assert found.media_type == media_type
    assert found.module_name == "app.wasm"


def test_untitled_layer_has_a_neutral_name() -> None:
    assert artifact.wasm_layer(_manifest(_layer("application/wasm")), "x").module_name == (
        "module.wasm"
    )


def test_two_layers_are_refused() -> None:
    m = _manifest(_layer("application/wasm", 1), _layer("application/wasm", 2))
    with pytest.raises(InvalidArgument, match="has 2 Wasm layers"):
        artifact.wasm_layer(m, "img")


def test_unknown_layer_type_names_it_and_the_accepted_ones() -> None:
    m = _manifest(_layer("application/vnd.example+tar"))
    with pytest.raises(InvalidArgument) as e:
        artifact.wasm_layer(m, "img")
    assert "'application/vnd.example+tar'" in e.value.message
    for accepted in artifact.WASM_LAYER_TYPES:
        assert accepted in e.value.message


@pytest.mark.parametrize(
    ("layer", "needle"),
    [
        ({"mediaType": "application/wasm", "digest": "md5:00", "size": 9}, "bad digest"),
        ({"mediaType": "application/wasm", "digest": "sha256:" + "0" * 64, "size": 3}, "size"),
    ],
)
def test_bad_descriptors(layer: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        artifact.wasm_layer(_manifest(layer), "img")


def test_no_layers() -> None:
    with pytest.raises(InvalidArgument, match="no layers"):
        artifact.wasm_layer(_manifest(), "img")


def test_is_artifact_manifest() -> None:
    assert artifact.is_artifact_manifest(_manifest(_layer("application/wasm")))
    assert artifact.is_artifact_manifest(_manifest(_layer("x/y")))  # Wasm config decides
    compat = _manifest(_layer(mediatypes.LAYER_TAR_GZIP), config=mediatypes.CONFIG)
    assert not artifact.is_artifact_manifest(compat)
    spin = _manifest(_layer(artifact.WASM_CONTENT_LAYER), config="application/vnd.x+json")
    assert artifact.is_artifact_manifest(spin)


def test_config_document_refuses_unknown_os() -> None:
    with pytest.raises(InvalidArgument, match="wasip1 or wasip2"):
        artifact.config_document(os="linux", layer_digests=[])


def test_index_over_wasm_and_linux(tmp_path: Path) -> None:
    linux = from_image(
        build_image(files={"/bin/x": b"x"}, cmd=["/bin/x"], platform=Platform("linux", "amd64"))
    )
    linux_tar = tmp_path / "linux.tar"
    write_archive(linux, parse_reference("linux:1"), linux_tar)
    wasm_part = build_artifact(MODULE, "app.wasm")
    index = make_index([wasm_part, read_archive(linux_tar).content])
    doc = index.document(index.root.digest)
    assert [m["platform"] for m in doc["manifests"]] == [
        {"architecture": "wasm", "os": "wasi"},
        {"architecture": "amd64", "os": "linux"},
    ]
    # Everything the index reaches travels with it, nothing else.
    assert set(index.blobs) == {d for d, _ in index.ordered_blobs()}
    assert index.ordered_blobs()[-1] == (index.root.digest, mediatypes.INDEX)

    out = tmp_path / "multi.tar"
    write_archive(index, parse_reference("127.0.0.1:5000/multi:1"), out)
    again = read_archive(out)
    assert again.reference == "127.0.0.1:5000/multi:1"
    assert again.content.root == index.root
    assert dict(again.content.blobs) == dict(index.blobs)
    entry = json.loads(_member(out, "index.json"))["manifests"][0]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "1"


def test_index_refuses_two_images_for_one_platform() -> None:
    a = build_artifact(MODULE, "a.wasm")
    b = build_artifact(MODULE, "b.wasm")
    with pytest.raises(InvalidArgument, match="two images for platform wasi/wasm"):
        make_index([a, b])


def test_choose_manifest_prefers_wasm_entries() -> None:
    linux = {"digest": "sha256:1", "platform": {"os": "linux", "architecture": "amd64"}}
    wasi = {"digest": "sha256:2", "platform": {"os": "wasi", "architecture": "wasm"}}
    wasip2 = {"digest": "sha256:3", "platform": {"os": "wasip2", "architecture": "wasm"}}
    assert choose_manifest({"manifests": [linux, wasi]}, "x") == wasi
    assert choose_manifest({"manifests": [linux, wasip2]}, "x") == wasip2
    assert choose_manifest({"manifests": [linux]}, "x") is None
    bare = {"digest": "sha256:4"}
    assert choose_manifest({"manifests": [bare]}, "x") == bare


def test_module_path_is_content_addressed() -> None:
    assert module_path("/c", "sha256:ab") == "/c/sha256-ab.wasm"


def _member(archive: Path, name: str) -> bytes:
    import tarfile

    with tarfile.open(archive) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()
