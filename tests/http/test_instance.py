"""pywasmd.http.instance: how each way an instance ends becomes an HTTP answer."""

from __future__ import annotations

from pywasmd.engine import CallResult
from pywasmd.http.instance import answer


def test_a_response() -> None:
    got = answer(CallResult("exit", 0, b"Content-Type: a/b\n\nok"), 5)
    assert (got.response.status, got.response.body, got.problem) == (200, b"ok", "")


def test_nonzero_exit_with_a_response_is_still_served() -> None:
    got = answer(CallResult("exit", 1, b"Status: 400 Bad\n\n"), 5)
    assert (got.response.status, got.problem) == (400, "")


def test_timeout_504() -> None:
    got = answer(CallResult("timeout", 0, b"partial", "over 5 s"), 5)
    assert got.response.status == 504
    assert got.response.body == b"504 Gateway Timeout\n"
    assert "ran over its 5 s (pywasm.io/http-timeout)" in got.problem


def test_trap_500() -> None:
    got = answer(CallResult("trap", 0, b"", "wasm trap: unreachable"), 5)
    assert (got.response.status, got.problem) == (
        500,
        "the guest trapped: wasm trap: unreachable",
    )


def test_malformed_502() -> None:
    got = answer(CallResult("exit", 0, b"plain text\n"), 5)
    assert got.response.status == 502
    assert got.problem.startswith("malformed CGI response: header line 'plain text'")


def test_exit_without_output_502() -> None:
    got = answer(CallResult("exit", 3, b""), 5)
    assert (got.response.status, got.problem) == (502, "the guest exited 3 without a response")
