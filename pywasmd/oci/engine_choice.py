"""Which engine runs a container, with which optional Wasm features.  Pure: data in, data out.

Three places may say, the most specific wins (each of ``engine`` and ``features`` separately)::

    container annotations   pywasm.io/engine: wasmer      pywasm.io/features: gc,tail-call
    runtime options         {"engine": "wasmer", "features": ["gc"]}   (or "gc,tail-call")
    node config             /etc/pywasm/config.yaml: engine: wasmer / features: [gc]
    default                 wasmtime, no features

docs/engines.md documents every key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pywasmd.engine import ENGINE_NAMES
from pywasmd.errors import InvalidArgument

ENGINE_ANNOTATION = "pywasm.io/engine"
FEATURES_ANNOTATION = "pywasm.io/features"
DEFAULT_ENGINE = "wasmtime"

#: Optional Wasm proposals a workload may ask for; every one is off unless asked for.
ALLOWED_FEATURES = frozenset(
    {
        "gc",
        "exceptions",
        "tail-call",
        "threads",
        "relaxed-simd",
        "memory64",
        "multi-memory",
        "function-references",
    }
)


@dataclass(frozen=True)
class EngineChoice:
    name: str
    features: frozenset[str]

    @property
    def feature_tuple(self) -> tuple[str, ...]:
        """The features in a stable order, as ``WasiPlan.features`` holds them."""
        return tuple(sorted(self.features))


def _engine_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{where} must be an engine name, one of: {', '.join(ENGINE_NAMES)}")
    name = value.strip()
    if name not in ENGINE_NAMES:
        raise InvalidArgument(
            f"{where} names unknown engine {name!r}; known engines: {', '.join(ENGINE_NAMES)}"
        )
    return name


def _features(value: object, where: str) -> frozenset[str]:
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise InvalidArgument(f"{where} must be a comma-separated string or a list of names")
    names: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise InvalidArgument(f"{where} holds {item!r}, which is not a feature name")
        if item.strip():
            names.add(item.strip())
    unknown = sorted(names - ALLOWED_FEATURES)
    if unknown:
        raise InvalidArgument(
            f"{where} names unknown feature(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(ALLOWED_FEATURES))}"
        )
    return frozenset(names)


def choose_engine(
    annotations: Mapping[str, str],
    options: Mapping[str, object],
    node: Mapping[str, object],
    config_path: str = "/etc/pywasm/config.yaml",
) -> EngineChoice:
    """The engine and features for one container; ``InvalidArgument`` names the bad source."""
    # Most specific first; every source is checked even when a more specific one wins, so a
    # typo in the node config surfaces at the first container rather than lying in wait.
    sources: list[tuple[Mapping[str, object], str, str, str]] = [
        (annotations, ENGINE_ANNOTATION, FEATURES_ANNOTATION, "annotation"),
        (options, "engine", "features", "runtime option"),
        (node, "engine", "features", f"{config_path} key"),
    ]
    name: str | None = None
    features: frozenset[str] | None = None
    for source, engine_key, features_key, kind in sources:
        if engine_key in source:
            picked = _engine_name(source[engine_key], f"{kind} {engine_key}")
            name = name or picked
        if features_key in source:
            wanted = _features(source[features_key], f"{kind} {features_key}")
            features = wanted if features is None else features
    return EngineChoice(name or DEFAULT_ENGINE, features or frozenset())
