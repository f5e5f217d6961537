"""`pywasm import`: hand an OCI archive to containerd through `ctr images import`.

ctr filters an import by the host's platform, so a `wasi/wasm` image would silently import as
nothing; we pass the platform ourselves. ctr is used rather than containerd's Transfer API so
that the command works the same against containerd 1.6 and 2.x.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from pywasmd.errors import InvalidArgument, Unavailable
from pywasmd.image import artifact
from pywasmd.image.build import WASI
from pywasmd.image.content import ArchivedContent

_TIMEOUT = 600
_OLD_CONTAINERD = "mismatched image rootfs and manifest layers"


def import_archive(
    archived: ArchivedContent,
    path: Path,
    *,
    ctr: str,
    address: str,
    namespace: str,
    all_platforms: bool,
) -> str:
    binary = shutil.which(ctr)
    if binary is None:
        raise Unavailable(f"{ctr}: not found; install containerd's ctr or pass --ctr PATH")
    if not os.path.exists(address):
        # ctr would spend its whole dial timeout finding this out.
        raise Unavailable(f"no containerd socket at {address}; is containerd running? (--address)")
    manifests = archived.content.manifests()
    has_wasm = any(d.platform == WASI or artifact.is_artifact_manifest(m) for d, m in manifests)
    argv = [binary, "--address", address, "--namespace", namespace, "images", "import"]
    if all_platforms:
        argv.append("--all-platforms")
    elif has_wasm:
        argv += ["--platform", str(WASI)]
    else:
        raise InvalidArgument(
            f"{path}: the archive holds no wasi/wasm image; pass --all-platforms to import "
            "it anyway"
        )
    argv.append(str(path))
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"ctr images import {path} did not finish in {_TIMEOUT}s") from None
    if r.returncode != 0:
        detail = (r.stderr or r.stdout).strip()
        if _OLD_CONTAINERD in detail and archived.reference:
            # ctr has stored the image record before failing to unpack it: take it back out,
            # so a failed import leaves nothing behind.
            rm = [binary, "--address", address, "--namespace", namespace, "images", "rm"]
            subprocess.run([*rm, archived.reference], capture_output=True, timeout=60, check=False)
            raise Unavailable(
                f"this containerd cannot import {path}: it predates support for images with "
                "Wasm layers (containerd 1.6.25, 1.7.7 and 2.0 have it; ctr said: "
                f"{_OLD_CONTAINERD}); upgrade containerd, or rebuild with --format image"
            )
        hint = ""
        if "connect" in detail and ("no such file" in detail or "refused" in detail):
            hint = f"; is containerd running on {address}? (pass --address)"
        raise Unavailable(f"ctr images import {path} failed: {detail}{hint}")
    return f"imported {archived.reference} ({archived.content.root.digest}) into {namespace}"
