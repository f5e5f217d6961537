"""ttrpc framing, sans-IO: bytes in, frames out, and back.

Every ttrpc message is a 10-byte big-endian header (data length u32, stream id u32, type u8,
flags u8) followed by ``length`` bytes of data. Nothing here touches a socket, so the same
code serves the server, the client and the fuzz tests.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER_LEN = 10
# ttrpc's messageLengthMax: a receiver skips anything larger and fails that stream.
MAX_DATA = 4 << 20

TYPE_REQUEST = 1
TYPE_RESPONSE = 2
TYPE_DATA = 3

FLAG_REMOTE_CLOSED = 1
FLAG_REMOTE_OPEN = 2
FLAG_NO_DATA = 4

MAX_STREAM_ID = 0xFFFFFFFF

_HEADER = struct.Struct(">IIBB")


class FrameTooLarge(ValueError):
    """Refused to encode a frame whose data exceeds MAX_DATA."""

    def __init__(self, length: int) -> None:
        super().__init__(f"message length {length} exceeds maximum message size of {MAX_DATA}")
        self.length = length


@dataclass(frozen=True)
class Frame:
    stream_id: int
    type: int
    flags: int
    data: bytes


@dataclass(frozen=True)
class OversizedFrame:
    """A frame whose data was longer than MAX_DATA; its data is dropped, only the header kept.

    The server answers ``stream_id`` with ResourceExhausted, as Go ttrpc does, and the
    connection stays usable.
    """

    stream_id: int
    length: int


def encode_frame(frame: Frame) -> bytes:
    """Header plus data, ready for one write()."""
    length = len(frame.data)
    if length > MAX_DATA:
        raise FrameTooLarge(length)
    if not 0 <= frame.stream_id <= MAX_STREAM_ID:
        raise ValueError(f"stream id {frame.stream_id} does not fit in 32 bits")
    if not (0 <= frame.type <= 0xFF and 0 <= frame.flags <= 0xFF):
        raise ValueError(f"type {frame.type} / flags {frame.flags} do not fit in a byte")
    return _HEADER.pack(length, frame.stream_id, frame.type, frame.flags) + frame.data


class FrameDecoder:
    """Incremental decoder: feed it whatever the socket returned, get back whole frames.

    Holds at most one partial frame (≤ HEADER_LEN + MAX_DATA bytes). The data of an oversized
    frame is counted off as it arrives and never stored, so a peer cannot make us buffer more
    than MAX_DATA by lying in a header.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held or still to skip: non-zero at EOF means truncation."""
        return len(self._buf) + self._skip

    def feed(self, data: bytes) -> list[Frame | OversizedFrame]:
        view = memoryview(data)
        if self._skip:
            n = min(self._skip, len(view))
            self._skip -= n
            view = view[n:]
        self._buf += view
        out: list[Frame | OversizedFrame] = []
        while not self._skip and len(self._buf) >= HEADER_LEN:
            length, stream_id, type_, flags = _HEADER.unpack_from(self._buf)
            if length > MAX_DATA:
                del self._buf[:HEADER_LEN]
                n = min(length, len(self._buf))
                del self._buf[:n]
                self._skip = length - n
                out.append(OversizedFrame(stream_id, length))
                continue
            end = HEADER_LEN + length
            if len(self._buf) < end:
                break
            out.append(Frame(stream_id, type_, flags, bytes(self._buf[HEADER_LEN:end])))
            del self._buf[:end]
        return out
