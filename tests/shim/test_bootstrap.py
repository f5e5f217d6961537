import json

from pywasmd.api.containerd.task.v2 import shim_pb2 as pb
from pywasmd.shim.bootstrap import encode_delete_response, grouping_key, socket_address


def test_hand_encoded_delete_response_matches_generated_code():
    for pid, status, ns in [
        (0, 0, 1),
        (1234, 137, 1_700_000_000_123_456_789),
        (2**31, 255, 5_000_000_000),
    ]:
        msg = pb.DeleteResponse.FromString(encode_delete_response(pid, status, ns))
        assert (msg.pid, msg.exit_status, msg.exited_at.ToNanoseconds()) == (pid, status, ns)


def test_socket_address_follows_containerds_formula():
    # sha256("/run/containerd/containerd.sock/default/c1"), as containerd's shim library computes
    import hashlib

    digest = hashlib.sha256(b"/run/containerd/containerd.sock/default/c1").hexdigest()
    assert (
        socket_address("/run/containerd/containerd.sock", "default", "c1")
        == f"unix:///run/containerd/s/{digest}"
    )


def test_pod_containers_share_a_key(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"annotations": {"io.kubernetes.cri.sandbox-id": "pod1"}})
    )
    assert grouping_key(str(tmp_path), "c2") == "pod1"
    assert grouping_key(str(tmp_path / "missing"), "c2") == "c2"
