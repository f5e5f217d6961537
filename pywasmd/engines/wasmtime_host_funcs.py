"""Host functions of a wasmtime component linker, defined through the engine's C API with
value codecs compiled once per function type.

wasmtime-py 47 calls a host function through one generic callback that, on every call,
rebuilds the function's type from the engine (a FuncType, then every nested ValType, a
variant's cases, a list's element) and converts each value by walking that type; a list<u8>
goes one element at a time (a ctypes struct and several calls per byte: ~1 µs a byte).  A
componentize-py guest asks for 2.5 KB of random bytes per request, and each host call paid
~40-100 µs of type walking.  So :func:`add_host` defines a function through the C API itself
(wasmtime_component_linker_instance_add_func, the call LinkerInstance.add_func makes) with a
lifter and a lowerer compiled once from its type when the linker is built: the same Python
values wasmtime-py's conversions give and take (Variant, Record, ResourceAny, bytes for
list<u8>, the untagged forms of option, result and variant chosen by the same rule), and
list<u8> read and built as one block of wasmtime_component_val_t (32 bytes per byte) with slice
copies.  Nothing of wasmtime-py is replaced or patched.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import wasmtime
from wasmtime import _ffi as _capi
from wasmtime import component as wc

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
    #: Told of an exception of ``fn`` before the guest traps on it (the trap's message alone
    #: loses the exception's type).
    failed: Callable[[Exception], None]


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
    host = _HOSTS[(index or 0) - 1]
    store = wasmtime.StoreContext(context)
    try:
        values = [lift(args[i]) for i, lift in enumerate(host.lifts)]
        value = host.fn(store, *values)
        if host.lower is not None:
            host.lower(store, value, results.contents)
        elif value is not None:
            raise TypeError(f"{host.fn.__name__} returned a value for a function without one")
    except wasmtime.WasmtimeError as exc:
        # As wasmtime-py: the engine's own error goes back as the guest's trap.
        return int(ctypes.cast(exc._consume(), ctypes.c_void_p).value or 0)
    except Exception as exc:  # noqa: BLE001 - the guest traps; host.failed keeps the exception
        host.failed(exc)
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


def add_host(
    instance: wc.LinkerInstance,
    name: str,
    ty: wc.FuncType,
    fn: Callable[..., Any],
    failed: Callable[[Exception], None],
) -> None:
    """Define ``name`` in ``instance`` as ``fn(store, *params)``, its values converted by codecs
    compiled from ``ty`` now; ``failed`` is told of any exception ``fn`` raises."""
    result = ty.result
    lower = None if result is None else _lowerer(result)
    _HOSTS.append(_Host(fn, [_lifter(t) for _, t in ty.params], lower, ty, failed))
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
