"""The host side of the WASI interfaces a ``wasi:http/proxy`` component imports, in Python.

Every resource type the component imports is a host resource of ours: ``wasi:io`` streams
and pollables, ``wasi:http/types`` fields, requests, responses and bodies.  The functions a
handler needs are implemented here and listed in :data:`FUNCS` (``"interface#name"``), for
``wasi:io``, ``wasi:http/types``, ``wasi:cli``, ``wasi:clocks``, ``wasi:random`` and
``wasi:filesystem`` (no preopens).  :mod:`pywasmd.engines.wasmtime_proxy` links them and runs
one :class:`Call` per request; a function finds that call (its request, its
:class:`pywasmd.http.exchange.Exchange`, its deadline and its resources) through
:data:`current`.  Blocking host calls wait on the exchange and end at the request's deadline.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Protocol

from wasmtime import component as wc

from pywasmd.http.exchange import BodyError, Exchange, Gone, Overrun

_METHODS = frozenset(
    {"get", "head", "post", "put", "delete", "connect", "options", "trace", "patch"}
)


class Trap(Exception):
    pass


class Timeout(Exception):
    pass


@dataclass
class Fields:
    entries: list[tuple[str, bytes]] = field(default_factory=list)


class _Source(Protocol):
    def read(self, size: int) -> bytes | None: ...

    def readable(self) -> bool: ...


class _Empty:
    """stdin: at its end from the start."""

    def read(self, size: int) -> bytes | None:
        return None

    def readable(self) -> bool:
        return True


@dataclass
class _InStream:
    source: _Source


class _Sink(Protocol):
    def capacity(self) -> int: ...

    def writable(self) -> bool: ...

    def flushed(self) -> bool: ...

    def write(self, data: bytes) -> None: ...


class _FdSink:
    """stdout and stderr of the guest: the container's stderr, written at once."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def capacity(self) -> int:
        return 1 << 20

    def writable(self) -> bool:
        return True

    def flushed(self) -> bool:
        return True

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]


@dataclass
class _OutStream:
    sink: _Sink


@dataclass
class Response:
    headers: Fields
    status: int = 200
    #: Written before response-outparam.set: sent with the head.
    pending: bytearray = field(default_factory=bytearray)
    live: bool = False
    body_taken: bool = False
    finished: bool = False


class _BodySink:
    """An outgoing-body's stream: into the exchange once the response is set, kept until then."""

    def __init__(self, response: Response, exchange: Exchange) -> None:
        self.response = response
        self.exchange = exchange

    def capacity(self) -> int:
        if self.response.live:
            return self.exchange.capacity()
        return max(0, self.exchange.window - len(self.response.pending))

    def writable(self) -> bool:
        if self.response.live:
            return self.exchange.writable()
        return len(self.response.pending) < self.exchange.window

    def flushed(self) -> bool:
        return self.exchange.flushed() if self.response.live else True

    def write(self, data: bytes) -> None:
        if self.response.live:
            self.exchange.write(data)
        else:
            self.response.pending += data


@dataclass
class Request:
    method: str
    target: str
    scheme: str
    authority: str
    headers: Fields


@dataclass
class _Pollable:
    #: A clock's instant (monotonic seconds); None with ``check``, or always ready.
    deadline: float | None = None
    check: Callable[[], bool] | None = None

    def ready(self) -> bool:
        if self.check is not None:
            return self.check()
        return self.deadline is None or time.monotonic() >= self.deadline


@dataclass
class Call:
    """What one request's instance sees; reps index ``objects``."""

    request: Request
    env: list[tuple[str, str]]
    exchange: Exchange
    deadline: float
    objects: dict[int, object] = field(default_factory=dict)
    next_rep: int = 1
    response: Response | None = None
    error: str = ""
    timed_out: bool = False
    #: A host function's exception (the guest trapped on it): what the call's outcome says.
    raised: Exception | None = None


#: The request the calling thread's guest call serves: ``call`` (a :class:`Call`) and
#: ``kinds`` (resource name -> host resource type number), set by the caller around a call.
current = threading.local()


def _call() -> Call:
    call: Call = current.call
    return call


def record_raised(exc: Exception) -> None:
    """A host function's exception, kept as the call's outcome: the guest traps on it, and
    the trap alone would not say why."""
    call = getattr(current, "call", None)
    if call is not None:
        call.raised = exc


# --- resources ---------------------------------------------------------------------------


