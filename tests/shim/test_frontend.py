"""The compiled front end of `start` and `delete` (pywasmd/shim/native/frontend.c) against the
Python shim: same stdout, exit status, zygote request and files for the same inputs, and a
deferral to the Python launcher for everything it leaves to Python.

Built with zig cc (the `ziglang` dev dependency) into a temporary directory; the bundles,
sockets (under /run/containerd/s, as containerd's shims) and the zygote are the test's own:
a stand-in zygote keeps each request and answers as told.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pywasmd import paths
from pywasmd.api.containerd.task.v2 import shim_pb2 as pb
from pywasmd.shim import install
from pywasmd.shim import zygote as zygote_module
from pywasmd.shim.bootstrap import (
    GROUP_ANNOTATIONS,
    encode_delete_response,
    grouping_key,
    socket_address,
)

ROOT = install.package_root()


class Zygote:
    """A stand-in zygote: keeps each request's bytes and fd count, answers `reply`."""

    def __init__(self, path: str, reply: bytes = b"ok 4242") -> None:
        self.path = path
        self.reply = reply
        self.requests: list[tuple[bytes, int]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 4)
                size = int.from_bytes(data[:4], "big")
                while len(data) - 4 < size and (chunk := conn.recv(65536)):
                    data += chunk
                for fd in fds:
                    # the listener it was handed: still listening, still bound to the path
                    opts = socket.socket(fileno=os.dup(fd))
                    assert opts.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
                    opts.close()
                    os.close(fd)
                self.requests.append((data, len(fds)))
                with contextlib.suppress(OSError):
                    conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class Shims:
    """The Python launcher and the compiled front end, whose fallback is a recording wrapper
    that execs the launcher (or, when `stop` exists, prints FALLBACK and exits 3)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.python = str(tmp / "libexec" / "launcher")
        Path(self.python).write_text(install.launcher_text(sys.executable, ROOT))
        os.chmod(self.python, 0o755)
        self.marker = tmp / "deferred"
        self.stop = tmp / "stop"
        wrapper = tmp / "libexec" / "wrapper"
        wrapper.write_text(
            "#!/bin/sh\n"
            f"echo \"$*\" >> '{self.marker}'\n"
            f"if [ -e '{self.stop}' ]; then printf FALLBACK; exit 3; fi\n"
            f"exec '{self.python}' \"$@\"\n"
        )
        os.chmod(wrapper, 0o755)
        self.native = str(tmp / "bin" / install.SHIM_NAME)
        # no watched files: others editing pywasmd meanwhile must not turn it into Python
        install.build_frontend(self.native, str(wrapper), str(tmp / "no-zygote.sock"), ())

    def deferrals(self) -> list[str]:
        return self.marker.read_text().splitlines() if self.marker.exists() else []


@pytest.fixture(scope="module")
def shims(tmp_path_factory: pytest.TempPathFactory) -> Shims:
    tmp = tmp_path_factory.mktemp("frontend")
    (tmp / "libexec").mkdir()
    (tmp / "bin").mkdir()
    return Shims(tmp)


@pytest.fixture(scope="module")
def selftest(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("selftest") / "selftest")
    install.compile_c(
        install.NATIVE_SOURCE, out, {}, extra=["-DPYWASM_FRONTEND_SELFTEST", "-Wno-unused-function"]
    )
    return out


@pytest.fixture
def zygote(tmp_path: Path) -> Iterator[Zygote]:
    z = Zygote(str(tmp_path / "zygote.sock"))
    yield z
    z.close()


@pytest.fixture(autouse=True)
def _reset(shims: Shims) -> None:
    shims.marker.unlink(missing_ok=True)
    shims.stop.unlink(missing_ok=True)


def run(
    binary: str, argv: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [binary, *argv], cwd=cwd, env=env, capture_output=True, timeout=60, check=False
    )


def shim_env(zygote: Zygote | None, **extra: str) -> dict[str, str]:
    # LANG: a Python under the C locale adds LC_CTYPE=C.UTF-8 to its own environment (PEP 538),
    # which would then be in its zygote request and not in the front end's.
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TTRPC_ADDRESS": "/run/frontend-test/containerd.sock.ttrpc",
        "GOMAXPROCS": "2",
        **extra,
    }
    if zygote is not None:
        env["PYWASM_ZYGOTE_SOCKET"] = zygote.path
    return env


def start_argv(cid: str, *more: str) -> list[str]:
    address = f"/run/frontend-test-{os.getpid()}/containerd.sock"
    return ["-namespace", "ns1", "-address", address, "-publish-binary", "/usr/bin/containerd",
            "-id", cid, *more, "start"]  # fmt: skip


def bundle(tmp_path: Path, name: str, config: str = '{"annotations": {}}') -> Path:
    b = tmp_path / name
    b.mkdir()
    (b / "config.json").write_text(config)
    return b


def socket_of(out: bytes) -> str:
    return out.decode().removeprefix("unix://")


@contextlib.contextmanager
def cleanup_socket(path: str) -> Iterator[None]:
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# --- the pure pieces ----------------------------------------------------------------------


def _selftest(binary: str, lines: list[str]) -> list[str]:
    r = subprocess.run(
        [binary], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True
    )
    return r.stdout.splitlines()


def test_socket_address_matches_python_for_many_inputs(selftest: str) -> None:
    rnd = random.Random(17)
    alphabet = "ab/._-:0123456789Z"
    cases = [
        ("/run/containerd/containerd.sock", "default", "c1"),
        ("", "", ""),
        ("/a/", "/abs", "k"),
        ("/a//", "", "/k/"),
        ("rel", "ns", ""),
        ("/x", "ns/", "key"),
    ]
    # lengths across sha256's one- and two-block padding (55/56 and 119/120 bytes)
    for n in range(200):
        cases.append(("/run/c.sock", "ns", "k" * n))
    for _ in range(400):
        cases.append(
            tuple(  # type: ignore[arg-type]
                "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 40))) for _ in range(3)
            )
        )
    got = _selftest(selftest, [f"addr {a}\t{n}\t{k}" for a, n, k in cases])
    assert got == [socket_address(a, n, k) for a, n, k in cases]


def _random_json(rnd: random.Random, depth: int = 0) -> object:
    keys = ["annotations", *GROUP_ANNOTATIONS, "process", "a", 'q"uote', "back\\slash", ""]
    kind = rnd.randrange(9 if depth < 4 else 5)
    if kind == 0:
        return rnd.choice([None, True, False])
    if kind == 1:
        return rnd.choice([0, 1, -1, 0.0, -0.0, 2.5, 1e300, 10**30, float("nan"), float("inf")])
    if kind in (2, 3, 4):
        return "".join(rnd.choice('ab-_./:" \\\t\u00e9') for _ in range(rnd.randrange(0, 8)))
    if kind in (5, 6):
        return [_random_json(rnd, depth + 1) for _ in range(rnd.randrange(0, 4))]
    return {rnd.choice(keys): _random_json(rnd, depth + 1) for _ in range(rnd.randrange(0, 5))}


def _config_cases() -> list[bytes]:
    group, pod = GROUP_ANNOTATIONS[1], GROUP_ANNOTATIONS[0]
    docs: list[object] = [
        {"annotations": {group: "g1"}},
        {"annotations": {pod: "pod-1", group: "g1"}},
        {"annotations": {pod: "", group: "g1"}},
        {"annotations": {pod: None, group: "g1"}},
        {"annotations": {pod: False, group: 0}},
        {"annotations": {pod: 0.0, group: []}},
        {"annotations": {pod: {}, group: "/abs/key"}},
        {"annotations": {pod: True}},
        {"annotations": {pod: 7}},
        {"annotations": {pod: "esc\u00e9"}},
        {"annotations": {pod: "x\\y"}},
        {"annotations": []},
        {"annotations": [group]},
        {"annotations": "pywasm.io/group"},
        {"annotations": None},
        {"process": {"env": [f"{group}=x"]}, "annotations": {}},
        {"process": {"annotations": {group: "nested"}}},
        [{"annotations": {group: "g"}}],
    ]
    raw = [json.dumps(d).encode() for d in docs]
    raw += [
        b'{"annotations": {"pywasm.io/group": "a"}, "annotations": {"pywasm.io/group": "b"}}',
        b'{"annotations": {"pywasm.io/group": "a", "pywasm.io/group": "b"}}',
        b'{"annotations": {"pywasm.io/group": "a",}}',
        b'{"annotations": {"pywasm.io/group": "a"}} x',
        b' \n{ "annotations" :{"pywasm.io/group":"sp"}\t}\r\n',
        b'{"annot\\u0061tions": {"pywasm.io/group": "a"}}',
        b'{"annotations": {"pywasm.io/gr\\u006fup": "a"}}',
        b'{"n": NaN, "annotations": {"pywasm.io/group": "a"}}',
        b'{"n": 01, "annotations": {"pywasm.io/group": "a"}}',
        b'{"n": 1.5e+3, "m": -0.0e0, "annotations": {"pywasm.io/group": "a"}}',
        b'{"n": 1.e3, "annotations": {"pywasm.io/group": "a"}}',
        b'{"s": "caf\xc3\xa9", "annotations": {"pywasm.io/group": "a"}}',
        b'{"annotations": {"pywasm.io/group": "tab\there"}}',
        b'{"annotations": {"pywasm.io/group": "a"}',
        b"[" * 70 + b"]" * 70 + b' "pywasm.io/group"',
        b'{"deep": ' + b"[" * 70 + b"]" * 70 + b', "annotations": {"pywasm.io/group": "a"}}',
    ]
    rnd = random.Random(1717)
    for _ in range(1500):
        doc = _random_json(rnd)
        if rnd.random() < 0.7:
            doc = {"annotations": doc if rnd.random() < 0.3 else {group: doc, pod: doc}}
        raw.append(json.dumps(doc, indent=rnd.choice([None, 1])).encode())
    return raw


def test_grouping_key_matches_python(selftest: str, tmp_path: Path) -> None:
    """The front end's key is Python's, or it leaves the config to Python (DEFER)."""
    cases = _config_cases()
    got = _selftest(selftest, [f"key {raw.hex()}\tcid-1" for raw in cases])
    native = 0
    for raw, answer in zip(cases, got, strict=True):
        (tmp_path / "config.json").write_bytes(raw)
        want = grouping_key(str(tmp_path), "cid-1")
        if answer != "DEFER":
            native += 1
            assert bytes.fromhex(answer).decode() == want, raw
    # the common shapes stay native: a string annotation (CRI's pod id), none, falsy ones
    assert native > len(cases) // 3
    common = [
        {"ociVersion": "1.0.2", "annotations": {GROUP_ANNOTATIONS[0]: "0123abcd" * 8}},
        {
            "annotations": {
                "io.kubernetes.cri.container-type": "sandbox",
                GROUP_ANNOTATIONS[0]: "pod",
            },
            "process": {"env": ['A="b"']},
        },
        {"annotations": {GROUP_ANNOTATIONS[1]: "density", GROUP_ANNOTATIONS[0]: ""}},
    ]
    answers = _selftest(selftest, [f"key {json.dumps(d).encode().hex()}\tc" for d in common])
    assert "DEFER" not in answers


def test_delete_response_matches_python(selftest: str) -> None:
    cases = [(0, 0, 1), (1234, 137, 1_700_000_000_123_456_789), (2**31, 255, 5_000_000_000)]
    rnd = random.Random(3)
    cases += [
        (rnd.randrange(0, 2**22), rnd.choice([0, 1, 137, 255]), rnd.randrange(0, 2**63))
        for _ in range(300)
    ]
    got = _selftest(selftest, [f"del {p} {s} {t}" for p, s, t in cases])
    assert got == [encode_delete_response(p, s, t).hex() for p, s, t in cases]


def test_the_c_source_uses_pythons_names() -> None:
    """The constants the front end shares with the Python side, where it spells them out."""
    source = Path(install.NATIVE_SOURCE).read_text()
    assert f'#define SOCKET_ROOT "{paths.SOCKET_ROOT}"' in source
    assert f'#define RUNC_STATE_ROOT "{paths.RUNC_STATE_ROOT}"' in source
    assert f'#define CGROUP_ROOT "{paths.CGROUP_ROOT}"' in source
    assert f'#define ZYGOTE_PROTOCOL "{zygote_module.PROTOCOL.decode()}"' in source
    controllers = ", ".join(f'"{c}/"' for c in paths.CGROUP_V1_CONTROLLERS)
    assert " ".join(f'"", {controllers}'.split()) in " ".join(source.split())
    names = (paths.CONFIG, paths.ROOTFS, paths.ADDRESS, paths.INIT_PID, paths.CGROUP)
    for name in (*names, paths.SCRATCH, paths.RUNC_ROOT):
        assert f'"{name}"' in source or f'"%s/{name}"' in source, name
    # in Python's order: the first one set wins
    ordered = ", ".join(f'"{a}"' for a in GROUP_ANNOTATIONS)
    assert f"GROUP_ANNOTATIONS[] = {{{ordered}}};" in source


# --- start ---------------------------------------------------------------------------------


def test_start_is_the_same_as_pythons(shims: Shims, zygote: Zygote, tmp_path: Path) -> None:
    results: list[tuple[subprocess.CompletedProcess[bytes], Path, int]] = []
    for binary in (shims.python, shims.native):
        b = bundle(tmp_path, f"b-{len(results)}")
        cid = f"fe-same-{os.getpid()}"
        # -debug, a flag with `=`, and -bundle: forms containerd uses
        r = run(binary, start_argv(cid, "-debug", "--namespace=ns1"), b, shim_env(zygote))
        with cleanup_socket(socket_of(r.stdout)):
            mode = os.stat(socket_of(r.stdout)).st_mode
        results.append((r, b, mode))
    (py, py_bundle, py_mode), (c, c_bundle, c_mode) = results
    assert (c.returncode, c.stdout, c.stderr) == (py.returncode, py.stdout, py.stderr)
    assert py.returncode == 0
    assert py.stdout.startswith(b"unix:///run/containerd/s/")
    assert (c_bundle / "address").read_bytes() == (py_bundle / "address").read_bytes()
    assert stat.S_ISSOCK(c_mode)
    assert stat.S_IMODE(c_mode) == stat.S_IMODE(py_mode) == 0o600
    assert shims.deferrals() == []
    assert len(zygote.requests) == 2
    (py_req, py_fds), (c_req, c_fds) = zygote.requests
    assert py_fds == c_fds == 1
    # the same request but for the bundle (each run has its own)
    assert c_req.replace(bytes(c_bundle), b"B")[4:] == py_req.replace(bytes(py_bundle), b"B")[4:]
    assert int.from_bytes(c_req[:4], "big") == len(c_req) - 4


def test_start_with_a_live_server_only_prints_its_address(
    shims: Shims, zygote: Zygote, tmp_path: Path
) -> None:
    cid = f"fe-live-{os.getpid()}"
    path = socket_address(f"/run/frontend-test-{os.getpid()}/containerd.sock", "ns1", cid)
    path = path.removeprefix("unix://")
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with cleanup_socket(path), live:
        live.bind(path)
        live.listen(4)
        outs = [
            run(binary, start_argv(cid), bundle(tmp_path, f"b{i}"), shim_env(zygote))
            for i, binary in enumerate((shims.python, shims.native))
        ]
    assert outs[0].stdout == outs[1].stdout == f"unix://{path}".encode()
    assert outs[0].returncode == outs[1].returncode == 0
    assert zygote.requests == []
    assert shims.deferrals() == []


@pytest.mark.parametrize(
    ("annotation", "value", "native"),
    [(a, f"group-of-{a}", True) for a in GROUP_ANNOTATIONS]
    + [(GROUP_ANNOTATIONS[1], "caf\u00e9", False), (GROUP_ANNOTATIONS[0], 'a"b', False)],
)
def test_start_of_a_grouped_container_is_the_same_as_pythons(
    shims: Shims, zygote: Zygote, tmp_path: Path, annotation: str, value: str, native: bool
) -> None:
    """Every annotation that groups containers in Python's `start` (a new one too); a value
    with escapes in its JSON is Python's to decode."""
    config = json.dumps({"ociVersion": "1.0.2", "annotations": {annotation: value}})
    cid = f"fe-group-{os.getpid()}"
    py = run(shims.python, start_argv(cid), bundle(tmp_path, "py", config), shim_env(zygote))
    with cleanup_socket(socket_of(py.stdout)):
        pass
    c = run(shims.native, start_argv(cid), bundle(tmp_path, "c", config), shim_env(zygote))
    with cleanup_socket(socket_of(c.stdout)):
        pass
    assert (c.returncode, c.stdout) == (py.returncode, py.stdout)
    assert py.stdout.decode() == socket_address(
        f"/run/frontend-test-{os.getpid()}/containerd.sock", "ns1", value
    )
    assert len(shims.deferrals()) == (0 if native else 1)


