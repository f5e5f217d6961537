"""Garbage against a live server: it must answer what deserves an answer and never fall over."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pywasmd.api.ttrpc import request_pb2
from pywasmd.ttrpc import Client, Metadata
from pywasmd.ttrpc.frame import (
    MAX_DATA,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    Frame,
    FrameDecoder,
    encode_frame,
)
from pywasmd.ttrpc.server import Server

SVC = "fuzz.v1.Svc"


async def echo(payload: bytes, md: Metadata) -> bytes:
    return payload


class ThreadedServer:
    """A Server on its own loop in a thread, shared by every hypothesis example."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.loop_errors: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(lambda _loop, ctx: self.loop_errors.append(ctx))
        self._server = Server({SVC: {"Echo": echo}})
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._server.serve(self._sock),)
        )
        self._thread.start()

    def ping(self) -> bytes:
        async def call() -> bytes:
            client = await Client.connect(self.path)
            try:
                return await client.call(SVC, "Echo", b"ping", timeout=5)
            finally:
                await client.close()

        return asyncio.run(call())

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(10)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "s.sock"
    srv = ThreadedServer(str(path))
    yield srv
    srv.stop()
    assert srv.loop_errors == []


def exchange(path: str, wire: bytes, expect: int) -> list[Frame]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(wire)
        decoder = FrameDecoder()
        got: list[Frame] = []
        while len(got) < expect:
            data = sock.recv(65536)
            assert data, f"server closed after {len(got)} of {expect} responses"
            for item in decoder.feed(data):
                assert isinstance(item, Frame)
                got.append(item)
        return got


frame_st = st.builds(
    Frame,
    stream_id=st.integers(0, 40),
    type=st.sampled_from([0, TYPE_REQUEST, TYPE_REQUEST, TYPE_REQUEST, TYPE_RESPONSE, 3, 200]),
    flags=st.integers(0, 255),
    data=st.one_of(
        st.binary(max_size=64),
        st.builds(
            lambda svc, method, payload, timeout: request_pb2.Request(
                service=svc, method=method, payload=payload, timeout_nano=timeout
            ).SerializeToString(),
            st.sampled_from([SVC, "", "x"]),
            st.sampled_from(["Echo", "", "Nope"]),
            st.binary(max_size=32),
            st.integers(-(2**63), 2**63 - 1),
        ),
    ),
)


def expected_answers(frames: list[Frame]) -> int:
    """How many responses Go ttrpc's rules call for."""
    # Even ids are refused whatever the type; odd ids are answered for requests only (a
    # re-used id gets InvalidArgument, still one answer); other types are ignored.
    return sum(1 for f in frames if f.stream_id % 2 == 0 or f.type == TYPE_REQUEST)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames=st.lists(frame_st, max_size=12))
def test_every_request_frame_gets_exactly_one_response(
    server: ThreadedServer, frames: list[Frame]
) -> None:
    expect = expected_answers(frames)
    # A final well-formed call, so the connection is known to be in sync afterwards.
    tail_id = 41
    frames = [
        *frames,
        Frame(
            tail_id,
            TYPE_REQUEST,
            0,
            request_pb2.Request(service=SVC, method="Echo", payload=b"end").SerializeToString(),
        ),
    ]
    got = exchange(server.path, b"".join(encode_frame(f) for f in frames), expect + 1)
    assert all(f.type == TYPE_RESPONSE and f.flags == 0 for f in got)
    for f in got:
        request_pb2.Response.FromString(f.data)
    tail = [f for f in got if f.stream_id == tail_id]
    assert [request_pb2.Response.FromString(f.data).payload for f in tail] == [b"end"]


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=st.binary(max_size=512))
def test_raw_garbage_never_kills_the_server(server: ThreadedServer, garbage: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(server.path)
        sock.sendall(garbage)
    assert server.ping() == b"ping"


def test_oversized_header_in_garbage_is_skipped(server: ThreadedServer) -> None:
    header = (MAX_DATA + 7).to_bytes(4, "big") + (9).to_bytes(4, "big") + bytes([TYPE_REQUEST, 0])
    [frame] = exchange(server.path, header, 1)
    assert frame.stream_id == 9
    assert request_pb2.Response.FromString(frame.data).status.code == 8
