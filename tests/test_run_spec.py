"""The pure parts of `pywasm run`: option parsing, the OCI spec it builds, chain ids, platform
choice and the GC labels of stored blobs (the command itself runs against real containerds in
integration/test_run_cli.py)."""

from __future__ import annotations

import hashlib
import json

import pytest

from pywasmd.client import run as r
from pywasmd.client.spec import (
    ImageConfig,
    Mount,
    RunOptions,
    build_spec,
    parse_size,
    parse_tmpfs,
    parse_user,
    parse_volume,
    process_args,
)
from pywasmd.errors import InvalidArgument


def test_parse_volume() -> None:
    assert parse_volume("/srv:/data:ro") == Mount("/data", "/srv", readonly=True)
    assert parse_volume("/srv:/data") == Mount("/data", "/srv")
    for bad, why in [
        ("srv:/data", "must be absolute"),
        ("/srv:data", "must be absolute"),
        ("/srv:/data:rx", "the mode must be ro or rw"),
        ("/srv", "expected SRC:DST"),
    ]:
        with pytest.raises(InvalidArgument, match=why):
            parse_volume(bad)


def test_parse_size_user_tmpfs() -> None:
    assert parse_size("64m", "--memory") == 64 << 20
    assert parse_size("1g", "--memory") == 1 << 30
    assert parse_size("4096", "--memory") == 4096
    with pytest.raises(InvalidArgument, match="expected a size"):
        parse_size("lots", "--memory")
    assert parse_user("1000:1000") == (1000, 1000)
    assert parse_user("5") == (5, 0)
    with pytest.raises(InvalidArgument, match="numeric ids"):
        parse_user("nobody")
    t = parse_tmpfs("/tmp:size=8m")
    assert t.to_json() == {
        "destination": "/tmp",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", "size=8m"],
    }


def test_args_follow_docker() -> None:
    image = ImageConfig(entrypoint=("/app.wasm",), cmd=("default",))
    assert process_args(image, ()) == ["/app.wasm", "default"]
    assert process_args(image, ("x",)) == ["/app.wasm", "x"]
    with pytest.raises(InvalidArgument, match="no entrypoint or command"):
        process_args(ImageConfig(), ())


def test_spec_layers_image_then_options() -> None:
    image = ImageConfig(
        entrypoint=("/app.wasm",), env=("A=image", "B=image"), working_dir="/w", user="7:8"
    )
    opts = RunOptions(
        args=("a",),
        env=("B=user",),
        mounts=(Mount("/data", "/srv", readonly=True),),
        memory=64 << 20,
        cpus=0.5,
        annotations={"pywasm.io/engine": "wasmer"},
        net_host=True,
    )
    spec = build_spec("c1", "ns", image, opts)
    json.dumps(spec)  # JSON-able as containerd needs it
    p = spec["process"]
    assert p["args"] == ["/app.wasm", "a"]
    assert p["env"][1:] == ["A=image", "B=user"]
    assert p["env"][0].startswith("PATH=")
    assert p["cwd"] == "/w"
    assert p["user"] == {"uid": 7, "gid": 8}
    assert spec["linux"]["cgroupsPath"] == "/ns/c1"
    assert {"type": "network"} not in spec["linux"]["namespaces"]
    assert spec["linux"]["resources"]["memory"] == {"limit": 64 << 20}
    assert spec["linux"]["resources"]["cpu"] == {"period": 100000, "quota": 50000}
    assert spec["annotations"] == {"pywasm.io/engine": "wasmer"}
    assert spec["mounts"][-1] == {
        "destination": "/data",
        "type": "bind",
        "source": "/srv",
        "options": ["rbind", "ro"],
    }
    default = build_spec("c2", "default", image, RunOptions(terminal=True))
    assert {"type": "network"} in default["linux"]["namespaces"]
    assert "TERM=xterm" in default["process"]["env"]
    assert default["process"]["terminal"] is True


def test_chain_ids_match_the_oci_rule() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    chain = r.chain_ids([a, b])
    assert chain[0] == a
    assert chain[1] == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()


def _entry(os_: str, arch: str, **extra: object) -> dict[str, object]:
    return {"digest": f"sha256:{os_}", "platform": {"os": os_, "architecture": arch}, **extra}


def test_pick_manifest() -> None:
    attestation = {
        "digest": "sha256:att",
        "platform": {"os": "unknown", "architecture": "unknown"},
        "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
    }
    index = {"manifests": [_entry("linux", "amd64"), _entry("wasi", "wasm"), attestation]}
    assert r.pick_manifest(index, None, "x")["digest"] == "sha256:wasi"
    assert r.pick_manifest(index, "linux/amd64", "x")["digest"] == "sha256:linux"
    with pytest.raises(InvalidArgument, match="no image for platform linux/arm64"):
        r.pick_manifest(index, "linux/arm64", "x")
    only_attested = {"manifests": [_entry("wasi", "wasm"), attestation]}
    assert r.pick_manifest(only_attested, None, "x")["digest"] == "sha256:wasi"


def test_gc_labels() -> None:
    manifest = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"digest": "sha256:c"},
        "layers": [{"digest": "sha256:l0"}, {"digest": "sha256:l1"}],
    }
    labels = r._gc_labels(manifest["mediaType"], json.dumps(manifest).encode(), None)  # type: ignore[arg-type]
    assert labels == {
        "containerd.io/gc.ref.content.config": "sha256:c",
        "containerd.io/gc.ref.content.l.0": "sha256:l0",
        "containerd.io/gc.ref.content.l.1": "sha256:l1",
    }
    config = r._gc_labels("application/vnd.oci.image.config.v1+json", b"{}", "sha256:top")
    assert config == {"containerd.io/gc.ref.snapshot.overlayfs": "sha256:top"}


def test_local_names_and_targets() -> None:
    from pathlib import Path

    name = r.local_image_name(Path("/x/My App.wasm"), b"\0asm\1\0\0\0")
    assert name.startswith("pywasm.local/my-app:")
    assert r.is_local_module("./a.wasm")
    assert r.is_local_module("a.wasm")
    assert not r.is_local_module("127.0.0.1:5000/hello:1")
