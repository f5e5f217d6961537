"""The checked-in pywasmd/api matches proto/, and the v2 and v3 Task APIs are wire-identical."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pywasmd.api.containerd.task.v2 import shim_pb2 as v2
from pywasmd.api.containerd.task.v3 import shim_pb2 as v3
from pywasmd.api.containerd.types import mount_pb2

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_up_to_date() -> None:
    env = {**os.environ, "VENV": sys.prefix}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-proto.sh"), "--check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_v2_create_request_parses_identically_as_v3() -> None:
    request = v2.CreateTaskRequest(
        id="c1",
        bundle="/run/containerd/io.containerd.runtime.v2.task/default/c1",
        rootfs=[mount_pb2.Mount(type="overlay", source="overlay", target="", options=["ro"])],
        terminal=True,
        stdin="/fifo/in",
        stdout="/fifo/out",
        stderr="/fifo/err",
        checkpoint="cp",
        parent_checkpoint="pcp",
    )
    request.options.type_url = "containerd.runc.v1.Options"
    request.options.value = b"\x0a\x01x"
    wire = request.SerializeToString()
    parsed = v3.CreateTaskRequest.FromString(wire)
    assert parsed.SerializeToString() == wire
    assert parsed.id == "c1"
    assert parsed.rootfs[0].options == ["ro"]
    assert parsed.options.type_url == "containerd.runc.v1.Options"
    assert v2.CreateTaskRequest.DESCRIPTOR.full_name == "containerd.task.v2.CreateTaskRequest"
    assert v3.CreateTaskRequest.DESCRIPTOR.full_name == "containerd.task.v3.CreateTaskRequest"


def test_task_services_declare_the_same_17_rpcs() -> None:
    names = [m.name for m in v2.DESCRIPTOR.services_by_name["Task"].methods]
    assert len(names) == 17
    assert names == [m.name for m in v3.DESCRIPTOR.services_by_name["Task"].methods]
