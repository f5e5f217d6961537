"""Images of the CRI tests, imported into containerd's `k8s.io` namespace (CRI's).

- `docker.io/library/pw-pause:latest`: the pod sandbox image, linux/amd64, entrypoint `/pause`
  (integration/native/pause.c compiled static for x86_64-linux-musl with zig), packed by the
  project's own image builder (`pywasmd.image.build`). containerd is configured to use it as
  its sandbox image, so no pause image is ever pulled.
- the Wasm guests' images (wasi/wasm) and the busybox image (linux/amd64) of images.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from integration import bench_node, images
from integration.containerd import PAUSE_IMAGE, Containerd
from integration.cri import K8S_NAMESPACE

NATIVE_SOURCES = Path(__file__).resolve().parent / "native"
PAUSE_PATH = "/pause"
#: guests the CRI tests run (images.ref(name)), besides busybox and pause
WASM_GUESTS = ("hello", "sleep", "loop")


def pause_binary() -> Path:
    """integration/native/pause.c as a static x86_64-linux-musl executable (-O2 -s)."""
    return bench_node.build_native(NATIVE_SOURCES / "pause.c", "pause")


def build_pause_archive() -> Path:
    from pywasmd.image.build import File, Platform, build_image
    from pywasmd.image.layout import write_archive

    data = pause_binary().read_bytes()
    out = images.CACHE / f"pw-pause-{hashlib.sha256(data).hexdigest()[:16]}.tar"
    if not out.exists():
        images.CACHE.mkdir(parents=True, exist_ok=True)
        image = build_image(
            files={PAUSE_PATH: File(data, 0o755)},
            entrypoint=[PAUSE_PATH],
            platform=Platform("linux", "amd64"),
        )
        tmp = out.with_suffix(".tmp")
        write_archive(image, PAUSE_IMAGE, tmp)
        tmp.replace(out)
    return out


def import_image(ctrd: Containerd, image: str, archive: Path, platform: str) -> None:
    """`ctr -n k8s.io images import --platform PLATFORM ARCHIVE`, checked."""
    r = ctrd.ctr(
        "images",
        "import",
        "--platform",
        platform,
        str(archive),
        namespace=K8S_NAMESPACE,
        timeout=120,
    )
    if r.returncode != 0:
        raise RuntimeError(
            f"ctr -n {K8S_NAMESPACE} images import {archive} ({image}) on containerd "
            f"{ctrd.version} failed:\n{r.stdout}{r.stderr}"
        )
    listed = ctrd.ctr("images", "ls", "-q", namespace=K8S_NAMESPACE, timeout=30).stdout.split()
    if image not in listed:
        raise RuntimeError(
            f"after importing {archive}, containerd {ctrd.version} does not list {image} in "
            f"namespace {K8S_NAMESPACE}; it lists {listed}"
        )


def import_cri_images(ctrd: Containerd, archives: dict[str, Path]) -> dict[str, Path]:
    """Import pause, busybox and the WASM_GUESTS into k8s.io; returns image -> archive."""
    wanted = {
        PAUSE_IMAGE: (build_pause_archive(), "linux/amd64"),
        images.BUSYBOX: (archives[images.BUSYBOX], "linux/amd64"),
    }
    for name in WASM_GUESTS:
        wanted[images.ref(name)] = (archives[images.ref(name)], "wasi/wasm")
    for image, (archive, platform) in wanted.items():
        import_image(ctrd, image, archive, platform)
    return {image: archive for image, (archive, _) in wanted.items()}
