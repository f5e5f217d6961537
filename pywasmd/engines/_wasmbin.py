"""Just enough of the Wasm binary format to tell modules from components and to cap memories.

Pure functions on bytes; no engine library is imported here.
"""

from __future__ import annotations

from typing import Literal

from pywasmd.errors import InvalidArgument

#: ``\0asm`` + version 1 (core module).
CORE_MODULE_HEADER = b"\0asm\x01\x00\x00\x00"
#: ``\0asm`` + version 0x0d (component-model draft) + layer 1 (component).
COMPONENT_HEADER = b"\0asm\x0d\x00\x01\x00"

WASM_PAGE = 65536
_MEMORY_SECTION = 5
_HAS_MAX = 0x01
_CUSTOM_PAGE_SIZE = 0x08


def binary_kind(header: bytes, what: str) -> Literal["module", "component"]:
    """Which kind of binary starts with ``header`` (its first 8 bytes)."""
    if header[:8] == CORE_MODULE_HEADER:
        return "module"
    if header[:4] == b"\0asm" and header[6:8] == b"\x01\x00":
        return "component"
    if header[:4] == b"\0asm":
        raise InvalidArgument(
            f"{what} is a Wasm binary of an unknown version {header[4:8].hex()}: "
            "pywasm runs core modules (version 1) and WASI preview 2 components"
        )
    raise InvalidArgument(f"{what} is not a Wasm binary (it does not start with \\0asm)")


def _read_uleb(data: bytes | bytearray, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise InvalidArgument("Wasm module is truncated inside a LEB128 number")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def cap_memories(wasm: bytes, limit: int, what: str) -> bytes:
    """``wasm`` with every memory it defines limited to ``limit`` bytes (rounded down to pages).

    For engines without store limits: with the cap in the module's own memory type, a
    ``memory.grow`` past it fails inside the guest exactly as a store limit would make it fail.
    """
    if wasm[:8] != CORE_MODULE_HEADER:
        raise InvalidArgument(f"{what} is not a core Wasm module; cannot cap its memory")
    cap = limit // WASM_PAGE
    out = bytearray(wasm[:8])
    pos = 8
    while pos < len(wasm):
        section_id = wasm[pos]
        size, body = _read_uleb(wasm, pos + 1)
        end = body + size
        if section_id != _MEMORY_SECTION:
            out += wasm[pos:end]
            pos = end
            continue
        count, p = _read_uleb(wasm, body)
        new = bytearray(_uleb(count))
        for _ in range(count):
            flags, p = _read_uleb(wasm, p)
            minimum, p = _read_uleb(wasm, p)
            maximum = cap
            if flags & _HAS_MAX:
                declared, p = _read_uleb(wasm, p)
                maximum = min(declared, cap)
            if flags & _CUSTOM_PAGE_SIZE:
                raise InvalidArgument(
                    f"{what} uses custom page sizes; its memory cannot be capped by this engine"
                )
            if minimum > cap:
                raise InvalidArgument(
                    f"{what} needs {minimum * WASM_PAGE} bytes of memory at start, more than "
                    f"linux.resources.memory.limit ({limit} bytes)"
                )
            new += _uleb(flags | _HAS_MAX) + _uleb(minimum) + _uleb(maximum)
        if p != end:
            raise InvalidArgument(f"{what} has a malformed memory section")
        out += bytes([section_id]) + _uleb(len(new)) + new
        pos = end
    return bytes(out)
