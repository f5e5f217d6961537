"""The packaging snippets load into the real daemons: containerd 1.6.20 and 2.1.9 (`config dump`
of a config holding the snippet shows the pywasm runtime) and Docker 28 (`dockerd --validate`).
Docker's `runtimes.pywasm` entry is also used for real by test_docker (`--runtime pywasm`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from integration.containerd import flavor
from integration.docker import DOCKERD
from pywasmd import nodesetup


@pytest.mark.parametrize("version", ["1.6", "2.1"])
def test_containerd_loads_the_cri_snippet(version: str, tmp_path: Path) -> None:
    binary = flavor(version).containerd
    if not binary.exists():
        pytest.fail(f"{binary} is missing (make install)", pytrace=False)
    major = int(version.split(".")[0])
    config = tmp_path / "config.toml"
    result = nodesetup.install("containerd", config, major)
    assert result.changed
    r = subprocess.run(
        [str(binary), "--config", str(config), "config", "dump"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    plugin = "io.containerd.grpc.v1.cri" if major == 1 else "io.containerd.cri.v1.runtime"
    header = [
        line.strip()
        for line in r.stdout.splitlines()
        if line.strip().endswith(".containerd.runtimes.pywasm]")
    ]
    assert header, r.stdout[-3000:]
    assert plugin in header[0]
    assert "runtime_type = 'io.containerd.pywasm.v1'" in r.stdout or (
        'runtime_type = "io.containerd.pywasm.v1"' in r.stdout
    )


def test_dockerd_validates_the_daemon_json(tmp_path: Path) -> None:
    if not DOCKERD.exists():
        pytest.fail(f"{DOCKERD} is missing (scripts/fetch-docker.sh)", pytrace=False)
    daemon = tmp_path / "daemon.json"
    nodesetup.install("docker", daemon)
    # Debian's dockerd has no userland-proxy-path default; the snippet does not touch it.
    r = subprocess.run(
        [str(DOCKERD), "--validate", "--userland-proxy=false", "--config-file", str(daemon)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "configuration OK" in r.stdout + r.stderr
