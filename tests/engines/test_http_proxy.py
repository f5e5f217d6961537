"""wasi:http/proxy components as HTTP functions (pywasmd/engines/wasmtime_proxy.py).

The function is integration/guests/http/proxy_echo.py, built by componentize-py
(integration/http_guests.py; the ``dev`` extra). Each call is a fresh instance whose
``wasi:http/incoming-handler.handle`` gets the method and target the CGI environment describes
and the header lines as given (or, without them, headers made from the CGI variables); the
response comes back as a CGI response (``call``, for tests and tools).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from engine_harness import http_guest
from wasmtime import _ffi as wasmtime_capi
from wasmtime import component as wc

from pywasmd.engine import Instances, get_engine
from pywasmd.engines import wasmtime_host_funcs
from pywasmd.engines.wasmtime_proxy import ProxyInstances
from pywasmd.oci.http import HttpPlan
from pywasmd.oci.plan import WasiPlan

REPO = Path(__file__).resolve().parents[2]


def _plan(module: Path) -> WasiPlan:
    return WasiPlan(
        module=str(module),
        argv=("proxy_echo.wasm",),
        env=(("GREETING", "hi"),),
        cwd="/",
        preopens=(),
        http=HttpPlan(),
    )


@pytest.fixture(scope="module")
def proxy() -> Instances:
    component = http_guest("proxy_echo")
    engine = get_engine("wasmtime")
    plan = _plan(component)
    loaded = engine.load_precompiled(component.with_suffix(".cwasm").read_bytes(), plan)
    return engine.prepare_instances(loaded, plan)


def _env(method: str, target: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("REQUEST_METHOD", method), ("REQUEST_URI", target), *extra]


def test_echo(proxy: Instances) -> None:
    env = _env("POST", "/items?id=7", ("HTTP_X_TEST", "t"), ("CONTENT_LENGTH", "5"))
    result = proxy.call(env, b"hello", 5)
    assert (result.outcome, result.status) == ("exit", 0)
    assert result.stdout == (
        b"Status: 200 OK\r\ncontent-type: text/plain\r\nx-echo-method: POST\r\n\r\n"
        b"method=POST\npath=/items?id=7\nheader=t\nbody=hello"
    )


def test_a_large_body_each_way(proxy: Instances) -> None:
    body = os.urandom(256 << 10)
    result = proxy.call(_env("POST", "/big"), body, 30)
    assert result.outcome != "timeout"
    assert result.stdout.endswith(b"\nbody=" + body)


def test_status_and_env(proxy: Instances) -> None:
    assert proxy.call(_env("GET", "/notfound"), b"", 5).stdout.startswith(b"Status: 404 ")


def test_the_environment_is_the_containers_only(proxy: Instances) -> None:
    """wasi:cli/environment is the container's env (the plan's), none of the CGI variables
    the request is described by for a p1 module."""
    env = _env(
        "GET",
        "/env",
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("PATH_INFO", "/env"),
        ("HTTP_X_TEST", "t"),
        ("HTTP_HOST", "h"),
    )
    result = proxy.call(env, b"", 5, [(b"Host", b"h"), (b"X-Test", b"t")])
    assert result.stdout.partition(b"\r\n\r\n")[2] == b"GREETING=hi\n"


def test_headers_reach_the_component_as_sent(proxy: Instances) -> None:
    """The component gets the header lines the server parsed: bytes that are not UTF-8 as
    they are, names with "_" and Proxy (CGI drops both), repeated headers as separate
    entries in order; names in lower case, the connection's own headers left out."""
    raw = [
        (b"Host", b"example.test:8080"),
        (b"X-Raw", b"\xff\xfe"),
        (b"X_Under", b"u"),
        (b"Proxy", b"http://proxy.invalid"),
        (b"X-Multi", b"a"),
        (b"Connection", b"keep-alive"),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-Multi", b"b, c"),
        (b"Content-Length", b"0"),
    ]
    result = proxy.call(_env("GET", "/headers"), b"", 5, raw)
    assert (result.outcome, result.detail) == ("exit", ""), result
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert body == (
        b"host: example.test:8080\n"
        b"x-raw: \xff\xfe\n"
        b"x_under: u\n"
        b"proxy: http://proxy.invalid\n"
        b"x-multi: a\n"
        b"x-multi: b, c\n"
        b"content-length: 0\n"
    )
    assert b"\r\nx-echo-method: GET" in head


