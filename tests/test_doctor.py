"""The pure parts of `pywasm doctor`: reading containerd's command line, the config checks on
files, the verdict and its rendering (the whole doctor runs against real containerds in
integration/test_doctor.py)."""

from __future__ import annotations

import json
from pathlib import Path

from pywasmd import doctor, nodesetup
from pywasmd.doctor import FAIL, INFO, OK, WARN, Doctor, Finding, Node


def test_config_from_argv() -> None:
    assert doctor._config_from_argv(["containerd", "--config", "/a.toml"]) == "/a.toml"
    assert doctor._config_from_argv(["containerd", "-c", "/b.toml"]) == "/b.toml"
    assert doctor._config_from_argv(["containerd", "--config=/c.toml"]) == "/c.toml"
    assert doctor._config_from_argv(["containerd"]) is None


def _runtime_config(tmp_path: Path, text: str, major: int) -> Finding:
    config = tmp_path / "config.toml"
    config.write_text(text)
    d = Doctor(Node(address=str(tmp_path / "none.sock"), containerd_config=str(config)))
    d.major = major
    (finding,) = list(d.containerd_config())
    return finding


def test_runtime_config_present_and_missing(tmp_path: Path) -> None:
    good = "version = 2\n" + nodesetup.containerd_snippet(1)
    assert _runtime_config(tmp_path, good, 1).status == OK
    missing = _runtime_config(tmp_path, "version = 2\n", 1)
    assert missing.status == FAIL
    assert missing.fix.startswith("pywasm config containerd --version 1 --install ")
    v3 = "version = 3\n" + nodesetup.containerd_snippet(2)
    assert _runtime_config(tmp_path, v3, 2).status == OK
    assert _runtime_config(tmp_path, v3, 1).status == FAIL


def test_runtime_config_with_cri_disabled_needs_no_entry(tmp_path: Path) -> None:
    text = 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
    assert _runtime_config(tmp_path, text, 1).status == INFO


def test_runtime_config_bad_toml(tmp_path: Path) -> None:
    f = _runtime_config(tmp_path, "version = = 2\n", 1)
    assert f.status == FAIL
    assert "not valid TOML" in f.summary


def test_docker_entry(tmp_path: Path) -> None:
    daemon = tmp_path / "daemon.json"
    node = Node(address="/nonexistent", docker_config=str(daemon), dockerd="/usr/bin/dockerd")
    daemon.write_text("{}")
    statuses = [f.status for f in Doctor(node).docker()]
    assert statuses == [WARN, WARN]
    daemon.write_text(nodesetup.docker_snippet())
    assert [f.status for f in Doctor(node).docker()] == [OK]
    daemon.write_text("{")
    assert [f.status for f in Doctor(node).docker()] == [FAIL]


def test_verdict_and_rendering() -> None:
    findings = [
        Finding("containerd", OK, "containerd 2.1.9"),
        Finding("docker", WARN, "no short name", "pywasm config docker --install X"),
    ]
    assert doctor.healthy(findings)
    text = doctor.render(findings, "/s.sock")
    assert "WARN  docker" in text
    assert "fix: pywasm config docker --install X" in text
    assert text.endswith("this node can run Wasm containers (1 warning(s))")
    findings.append(Finding("shim", FAIL, "not on PATH", "ln -s A B"))
    assert not doctor.healthy(findings)
    doc = json.loads(doctor.to_json(findings, "/s.sock"))
    assert doc["ok"] is False
    assert [f["check"] for f in doc["findings"]] == ["containerd", "docker", "shim"]


def test_cache_writable_and_not(tmp_path: Path) -> None:
    node = Node(address="/nonexistent", cache_dir=str(tmp_path / "new" / "cache"))
    (f,) = list(Doctor(node).cache())
    assert f.status == OK
    assert (tmp_path / "new" / "cache").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("")
    (f,) = list(Doctor(Node(address="/nonexistent", cache_dir=str(blocker / "c"))).cache())
    assert f.status == FAIL
    assert "not writable" in f.summary
