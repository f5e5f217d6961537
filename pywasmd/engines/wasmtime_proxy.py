"""``wasi:http/proxy`` components on wasmtime-py: the host side of ``wasi:http/types`` in Python.

wasmtime-py links such a component (``add_wasip2`` + ``add_wasi_http``) but cannot call its
``handle``: the ``incoming-request`` and ``response-outparam`` it takes are resources that only
wasmtime's Rust side creates, and the C API has no constructor for them.  So this module
defines the resources itself, through the component linker: every resource type the component
imports becomes a host resource of ours (``wasi:io`` streams and pollables, ``wasi:http/types``),
the functions a handler needs are implemented here, and every other imported function traps
naming itself (sockets, filesystem, outgoing HTTP).

The request's method, target and authority come from the CGI environment the server already
builds for p1 modules (``pywasmd.http.cgi``), its headers as the server parsed them (bytes,
names in lower case, hop-by-hop framing headers left out); ``wasi:cli/environment`` is the
container's env only.  Its body and the response go through a
:class:`pywasmd.http.exchange.Exchange` while the handler runs (``call_streaming``): reads take
what the client has sent so far, writes reach the client as they are made, and every blocking
host call ends at the request's deadline.  ``call`` is the same with a whole body and a
collected response (a CGI response on "stdout"), for tests and tools.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any, Protocol

import wasmtime
from wasmtime import _ffi as _capi
from wasmtime import component as wc

from pywasmd.engine import CallResult
from pywasmd.http.exchange import BodyError, Exchange, Gone, Overrun, collecting

HANDLER_INTERFACE = "wasi:http/incoming-handler@0.2"
#: How often the engine's epoch advances (pywasmd.engines.wasmtime ticks it); a request's
#: deadline is a whole number of ticks.
EPOCH_TICK = 0.02
_METHODS = frozenset(
    {"get", "head", "post", "put", "delete", "connect", "options", "trace", "patch"}
)
# Only one guest call runs at a time in a process: wasmtime-py 47 carries a host function's
# exception through one process-wide variable (more server processes give the parallelism).
_CALL_LOCK = threading.Lock()


class _Trap(Exception):
    pass


class _Timeout(Exception):
    pass


@dataclass
class _Fields:
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
class _Response:
    headers: _Fields
    status: int = 200
    #: Written before response-outparam.set: sent with the head.
    pending: bytearray = field(default_factory=bytearray)
    live: bool = False
    body_taken: bool = False
    finished: bool = False


class _BodySink:
    """An outgoing-body's stream: into the exchange once the response is set, kept until then."""

    def __init__(self, response: _Response, exchange: Exchange) -> None:
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
class _Request:
    method: str
    target: str
    scheme: str
    authority: str
    headers: _Fields


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
class _Call:
    """What one request's instance sees; reps index ``objects``."""

    request: _Request
    env: list[tuple[str, str]]
    exchange: Exchange
    deadline: float
    objects: dict[int, object] = field(default_factory=dict)
    next_rep: int = 1
    response: _Response | None = None
    error: str = ""
    timed_out: bool = False
    #: A host function's exception (the guest trapped on it): what the call's outcome says.
    raised: Exception | None = None


_local = threading.local()


def _call() -> _Call:
    call: _Call = _local.call
    return call


