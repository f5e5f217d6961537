"""`pywasm import`: hand an OCI archive to containerd through `ctr images import`.

ctr filters an import by the host's platform, so a `wasi/wasm` image would silently import as
nothing; we pass the platform ourselves. ctr is used rather than containerd's Transfer API so
that the command works the same against containerd 1.6 and 2.x.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pywasmd.errors import InvalidArgument, Unavailable
from pywasmd.image import artifact
from pywasmd.image.build import WASI
from pywasmd.image.content import ArchivedContent

_TIMEOUT = 600


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
        hint = ""
        if "connect" in detail and ("no such file" in detail or "refused" in detail):
            hint = f"; is containerd running on {address}? (pass --address)"
        raise Unavailable(f"ctr images import {path} failed: {detail}{hint}")
    return f"imported {archived.reference} ({archived.content.root.digest}) into {namespace}"
