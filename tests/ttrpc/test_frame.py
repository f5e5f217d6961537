from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pywasmd.ttrpc.frame import (
    HEADER_LEN,
    MAX_DATA,
    TYPE_DATA,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    Frame,
    FrameDecoder,
    FrameTooLarge,
    OversizedFrame,
    encode_frame,
)


def header(length: int, stream_id: int, type_: int = TYPE_REQUEST, flags: int = 0) -> bytes:
    return struct.pack(">IIBB", length, stream_id, type_, flags)


def test_encode_layout_matches_the_wire_format() -> None:
    frame = Frame(stream_id=5, type=TYPE_RESPONSE, flags=0, data=b"abc")
    assert encode_frame(frame) == b"\x00\x00\x00\x03\x00\x00\x00\x05\x02\x00abc"


@pytest.mark.parametrize(
    "frame",
    [
        Frame(1, TYPE_REQUEST, 0, b""),
        Frame(3, TYPE_RESPONSE, 0, b"payload"),
        Frame(0xFFFFFFFF, TYPE_DATA, 0x05, b"\x00" * 1000),
        Frame(7, TYPE_REQUEST, 0, b"x" * MAX_DATA),
    ],
)
def test_round_trip(frame: Frame) -> None:
    assert FrameDecoder().feed(encode_frame(frame)) == [frame]


def test_encode_refuses_oversize() -> None:
    with pytest.raises(FrameTooLarge):
        encode_frame(Frame(1, TYPE_REQUEST, 0, b"x" * (MAX_DATA + 1)))


@pytest.mark.parametrize(
    "frame", [Frame(-1, 1, 0, b""), Frame(1 << 32, 1, 0, b""), Frame(1, 256, 0, b"")]
)
def test_encode_refuses_out_of_range_header_fields(frame: Frame) -> None:
    with pytest.raises(ValueError, match="fit"):
        encode_frame(frame)


def test_truncated_header_waits_for_the_rest() -> None:
    wire = encode_frame(Frame(1, TYPE_REQUEST, 0, b"hello"))
    decoder = FrameDecoder()
    assert decoder.feed(wire[: HEADER_LEN - 1]) == []
    assert decoder.pending == HEADER_LEN - 1
    assert decoder.feed(wire[HEADER_LEN - 1 : HEADER_LEN + 2]) == []
    assert decoder.feed(wire[HEADER_LEN + 2 :]) == [Frame(1, TYPE_REQUEST, 0, b"hello")]
    assert decoder.pending == 0


def test_byte_by_byte_feeding() -> None:
    frames = [Frame(i * 2 + 1, TYPE_REQUEST, 0, bytes([i]) * i) for i in range(6)]
    wire = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    out: list[Frame | OversizedFrame] = []
    for i in range(len(wire)):
        out += decoder.feed(wire[i : i + 1])
    assert out == frames


def test_several_frames_in_one_chunk() -> None:
    frames = [Frame(1, TYPE_REQUEST, 0, b"a"), Frame(3, TYPE_REQUEST, 0, b"")]
    assert FrameDecoder().feed(b"".join(encode_frame(f) for f in frames)) == frames


def test_oversized_frame_is_skipped_without_buffering() -> None:
    length = MAX_DATA + 100
    decoder = FrameDecoder()
    assert decoder.feed(header(length, 9)) == [OversizedFrame(9, length)]
    chunk = b"\xff" * 65536
    remaining = length
    while remaining > len(chunk):
        assert decoder.feed(chunk) == []
        remaining -= len(chunk)
        # Looks inside on purpose: the point is that skipped bytes are never stored.
        assert len(decoder._buf) == 0
        assert decoder.pending == remaining
    after = Frame(11, TYPE_REQUEST, 0, b"next")
    assert decoder.feed(b"\xff" * remaining + encode_frame(after)) == [after]
    assert decoder.pending == 0


def test_oversized_frame_body_in_the_same_chunk_as_its_header() -> None:
    decoder = FrameDecoder()
    out = decoder.feed(header(MAX_DATA + 1, 1) + b"z" * 10)
    assert out == [OversizedFrame(1, MAX_DATA + 1)]
    assert decoder.pending == MAX_DATA + 1 - 10


frames_st = st.builds(
    Frame,
    stream_id=st.integers(0, 0xFFFFFFFF),
    type=st.integers(0, 255),
    flags=st.integers(0, 255),
    data=st.binary(max_size=300),
)


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(frames_st, max_size=8), cuts=st.lists(st.integers(0, 3000), max_size=10))
def test_any_chunking_decodes_the_same_frames(frames: list[Frame], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(f) for f in frames)
    points = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    decoder = FrameDecoder()
    out: list[Frame | OversizedFrame] = []
    for start, end in zip(points[:-1], points[1:], strict=True):
        out += decoder.feed(wire[start:end])
    assert out == frames
    assert decoder.pending == 0


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=200), max_size=20))
def test_garbage_never_raises_and_stays_bounded(chunks: list[bytes]) -> None:
    decoder = FrameDecoder()
    for chunk in chunks:
        for item in decoder.feed(chunk):
            if isinstance(item, Frame):
                assert len(item.data) <= MAX_DATA
            else:
                assert item.length > MAX_DATA
        assert len(decoder._buf) <= HEADER_LEN + MAX_DATA