class ProxyInstances:
    """``Instances`` for a component exporting ``wasi:http/incoming-handler@0.2.x``."""

    #: Calls per process at once (see _CALL_LOCK); the server runs no more threads than this.
    max_parallel = 1

    def __init__(
        self,
        engine: wasmtime.Engine,
        component: wc.Component,
        memory_limit: int | None,
        env: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._engine = engine
        self._component = component
        self._memory_limit = memory_limit
        # The container's env (-e, the image's ENV): what wasi:cli/environment returns.  The
        # request reaches the component through incoming-request, not through variables.
        self._env = [(k, v) for k, v in env]
        self._types: list[tuple[wc.ResourceType, int, str]] = []
        self._linker = wc.Linker(engine)
        self._define(component.type.imports(engine))
        self._interface = next(
            n for n in component.type.exports(engine) if n.startswith(HANDLER_INTERFACE)
        )
        #: The next request's store and instance, made once the previous one was answered.
        self._spare: tuple[wasmtime.Store, wc.Func | None] | None = None

    # --- linking ---

    def _host_type(self, ty: wc.ResourceType, name: str) -> int:
        for known, number, _ in self._types:
            if known == ty:
                return number
        number = len(self._types) + 1
        self._types.append((ty, number, name))
        return number

    def _define(self, imports: dict[str, Any]) -> None:
        with self._linker.root() as root:
            for iname, itype in imports.items():
                if not isinstance(itype, wc.ComponentInstanceType):
                    continue
                base = iname.split("@", 1)[0]
                with root.add_instance(iname) as instance:
                    for name, item in itype.exports(self._engine).items():
                        if isinstance(item, wc.ResourceType):
                            number = self._host_type(item, name)
                            instance.add_resource(name, wc.ResourceType.host(number), _drop)
                        elif isinstance(item, wc.FuncType):
                            impl = _FUNCS.get(f"{base}#{name}")
                            if impl is not None:
                                _add_host(instance, name, item, impl)
                            else:
                                instance.add_func(name, _trap_for(f"{iname}#{name}"))
        self._kinds = {name: number for _, number, name in self._types}

    # --- one request ---

    def call(
        self,
        env: Sequence[tuple[str, str]],
        stdin: bytes,
        timeout: float,
        headers: Sequence[tuple[bytes, bytes]] | None = None,
    ) -> CallResult:
        """The whole body in, the whole response out as a CGI response (tests, tools).
        Without ``headers``, the request's headers are made from the CGI variables."""
        exchange, kept = collecting(stdin)
        result = self.call_streaming(env, exchange, timeout, headers)
        if result.outcome != "exit":
            return result
        head = _Response(_Fields(kept.headers), kept.status)
        return CallResult("exit", 0, _as_cgi(head, bytes(kept.body)))

    def call_streaming(
        self,
        env: Sequence[tuple[str, str]],
        exchange: Exchange,
        timeout: float,
        headers: Sequence[tuple[bytes, bytes]] | None = None,
    ) -> CallResult:
        """Run ``handle`` in a new instance: the request body is read from ``exchange`` as
        it arrives, the response goes to it as it is written.  ``env`` gives the method,
        target and authority (the CGI variables), ``headers`` the request's header lines as
        the server parsed them (None: made from ``env``, for tests and tools).  "exit" means
        the response was set (``exchange.started``); ``exchange.complete`` says whether its
        body was finished."""
        request = _request(env, headers)
        call = _Call(request, self._env, exchange, time.monotonic() + timeout)
        with _CALL_LOCK:
            _local.call = call
            _local.kinds = self._kinds
            spare, self._spare = self._spare, None
            try:
                outcome, detail = self._run(call, timeout, spare)
            finally:
                _local.call = None
        response = call.response
        if outcome == "exit" and response is not None and not response.body_taken:
            # A response whose body was never asked for has an empty one.
            exchange.finish()
        if outcome == "exit" and response is not None and exchange.finished:
            # The client has its answer: the next request's instance is made now, not
            # while that request waits (instantiating is a third of an instance's time).
            with _CALL_LOCK:
                if self._spare is None:
                    try:
                        self._spare = self._prepare(timeout)
                    except (wasmtime.Trap, wasmtime.WasmtimeError):
                        pass  # the next request instantiates and answers with the reason
        if outcome != "exit":
            return CallResult(outcome, 0, b"", detail)
        if response is None:
            why = call.error or "the component set no response (response-outparam.set)"
            return CallResult("trap", 0, b"", why)
        return CallResult("exit", 0, b"")

    def _prepare(self, timeout: float) -> tuple[wasmtime.Store, wc.Func | None]:
        """A new store with a new instance of the component, and its ``handle``.  Used by
        one request only (a fresh instance per request), then closed."""
        store = wasmtime.Store(self._engine)
        try:
            if self._memory_limit is not None:
                store.set_limits(memory_size=self._memory_limit)
            # Instantiating runs the component's start code: bounded as a request is.
            store.set_epoch_deadline(_ticks(timeout))
            instance = self._linker.instantiate(store, self._component)
            iface = instance.get_export_index(store, self._interface)
            index = instance.get_export_index(store, "handle", iface) if iface else None
            handle = instance.get_func(store, index) if index is not None else None
        except BaseException:
            store.close()
            raise
        return store, handle

    def _run(
        self, call: _Call, timeout: float, spare: tuple[wasmtime.Store, wc.Func | None] | None
    ) -> tuple[str, str]:
        store: wasmtime.Store | None = None
        try:
            store, handle = spare if spare is not None else self._prepare(timeout)
            if handle is None:
                return "trap", f"{self._interface} exports no handle function"
            store.set_epoch_deadline(_ticks(timeout))
            request = _new("incoming-request", call.request)
            outparam = _new("response-outparam", None)
            try:
                handle(store, request, outparam)
            except (wasmtime.Trap, wasmtime.WasmtimeError):
                if call.raised is not None:  # the guest trapped on a host function's exception
                    raise call.raised from None
                raise
            handle.post_return(store)
        except wasmtime.Trap as exc:
            if call.timed_out:
                return "timeout", ""
            if exc.trap_code == wasmtime.TrapCode.INTERRUPT:
                return "timeout", ""
            return "trap", _last_line(exc)
        except wasmtime.WasmtimeError as exc:
            text = str(exc)
            if call.timed_out or "interrupt" in text:
                return "timeout", ""
            return "trap", call.error or _last_line(exc)
        except (_Trap, _Timeout, Gone, BodyError, Overrun) as exc:
            # A host function's own exception (call.raised), as the trap it caused.
            if call.timed_out:
                return "timeout", ""
            return "trap", str(exc)
        finally:
            if store is not None:
                store.close()
        return "exit", ""


def _ticks(timeout: float) -> int:
    return max(1, math.ceil(timeout / EPOCH_TICK))


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


# Hop-by-hop headers about this connection and its framing, which the server has acted on
# (RFC 9110 7.6.1, 7.8; RFC 9112 6.1): the component gets the decoded body and has no
# connection to manage.  Content-Length stays: it is the body's size.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade"}
)


