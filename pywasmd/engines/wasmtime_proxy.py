"""``wasi:http/proxy`` components on wasmtime-py: the host side of ``wasi:http/types`` in Python.

wasmtime-py links such a component (``add_wasip2`` + ``add_wasi_http``) but cannot call its
``handle``: the ``incoming-request`` and ``response-outparam`` it takes are resources that only
wasmtime's Rust side creates, and the C API has no constructor for them.  So this module
defines the resources itself, through the component linker: every resource type the component
imports becomes a host resource of ours (``wasi:io`` streams and pollables, ``wasi:http/types``),
the functions a handler needs are implemented here, and every other imported function traps
naming itself (sockets, filesystem, outgoing HTTP).

The request arrives as the CGI environment and body the server already builds for p1 modules
(``pywasmd.http.cgi``), and the response leaves as a CGI response on "stdout": the server needs
nothing new.  Bodies are whole, both ways (no streaming yet).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any

import wasmtime
from wasmtime import component as wc

from pywasmd.engine import CallResult

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


@dataclass
class _Fields:
    entries: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class _InStream:
    data: bytes
    pos: int = 0


@dataclass
class _OutStream:
    sink: Callable[[bytes], None]


@dataclass
class _Response:
    headers: _Fields
    status: int = 200
    body: bytearray = field(default_factory=bytearray)


@dataclass
class _Request:
    method: str
    target: str
    scheme: str
    authority: str
    headers: _Fields
    body: bytes


@dataclass
class _Pollable:
    deadline: float | None = None


@dataclass
class _Call:
    """What one request's instance sees; reps index ``objects``."""

    request: _Request
    env: list[tuple[str, str]]
    objects: dict[int, object] = field(default_factory=dict)
    next_rep: int = 1
    response: _Response | None = None
    error: str = ""


_local = threading.local()


def _call() -> _Call:
    call: _Call = _local.call
    return call


class ProxyInstances:
    """``Instances`` for a component exporting ``wasi:http/incoming-handler@0.2.x``."""

    #: Calls per process at once (see _CALL_LOCK); the server runs no more threads than this.
    max_parallel = 1

    def __init__(
        self, engine: wasmtime.Engine, component: wc.Component, memory_limit: int | None
    ) -> None:
        self._engine = engine
        self._component = component
        self._memory_limit = memory_limit
        self._types: list[tuple[wc.ResourceType, int, str]] = []
        self._linker = wc.Linker(engine)
        self._define(component.type.imports(engine))
        self._interface = next(
            n for n in component.type.exports(engine) if n.startswith(HANDLER_INTERFACE)
        )

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
                            instance.add_func(name, impl or _trap_for(f"{iname}#{name}"))
        self._kinds = {name: number for _, number, name in self._types}

    # --- one request ---

    def call(self, env: Sequence[tuple[str, str]], stdin: bytes, timeout: float) -> CallResult:
        call = _Call(_request(env, stdin), [(k, v) for k, v in env])
        with _CALL_LOCK:
            _local.call = call
            _local.kinds = self._kinds
            store = wasmtime.Store(self._engine)
            try:
                if self._memory_limit is not None:
                    store.set_limits(memory_size=self._memory_limit)
                store.set_epoch_deadline(max(1, math.ceil(timeout / EPOCH_TICK)))
                outcome, detail = self._run(store, call)
            finally:
                _local.call = None
                store.close()
        if outcome != "exit":
            return CallResult(outcome, 0, b"", detail)
        if call.response is None:
            why = call.error or "the component set no response (response-outparam.set)"
            return CallResult("trap", 0, b"", why)
        return CallResult("exit", 0, _as_cgi(call.response))

    def _run(self, store: wasmtime.Store, call: _Call) -> tuple[str, str]:
        try:
            instance = self._linker.instantiate(store, self._component)
            iface = instance.get_export_index(store, self._interface)
            index = instance.get_export_index(store, "handle", iface) if iface else None
            handle = instance.get_func(store, index) if index is not None else None
            if handle is None:
                return "trap", f"{self._interface} exports no handle function"
            request = _new("incoming-request", call.request)
            outparam = _new("response-outparam", None)
            handle(store, request, outparam)
            handle.post_return(store)
        except wasmtime.Trap as exc:
            if exc.trap_code == wasmtime.TrapCode.INTERRUPT:
                return "timeout", ""
            return "trap", _last_line(exc)
        except wasmtime.WasmtimeError as exc:
            text = str(exc)
            if "interrupt" in text:
                return "timeout", ""
            return "trap", call.error or _last_line(exc)
        return "exit", ""


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _request(env: Sequence[tuple[str, str]], body: bytes) -> _Request:
    values = dict(env)
    headers = _Fields()
    for key, value in env:
        if key.startswith("HTTP_"):
            headers.entries.append((key[5:].lower().replace("_", "-"), value.encode()))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            headers.entries.append((key.lower().replace("_", "-"), value.encode()))
    return _Request(
        method=values.get("REQUEST_METHOD", "GET"),
        target=values.get("REQUEST_URI", "/"),
        scheme="HTTP",
        authority=values.get("HTTP_HOST", ""),
        headers=headers,
        body=body,
    )