def new(kind: str, obj: object) -> wc.ResourceHost:
    """An owned handle of the host resource ``kind`` standing for ``obj`` in this call."""
    call = _call()
    rep = call.next_rep
    call.next_rep += 1
    call.objects[rep] = obj
    return wc.ResourceHost.own(rep, current.kinds[kind])


def _get(store: Any, handle: Any) -> Any:
    rep = handle.to_host(store).rep
    return _call().objects[rep]


def _take(store: Any, handle: Any) -> Any:
    rep = handle.to_host(store).rep
    return _call().objects.pop(rep)


def drop(store: Any, rep: int) -> None:
    """The destructor of every host resource: the call forgets the object."""
    call = getattr(current, "call", None)
    if call is not None:
        call.objects.pop(rep, None)


def trap_for(name: str) -> Callable[..., Any]:
    """An imported function HTTP functions are not offered: a call traps naming it."""

    def trap(store: Any, *args: Any) -> Any:
        raise Trap(f"{name} is not available to HTTP functions")

    return trap


# --- the functions -----------------------------------------------------------------------

# ok of a result<_, E> whose E may itself be empty (stream-error's closed, result<_, _>):
# wasmtime-py then tells the cases apart by name only.
_OK = wc.Variant("ok")

FUNCS: dict[str, Callable[..., Any]] = {}


