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