def _request(
    env: Sequence[tuple[str, str]], raw: Sequence[tuple[bytes, bytes]] | None = None
) -> _Request:
    values = dict(env)
    headers = _Fields()
    if raw is not None:
        # As sent: values are bytes (not necessarily UTF-8), repeated headers stay separate
        # entries, and no CGI rule (names with "_", Proxy) applies; names in lower case, as
        # wasmtime's own host gives them.
        for name, value in raw:
            key = bytes(name).decode("latin-1").lower()
            if key not in _HOP_BY_HOP:
                headers.entries.append((key, bytes(value)))
    else:
        for key, text in env:
            if key.startswith("HTTP_"):
                headers.entries.append((key[5:].lower().replace("_", "-"), text.encode()))
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                headers.entries.append((key.lower().replace("_", "-"), text.encode()))
    return _Request(
        method=values.get("REQUEST_METHOD", "GET"),
        target=values.get("REQUEST_URI", "/"),
        scheme="HTTP",
        authority=values.get("HTTP_HOST", ""),
        headers=headers,
    )


def _as_cgi(response: _Response, body: bytes) -> bytes:
    lines = [f"Status: {response.status} {_phrase(response.status)}"]
    lines.extend(f"{n}: {v.decode('latin-1')}" for n, v in response.headers.entries)
    if not any(n.lower() == "content-type" for n, _ in response.headers.entries):
        lines.append("Content-Type: application/octet-stream")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


# --- resources ---------------------------------------------------------------------------


def _new(kind: str, obj: object) -> wc.ResourceHost:
    call = _call()
    rep = call.next_rep
    call.next_rep += 1
    call.objects[rep] = obj
    return wc.ResourceHost.own(rep, _local.kinds[kind])


