"""One streamed request between the event loop and the thread its instance runs on.

A ``wasi:http/proxy`` handler reads its request body while the client still sends it and
writes its response while the client already receives it.  The event loop feeds the body in
(:meth:`Exchange.feed`) and is told of the response through a :class:`Sender`; the instance
thread reads, writes and waits on :attr:`Exchange.cond`, which every change of state notifies.
Both directions are bounded, so what the guest's ``check-write`` and pollables report is what
the connection can take:

- the request body buffered here stays under ``high`` bytes: above it the loop stops reading
  the socket (the client then waits in TCP) until the guest has read it down to ``low``;
- response bytes handed to the loop but not yet written to the transport stay under
  ``window``, and while the transport's own buffer is full (``pause_writing``) the guest may
  write nothing.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

#: Response bytes in flight from the instance thread to the transport.
WINDOW = 256 * 1024
#: Request body buffered ahead of the guest before the socket stops being read.
BODY_HIGH = 1 << 20
BODY_LOW = 256 * 1024


class BodyError(Exception):
    """The request body cannot be read further (the client failed it or went away)."""


class Gone(Exception):
    """The response cannot reach the client any more."""


class Overrun(Exception):
    """The guest wrote past the content-length it declared."""


class Sender(Protocol):
    """Where the response goes; called on the instance thread, must not block."""

    def head(self, status: int, headers: Sequence[tuple[str, bytes]]) -> None: ...

    def data(self, chunk: bytes) -> None: ...

    def end(self) -> None: ...


def declared_length(headers: Sequence[tuple[str, bytes]]) -> int | None:
    """The guest's content-length, when it set one valid value."""
    values = {v.strip() for n, v in headers if n.lower() == "content-length"}
    if len(values) == 1:
        value = values.pop()
        if value.isdigit():
            return int(value)
    return None


class Exchange:
    def __init__(
        self,
        sender: Sender,
        *,
        window: int = WINDOW,
        high: int = BODY_HIGH,
        low: int = BODY_LOW,
        on_drained: Callable[[], None] | None = None,
    ) -> None:
        self.cond = threading.Condition()
        self.sender = sender
        self.window = window
        self.high = high
        self.low = low
        self.on_drained = on_drained
        self._chunks: deque[bytes] = deque()
        #: Bytes of the first chunk already read (slicing it anew each time is quadratic).
        self._offset = 0
        self._buffered = 0
        self._body_done = False
        self._body_error = ""
        self._held = False
        self._inflight = 0
        self._writable = True
        self._gone = False
        self.started = False
        self.finished = False
        self.length: int | None = None
        self.written = 0

    # --- event-loop side ---

    def feed(self, data: bytes) -> bool:
        """Body bytes from the client; True when the loop should stop reading for now."""
        with self.cond:
            if data:
                self._chunks.append(data)
                self._buffered += len(data)
                self.cond.notify_all()
            if self._buffered > self.high and not self._held:
                self._held = True
            return self._held

    def end_body(self) -> None:
        with self.cond:
            self._body_done = True
            self.cond.notify_all()

    def fail_body(self, why: str) -> None:
        with self.cond:
            if not self._body_done:
                self._body_error = why
                self._body_done = True
            self.cond.notify_all()

    def sent_out(self, n: int) -> None:
        with self.cond:
            self._inflight -= n
            self.cond.notify_all()

    def set_writable(self, writable: bool) -> None:
        with self.cond:
            self._writable = writable
            self.cond.notify_all()

    def gone(self) -> None:
        with self.cond:
            self._gone = True
            self.cond.notify_all()

    # --- instance side: the request body ---

    def read(self, size: int) -> bytes | None:
        """Up to ``size`` bytes without waiting; b"" when none are here yet, None at the end."""
        with self.cond:
            if not self._chunks:
                if self._body_error:
                    raise BodyError(self._body_error)
                return None if self._body_done else b""
            first = self._chunks[0]
            start = self._offset
            piece = first[start : start + size]
            self._offset += len(piece)
            if self._offset >= len(first):
                self._chunks.popleft()
                self._offset = 0
            self._buffered -= len(piece)
            if self._held and self._buffered <= self.low:
                self._held = False
                if self.on_drained is not None:
                    self.on_drained()
            return piece

    def readable(self) -> bool:
        with self.cond:
            return bool(self._chunks) or self._body_done

    # --- instance side: the response ---

    def start(self, status: int, headers: Sequence[tuple[str, bytes]]) -> None:
        with self.cond:
            self.started = True
            self.length = declared_length(headers)
            self.sender.head(status, headers)

    def capacity(self) -> int:
        """Bytes the guest may write now (``check-write``)."""
        with self.cond:
            if self._gone:
                raise Gone("the client went away")
            if not self._writable:
                return 0
            return max(0, self.window - self._inflight)

    def writable(self) -> bool:
        with self.cond:
            return self._gone or (self._writable and self._inflight < self.window)

    def flushed(self) -> bool:
        with self.cond:
            return self._gone or self._inflight <= 0

    def write(self, data: bytes) -> None:
        with self.cond:
            if self._gone:
                raise Gone("the client went away")
            if self.length is not None and self.written + len(data) > self.length:
                raise Overrun(
                    f"the body is longer than its content-length {self.length} "
                    f"({self.written + len(data)} bytes written)"
                )
            if not data:
                return
            self.written += len(data)
            self._inflight += len(data)
            self.sender.data(data)

    def finish(self) -> None:
        with self.cond:
            if not self.finished:
                self.finished = True
                self.sender.end()

    @property
    def complete(self) -> bool:
        """The response was finished with as many bytes as it declared."""
        return self.finished and (self.length is None or self.written == self.length)


class Collected:
    """A :class:`Sender` that keeps the response (engine tests, ``Instances.call``)."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, bytes]] = []
        self.body = bytearray()
        self.ended = False
        self.exchange: Exchange | None = None

    def head(self, status: int, headers: Sequence[tuple[str, bytes]]) -> None:
        self.status = status
        self.headers = list(headers)

    def data(self, chunk: bytes) -> None:
        self.body += chunk
        if self.exchange is not None:
            self.exchange.sent_out(len(chunk))

    def end(self) -> None:
        self.ended = True


def collecting(body: bytes) -> tuple[Exchange, Collected]:
    """An exchange whose whole request body is ``body`` and whose response is kept."""
    sink = Collected()
    exchange = Exchange(sink, high=max(BODY_HIGH, len(body)))
    sink.exchange = exchange
    if body:
        exchange.feed(body)
    exchange.end_body()
    return exchange, sink
