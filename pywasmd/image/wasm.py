"""What a Wasm binary says about itself: module or component, and what it imports and exports.

Only the top level is read (the header, then the import and export sections), which is enough
for `pywasm inspect` and for the `component` field of an artifact's config. Anything we cannot
decode (a new encoding, a damaged section) ends the walk: the answer is then marked partial
rather than failing the build, since running the module is the engine's business, not ours.
"""

from __future__ import annotations

from dataclasses import dataclass

from pywasmd.errors import InvalidArgument

MAGIC = b"\0asm"
_CORE_VERSION = b"\x01\x00\x00\x00"
# A component's preamble: version 0x0d (pre-1.0 component model) in layer 1.
_COMPONENT_LAYER = b"\x01\x00"

WASI_P1 = "wasip1"
WASI_P2 = "wasip2"

_CORE_IMPORT, _CORE_EXPORT = 2, 7
_COMPONENT_IMPORT, _COMPONENT_EXPORT = 10, 11
_CORE_EXPORT_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


@dataclass(frozen=True)
class WasmInfo:
    kind: str  # "module" or "component"
    version: int
    imports: tuple[str, ...] = ()
    exports: tuple[str, ...] = ()
    partial: bool = False  # the sections could not all be decoded
    import_modules: tuple[str, ...] = ()

    @property
    def wasi(self) -> str:
        """`wasip1` for core modules, `wasip2` for components (the artifact spec's `os`)."""
        return WASI_P2 if self.kind == "component" else WASI_P1


class _Truncated(Exception):
    pass


class _Unknown(Exception):
    pass


class _Reader:
    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise _Truncated
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 35:
                raise _Unknown

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
                raise _Unknown

    def name(self) -> str:
        n = self.u32()
        if self.pos + n > self.end:
            raise _Truncated
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip(self, n: int) -> None:
        if self.pos + n > self.end:
            raise _Truncated
        self.pos += n


def check_header(data: bytes, what: str) -> None:
    """Refuse anything that is not a whole Wasm header, saying what it looks like instead."""
    if data[:4] != MAGIC:
        raise InvalidArgument(f"{what}: not a WebAssembly binary (starts {data[:8].hex(' ')})")
    if len(data) < 8:
        raise InvalidArgument(f"{what}: truncated WebAssembly binary ({len(data)} bytes)")


def parse(data: bytes, what: str = "module") -> WasmInfo:
    """Header and top-level imports/exports; raises InvalidArgument when it is not Wasm, or
    when the sections run past the end of the file (a truncated download or copy)."""
    check_header(data, what)
    version = int.from_bytes(data[4:6], "little")
    if data[4:8] == _CORE_VERSION:
        kind = "module"
    elif data[6:8] == _COMPONENT_LAYER:
        kind = "component"
    else:
        raise InvalidArgument(
            f"{what}: unknown WebAssembly version/layer {data[4:8].hex(' ')} "
            "(expected 01 00 00 00 for a module or 0d 00 01 00 for a component)"
        )
    imports: list[str] = []
    exports: list[str] = []
    partial = False
    r = _Reader(data, 8)
    try:
        while r.pos < r.end:
            section = r.byte()
            size = r.u32()
            if r.pos + size > r.end:
                raise InvalidArgument(
                    f"{what}: truncated WebAssembly binary: section {section} needs {size} "
                    f"bytes at offset {r.pos}, the file has {r.end - r.pos} left"
                )
            body = _Reader(data, r.pos, r.pos + size)
            r.skip(size)
            try:
                if kind == "module" and section == _CORE_IMPORT:
                    imports += _core_imports(body)
                elif kind == "module" and section == _CORE_EXPORT:
                    exports += _core_exports(body)
                elif kind == "component" and section == _COMPONENT_IMPORT:
                    imports += _component_names(body, exports=False)
                elif kind == "component" and section == _COMPONENT_EXPORT:
                    exports += _component_names(body, exports=True)
            except (_Unknown, _Truncated):
                partial = True
    except _Truncated:
        raise InvalidArgument(f"{what}: truncated WebAssembly binary") from None
    except _Unknown:
        partial = True
    modules = tuple(dict.fromkeys(i.split("#", 1)[0] for i in imports)) if kind == "module" else ()
    return WasmInfo(kind, version, tuple(imports), tuple(exports), partial, modules)


def _core_imports(r: _Reader) -> list[str]:
    out = []
    for _ in range(r.u32()):
        module, name = r.name(), r.name()
        out.append(f"{module}#{name}")
        _skip_import_desc(r)
    return out


def _skip_import_desc(r: _Reader) -> None:
    kind = r.byte()
    if kind == 0x00:  # function: type index
        r.u32()
    elif kind == 0x01:  # table: reftype, limits
        _skip_reftype(r)
        _skip_limits(r)
    elif kind == 0x02:  # memory: limits
        _skip_limits(r)
    elif kind == 0x03:  # global: valtype, mutability
        _skip_valtype(r)
        r.byte()
    elif kind == 0x04:  # tag: attribute, type index
        r.byte()
        r.u32()
    else:
        raise _Unknown


def _skip_reftype(r: _Reader) -> None:
    b = r.byte()
    if b in (0x63, 0x64):  # (ref null? heaptype)
        r.s33()


def _skip_valtype(r: _Reader) -> None:
    _skip_reftype(r)


def _skip_limits(r: _Reader) -> None:
    flags = r.byte()
    if flags > 0x07:
        raise _Unknown
    r.u32()  # LEB128 of any width reads the same for skipping purposes
    if flags & 0x01:
        r.u32()


def _core_exports(r: _Reader) -> list[str]:
    out = []
    for _ in range(r.u32()):
        name = r.name()
        kind = r.byte()
        r.u32()
        if kind == 0:
            out.append(name)
        else:
            out.append(f"{name} ({_CORE_EXPORT_KINDS.get(kind, 'kind ' + str(kind))})")
    return out


def _component_names(r: _Reader, *, exports: bool) -> list[str]:
    out = []
    for _ in range(r.u32()):
        tag = r.byte()
        if tag not in (0x00, 0x01):
            raise _Unknown
        out.append(r.name())
        if tag == 0x01:  # a version suffix follows the name in the newer encoding
            r.name()
        if exports:
            sort = r.byte()
            if sort == 0x00:
                r.byte()
            r.u32()
            if r.byte() == 0x01:
                _skip_externdesc(r)
        else:
            _skip_externdesc(r)
    return out


def _skip_externdesc(r: _Reader) -> None:
    kind = r.byte()
    if kind == 0x00:  # core module: 0x11 typeidx
        r.byte()
        r.u32()
    elif kind in (0x01, 0x04, 0x05):  # func, component, instance: typeidx
        r.u32()
    elif kind == 0x02:  # value: eq valueidx, or a valtype
        if r.byte() == 0x00:
            r.u32()
        else:
            r.s33()
    elif kind == 0x03:  # type: eq typeidx, or sub resource
        if r.byte() == 0x00:
            r.u32()
    else:
        raise _Unknown
