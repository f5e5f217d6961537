"""The OCI sandbox around a Wasm guest, side by side with runc for the same configs.

Configs: `ctr run -d` (containerd's default spec), `ctr run -d --seccomp`, Docker 28 on its
default bridge network, Docker with `--cap-drop ALL --security-opt no-new-privileges
--read-only`, with `--network none --hostname --cap-add --ulimit --tmpfs seccomp=unconfined`,
with `--network host`, with `--network container:<a running runc busybox>`, `--privileged`,
`--security-opt seccomp=<a profile of ours refusing mkdir>`, and a CRI pod (a Wasm container and
a busybox sidecar in a pod with a network namespace of its own). Each runs in a test network
namespace (integration/netns.py) on a private containerd 1.6.20 / 2.1.9 (Docker: 2.1.9 only).
A user namespace (`ctr run --uidmap/--gidmap`) runs under runc and is refused at Create by the
pywasm shim, by design, naming the field and the fix.

- Process: the pywasm worker of a sleeping guest and a runc busybox `sleep` under the same config
  must agree on /proc/<pid>: namespaces (own, or the host's = containerd's; in the pod, the
  pause container's), CapInh/CapPrm/CapEff/CapBnd/CapAmb, NoNewPrivs, Seccomp, limits,
  oom_score_adj, hostname, the mount points of mountinfo (relative to the container's root) and
  what `root` lists (without what each image itself holds).
- Escape attempts: integration/sandbox_payload.py, run by the real worker in place of the guest
  (`PYWASM_TEST_PAYLOAD` in containerd's environment, annotation `pywasm.io/test-payload=1`),
  and integration/native/escape.c in a runc container of the same config, line by line: read
  the host's /etc/shadow, create files in the host's /tmp and /, connect to a port that listens
  only in the host's namespaces, mount, load a kernel module, ptrace a shim, raise
  RLIMIT_NOFILE's hard limit, keyctl/add_key (refused by the default seccomp profiles), mkdir
  (refused by the custom profile), mknod + open of a block device (refused by the devices
  cgroup). Each outcome must equal runc's and must not be an escape (checked on the host too:
  no file, no connection) unless the config grants it on purpose (`--network host` reaches
  dockerd's 127.0.0.1, `--privileged` mounts and opens devices). The payload and the helper
  are also run on the host itself, where the same attempts do succeed: the checks can fail.
- Pod: the Wasm container shares the pause container's net, ipc and uts namespaces (its
  hostname is the pod's) and a busybox sidecar reaches a port listening in the Wasm container's
  network namespace over localhost.

Every observed table is written to .cache/sandbox-side-by-side/<test>.md for the report.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from integration import bench_node, cri_images, images, netns
from integration.conftest import _stale_sockets, find_leaks
from integration.containerd import VERSIONS, Containerd, new_id, run_args
from integration.cri import (
    EXITED,
    RUNNING,
    CriClient,
    container_config,
    cri,
    pod_config,
    verbose_pid,
)
from integration.docker import DOCKERD, PYWASM, Dockerd
from integration.netns import Stack
from integration.sandbox_payload import ATTEMPTS, render

REPO = Path(__file__).resolve().parent.parent
TABLES = REPO / ".cache" / "sandbox-side-by-side"
RUNC = "io.containerd.runc.v2"
ESCAPE_IMAGE = "docker.io/library/pw-escape:latest"
ESCAPE_PATH = "/escape"
PAYLOAD_ANNOTATION = "pywasm.io/test-payload=1"
SHIM_TARGET = "containerd-shim"
NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
STATUS_KEYS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")
LEAK_GRACE_SECONDS = 10.0
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_START_ERRORS: dict[str, str] = {}


# --- images -------------------------------------------------------------------------------


def escape_binary() -> Path:
    return bench_node.build_native(bench_node.NATIVE_SOURCES / "escape.c", "escape")


def escape_archive() -> Path:
    """linux/amd64, nothing but the static /escape: shaped like a Wasm image (one file)."""
    from pywasmd.image.build import File, Platform, build_image
    from pywasmd.image.layout import write_archive

    data = escape_binary().read_bytes()
    out = images.CACHE / f"pw-escape-{images._key(data, images._image_code())}.tar"
    if not out.exists():
        images.CACHE.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        write_archive(
            build_image(
                files={ESCAPE_PATH: File(data, 0o755)},
                entrypoint=[ESCAPE_PATH],
                platform=Platform("linux", "amd64"),
            ),
            ESCAPE_IMAGE,
            tmp,
        )
        tmp.replace(out)
    return out


def import_linux(ctrd: Containerd, image: str, archive: Path) -> None:
    r = ctrd.ctr("images", "import", "--platform", "linux/amd64", str(archive), timeout=120)
    assert r.returncode == 0, f"importing {archive}: {explain(r)}"
    listed = ctrd.ctr("images", "ls", "-q", timeout=30).stdout.split()
    assert image in listed, f"after importing {archive}, containerd lists {listed}"


def top_entries(archive: Path) -> set[str]:
    """Top-level names of the (single) image's layers in an OCI archive."""

    names: set[str] = set()
    with tarfile.open(archive) as tar:

        def blob(digest: str) -> bytes:
            f = tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1])
            assert f is not None
            return f.read()

        desc = json.loads(blob_index(tar))["manifests"][0]
        while desc.get("mediaType", "").endswith("index.v1+json"):
            desc = json.loads(blob(desc["digest"]))["manifests"][0]
        manifest = json.loads(blob(desc["digest"]))
        for layer in manifest["layers"]:
            f = tar.extractfile("blobs/sha256/" + layer["digest"].split(":", 1)[1])
            assert f is not None
            with tarfile.open(fileobj=f, mode="r:*") as lt:
                for m in lt.getmembers():
                    top = m.name.lstrip("./").split("/", 1)[0]
                    if top:
                        names.add(top)
    return names


