"""Unsigned LEB128, the variable-length integers of the Wasm binary format, which protobuf
calls varints.  No imports: the shim's ``delete`` encodes its reply with it."""

from __future__ import annotations


def encode(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
