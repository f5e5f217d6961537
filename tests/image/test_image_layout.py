import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from pywasmd.errors import InvalidArgument
from pywasmd.image import mediatypes
from pywasmd.image.build import WASI, File, Platform, Symlink, build_image
from pywasmd.image.layout import archive_bytes, read_archive, write_archive

MODULE = b"\0asm\1\0\0\0"


def _image(**overrides: object):  # type: ignore[no-untyped-def]
    kwargs: dict[str, object] = {
        "files": {"/hello.wasm": File(MODULE, 0o755), "/link.wasm": Symlink("hello.wasm")},
        "entrypoint": ["/hello.wasm"],
        "cmd": ["a"],
        "env": ["GREETING=hi"],
    }
    kwargs.update(overrides)
    return build_image(**kwargs)  # type: ignore[arg-type]


def test_archive_is_reproducible() -> None:
    assert archive_bytes(_image(), "hello") == archive_bytes(_image(), "hello:latest")


def test_archive_layout_and_names() -> None:
    image = _image()
    with tarfile.open(fileobj=io.BytesIO(archive_bytes(image, "hello"))) as tar:
        members = tar.getmembers()
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
        names = [m.name for m in members]
        layout = json.load(tar.extractfile("oci-layout"))  # type: ignore[arg-type]
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        docker = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        for digest, data in image.blobs.items():
            assert tar.extractfile("blobs/sha256/" + digest[7:]).read() == data  # type: ignore[union-attr]
    assert names[:2] == ["blobs", "blobs/sha256"]
    assert {"oci-layout", "index.json", "manifest.json"} <= set(names)
    assert layout == {"imageLayoutVersion": "1.0.0"}
    assert index["schemaVersion"] == 2
    (entry,) = index["manifests"]
    assert entry["digest"] == image.manifest.digest
    assert entry["platform"] == {"os": "wasi", "architecture": "wasm"}
    assert docker == [
        {
            "Config": "blobs/sha256/" + image.config.digest[7:],
            "RepoTags": ["hello:latest"],
            "Layers": [
                "blobs/sha256/" + d[7:]
                for d in image.blobs
                if d not in (image.manifest.digest, image.config.digest)
            ],
        }
    ]
    assert entry["annotations"] == {
        mediatypes.ANNOTATION_IMAGE_NAME: "docker.io/library/hello:latest",
        mediatypes.ANNOTATION_REF_NAME: "latest",
    }


def test_round_trip(tmp_path: Path) -> None:
    image = _image()
    out = tmp_path / "hello.tar"
    write_archive(image, "example/app:v1", out)
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind
    got = read_archive(out)
    assert got.reference == "docker.io/example/app:v1"
    assert got.manifest_digest == image.manifest.digest
    assert got.platform == WASI
    assert got.entrypoint == ["/hello.wasm"]
    assert got.cmd == ["a"]
    assert got.env == ["GREETING=hi"]
    assert len(got.layers) == 1
    assert got.read_file("/hello.wasm") == MODULE
    assert got.read_file("/link.wasm") == MODULE  # symlink followed
    assert got.read_file("/missing") is None
    assert read_archive(out, WASI).manifest_digest == image.manifest.digest


def test_reader_checks_platform_and_digests(tmp_path: Path) -> None:
    out = tmp_path / "hello.tar"
    write_archive(_image(), "hello", out)
    with pytest.raises(InvalidArgument, match="no image for platform linux/amd64"):
        read_archive(out, Platform("linux", "amd64"))

    # Corrupt one blob: the reader must notice rather than return wrong content.
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(out) as src, tarfile.open(tampered, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            if m.name.startswith("blobs/sha256/") and b"schemaVersion" in data:
                data = data.replace(b"schemaVersion", b"schemaVersioN")
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if m.isfile() else None)
    with pytest.raises(InvalidArgument, match="does not match its digest"):
        read_archive(tampered)


def test_reader_rejects_non_archives(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(InvalidArgument, match="junk.tar"):
        read_archive(junk)
    with pytest.raises(InvalidArgument, match="no such file"):
        read_archive(tmp_path / "missing.tar")
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    with pytest.raises(InvalidArgument, match="no index.json"):
        read_archive(empty)


def test_linux_busybox_like_image(tmp_path: Path) -> None:
    fake = tmp_path / "busybox"
    fake.write_bytes(b"\x7fELF")
    fake.chmod(0o755)
    image = build_image(
        files={"/bin/busybox": fake, "/bin/sh": Symlink("busybox")},
        entrypoint=["/bin/busybox"],
        cmd=["echo", "hi"],
        platform=Platform("linux", "amd64"),
    )
    out = tmp_path / "bb.tar"
    write_archive(image, "pw-busybox", out)
    got = read_archive(out)
    assert str(got.platform) == "linux/amd64"
    assert got.read_file("/bin/sh") == b"\x7fELF"
    assert (
        hashlib.sha256(out.read_bytes()).digest()
        == hashlib.sha256(archive_bytes(image, "pw-busybox")).digest()
    )


def test_digest_only_reference_has_no_tag_names() -> None:
    digest = "sha256:" + "cd" * 32
    with tarfile.open(fileobj=io.BytesIO(archive_bytes(_image(), f"hello@{digest}"))) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        assert "manifest.json" not in tar.getnames()
    assert index["manifests"][0]["annotations"] == {
        mediatypes.ANNOTATION_IMAGE_NAME: f"docker.io/library/hello@{digest}"
    }


def test_docker_repo_tags_are_familiar_and_digest_free() -> None:
    ref = "localhost:5000/a/b:v1@sha256:" + "ef" * 32
    with tarfile.open(fileobj=io.BytesIO(archive_bytes(_image(), ref))) as tar:
        docker = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert docker[0]["RepoTags"] == ["localhost:5000/a/b:v1"]
