"""`pywasm config`: generated snippets, the files shipped in packaging/, and --install merges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib
import yaml

from pywasmd import nodesetup
from pywasmd.cli import main
from pywasmd.errors import InvalidArgument

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"


@pytest.mark.parametrize(
    ("path", "kind", "version"),
    [
        ("containerd/config-1.x.toml", "containerd", 1),
        ("containerd/config-2.x.toml", "containerd", 2),
        ("docker/daemon.json", "docker", 2),
        ("kubernetes/runtimeclass.yaml", "runtimeclass", 2),
    ],
)
def test_packaging_files_are_what_the_command_prints(path: str, kind: str, version: int) -> None:
    assert (PACKAGING / path).read_text() == nodesetup.snippet(kind, version), (
        f"packaging/{path} is stale: regenerate it with `pywasm config {kind}`"
    )


def test_containerd_layouts() -> None:
    one = tomllib.loads(nodesetup.containerd_snippet(1))
    two = tomllib.loads(nodesetup.containerd_snippet(2))
    entry1 = one["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["pywasm"]
    entry2 = two["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["pywasm"]
    assert (
        entry1
        == entry2
        == {
            "runtime_type": "io.containerd.pywasm.v1",
            # Kubernetes sets no container annotations: pywasm.io/* ones come from the pod.
            "pod_annotations": ["pywasm.io/*"],
        }
    )


def test_runtimeclass_manifest() -> None:
    doc = yaml.safe_load(nodesetup.runtimeclass_manifest())
    assert doc == {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": "pywasm"},
        "handler": "pywasm",
    }


def test_unknown_containerd_version() -> None:
    with pytest.raises(InvalidArgument, match="expected 1"):
        nodesetup.containerd_snippet(3)


def test_install_containerd_appends_once(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('version = 3\n[grpc]\n  address = "/run/x.sock"\n')
    first = nodesetup.install("containerd", config, 2)
    assert first.changed
    doc = tomllib.loads(config.read_text())
    assert doc["grpc"]["address"] == "/run/x.sock"
    nodesetup.check_containerd(config.read_text(), 2)
    text = config.read_text()
    again = nodesetup.install("containerd", config, 2)
    assert not again.changed
    assert config.read_text() == text


def test_install_containerd_new_file(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "config.toml"
    nodesetup.install("containerd", config, 1)
    doc = tomllib.loads(config.read_text())
    assert doc["version"] == 2


def test_install_containerd_refuses_wrong_layout_and_conflicts(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("version = 2\n")
    with pytest.raises(InvalidArgument, match="uses version 3"):
        nodesetup.install("containerd", config, 2)
    config.write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.pywasm]\n'
        '  runtime_type = "io.containerd.other.v1"\n'
    )
    before = config.read_text()
    with pytest.raises(InvalidArgument, match="other settings"):
        nodesetup.install("containerd", config, 1)
    assert config.read_text() == before


def test_install_docker_merges(tmp_path: Path) -> None:
    daemon = tmp_path / "daemon.json"
    daemon.write_text('{"debug": true, "runtimes": {"crun": {"path": "/usr/bin/crun"}}}')
    assert nodesetup.install("docker", daemon).changed
    doc = json.loads(daemon.read_text())
    assert doc["debug"] is True
    assert doc["runtimes"]["crun"] == {"path": "/usr/bin/crun"}
    assert doc["runtimes"]["pywasm"] == {"runtimeType": "io.containerd.pywasm.v1"}
    assert doc["features"]["containerd-snapshotter"] is True
    assert not nodesetup.install("docker", daemon).changed


def test_install_docker_refuses_conflict(tmp_path: Path) -> None:
    daemon = tmp_path / "daemon.json"
    daemon.write_text('{"features": {"containerd-snapshotter": false}}')
    with pytest.raises(InvalidArgument, match="containerd-snapshotter"):
        nodesetup.install("docker", daemon)


def test_cli_prints_and_installs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "containerd", "--version", "2"]) == 0
    assert capsys.readouterr().out == nodesetup.containerd_snippet(2)
    assert main(["config", "runtimeclass"]) == 0
    assert capsys.readouterr().out == nodesetup.runtimeclass_manifest()
    target = tmp_path / "rc.yaml"
    assert main(["config", "runtimeclass", "--install", str(target)]) == 0
    assert target.read_text() == nodesetup.runtimeclass_manifest()
    assert main(["config", "docker", "--version", "1"]) == 2
    assert "--version applies" in capsys.readouterr().err
