"""``wasi:http/proxy`` components on wasmtime-py: :class:`ProxyInstances` runs one request per
fresh instance of the component.

wasmtime-py links such a component (``add_wasip2`` + ``add_wasi_http``) but cannot call its
``handle``: the ``incoming-request`` and ``response-outparam`` it takes are resources that only
wasmtime's Rust side creates, and the C API has no constructor for them.  So the component
linker here defines every resource type the component imports as a host resource of ours and
every function a handler needs with pywasm's own implementation
(:mod:`pywasmd.engines.wasmtime_wasi_host`), each through the C API with codecs compiled for
its type (:mod:`pywasmd.engines.wasmtime_host_funcs`); every other imported function traps
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

import math
import threading
import time
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import wasmtime
from wasmtime import component as wc

from pywasmd.engine import CallResult
from pywasmd.engines import wasmtime_wasi_host as host
from pywasmd.engines.wasmtime_host_funcs import add_host
from pywasmd.http.exchange import BodyError, Exchange, Gone, Overrun, collecting

HANDLER_INTERFACE = "wasi:http/incoming-handler@0.2"
#: How often the engine's epoch advances (pywasmd.engines.wasmtime ticks it); a request's
#: deadline is a whole number of ticks.
EPOCH_TICK = 0.02
# Only one guest call runs at a time in a process: wasmtime-py 47 carries a host function's
# exception through one process-wide variable (more server processes give the parallelism).
_CALL_LOCK = threading.Lock()


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
                            instance.add_resource(name, wc.ResourceType.host(number), host.drop)
                        elif isinstance(item, wc.FuncType):
                            impl = host.FUNCS.get(f"{base}#{name}")
                            if impl is not None:
                                add_host(instance, name, item, impl, host.record_raised)
                            else:
                                instance.add_func(name, host.trap_for(f"{iname}#{name}"))
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
        head = host.Response(host.Fields(kept.headers), kept.status)
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
        call = host.Call(request, self._env, exchange, time.monotonic() + timeout)
        with _CALL_LOCK:
            host.current.call = call
            host.current.kinds = self._kinds
            spare, self._spare = self._spare, None
            try:
                outcome, detail = self._run(call, timeout, spare)
            finally:
                host.current.call = None
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
        self, call: host.Call, timeout: float, spare: tuple[wasmtime.Store, wc.Func | None] | None
    ) -> tuple[str, str]:
        store: wasmtime.Store | None = None
        try:
            store, handle = spare if spare is not None else self._prepare(timeout)
            if handle is None:
                return "trap", f"{self._interface} exports no handle function"
            store.set_epoch_deadline(_ticks(timeout))
            request = host.new("incoming-request", call.request)
            outparam = host.new("response-outparam", None)
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
        except (host.Trap, host.Timeout, Gone, BodyError, Overrun) as exc:
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
) -> host.Request:
    values = dict(env)
    headers = host.Fields()
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
    return host.Request(
        method=values.get("REQUEST_METHOD", "GET"),
        target=values.get("REQUEST_URI", "/"),
        scheme="HTTP",
        authority=values.get("HTTP_HOST", ""),
        headers=headers,
    )


def _as_cgi(response: host.Response, body: bytes) -> bytes:
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
