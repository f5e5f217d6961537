"""One request's instance -> the HTTP answer: pure, so every outcome is unit-tested."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

from pywasmd.engine import CallResult
from pywasmd.http.cgi import MalformedResponse, Response, parse_response


@dataclass(frozen=True)
class Answer:
    response: Response
    #: why the guest gave no usable response, for the one log line on stderr; "" when it did.
    problem: str = ""


def error_response(status: int) -> Response:
    phrase = HTTPStatus(status).phrase
    body = f"{status} {phrase}\n".encode()
    return Response(status, phrase, [("Content-Type", "text/plain; charset=utf-8")], body)


def answer(result: CallResult, timeout: float) -> Answer:
    if result.outcome == "timeout":
        return Answer(
            error_response(504),
            f"the guest ran over its {timeout:g} s (pywasm.io/http-timeout) and was stopped",
        )
    if result.outcome == "trap":
        return Answer(error_response(500), f"the guest trapped: {result.detail}")
    if result.status != 0 and not result.stdout:
        return Answer(error_response(502), f"the guest exited {result.status} without a response")
    try:
        return Answer(parse_response(result.stdout))
    except MalformedResponse as exc:
        return Answer(error_response(502), f"malformed CGI response: {exc}")
