"""Wasm images and Wasm OCI artifacts through a real registry and real containerd.

`pywasm build … --push` to Debian's docker-registry on 127.0.0.1, `ctr images pull
--plain-http`, `ctr run` with the pywasm shim; `pywasm pull`/`inspect` against the same
registry; one multi-platform tag run by pywasm and by runc; and the bad inputs, each a clear
error that leaves nothing behind.

ctr refuses to make a container from an artifact ("unknown image config media type
application/vnd.wasm.config.v0+json"), so artifacts run as `ctr run --rootfs EMPTY` with the
container label `io.pywasm.image=REF`: the shim reads the module from the content store.
containerd 1.6.20 pulls the artifact's content but fails to unpack it ("mismatched image
rootfs and manifest layers", fixed in 1.6.25/1.7.7/2.0); the content path still works there.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration import guests, images
from integration.containerd import VENV_BIN, Containerd, new_id, run
from integration.registry import LocalRegistry

PYWASM = "io.containerd.pywasm.v1"
RUNC = "io.containerd.runc.v2"
IMAGE_LABEL = "io.pywasm.image"


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    with LocalRegistry() as r:
        yield r


@pytest.fixture(scope="module")
def hello() -> Path:
    return guests.build("hello")


@pytest.fixture(scope="module")
def echo_args() -> Path:
    return guests.build("args")


def pywasm(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    argv = [str(VENV_BIN / "pywasm"), *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def ok(r: subprocess.CompletedProcess[Any]) -> subprocess.CompletedProcess[Any]:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r


def fails(r: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert r.returncode == code, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert r.stderr.startswith("pywasm: error: "), r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr
    return r.stderr


def tags(registry: LocalRegistry, repo: str) -> list[str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{registry.host}/v2/{repo}/tags/list") as resp:
            return list(json.load(resp).get("tags") or [])
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []
        raise


def ctr_pull(ctrd: Containerd, ref: str, *platforms: str) -> subprocess.CompletedProcess[Any]:
    flags = [f"--platform={p}" for p in platforms or ("wasi/wasm",)]
    return ctrd.ctr("images", "pull", "--plain-http", *flags, ref, timeout=120)


def run_artifact(
    ctrd: Containerd, ref: str, cid: str, tmp: Path, *args: str
) -> subprocess.CompletedProcess[Any]:
    root = tmp / "empty-root"
    root.mkdir(exist_ok=True)
    return ctrd.ctr(
        "run",
        "--rm",
        "--runtime",
        PYWASM,
        "--rootfs",
        "--label",
        f"{IMAGE_LABEL}={ref}",
        str(root),
        cid,
        *args,
        timeout=60,
    )


def remove_image(ctrd: Containerd, ref: str) -> None:
    ctrd.ctr("images", "rm", ref, timeout=30)


# --- the happy paths --------------------------------------------------------------------------


def test_compat_image_build_push_pull_run(
    containerd: Containerd, registry: LocalRegistry, hello: Path
) -> None:
    ref = f"{registry.host}/compat-{containerd.version.replace('.', '')}:1"
    r = ok(pywasm("build", hello, "-t", ref, "--push", "--insecure"))
    assert f"pushed {ref}@sha256:" in r.stdout
    try:
        ok(ctr_pull(containerd, ref))
        r = run(containerd, ref, new_id("reg-compat"))
        assert r.returncode == 0, r.stderr
        assert r.stdout == "hello from wasm\n"
    finally:
        remove_image(containerd, ref)


def test_artifact_build_push_pull_run(
    containerd: Containerd, registry: LocalRegistry, echo_args: Path, tmp_path: Path
) -> None:
    ref = f"{registry.host}/artifact-{containerd.version.replace('.', '')}:1"
    ok(pywasm("build", echo_args, "-t", ref, "--format", "artifact", "--push", "--insecure"))
    try:
        pulled = ctr_pull(containerd, ref)
        if containerd.version == "1.6":
            # 1.6.20 stores the content, then fails to unpack the Wasm layer.
            assert pulled.returncode != 0
            assert "mismatched image rootfs and manifest layers" in pulled.stderr
        else:
            ok(pulled)
        cid = new_id("reg-artifact")
        r = run_artifact(containerd, ref, cid, tmp_path, "args.wasm", "one", "two")
        assert r.returncode == 0, r.stderr
        assert r.stdout == "argv[0]=args.wasm\nargv[1]=one\nargv[2]=two\n"
        leases = containerd.ctr("leases", "ls", "-q", timeout=20).stdout.split()
        assert f"pywasm.{cid}" not in leases
    finally:
        remove_image(containerd, ref)


def test_import_artifact_archive(
    containerd: Containerd, registry: LocalRegistry, hello: Path, tmp_path: Path
) -> None:
    ref = f"{registry.host}/imported-{containerd.version.replace('.', '')}:1"
    out = tmp_path / "a.tar"
    ok(pywasm("build", hello, "-t", ref, "--format", "artifact", "-o", out))
    argv = ["import", out, "--address", containerd.address, "--ctr", str(containerd.flavor.ctr)]
    r = pywasm(*argv)
    listed = containerd.ctr("images", "ls", "-q", timeout=20).stdout.split()
    try:
        if containerd.version == "1.6":
            fails(r, 1, "predates support for images with Wasm layers", "--format image")
            assert ref not in listed  # the half-imported record was taken back out
        else:
            ok(r)
            assert ref in listed
            r = run_artifact(containerd, ref, new_id("imp-artifact"), tmp_path, "hello.wasm")
            assert r.returncode == 0, r.stderr
            assert r.stdout == "hello from wasm\n"
    finally:
        remove_image(containerd, ref)


def test_pull_gives_identical_digests_and_inspect_shows_fields(
    registry: LocalRegistry, hello: Path, tmp_path: Path
) -> None:
    for kind in ("image", "artifact"):
        ref = f"{registry.host}/roundtrip-{kind}:1"
        built, pulled = tmp_path / f"{kind}.tar", tmp_path / f"{kind}-pulled.tar"
        ok(pywasm("build", hello, "-t", ref, "--format", kind, "-o", built, "--push", "--insecure"))
        ok(pywasm("pull", ref, "-o", pulled, "--insecure"))
        assert _blobs(built) == _blobs(pulled)
        assert _root(built) == _root(pulled)
        assert built.read_bytes() == pulled.read_bytes()  # the whole archive, byte for byte
        fields = _inspect(ok(pywasm("inspect", ref, "--insecure")).stdout)
        assert fields["platform"] == "wasi/wasm"
        assert fields["module digest"] == _digest(hello.read_bytes())
        assert fields["wasi"] == "wasip1 (core module)"
        assert fields["imports"].startswith("wasi_snapshot_preview1 (")
        if kind == "artifact":
            assert fields["kind"] == "Wasm OCI artifact"
            assert fields["config type"] == "application/vnd.wasm.config.v0+json"
            assert fields["layer type"] == "application/wasm"
            assert fields["module"] == f"hello.wasm ({hello.stat().st_size} bytes)"
        else:
            assert fields["module"] == f"/hello.wasm ({hello.stat().st_size} bytes)"
        assert _inspect(ok(pywasm("inspect", pulled)).stdout) == fields


def test_multi_platform_tag_runs_under_both_runtimes(
    containerd: Containerd, registry: LocalRegistry, hello: Path, tmp_path: Path
) -> None:
    ref = f"{registry.host}/multi-{containerd.version.replace('.', '')}:1"
    busybox = images.build_busybox_archive()
    ok(pywasm("build", hello, "-t", ref, "--index", busybox, "--push", "--insecure"))
    fields = _inspect(ok(pywasm("inspect", ref, "--insecure")).stdout)
    assert fields["platforms"] == "wasi/wasm, linux/amd64"
    built, pulled = tmp_path / "built.tar", tmp_path / "pulled.tar"
    ok(pywasm("build", hello, "-t", ref, "--index", busybox, "-o", built))
    ok(pywasm("pull", ref, "-o", pulled, "--insecure"))
    assert _root(built) == _root(pulled)
    assert _blobs(built) == _blobs(pulled)
    try:
        ok(ctr_pull(containerd, ref, "wasi/wasm", "linux/amd64"))
        r = run(containerd, ref, new_id("multi-wasm"))
        assert r.returncode == 0, r.stderr
        assert r.stdout == "hello from wasm\n"
        r = run(containerd, ref, new_id("multi-runc"), "echo", "from linux", runtime=RUNC)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "from linux\n"
    finally:
        remove_image(containerd, ref)


# --- bad inputs: each a clear error, nothing half-written -------------------------------------


def test_not_wasm_and_truncated_module(
    registry: LocalRegistry, hello: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "app.wasm"
    out = tmp_path / "out.tar"
    cases = {
        "not-wasm": (b"\x7fELF\x02\x01\x01\x00", "not a WebAssembly binary"),
        "truncated": (hello.read_bytes()[: hello.stat().st_size // 2], "truncated"),
    }
    for name, (data, needle) in cases.items():
        bad.write_bytes(data)
        ref = f"{registry.host}/bad-{name}:1"
        for kind in ("image", "artifact"):
            r = pywasm("build", bad, "-t", ref, "--format", kind, "-o", out, "--push", "--insecure")
            fails(r, 2, str(bad), needle)
            assert not out.exists()
            assert tags(registry, f"bad-{name}") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.wasm"]


def test_registry_down_is_a_fast_clear_error(hello: Path, tmp_path: Path) -> None:
    down = LocalRegistry()
    host = down.host  # a free port nobody listens on
    down.close()
    out = tmp_path / "pulled.tar"
    t0 = time.monotonic()
    err = fails(
        pywasm("build", hello, "-t", f"{host}/x:1", "--push", "--insecure"),
        1,
        f"cannot reach registry {host}: connection refused; is it running?",
    )
    assert "--insecure" not in err  # already given
    fails(pywasm("pull", f"{host}/x:1", "-o", out), 1, "use --insecure for plain HTTP")
    assert time.monotonic() - t0 < 10, "no retry loop on a refused connection"
    assert not out.exists()


def test_wrong_digest(registry: LocalRegistry, hello: Path, tmp_path: Path) -> None:
    ref = f"{registry.host}/digests:1"
    archive = tmp_path / "a.tar"
    ok(pywasm("build", hello, "-t", ref, "-o", archive))
    # A blob whose content no longer matches its name: push refuses before sending anything.
    tampered = tmp_path / "tampered.tar"
    _tamper_layer(archive, tampered)
    fails(pywasm("push", tampered, ref, "--insecure"), 2, "does not match its digest")
    assert tags(registry, "digests") == []
    # A digest the registry does not have.
    wrong = "sha256:" + "0" * 64
    out = tmp_path / "pulled.tar"
    fails(pywasm("pull", f"{registry.host}/digests@{wrong}", "-o", out, "--insecure"), 2, wrong)
    assert not out.exists()


def test_two_layers_and_unknown_media_type_are_refused_by_the_shim(
    containerd: Containerd, registry: LocalRegistry, hello: Path, tmp_path: Path
) -> None:
    module = hello.read_bytes()
    cases = {
        "two-layers": (
            ["application/wasm", "application/wasm"],
            ["has 2 Wasm layers", "exactly one"],
        ),
        "unknown-type": (
            ["application/vnd.example.unknown"],
            ["'application/vnd.example.unknown'", "accepted: application/wasm"],
        ),
    }
    for name, (layer_types, needles) in cases.items():
        ref = f"{registry.host}/{name}-{containerd.version.replace('.', '')}:1"
        _push_artifact(registry, ref, module, layer_types)
        # pywasm itself refuses to describe it, naming the problem.
        fails(pywasm("inspect", ref, "--insecure"), 2, needles[0])
        ctr_pull(containerd, ref)  # 1.6 fails to unpack but keeps the content
        try:
            cid = new_id(f"bad-{name}")
            r = run_artifact(containerd, ref, cid, tmp_path, "hello.wasm")
            assert r.returncode != 0
            for n in needles:
                assert n in r.stderr, r.stderr
            containers = containerd.ctr("containers", "ls", "-q", timeout=20).stdout.split()
            assert cid not in containers
            leases = containerd.ctr("leases", "ls", "-q", timeout=20).stdout.split()
            assert f"pywasm.{cid}" not in leases
        finally:
            remove_image(containerd, ref)


# --- helpers ----------------------------------------------------------------------------------


def _push_artifact(
    registry: LocalRegistry, ref: str, module: bytes, layer_types: list[str]
) -> None:
    """An artifact our CLI would never build, pushed with the product's registry client."""
    from pywasmd.image import mediatypes
    from pywasmd.image.build import Descriptor, canonical_json, digest_of
    from pywasmd.image.content import Content
    from pywasmd.image.reference import parse_reference
    from pywasmd.image.registry import Registry

    blobs = {digest_of(module): module}
    layers = []
    for i, media_type in enumerate(layer_types):
        data = module if i == 0 else module + b"\0" * i  # distinct blobs, same module
        blobs[digest_of(data)] = data
        layers.append(Descriptor(media_type, digest_of(data), len(data)).to_json())
    config = canonical_json({"architecture": "wasm", "os": "wasip1", "layerDigests": []})
    blobs[digest_of(config)] = config
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.MANIFEST,
            "config": Descriptor(mediatypes.WASM_CONFIG, digest_of(config), len(config)).to_json(),
            "layers": layers,
        }
    )
    blobs[digest_of(manifest)] = manifest
    root = Descriptor(mediatypes.MANIFEST, digest_of(manifest), len(manifest))
    content = Content(root, {d: b for d, b in blobs.items() if d in _referenced(manifest, root)})
    Registry(parse_reference(ref), insecure=True).push(content)