def _as_cgi(response: _Response) -> bytes:
    lines = [f"Status: {response.status} {_phrase(response.status)}"]
    lines.extend(f"{n}: {v.decode('latin-1')}" for n, v in response.headers.entries)
    if not any(n.lower() == "content-type" for n, _ in response.headers.entries):
        lines.append("Content-Type: application/octet-stream")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + bytes(response.body)


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


@_func("wasi:io/error#[method]error.to-debug-string")
def _error_text(store: Any, me: Any) -> str:
    return str(_get(store, me))


@_func("wasi:io/poll#[method]pollable.ready")
def _ready(store: Any, me: Any) -> bool:
    p = _get(store, me)
    return p.deadline is None or time.monotonic() >= p.deadline


@_func("wasi:io/poll#[method]pollable.block")
def _block(store: Any, me: Any) -> None:
    p = _get(store, me)
    if p.deadline is not None:
        time.sleep(max(0.0, p.deadline - time.monotonic()))


@_func("wasi:io/poll#poll")
def _poll(store: Any, pollables: list[Any]) -> list[int]:
    items = [_get(store, p) for p in pollables]
    ready = [i for i, p in enumerate(items) if p.deadline is None]
    if ready:
        return ready
    soonest = min(p.deadline for p in items)
    time.sleep(max(0.0, soonest - time.monotonic()))
    return [i for i, p in enumerate(items) if p.deadline <= soonest]


@_func(
    "wasi:io/streams#[method]input-stream.subscribe",
    "wasi:io/streams#[method]output-stream.subscribe",
    "wasi:http/types#[method]future-trailers.subscribe",
)
def _subscribe(store: Any, me: Any) -> Any:
    return _new("pollable", _Pollable())


@_func(
    "wasi:io/streams#[method]input-stream.read",
    "wasi:io/streams#[method]input-stream.blocking-read",
)
def _read(store: Any, me: Any, size: int) -> Any:
    s = _get(store, me)
    if s.pos >= len(s.data):
        return None  # err(closed): the only stream-error without a payload
    chunk = s.data[s.pos : s.pos + size]
    s.pos += len(chunk)
    return chunk


@_func(
    "wasi:io/streams#[method]input-stream.skip",
    "wasi:io/streams#[method]input-stream.blocking-skip",
)
def _skip(store: Any, me: Any, size: int) -> Any:
    s = _get(store, me)
    if s.pos >= len(s.data):
        return None
    n = min(size, len(s.data) - s.pos)
    s.pos += n
    return n


@_func("wasi:io/streams#[method]output-stream.check-write")
def _check_write(store: Any, me: Any) -> int:
    return 1 << 20


@_func(
    "wasi:io/streams#[method]output-stream.write",
    "wasi:io/streams#[method]output-stream.blocking-write-and-flush",
)
def _write(store: Any, me: Any, data: bytes) -> Any:
    _get(store, me).sink(bytes(data))
    return _OK


