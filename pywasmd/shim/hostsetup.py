"""Preparing what a plan's grants need on the host, and removing it again."""

from __future__ import annotations

import os
import shutil

from pywasmd.oci.grants import HostSetup
from pywasmd.paths import SCRATCH
from pywasmd.shim import mounts


def scratch_dir(bundle: str) -> str:
    return os.path.join(bundle, SCRATCH)


def prepare(setups: tuple[HostSetup, ...]) -> None:
    for setup in setups:
        os.makedirs(setup.target, mode=0o755, exist_ok=True)
        if setup.kind == "tmpfs":
            mounts.mount_tmpfs(setup.target, setup.size, setup.readonly)
        elif setup.kind == "file":
            inside = os.path.join(setup.target, setup.name)
            with open(inside, "a", encoding="utf-8"):
                pass
            mounts.bind_file(setup.source, inside, setup.readonly)


def release(bundle: str) -> None:
    """Unmount and remove the scratch directory; a no-op when there is none."""
    scratch = scratch_dir(bundle)
    if not os.path.isdir(scratch):
        return
    mounts.unmount_under(scratch)
    shutil.rmtree(scratch, ignore_errors=True)
