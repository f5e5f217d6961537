"""The HTTP front of a function: asyncio (uvloop when present) + httptools, inside the sandbox.

The worker imports this module before it enters the container (nothing of the host can be
imported after pivot_root) and calls :func:`serve` once the sandbox is complete.

- For a CGI module the event loop reads each request whole (headers and body, bounded in time
  and size) before an instance is made, so a slow client holds a socket, never an instance.
  A wasi:http/proxy component (``call_streaming``) starts when the body is complete or
  ``STREAM_AFTER`` bytes of it are in, and streams both bodies through a
  :class:`pywasmd.http.exchange.Exchange`; its blocking host calls end at its deadline, so a
  slow client holds its instance for ``http-timeout`` at most.
- Instances run on ``concurrency`` threads (the engine releases the GIL while Wasm runs); the
  engine stops a guest at its wall-time deadline (epoch interruption).
- One access-log line per request goes to stdout, one line per failed guest to stderr.
- SIGTERM/SIGINT: stop accepting, let running requests finish (bounded), exit 0.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import cast

import httptools
import uvloop

from pywasmd.engine import CallResult, Instances
from pywasmd.errors import ShimError
from pywasmd.http import cgi
from pywasmd.http.exchange import Exchange, declared_length
from pywasmd.http.instance import answer, error_response
from pywasmd.oci.http import HttpPlan

# Codecs import on first use, and nothing can be imported once the worker is in the container:
# the event loop may need IDNA (uvloop encodes host names with it).
codecs.lookup("idna")

_PR_SET_PDEATHSIG = 1
# Looked up here, on the host's filesystem: nothing can be loaded inside the container.
_prctl = ctypes.CDLL(None, use_errno=True).prctl

#: A client gets this long to send a whole request (headers and body) once it has started one.
READ_TIMEOUT = 10.0
#: An idle keep-alive connection is closed after this long.
IDLE_TIMEOUT = 30.0
#: How long a refused client may keep sending before its connection closes.
LINGER = 1.0
#: Request line and headers together.
MAX_HEAD = 64 * 1024
#: A streamed request (wasi:http/proxy) gets its instance once its body is complete or this
#: much of it is here: a small body sent slowly holds a socket, never an instance.
STREAM_AFTER = 256 * 1024
#: Requests of one connection read ahead of the one being served.
_MAX_PIPELINED = 8
#: How long SIGTERM waits for running requests beyond their own timeout.
DRAIN_MARGIN = 2.0
_GRACEFUL = (signal.SIGTERM, signal.SIGINT)


def _log(line: str) -> None:
    try:
        os.write(2, f"pywasm http: {line}\n".encode("utf-8", "replace"))
    except OSError:
        pass


class _Request:
    __slots__ = (
        "answered",
        "body",
        "dispatched",
        "exchange",
        "head_size",
        "headers",
        "method",
        "out",
        "received",
        "refused",
        "started",
        "target",
        "version",
    )

    def __init__(self) -> None:
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.head_size = 0
        self.method = ""
        self.version = "1.1"
        self.started = time.monotonic()
        # A streamed request (wasi:http/proxy): its body goes to the instance as it comes.
        self.exchange: Exchange | None = None
        self.out: _Streamed | None = None
        self.received = 0
        self.dispatched = False
        #: The response head is on the wire: no other answer can be given.
        self.answered = False
        #: Answered by the server itself (400, 408, 413): the instance's answer is dropped.
        self.refused = False


class _Connection(asyncio.Protocol):
    def __init__(self, server: _Server) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.current: _Request | None = None
        self.queue: list[tuple[_Request, bool]] = []
        self.busy = False
        self.paused = False
        self.closing = False
        self.timer: asyncio.TimerHandle | None = None
        self.write_paused = False
        self.serving: Exchange | None = None

    # --- transport events ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("", 0)
        self.server.connections.add(self)
        self._arm(IDLE_TIMEOUT, self._idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.server.closed_one()
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
        for request in [self.current, *(r for r, _ in self.queue)]:
            if request is not None and request.exchange is not None:
                request.exchange.fail_body("the client closed the connection")
        if self.serving is not None:
            self.serving.fail_body("the client closed the connection")
            out = self.serving.sender
            if not (isinstance(out, _Streamed) and out.whole()):
                self.serving.gone()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.serving is not None:
            self.serving.set_writable(False)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.serving is not None:
            self.serving.set_writable(True)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not served")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"bad request: {exc}")

    # --- parser callbacks ---

    def on_message_begin(self) -> None:
        self.current = _Request()
        self._arm(READ_TIMEOUT, self._slow)

    def on_url(self, url: bytes) -> None:
        assert self.current is not None
        self.current.target += url
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name, value))
        self._grow_head(len(name) + len(value))

    def on_headers_complete(self) -> None:
        request = self.current
        if request is None or self.closing:
            return
        request.method = self.parser.get_method().decode("ascii", "replace")
        request.version = self.parser.get_http_version()
        length = _content_length(request.headers)
        if length is not None and length > self.server.plan.max_body:
            self._refuse(413, f"body of {length} bytes, over {self._limit()}", request)
            return
        if any(n.lower() == b"expect" and v.lower() == b"100-continue" for n, v in request.headers):
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.server.streaming:
            # The instance starts once the body is complete or STREAM_AFTER bytes of it are
            # here, and from then on reads the body as it arrives.
            out = _Streamed(self, request)
            request.out = out
            request.exchange = Exchange(out, on_drained=out.drained)

    def on_body(self, body: bytes) -> None:
        request = self.current
        if request is None or self.closing:
            return
        request.received += len(body)
        if request.received > self.server.plan.max_body:
            self._refuse(413, f"body over {self._limit()}", request)
            return
        if request.exchange is not None:
            if request.exchange.feed(body) and self.transport is not None:
                # The guest reads slower than the client sends: TCP holds the rest.
                self.transport.pause_reading()
            if not request.dispatched and request.received >= STREAM_AFTER:
                self._dispatch(request, self.parser.should_keep_alive())
            return
        request.body += body

    def on_message_complete(self) -> None:
        request = self.current
        if request is None or self.closing:
            return
        self.current = None
        self._disarm()
        if request.exchange is not None:
            request.exchange.end_body()
            if request.dispatched:
                if not self.busy:
                    self._arm(IDLE_TIMEOUT, self._idle)
                return
        self._dispatch(request, self.parser.should_keep_alive())

    def _dispatch(self, request: _Request, keep_alive: bool) -> None:
        request.dispatched = True
        self.queue.append((request, keep_alive))
        if len(self.queue) >= _MAX_PIPELINED and self.transport is not None:
            # A client pipelining faster than its requests are served waits in TCP, not here.
            self.transport.pause_reading()
            self.paused = True
        if not self.busy:
            self.busy = True
            asyncio.ensure_future(self._work())

    # --- requests ---

    async def _work(self) -> None:
        try:
            while self.queue and not self.closing_now():
                request, keep_alive = self.queue.pop(0)
                if self.paused and self.transport is not None:
                    self.transport.resume_reading()
                    self.paused = False
                await self._serve(request, keep_alive)
        finally:
            self.busy = False
        if self.transport is not None and not self.closing:
            if self.server.draining:
                self.transport.close()
            elif self.current is None:
                self._arm(IDLE_TIMEOUT, self._idle)

    def closing_now(self) -> bool:
        return self.closing or self.transport is None or self.transport.is_closing()

    async def _serve(self, request: _Request, keep_alive: bool) -> None:
        server = self.server
        try:
            env = self._environ(request)
        except cgi.BadRequest as exc:
            self._refuse(400, str(exc), request)
            return
        if request.exchange is not None:
            await self._serve_streamed(request, env, keep_alive)
            return
        try:
            result: CallResult | None | Exception = await server.run(env, bytes(request.body))
        except Exception as exc:  # noqa: BLE001 - one request must not take the connection down
            result = exc
        if isinstance(result, Exception):
            status_answer = error_response(500)
            problem = f"the engine failed: {type(result).__name__}: {result}"
        elif result is None:
            status_answer = error_response(504)
            problem = (
                f"the guest ran over {server.plan.timeout:g} s (pywasm.io/http-timeout) "
                "inside a host call; its instance ends when that call returns"
            )
        else:
            got = answer(result, server.plan.timeout)
            status_answer, problem = got.response, got.problem
        label = f"{request.method} {_show(request.target)}"
        if problem:
            _log(f"{label} from {self.peer[0]}: {status_answer.status}: {problem}")
        keep = keep_alive and not server.draining
        self._send(request, status_answer, keep)
        if not keep and self.transport is not None:
            self.transport.close()

    async def _serve_streamed(
        self, request: _Request, env: list[tuple[str, str]], keep_alive: bool
    ) -> None:
        server = self.server
        exchange, out = request.exchange, request.out
        assert exchange is not None
        assert out is not None
        if request.refused:
            return  # answered by the server (413, 408) while it waited for its turn
        out.keep = keep_alive and not server.draining
        self.serving = exchange
        exchange.set_writable(not self.write_paused)
        try:
            result: CallResult | None | Exception = await server.run_streaming(
                env, exchange, request.headers[: out.header_count]
            )
        except Exception as exc:  # noqa: BLE001 - one request must not take the connection down
            result = exc
        finally:
            self.serving = None
        if request.refused:
            return
        if isinstance(result, Exception):
            status_answer = error_response(500)
            problem = f"the engine failed: {type(result).__name__}: {result}"
        elif result is None:
            exchange.gone()
            status_answer = error_response(504)
            problem = (
                f"the guest ran over {server.plan.timeout:g} s (pywasm.io/http-timeout) "
                "inside a host call; its instance ends when that call returns"
            )
        elif result.outcome == "exit" and request.answered and not exchange.complete:
            status_answer = error_response(500)
            problem = (
                f"the response body ended after {exchange.written} of its "
                f"content-length {exchange.length} bytes"
                if exchange.finished
                else "the response body was not finished (outgoing-body.finish)"
            )
        elif result.outcome == "exit":
            status_answer, problem = error_response(500), ""
        else:
            got = answer(result, server.plan.timeout)
            status_answer, problem = got.response, got.problem
        label = f"{request.method} {_show(request.target)}"
        if request.answered:
            # The head is out: a failure now can only cut the response short, unless the
            # client has it whole already (the guest failed after outgoing-body.finish).
            if problem and out.whole():
                _log(f"{label} from {self.peer[0]}: {out.status}, sent whole, then: {problem}")
            elif problem:
                _log(f"{label} from {self.peer[0]}: {out.status}, cut short: {problem}")
                out.abort()
            server.access(self.peer[0], request, out.status, out.size)
            if (not out.keep or problem) and self.transport is not None:
                self.transport.close()
            return
        if problem:
            _log(f"{label} from {self.peer[0]}: {status_answer.status}: {problem}")
        keep = out.keep and not exchange.started
        self._send(request, status_answer, keep)
        if not keep and self.transport is not None:
            self.transport.close()

    def _environ(self, request: _Request) -> list[tuple[str, str]]:
        server = self.server
        framed = any(
            n.lower() in (b"content-length", b"transfer-encoding") for n, _ in request.headers
        )
        if request.exchange is not None:
            # Streamed: the length is the client's, or unknown (chunked) until the end.
            length = _content_length(request.headers)
            framed = length is not None
        else:
            length = len(request.body)
        return cgi.environ(
            cgi.Request(
                method=request.method,
                target=request.target,
                headers=request.headers,
                body_length=length if framed or length else None,
                server_name=server.server_name,
                server_port=server.port,
                remote_addr=self.peer[0],
                remote_port=self.peer[1],
                protocol=f"HTTP/{request.version}",
            ),
            server.base_env,
        )

    def _send(self, request: _Request | None, response: cgi.Response, keep: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        reason = response.reason or _phrase(response.status)
        head = [f"HTTP/1.1 {response.status} {reason}", "Server: pywasm"]
        head.extend(f"{name}: {value}" for name, value in response.headers)
        head.append(f"Content-Length: {len(response.body)}")
        if not keep:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace")
        with_body = request is None or request.method != "HEAD"
        self.transport.write(data + response.body if with_body else data)
        if request is not None:
            self.server.access(self.peer[0], request, response.status, len(response.body))

    # --- limits ---

    def _limit(self) -> str:
        return f"pywasm.io/http-max-body={self.server.plan.max_body}"

    def _grow_head(self, n: int) -> None:
        assert self.current is not None
        self.current.head_size += n
        if self.current.head_size > MAX_HEAD:
            self._refuse(431, f"request line and headers over {MAX_HEAD} bytes", self.current)

    def _refuse(self, status: int, why: str, request: _Request | None = None) -> None:
        """Answer a request that never reaches an instance, and close the connection."""
        if self.closing:
            return
        request = request or self.current
        label = f"{request.method or '?'} {_show(request.target)}" if request else "request"
        if request is not None and request.exchange is not None:
            request.refused = True
            request.exchange.fail_body(f"{status} {_phrase(status)}: {why}")
            request.exchange.gone()
        if request is not None and request.answered:
            # The instance answered already: the client only loses the connection.
            _log(f"{label} from {self.peer[0]}: closed: {why}")
            self.closing = True
            if self.transport is not None:
                self.transport.close()
            return
        _log(f"{label} from {self.peer[0]}: {status}: {why}")
        if request is not None and not request.method:
            request.method = self.parser.get_method().decode("ascii", "replace") or "?"
        self._send(request, error_response(status), keep=False)
        self.closing = True
        if self.transport is None:
            return
        # A client still sending (a body over the limit) would get a reset for its unread
        # data and could lose the answer: end our side, discard what comes for a moment
        # (data_received drops it while closing), then close, as nginx's lingering close.
        self._disarm()
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.timer = asyncio.get_running_loop().call_later(LINGER, self.transport.close)
        else:
            self.transport.close()

    def _slow(self) -> None:
        self._refuse(408, f"the client sent no whole request within {READ_TIMEOUT:g} s")

    def _idle(self) -> None:
        if not self.busy and self.current is None and self.transport is not None:
            self.transport.close()

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self.timer = asyncio.get_running_loop().call_later(delay, callback)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def drain(self) -> None:
        """SIGTERM: an idle or half-read connection closes now, a busy one after its answer."""
        if not self.busy and self.transport is not None:
            self.transport.close()


#: Headers of a guest's response that the server sets itself.
_FRAMING = frozenset(
    {
        "connection",
        "content-length",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class _Streamed:
    """A streamed response: the instance thread's head, data and end, run on the event loop
    (a :class:`pywasmd.http.exchange.Sender`).  Without a content-length from the guest the
    body is sent chunked (HTTP/1.0: until the connection closes)."""

    def __init__(self, connection: _Connection, request: _Request) -> None:
        self.connection = connection
        self.request = request
        # Made at the end of the head: what the parser reports after it are trailers.
        self.header_count = len(request.headers)
        self.loop = asyncio.get_running_loop()
        self.keep = True
        self.status = 0
        self.size = 0
        self.chunked = False
        self.bodyless = False
        self.ended = False

    # --- the instance thread ---

    def head(self, status: int, headers: Sequence[tuple[str, bytes]]) -> None:
        self.loop.call_soon_threadsafe(self._head, status, list(headers))

    def data(self, chunk: bytes) -> None:
        self.loop.call_soon_threadsafe(self._data, chunk)

    def end(self) -> None:
        self.loop.call_soon_threadsafe(self._end)

    def drained(self) -> None:
        self.loop.call_soon_threadsafe(self._resume_reading)

    # --- the event loop ---

    def _transport(self) -> asyncio.Transport | None:
        transport = self.connection.transport
        if self.request.refused or transport is None or transport.is_closing():
            return None
        return transport

    def _head(self, status: int, headers: list[tuple[str, bytes]]) -> None:
        request, exchange = self.request, self.request.exchange
        assert exchange is not None
        transport = self._transport()
        if transport is None:
            exchange.gone()
            return
        request.answered = True
        self.status = status
        length = declared_length(headers)
        self.bodyless = request.method == "HEAD" or status in (204, 304) or status < 200
        lines = [f"HTTP/1.1 {status} {_phrase(status)}", "Server: pywasm"]
        lines.extend(f"{n}: {v.decode('latin-1')}" for n, v in headers if n.lower() not in _FRAMING)
        if length is not None and status not in (204, 304):
            lines.append(f"Content-Length: {length}")
        elif not self.bodyless:
            if request.version == "1.1":
                self.chunked = True
                lines.append("Transfer-Encoding: chunked")
            else:
                self.keep = False
        if not self.keep:
            lines.append("Connection: close")
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace"))

    def _data(self, chunk: bytes) -> None:
        exchange = self.request.exchange
        assert exchange is not None
        transport = self._transport()
        if self.bodyless and self.request.answered:
            pass  # HEAD, 204, 304: the bytes the guest writes are not sent
        elif transport is None or not self.request.answered:
            exchange.gone()
        else:
            if self.chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            self.size += len(chunk)
        exchange.sent_out(len(chunk))

    def _end(self) -> None:
        exchange = self.request.exchange
        assert exchange is not None
        transport = self._transport()
        if transport is None or not self.request.answered or self.ended:
            return
        self.ended = True
        if self.chunked and exchange.complete:
            transport.write(b"0\r\n\r\n")
        if not self.keep and exchange.complete:
            # HTTP/1.0 without a length: the end of the body is the end of the connection.
            transport.close()

    def whole(self) -> bool:
        """The client has the whole response (it may leave now without loss): a head without
        a body, or every byte of the content-length, or the end of the chunks."""
        exchange = self.request.exchange
        assert exchange is not None
        if not self.request.answered:
            return False
        if self.bodyless or (self.ended and exchange.complete):
            return True
        return exchange.length is not None and exchange.written == exchange.length

    def abort(self) -> None:
        """End a response that cannot be completed: the client must not take it as whole."""
        transport = self.connection.transport
        if transport is not None and not transport.is_closing():
            transport.abort()

    def _resume_reading(self) -> None:
        connection = self.connection
        if connection.transport is not None and not connection.paused:
            if not connection.closing and not connection.transport.is_closing():
                connection.transport.resume_reading()


def _content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _show(target: bytes) -> str:
    text = target.decode("latin-1")
    return text if len(text) <= 200 else text[:200] + "..."


class _Server:
    def __init__(
        self,
        plan: HttpPlan,
        instances: Instances,
        base_env: Sequence[tuple[str, str]],
        sock: socket.socket,
        concurrency: int,
        children: Sequence[int] = (),
    ) -> None:
        self.plan = plan
        self.sock = sock
        self.children = list(children)
        self.instances = instances
        # wasi:http/proxy components read and write their bodies while the client sends and
        # receives them; CGI modules get the body whole on stdin.
        self.streaming = hasattr(instances, "call_streaming")
        self.base_env = tuple(base_env)
        self.port = plan.port
        self.server_name = plan.host if plan.host not in ("0.0.0.0", "::") else socket.gethostname()
        self.connections: set[_Connection] = set()
        self.draining = False
        self.dropped = 0
        self.concurrency = concurrency
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="pywasm-instance")
        self.slots = asyncio.Semaphore(concurrency)
        self.stopped = asyncio.Event()
        self.all_closed = asyncio.Event()

    def closed_one(self) -> None:
        if self.draining and not self.connections:
            self.all_closed.set()

    async def run(self, env: list[tuple[str, str]], body: bytes) -> CallResult | None:
        """Run one instance; None when it outlived its deadline in a host call (no epoch there)."""
        await self.slots.acquire()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.pool, self.instances.call, env, body, self.plan.timeout)
        # The slot is free when the instance is gone, not when the client gave up waiting.
        future.add_done_callback(lambda _: self.slots.release())
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.plan.timeout + 1.0)
        except asyncio.TimeoutError:
            return None

    async def run_streaming(
        self,
        env: list[tuple[str, str]],
        exchange: Exchange,
        headers: list[tuple[bytes, bytes]],
    ) -> CallResult | None:
        """As :meth:`run`, for an instance that streams its request and response bodies and
        gets the request's headers as sent (a component, unlike a CGI program, takes bytes)."""
        await self.slots.acquire()
        loop = asyncio.get_running_loop()
        call = getattr(self.instances, "call_streaming")  # noqa: B009 - checked at __init__
        future = loop.run_in_executor(self.pool, call, env, exchange, self.plan.timeout, headers)
        future.add_done_callback(lambda _: self.slots.release())
        try:
            result: CallResult = await asyncio.wait_for(
                asyncio.shield(future), self.plan.timeout + 1.0
            )
        except asyncio.TimeoutError:
            return None
        return result

    def access(self, remote: str, request: _Request, status: int, size: int) -> None:
        took = (time.monotonic() - request.started) * 1000
        line = (
            f'{remote} "{request.method} {_show(request.target)} HTTP/{request.version}" '
            f"{status} {size} {took:.1f}ms\n"
        )
        try:
            os.write(1, line.encode("utf-8", "replace"))
        except BlockingIOError:
            # Nobody reads the container's stdout (`ctr run -d` leaves its FIFO unread): drop
            # the line rather than stall every request behind a full pipe; say so once.
            if not self.dropped:
                _log("the container's stdout is full (nobody reads it): access lines dropped")
            self.dropped += 1
        except OSError:
            pass

    def stop(self) -> None:
        if self.draining:
            return
        self.draining = True
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for connection in list(self.connections):
            connection.drain()
        self.stopped.set()

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in _GRACEFUL:
            loop.add_signal_handler(sig, self.stop)
        # The worker kept them blocked since it became the container's pid 1 (the kernel
        # would drop them for an init without a handler): a pending one arrives now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _GRACEFUL)
        if self.children:
            # uvloop keeps SIGCHLD for itself: look for ended server processes now and then.
            loop.call_later(1.0, self.reap)
        server = await loop.create_server(lambda: _Connection(self), sock=self.sock)
        await self.stopped.wait()
        server.close()
        self.closed_one()
        try:
            await asyncio.wait_for(self.all_closed.wait(), self.plan.timeout + DRAIN_MARGIN)
        except asyncio.TimeoutError:
            _log(f"stopping with {len(self.connections)} request(s) unanswered")
        return 0

    def reap(self) -> None:
        """A server process that ends before SIGTERM is said on stderr (and not replaced)."""
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                self.children.remove(pid)
                if not self.draining:
                    _log(f"server process {pid} ended: {_status(status)}")
        if self.children and not self.draining:
            asyncio.get_running_loop().call_later(1.0, self.reap)


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"


