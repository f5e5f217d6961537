"""Build the test images and import them into a private containerd.

- one wasi/wasm image per guest, `docker.io/library/pw-<name>:latest`, made by the product's own
  `pywasm build` CLI;
- `docker.io/library/pw-badwasm:latest`, whose entrypoint `/bad.wasm` is not Wasm (the CLI
  refuses such a module, so it is built with the `pywasmd.image.build` API);
- `docker.io/library/pw-busybox:latest`, linux/amd64 with a static busybox, for runc (also
  through `pywasmd.image.build`).

Archives are cached under .cache/images/ by content (of the input and of the image code);
importing is per containerd.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from integration import guests
from integration.containerd import VENV_BIN, Containerd

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "images"
BUSYBOX = "docker.io/library/pw-busybox:latest"
BADWASM = "docker.io/library/pw-badwasm:latest"
BADWASM_PATH = "/bad.wasm"
BUSYBOX_BINARY = Path("/bin/busybox")


def ref(name: str) -> str:
    return f"docker.io/library/pw-{name}:latest"


def _key(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def _image_code() -> bytes:
    """The product code that makes archives: a change to it invalidates the cache."""
    files = [REPO / "pywasmd" / "cli.py", *sorted((REPO / "pywasmd" / "image").glob("*.py"))]
    return b"".join(p.read_bytes() for p in files)


def build_wasm_archive(name: str, module: Path) -> Path:
    """Build the OCI archive of guest `name` with `pywasm build`; cached by module content."""
    out = CACHE / f"pw-{name}-{_key(module.read_bytes(), _image_code())}.tar"
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


def _write(out: Path, reference: str, **image: Any) -> Path:
    from pywasmd.image.build import build_image
    from pywasmd.image.layout import write_archive

    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        write_archive(build_image(**image), reference, out)
    return out


def build_busybox_archive() -> Path:
    from pywasmd.image.build import Directory, File, Platform, Symlink

    data = BUSYBOX_BINARY.read_bytes()
    files: dict[str, object] = {"/bin/busybox": File(data, 0o755)}
    for applet in ("sh", "echo", "cat", "sleep", "true", "false", "ls", "env"):
        files[f"/bin/{applet}"] = Symlink("busybox")
    files["/tmp"] = Directory(0o1777)
    files["/etc"] = Directory()
    return _write(
        CACHE / f"pw-busybox-{_key(data, _image_code())}.tar",
        BUSYBOX,
        files=files,
        cmd=["/bin/sh"],
        env=["PATH=/bin"],
        platform=Platform("linux", "amd64"),
    )


def build_badwasm_archive() -> Path:
    from pywasmd.image.build import File

    data = b"this is not a WebAssembly module\n"
    return _write(
        CACHE / f"pw-badwasm-{_key(data, _image_code())}.tar",
        BADWASM,
        files={BADWASM_PATH: File(data, 0o755)},
        entrypoint=[BADWASM_PATH],
    )


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


if __name__ == "__main__":
    sys.exit(main())
