"""The Wasm binary format, as much of it as pywasmd reads or writes, in one place.

The 8-byte header (magic ``\\0asm``, then a version and layer that say core module or
component), the section framing, and LEB128 numbers.  Pure functions on bytes, importing
nothing but :mod:`pywasmd.errors`: engines, the OCI code, the image tools and the shim's
``delete`` (whose protobuf varints are the same unsigned LEB128, from :mod:`pywasmd.leb128`)
use it.
"""

from __future__ import annotations

from pywasmd.errors import InvalidArgument
from pywasmd.leb128 import encode as uleb128

# Not from typing or collections.abc at run time: the shim's ``delete`` imports this module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

MAGIC = b"\0asm"
#: Version 1, the only core module version.
CORE_VERSION = b"\x01\x00\x00\x00"
#: A component's version is 0x0d (pre-1.0 component model), its layer 1.
COMPONENT_LAYER = b"\x01\x00"
CORE_MODULE_HEADER = MAGIC + CORE_VERSION
COMPONENT_HEADER = MAGIC + b"\x0d\x00" + COMPONENT_LAYER
HEADER_SIZE = 8

MODULE = "module"
COMPONENT = "component"

WASM_PAGE = 65536
MEMORY_SECTION = 5
_HAS_MAX = 0x01
_CUSTOM_PAGE_SIZE = 0x08


def is_wasm(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) starts like any Wasm binary."""
    return head[:4] == MAGIC


def binary_kind(header: bytes, what: str) -> str:
    """:data:`MODULE` or :data:`COMPONENT`, from a binary's first 8 bytes; refuses the rest."""
    if header[:4] != MAGIC:
        raise InvalidArgument(f"{what}: not a WebAssembly binary (starts {header[:8].hex(' ')})")
    if len(header) < HEADER_SIZE:
        raise InvalidArgument(f"{what}: truncated WebAssembly binary ({len(header)} bytes)")
    if header[4:8] == CORE_VERSION:
        return MODULE
    if header[6:8] == COMPONENT_LAYER:
        return COMPONENT
    raise InvalidArgument(
        f"{what}: unknown WebAssembly version/layer {header[4:8].hex(' ')} (expected "
        "01 00 00 00 for a core module or 0d 00 01 00 for a WASI preview 2 component)"
    )


# --- LEB128 (encoding in pywasmd.leb128, which ``delete`` imports without the rest) -----


class Truncated(Exception):
    """A read ran past the end of the binary (or of the section being read)."""


class Unknown(Exception):
    """An encoding this reader does not know (an over-long number, a new kind byte)."""


class Reader:
    """A cursor over ``data[pos:end]``."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise Truncated
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self) -> int:
        return self._unsigned(35)

    def u64(self) -> int:
        return self._unsigned(70)

    def _unsigned(self, max_shift: int) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift >= max_shift:
                raise Unknown

    def s33(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if b & 0x40:
                    result -= 1 << shift
                return result
            if shift > 35:
                raise Unknown

    def name(self) -> str:
        n = self.u32()
        if self.pos + n > self.end:
            raise Truncated
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip(self, n: int) -> None:
        if self.pos + n > self.end:
            raise Truncated
        self.pos += n


def sections(data: bytes, what: str) -> Iterator[tuple[int, Reader]]:
    """``(section id, reader over its body)`` for each top-level section after the header.

    A section that claims more bytes than the file has is a truncated binary (a cut
    download or copy), refused with its offset; an over-long size raises :class:`Unknown`.
    """
    r = Reader(data, HEADER_SIZE)
    try:
        while r.pos < r.end:
            section = r.byte()
            size = r.u32()
            if r.pos + size > r.end:
                raise InvalidArgument(
                    f"{what}: truncated WebAssembly binary: section {section} needs {size} "
                    f"bytes at offset {r.pos}, the file has {r.end - r.pos} left"
                )
            body = Reader(data, r.pos, r.pos + size)
            r.skip(size)
            yield section, body
    except Truncated:
        raise InvalidArgument(f"{what}: truncated WebAssembly binary") from None


def cap_memories(wasm: bytes, limit: int, what: str) -> bytes:
    """``wasm`` with every memory it defines limited to ``limit`` bytes (rounded down to pages).

    For engines without store limits: with the cap in the module's own memory type, a
    ``memory.grow`` past it fails inside the guest exactly as a store limit would make it fail.
    """
    if wasm[:HEADER_SIZE] != CORE_MODULE_HEADER:
        raise InvalidArgument(f"{what} is not a core Wasm module; cannot cap its memory")
    cap = limit // WASM_PAGE
    out = bytearray(wasm[:HEADER_SIZE])
    try:
        for section, body in sections(wasm, what):
            if section == MEMORY_SECTION:
                new = _capped_memory_section(body, cap, limit, what)
            else:
                new = wasm[body.pos : body.end]
            out += bytes([section]) + uleb128(len(new)) + new
    except (Truncated, Unknown):
        raise InvalidArgument(f"{what} has a malformed section") from None
    return bytes(out)


def _capped_memory_section(r: Reader, cap: int, limit: int, what: str) -> bytes:
    count = r.u32()
    new = bytearray(uleb128(count))
    for _ in range(count):
        flags = r.u32()
        minimum = r.u64()
        maximum = cap
        if flags & _HAS_MAX:
            maximum = min(r.u64(), cap)
        if flags & _CUSTOM_PAGE_SIZE:
            raise InvalidArgument(
                f"{what} uses custom page sizes; its memory cannot be capped by this engine"
            )
        if minimum > cap:
            raise InvalidArgument(
                f"{what} needs {minimum * WASM_PAGE} bytes of memory at start, more than "
                f"linux.resources.memory.limit ({limit} bytes)"
            )
        new += uleb128(flags | _HAS_MAX) + uleb128(minimum) + uleb128(maximum)
    if r.pos != r.end:
        raise InvalidArgument(f"{what} has a malformed memory section")
    return bytes(new)
