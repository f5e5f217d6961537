import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from pywasmd.errors import InvalidArgument
from pywasmd.image import mediatypes
from pywasmd.image.build import (
    WASI,
    Directory,
    File,
    Image,
    ImageSpec,
    Platform,
    Symlink,
    build,
    build_image,
    digest_of,
    tree,
)


def _layer_members(image: Image) -> list[tarfile.TarInfo]:
    manifest = json.loads(image.blobs[image.manifest.digest])
    (layer,) = manifest["layers"]
    data = gzip.decompress(image.blobs[layer["digest"]])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def _spec(tmp_path: Path) -> ImageSpec:
    host = tmp_path / "tool"
    host.write_bytes(b"#!/bin/sh\n")
    host.chmod(0o700)
    return ImageSpec(
        files={
            "/app/main.wasm": b"\0asm\1\0\0\0",
            "/usr/bin/tool": host,
            "/etc/conf": File(b"x=1\n", 0o600),
            "/bin/sh": Symlink("/usr/bin/tool"),
            "/data": Directory(0o700),
        },
        entrypoint=["/app/main.wasm"],
        cmd=["--flag"],
        env=["A=1"],
        working_dir="/app",
        labels={"k": "v"},
    )


def test_same_inputs_give_same_digests(tmp_path: Path) -> None:
    first = build(_spec(tmp_path))
    # Rewriting the host file (new mtime, other umask bits) must not change anything.
    (tmp_path / "tool").unlink()
    (tmp_path / "tool").write_bytes(b"#!/bin/sh\n")
    (tmp_path / "tool").chmod(0o751)
    second = build(_spec(tmp_path))
    assert first.manifest == second.manifest
    assert first.blobs == second.blobs


def test_different_inputs_give_different_digests(tmp_path: Path) -> None:
    base = _spec(tmp_path)
    changed = ImageSpec(**{**base.__dict__, "cmd": ["--other"]})
    assert build(base).manifest.digest != build(changed).manifest.digest


def test_blobs_match_their_digests(tmp_path: Path) -> None:
    image = build(_spec(tmp_path))
    for digest, data in image.blobs.items():
        assert digest_of(data) == digest
    assert len(image.blobs) == 3


def test_layer_is_reproducible_tar(tmp_path: Path) -> None:
    image = build(_spec(tmp_path))
    members = _layer_members(image)
    names = [m.name for m in members]
    assert names == [
        "app", "app/main.wasm", "bin", "bin/sh", "data", "etc", "etc/conf",
        "usr", "usr/bin", "usr/bin/tool",
    ]  # fmt: skip
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    assert all(m.uname == "" and m.gname == "" for m in members)
    by_name = {m.name: m for m in members}
    assert by_name["usr"].isdir()
    assert by_name["usr"].mode == 0o755
    assert by_name["data"].isdir()
    assert by_name["data"].mode == 0o700
    assert by_name["usr/bin/tool"].mode == 0o755  # host 0700: exec bit kept, rest fixed
    assert by_name["etc/conf"].mode == 0o600
    assert by_name["app/main.wasm"].mode == 0o644
    assert by_name["bin/sh"].issym()
    assert by_name["bin/sh"].linkname == "/usr/bin/tool"


def test_gzip_header_has_no_name_or_time(tmp_path: Path) -> None:
    image = build(_spec(tmp_path))
    layer = json.loads(image.blobs[image.manifest.digest])["layers"][0]
    header = image.blobs[layer["digest"]][:10]
    assert header[:3] == b"\x1f\x8b\x08"
    assert header[3] & 0x08 == 0  # no FNAME
    assert header[4:8] == b"\0\0\0\0"  # MTIME


def test_config_and_manifest(tmp_path: Path) -> None:
    image = build(_spec(tmp_path))
    manifest = json.loads(image.blobs[image.manifest.digest])
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == mediatypes.MANIFEST
    assert manifest["config"]["mediaType"] == mediatypes.CONFIG
    assert manifest["layers"][0]["mediaType"] == mediatypes.LAYER_TAR_GZIP
    config = json.loads(image.blobs[manifest["config"]["digest"]])
    assert (config["os"], config["architecture"]) == ("wasi", "wasm")
    assert config["config"] == {
        "Entrypoint": ["/app/main.wasm"],
        "Cmd": ["--flag"],
        "Env": ["A=1"],
        "WorkingDir": "/app",
        "Labels": {"k": "v"},
    }
    layer_tar = gzip.decompress(image.blobs[manifest["layers"][0]["digest"]])
    assert config["rootfs"] == {"type": "layers", "diff_ids": [digest_of(layer_tar)]}
    assert "created" not in config
    assert image.manifest.platform == WASI
    assert image.index["manifests"] == [image.manifest.to_json()]
    assert image.index["manifests"][0]["platform"] == {"os": "wasi", "architecture": "wasm"}


def test_linux_image_through_keyword_api(tmp_path: Path) -> None:
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF fake")
    busybox.chmod(0o755)
    image = build_image(
        files={"/bin/busybox": busybox, "/bin/sh": Symlink("busybox")},
        entrypoint=["/bin/busybox"],
        cmd=["echo", "hi"],
        platform=Platform("linux", "amd64"),
    )
    assert image.manifest.platform == Platform("linux", "amd64")
    config = json.loads(image.blobs[image.config.digest])
    assert config["config"] == {"Entrypoint": ["/bin/busybox"], "Cmd": ["echo", "hi"]}
    assert (config["os"], config["architecture"]) == ("linux", "amd64")


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ({"relative": b""}, "absolute"),
        ({"/": b""}, "root"),
        ({"/a//b": b""}, "normalized"),
        ({"/a/../b": b""}, "normalized"),
        ({"/a": b"", "/a/b": b""}, "not a directory"),
        ({"/l": Symlink("")}, "empty"),
        ({"/x": Path("/nonexistent/file")}, "/nonexistent/file"),
    ],
)
def test_rejects_bad_file_sets(files: dict[str, bytes], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        build(ImageSpec(files=files))


def test_rejects_bad_env() -> None:
    with pytest.raises(InvalidArgument, match="NAME=VALUE"):
        build(ImageSpec(files={"/a": b""}, env=["NOEQUALS"]))


def test_platform_parse() -> None:
    assert Platform.parse("wasi/wasm") == WASI
    assert str(Platform.parse("linux/arm/v7")) == "linux/arm/v7"
    for bad in ("wasi", "wasi/", "a/b/c/d"):
        with pytest.raises(InvalidArgument, match="platform"):
            Platform.parse(bad)


def test_tree_mirrors_a_host_directory(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "f").write_text("f")
    (tmp_path / "d" / "link").symlink_to("sub/f")
    files = tree(tmp_path / "d", "/srv/")
    assert files == {
        "/srv": Directory(),
        "/srv/sub": Directory(),
        "/srv/sub/f": tmp_path / "d" / "sub" / "f",
        "/srv/link": Symlink("sub/f"),
    }
    names = [m.name for m in _layer_members(build(ImageSpec(files=files)))]
    assert names == ["srv", "srv/link", "srv/sub", "srv/sub/f"]
