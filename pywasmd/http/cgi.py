"""CGI/1.1 (RFC 3875) without I/O: a request -> the guest's environment, its stdout -> a response.

Pure functions, so the unit tests (tests/http) check every variable and every refusal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

SERVER_SOFTWARE = "pywasm"

_TOKEN = re.compile(rb"^[!#$%&'*+.^`|~0-9A-Za-z-]+$")
# Headers the server answers for itself: a guest's value would contradict the framing.
_HOP_BY_HOP = frozenset(
    {b"connection", b"content-length", b"transfer-encoding", b"keep-alive", b"upgrade", b"te"}
)
# Content-Length/-Type have their own variables (RFC 3875 4.1.18); Proxy would become
# HTTP_PROXY, which many HTTP clients take as their proxy ("httpoxy"), as every CGI server drops.
_NOT_FORWARDED = frozenset({b"content-length", b"content-type", b"proxy"})


class BadRequest(ValueError):
    """The request cannot be handed to a CGI program; the message says why (400)."""


@dataclass(frozen=True)
class Request:
    method: str
    #: the request target as sent: path and query, still percent-encoded.
    target: bytes
    headers: Sequence[tuple[bytes, bytes]]
    #: bytes of the body; None when the request had none (no Content-Length, not chunked).
    body_length: int | None
    server_name: str
    server_port: int
    remote_addr: str
    remote_port: int
    protocol: str = "HTTP/1.1"


def environ(request: Request, base: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """The guest's environment: the container's ``base`` env, then the CGI meta-variables."""
    path, _, query = request.target.partition(b"?")
    cgi: dict[str, str] = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
        "SERVER_PROTOCOL": request.protocol,
        "SERVER_NAME": request.server_name,
        "SERVER_PORT": str(request.server_port),
        "REQUEST_METHOD": request.method,
        # The function answers every path: it is the whole site, so SCRIPT_NAME is empty and
        # PATH_INFO the whole (decoded) path, as WAGI and Spin's wagi executor do.
        "SCRIPT_NAME": "",
        "PATH_INFO": _text(unquote_to_bytes(path)),
        "QUERY_STRING": _text(query),
        "REQUEST_URI": _text(request.target),
        "REMOTE_ADDR": request.remote_addr,
        "REMOTE_PORT": str(request.remote_port),
    }
    host = ""
    joined: dict[str, list[str]] = {}
    for raw_name, raw_value in request.headers:
        name = raw_name.lower()
        value = _text(raw_value)
        if name == b"host":
            host = value
        if name == b"content-type":
            cgi["CONTENT_TYPE"] = value
        # A name with "_" would turn into the same variable as its "-" twin (X_User and
        # X-User): such headers are dropped, as nginx and Apache do, so none can be spoofed.
        if name in _NOT_FORWARDED or b"_" in name or not _TOKEN.match(name):
            continue
        key = "HTTP_" + name.decode("ascii").upper().replace("-", "_")
        joined.setdefault(key, []).append(value)
    for key, values in joined.items():
        cgi[key] = ", ".join(values)
    if request.body_length is not None:
        cgi["CONTENT_LENGTH"] = str(request.body_length)
    if host:
        cgi["SERVER_NAME"] = _host_name(host) or request.server_name
    for key, value in cgi.items():
        if "\0" in value:
            # A C string ends there: the guest would see a shorter path than was asked for.
            raise BadRequest(f"{key} would hold a NUL character (%00)")
    env = [(k, v) for k, v in base if k not in cgi]
    env.extend(sorted(cgi.items()))
    return env


def _text(raw: bytes) -> str:
    """An environment value: WASI hands the guest UTF-8, so bytes that are UTF-8 pass as they
    are; anything else is read as Latin-1 (every byte a character) rather than refused."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class MalformedResponse(ValueError):
    """The guest's stdout is not a CGI response; the message says what is wrong."""


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


def parse_response(out: bytes) -> Response:
    """Parse a document, local- or client-redirect response (RFC 3875 section 6)."""
    headers: list[tuple[str, str]] = []
    status: int | None = None
    reason = ""
    pos = 0
    while True:
        end = out.find(b"\n", pos)
        if end < 0:
            raise MalformedResponse(
                "no blank line ends the header section" if out else "no output at all"
            )
        line = out[pos:end].removesuffix(b"\r")
        pos = end + 1
        if not line:
            break
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise MalformedResponse(f"header line {_show(line)} is not Name: value")
        text = value.strip().decode("latin-1")
        if any(c in text for c in "\r\0"):
            raise MalformedResponse(f"header {name.decode()} has a control character")
        lower = name.lower()
        if lower == b"status":
            code, _, reason = text.partition(" ")
            if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 599:
                raise MalformedResponse(f"Status {text!r} is not a 3-digit code 100-599")
            status = int(code)
        elif lower not in _HOP_BY_HOP:
            headers.append((name.decode("ascii"), text))
    names = {n.lower() for n, _ in headers}
    if status is None and not names & {"content-type", "location"}:
        raise MalformedResponse("none of Content-Type, Location or Status in the header section")
    if status is None:
        status = 302 if "location" in names else 200
    return Response(status, reason, headers, out[pos:])


def _show(line: bytes) -> str:
    return repr(line[:60].decode("latin-1")) + ("..." if len(line) > 60 else "")
