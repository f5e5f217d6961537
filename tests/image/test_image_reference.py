import pytest

from pywasmd.errors import InvalidArgument
from pywasmd.image.reference import Reference, normalize_reference, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("hello", "docker.io/library/hello:latest"),
        ("hello:latest", "docker.io/library/hello:latest"),
        ("hello:1.0", "docker.io/library/hello:1.0"),
        ("example/app", "docker.io/example/app:latest"),
        ("example/app:v2", "docker.io/example/app:v2"),
        ("docker.io/hello", "docker.io/library/hello:latest"),
        ("index.docker.io/library/hello:x", "docker.io/library/hello:x"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t"),
        ("ghcr.io/org/img:1", "ghcr.io/org/img:1"),
        ("Registry/app", "Registry/app:latest"),
        (f"hello@{DIGEST}", f"docker.io/library/hello@{DIGEST}"),
        (f"hello:1@{DIGEST}", f"docker.io/library/hello:1@{DIGEST}"),
        (f"localhost:5000/app@{DIGEST}", f"localhost:5000/app@{DIGEST}"),
        ("a_b__c-d--e/x.y", "docker.io/a_b__c-d--e/x.y:latest"),
    ],
)
def test_normalization(given: str, normalized: str) -> None:
    assert normalize_reference(given) == normalized
    # Normalizing is idempotent.
    assert normalize_reference(normalized) == normalized


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Hello",
        "example/App",
        "hello:",
        "hello:-x",
        "hello@sha256:abc",
        f"hello@sha256:{'AB' * 32}",
        "hello//x",
        "-hello",
        "hello:a:b",
        "a" * 256,
    ],
)
def test_rejects_bad_references(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="image reference"):
        parse_reference(bad)


def test_parts_and_familiar_form() -> None:
    ref = parse_reference("hello")
    assert ref == Reference("docker.io", "library/hello", "latest", None)
    assert ref.name == "docker.io/library/hello"
    assert ref.familiar == "hello:latest"
    assert parse_reference("example/app:1").familiar == "example/app:1"
    assert parse_reference("localhost:5000/app").familiar == "localhost:5000/app:latest"
    assert parse_reference(f"hello@{DIGEST}").tag is None