@_func(
    "wasi:io/streams#[method]output-stream.write-zeroes",
    "wasi:io/streams#[method]output-stream.blocking-write-zeroes-and-flush",
)
def _write_zeroes(store: Any, me: Any, size: int) -> Any:
    _get(store, me).sink(bytes(size))
    return _OK


@_func(
    "wasi:io/streams#[method]output-stream.flush",
    "wasi:io/streams#[method]output-stream.blocking-flush",
)
def _flush(store: Any, me: Any) -> Any:
    return _OK


# wasi:cli, clocks, random, filesystem (no preopens)


def _fd_sink(fd: int) -> Callable[[bytes], None]:
    def sink(data: bytes) -> None:
        while data:
            data = data[os.write(fd, data) :]

    return sink


@_func("wasi:cli/stdout#get-stdout")
def _stdout(store: Any) -> Any:
    # The container's stderr: its stdout carries the access log, one line per request.
    return _new("output-stream", _OutStream(_fd_sink(2)))


@_func("wasi:cli/stderr#get-stderr")
def _stderr(store: Any) -> Any:
    return _new("output-stream", _OutStream(_fd_sink(2)))


@_func("wasi:cli/stdin#get-stdin")
def _stdin(store: Any) -> Any:
    return _new("input-stream", _InStream(b""))


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


def _header_entries(pairs: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return [(str(n).lower(), bytes(v)) for n, v in pairs]


@_func("wasi:http/types#[constructor]fields")
def _fields_new(store: Any) -> Any:
    return _new("fields", _Fields())


@_func("wasi:http/types#[static]fields.from-list")
def _fields_from_list(store: Any, pairs: list[tuple[str, bytes]]) -> Any:
    return _new("fields", _Fields(_header_entries(pairs)))


@_func("wasi:http/types#[method]fields.get")
def _fields_get(store: Any, me: Any, name: str) -> list[bytes]:
    return [v for n, v in _get(store, me).entries if n == name.lower()]


@_func("wasi:http/types#[method]fields.has")
def _fields_has(store: Any, me: Any, name: str) -> bool:
    return any(n == name.lower() for n, _ in _get(store, me).entries)


@_func("wasi:http/types#[method]fields.set")
def _fields_set(store: Any, me: Any, name: str, values: list[bytes]) -> None:
    f = _get(store, me)
    f.entries = [(n, v) for n, v in f.entries if n != name.lower()]
    f.entries.extend((name.lower(), bytes(v)) for v in values)


@_func("wasi:http/types#[method]fields.delete")
def _fields_delete(store: Any, me: Any, name: str) -> None:
    f = _get(store, me)
    f.entries = [(n, v) for n, v in f.entries if n != name.lower()]


@_func("wasi:http/types#[method]fields.append")
def _fields_append(store: Any, me: Any, name: str, value: bytes) -> None:
    _get(store, me).entries.append((name.lower(), bytes(value)))


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
    return _new("incoming-body", _InStream(_get(store, me).body))


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
    return _new("outgoing-body", _get(store, me))


@_func("wasi:http/types#[method]outgoing-body.write")
def _body_write(store: Any, me: Any) -> Any:
    response = _get(store, me)
    return _new("output-stream", _OutStream(response.body.extend))


@_func("wasi:http/types#[static]outgoing-body.finish")
def _out_finish(store: Any, me: Any, trailers: Any) -> None:
    _take(store, me)


@_func("wasi:http/types#[static]response-outparam.set")
def _outparam_set(store: Any, me: Any, result: Any) -> None:
    _take(store, me)
    call = _call()
    if isinstance(result, wc.ResourceAny | wc.ResourceHost):
        call.response = _take(store, result)
    else:
        call.error = f"the component answered an error: {getattr(result, 'tag', result)}"


@_func("wasi:http/types#http-error-code")
def _http_error_code(store: Any, err: Any) -> None:
    return None
