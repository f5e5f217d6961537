"""Build the WASI guest programs in integration/guests/*.c into .cache/guests/<name>.wasm.

Each module is rebuilt only when its source (or the compiler flags) changed: the sha256 of
both is kept next to the module in <name>.wasm.sha256. The first build of a fresh machine takes
about 30 s while zig builds wasi-libc; later builds take well under a second each.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = REPO / "integration" / "guests"
OUT = REPO / ".cache" / "guests"
ZIG_CACHE = REPO / ".cache" / "zig"
CFLAGS = ["--target=wasm32-wasi", "-O2", "-s"]


def names() -> list[str]:
    return sorted(p.stem for p in SOURCES.glob("*.c"))


def _digest(src: Path) -> str:
    h = hashlib.sha256()
    h.update(" ".join(CFLAGS).encode())
    h.update(b"\0")
    h.update(src.read_bytes())
    return h.hexdigest()


def _compile(name: str) -> Path:
    src = SOURCES / f"{name}.c"
    out = OUT / f"{name}.wasm"
    stamp = OUT / f"{name}.wasm.sha256"
    digest = _digest(src)
    if out.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return out
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / f".{name}.{os.getpid()}.wasm"
    cmd = [sys.executable, "-m", "ziglang", "cc", *CFLAGS, "-o", str(tmp), str(src)]
    env = dict(os.environ, ZIG_GLOBAL_CACHE_DIR=str(ZIG_CACHE), ZIG_LOCAL_CACHE_DIR=str(ZIG_CACHE))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"building {src} failed ({proc.returncode}):\n{proc.stderr}")
    if tmp.read_bytes()[:4] != b"\0asm":
        raise RuntimeError(f"building {src} produced something that is not Wasm: {tmp}")
    tmp.replace(out)
    stamp.write_text(digest + "\n")
    return out


def build(name: str) -> Path:
    """Build one guest (if needed) and return the path of its module."""
    return _compile(name)


def build_all() -> dict[str, Path]:
    """Build every guest (if needed); returns name -> module path."""
    todo = names()
    if not todo:
        raise RuntimeError(f"no guest sources in {SOURCES}")
    # The first build also builds wasi-libc into zig's cache; do it alone, then the rest.
    first = {todo[0]: _compile(todo[0])}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        rest = dict(zip(todo[1:], pool.map(_compile, todo[1:]), strict=True))
    return first | rest


def main() -> None:
    t0 = time.monotonic()
    built = build_all()
    for name, path in built.items():
        print(f"{name:10} {path} ({path.stat().st_size} bytes)")
    print(f"built {len(built)} guests in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    main()
