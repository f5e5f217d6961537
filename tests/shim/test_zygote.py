import pytest

from pywasmd.shim.cli import ShimArgs
from pywasmd.shim.zygote import decode_request, encode_request


def test_request_round_trip_keeps_every_argument_and_the_env():
    args = ShimArgs(
        action="serve",
        namespace="k8s.io",
        address="/run/c.sock",
        publish_binary="",
        id="id1",
        bundle="/b",
        debug=True,
    )
    env = {"TTRPC_ADDRESS": "/run/c.sock.ttrpc", "EMPTY": "", "EQ": "a=b"}
    payload = encode_request(args, "/run/x.sock", env)
    assert int.from_bytes(payload[:4], "big") == len(payload) - 4
    assert decode_request(payload[4:]) == (args, "/run/x.sock", env)


def test_shim_args_fields_round_trip_false_flags_and_ignore_unknown_names():
    args = ShimArgs(action="serve", id="x", bundle="/b", debug=False)
    fields = args.to_fields()
    assert fields["debug"] == ""
    assert ShimArgs.from_fields({**fields, "from-a-newer-start": "1"}) == args


def test_request_of_another_protocol_or_without_a_bundle_is_refused():
    with pytest.raises(ValueError, match="another pywasm version"):
        decode_request(b"pywasm-zygote-1\x007\x00/b")
    payload = encode_request(ShimArgs(id="x"), "/run/x.sock", {})
    with pytest.raises(ValueError, match="needs a bundle"):
        decode_request(payload[4:])
