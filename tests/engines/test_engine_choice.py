from __future__ import annotations

import sys

import pytest

from pywasmd.engine import get_engine
from pywasmd.errors import InvalidArgument, Unavailable
from pywasmd.oci.engine_choice import ALLOWED_FEATURES, EngineChoice, choose_engine
from pywasmd.oci.plan import WasiPlan
from pywasmd.wasmbin import (
    COMPONENT_HEADER,
    CORE_MODULE_HEADER,
    binary_kind,
    cap_memories,
)


def test_default_is_wasmtime_without_features():
    assert choose_engine({}, {}, {}) == EngineChoice("wasmtime", frozenset())


@pytest.mark.parametrize(
    ("annotations", "options", "node", "expected"),
    [
        ({}, {}, {"engine": "wasmer"}, "wasmer"),
        ({}, {"engine": "wasmer"}, {"engine": "wasmtime"}, "wasmer"),
        ({"pywasm.io/engine": "wasmtime"}, {"engine": "wasmer"}, {"engine": "wasmer"}, "wasmtime"),
        ({"pywasm.io/engine": " wasmer "}, {}, {}, "wasmer"),
    ],
)
def test_most_specific_engine_wins(
    annotations: dict[str, str], options: dict[str, object], node: dict[str, object], expected: str
):
    assert choose_engine(annotations, options, node).name == expected


def test_features_come_from_the_most_specific_source_that_names_them():
    node: dict[str, object] = {"engine": "wasmtime", "features": ["gc"]}
    assert choose_engine({}, {}, node).features == {"gc"}
    assert choose_engine({}, {"features": "tail-call, threads"}, node).features == {
        "tail-call",
        "threads",
    }
    # An empty annotation turns the node's default features off for this workload.
    assert choose_engine({"pywasm.io/features": ""}, {}, node).features == frozenset()
    picked = choose_engine({"pywasm.io/features": "memory64"}, {"features": ["gc"]}, node)
    assert picked == EngineChoice("wasmtime", frozenset({"memory64"}))
    assert picked.feature_tuple == ("memory64",)


def test_unknown_feature_is_refused_with_the_allowed_list():
    with pytest.raises(InvalidArgument) as caught:
        choose_engine({"pywasm.io/features": "gc,simd2"}, {}, {})
    message = caught.value.message
    assert "annotation pywasm.io/features" in message
    assert "simd2" in message
    assert all(name in message for name in ALLOWED_FEATURES)


def test_unknown_engine_is_refused_naming_the_source():
    with pytest.raises(InvalidArgument, match=r"runtime option engine .* 'v8'; known engines"):
        choose_engine({}, {"engine": "v8"}, {})
    # A broken node config is reported even when a more specific source decides.
    with pytest.raises(InvalidArgument, match=r"/etc/pywasm/config.yaml key engine"):
        choose_engine({"pywasm.io/engine": "wasmtime"}, {}, {"engine": 3})
    with pytest.raises(InvalidArgument, match="comma-separated string or a list"):
        choose_engine({}, {}, {"features": {"gc": True}})


def test_plan_carries_features_through_json():
    plan = WasiPlan("/m.wasm", ("/m.wasm",), (), "/", (), features=("gc", "tail-call"))
    assert WasiPlan.from_json(plan.to_json()) == plan
    raw = plan.to_json()
    del raw["features"]
    assert WasiPlan.from_json(raw).features == ()


def test_unknown_engine_name_lists_the_known_ones():
    with pytest.raises(InvalidArgument, match="known engines: wasmer, wasmtime"):
        get_engine("wamr")


def test_wasmer_imports_on_old_python_and_says_what_to_install_on_new():
    if sys.version_info < (3, 11):
        assert get_engine("wasmer").name == "wasmer"
        return
    with pytest.raises(
        Unavailable, match=r"needs Python <= 3.10 and `pip install 'pywasmd\[wasmer\]'`"
    ):
        get_engine("wasmer")


def test_binary_kind_reads_the_header():
    assert binary_kind(CORE_MODULE_HEADER, "m") == "module"
    assert binary_kind(COMPONENT_HEADER, "m") == "component"
    with pytest.raises(InvalidArgument, match="unknown WebAssembly version/layer 02 00 00 00"):
        binary_kind(b"\0asm\x02\0\0\0", "m")
    with pytest.raises(InvalidArgument, match="not a WebAssembly binary"):
        binary_kind(b"\x7fELF\x02\x01\x01\x00", "m")
    with pytest.raises(InvalidArgument, match=r"truncated WebAssembly binary \(6 bytes\)"):
        binary_kind(b"\0asm\x01\x00", "m")


@pytest.mark.parametrize(
    ("memory", "cap", "expected"),
    [("1", 2 << 20, (1, 32)), ("1 10", 2 << 20, (1, 10)), ("2 100", 3 << 20, (2, 48))],
)
def test_cap_memories_writes_the_cap_into_the_memory_type(
    memory: str, cap: int, expected: tuple[int, int]
):
    import wasmtime

    wasm = wasmtime.wat2wasm(f'(module (memory (export "m") {memory}) (func (export "f")))')
    capped = cap_memories(wasm, cap, "m")
    exports = wasmtime.Module(wasmtime.Engine(), capped).exports
    memory_type = next(e.type for e in exports if e.name == "m")
    assert isinstance(memory_type, wasmtime.MemoryType)
    assert (memory_type.limits.min, memory_type.limits.max) == expected


def test_cap_memories_refuses_a_module_needing_more_at_start():
    import wasmtime

    wasm = wasmtime.wat2wasm("(module (memory 40))")
    with pytest.raises(InvalidArgument, match="needs 2621440 bytes of memory at start"):
        cap_memories(wasm, 1 << 20, "Wasm module 'm'")