@pytest.mark.parametrize("reply", [b"stale", b"err no", b""])
def test_start_defers_when_the_zygote_does_not_take_the_listener(
    shims: Shims, tmp_path: Path, reply: bytes
) -> None:
    z = Zygote(str(tmp_path / "z.sock"), reply)
    shims.stop.touch()  # the Python side would serve the container itself: not here
    try:
        cid = f"fe-stale-{os.getpid()}"
        c = run(shims.native, start_argv(cid), bundle(tmp_path, "c"), shim_env(z))
    finally:
        z.close()
    path = socket_address(f"/run/frontend-test-{os.getpid()}/containerd.sock", "ns1", cid)
    assert (c.returncode, c.stdout) == (3, b"FALLBACK")
    assert len(z.requests) == 1
    assert len(shims.deferrals()) == 1
    # the socket it bound is gone again: Python binds its own
    assert not os.path.exists(path.removeprefix("unix://"))
    assert not (tmp_path / "c" / "address").exists()


def test_start_defers_without_a_zygote(shims: Shims, tmp_path: Path) -> None:
    shims.stop.touch()
    for env in (shim_env(None, PYWASM_ZYGOTE="off"), shim_env(None)):
        c = run(shims.native, start_argv(f"fe-nozyg-{os.getpid()}"), tmp_path, env)
        assert (c.returncode, c.stdout) == (3, b"FALLBACK")
    assert len(shims.deferrals()) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["-v"],
        ["--version"],
        ["-namespace", "x", "-info"],
        ["-namespace", "x", "-newflag", "v", "-id", "c", "bogus"],
        ["-namespace", "x", "-id"],
        ["-id", "c"],
        ["-id", "c", "serve"],
    ],
)
def test_other_command_lines_are_pythons(shims: Shims, tmp_path: Path, argv: list[str]) -> None:
    py = run(shims.python, argv, tmp_path, shim_env(None))
    c = run(shims.native, argv, tmp_path, shim_env(None))
    assert (c.returncode, c.stdout, c.stderr) == (py.returncode, py.stdout, py.stderr)
    assert shims.deferrals() == [" ".join(argv)]


