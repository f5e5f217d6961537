"""What a Wasm binary says about itself: module or component, and what it imports and exports.

Only the top level is read (the header, then the import and export sections), which is enough
for `pywasm inspect` and for the `component` field of an artifact's config. Anything we cannot
decode (a new encoding, a damaged section) ends the walk: the answer is then marked partial
rather than failing the build, since running the module is the engine's business, not ours.
"""

from __future__ import annotations

from dataclasses import dataclass

from pywasmd import wasmbin
from pywasmd.wasmbin import COMPONENT, MODULE, Reader, Truncated, Unknown

#: Kept for the callers that test a file's first bytes.
MAGIC = wasmbin.MAGIC

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
        return WASI_P2 if self.kind == COMPONENT else WASI_P1


def check_header(data: bytes, what: str) -> None:
    """Refuse anything that is not a whole Wasm header, saying what it looks like instead."""
    wasmbin.binary_kind(data[: wasmbin.HEADER_SIZE], what)


def parse(data: bytes, what: str = "module") -> WasmInfo:
    """Header and top-level imports/exports; raises InvalidArgument when it is not Wasm, or
    when the sections run past the end of the file (a truncated download or copy)."""
    kind = wasmbin.binary_kind(data[: wasmbin.HEADER_SIZE], what)
    version = int.from_bytes(data[4:6], "little")
    imports: list[str] = []
    exports: list[str] = []
    partial = False
    try:
        for section, body in wasmbin.sections(data, what):
            try:
                if kind == MODULE and section == _CORE_IMPORT:
                    imports += _core_imports(body)
                elif kind == MODULE and section == _CORE_EXPORT:
                    exports += _core_exports(body)
                elif kind == COMPONENT and section == _COMPONENT_IMPORT:
                    imports += _component_names(body, exports=False)
                elif kind == COMPONENT and section == _COMPONENT_EXPORT:
                    exports += _component_names(body, exports=True)
            except (Unknown, Truncated):
                partial = True
    except Unknown:
        partial = True
    modules = tuple(dict.fromkeys(i.split("#", 1)[0] for i in imports)) if kind == MODULE else ()
    return WasmInfo(kind, version, tuple(imports), tuple(exports), partial, modules)


def _core_imports(r: Reader) -> list[str]:
    out = []
    for _ in range(r.u32()):
        module, name = r.name(), r.name()
        out.append(f"{module}#{name}")
        _skip_import_desc(r)
    return out


def _skip_import_desc(r: Reader) -> None:
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
        raise Unknown


def _skip_reftype(r: Reader) -> None:
    b = r.byte()
    if b in (0x63, 0x64):  # (ref null? heaptype)
        r.s33()


def _skip_valtype(r: Reader) -> None:
    _skip_reftype(r)


def _skip_limits(r: Reader) -> None:
    flags = r.byte()
    if flags > 0x07:
        raise Unknown
    r.u32()  # LEB128 of any width reads the same for skipping purposes
    if flags & 0x01:
        r.u32()


def _core_exports(r: Reader) -> list[str]:
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


def _component_names(r: Reader, *, exports: bool) -> list[str]:
    out = []
    for _ in range(r.u32()):
        tag = r.byte()
        if tag not in (0x00, 0x01):
            raise Unknown
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


def _skip_externdesc(r: Reader) -> None:
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
        raise Unknown
