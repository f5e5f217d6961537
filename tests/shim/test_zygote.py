from pywasmd.shim.zygote import decode_request, encode_request


def test_request_round_trip_keeps_empty_fields_and_env():
    fields = ["/b", "/run/x.sock", "default", "/run/c.sock", "", "id1", ""]
    env = {"TTRPC_ADDRESS": "/run/c.sock.ttrpc", "EMPTY": "", "EQ": "a=b"}
    payload = encode_request(fields, env)
    assert int.from_bytes(payload[:4], "big") == len(payload) - 4
    assert decode_request(payload[4:]) == (fields, env)
