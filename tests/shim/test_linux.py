"""The runc driver's error reading: runc's JSON log is the message, its meaning the class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pywasmd.errors import Internal, NotFound, Unavailable
from pywasmd.shim import linux


def _log(bundle: Path, *entries: dict[str, str]) -> None:
    (bundle / "pywasm-runc.log").write_text("".join(json.dumps(e) + "\n" for e in entries))


def test_runc_failure_is_the_hosts_with_runcs_last_error(tmp_path: Path) -> None:
    _log(
        tmp_path,
        {"level": "error", "msg": "an earlier one"},
        {"level": "warning", "msg": "not this"},
        {"level": "error", "msg": "unable to apply cgroup configuration"},
        {"level": "info", "msg": "nor this"},
    )
    err = linux._runc_error("create", str(tmp_path), "")
    assert isinstance(err, Internal)
    assert err.message == "runc create failed: unable to apply cgroup configuration"


def test_a_gone_container_is_not_found(tmp_path: Path) -> None:
    _log(tmp_path, {"level": "error", "msg": "container does not exist"})
    assert isinstance(linux._runc_error("kill", str(tmp_path), ""), NotFound)
    # Not for create: a create that says so is runc's own trouble.
    assert isinstance(linux._runc_error("create", str(tmp_path), ""), Internal)


def test_without_a_log_the_output_or_a_pointer_to_the_shim_log(tmp_path: Path) -> None:
    assert linux._runc_error("start", str(tmp_path), "boom").message == "runc start failed: boom"
    assert "see the shim log" in linux._runc_error("start", str(tmp_path), "").message


def test_no_runc_on_the_node_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linux.shutil, "which", lambda _name: None)
    monkeypatch.setattr(linux.paths, "find_binary", lambda _name: None)
    with pytest.raises(Unavailable, match="apt-get install runc"):
        linux.find_runc()
    assert linux.find_runc("/opt/runc") == "/opt/runc"
