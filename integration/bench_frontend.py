"""What the shim's `start` and `delete` cost, for one shim binary: `python -m
integration.bench_frontend [--shim PATH] cpu|ctr [-n N]`.

- `cpu`: the subcommand alone, N times each, no containerd: `delete` in an empty bundle (the
  common case: the server already cleaned up) and `start` against a stand-in zygote that
  takes the listener and answers `ok` (so no server is forked). Wall time and the process's
  CPU time (user + system, from wait4's rusage), medians.
- `ctr`: `ctr run --rm` of the hello guest against busybox `echo hi` under runc on a private
  containerd 1.6 (or --version 2.1), interleaved, as integration/bench.py's start target does
  (its `start_latency`), with the pywasm shim replaced by `--shim`: end-to-end medians and the
  spans of `start` and `delete` (spanwrap).
- `tput`: bench.py's throughput target (`ctr run --rm` hello, N per runtime, 4 in parallel,
  blocks ABBA) with the pywasm shim replaced by `--shim`: tasks per second.

Used to decide and to document the compiled front end (docs/performance.md); not part of
`make bench`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SOCKET_ROOT = "/run/containerd/s"


class FakeZygote:
    """Accepts `start`'s request, keeps the bytes, closes the listener fd, answers `reply`."""

    def __init__(self, path: str, reply: bytes = b"ok 1") -> None:
        self.path = path
        self.reply = reply
        self.requests: list[bytes] = []
        self.fd_counts: list[int] = []
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 4)
                size = int.from_bytes(data[:4], "big")
                while len(data) - 4 < size:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                self.fd_counts.append(len(fds))
                for fd in fds:
                    os.close(fd)
                with contextlib.suppress(OSError):
                    conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def run_timed(argv: list[str], cwd: str, env: dict[str, str]) -> tuple[float, float, int, bytes]:
    """(wall s, CPU s, exit status, stdout) of one process."""
    r, w = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(cwd)
            os.dup2(w, 1)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    return wall, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status), out


def shim_argv(shim: str, cid: str, action: str, bundle: str) -> list[str]:
    return [
        shim,
        "-namespace",
        "bench",
        "-address",
        "/run/bench-frontend/containerd.sock",
        "-publish-binary",
        "/usr/bin/containerd",
        "-id",
        cid,
        *(["-bundle", bundle] if action == "delete" else []),
        action,
    ]


def cpu(shim: str, n: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="pywasmd-frontend-"))
    zpath = str(tmp / "zygote.sock")
    zygote = FakeZygote(zpath)
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "TTRPC_ADDRESS": "/run/bench-frontend/containerd.sock.ttrpc",
        "GOMAXPROCS": "2",
        "PYWASM_ZYGOTE_SOCKET": zpath,
    }
    res: dict[str, Any] = {"start": [], "delete": []}
    made: list[str] = []
    try:
        for i in range(n):
            bundle = tmp / f"b{i}"
            bundle.mkdir()
            (bundle / "config.json").write_text('{"ociVersion": "1.0.2", "annotations": {}}')
            cid = f"fe-{os.getpid()}-{i}"
            for action in ("start", "delete"):
                wall, cpu_s, code, out = run_timed(
                    shim_argv(shim, cid, action, str(bundle)), str(bundle), env
                )
                if code != 0:
                    raise RuntimeError(f"{action} exited {code}: {out!r}")
                if action == "start":
                    made.append(out.decode().removeprefix("unix://"))
                res[action].append((wall, cpu_s))
    finally:
        zygote.close()
        for path in made:
            with contextlib.suppress(OSError):
                os.unlink(path)
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        action: {
            "wall_ms": statistics.median(w for w, _ in xs) * 1000,
            "cpu_ms": statistics.median(c for _, c in xs) * 1000,
            "wall_min_ms": min(w for w, _ in xs) * 1000,
        }
        for action, xs in res.items()
    }


def _with_node(shim: str, version: str, step: Callable[[Any], None]) -> None:
    """A bench Node whose pywasm shim is `shim`, with the hello and busybox images."""
    from integration.bench_node import Node, archives, import_images

    with Node(version) as node:
        link = node.real_dir / "containerd-shim-pywasm-v1"
        link.unlink()
        link.symlink_to(shim)
        wanted = {k: v for k, v in archives(False).items() if "hello" in k or "busybox" in k}
        import_images(node.ctrd, wanted)
        step(node)


def tput(shim: str, n: int, version: str) -> dict[str, Any]:
    from integration.bench import Settings, throughput

    res: dict[str, Any] = {}
    settings = Settings((version,), 0, 0, n, 4, 0, 0, 0, 0, 0.0)
    _with_node(shim, version, lambda node: throughput(node, settings, res))
    return {**res["throughput"], "failures": res.get("failures", {})}


def ctr(shim: str, n: int, version: str) -> dict[str, Any]:
    from integration.bench import RUNTIMES, Settings, start_latency

    res: dict[str, Any] = {}
    settings = Settings((version,), n, 0, 0, 4, 0, 0, 0, 0, 0.0)
    _with_node(shim, version, lambda node: start_latency(node, settings, res))
    out: dict[str, Any] = {"failures": res.get("failures", {})}
    for name in RUNTIMES:
        spans = res["spans"][name]
        out[name] = {
            "e2e_ms": statistics.median(res["start"][name]) * 1000,
            "runs": len(res["start"][name]),
            "start_ms": statistics.median(s["start"] for s in spans) * 1000 if spans else None,
            "delete_ms": statistics.median(s["delete"] for s in spans) * 1000 if spans else None,
            "span_ms": statistics.median(s["span"] for s in spans) * 1000 if spans else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integration.bench_frontend")
    parser.add_argument("mode", choices=("cpu", "ctr", "tput"))
    parser.add_argument("--shim", default="/usr/local/bin/containerd-shim-pywasm-v1")
    parser.add_argument("-n", type=int, default=30)
    parser.add_argument("--version", default="1.6")
    args = parser.parse_args(argv)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if args.mode == "cpu":
        result = cpu(args.shim, args.n)
    else:
        result = (ctr if args.mode == "ctr" else tput)(args.shim, args.n, args.version)
    print(f"{args.mode} {args.shim} n={args.n} load={os.getloadavg()[0]:.2f}")
    for key, value in result.items():
        print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
