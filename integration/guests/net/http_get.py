"""Outgoing HTTP through wasi:http/outgoing-handler: GETs the http:// URL in argv[1].

Prints ``status <code>`` and then the body on stdout. Status 0 for a 200 answer; otherwise one
line ``http_get: <what failed>`` on stderr and status 1.
"""

import sys

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import wasi_http_types as http


def _get(url: str) -> tuple[int, bytes]:
    if not url.startswith("http://"):
        raise ValueError(f"{url!r} is not an http:// URL")
    authority, _, path = url[len("http://") :].partition("/")
    request = http.OutgoingRequest(http.Fields())
    request.set_method(http.Method_Get())
    request.set_scheme(http.Scheme_Http())
    request.set_authority(authority)
    request.set_path_with_query("/" + path)
    # Resources are released children first (a body before its response, a stream before
    # its body): wasmtime refuses to drop a resource whose children are alive.
    with outgoing_handler.handle(request, None) as future:
        while (answer := future.get()) is None:
            with future.subscribe() as ready:
                ready.block()
    if not isinstance(answer, Ok) or not isinstance(answer.value, Ok):
        raise RuntimeError(f"request failed: {answer}")
    with answer.value.value as response:
        status = response.status()
        with response.consume() as incoming, incoming.stream() as stream:
            body = b""
            while True:
                try:
                    body += stream.blocking_read(65536)
                except Err as exc:
                    if isinstance(exc.value, streams.StreamError_Closed):
                        break
                    raise RuntimeError(f"reading the body failed: {exc.value}") from None
    return status, body


class Run(exports.Run):
    def run(self) -> None:
        try:
            status, body = _get(sys.argv[1])
        except (RuntimeError, ValueError, IndexError, Err) as exc:
            print(f"http_get: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            raise Err(None) from None
        print(f"status {status}", flush=True)
        sys.stdout.write(body.decode(errors="replace"))
        sys.stdout.flush()
        if status != 200:
            raise Err(None)