# --- delete --------------------------------------------------------------------------------


def delete_argv(b: Path) -> list[str]:
    return ["-namespace", "ns1", "-address", "/run/x.sock", "-id", "c1", "-bundle", str(b),
            "delete"]  # fmt: skip


def _stale_socket() -> str:
    path = f"/run/containerd/s/frontend-test-{os.getpid()}-{time.monotonic_ns()}"
    os.makedirs("/run/containerd/s", exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # nobody listens: connect is refused
    return path


@pytest.mark.parametrize("pid", ["", "999999999", " 4321\n", "12x", "007"])
def test_delete_is_the_same_as_pythons(shims: Shims, tmp_path: Path, pid: str) -> None:
    answers: list[tuple[int, int]] = []
    for binary in (shims.python, shims.native):
        b = tmp_path / f"b-{len(answers)}"
        (b / "rootfs").mkdir(parents=True)  # not a mount point: nothing to unmount
        if pid:
            (b / "init.pid").write_text(pid)
        stale = _stale_socket()
        (b / "address").write_text(f"unix://{stale}")
        (b / "pywasm-cgroup").write_text("/frontend-test/not/there")
        t0 = time.time_ns()
        r = run(binary, delete_argv(b), tmp_path, shim_env(None))
        t1 = time.time_ns()
        assert r.returncode == 0
        assert r.stderr == b""
        assert not os.path.exists(stale)
        msg = pb.DeleteResponse.FromString(r.stdout)
        assert t0 <= msg.exited_at.ToNanoseconds() <= t1
        answers.append((msg.pid, msg.exit_status))
    assert answers[0] == answers[1]
    assert answers[0][1] == 137
    assert shims.deferrals() == []


def test_delete_keeps_a_live_socket(shims: Shims, tmp_path: Path) -> None:
    path = f"/run/containerd/s/frontend-test-live-{os.getpid()}"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with cleanup_socket(path), live:
        live.bind(path)
        live.listen(4)
        (tmp_path / "address").write_text(f"unix://{path}")
        r = run(shims.native, ["-id", "c1", "delete"], tmp_path, shim_env(None))
        assert r.returncode == 0
        assert os.path.exists(path)
    assert pb.DeleteResponse.FromString(r.stdout).exit_status == 137
    assert shims.deferrals() == []


def _leftover_worker(b: Path) -> Iterator[None]:
    worker = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "pywasmd.shim.worker"]
    )
    (b / "init.pid").write_text(str(worker.pid))
    try:
        yield
    finally:
        worker.kill()
        worker.wait()


