import pytest

from pywasmd.api.containerd.runtimeoptions.v1 import api_pb2
from pywasmd.errors import InvalidArgument
from pywasmd.oci.runtime_options import runtime_options


def test_inline_toml_and_config_path(tmp_path):
    inline = api_pb2.Options(config_body='engine = "wasmer"\nfeatures = ["gc"]\n')
    got = runtime_options("runtimeoptions.v1.Options", inline.SerializeToString())
    assert got == {"engine": "wasmer", "features": ["gc"]}
    path = tmp_path / "rt.toml"
    path.write_text('engine = "wasmtime"\n')
    by_path = api_pb2.Options(config_path=str(path))
    assert runtime_options("runtimeoptions.v1.Options", by_path.SerializeToString()) == {
        "engine": "wasmtime"
    }


def test_other_options_are_none_of_ours():
    assert runtime_options("containerd.runc.v1.Options", b"\x08\x01") == {}
    assert runtime_options("", b"") == {}


def test_unreadable_config_path_is_named(tmp_path):
    opts = api_pb2.Options(config_path=str(tmp_path / "missing.toml"))
    with pytest.raises(InvalidArgument, match="missing.toml"):
        runtime_options("runtimeoptions.v1.Options", opts.SerializeToString())
