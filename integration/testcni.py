"""A minimal CNI plugin for the integration tests (installed by netns.install_test_cni).

Installed under two names in a private CNI bin dir: `loopback` (containerd's CRI always adds a
loopback network) sets `lo` up in the pod's namespace; `pw-veth` makes a veth pair whose BOTH
ends live in the pod's namespace (`eth0` with the conf's `address`, and its peer), so CRI finds
the `eth0` address it needs and nothing is created in any other namespace. DEL has nothing to
undo: the interfaces go with the namespace. Standard library only (CNI runs it as a program).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def _ip(netns: str, *args: str) -> None:
    r = subprocess.run(
        ["nsenter", f"--net={netns}", "ip", *args], capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} in {netns}: {r.stderr.strip()}")


def _ipconfig(version: str, address: str) -> dict[str, object]:
    ip: dict[str, object] = {"address": address, "interface": 0}
    if not version.startswith("1."):
        ip["version"] = "4"
    return ip


def main() -> int:
    command = os.environ.get("CNI_COMMAND", "")
    raw = sys.stdin.read()
    conf = json.loads(raw) if raw.strip() else {}
    version = str(conf.get("cniVersion", "0.4.0"))
    if command == "VERSION":
        print(json.dumps({"cniVersion": version, "supportedVersions": ["0.3.1", "0.4.0", "1.0.0"]}))
        return 0
    if command in ("DEL", "CHECK", "GC", "STATUS"):
        return 0
    if command != "ADD":
        print(json.dumps({"code": 4, "msg": f"unknown CNI_COMMAND {command!r}"}))
        return 1
    netns = os.environ["CNI_NETNS"]
    ifname = os.environ.get("CNI_IFNAME", "eth0")
    try:
        if conf.get("type") == "loopback":
            _ip(netns, "link", "set", "lo", "up")
            result = {
                "cniVersion": version,
                "interfaces": [{"name": "lo", "sandbox": netns}],
                "ips": [_ipconfig(version, "127.0.0.1/8")],
            }
        else:
            address = str(conf.get("address", "10.99.0.2/24"))
            _ip(netns, "link", "add", ifname, "type", "veth", "peer", "name", "pwpeer0")
            _ip(netns, "addr", "add", address, "dev", ifname)
            _ip(netns, "link", "set", ifname, "up")
            _ip(netns, "link", "set", "pwpeer0", "up")
            result = {
                "cniVersion": version,
                "interfaces": [{"name": ifname, "sandbox": netns}],
                "ips": [_ipconfig(version, address)],
            }
    except (RuntimeError, KeyError) as e:
        print(json.dumps({"cniVersion": version, "code": 11, "msg": str(e)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