def _get(store: Any, handle: Any) -> Any:
    rep = handle.to_host(store).rep
    return _call().objects[rep]


def _take(store: Any, handle: Any) -> Any:
    rep = handle.to_host(store).rep
    return _call().objects.pop(rep)


def _drop(store: Any, rep: int) -> None:
    call = getattr(_local, "call", None)
    if call is not None:
        call.objects.pop(rep, None)


def _trap_for(name: str) -> Callable[..., Any]:
    def trap(store: Any, *args: Any) -> Any:
        raise _Trap(f"{name} is not available to HTTP functions")

    return trap


# --- the functions -----------------------------------------------------------------------

# ok of a result<_, E> whose E may itself be empty (stream-error's closed, result<_, _>):
# wasmtime-py then tells the cases apart by name only.
_OK = wc.Variant("ok")

_FUNCS: dict[str, Callable[..., Any]] = {}


def _func(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in names:
            _FUNCS[name] = fn
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
                raise _Timeout("the guest ran over its deadline in a host call")
            limit = call.deadline if clock is None else min(clock, call.deadline)
            cond.wait(max(0.0, limit - now) + 0.0005)


def _stream_error(why: str) -> Any:
    """A stream-error last-operation-failed, its error resource saying ``why``."""
    return _new("error", why)


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
    return _new("pollable", _Pollable(check=_get(store, me).source.readable))


@_func("wasi:io/streams#[method]output-stream.subscribe")
def _out_subscribe(store: Any, me: Any) -> Any:
    return _new("pollable", _Pollable(check=_get(store, me).sink.writable))


@_func("wasi:http/types#[method]future-trailers.subscribe")
def _subscribe(store: Any, me: Any) -> Any:
    return _new("pollable", _Pollable())


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


# --- values across the boundary ------------------------------------------------------------
#
# wasmtime-py 47 calls a host function through one generic callback that, on every call,
# rebuilds the function's type from the engine (a FuncType, then every nested ValType, a
# variant's cases, a list's element) and converts each value by walking that type; a list<u8>
# goes one element at a time (a ctypes struct and several calls per byte: ~1 µs a byte).  A
# componentize-py guest asks for 2.5 KB of random bytes per request, and each host call paid
# ~40-100 µs of type walking.  So every function of ours is defined through the engine's C API
# itself (wasmtime_component_linker_instance_add_func, the call LinkerInstance.add_func makes)
# with a lifter and a lowerer compiled once per function from its type when the linker is
# built: the same Python values wasmtime-py's conversions give and take (Variant, Record,
# ResourceAny, bytes for list<u8>, the untagged forms of option, result and variant chosen by
# the same rule), and list<u8> read and built as one block of wasmtime_component_val_t
# (32 bytes per byte) with slice copies.  Nothing of wasmtime-py is replaced or patched.

_VAL_SIZE = ctypes.sizeof(_capi.wasmtime_component_val)
_VAL_OF = _capi.wasmtime_component_val.of.offset
_KIND_U8 = bytes((_capi.WASMTIME_COMPONENT_U8.value,))
_Lift = Callable[[Any], Any]
_Lower = Callable[[Any, Any, Any], None]


def _val_bytes(items: Any) -> memoryview:
    """The vallist's elements as one writable block of bytes (no copy)."""
    address = ctypes.cast(items.data, ctypes.c_void_p).value
    block = (ctypes.c_char * (int(items.size) * _VAL_SIZE)).from_address(address or 0)
    return memoryview(block).cast("B")


def _lift_bytes(val: Any) -> bytes:
    """A list<u8> as bytes; the list is freed, as wasmtime-py does with what it lifts."""
    items = val.of.list
    data = bytes(_val_bytes(items)[_VAL_OF::_VAL_SIZE]) if items.size else b""
    _capi.wasmtime_component_vallist_delete(ctypes.byref(items))
    return data


def _lower_bytes(store: Any, data: Any, out: Any) -> None:
    if not isinstance(data, bytes):
        raise TypeError("expected bytes value")
    items = _capi.wasmtime_component_vallist_t()
    _capi.wasmtime_component_vallist_new_uninit(ctypes.byref(items), len(data))
    if data:
        block = _val_bytes(items)
        block[0::_VAL_SIZE] = _KIND_U8 * len(data)
        block[_VAL_OF::_VAL_SIZE] = data
    out.kind = _capi.WASMTIME_COMPONENT_LIST
    out.of.list = items


def _moved(raw: Any) -> None:
    """Mark a lifted element as moved out, so deleting its container leaves it alone."""
    raw.kind = _capi.WASMTIME_COMPONENT_BOOL
    raw.of.boolean = False


_SCALARS: dict[type, tuple[str, Any, type]] = {
    wc.Bool: ("boolean", _capi.WASMTIME_COMPONENT_BOOL, bool),
    wc.S8: ("s8", _capi.WASMTIME_COMPONENT_S8, int),
    wc.U8: ("u8", _capi.WASMTIME_COMPONENT_U8, int),
    wc.S16: ("s16", _capi.WASMTIME_COMPONENT_S16, int),
    wc.U16: ("u16", _capi.WASMTIME_COMPONENT_U16, int),
    wc.S32: ("s32", _capi.WASMTIME_COMPONENT_S32, int),
    wc.U32: ("u32", _capi.WASMTIME_COMPONENT_U32, int),
    wc.S64: ("s64", _capi.WASMTIME_COMPONENT_S64, int),
    wc.U64: ("u64", _capi.WASMTIME_COMPONENT_U64, int),
}


def _cases(ty: Any) -> list[tuple[str, Any]]:
    if isinstance(ty, wc.OptionType):
        return [("none", None), ("some", ty.payload)]
    if isinstance(ty, wc.ResultType):
        return [("ok", ty.ok), ("err", ty.err)]
    return list(ty.cases)


def _classes(ty: Any) -> tuple[type, ...]:
    found: set[type] = set()
    if ty is None:
        found.add(object)
    else:
        ty.add_classes(found)
    return tuple(found)


def _tagged(cases: list[tuple[str, Any]]) -> bool:
    """wasmtime-py's rule: a variant-like value is a ``Variant`` unless its cases' Python
    classes are disjoint, then it is the payload itself (None for a case without one)."""
    seen: set[type] = set()
    for _, ty in cases:
        case = set(_classes(ty))
        if case & seen:
            return True
        seen |= case
    return False


def _lifter(ty: Any) -> _Lift:
    if type(ty) in _SCALARS:
        name = _SCALARS[type(ty)][0]
        return lambda c: getattr(c.of, name)
    if isinstance(ty, wc.String):

        def lift_string(c: Any) -> str:
            text = _capi.to_str(c.of.string)
            _capi.wasm_byte_vec_delete(ctypes.byref(c.of.string))
            return text

        return lift_string
    if isinstance(ty, wc.OwnType | wc.BorrowType):
        return lambda c: wc.ResourceAny._from_ptr(_capi.take_pointer(c.of, "resource"))
    if isinstance(ty, wc.ListType):
        element = ty.element
        if isinstance(element, wc.U8):
            return _lift_bytes
        item = _lifter(element)

        def lift_list(c: Any) -> list[Any]:
            items = c.of.list
            try:
                out = []
                for i in range(items.size):
                    raw = items.data[i]
                    out.append(item(raw))
                    _moved(raw)
                return out
            finally:
                _capi.wasmtime_component_vallist_delete(ctypes.byref(items))

        return lift_list
    if isinstance(ty, wc.TupleType):
        parts = [_lifter(t) for t in ty.elements]

        def lift_tuple(c: Any) -> tuple[Any, ...]:
            items = c.of.tuple
            try:
                out = []
                for i, part in zip(range(items.size), parts, strict=False):
                    raw = items.data[i]
                    out.append(part(raw))
                    _moved(raw)
                return tuple(out)
            finally:
                _capi.wasmtime_component_valtuple_delete(ctypes.byref(items))

        return lift_tuple
    if isinstance(ty, wc.VariantType | wc.OptionType | wc.ResultType):
        return _variant_lifter(ty)
    if isinstance(ty, wc.EnumType):

        def lift_enum(c: Any) -> str:
            text = _capi.to_str(c.of.enumeration)
            _capi.wasm_byte_vec_delete(ctypes.byref(c.of.enumeration))
            return text

        return lift_enum
    return ty.convert_from_c  # type: ignore[no-any-return]


def _variant_lifter(ty: Any) -> _Lift:
    cases = _cases(ty)
    tagged = _tagged(cases)
    payloads = {name: (None if t is None else _lifter(t)) for name, t in cases}

    def case(tag: str, ptr: Any) -> Any:
        if tag not in payloads:
            raise ValueError(f"tag {tag} not found in variant cases")
        lift = payloads[tag]
        if lift is None:
            return wc.Variant(tag) if tagged else None
        payload = lift(ptr.contents)
        _moved(ptr.contents)
        _capi.wasmtime_component_val_delete(ptr)
        return wc.Variant(tag, payload) if tagged else payload

    if isinstance(ty, wc.OptionType):
        return lambda c: case("some" if c.of.option else "none", c.of.option)
    if isinstance(ty, wc.ResultType):
        return lambda c: case("ok" if c.of.result.is_ok else "err", c.of.result.val)

    def lift_variant(c: Any) -> Any:
        tag = _capi.to_str(c.of.variant.discriminant)
        _capi.wasm_byte_vec_delete(ctypes.byref(c.of.variant.discriminant))
        return case(tag, c.of.variant.val)

    return lift_variant


def _lowerer(ty: Any) -> _Lower:
    if type(ty) in _SCALARS:
        name, kind, cls = _SCALARS[type(ty)]

        def lower_scalar(store: Any, val: Any, out: Any) -> None:
            if not isinstance(val, cls):
                raise TypeError(f"expected {cls.__name__} for {type(ty).__name__} type")
            out.kind = kind
            setattr(out.of, name, val)

        return lower_scalar
    if isinstance(ty, wc.String):

        def lower_string(store: Any, val: Any, out: Any) -> None:
            out.kind = _capi.WASMTIME_COMPONENT_STRING
            out.of.string = _capi.str_to_capi(val)

        return lower_string
    if isinstance(ty, wc.OwnType):

        def lower_own(store: Any, val: Any, out: Any) -> None:
            if isinstance(val, wc.ResourceHost):
                val = val.to_any(store)
            elif not isinstance(val, wc.ResourceAny):
                raise TypeError("expected ResourceAny or ResourceHost for Own type")
            out.kind = _capi.WASMTIME_COMPONENT_RESOURCE
            out.of.resource = val._consume()

        return lower_own
    if isinstance(ty, wc.ListType):
        element = ty.element
        if isinstance(element, wc.U8):
            return _lower_bytes
        item = _lowerer(element)

        def lower_list(store: Any, val: Any, out: Any) -> None:
            if not isinstance(val, list):
                raise TypeError("expected list value")
            items = _capi.wasmtime_component_vallist_t()
            _capi.wasmtime_component_vallist_new_uninit(items, len(val))
            _fill(store, items, [item] * len(val), val)
            out.kind = _capi.WASMTIME_COMPONENT_LIST
            out.of.list = items

        return lower_list
    if isinstance(ty, wc.TupleType):
        parts = [_lowerer(t) for t in ty.elements]

        def lower_tuple(store: Any, val: Any, out: Any) -> None:
            if not isinstance(val, tuple):
                raise TypeError("expected tuple type")
            if len(val) != len(parts):
                raise TypeError("tuple length mismatch")
            items = _capi.wasmtime_component_valtuple_t()
            _capi.wasmtime_component_valtuple_new_uninit(items, len(parts))
            _fill(store, items, parts, val)
            out.kind = _capi.WASMTIME_COMPONENT_TUPLE
            out.of.tuple = items

        return lower_tuple
    if isinstance(ty, wc.VariantType | wc.OptionType | wc.ResultType):
        return _variant_lowerer(ty)
    if isinstance(ty, wc.EnumType):

        def lower_enum(store: Any, val: Any, out: Any) -> None:
            if not isinstance(val, str):
                raise TypeError("expected str type")
            out.kind = _capi.WASMTIME_COMPONENT_ENUM
            out.of.enumeration = _capi.str_to_capi(val)

        return lower_enum
    return lambda store, val, out: ty.convert_to_c(store, val, ctypes.pointer(out))


def _fill(store: Any, items: Any, parts: Sequence[_Lower], values: Sequence[Any]) -> None:
    """Lower ``values`` into a new list or tuple; on a failure it is freed (the rest of it
    made harmless first, as wasmtime-py does)."""
    done = 0
    try:
        for part, value in zip(parts, values, strict=True):
            part(store, value, items.data[done])
            done += 1
    except BaseException:
        for j in range(done, len(values)):
            _moved(items.data[j])
        if isinstance(items, _capi.wasmtime_component_vallist_t):
            _capi.wasmtime_component_vallist_delete(ctypes.byref(items))
        else:
            _capi.wasmtime_component_valtuple_delete(ctypes.byref(items))
        raise


def _variant_lowerer(ty: Any) -> _Lower:
    cases = _cases(ty)
    tagged = _tagged(cases)
    compiled = [(name, _classes(t), None if t is None else _lowerer(t)) for name, t in cases]

    def pick(store: Any, val: Any) -> tuple[str, Any]:
        if tagged and not isinstance(val, wc.Variant):
            raise TypeError("expected Variant type")
        for name, classes, lower in compiled:
            if tagged:
                if name != val.tag:
                    continue
            elif lower is None:
                if val is not None:
                    continue
            elif not isinstance(val, classes):
                continue
            if lower is None:
                return name, None
            raw = _capi.wasmtime_component_val_t()
            lower(store, val.payload if tagged else val, raw)
            return name, _capi.wasmtime_component_val_new(ctypes.byref(raw))
        raise ValueError("value not valid for this variant")

    if isinstance(ty, wc.OptionType):

        def lower_option(store: Any, val: Any, out: Any) -> None:
            _, raw = pick(store, val)
            out.kind = _capi.WASMTIME_COMPONENT_OPTION
            out.of.option = raw

        return lower_option
    if isinstance(ty, wc.ResultType):

        def lower_result(store: Any, val: Any, out: Any) -> None:
            name, raw = pick(store, val)
            out.kind = _capi.WASMTIME_COMPONENT_RESULT
            out.of.result.is_ok = name == "ok"
            out.of.result.val = raw

        return lower_result

    def lower_variant(store: Any, val: Any, out: Any) -> None:
        name, raw = pick(store, val)
        out.kind = _capi.WASMTIME_COMPONENT_VARIANT
        out.of.variant.discriminant = _capi.str_to_capi(name)
        out.of.variant.val = raw

    return lower_variant


@dataclass
class _Host:
    fn: Callable[..., Any]
    lifts: list[_Lift]
    lower: _Lower | None
    #: Keeps the types the codecs were compiled from alive.
    ty: wc.FuncType


_HOSTS: list[_Host] = []


@_capi.wasmtime_component_func_callback_t  # type: ignore[untyped-decorator]
def _host_entry(
    index: int | None,
    context: Any,
    ty: Any,
    args: Any,
    nargs: int,
    results: Any,
    nresults: int,
) -> int:
    store = wasmtime.StoreContext(context)
    try:
        host = _HOSTS[(index or 0) - 1]
        values = [lift(args[i]) for i, lift in enumerate(host.lifts)]
        value = host.fn(store, *values)
        if host.lower is not None:
            host.lower(store, value, results.contents)
        elif value is not None:
            raise TypeError(f"{host.fn.__name__} returned a value for a function without one")
    except wasmtime.WasmtimeError as exc:
        # As wasmtime-py: the engine's own error goes back as the guest's trap.
        return int(ctypes.cast(exc._consume(), ctypes.c_void_p).value or 0)
    except Exception as exc:  # noqa: BLE001 - the guest traps; _run looks at the exception
        call = getattr(_local, "call", None)
        if call is not None:
            call.raised = exc
        text = str(exc) or type(exc).__name__
        error = _capi.wasmtime_error_new(text.encode("utf-8", "replace"))
        return int(ctypes.cast(error, ctypes.c_void_p).value or 0)
    finally:
        store._invalidate()
    return 0


def _no_finalizer(index: int | None) -> None:
    return None


# The entries live as long as the process (one linker per server process).
_host_finalize = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_no_finalizer)


