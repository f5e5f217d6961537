"""pywasmd.wasmbin: LEB128 both ways, section framing, header kinds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywasmd.errors import InvalidArgument
from pywasmd.leb128 import encode as uleb128
from pywasmd.wasmbin import (
    COMPONENT,
    COMPONENT_HEADER,
    CORE_MODULE_HEADER,
    MODULE,
    Reader,
    Unknown,
    binary_kind,
    sections,
)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_uleb128_reads_back(value: int) -> None:
    encoded = uleb128(value)
    reader = Reader(encoded + b"\xff")
    assert reader.u32() == value
    assert reader.pos == len(encoded)


def test_uleb128_known_bytes() -> None:
    # The examples of the Wasm spec and of protobuf's varint documentation.
    assert uleb128(0) == b"\x00"
    assert uleb128(150) == b"\x96\x01"
    assert uleb128(624485) == b"\xe5\x8e\x26"


def test_overlong_u32_is_unknown_not_a_hang() -> None:
    with pytest.raises(Unknown):
        Reader(b"\x80" * 6 + b"\x00").u32()


def test_sections_and_truncation() -> None:
    module = CORE_MODULE_HEADER + b"\x01\x02ab" + b"\x07\x00"
    assert [(sid, module[r.pos : r.end]) for sid, r in sections(module, "m")] == [
        (1, b"ab"),
        (7, b""),
    ]
    with pytest.raises(InvalidArgument, match="section 1 needs 9 bytes at offset 10"):
        list(sections(CORE_MODULE_HEADER + b"\x01\x09ab", "m"))
    with pytest.raises(InvalidArgument, match="m: truncated WebAssembly binary"):
        list(sections(CORE_MODULE_HEADER + b"\x01", "m"))


def test_header_kinds() -> None:
    assert binary_kind(CORE_MODULE_HEADER, "m") == MODULE
    assert binary_kind(COMPONENT_HEADER + b"rest", "m") == COMPONENT
    with pytest.raises(InvalidArgument, match=r"m: not a WebAssembly binary \(starts 23 21"):
        binary_kind(b"#!/bin/sh", "m")
