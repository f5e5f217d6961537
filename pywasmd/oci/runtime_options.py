"""The runtime options containerd passes with Create, as a plain mapping.

A runtime configured in containerd (CRI ``runtimes.pywasm.options``, or
``ctr run --runtime-config-path``) reaches a non-runc shim as a
``runtimeoptions.v1.Options``: a path to a config file, or the config inline.
pywasm reads ``engine`` and ``features`` from it (docs/engines.md)::

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.pywasm.options]
      ConfigPath = "/etc/pywasm/runtime-wasmer.toml"     # engine = "wasmer"
"""

from __future__ import annotations

from collections.abc import Mapping

from pywasmd.errors import InvalidArgument

OPTIONS_TYPE = "runtimeoptions.v1.Options"


def runtime_options(type_url: str, value: bytes) -> Mapping[str, object]:
    """``{}`` for no options or options of another kind (runc's, say)."""
    if not type_url.endswith(OPTIONS_TYPE) or not value:
        return {}
    from google.protobuf.message import DecodeError

    from pywasmd.api.containerd.runtimeoptions.v1 import api_pb2

    try:
        options = api_pb2.Options.FromString(value)
    except DecodeError as exc:
        raise InvalidArgument(f"runtime options: not a {OPTIONS_TYPE}: {exc}") from exc
    if options.config_body:
        return _parse(options.config_body, "the runtime options' inline config")
    if options.config_path:
        try:
            with open(options.config_path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise InvalidArgument(
                f"runtime options: cannot read ConfigPath {options.config_path}: {exc.strerror}"
            ) from exc
        return _parse(text, options.config_path)
    return {}


def _parse(text: str, where: str) -> Mapping[str, object]:
    """TOML, as containerd's own config is; YAML (and so JSON) as well."""
    try:
        import tomllib

        return tomllib.loads(text)
    except ImportError:
        pass
    except ValueError:
        pass
    import yaml

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"{where}: neither TOML nor YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where}: runtime options must be a mapping of keys")
    return raw