def _func(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in names:
            FUNCS[name] = fn
        return fn

    return register


# wasi:io


def _wait(ready: Callable[[], bool], clock: float | None = None) -> None:
    """Block until ``ready()`` (or the monotonic instant ``clock``); the guest's deadline
    bounds every wait in a host call, where epoch interruption cannot reach it."""
    call = _call()
    cond = call.exchange.cond
    with cond:
        while not ready():
            now = time.monotonic()
            if now >= call.deadline:
                call.timed_out = True
                raise Timeout("the guest ran over its deadline in a host call")
            limit = call.deadline if clock is None else min(clock, call.deadline)
            cond.wait(max(0.0, limit - now) + 0.0005)


def _stream_error(why: str) -> Any:
    """A stream-error last-operation-failed, its error resource saying ``why``."""
    return new("error", why)


@_func("wasi:io/error#[method]error.to-debug-string")
def _error_text(store: Any, me: Any) -> str:
    return str(_get(store, me))


@_func("wasi:io/poll#[method]pollable.ready")
def _ready(store: Any, me: Any) -> bool:
    return bool(_get(store, me).ready())


@_func("wasi:io/poll#[method]pollable.block")
def _block(store: Any, me: Any) -> None:
    p = _get(store, me)
    _wait(p.ready, p.deadline)


@_func("wasi:io/poll#poll")
def _poll(store: Any, pollables: list[Any]) -> list[int]:
    items: list[_Pollable] = [_get(store, p) for p in pollables]
    clocks = [p.deadline for p in items if p.check is None and p.deadline is not None]
    found: list[int] = []

    def any_ready() -> bool:
        found[:] = [i for i, p in enumerate(items) if p.ready()]
        return bool(found)

    _wait(any_ready, min(clocks) if clocks else None)
    return found


@_func("wasi:io/streams#[method]input-stream.subscribe")
def _in_subscribe(store: Any, me: Any) -> Any:
    return new("pollable", _Pollable(check=_get(store, me).source.readable))


@_func("wasi:io/streams#[method]output-stream.subscribe")
def _out_subscribe(store: Any, me: Any) -> Any:
    return new("pollable", _Pollable(check=_get(store, me).sink.writable))


@_func("wasi:http/types#[method]future-trailers.subscribe")
def _subscribe(store: Any, me: Any) -> Any:
    return new("pollable", _Pollable())


def _read_from(s: _InStream, size: int, block: bool) -> bytes | Any:
    try:
        chunk = s.source.read(size)
        if block and chunk == b"" and size > 0:
            _wait(s.source.readable)
            chunk = s.source.read(size)
    except BodyError as exc:
        return _stream_error(f"the request body failed: {exc}")
    return chunk  # None: err(closed), the only stream-error without a payload


def _skip_in(store: Any, me: Any, size: int, block: bool) -> Any:
    got = _read_from(_get(store, me), size, block)
    return len(got) if isinstance(got, bytes) else got


@_func("wasi:io/streams#[method]input-stream.skip")
def _skip(store: Any, me: Any, size: int) -> Any:
    return _skip_in(store, me, size, False)


@_func("wasi:io/streams#[method]input-stream.blocking-skip")
def _blocking_skip(store: Any, me: Any, size: int) -> Any:
    return _skip_in(store, me, size, True)


@_func("wasi:io/streams#[method]output-stream.check-write")
def _check_write(store: Any, me: Any) -> Any:
    try:
        return _get(store, me).sink.capacity()
    except Gone:
        return None


def _put(sink: _Sink, data: bytes) -> Any:
    try:
        sink.write(data)
    except Gone:
        return wc.Variant("err", None)
    except Overrun as exc:
        return wc.Variant("err", _stream_error(str(exc)))
    return _OK


def _blocking_put(sink: _Sink, data: bytes) -> Any:
    """blocking-write-and-flush: in pieces as the connection takes them, then flushed."""
    view = memoryview(data)
    try:
        while True:
            room = sink.capacity()
            if room == 0:
                _wait(sink.writable)
                continue
            sink.write(bytes(view[:room]))
            view = view[room:]
            if not view:
                break
        # Flushed means handed to the connection: a client that leaves after having it all
        # (it read the whole content-length) is no failure of this write.
        _wait(sink.flushed)
    except Gone:
        return wc.Variant("err", None)
    except Overrun as exc:
        return wc.Variant("err", _stream_error(str(exc)))
    return _OK


def _splice(sink: _Sink, source: _InStream, size: int, block: bool) -> Any:
    """Up to ``size`` bytes from ``source`` to ``sink`` without crossing into the guest."""
    try:
        room = sink.capacity()
        while block and room == 0:
            _wait(sink.writable)
            room = sink.capacity()
        got = _read_from(source, min(size, room), block)
        if not isinstance(got, bytes):
            return got  # the input's end (closed) or its failure
        sink.write(got)
        if block:
            _wait(sink.flushed)
        return len(got)
    except Gone:
        return None
    except Overrun as exc:
        return _stream_error(str(exc))


@_func("wasi:io/streams#[method]output-stream.splice")
def _splice_now(store: Any, me: Any, src: Any, size: int) -> Any:
    return _splice(_get(store, me).sink, _get(store, src), size, False)


@_func("wasi:io/streams#[method]output-stream.blocking-splice")
def _blocking_splice(store: Any, me: Any, src: Any, size: int) -> Any:
    return _splice(_get(store, me).sink, _get(store, src), size, True)


@_func("wasi:io/streams#[method]output-stream.write-zeroes")
def _write_zeroes(store: Any, me: Any, size: int) -> Any:
    return _put(_get(store, me).sink, bytes(size))


@_func("wasi:io/streams#[method]output-stream.blocking-write-zeroes-and-flush")
def _blocking_zeroes(store: Any, me: Any, size: int) -> Any:
    return _blocking_put(_get(store, me).sink, bytes(size))


@_func("wasi:io/streams#[method]output-stream.flush")
def _flush(store: Any, me: Any) -> Any:
    return _OK


@_func("wasi:io/streams#[method]output-stream.blocking-flush")
def _blocking_flush(store: Any, me: Any) -> Any:
    _wait(_get(store, me).sink.flushed)
    return _OK


@_func("wasi:io/streams#[method]input-stream.read")
def _stream_read(store: Any, me: Any, size: int) -> Any:
    return _read_from(_get(store, me), size, False)


@_func("wasi:io/streams#[method]input-stream.blocking-read")
def _stream_blocking_read(store: Any, me: Any, size: int) -> Any:
    return _read_from(_get(store, me), size, True)


@_func("wasi:io/streams#[method]output-stream.write")
def _stream_write(store: Any, me: Any, data: bytes) -> Any:
    return _put(_get(store, me).sink, data)


@_func("wasi:io/streams#[method]output-stream.blocking-write-and-flush")
def _stream_blocking_write(store: Any, me: Any, data: bytes) -> Any:
    return _blocking_put(_get(store, me).sink, data)


# wasi:cli, clocks, random, filesystem (no preopens)


@_func("wasi:cli/stdout#get-stdout")
def _stdout(store: Any) -> Any:
    # The container's stderr: its stdout carries the access log, one line per request.
    return new("output-stream", _OutStream(_FdSink(2)))


@_func("wasi:cli/stderr#get-stderr")
def _stderr(store: Any) -> Any:
    return new("output-stream", _OutStream(_FdSink(2)))


@_func("wasi:cli/stdin#get-stdin")
def _stdin(store: Any) -> Any:
    return new("input-stream", _InStream(_Empty()))


@_func("wasi:cli/environment#get-environment")
def _environment(store: Any) -> list[tuple[str, str]]:
    return _call().env


@_func("wasi:cli/environment#get-arguments")
def _arguments(store: Any) -> list[str]:
    return []


@_func("wasi:cli/environment#initial-cwd")
def _cwd(store: Any) -> None:
    return None


@_func(
    "wasi:cli/terminal-stdin#get-terminal-stdin",
    "wasi:cli/terminal-stdout#get-terminal-stdout",
    "wasi:cli/terminal-stderr#get-terminal-stderr",
)
def _no_terminal(store: Any) -> None:
    return None


@_func("wasi:clocks/monotonic-clock#now")
def _mono_now(store: Any) -> int:
    return time.monotonic_ns()


@_func("wasi:clocks/monotonic-clock#resolution", "wasi:clocks/wall-clock#resolution")
def _resolution(store: Any) -> Any:
    return 1


@_func("wasi:clocks/monotonic-clock#subscribe-instant")
def _at(store: Any, when: int) -> Any:
    return new("pollable", _Pollable(time.monotonic() + (when - time.monotonic_ns()) / 1e9))


@_func("wasi:clocks/monotonic-clock#subscribe-duration")
def _after(store: Any, ns: int) -> Any:
    return new("pollable", _Pollable(time.monotonic() + ns / 1e9))


@_func("wasi:clocks/wall-clock#now")
def _wall_now(store: Any) -> Any:
    now = time.time_ns()
    return SimpleNamespace(seconds=now // 10**9, nanoseconds=now % 10**9)


@_func("wasi:random/random#get-random-bytes", "wasi:random/insecure#get-insecure-random-bytes")
def _random_bytes(store: Any, size: int) -> bytes:
    return os.urandom(size)


@_func("wasi:random/random#get-random-u64", "wasi:random/insecure#get-insecure-random-u64")
def _random_u64(store: Any) -> int:
    return int.from_bytes(os.urandom(8), "little")


@_func("wasi:random/insecure-seed#insecure-seed")
def _seed(store: Any) -> tuple[int, int]:
    return (_random_u64(store), _random_u64(store))


@_func("wasi:filesystem/preopens#get-directories")
def _preopens(store: Any) -> list[Any]:
    return []


# wasi:http/types


# A field name is a token (RFC 9110 5.1); a value has no control character but HTAB (5.5,
# as wasmtime's own host checks).  Without this a value holding CR LF would add header lines
# to the response the component never set (response splitting).
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_INVALID = wc.Variant("invalid-syntax")


def _valid(name: str, *values: bytes) -> bool:
    if _FIELD_NAME.fullmatch(name) is None:
        return False
    return not any(_BAD_VALUE.search(bytes(v)) for v in values)


def _header_entries(pairs: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return [(str(n).lower(), bytes(v)) for n, v in pairs]


@_func("wasi:http/types#[constructor]fields")
def _fields_new(store: Any) -> Any:
    return new("fields", Fields())


@_func("wasi:http/types#[static]fields.from-list")
def _fields_from_list(store: Any, pairs: list[tuple[str, bytes]]) -> Any:
    entries = _header_entries(pairs)
    if not all(_valid(n, v) for n, v in entries):
        return _INVALID
    return new("fields", Fields(entries))


@_func("wasi:http/types#[method]fields.get")
def _fields_get(store: Any, me: Any, name: str) -> list[bytes]:
    return [v for n, v in _get(store, me).entries if n == name.lower()]


@_func("wasi:http/types#[method]fields.has")
def _fields_has(store: Any, me: Any, name: str) -> bool:
    return any(n == name.lower() for n, _ in _get(store, me).entries)


@_func("wasi:http/types#[method]fields.set")
def _fields_set(store: Any, me: Any, name: str, values: list[bytes]) -> Any:
    f = _get(store, me)  # first: a borrowed handle left unused traps the call
    if not _valid(name, *values):
        return _INVALID
    f.entries = [(n, v) for n, v in f.entries if n != name.lower()]
    f.entries.extend((name.lower(), bytes(v)) for v in values)
    return None


@_func("wasi:http/types#[method]fields.delete")
def _fields_delete(store: Any, me: Any, name: str) -> Any:
    f = _get(store, me)
    if not _valid(name):
        return _INVALID
    f.entries = [(n, v) for n, v in f.entries if n != name.lower()]
    return None


@_func("wasi:http/types#[method]fields.append")
def _fields_append(store: Any, me: Any, name: str, value: bytes) -> Any:
    f = _get(store, me)
    if not _valid(name, value):
        return _INVALID
    f.entries.append((name.lower(), bytes(value)))
    return None


@_func("wasi:http/types#[method]fields.entries")
def _fields_entries(store: Any, me: Any) -> list[tuple[str, bytes]]:
    return list(_get(store, me).entries)


@_func("wasi:http/types#[method]fields.clone")
def _fields_clone(store: Any, me: Any) -> Any:
    return new("fields", Fields(list(_get(store, me).entries)))


@_func("wasi:http/types#[method]incoming-request.method")
def _method(store: Any, me: Any) -> Any:
    method = _get(store, me).method
    if method.lower() in _METHODS:
        return wc.Variant(method.lower())
    return wc.Variant("other", method)


@_func("wasi:http/types#[method]incoming-request.path-with-query")
def _path(store: Any, me: Any) -> str:
    return str(_get(store, me).target)


@_func("wasi:http/types#[method]incoming-request.scheme")
def _scheme(store: Any, me: Any) -> Any:
    return wc.Variant(_get(store, me).scheme)


@_func("wasi:http/types#[method]incoming-request.authority")
def _authority(store: Any, me: Any) -> str | None:
    return _get(store, me).authority or None


@_func("wasi:http/types#[method]incoming-request.headers")
def _request_headers(store: Any, me: Any) -> Any:
    return new("fields", Fields(list(_get(store, me).headers.entries)))


@_func("wasi:http/types#[method]incoming-request.consume")
def _consume(store: Any, me: Any) -> Any:
    _get(store, me)
    return new("incoming-body", _InStream(_call().exchange))


@_func("wasi:http/types#[method]incoming-body.stream")
def _body_stream(store: Any, me: Any) -> Any:
    return new("input-stream", _get(store, me))


@_func("wasi:http/types#[static]incoming-body.finish")
def _body_finish(store: Any, me: Any) -> Any:
    _take(store, me)
    return new("future-trailers", None)


@_func("wasi:http/types#[method]future-trailers.get")
def _trailers_get(store: Any, me: Any) -> Any:
    # some(ok(ok(none))): the request had no trailers.
    return wc.Variant("ok", wc.Variant("ok", None))


@_func("wasi:http/types#[constructor]outgoing-response")
def _response_new(store: Any, headers: Any) -> Any:
    return new("outgoing-response", Response(_take(store, headers)))


@_func("wasi:http/types#[method]outgoing-response.status-code")
def _status(store: Any, me: Any) -> int:
    return int(_get(store, me).status)


@_func("wasi:http/types#[method]outgoing-response.set-status-code")
def _set_status(store: Any, me: Any, code: int) -> Any:
    _get(store, me).status = code
    return _OK


@_func("wasi:http/types#[method]outgoing-response.headers")
def _response_headers(store: Any, me: Any) -> Any:
    # The child resource shares the response's list: changes show in the response.
    return new("fields", _get(store, me).headers)


@_func("wasi:http/types#[method]outgoing-response.body")
def _response_body(store: Any, me: Any) -> Any:
    response = _get(store, me)
    response.body_taken = True
    return new("outgoing-body", response)


@_func("wasi:http/types#[method]outgoing-body.write")
def _body_write(store: Any, me: Any) -> Any:
    return new("output-stream", _OutStream(_BodySink(_get(store, me), _call().exchange)))


@_func("wasi:http/types#[static]outgoing-body.finish")
def _out_finish(store: Any, me: Any, trailers: Any) -> Any:
    response: Response = _take(store, me)
    response.finished = True
    exchange = _call().exchange
    if response.live:
        exchange.finish()
        if not exchange.complete:
            return wc.Variant("HTTP-response-body-size", exchange.written)
    return None


@_func("wasi:http/types#[static]response-outparam.set")
def _outparam_set(store: Any, me: Any, result: Any) -> None:
    _take(store, me)
    call = _call()
    if not isinstance(result, wc.ResourceAny | wc.ResourceHost):
        call.error = f"the component answered an error: {getattr(result, 'tag', result)}"
        return
    response: Response = _take(store, result)
    call.response = response
    exchange = call.exchange
    exchange.start(response.status, response.headers.entries)
    response.live = True
    try:
        exchange.write(bytes(response.pending))
    except (Gone, Overrun):
        pass  # the guest's next write says so
    response.pending.clear()
    if response.finished:
        exchange.finish()


@_func("wasi:http/types#http-error-code")
def _http_error_code(store: Any, err: Any) -> None:
    return None