def _listen(plan: HttpPlan) -> socket.socket:
    """The listening socket, made here: a host name would need a lookup (and codecs) that
    cannot be imported inside the container."""
    family = socket.AF_INET6 if ":" in plan.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((plan.host, plan.port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def processes(plan: HttpPlan) -> int:
    """As many server processes as the container may use CPUs, at most one per instance."""
    cpus = len(os.sched_getaffinity(0))
    quota = _cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, min(cpus, plan.concurrency))


def _cpu_quota() -> float | None:
    """CPUs the container's cgroup allows (its own cgroup is /sys/fs/cgroup in the sandbox)."""
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", encoding="ascii") as f:
            quota_us = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us", encoding="ascii") as f:
            period_us = int(f.read())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 else quota_us / period_us


def serve(
    plan: HttpPlan, prepare: Callable[[], Instances], base_env: Sequence[tuple[str, str]]
) -> int:
    """Serve until SIGTERM/SIGINT; the exit status (0 after a graceful stop).

    ``prepare`` makes the engine's per-request instances; it runs in every server process
    (each has its own threads and memfds).  The listening socket is made once and shared:
    whichever process is idle accepts.
    """
    # The worker restores default signal actions for guests; a peer closing early must not
    # end the server through SIGPIPE.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    # Access lines are shorter than PIPE_BUF, so a non-blocking write is whole or refused.
    os.set_blocking(1, False)
    try:
        sock = _listen(plan)
    except OSError as exc:
        _log(f"cannot listen on {plan.host}:{plan.port}: {exc.strerror or exc}")
        return 1
    count = processes(plan)
    shares = [plan.concurrency // count + (i < plan.concurrency % count) for i in range(count)]
    children: list[int] = []
    for share in shares[1:]:
        pid = os.fork()
        if pid == 0:
            # A copy dies with the first process (the container's pid 1, which the shim
            # watches) and takes the signals it would otherwise get only from it.
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            signal.pthread_sigmask(signal.SIG_SETMASK, _GRACEFUL)
            os._exit(_serve_one(plan, prepare, base_env, sock, share))
        children.append(pid)
    _log(
        f"listening on {plan.host}:{plan.port}: {count} process(es), {plan.concurrency} "
        f"instances at most, {plan.timeout:g} s each"
    )
    status = _serve_one(plan, prepare, base_env, sock, shares[0], children)
    deadline = time.monotonic() + plan.timeout + DRAIN_MARGIN
    for pid in children:
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.01)
        else:
            _log(f"server process {pid} did not stop in time")
    return status


def _serve_one(
    plan: HttpPlan,
    prepare: Callable[[], Instances],
    base_env: Sequence[tuple[str, str]],
    sock: socket.socket,
    concurrency: int,
    children: Sequence[int] = (),
) -> int:
    try:
        instances = prepare()
    except Exception as exc:  # noqa: BLE001 - the container's stderr is where it must show
        _log(f"cannot serve: {exc.message if isinstance(exc, ShimError) else exc}")
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        return 126
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        # An engine that runs one call at a time per process (wasi:http/proxy components)
        # says so; more threads would only queue behind it and eat their deadline waiting.
        parallel = min(concurrency, getattr(instances, "max_parallel", concurrency))
        server = _Server(plan, instances, base_env, sock, parallel, children)
        return loop.run_until_complete(server.main())
    finally:
        sys.stdout.flush()