def _add_host(
    instance: wc.LinkerInstance, name: str, ty: wc.FuncType, fn: Callable[..., Any]
) -> None:
    result = ty.result
    lower = None if result is None else _lowerer(result)
    _HOSTS.append(_Host(fn, [_lifter(t) for _, t in ty.params], lower, ty))
    raw = name.encode()
    error = _capi.wasmtime_component_linker_instance_add_func(
        instance.ptr(),
        ctypes.create_string_buffer(raw),
        len(raw),
        _host_entry,
        len(_HOSTS),
        _host_finalize,
    )
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)


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
    return _new("output-stream", _OutStream(_FdSink(2)))


@_func("wasi:cli/stderr#get-stderr")
def _stderr(store: Any) -> Any:
    return _new("output-stream", _OutStream(_FdSink(2)))


@_func("wasi:cli/stdin#get-stdin")
def _stdin(store: Any) -> Any:
    return _new("input-stream", _InStream(_Empty()))


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
    return _new("pollable", _Pollable(time.monotonic() + (when - time.monotonic_ns()) / 1e9))


@_func("wasi:clocks/monotonic-clock#subscribe-duration")
def _after(store: Any, ns: int) -> Any:
    return _new("pollable", _Pollable(time.monotonic() + ns / 1e9))


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
    return _new("fields", _Fields())