def blob_index(tar: tarfile.TarFile) -> bytes:
    f = tar.extractfile("index.json")
    assert f is not None
    return f.read()


# --- listeners ----------------------------------------------------------------------------


class Listener:
    """A TCP listener on 127.0.0.1 inside the network namespace `ns_path` (made by a thread
    that enters it with setns; the socket stays in that namespace). Records every connection
    and what it sent; answers `reply`."""

    def __init__(self, ns_path: str | None, port: int = 0, reply: bytes = b"") -> None:
        self.reply = reply
        self.accepted: list[bytes] = []
        made: dict[str, Any] = {}

        def make() -> None:
            try:
                if ns_path is not None:
                    fd = os.open(ns_path, os.O_RDONLY)
                    try:
                        if _libc.setns(fd, CLONE_NEWNET) != 0:
                            err = ctypes.get_errno()
                            raise OSError(err, f"setns {ns_path}: {os.strerror(err)}")
                    finally:
                        os.close(fd)
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
                s.listen(16)
                made["sock"] = s
            except OSError as e:
                made["error"] = e

        t = threading.Thread(target=make)
        t.start()
        t.join()
        if "error" in made:
            raise made["error"]
        self.sock: socket.socket = made["sock"]
        self.port: int = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = b""
                with contextlib.suppress(OSError):
                    data = conn.recv(4096)
                    if self.reply:
                        conn.sendall(self.reply)
                self.accepted.append(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


# --- the stacks ---------------------------------------------------------------------------


@dataclass
class Node:
    """A test netns with a CRI-enabled containerd (ctr and CRI both) in it, the payload
    rendered for this node's listeners."""

    stack: Stack
    payload: Path
    host_listener: Listener
    machine_listener: Listener
    busybox_entries: set[str] = field(default_factory=set)
    wasm_entries: set[str] = field(default_factory=set)

    @property
    def ctrd(self) -> Containerd:
        return self.stack.ctrd

    @property
    def version(self) -> str:
        return self.ctrd.version

    @property
    def port(self) -> int:
        return self.host_listener.port

    def accepted(self) -> list[bytes]:
        return self.host_listener.accepted + self.machine_listener.accepted

    def close(self) -> None:
        self.host_listener.close()
        self.machine_listener.close()


def _open_listeners(stack: Stack) -> tuple[Listener, Listener]:
    """The same port on 127.0.0.1 in the machine's namespace and in the stack's (containerd's,
    the containers' host) namespace."""
    machine = Listener(None)
    try:
        return Listener(str(stack.netns.path), machine.port), machine
    except OSError:
        machine.close()
        raise


def _make_node(stack: Stack, archives: dict[str, Path]) -> Node:
    payload = Path(stack.ctrd.env["PYWASM_TEST_PAYLOAD"])
    host, machine = _open_listeners(stack)
    payload.write_text(render(host.port, SHIM_TARGET))
    return Node(
        stack,
        payload,
        host,
        machine,
        busybox_entries=top_entries(archives[images.BUSYBOX]) | top_entries(escape_archive()),
        wasm_entries=top_entries(archives[images.ref("sleep")]),
    )


def _payload_env() -> dict[str, str]:
    # The file is written once the listeners' port is known; the worker reads it per start.
    path = Path(f"/run/pywasmd-it-payload-{os.getpid()}-{new_id('p')}.py")
    return {"PYWASM_TEST_PAYLOAD": str(path)}


@pytest.fixture(scope="module", params=VERSIONS, ids=[f"ctrd{v}" for v in VERSIONS])
def node(request: pytest.FixtureRequest, archives: dict[str, Path]) -> Iterator[Node]:
    version: str = request.param
    if version in _START_ERRORS:
        pytest.fail(_START_ERRORS[version], pytrace=False)
    stack = Stack(version, cri=True, env=_payload_env())
    n: Node | None = None
    try:
        stack.start()
        netns.install_test_cni(stack.ctrd)
        n = _make_node(stack, archives)
        for image in (images.ref("sleep"), images.BUSYBOX):
            images.import_archive(stack.ctrd, image, archives[image])
        import_linux(stack.ctrd, ESCAPE_IMAGE, escape_archive())
        cri_images.import_cri_images(stack.ctrd, archives)
    except Exception as e:
        if n is not None:
            n.close()
        stack.stop()
        Path(stack.ctrd.env["PYWASM_TEST_PAYLOAD"]).unlink(missing_ok=True)
        _START_ERRORS[version] = f"sandbox node {version} could not be set up: {e}"
        pytest.fail(_START_ERRORS[version], pytrace=False)
    try:
        yield n
    finally:
        n.close()
        left = stack.stop()
        n.payload.unlink(missing_ok=True)
        assert not left, f"tearing the sandbox node down found: {left}"


@pytest.fixture(scope="module")
def dnode(archives: dict[str, Path]) -> Iterator[Node]:
    """Docker 28 on its default bridge network, on containerd 2.1, in a test netns."""
    if "docker" in _START_ERRORS:
        pytest.fail(_START_ERRORS["docker"], pytrace=False)
    if not DOCKERD.exists():
        pytest.fail(f"{DOCKERD} is missing: run scripts/fetch-docker.sh (make install)")
    stack = Stack("2.1", docker=True, env=_payload_env())
    n: Node | None = None
    try:
        stack.start()
        n = _make_node(stack, archives)
        for name in ("sleep", "busybox"):
            stack.docker.load(archives[images.ref(name)])
        stack.docker.load(escape_archive())
    except Exception as e:
        if n is not None:
            n.close()
        stack.stop()
        Path(stack.ctrd.env["PYWASM_TEST_PAYLOAD"]).unlink(missing_ok=True)
        _START_ERRORS["docker"] = f"Docker sandbox node could not be set up: {e}"
        pytest.fail(_START_ERRORS["docker"], pytrace=False)
    try:
        yield n
    finally:
        n.close()
        left = stack.stop()
        n.payload.unlink(missing_ok=True)
        assert not left, f"tearing the Docker sandbox node down found: {left}"


@pytest.fixture(autouse=True)
def sandbox_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    names = [f for f in ("node", "dnode") if f in request.fixturenames]
    if not names:
        yield
        return
    n: Node = request.getfixturevalue(names[0])
    sockets_before = _stale_sockets()
    request.node.pywasmd_containerd = n.ctrd
    request.node.pywasmd_log_offset = n.ctrd.log_size()
    yield
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    while True:
        leaks = find_leaks(n.ctrd, sockets_before)
        if n.stack.dockerd is not None and (ids := n.stack.docker.container_ids()):
            leaks.append(f"Docker containers left: {ids}")
        if not leaks or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if leaks:
        if n.stack.dockerd is not None:
            n.stack.docker.remove_all()
        n.ctrd.cleanup_cri()
        n.ctrd.cleanup_tasks()
        for pid in n.ctrd.all_shim_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        pytest.fail("the sandbox test left resources behind:\n" + "\n".join(leaks), pytrace=False)


# --- observing a process ------------------------------------------------------------------


def _ns(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def relation(pid: int, kind: str, refs: dict[str, int]) -> str:
    """`kind` namespace of `pid`: the name of the first reference process that shares it, or
    "own"."""
    mine = _ns(pid, kind)
    if mine is None:
        return "(none)"
    for name, ref in refs.items():
        if _ns(ref, kind) == mine:
            return name
    return "own"


def observe(pid: int, refs: dict[str, int]) -> dict[str, str]:
    """What /proc says about the sandbox of `pid`, as comparable strings."""
    seen: dict[str, str] = {}
    for kind in NAMESPACES:
        seen[f"ns/{kind}"] = relation(pid, kind, refs)
    status: dict[str, str] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    for key in STATUS_KEYS:
        seen[key] = status.get(key, "(absent)")
    # The pid inside its own pid namespace: 1 for an init, another number for an exec.
    inner = status.get("NSpid", "0").split()[-1]
    seen["pid in its namespace"] = "1" if inner == "1" else "not 1"
    with open(f"/proc/{pid}/limits") as f:
        for line in f.read().splitlines()[1:]:
            name = line[:26].strip()
            seen[f"limit/{name}"] = " ".join(line[26:].split())
    with open(f"/proc/{pid}/oom_score_adj") as f:
        seen["oom_score_adj"] = f.read().strip()
    r = subprocess.run(
        ["nsenter", f"--uts=/proc/{pid}/ns/uts", "hostname"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    seen["hostname"] = r.stdout.strip() if r.returncode == 0 else f"(nsenter: {r.stderr.strip()})"
    points: dict[str, str] = {}
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            # The last mount on a point is the one the container sees.
            points[fields[4].encode().decode("unicode_escape")] = fields[5]
    seen["mounts"] = " ".join(sorted(points))
    seen["mount flags"] = " ".join(f"{p}:{o}" for p, o in sorted(points.items()))
    seen["root"] = " ".join(sorted(os.listdir(f"/proc/{pid}/root")))
    seen["dev"] = " ".join(_dev_entries(pid))
    return seen


def _dev_entries(pid: int) -> list[str]:
    """The container's /dev, one `name:kind[major:minor]` per entry (devices made from the
    config; --privileged: every host device)."""
    out = []
    dev = f"/proc/{pid}/root/dev"
    for name in sorted(os.listdir(dev)):
        st = os.lstat(f"{dev}/{name}")
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
            out.append(f"{name}:{kind}{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
        elif stat.S_ISLNK(st.st_mode):
            out.append(f"{name}->{os.readlink(f'{dev}/{name}')}")
        else:
            out.append(f"{name}/" if stat.S_ISDIR(st.st_mode) else name)
    return out


def write_table(name: str, columns: dict[str, dict[str, str]]) -> str:
    keys = list(next(iter(columns.values())))
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for key in keys:
        cells = [columns[c].get(key, "") for c in columns]
        mark = "" if len(set(cells)) == 1 else " **≠**"
        lines.append(f"| {key}{mark} | " + " | ".join(f"`{v}`" for v in cells) + " |")
    text = "\n".join(lines) + "\n"
    TABLES.mkdir(parents=True, exist_ok=True)
    (TABLES / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.md").write_text(text)
    return text


def differences(
    name: str,
    runc: dict[str, str],
    wasm: dict[str, str],
    image_entries: set[str],
    host_root: set[str],
) -> str:
    """Where pywasm disagrees with runc ("" when nowhere); `root` is compared without what the
    images themselves hold. The full table goes into the message and the table file."""
    table = write_table(name, {"runc": runc, "pywasm": wasm})
    wasm_root = set(wasm["root"].split())
    assert wasm_root != host_root, f"{name}: the worker's root is the host's /\n{table}"
    differ = [k for k in runc if k != "root" and runc[k] != wasm[k]]
    runc_root = set(runc["root"].split()) - image_entries
    if runc_root != wasm_root - image_entries:
        differ.append(f"root (without image files: {sorted(runc_root)} vs "
                      f"{sorted(wasm_root - image_entries)})")  # fmt: skip
    return f"{name}: pywasm differs from runc in {differ}\n{table}" if differ else ""


def compare(
    name: str,
    runc: dict[str, str],
    wasm: dict[str, str],
    image_entries: set[str],
    host_root: set[str],
) -> None:
    problem = differences(name, runc, wasm, image_entries, host_root)
    assert not problem, problem


def wait_pid(get: Any, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while True:
        pid = int(get() or 0)
        if pid > 0 or time.monotonic() > deadline:
            return pid
        time.sleep(0.05)


def ctr_task_pid(ctrd: Containerd, cid: str, namespace: str = "default") -> int:
    r = ctrd.ctr("tasks", "ls", namespace=namespace, timeout=20)
    for line in r.stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid and fields[-1] == "RUNNING":
            return int(fields[1])
    return 0


def ctr_remove(ctrd: Containerd, cid: str) -> None:
    ctrd.ctr("tasks", "kill", "-s", "SIGKILL", cid, timeout=20)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = ctrd.ctr("tasks", "rm", cid, timeout=20)
        if r.returncode == 0 or "not found" in r.stderr:
            break
        time.sleep(0.1)
    ctrd.ctr("containers", "rm", cid, timeout=20)


def explain(r: subprocess.CompletedProcess[Any]) -> str:
    return f"exit {r.returncode}\nstdout: {r.stdout!r:.3000}\nstderr: {r.stderr!r:.3000}"


HOST_ROOT = set(os.listdir("/"))

CTR_CONFIGS = {"ctr-default": (), "ctr-seccomp": ("--seccomp",)}
#: Placeholders in DOCKER_CONFIGS, filled per test (docker_config).
NET_CONTAINER = "<network container>"
SECCOMP_FILE = "<seccomp profile file>"
DOCKER_CONFIGS = {
    "docker-default": (),
    "docker-locked": ("--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--read-only"),
    # More of Docker's options at once: each must reach the Wasm worker as it reaches runc's.
    "docker-options": (
        "--network",
        "none",
        "--hostname",
        "pw-opts",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "CHOWN",
        "--cap-add",
        "NET_BIND_SERVICE",
        "--ulimit",
        "nofile=512:1024",
        "--tmpfs",
        "/scratch",
        "--security-opt",
        "seccomp=unconfined",
    ),  # fmt: skip
    # dockerd's own network namespace (the test netns); the uts namespace is still the
    # container's own, named after dockerd's host.
    "docker-network-host": ("--network", "host"),
    # The network namespace of a running runc busybox container (made per test).
    "docker-network-container": ("--network", f"container:{NET_CONTAINER}"),
    # Every capability, no seccomp, no masked or read-only paths, the host's devices, /sys rw.
    "docker-privileged": ("--privileged",),
    # A profile of our own that allows everything but mkdir/mkdirat (EPERM).
    "docker-seccomp-file": ("--security-opt", f"seccomp={SECCOMP_FILE}"),
}
SECCOMP_DENY_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
}


@dataclass
class DockerConfig:
    """A Docker config with its placeholders filled: the options, the namespaces to name in
    the table (dockerd's host first) and the hostname Docker gives a container of it."""

    opts: tuple[str, ...]
    refs: dict[str, int]
    hostname_rule: str
    net_container: str = ""

    def hostname(self, d: Dockerd, name: str) -> str:
        if self.hostname_rule == "option":
            return self.opts[self.opts.index("--hostname") + 1]
        if self.hostname_rule == "dockerd's host":
            # dockerd's os.Hostname(): it runs in the machine's uts namespace, as this test.
            return socket.gethostname()
        if self.hostname_rule == "network container id[:12]":
            return str(d.inspect(self.net_container)["Id"][:12])
        return str(d.inspect(name)["Id"][:12])


@contextlib.contextmanager
def docker_config(dnode: Node, config: str, tmp_path: Path) -> Iterator[DockerConfig]:
    d = dnode.stack.docker
    opts = DOCKER_CONFIGS[config]
    refs = {"host": dnode.ctrd.proc.pid if dnode.ctrd.proc else 1}
    net_name = ""
    try:
        profile = tmp_path / "seccomp-deny-mkdir.json"
        profile.write_text(json.dumps(SECCOMP_DENY_MKDIR))
        if any(NET_CONTAINER in o for o in opts):
            net_name = new_id("sbx-net")
            r = d.docker("run", "-d", "--name", net_name, "pw-busybox", "sleep", "300")
            assert r.returncode == 0, explain(r)
            refs["network container"] = docker_pid(d, net_name)
        resolved = tuple(
            o.replace(NET_CONTAINER, net_name).replace(SECCOMP_FILE, str(profile)) for o in opts
        )
        if "--hostname" in opts:
            rule = "option"
        elif ("--network", "host") == opts[:2]:
            rule = "dockerd's host"
        elif net_name:
            rule = "network container id[:12]"
        else:
            rule = "container id[:12]"
        yield DockerConfig(resolved, refs, rule, net_name)
    finally:
        if net_name:
            d.docker("rm", "-f", net_name, timeout=60)


# --- process side by side -----------------------------------------------------------------


@pytest.mark.parametrize("config", list(CTR_CONFIGS))
def test_ctr_process_side_by_side(node: Node, config: str) -> None:
    ctrd = node.ctrd
    extra = CTR_CONFIGS[config]
    runc_id, wasm_id = new_id("sbx-runc"), new_id("sbx-wasm")
    refs = {"host": ctrd.proc.pid if ctrd.proc else 1}
    try:
        argv = run_args(images.BUSYBOX, runc_id, "sleep", "300", runtime=RUNC,
                        platform="linux/amd64", extra=extra, rm=False, detach=True)  # fmt: skip
        r = ctrd.ctr(*argv, timeout=60)
        assert r.returncode == 0, explain(r)
        argv = run_args(images.ref("sleep"), wasm_id, images.module("sleep"), "300",
                        extra=extra, rm=False, detach=True)  # fmt: skip
        r = ctrd.ctr(*argv, timeout=60)
        assert r.returncode == 0, explain(r)
        runc_pid = wait_pid(lambda: ctr_task_pid(ctrd, runc_id))
        wasm_pid = wait_pid(lambda: ctr_task_pid(ctrd, wasm_id))
        assert runc_pid > 0, f"no running task {runc_id}"
        assert wasm_pid > 0, f"no running task {wasm_id}"
        runc, wasm = observe(runc_pid, refs), observe(wasm_pid, refs)
        # An exec joins the init's sandbox (`runc exec`): observed against the init.
        runc_exec, _ = exec_observe(ctrd, runc_id, runc_pid, ["sleep", "299"], refs)
        wasm_exec, wasm_exec_pid = exec_observe(
            ctrd, wasm_id, wasm_pid, [images.module("sleep"), "299"], refs
        )
        # Seen again a second later: tells a late sandbox step from a missing one.
        time.sleep(1)
        wasm_later = observe(wasm_pid, refs)
        wasm_exec_later = observe(wasm_exec_pid, {"host": refs["host"], "init": wasm_pid})
    finally:
        ctr_remove(ctrd, wasm_id)
        ctr_remove(ctrd, runc_id)
    entries = node.busybox_entries | node.wasm_entries
    for kind in ("ipc", "mnt", "net", "pid", "uts"):
        assert runc_exec[f"ns/{kind}"] == "init", f"runc exec: {kind} {runc_exec[f'ns/{kind}']}"
    name = f"{config}-ctrd{node.version}"
    problems = [
        differences(name, runc, wasm, entries, HOST_ROOT),
        differences(f"{name}-exec", runc_exec, wasm_exec, entries, HOST_ROOT),
    ]
    if any(problems):
        problems += [
            differences(f"{name}-1s-later", runc, wasm_later, entries, HOST_ROOT),
            differences(f"{name}-exec-1s-later", runc_exec, wasm_exec_later, entries, HOST_ROOT),
        ]
    found = "\n".join(p for p in problems if p)
    assert not found, found


def exec_observe(
    ctrd: Containerd, cid: str, init: int, argv: list[str], refs: dict[str, int]
) -> tuple[dict[str, str], int]:
    """`ctr tasks exec -d` of `argv` in `cid`, then what /proc says of it (namespaces named
    after the init's when shared)."""
    r = ctrd.ctr("tasks", "exec", "-d", "--exec-id", new_id("x"), cid, *argv, timeout=60)
    assert r.returncode == 0, explain(r)

    def exec_pid() -> int:
        out = ctrd.ctr("tasks", "ps", cid, timeout=20).stdout.split()
        pids = [int(p) for p in out if p.isdigit() and int(p) != init]
        return pids[0] if pids else 0

    pid = wait_pid(exec_pid)
    assert pid > 0, f"{cid}: no exec process in `ctr tasks ps`"
    return observe(pid, {"host": refs["host"], "init": init}), pid


def docker_pid(d: Dockerd, name: str) -> int:
    return int(d.inspect(name)["State"]["Pid"])


@pytest.mark.parametrize("config", list(DOCKER_CONFIGS))
def test_docker_process_side_by_side(dnode: Node, config: str, tmp_path: Path) -> None:
    d = dnode.stack.docker
    runc_name, wasm_name = new_id("sbx-runc"), new_id("sbx-wasm")
    with docker_config(dnode, config, tmp_path) as dc:
        try:
            r = d.docker("run", "-d", "--name", runc_name, *dc.opts, "pw-busybox", "sleep", "300")
            assert r.returncode == 0, explain(r)
            r = d.docker("run", "-d", "--name", wasm_name, f"--runtime={PYWASM}",
                         "--platform=wasi/wasm", *dc.opts, "pw-sleep", "300")  # fmt: skip
            assert r.returncode == 0, explain(r)
            runc_pid, wasm_pid = docker_pid(d, runc_name), docker_pid(d, wasm_name)
            runc, wasm = observe(runc_pid, dc.refs), observe(wasm_pid, dc.refs)
            # Docker names the uts namespace after the container, the --hostname, dockerd's
            # host (--network host) or the network container: compare the rule.
            for seen, name in ((runc, runc_name), (wasm, wasm_name)):
                want = dc.hostname(d, name)
                assert seen["hostname"] == want, (
                    f"{name}: hostname {seen['hostname']!r}, not {want!r} ({dc.hostname_rule})"
                )
                seen["hostname"] = f"<{dc.hostname_rule}>"
            if config == "docker-network-container":
                net = netns.net_of(dc.refs["network container"])
                assert netns.net_of(runc_pid) == net, "runc did not join the network container"
                assert netns.net_of(wasm_pid) == net, (
                    f"the worker's /proc/{wasm_pid}/ns/net is not the network container's"
                )
            if config == "docker-network-host":
                host_net = netns.net_of(dc.refs["host"])
                assert host_net == dnode.stack.netns.inode, "containerd left the test netns"
                assert netns.net_of(wasm_pid) == host_net, "the worker has a netns of its own"
        finally:
            d.docker("rm", "-f", wasm_name, runc_name, timeout=60)
    problem = differences(config, runc, wasm, dnode.busybox_entries | dnode.wasm_entries, HOST_ROOT)
    only_flags = f"{config}: pywasm differs from runc in ['mount flags']\n"
    if problem.startswith(only_flags) and _only_cgroup_hierarchies_differ(runc, wasm):
        raise CgroupHierarchiesDiffer(problem)
    assert not problem, problem


def _only_cgroup_hierarchies_differ(runc: dict[str, str], wasm: dict[str, str]) -> bool:
    flags = [dict(e.split(":", 1) for e in s["mount flags"].split()) for s in (runc, wasm)]
    points = {p for p in flags[0].keys() | flags[1].keys() if flags[0].get(p) != flags[1].get(p)}
    return all(p.startswith("/sys/fs/cgroup/") for p in points)


# --- escape attempts ----------------------------------------------------------------------


def parse_attempts(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        what, sep, outcome = line.partition(": ")
        if sep and what in ATTEMPTS:
            found[what] = outcome
    return found


def normalized(outcomes: dict[str, str]) -> dict[str, str]:
    return {k: re.sub(r"pw-escape-[0-9a-f]+", "pw-escape-*", v) for k, v in outcomes.items()}


def host_markers() -> set[str]:
    return {str(p) for d in (Path("/tmp"), Path("/")) for p in d.glob("pw-escape-*")}


def host_shadow() -> str:
    data = Path("/etc/shadow").read_bytes()
    return f"read {len(data)} {data.split(b':', 1)[0].decode(errors='replace')}"


class NoDeviceCgroup(AssertionError):
    """The worker opened a device its config's devices cgroup refuses (sandbox-findings R2-1)."""


class CgroupHierarchiesDiffer(AssertionError):
    """Only /sys/fs/cgroup/<v1 hierarchy> mounts differ from runc's (sandbox-findings R2-2)."""


def check_not_escaped(
    name: str,
    outcomes: dict[str, str],
    markers_before: set[str],
    by_design: dict[str, str] | None = None,
) -> None:
    """What would mean an escape, whatever runc does; `by_design`: what the config grants on
    purpose (attempt -> the regex its outcome must then match)."""
    granted = by_design or {}
    assert set(outcomes) == set(ATTEMPTS), f"{name}: attempts missing from {outcomes}"
    for what, pattern in granted.items():
        assert re.fullmatch(pattern, outcomes[what]), f"{name}: {what} {outcomes[what]!r}"
    assert outcomes["shadow"] != host_shadow(), f"{name}: read the host's /etc/shadow"
    new = host_markers() - markers_before
    assert not new, f"{name}: created {new} on the host"
    refused: dict[str, tuple[str, Callable[[str], bool]]] = {
        "tcp": ("reached a port of the host's namespace", lambda o: o != "connected"),
        "mount": ("mount", lambda o: o == "EPERM"),
        "ptrace": ("ptrace", lambda o: o in ("no-target", "EPERM")),
        "rlimit": ("rlimit", lambda o: not o.endswith("raised")),
        "init_module": ("init_module", lambda o: o in ("EPERM", "ENOSYS")),
        "finit_module": ("finit_module", lambda o: o in ("EPERM", "ENOSYS")),
        # A block device node opened: the host's disks are one mknod away.
        "device": ("opened a block device (loop0)", lambda o: o != "opened"),
    }
    for what, (says, ok) in refused.items():
        if what not in granted:
            assert ok(outcomes[what]), f"{name}: {says}: {outcomes[what]!r}"


def compare_escapes(
    name: str,
    node: Node,
    runc_out: str,
    wasm_out: str,
    before: set[str],
    by_design: dict[str, str] | None = None,
) -> None:
    runc, wasm = parse_attempts(runc_out), parse_attempts(wasm_out)
    table = write_table(f"escape-{name}", {"runc": normalized(runc), "pywasm": normalized(wasm)})
    assert not node.machine_listener.accepted, f"{name}: the machine's listener was reached"
    if by_design and by_design.get("tcp") == "connected":
        # One connection each from runc's container and the worker, in dockerd's namespace.
        deadline = time.monotonic() + 5
        while len(node.host_listener.accepted) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = list(node.host_listener.accepted)
        node.host_listener.accepted.clear()
        assert len(seen) == 2, f"{name}: the listener in dockerd's namespace saw {seen}"
    assert not node.accepted(), f"{name}: the host's listener was reached: {node.accepted()}"
    check_not_escaped(f"{name} runc", runc, before, by_design)
    # The device attempt last, in its own exception: an xfail on it hides nothing else.
    check_not_escaped(f"{name} pywasm", {**wasm, "device": runc["device"]}, before, by_design)
    differ = [k for k in ATTEMPTS if normalized(runc).get(k) != normalized(wasm).get(k)]
    differ_else = [k for k in differ if k != "device"]
    assert not differ_else, (
        f"{name}: pywasm's attempts end otherwise than runc's: {differ_else}\n{table}"
    )
    if differ:
        raise NoDeviceCgroup(
            f"{name}: device: runc {runc['device']!r}, pywasm {wasm['device']!r} (a block device "
            f"node opened without the container's devices cgroup)\n{table}"
        )


def _cleanup_markers(before: set[str]) -> None:
    for p in host_markers() - before:
        Path(p).unlink(missing_ok=True)


@pytest.mark.parametrize("config", list(CTR_CONFIGS))
def test_ctr_escape_attempts(node: Node, config: str) -> None:
    ctrd, extra = node.ctrd, CTR_CONFIGS[config]
    before = host_markers()
    try:
        argv = run_args(ESCAPE_IMAGE, new_id("esc-runc"), ESCAPE_PATH, str(node.port),
                        SHIM_TARGET, runtime=RUNC, platform="linux/amd64", extra=extra)  # fmt: skip
        runc = ctrd.ctr(*argv, timeout=60)
        assert runc.returncode == 0, explain(runc)
        argv = run_args(images.ref("sleep"), new_id("esc-wasm"),
                        extra=(*extra, "--annotation", PAYLOAD_ANNOTATION))  # fmt: skip
        wasm = ctrd.ctr(*argv, timeout=60)
        assert wasm.returncode == 0, explain(wasm)
        assert wasm.stdout.startswith("shadow: "), f"the payload did not run:\n{explain(wasm)}"
        if config == "ctr-seccomp":
            for call in ("keyctl", "add_key"):
                assert parse_attempts(wasm.stdout)[call] == "EPERM", explain(wasm)
        compare_escapes(f"{config}-ctrd{node.version}", node, runc.stdout, wasm.stdout, before)
    finally:
        _cleanup_markers(before)


#: What each Docker config grants on purpose, under runc as under pywasm (regexes).
DOCKER_BY_DESIGN: dict[str, dict[str, str]] = {
    # The container is in dockerd's network namespace: its 127.0.0.1 is the host's.
    "docker-network-host": {"tcp": "connected"},
    # Every capability, no seccomp, every device allowed: only the namespaces remain. (The
    # hard limit rises only where the machine's bounding set has CAP_SYS_RESOURCE.)
    "docker-privileged": {
        "mount": "ENODEV",
        "rlimit": r"hard=\d+ (raised|EPERM)",
        "device": "opened",
    },
}
#: Outcomes each Docker config decides (checked under both runtimes): Docker's default
#: profile refuses the keyring calls; a read-only root refuses mkdir; the custom profile
#: refuses mkdir with EPERM whatever the root.
DOCKER_EXPECT: dict[str, dict[str, str]] = {
    "docker-default": {"keyctl": "EPERM", "add_key": "EPERM", "mkdir": "ok"},
    "docker-locked": {"keyctl": "EPERM", "add_key": "EPERM", "mkdir": "EROFS"},
    "docker-options": {"keyctl": "ok", "add_key": "ok", "mkdir": "ok", "device": "mknod EPERM"},
    "docker-network-host": {"keyctl": "EPERM", "add_key": "EPERM", "mkdir": "ok"},
    "docker-network-container": {"keyctl": "EPERM", "add_key": "EPERM", "mkdir": "ok"},
    "docker-privileged": {"keyctl": "ok", "add_key": "ok", "mkdir": "ok"},
    "docker-seccomp-file": {"keyctl": "ok", "add_key": "ok", "mkdir": "EPERM"},
}


@pytest.mark.parametrize("config", list(DOCKER_CONFIGS))
def test_docker_escape_attempts(dnode: Node, config: str, tmp_path: Path) -> None:
    d = dnode.stack.docker
    before = host_markers()
    try:
        with docker_config(dnode, config, tmp_path) as dc:
            runc = d.docker("run", "--rm", *dc.opts, "pw-escape", str(dnode.port), SHIM_TARGET)
            assert runc.returncode == 0, explain(runc)
            wasm = d.docker("run", "--rm", "--annotation", PAYLOAD_ANNOTATION,
                            f"--runtime={PYWASM}", "--platform=wasi/wasm", *dc.opts,
                            "pw-sleep")  # fmt: skip
            assert wasm.returncode == 0, explain(wasm)
        assert wasm.stdout.startswith("shadow: "), f"the payload did not run:\n{explain(wasm)}"
        for runtime, out in (("runc", runc), ("pywasm", wasm)):
            seen = parse_attempts(out.stdout)
            for what, want in DOCKER_EXPECT[config].items():
                assert seen.get(what) == want, f"{config} {runtime}: {what}\n{explain(out)}"
        compare_escapes(config, dnode, runc.stdout, wasm.stdout, before,
                        DOCKER_BY_DESIGN.get(config))  # fmt: skip
    finally:
        _cleanup_markers(before)


def test_attempts_succeed_on_the_host() -> None:
    """The payload and the native helper, run on the host itself (root, the machine's
    namespaces, no seccomp), do reach what they must not reach in a container: a check that
    passes only because an attempt is broken would show here."""
    listener = Listener(None)
    # ptrace's target: a process of this test's own, with a name nobody else's has.
    target_name = f"pw-ptrace-target-{os.getpid()}"
    target = subprocess.Popen([target_name, "60"], executable="/bin/sleep")
    before = host_markers()
    tmp = Path(f"/run/pywasmd-it-payload-host-{os.getpid()}.py")
    try:
        tmp.write_text(render(listener.port, target_name))
        outs = {}
        for name, argv in (
            ("payload", [sys.executable, str(tmp)]),
            ("escape", [str(escape_binary()), str(listener.port), target_name]),
        ):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
            assert r.returncode == 0, explain(r)
            outs[name] = parse_attempts(r.stdout)
        assert normalized(outs["payload"]) == normalized(outs["escape"]), outs
        seen = outs["payload"]
        assert seen["shadow"] == host_shadow(), seen
        assert seen["tcp"] == "connected", seen
        assert seen["mount"] == "ENODEV", seen  # allowed: only the made-up type is refused
        assert seen["ptrace"] == "seized", seen
        assert seen["keyctl"] == "ok", seen
        assert seen["mkdir"] == "ok", seen
        assert seen["device"] == "opened", seen  # this machine's device cgroup is the root one
        assert seen["tmp"].startswith("created /tmp/pw-escape-"), seen
        assert seen["root"].startswith("created /pw-escape-"), seen
        assert len(host_markers() - before) == 4, host_markers() - before
        deadline = time.monotonic() + 5  # the listener's thread records a connection late
        while len(listener.accepted) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(listener.accepted) == 2, listener.accepted
    finally:
        target.kill()
        target.wait(5)
        listener.close()
        tmp.unlink(missing_ok=True)
        _cleanup_markers(before)


# --- user namespaces ----------------------------------------------------------------------

USERNS_MAPS = ("--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536")


def _bundle_dir(ctrd: Containerd, cid: str) -> Path:
    return ctrd.state / "io.containerd.runtime.v2.task" / "default" / cid


def _snapshot_keys(ctrd: Containerd) -> set[str]:
    r = ctrd.ctr("snapshots", "ls", timeout=20)
    return {line.split()[0] for line in r.stdout.splitlines()[1:] if line.split()}


def test_user_namespace_is_refused_at_create(node: Node) -> None:
    """`ctr run --uidmap/--gidmap` (a user namespace with its mappings, as Docker's --userns
    and userns-remap make): runc runs it; the pywasm shim refuses it at Create by design
    (docs/sandbox.md), naming the field and the fix, and leaves nothing behind."""
    ctrd = node.ctrd
    runc_id, wasm_id = new_id("sbx-userns-runc"), new_id("sbx-userns-wasm")
    argv = run_args(images.BUSYBOX, runc_id, "cat", "/proc/self/uid_map", runtime=RUNC,
                    platform="linux/amd64", extra=USERNS_MAPS)  # fmt: skip
    runc = ctrd.ctr(*argv, timeout=120)
    assert runc.returncode == 0, explain(runc)
    assert runc.stdout.split() == ["0", "100000", "65536"], explain(runc)

    snapshots_before = _snapshot_keys(ctrd)
    workers_before = set(node.stack.netns.pids())
    argv = run_args(images.ref("sleep"), wasm_id, images.module("sleep"), "300",
                    extra=USERNS_MAPS)  # fmt: skip
    wasm = ctrd.ctr(*argv, timeout=120)
    assert wasm.returncode != 0, f"a user namespace was accepted\n{explain(wasm)}"
    assert "Traceback" not in wasm.stderr, explain(wasm)
    said = re.search(r"linux\.namespaces\[\d+\]: a user namespace is not supported", wasm.stderr)
    assert said, f"the error does not name linux.namespaces[i]\n{explain(wasm)}"
    for fix in ("--userns", "userns-remap", "io.containerd.runc.v2"):
        assert fix in wasm.stderr, f"the error does not give the fix {fix!r}\n{explain(wasm)}"
    # Nothing behind (beyond the autouse leak check: tasks, containers, shims, mounts,
    # sockets): no bundle, no snapshot of the container, no new process in the stack.
    assert not _bundle_dir(ctrd, wasm_id).exists(), f"bundle of {wasm_id} left"
    assert wasm_id not in _snapshot_keys(ctrd) - snapshots_before, f"snapshot {wasm_id} left"
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    while True:
        new = [p for p in set(node.stack.netns.pids()) - workers_before if not netns_zygote(p)]
        if not new or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not new, f"processes left after the refused Create: {[describe(p) for p in new]}"


def describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f"{pid}: " + f.read().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return f"{pid}: (gone)"


def netns_zygote(pid: int) -> bool:
    """The stack's fork server (and its idle children) outlive every container on purpose."""
    return describe(pid).split(": ", 1)[-1].startswith("pywasm-zygote")


# --- a CRI pod ----------------------------------------------------------------------------


def _pod_network(config: Any) -> None:
    """A pod network namespace of its own (CNI: integration/testcni.py), not the node's."""
    config.linux.security_context.namespace_options.network = cri.POD


def test_cri_pod_shares_the_pods_namespaces(node: Node) -> None:
    client = CriClient(node.ctrd.address)
    node.ctrd.shim_ids = client.pod_ids
    pc = pod_config("sandbox", node.ctrd.pod_logs)
    _pod_network(pc)
    pc.hostname = "pw-pod"
    listener: Listener | None = None
    pod = client.run_pod_sandbox(pc, handler="pywasm")
    try:
        wasm_cc = container_config(pc, "wasm", images.ref("sleep"), args=["1000"])
        side_cc = container_config(pc, "sidecar", images.BUSYBOX, command=["sleep", "1000"])
        for cc in (wasm_cc, side_cc):
            _pod_network(cc)
        wasm = client.create_container(pod, wasm_cc, pc)
        side = client.create_container(pod, side_cc, pc)
        for cid in (wasm, side):
            client.start_container(cid)
        for cid in (wasm, side):
            status = client.wait_container(cid, [RUNNING, EXITED])
            assert status.state == RUNNING, f"{cid}: {status}"
        pause = verbose_pid(client.pod_sandbox_status(pod, verbose=True).info)
        wasm_pid = verbose_pid(client.container_status_response(wasm, verbose=True).info)
        side_pid = verbose_pid(client.container_status_response(side, verbose=True).info)
        assert min(pause, wasm_pid, side_pid) > 0, (pause, wasm_pid, side_pid)
        # The host first: the pod shares the host's cgroup, time and user namespaces.
        refs = {"host": node.ctrd.proc.pid if node.ctrd.proc else 1, "pod": pause}
        runc_seen, wasm_seen = observe(side_pid, refs), observe(wasm_pid, refs)
        for kind in ("net", "ipc", "uts"):
            assert wasm_seen[f"ns/{kind}"] == "pod", f"{kind}: {wasm_seen[f'ns/{kind}']}"
        for kind in ("mnt", "pid"):
            assert wasm_seen[f"ns/{kind}"] == "own", f"{kind}: {wasm_seen[f'ns/{kind}']}"
        assert wasm_seen["hostname"] == "pw-pod", wasm_seen["hostname"]
        compare(f"cri-pod-ctrd{node.version}", runc_seen, wasm_seen,
                node.busybox_entries | node.wasm_entries, HOST_ROOT)  # fmt: skip

        # The pod's network: eth0 of the test CNI, and a port in the Wasm container's
        # namespace that the sidecar reaches over localhost.
        r = subprocess.run(["nsenter", f"--net=/proc/{wasm_pid}/ns/net", "ip", "-br", "addr"],
                           capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
        assert netns.POD_ADDRESS in r.stdout, r.stdout
        listener = Listener(f"/proc/{wasm_pid}/ns/net", reply=b"pong from the wasm netns\n")
        code, out, err = client.exec_sync(
            side, ["sh", "-c", f"echo ping | busybox nc -w 3 127.0.0.1 {listener.port}"]
        )
        assert (code, out) == (0, b"pong from the wasm netns\n"), (code, out, err)
        assert listener.accepted == [b"ping\n"], listener.accepted
    finally:
        if listener is not None:
            listener.close()
        client.remove_everything()
        client.close()
