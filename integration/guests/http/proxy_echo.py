"""A wasi:http/proxy function for the HTTP tests (componentize-py): the path picks what it does.

/notfound   404 with a body
/loop       never answers (the server's wall-time limit must stop it)
/trap       raises, so the component traps
/env        its environment, one variable per line
/headers    the request's header entries as it got them, "name: value" per line (the value's
            bytes as they are), and no content-type of its own
/reflect?v  sets x-reflect to the percent-decoded query and appends a header named "bad name";
            the body names the header-errors the host answered instead
anything else: echoes method, path with query, the x-test header and the body
"""

import os
from urllib.parse import unquote_to_bytes

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


def _method_name(method: object) -> str:
    value = getattr(method, "value", None)
    return value if isinstance(value, str) else type(method).__name__.split("_")[-1].upper()


def _read_all(request: IncomingRequest) -> bytes:
    body = b""
    incoming = request.consume()
    stream = incoming.stream()
    while True:
        try:
            body += stream.blocking_read(65536)
        except Err as e:
            if isinstance(e.value, StreamError_Closed):
                break
            raise
    stream.__exit__(None, None, None)
    return body


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        name = _method_name(request.method())
        path = request.path_with_query() or ""
        test = [v for k, v in request.headers().entries() if k == "x-test"]
        body = _read_all(request)
        if path.startswith("/loop"):
            while True:
                pass
        if path.startswith("/trap"):
            raise RuntimeError("asked to trap")
        if path.startswith("/headers"):
            lines = b"".join(k.encode() + b": " + v + b"\n" for k, v in request.headers().entries())
            response = OutgoingResponse(Fields.from_list([("x-echo-method", name.encode())]))
            out_body = response.body()
            ResponseOutparam.set(response_out, Ok(response))
            out = out_body.write()
            out.blocking_write_and_flush(lines)
            out.__exit__(None, None, None)
            OutgoingBody.finish(out_body, None)
            return
        if path.startswith("/reflect"):
            refused = []
            try:
                fields = Fields.from_list([("x-reflect", unquote_to_bytes(path.partition("?")[2]))])
            except Err as e:
                refused.append(type(e.value).__name__)
                fields = Fields()
            try:
                fields.append("bad name", b"1")
            except Err as e:
                refused.append(type(e.value).__name__)
            response = OutgoingResponse(fields)
            out_body = response.body()
            ResponseOutparam.set(response_out, Ok(response))
            out = out_body.write()
            out.blocking_write_and_flush(("refused: " + " ".join(refused) + "\n").encode())
            out.__exit__(None, None, None)
            OutgoingBody.finish(out_body, None)
            return
        if path.startswith("/env"):
            text = "".join(f"{k}={v}\n" for k, v in sorted(os.environ.items())).encode()
        else:
            header = test[0].decode() if test else "-"
            text = f"method={name}\npath={path}\nheader={header}\nbody=".encode() + body
        headers = [("content-type", b"text/plain"), ("x-echo-method", name.encode())]
        response = OutgoingResponse(Fields.from_list(headers))
        response.set_status_code(404 if path.startswith("/notfound") else 200)
        out_body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        out = out_body.write()
        out.blocking_write_and_flush(text)
        out.__exit__(None, None, None)
        OutgoingBody.finish(out_body, None)