@_func("wasi:http/types#[static]fields.from-list")
def _fields_from_list(store: Any, pairs: list[tuple[str, bytes]]) -> Any:
    entries = _header_entries(pairs)
    if not all(_valid(n, v) for n, v in entries):
        return _INVALID
    return _new("fields", _Fields(entries))


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
    return _new("fields", _Fields(list(_get(store, me).entries)))


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
    return _new("fields", _Fields(list(_get(store, me).headers.entries)))


@_func("wasi:http/types#[method]incoming-request.consume")
def _consume(store: Any, me: Any) -> Any:
    _get(store, me)
    return _new("incoming-body", _InStream(_call().exchange))


@_func("wasi:http/types#[method]incoming-body.stream")
def _body_stream(store: Any, me: Any) -> Any:
    return _new("input-stream", _get(store, me))


@_func("wasi:http/types#[static]incoming-body.finish")
def _body_finish(store: Any, me: Any) -> Any:
    _take(store, me)
    return _new("future-trailers", None)


@_func("wasi:http/types#[method]future-trailers.get")
def _trailers_get(store: Any, me: Any) -> Any:
    # some(ok(ok(none))): the request had no trailers.
    return wc.Variant("ok", wc.Variant("ok", None))


@_func("wasi:http/types#[constructor]outgoing-response")
def _response_new(store: Any, headers: Any) -> Any:
    return _new("outgoing-response", _Response(_take(store, headers)))


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
    return _new("fields", _get(store, me).headers)


@_func("wasi:http/types#[method]outgoing-response.body")
def _response_body(store: Any, me: Any) -> Any:
    response = _get(store, me)
    response.body_taken = True
    return _new("outgoing-body", response)


@_func("wasi:http/types#[method]outgoing-body.write")
def _body_write(store: Any, me: Any) -> Any:
    return _new("output-stream", _OutStream(_BodySink(_get(store, me), _call().exchange)))


@_func("wasi:http/types#[static]outgoing-body.finish")
def _out_finish(store: Any, me: Any, trailers: Any) -> Any:
    response: _Response = _take(store, me)
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
    response: _Response = _take(store, result)
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
