import pytest

from pywasmd.shim.cli import ShimArgs, UsageError, parse


def test_containerd_start_argv():
    argv = [
        "-namespace",
        "k8s.io",
        "-address",
        "/run/containerd/containerd.sock",
        "-publish-binary",
        "/usr/bin/containerd",
        "-id",
        "abc",
        "-debug",
        "start",
    ]
    assert parse(argv) == ShimArgs(
        action="start",
        namespace="k8s.io",
        address="/run/containerd/containerd.sock",
        publish_binary="/usr/bin/containerd",
        id="abc",
        debug=True,
    )


def test_delete_with_bundle_and_equals_syntax_and_unknown_flags():
    args = parse(
        [
            "--namespace=default",
            "-id",
            "x",
            "-future-flag",
            "v",
            "-bundle",
            "/b",
            "-other",
            "delete",
        ]
    )
    assert (args.action, args.namespace, args.id, args.bundle) == ("delete", "default", "x", "/b")


def test_value_flag_without_value_is_a_usage_error():
    with pytest.raises(UsageError, match="-id"):
        parse(["-id"])