@pytest.mark.parametrize("leftover", ["worker", "scratch", "runc", "non-ascii"])
def test_delete_defers_what_a_dead_server_left(shims: Shims, tmp_path: Path, leftover: str) -> None:
    shims.stop.touch()
    with contextlib.ExitStack() as stack:
        if leftover == "worker":
            stack.enter_context(contextlib.contextmanager(_leftover_worker)(tmp_path))
        elif leftover == "scratch":
            (tmp_path / "pywasm-mounts").mkdir()
        elif leftover == "runc":
            (tmp_path / "pywasm-runc").write_text("/run/pywasm/runc/ns1")
        else:
            (tmp_path / "pywasm-cgroup").write_text("/k\u00e9")
        r = run(shims.native, delete_argv(tmp_path), tmp_path, shim_env(None))
    assert (r.returncode, r.stdout) == (3, b"FALLBACK")
    assert shims.deferrals() == [" ".join(delete_argv(tmp_path))]


def test_delete_of_a_runc_root_outside_pywasms_is_ignored(shims: Shims, tmp_path: Path) -> None:
    (tmp_path / "pywasm-runc").write_text("/run/pywasm/runc/../../etc")
    r = run(shims.native, delete_argv(tmp_path), tmp_path, shim_env(None))
    assert r.returncode == 0
    assert pb.DeleteResponse.FromString(r.stdout).exit_status == 137
    assert shims.deferrals() == []


