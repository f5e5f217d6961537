"""Finding the guest's Wasm module inside a container's root filesystem."""

from __future__ import annotations

import os
import posixpath
import stat

from pywasmd.errors import InvalidArgument

WASM_MAGIC = b"\0asm"
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
            f"Wasm module {arg0!r} not found in the container rootfs; {hint}"
        ) from None
    except OSError as exc:
        raise InvalidArgument(f"Wasm module {arg0!r} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(f"Wasm module {arg0!r} is not a regular file; {hint}")
    with open(host, "rb") as f:
        head = f.read(8)
    if head[:4] != WASM_MAGIC:
        raise InvalidArgument(
            f"{arg0!r} is not a WebAssembly module (starts with {head[:4]!r}, expected "
            f"b'\\x00asm'); a Linux program needs io.containerd.runc.v2, not pywasm"
        )
    return host
