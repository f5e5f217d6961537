"""Annotations that make a container an HTTP function (docs/http.md): pure data, no host access.

pywasm.io/trigger: http              serve the module as CGI, a fresh instance per request
pywasm.io/listen: 0.0.0.0:8080       where (an IP literal and a port; [::]:8080 for IPv6)
pywasm.io/http-timeout: 5            wall time of one request's instance, seconds
pywasm.io/http-concurrency: 4        instances running at once
pywasm.io/http-max-body: 16777216    largest request body, bytes (413 above)
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass

from pywasmd.errors import InvalidArgument

TRIGGER_ANNOTATION = "pywasm.io/trigger"
LISTEN_ANNOTATION = "pywasm.io/listen"
TIMEOUT_ANNOTATION = "pywasm.io/http-timeout"
CONCURRENCY_ANNOTATION = "pywasm.io/http-concurrency"
MAX_BODY_ANNOTATION = "pywasm.io/http-max-body"

DEFAULT_LISTEN = "0.0.0.0:8080"
DEFAULT_TIMEOUT = 5.0
DEFAULT_CONCURRENCY = 4
DEFAULT_MAX_BODY = 16 * 1024 * 1024
_HTTP_ONLY = (LISTEN_ANNOTATION, TIMEOUT_ANNOTATION, CONCURRENCY_ANNOTATION, MAX_BODY_ANNOTATION)
# Limits of a command's whole run that have no meaning per request (and fuel would starve
# every instance: the CGI runner gives a store none).
_COMMAND_ONLY = {
    "pywasm.io/timeout": f"{TIMEOUT_ANNOTATION} (wall time per request)",
    "pywasm.io/fuel": f"{TIMEOUT_ANNOTATION} (wall time per request)",
}
_MAX_TIMEOUT = 3600.0
_MAX_CONCURRENCY = 256
_MAX_MAX_BODY = 1024**3


@dataclass(frozen=True)
class HttpPlan:
    host: str = "0.0.0.0"
    port: int = 8080
    timeout: float = DEFAULT_TIMEOUT
    concurrency: int = DEFAULT_CONCURRENCY
    max_body: int = DEFAULT_MAX_BODY

    def to_json(self) -> list[object]:
        return [self.host, self.port, self.timeout, self.concurrency, self.max_body]

    @classmethod
    def from_json(cls, raw: object) -> HttpPlan | None:
        if not isinstance(raw, list):
            return None
        host, port, timeout, concurrency, max_body = raw
        return cls(str(host), int(port), float(timeout), int(concurrency), int(max_body))


def http_plan(annotations: Mapping[str, str]) -> HttpPlan | None:
    """The HTTP function ``annotations`` ask for, or None for an ordinary command."""
    trigger = annotations.get(TRIGGER_ANNOTATION)
    if trigger is None:
        stray = sorted(
            k
            for k in (
                LISTEN_ANNOTATION,
                TIMEOUT_ANNOTATION,
                CONCURRENCY_ANNOTATION,
                MAX_BODY_ANNOTATION,
            )
            if k in annotations
        )
        if stray:
            raise InvalidArgument(
                f"annotation {stray[0]} only applies to HTTP functions; add "
                f"{TRIGGER_ANNOTATION}=http or remove it"
            )
        return None
    if trigger != "http":
        raise InvalidArgument(
            f"annotation {TRIGGER_ANNOTATION}={trigger!r} is not allowed; use http (serve the "
            "module as a CGI function) or leave it out (run the module as a command)"
        )
    for key, instead in _COMMAND_ONLY.items():
        if key in annotations:
            raise InvalidArgument(
                f"annotation {key} limits a command's whole run; an HTTP function's requests "
                f"are limited by {instead}: use that, or drop the trigger"
            )
    host, port = parse_listen(annotations.get(LISTEN_ANNOTATION, DEFAULT_LISTEN))
    return HttpPlan(
        host=host,
        port=port,
        timeout=_number(annotations, TIMEOUT_ANNOTATION, DEFAULT_TIMEOUT, _MAX_TIMEOUT, "5"),
        concurrency=int(
            _number(annotations, CONCURRENCY_ANNOTATION, DEFAULT_CONCURRENCY, _MAX_CONCURRENCY, "4")
        ),
        max_body=int(
            _number(annotations, MAX_BODY_ANNOTATION, DEFAULT_MAX_BODY, _MAX_MAX_BODY, "1048576")
        ),
    )


def parse_listen(text: str) -> tuple[str, int]:
    """``0.0.0.0:8080``, ``127.0.0.1:80``, ``[::]:8080`` -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    fix = "use IP:PORT, e.g. 0.0.0.0:8080 or [::]:8080"
    if not sep or not host or not port_text.isdigit():
        raise InvalidArgument(f"annotation {LISTEN_ANNOTATION}={text!r} is not an address; {fix}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise InvalidArgument(
            f"annotation {LISTEN_ANNOTATION}={text!r}: {host!r} is not an IP address (names "
            f"are not looked up); {fix}"
        ) from None
    port = int(port_text)
    if not 0 < port < 65536:
        raise InvalidArgument(
            f"annotation {LISTEN_ANNOTATION}={text!r}: port {port} is not in 1..65535; {fix}"
        )
    return host, port


def _number(
    annotations: Mapping[str, str], key: str, default: float, most: float, example: str
) -> float:
    text = annotations.get(key)
    if text is None:
        return default
    integer = key != TIMEOUT_ANNOTATION
    try:
        value = float(int(text)) if integer else float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= most:  # also refuses nan and inf
        kind = "whole number" if integer else "number"
        raise InvalidArgument(
            f"annotation {key}={text!r} must be a positive {kind} up to {most:g}, e.g. {example}"
        )
    return value
