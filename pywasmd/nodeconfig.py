"""The node's pywasm settings: ``/etc/pywasm/config.yaml`` (optional).

Keys are documented in docs/engines.md.  A missing file means defaults; a file
that is not a YAML mapping is an error that names the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pywasmd.errors import InvalidArgument

DEFAULT_PATH = "/etc/pywasm/config.yaml"


def config_path() -> str:
    return os.environ.get("PYWASM_CONFIG", DEFAULT_PATH)


def load_node_config(path: str | None = None) -> Mapping[str, object]:
    import yaml

    path = path or config_path()
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"{path}: cannot read the pywasm node config: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{path}: the pywasm node config must be a YAML mapping of keys")
    return raw


def engine_interpreters(config: Mapping[str, object]) -> dict[str, str]:
    """``engine_python``: engine name -> the Python that runs its workers."""
    raw = config.get("engine_python") or {}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise InvalidArgument(
            f"{config_path()}: engine_python must map engine names to interpreter paths, "
            "e.g. {wasmer: /opt/pywasm/venv310/bin/python}"
        )
    for name, path in raw.items():
        if not os.access(path, os.X_OK):
            raise InvalidArgument(
                f"{config_path()}: engine_python.{name} {path!r} is not an executable"
            )
    return dict(raw)


def runc_binary(config: Mapping[str, object]) -> str:
    """``runc``: the runc that runs a pod's Linux containers ("" = look on PATH)."""
    path = config.get("runc") or ""
    if not isinstance(path, str) or (path and not os.access(path, os.X_OK)):
        raise InvalidArgument(f"{config_path()}: runc must name an executable runc binary")
    return path
