"""Image references, normalized the way Docker and containerd do it.

`hello` → `docker.io/library/hello:latest`, `example/app` → `docker.io/example/app:latest`,
`localhost:5000/app@sha256:…` keeps its registry and gains no tag (a digest pins it already).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pywasmd.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
_LEGACY_DOMAIN = "index.docker.io"
_OFFICIAL_PREFIX = "library/"
_MAX_NAME = 255

_HOST_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_HOST_PART}(?:\.{_HOST_PART})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def familiar(self) -> str:
        """The short form Docker prints (`hello:latest`, `example/app:1`)."""
        name = self.name
        if self.domain == DEFAULT_DOMAIN:
            name = self.path.removeprefix(_OFFICIAL_PREFIX)
        return name + self._suffix()

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def parse_reference(text: str) -> Reference:
    """Parse and normalize `text`; a reference without tag or digest gets tag `latest`."""
    if not text:
        raise InvalidArgument("image reference is empty")
    rest, _, digest = text.partition("@")
    tag = None
    colon = rest.rfind(":")
    # A colon before the last slash belongs to a registry port, not to a tag.
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1 :]
    domain, path = _split_domain(rest, text)
    if digest:
        _check_digest(digest, text)
    if tag is not None and not _TAG.fullmatch(tag):
        raise InvalidArgument(f"invalid image reference {text!r}: bad tag {tag!r}")
    if tag is None and not digest:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest or None)


def normalize_reference(text: str) -> str:
    return str(parse_reference(text))


def _split_domain(name: str, text: str) -> tuple[str, str]:
    first, slash, remainder = name.partition("/")
    # Docker's rule: the first component names a registry only if it looks like a host.
    looks_like_host = "." in first or ":" in first or first == "localhost" or first != first.lower()
    if slash and looks_like_host:
        domain, path = first, remainder
        if not _DOMAIN.fullmatch(domain):
            raise InvalidArgument(f"invalid image reference {text!r}: bad registry {domain!r}")
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == _LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = _OFFICIAL_PREFIX + path
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            hint = " (repository names must be lowercase)" if component.lower() != component else ""
            raise InvalidArgument(
                f"invalid image reference {text!r}: bad path component {component!r}{hint}"
            )
    if len(domain) + 1 + len(path) > _MAX_NAME:
        raise InvalidArgument(f"invalid image reference {text!r}: name longer than {_MAX_NAME}")
    return domain, path


def _check_digest(digest: str, text: str) -> None:
    algorithm, _, hex_part = digest.partition(":")
    ok = _DIGEST.fullmatch(digest) is not None
    if ok and algorithm == "sha256":
        ok = _SHA256_HEX.fullmatch(hex_part) is not None
    if not ok:
        raise InvalidArgument(f"invalid image reference {text!r}: bad digest {digest!r}")
