"""CGI/1.1 in pywasmd.http.cgi: the request's environment and the parse of the guest's output."""

from __future__ import annotations

import pytest

from pywasmd.http.cgi import BadRequest, MalformedResponse, Request, environ, parse_response


def _request(**kw: object) -> Request:
    fields: dict[str, object] = {
        "method": "GET",
        "target": b"/a%20b/c?x=1&y=%20",
        "headers": [(b"Host", b"example.test:8080"), (b"X-Test", b"hi")],
        "body_length": None,
        "server_name": "0.0.0.0",
        "server_port": 8080,
        "remote_addr": "10.0.0.7",
        "remote_port": 51000,
    }
    fields.update(kw)
    return Request(**fields)  # type: ignore[arg-type]


def test_every_meta_variable() -> None:
    env = dict(environ(_request()))
    assert env == {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "pywasm",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "example.test",
        "SERVER_PORT": "8080",
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/a b/c",
        "QUERY_STRING": "x=1&y=%20",
        "REQUEST_URI": "/a%20b/c?x=1&y=%20",
        "REMOTE_ADDR": "10.0.0.7",
        "REMOTE_PORT": "51000",
        "HTTP_HOST": "example.test:8080",
        "HTTP_X_TEST": "hi",
    }


def test_body_variables_only_with_a_body() -> None:
    assert "CONTENT_LENGTH" not in dict(environ(_request()))
    env = dict(
        environ(
            _request(
                method="POST",
                headers=[(b"Content-Type", b"application/json"), (b"Content-Length", b"0")],
                body_length=0,
            )
        )
    )
    assert (env["CONTENT_LENGTH"], env["CONTENT_TYPE"]) == ("0", "application/json")
    assert "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_CONTENT_LENGTH" not in env


def test_repeated_headers_join_and_spoofable_names_are_dropped() -> None:
    headers = [
        (b"Accept", b"a/b"),
        (b"accept", b"c/d"),
        (b"X_Forwarded_User", b"root"),  # would read as HTTP_X_FORWARDED_USER
        (b"Proxy", b"http://evil"),  # httpoxy: HTTP_PROXY
    ]
    env = dict(environ(_request(headers=headers)))
    assert env["HTTP_ACCEPT"] == "a/b, c/d"
    assert "HTTP_X_FORWARDED_USER" not in env
    assert "HTTP_PROXY" not in env
    assert env["SERVER_NAME"] == "0.0.0.0"  # no Host header: the listen address


def test_container_env_first_and_cannot_shadow_the_request() -> None:
    env = environ(_request(), [("PATH", "/bin"), ("REQUEST_METHOD", "PUT"), ("A", "1")])
    assert env[:2] == [("PATH", "/bin"), ("A", "1")]
    assert dict(env)["REQUEST_METHOD"] == "GET"


def test_ipv6_host_header() -> None:
    env = dict(environ(_request(headers=[(b"Host", b"[::1]:8080")])))
    assert env["SERVER_NAME"] == "[::1]"


def test_document_response() -> None:
    r = parse_response(b"Content-Type: text/plain\r\nX-A: 1\r\n\r\nhello\n")
    assert (r.status, r.reason, r.headers, r.body) == (
        200,
        "",
        [("Content-Type", "text/plain"), ("X-A", "1")],
        b"hello\n",
    )


def test_status_and_bare_newlines() -> None:
    r = parse_response(b"Status: 404 Not Here\nContent-Type: text/plain\n\nnone")
    assert (r.status, r.reason, r.body) == (404, "Not Here", b"none")


def test_location_alone_is_a_redirect() -> None:
    r = parse_response(b"Location: http://example.test/x\n\n")
    assert (r.status, r.headers) == (302, [("Location", "http://example.test/x")])


def test_framing_headers_of_the_guest_are_dropped() -> None:
    r = parse_response(
        b"Content-Type: a/b\nContent-Length: 99\nConnection: keep-alive\n"
        b"Transfer-Encoding: chunked\n\nxy"
    )
    assert r.headers == [("Content-Type", "a/b")]
    assert r.body == b"xy"


@pytest.mark.parametrize(
    ("out", "why"),
    [
        (b"", "no output at all"),
        (b"hello world\n", "is not Name: value"),
        (b"Content-Type: a/b", "no blank line"),
        (b"X-A: 1\n\nbody", "none of Content-Type, Location or Status"),
        (b"Status: 99 Low\n\n", "not a 3-digit code"),
        (b"Status: abc\n\n", "not a 3-digit code"),
        (b"Bad Name: 1\nContent-Type: a/b\n\n", "is not Name: value"),
        (b"Content-Type: a\rb\n\n", "control character"),
    ],
)
def test_malformed_output(out: bytes, why: str) -> None:
    with pytest.raises(MalformedResponse, match=why):
        parse_response(out)


def test_utf8_passes_other_bytes_read_as_latin1() -> None:
    env = dict(
        environ(
            _request(
                target=b"/caf%C3%A9?q=%FF",
                headers=[(b"X-A", "été".encode()), (b"X-B", b"\xe9t\xe9")],
            )
        )
    )
    assert env["PATH_INFO"] == "/café"
    assert dict(environ(_request(target=b"/caf%C3%A9%FF")))["PATH_INFO"] == "/caf\xc3\xa9\xff"
    assert env["QUERY_STRING"] == "q=%FF"
    assert (env["HTTP_X_A"], env["HTTP_X_B"]) == ("été", "été")


def test_nul_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="PATH_INFO would hold a NUL"):
        environ(_request(target=b"/a%00b"))
