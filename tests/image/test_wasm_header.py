"""Reading a Wasm binary's header, imports and exports (pywasmd.image.wasm)."""

from __future__ import annotations

import pytest
import wasmtime

from pywasmd.errors import InvalidArgument
from pywasmd.image import wasm

CORE = wasmtime.wat2wasm(
    """(module
      (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
      (import "env" "mem" (memory 1))
      (import "env" "g" (global i32))
      (import "env" "t" (table 1 funcref))
      (func (export "_start"))
      (memory (export "memory") 1))"""
)

COMPONENT = wasmtime.wat2wasm(
    """(component
      (import "wasi:cli/stdout@0.2.0" (instance))
      (import "f" (func))
      (core module $m (func (export "run")))
      (core instance $i (instantiate $m))
      (func $r (canon lift (core func $i "run")))
      (export "wasi:cli/run@0.2.0" (func $r)))"""
)


def test_core_module() -> None:
    info = wasm.parse(CORE)
    assert (info.kind, info.version, info.wasi) == ("module", 1, "wasip1")
    assert info.imports == (
        "wasi_snapshot_preview1#fd_write",
        "wasi_snapshot_preview1#proc_exit",
        "env#mem",
        "env#g",
        "env#t",
    )
    assert info.import_modules == ("wasi_snapshot_preview1", "env")
    assert info.exports == ("_start", "memory (memory)")
    assert not info.partial


def test_component() -> None:
    info = wasm.parse(COMPONENT)
    assert (info.kind, info.version, info.wasi) == ("component", 13, "wasip2")
    assert info.imports == ("wasi:cli/stdout@0.2.0", "f")
    assert info.exports == ("wasi:cli/run@0.2.0",)
    assert info.import_modules == ()


def test_header_only_module() -> None:
    info = wasm.parse(b"\0asm\x01\0\0\0")
    assert info.kind == "module"
    assert info.imports == info.exports == ()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "not a WebAssembly binary"),
        (b"\x7fELF\x02\x01\x01\x00", "not a WebAssembly binary (starts 7f 45 4c 46"),
        (b"\0asm\x01", "truncated WebAssembly binary (5 bytes)"),
        (b"\0asm\x02\0\0\0", "unknown WebAssembly version/layer 02 00 00 00"),
        (CORE[: len(CORE) // 2], "truncated WebAssembly binary"),
        (COMPONENT[:-3], "truncated WebAssembly binary"),
    ],
)
def test_refusals(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        wasm.parse(data, "app.wasm")
    assert needle in e.value.message


def test_undecodable_section_is_partial_not_fatal() -> None:
    # An import section whose descriptor kind (0x7f) no encoding defines.
    body = b"\x01\x01m\x01f\x7f"
    data = b"\0asm\x01\0\0\0" + bytes([2, len(body)]) + body
    info = wasm.parse(data)
    assert info.partial
    assert info.imports == ()
