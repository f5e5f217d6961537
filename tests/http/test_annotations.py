"""pywasmd.oci.http: the annotations of an HTTP function and their refusals."""

from __future__ import annotations

import pytest

from pywasmd.errors import InvalidArgument
from pywasmd.oci.http import HttpPlan, http_plan, parse_listen
from pywasmd.oci.plan import WasiPlan


def test_no_trigger_no_function() -> None:
    assert http_plan({}) is None


def test_defaults() -> None:
    assert http_plan({"pywasm.io/trigger": "http"}) == HttpPlan("0.0.0.0", 8080, 5.0, 4, 16 << 20)


def test_every_annotation() -> None:
    plan = http_plan(
        {
            "pywasm.io/trigger": "http",
            "pywasm.io/listen": "[::]:9000",
            "pywasm.io/http-timeout": "0.5",
            "pywasm.io/http-concurrency": "16",
            "pywasm.io/http-max-body": "1024",
        }
    )
    assert plan == HttpPlan("::", 9000, 0.5, 16, 1024)


def test_round_trip_through_the_worker_json() -> None:
    plan = WasiPlan("/m.wasm", ("m",), (), "/", (), http=HttpPlan("127.0.0.1", 80, 2.0, 1, 5))
    assert WasiPlan.from_json(plan.to_json()) == plan
    bare = WasiPlan("/m.wasm", ("m",), (), "/", ())
    assert WasiPlan.from_json(bare.to_json()).http is None


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"pywasm.io/trigger": "HTTP"}, "pywasm.io/trigger='HTTP' is not allowed; use http"),
        ({"pywasm.io/listen": "0.0.0.0:80"}, "only applies to HTTP functions; add pywasm.io/"),
        (
            {"pywasm.io/trigger": "http", "pywasm.io/http-timeout": "0"},
            "pywasm.io/http-timeout='0' must be a positive number up to 3600",
        ),
        (
            {"pywasm.io/trigger": "http", "pywasm.io/http-timeout": "nan"},
            "must be a positive number",
        ),
        (
            {"pywasm.io/trigger": "http", "pywasm.io/http-concurrency": "1.5"},
            "pywasm.io/http-concurrency='1.5' must be a positive whole number up to 256",
        ),
        (
            {"pywasm.io/trigger": "http", "pywasm.io/http-max-body": "-1"},
            "pywasm.io/http-max-body='-1' must be a positive whole number",
        ),
        (
            {"pywasm.io/trigger": "http", "pywasm.io/timeout": "30"},
            "pywasm.io/timeout limits a command's whole run; an HTTP function's requests are "
            "limited by pywasm.io/http-timeout",
        ),
        (
            {"pywasm.io/trigger": "http", "pywasm.io/fuel": "1000"},
            "pywasm.io/fuel limits a command's whole run",
        ),
    ],
)
def test_refusals(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace("?", r"\?")):
        http_plan(annotations)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8080", "is not an address"),
        (":8080", "is not an address"),
        ("localhost:8080", "'localhost' is not an IP address"),
        ("0.0.0.0:0", "port 0 is not in 1..65535"),
        ("0.0.0.0:70000", "port 70000 is not in 1..65535"),
        ("0.0.0.0:http", "is not an address"),
    ],
)
def test_listen_refusals(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_listen(text)
