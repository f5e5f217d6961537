"""Finding the guest's Wasm module inside a container's root filesystem."""

from __future__ import annotations

import os
import posixpath
import stat

from pywasmd.errors import InvalidArgument
from pywasmd.paths import DEFAULT_PATH
from pywasmd.wasmbin import is_wasm

_MAX_LINKS = 40


def resolve_in_root(root: str, path: str) -> str:
    """Resolve ``path`` as if ``root`` were ``/``: symlinks never lead outside ``root``.

    An absolute link target restarts at ``root``; ``..`` stops at ``root``.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            resolved.extend(p for p in parts if p not in ("", "."))
            break
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise InvalidArgument(f"{path}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def locate_module(rootfs: str, arg0: str, cwd: str = "/") -> str:
    """The host path of the module that ``process.args[0]`` names, checked to be Wasm."""
    guest = arg0 if arg0.startswith("/") else posixpath.join(cwd, arg0)
    host = resolve_in_root(rootfs, guest)
    hint = (
        "process.args[0] must name a .wasm file in the image; build the image with "
        "`pywasm build app.wasm -t REF` or pass the module path as the command"
    )
    try:
        st = os.stat(host)
    except FileNotFoundError:
        raise InvalidArgument(
            f"Wasm module {arg0!r} not found in the container rootfs (no such file or "
            f"directory); {hint}"
        ) from None
    except OSError as exc:
        raise InvalidArgument(f"Wasm module {arg0!r} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(f"Wasm module {arg0!r} is not a regular file; {hint}")
    with open(host, "rb") as f:
        head = f.read(8)
    if not is_wasm(head):
        raise InvalidArgument(
            f"{arg0!r} is not a WebAssembly module (starts with {head[:4]!r}, expected "
            f"b'\\x00asm'); pywasm runs WebAssembly modules and hands executable Linux "
            "programs (ELF or #! scripts) to runc"
        )
    return host


#: What ``process.args[0]`` names: decides whether pywasm runs it or hands it to runc.
WASM = "wasm"
LINUX = "linux"
MISSING = "missing"


def _env_path(env: tuple[str, ...]) -> str:
    for entry in env:
        if entry.startswith("PATH="):
            return entry[5:]
    return DEFAULT_PATH


def program_kind(rootfs: str, arg0: str, cwd: str = "/", env: tuple[str, ...] = ()) -> str:
    """:data:`WASM`, :data:`LINUX` or :data:`MISSING`, by the first bytes of the program.

    Anything that is neither a module nor an executable ELF or ``#!`` script is
    :data:`MISSING`: the Wasm path then names what is wrong with it.

    A bare name is looked up as pywasm would (relative to the cwd) and then along the
    container's ``PATH``, as runc's exec would.
    """
    # A bare name next to the cwd counts only as a module (pywasm's reading); along PATH,
    # an executable counts as well (runc's reading).
    if "/" in arg0:
        candidates = [(arg0 if arg0.startswith("/") else posixpath.join(cwd, arg0), True)]
    else:
        candidates = [(posixpath.join(cwd, arg0), False)] + [
            (posixpath.join(d, arg0), True) for d in _env_path(env).split(":") if d.startswith("/")
        ]
    for guest, linux_ok in candidates:
        host = resolve_in_root(rootfs, guest)
        try:
            st = os.stat(host)
            if not stat.S_ISREG(st.st_mode):
                continue
            with open(host, "rb") as f:
                head = f.read(4)
        except (OSError, InvalidArgument):
            continue
        if is_wasm(head):
            return WASM
        if linux_ok and st.st_mode & 0o111 and head.startswith((b"\x7fELF", b"#!")):
            return LINUX
    return MISSING
