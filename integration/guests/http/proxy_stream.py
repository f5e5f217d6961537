"""A wasi:http/proxy function that streams (componentize-py): the path picks what it does.

/drip?ms=N   answers at once, writes "first\n", waits N ms (a clock pollable), writes
             "second\n": no content-length, so the server sends it chunked
/echo        copies the request body to the response as it reads it, 64 KiB at a time,
             writing only what check-write allows (waiting on the stream's pollable);
             with the request's content-length when it had one
/count       reads the whole body, answers its length and a checksum
/splice      the request body to the response with blocking-splice (never through the guest)
/late-trap   answers "done\n", finishes the body, then raises (the component traps)
"""

import zlib

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import monotonic_clock
from wit_world.imports.streams import InputStream, OutputStream, StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


def _chunks(stream: InputStream):
    while True:
        try:
            yield stream.blocking_read(65536)
        except Err as e:
            if isinstance(e.value, StreamError_Closed):
                return
            raise


def _send(out: OutputStream, data: bytes) -> None:
    while data:
        room = out.check_write()
        if room == 0:
            with out.subscribe() as ready:
                ready.block()
            continue
        out.write(data[:room])
        data = data[room:]


def _start(response_out: ResponseOutparam, headers: list) -> tuple:
    response = OutgoingResponse(Fields.from_list(headers))
    body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    return body, body.write()


def _end(body: OutgoingBody, out: OutputStream) -> None:
    out.blocking_flush()
    out.__exit__(None, None, None)
    OutgoingBody.finish(body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or ""
        if path.startswith("/drip"):
            ms = int(path.partition("ms=")[2] or "300")
            body, out = _start(response_out, [("content-type", b"text/plain")])
            out.blocking_write_and_flush(b"first\n")
            with monotonic_clock.subscribe_duration(ms * 1_000_000) as later:
                later.block()
            out.blocking_write_and_flush(b"second\n")
            _end(body, out)
            return
        if path.startswith("/late-trap"):
            body, out = _start(response_out, [("content-type", b"text/plain")])
            out.blocking_write_and_flush(b"done\n")
            _end(body, out)
            raise RuntimeError("asked to trap after the response")
        length = [v for k, v in request.headers().entries() if k == "content-length"]
        incoming = request.consume()
        stream = incoming.stream()
        if path.startswith("/count"):
            size, crc = 0, 0
            for chunk in _chunks(stream):
                size += len(chunk)
                crc = zlib.crc32(chunk, crc)
            body, out = _start(response_out, [("content-type", b"text/plain")])
            out.blocking_write_and_flush(f"{size} {crc:08x}\n".encode())
            _end(body, out)
            return
        if path.startswith("/splice"):
            body, out = _start(response_out, [("content-type", b"application/octet-stream")])
            while True:
                try:
                    out.blocking_splice(stream, 65536)
                except Err as e:
                    if isinstance(e.value, StreamError_Closed):
                        break
                    raise
            _end(body, out)
            return
        headers = [("content-type", b"application/octet-stream")]
        headers += [("content-length", length[0])] if length else []
        body, out = _start(response_out, headers)
        for chunk in _chunks(stream):
            _send(out, chunk)
        _end(body, out)
