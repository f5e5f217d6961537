"""pywasmd.http.exchange: what the instance thread is told about the connection is true."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from pywasmd.http.exchange import (
    BodyError,
    Collected,
    Exchange,
    Gone,
    Overrun,
    collecting,
    declared_length,
)


class Held:
    """A Sender whose bytes stay in flight until the test says they reached the socket."""

    def __init__(self) -> None:
        self.heads: list[tuple[int, list[tuple[str, bytes]]]] = []
        self.chunks: list[bytes] = []
        self.ended = 0

    def head(self, status: int, headers: Sequence[tuple[str, bytes]]) -> None:
        self.heads.append((status, list(headers)))

    def data(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def end(self) -> None:
        self.ended += 1


def test_the_body_is_read_as_fed_and_the_socket_paused_above_high() -> None:
    drained: list[int] = []
    exchange = Exchange(Held(), high=10, low=4, on_drained=lambda: drained.append(1))
    assert exchange.read(5) == b""  # nothing yet, not the end
    assert not exchange.readable()
    assert exchange.feed(b"abcdef") is False
    assert exchange.feed(b"ghijkl") is True  # 12 > 10: stop reading the socket
    assert exchange.readable()
    assert exchange.read(4) == b"abcd"
    assert drained == []  # 8 left, above low
    assert exchange.read(100) == b"ef"
    assert exchange.read(3) == b"ghi"
    assert drained == [1]  # 3 left: read the socket again
    exchange.end_body()
    assert exchange.read(100) == b"jkl"
    assert exchange.read(100) is None  # the end
    assert exchange.read(100) is None


def test_a_failed_body_fails_the_next_read_after_what_was_there() -> None:
    exchange = Exchange(Held())
    exchange.feed(b"ab")
    exchange.fail_body("413 Content Too Large: body over the limit")
    assert exchange.read(10) == b"ab"
    with pytest.raises(BodyError, match="413"):
        exchange.read(10)


def test_check_write_is_the_window_left_and_zero_while_the_socket_is_full() -> None:
    sender = Held()
    exchange = Exchange(sender, window=100)
    exchange.start(200, [("content-type", b"text/plain")])
    assert sender.heads == [(200, [("content-type", b"text/plain")])]
    assert exchange.capacity() == 100
    exchange.write(b"x" * 60)
    assert exchange.capacity() == 40
    assert not exchange.flushed()
    exchange.set_writable(False)
    assert exchange.capacity() == 0
    assert not exchange.writable()
    exchange.sent_out(60)
    assert exchange.capacity() == 0  # the transport's own buffer is still full
    exchange.set_writable(True)
    assert exchange.capacity() == 100
    assert exchange.flushed()
    assert sender.chunks == [b"x" * 60]


def test_a_waiting_writer_wakes_when_the_socket_drains() -> None:
    exchange = Exchange(Held(), window=10)
    exchange.write(b"0123456789")
    woke: list[float] = []

    def wait() -> None:
        with exchange.cond:
            exchange.cond.wait_for(exchange.writable, timeout=5)
        woke.append(time.monotonic())

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.1)
    assert not woke
    drained = time.monotonic()
    exchange.sent_out(10)
    waiter.join(5)
    assert woke
    assert woke[0] - drained < 1


def test_content_length_is_enforced_and_gone_is_said() -> None:
    exchange = Exchange(Held())
    exchange.start(200, [("Content-Length", b"5")])
    assert exchange.length == 5
    exchange.write(b"abc")
    with pytest.raises(Overrun, match="content-length 5"):
        exchange.write(b"def")
    exchange.finish()
    assert exchange.finished
    assert not exchange.complete  # 3 of 5 bytes
    exchange.gone()
    with pytest.raises(Gone):
        exchange.capacity()
    with pytest.raises(Gone):
        exchange.write(b"x")


def test_declared_length() -> None:
    assert declared_length([("content-length", b"12")]) == 12
    assert declared_length([("content-length", b"12"), ("Content-Length", b" 12")]) == 12
    assert declared_length([("content-length", b"1"), ("content-length", b"2")]) is None
    assert declared_length([("content-length", b"-1")]) is None
    assert declared_length([]) is None


def test_collecting_keeps_the_response() -> None:
    exchange, kept = collecting(b"body")
    assert isinstance(kept, Collected)
    assert exchange.read(100) == b"body"
    assert exchange.read(100) is None
    exchange.start(201, [])
    exchange.write(b"out")
    assert exchange.flushed()  # collected at once
    exchange.finish()
    assert (kept.status, bytes(kept.body), kept.ended) == (201, b"out", True)