def test_a_changed_python_side_sends_everything_to_python(shims: Shims, tmp_path: Path) -> None:
    """A checkout that changed a file the front end copies, without a rebuild: Python runs."""
    watched = tmp_path / "bootstrap.py"
    watched.write_text("# v1\n")
    binary = str(tmp_path / "shim")
    install.build_frontend(
        binary, str(shims.tmp / "libexec" / "wrapper"), "/nonexistent", [str(watched)]
    )
    shims.stop.touch()
    b = tmp_path / "b"
    b.mkdir()
    r = run(binary, delete_argv(b), tmp_path, shim_env(None))
    assert r.returncode == 0
    assert pb.DeleteResponse.FromString(r.stdout).exit_status == 137
    assert shims.deferrals() == []
    st = watched.stat()
    os.utime(watched, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    r = run(binary, delete_argv(b), tmp_path, shim_env(None))
    assert (r.returncode, r.stdout) == (3, b"FALLBACK")
    assert len(shims.deferrals()) == 1


def test_the_watched_files_exist() -> None:
    for name in install.WATCHED:
        assert os.path.isfile(os.path.join(ROOT, name)), name


# --- install ---------------------------------------------------------------------------------


def test_install_puts_the_front_end_first_and_python_behind_it(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    target, why = install.install(str(bindir))
    assert why is None
    assert Path(target).read_bytes()[:4] == b"\x7fELF"
    fallback = Path(install.libexec_dir(str(bindir))) / install.SHIM_NAME
    assert fallback.read_text() == install.launcher_text(sys.executable, ROOT)
    # the fallback is what the binary runs: the version is Python's
    r = subprocess.run([target, "-v"], capture_output=True, text=True, check=False)
    assert r.returncode == 0
    assert r.stdout.startswith("containerd-shim-pywasm-v1 ")

    target, why = install.install(str(bindir), native=False)
    assert why == "--python-only"
    assert Path(target).read_text() == install.launcher_text(sys.executable, ROOT)


def test_install_without_a_compiler_installs_the_launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(install, "NATIVE_SOURCE", str(tmp_path / "missing.c"))
    target, why = install.install(str(tmp_path / "bin"))
    assert why is not None
    assert "missing.c" in why
    assert Path(target).read_text() == install.launcher_text(sys.executable, ROOT)
    assert [p.name for p in (tmp_path / "bin").iterdir()] == [install.SHIM_NAME]
