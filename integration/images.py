"""Build the test images and import them into a private containerd.

- one wasi/wasm image per guest, `docker.io/library/pw-<name>:latest`, made by the product's own
  `pywasm build` CLI (falls back to integration/ociarchive.py while the CLI does not exist yet);
- `docker.io/library/pw-badwasm:latest`, whose entrypoint `/bad.wasm` is not Wasm;
- `docker.io/library/pw-busybox:latest`, linux/amd64, for runc.

Archives are cached under .cache/images/ by content; importing is per containerd.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path

from integration import guests, ociarchive
from integration.containerd import VENV_BIN, Containerd

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "images"
BUSYBOX = "docker.io/library/pw-busybox:latest"
BADWASM = "docker.io/library/pw-badwasm:latest"
BADWASM_PATH = "/bad.wasm"


def ref(name: str) -> str:
    return f"docker.io/library/pw-{name}:latest"


def have_cli() -> bool:
    return importlib.util.find_spec("pywasmd.cli") is not None


def _key(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def build_wasm_archive(name: str, module: Path) -> Path:
    """Build the OCI archive of guest `name` with `pywasm build`; cached by module content."""
    data = module.read_bytes()
    if not have_cli():
        out = CACHE / f"pw-{name}-{_key(data, b'ociarchive')}.tar"
        if not out.exists():
            image = ociarchive.wasm_image(ref(name), f"/{name}.wasm", data)
            ociarchive.write(image, out)
        return out
    cli = REPO / "pywasmd" / "cli.py"
    image_src = b"".join(p.read_bytes() for p in sorted((REPO / "pywasmd" / "image").glob("*.py")))
    out = CACHE / f"pw-{name}-{_key(data, cli.read_bytes(), image_src)}.tar"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.tar")
    argv = [str(VENV_BIN / "pywasm"), "build", str(module), "-t", ref(name), "-o", str(tmp)]
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
    tmp.replace(out)
    return out


def build_busybox_archive() -> Path:
    data = Path("/bin/busybox").read_bytes()
    out = CACHE / f"pw-busybox-{_key(data, b'v1')}.tar"
    if not out.exists():
        ociarchive.write(ociarchive.busybox_image(BUSYBOX), out)
    return out


def build_badwasm_archive() -> Path:
    data = b"this is not a WebAssembly module\n"
    out = CACHE / f"pw-badwasm-{_key(data)}.tar"
    if not out.exists():
        ociarchive.write(ociarchive.wasm_image(BADWASM, BADWASM_PATH, data), out)
    return out


def build_archives() -> dict[str, Path]:
    """Every test image as image reference -> OCI archive."""
    archives = {ref(name): build_wasm_archive(name, m) for name, m in guests.build_all().items()}
    archives[BADWASM] = build_badwasm_archive()
    archives[BUSYBOX] = build_busybox_archive()
    return archives


def archive_entrypoint(archive: Path) -> list[str]:
    """Entrypoint + Cmd of the (single) image in an OCI archive."""
    with tarfile.open(archive) as tar:

        def blob(digest: str) -> dict[str, object]:
            f = tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1])
            assert f is not None, f"{archive}: blob {digest} is not a file"
            return json.load(f)  # type: ignore[no-any-return]

        f = tar.extractfile("index.json")
        assert f is not None, f"{archive}: no index.json"
        desc = json.load(f)["manifests"][0]
        while desc.get("mediaType", "").endswith("index.v1+json"):
            desc = blob(desc["digest"])["manifests"][0]  # type: ignore[index]
        manifest = blob(desc["digest"])
        config = blob(manifest["config"]["digest"])  # type: ignore[index]
    c = config.get("config") or {}
    assert isinstance(c, dict)
    return list(c.get("Entrypoint") or []) + list(c.get("Cmd") or [])


@functools.cache
def module(name: str) -> str:
    """Path of guest `name`'s module inside its image (the image's entrypoint).

    `ctr run IMAGE ID ARGS...` replaces the image's entrypoint and command with ARGS (ctr's
    WithProcessArgs), so a run that passes arguments must name the module first.
    """
    archive = build_wasm_archive(name, guests.build(name))
    argv = archive_entrypoint(archive)
    if not argv:
        raise RuntimeError(f"{archive}: image {ref(name)} has neither Entrypoint nor Cmd")
    return argv[0]


def import_archive(ctrd: Containerd, image: str, archive: Path) -> None:
    platform = ["--platform", "linux/amd64"] if image == BUSYBOX else ["--platform", "wasi/wasm"]
    r = ctrd.ctr("images", "import", *platform, str(archive), timeout=120)
    if r.returncode != 0:
        raise RuntimeError(
            f"ctr images import {archive} ({image}) on containerd {ctrd.version} failed:\n"
            f"{r.stdout}{r.stderr}"
        )
    listed = ctrd.ctr("images", "ls", "-q", timeout=30).stdout.split()
    if image not in listed:
        raise RuntimeError(
            f"after importing {archive}, containerd {ctrd.version} does not list {image}; "
            f"it lists {listed}; import said:\n{r.stdout}{r.stderr}"
        )


def import_all(ctrd: Containerd, archives: dict[str, Path] | None = None) -> dict[str, Path]:
    archives = archives or build_archives()
    for image, archive in archives.items():
        import_archive(ctrd, image, archive)
    return archives


def main() -> None:
    for image, archive in build_archives().items():
        print(f"{image:45} {archive}")
    if not have_cli():
        print("note: pywasmd.cli is missing; wasm images came from integration/ociarchive.py")


if __name__ == "__main__":
    sys.exit(main())