def test_trap_and_timeout(proxy: Instances) -> None:
    trap = proxy.call(_env("GET", "/trap"), b"", 5)
    assert trap.outcome == "trap"
    began = time.monotonic()
    loop = proxy.call(_env("GET", "/loop"), b"", 0.5)
    took = time.monotonic() - began
    assert loop.outcome == "timeout"
    assert took < 2.0
    # A fresh instance answers right after.
    assert proxy.call(_env("GET", "/after"), b"", 5).stdout.startswith(b"Status: 200 ")


def test_memory_limit_applies_to_each_instance() -> None:
    """The container's memory limit caps each instance's linear memory: the function starts
    with 197 pages (12.3 MiB), so under an 8 MiB limit it cannot even be instantiated."""
    engine = get_engine("wasmtime")
    spec = importlib.util.spec_from_file_location(
        "_http_guests", REPO / "integration" / "http_guests.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    component: Path = module.build()
    plan = WasiPlan(
        module=str(component),
        argv=("proxy_echo.wasm",),
        env=(),
        cwd="/",
        preopens=(),
        memory_limit=8 << 20,
        http=HttpPlan(),
    )
    loaded = engine.load_precompiled(component.with_suffix(".cwasm").read_bytes(), plan)
    small = engine.prepare_instances(loaded, plan)
    result = small.call(_env("GET", "/"), b"", 5)
    assert result.outcome == "trap", result
    assert "exceeds memory limits" in result.detail


def test_header_fields_the_component_sets_are_checked(proxy: Instances) -> None:
    """fields.from-list/append refuse what is not a field name or value (invalid-syntax, as
    wasmtime's host does): a CR LF the component copies from the request into a header
    cannot add lines to the response."""
    ok = proxy.call(_env("GET", "/reflect?a%09b%FF"), b"", 5)
    head, _, body = ok.stdout.partition(b"\r\n\r\n")
    assert b"\r\nx-reflect: a\tb\xff" in head, head
    assert body == b"refused: HeaderError_InvalidSyntax\n"  # the name "bad name"
    bad = proxy.call(_env("GET", "/reflect?x%0D%0Aset-cookie:%20a=1"), b"", 5)
    head, _, body = bad.stdout.partition(b"\r\n\r\n")
    assert body == b"refused: HeaderError_InvalidSyntax HeaderError_InvalidSyntax\n"
    assert b"set-cookie" not in head.lower(), head
    assert b"x-reflect" not in head, head


# --- the values host functions take and give -------------------------------------------------


def _samples(ty: Any, depth: int = 0) -> list[Any]:
    """Values of ``ty`` in wasmtime-py's Python form: every case of a variant-like type."""
    if isinstance(ty, wc.Bool):
        return [True, False]
    if isinstance(ty, wc.U8 | wc.U16 | wc.U32 | wc.U64 | wc.S8 | wc.S16 | wc.S32 | wc.S64):
        return [0, 7]
    if isinstance(ty, wc.String):
        return ["", "héllo"]
    if isinstance(ty, wc.OwnType | wc.BorrowType):
        return [wc.ResourceHost.own(5 + depth, 3)]
    if isinstance(ty, wc.EnumType):
        return list(ty.names)
    if isinstance(ty, wc.FlagsType):
        return [set(), set(ty.names[:1])]
    if isinstance(ty, wc.ListType):
        if isinstance(ty.element, wc.U8):
            return [b"", bytes(range(256)) * 3]
        item = _samples(ty.element, depth + 1)
        return [[], item[:2]]
    if isinstance(ty, wc.TupleType):
        return [tuple(_samples(t, depth + 1)[-1] for t in ty.elements)]
    if isinstance(ty, wc.RecordType):
        record = wc.Record()
        for name, t in ty.fields:
            setattr(record, name, _samples(t, depth + 1)[-1])
        return [record]
    if isinstance(ty, wc.VariantType | wc.OptionType | wc.ResultType):
        cases = wasmtime_host_funcs._cases(ty)
        tagged = ty._tagged()
        assert wasmtime_host_funcs._tagged(cases) == tagged
        out: list[Any] = []
        for name, t in cases:
            payloads = [None] if t is None else _samples(t, depth + 1)
            for payload in payloads[-2:]:
                out.append(wc.Variant(name, payload) if tagged else payload)
        return out
    raise AssertionError(f"no samples for {ty!r}")


def _plain(store: Any, value: Any) -> Any:
    """A value with its resources as reps, comparable with ==."""
    if isinstance(value, wc.ResourceAny):
        return ("resource", value.to_host(store).rep)
    if isinstance(value, wc.ResourceHost):
        return ("resource", value.rep)
    if isinstance(value, wc.Variant):
        return ("variant", value.tag, _plain(store, value.payload))
    if isinstance(value, wc.Record):
        return {k: _plain(store, v) for k, v in vars(value).items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(store, v) for v in value)
    return value


def _function_types(proxy: ProxyInstances) -> Iterator[tuple[str, wc.FuncType]]:
    engine = proxy._engine
    for iname, itype in proxy._component.type.imports(engine).items():
        if isinstance(itype, wc.ComponentInstanceType):
            for name, item in itype.exports(engine).items():
                if isinstance(item, wc.FuncType):
                    yield f"{iname}#{name}", item


def test_values_cross_as_wasmtime_py_converts_them(proxy: Instances) -> None:
    """pywasm lifts and lowers the values of its host functions itself (a codec compiled per
    function type, list<u8> in one block); every parameter and result type the component
    imports, with every case of its variants, goes both ways and comes back as wasmtime-py's
    own conversions give and take it."""
    assert isinstance(proxy, ProxyInstances)
    store = wasmtime.Store(proxy._engine)
    checked = refused = 0
    for fname, fty in _function_types(proxy):
        types = [t for _, t in fty.params] + ([fty.result] if fty.result is not None else [])
        for ty in types:
            lift, lower = wasmtime_host_funcs._lifter(ty), wasmtime_host_funcs._lowerer(ty)
            for value in _samples(ty):
                want = _plain(store, value)
                raw = wasmtime_capi.wasmtime_component_val_t()
                try:  # wasmtime-py's lower, then ours to lift
                    ty.convert_to_c(store, value, ctypes.pointer(raw))
                except (TypeError, ValueError) as exc:
                    # A value wasmtime-py cannot tell apart (err of result<option<T>, E>: an
                    # untagged option takes any object) is refused the same way.
                    with pytest.raises(type(exc), match=str(exc)):
                        lower(store, value, wasmtime_capi.wasmtime_component_val_t())
                    refused += 1
                    continue
                assert _plain(store, lift(raw)) == want, (fname, value)
                raw = wasmtime_capi.wasmtime_component_val_t()
                lower(store, value, raw)  # ours, then wasmtime-py's lift
                assert _plain(store, ty.convert_from_c(raw)) == want, (fname, value)
                checked += 1
    assert checked > 200, checked
    assert refused < checked / 10, refused
    print(f"\n{checked} values both ways, {refused} refused by both")


def test_a_value_that_does_not_fit_its_type_is_refused(proxy: Instances) -> None:
    assert isinstance(proxy, ProxyInstances)
    store = wasmtime.Store(proxy._engine)
    read = next(
        fty
        for name, fty in _function_types(proxy)
        if name.startswith("wasi:io/streams@") and name.endswith("#[method]input-stream.read")
    )
    assert read.result is not None
    lower = wasmtime_host_funcs._lowerer(read.result)
    raw = wasmtime_capi.wasmtime_component_val_t()
    with pytest.raises(ValueError, match="not valid for this variant"):
        lower(store, "text, not bytes", raw)
    size = wasmtime_host_funcs._lowerer(read.params[1][1])
    with pytest.raises(TypeError, match="expected int"):
        size(store, "7", raw)


def test_the_next_instance_is_made_once_a_request_is_answered(proxy: Instances) -> None:
    """After a response is complete the next request's store and instance are made (they are
    a third of a request's time), used by that request only and closed after it; a request
    that failed leaves none (the next one instantiates and reports why)."""
    assert isinstance(proxy, ProxyInstances)
    assert proxy.call(_env("GET", "/one"), b"", 5).stdout.startswith(b"Status: 200 ")
    spare = proxy._spare
    assert spare is not None
    store = spare[0]
    assert proxy.call(_env("GET", "/two"), b"", 5).stdout.startswith(b"Status: 200 ")
    assert proxy._spare is not None
    assert proxy._spare[0] is not store  # a new one: no instance serves two requests
    with pytest.raises(ValueError, match="already closed"):
        store.set_epoch_deadline(1)  # the used store is gone with its instance
    assert proxy.call(_env("GET", "/trap"), b"", 5).outcome == "trap"
    assert proxy._spare is None
    assert proxy.call(_env("GET", "/three"), b"", 5).stdout.startswith(b"Status: 200 ")
