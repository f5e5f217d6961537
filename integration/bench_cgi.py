"""First comparison for HTTP functions (docs/http.md), outside any container (`make bench`'s
own, behind Docker's `-p`, is integration/bench_functions.py): the C CGI function of
integration/guests/cgi.c served by pywasm (`ctr run --net-host`, pywasm.io/trigger=http, on a
private containerd) against busybox httpd running the same C program, built natively, as a CGI
(`busybox httpd -f -p 127.0.0.1:PORT -h DIR`, DIR/cgi-bin/fn), both on the machine's loopback.

    python -m integration.bench_cgi [--seconds 5] [--version 2.1] [--concurrency 4] [--proxy]

--proxy also runs the wasi:http/proxy function (integration/guests/http/proxy_echo.py).

For 10 and 50 connections: `wrk --latency -t2 -c<n> -d<s>` after a 1 s warm-up; requests/s,
p50 and p99.  wrk keeps connections alive; busybox httpd closes each one, pywasm keeps them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from integration import guests, http_guests, images
from integration.bench_functions import native_cgi
from integration.containerd import Containerd, new_id, run_args

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _native_cgi(out: Path) -> Path:
    exe = out / "cgi-bin" / "fn"
    exe.parent.mkdir(parents=True)
    shutil.copy(native_cgi(), exe)
    return exe


def _wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(["curl", "-sf", "-o", "/dev/null", url], check=False).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} never answered")
        time.sleep(0.1)


def _to_ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, connections: int, seconds: int) -> dict[str, float]:
    subprocess.run(["wrk", "-t2", f"-c{connections}", "-d1s", url], capture_output=True, check=True)
    out = subprocess.run(
        ["wrk", "--latency", "-t2", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _to_ms(re.search(r"50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _to_ms(re.search(r"99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses\n{out}")
    return {"rps": rps, "p50": p50, "p99": p99}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--version", default="2.1")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--proxy", action="store_true", help="also the wasi:http/proxy function")
    args = parser.parse_args()
    rows: list[tuple[str, int, dict[str, float]]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-cgi-"))
    busybox = subprocess.Popen(["true"])
    ctrd = Containerd(args.version)
    try:
        _native_cgi(tmp / "www")
        bport = _free_port()
        busybox = subprocess.Popen(
            ["busybox", "httpd", "-f", "-p", f"127.0.0.1:{bport}", "-h", str(tmp / "www")]
        )
        ctrd.start()
        archive = images.build_wasm_archive("http-cgi", guests.build("cgi"))
        images.import_archive(ctrd, images.ref("http-cgi"), archive)
        port = _free_port()
        cid = new_id("bench-cgi")
        extra = [
            "--net-host",
            "--log-uri",
            f"file://{tmp}/pywasm.log",
            "--annotation",
            "pywasm.io/trigger=http",
            "--annotation",
            f"pywasm.io/listen=127.0.0.1:{port}",
            "--annotation",
            f"pywasm.io/http-concurrency={args.concurrency}",
        ]
        module = images.archive_entrypoint(archive)[0]
        argv = run_args(images.ref("http-cgi"), cid, module, rm=False, detach=True, extra=extra)
        r = ctrd.ctr(*argv, timeout=60)
        if r.returncode:
            raise RuntimeError(r.stderr)
        urls = {
            "pywasm": f"http://127.0.0.1:{port}/bench?x=1",
            "busybox-cgi": f"http://127.0.0.1:{bport}/cgi-bin/fn/bench?x=1",
        }
        if args.proxy:
            proxy = images.build_wasm_archive("http-proxy", http_guests.build())
            images.import_archive(ctrd, images.ref("http-proxy"), proxy)
            pport = _free_port()
            pextra = [e.replace(f":{port}", f":{pport}") for e in extra]
            pextra[pextra.index("--log-uri") + 1] = f"file://{tmp}/proxy.log"
            pmodule = images.archive_entrypoint(proxy)[0]
            pcid = new_id("bench-proxy")
            argv = run_args(
                images.ref("http-proxy"), pcid, pmodule, rm=False, detach=True, extra=pextra
            )
            r = ctrd.ctr(*argv, timeout=60)
            if r.returncode:
                raise RuntimeError(r.stderr)
            urls["pywasm-proxy"] = f"http://127.0.0.1:{pport}/bench?x=1"
        for url in urls.values():
            _wait(url, timeout=180)
        for connections in (10, 50):
            for name, url in urls.items():
                rows.append((name, connections, wrk(url, connections, args.seconds)))
        ctrd.ctr("tasks", "kill", cid, timeout=20)
        lines = (tmp / "pywasm.log").read_text().count(" 200 ")
        print(f"pywasm access-log lines with status 200: {lines}")
    finally:
        busybox.terminate()
        busybox.wait()
        ctrd.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"| server | connections | requests/s | p50 ms | p99 ms |  (cpus {os.cpu_count()})")
    print("| --- | --- | --- | --- | --- |")
    for name, connections, m in rows:
        print(f"| {name} | {connections} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} |")


if __name__ == "__main__":
    main()
