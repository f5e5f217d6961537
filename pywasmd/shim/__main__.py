"""Entry point of ``containerd-shim-pywasm-v1``: argv -> start | delete | version."""

from __future__ import annotations

import os
import sys


def main() -> None:
    from pywasmd.shim import bootstrap
    from pywasmd.shim.cli import UsageError, parse

    try:
        args = parse(sys.argv[1:])
    except UsageError as exc:
        sys.stderr.write(f"containerd-shim-pywasm-v1: {exc}\n")
        sys.exit(2)
    if args.version:
        from pywasmd import __version__

        sys.stdout.write(f"containerd-shim-pywasm-v1 {__version__} (io.containerd.pywasm.v1)\n")
        return
    if args.action in ("start", "delete"):
        code = bootstrap.start(args) if args.action == "start" else bootstrap.delete(args)
        sys.stdout.flush()
        sys.stderr.flush()
        # Skip the interpreter's teardown: containerd waits for this process to exit.
        os._exit(code)
    sys.stderr.write(
        "containerd-shim-pywasm-v1 is run by containerd (runtime io.containerd.pywasm.v1); "
        f"unknown action {args.action!r}: expected start or delete\n"
    )
    sys.exit(2)


if __name__ == "__main__":
    main()