def _referenced(manifest: bytes, root: Any) -> set[str]:
    doc = json.loads(manifest)
    return {root.digest, doc["config"]["digest"], *(d["digest"] for d in doc["layers"])}


def _digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def _members(archive: Path) -> dict[str, bytes]:
    import tarfile

    out = {}
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            if f is not None:
                out[m.name] = f.read()
    return out


def _blobs(archive: Path) -> dict[str, str]:
    return {n: _digest(d) for n, d in _members(archive).items() if n.startswith("blobs/")}


def _root(archive: Path) -> tuple[str, str]:
    entry = json.loads(_members(archive)["index.json"])["manifests"][0]
    return entry["mediaType"], entry["digest"]


def _inspect(stdout: str) -> dict[str, str]:
    rows = (line.split(":", 1) for line in stdout.splitlines())
    return {k.strip(): v.strip() for k, v in rows}


def _tamper_layer(archive: Path, out: Path) -> None:
    import io
    import tarfile

    members = _members(archive)
    index = json.loads(members["index.json"])
    manifest = json.loads(
        members["blobs/sha256/" + index["manifests"][0]["digest"].removeprefix("sha256:")]
    )
    layer = "blobs/sha256/" + manifest["layers"][0]["digest"].removeprefix("sha256:")
    members[layer] = members[layer][:-1] + bytes([members[layer][-1] ^ 0xFF])
    with tarfile.open(out, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
