"""The compiler process: one module compiled outside every container, then it exits.

A worker whose module is not in the node's compile cache starts this as a fresh
interpreter (``python -I -m pywasmd.shim.compiler``), writes the plan as JSON on its
stdin and reads, on its stdout, ``ok`` and a newline then the compiled code, or an
error class name and a newline then the message.  A fresh process, not a fork of the
worker: the worker may carry the state of a gRPC client whose fork handlers start
threads, and the compiler's own threads must never be the container's.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main() -> None:
    # A container deleted while it compiles takes its compiler with it.
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    from pywasmd import errors
    from pywasmd.engine import get_engine
    from pywasmd.oci.plan import WasiPlan

    try:
        plan = WasiPlan.from_json(json.loads(sys.stdin.buffer.read()))
        out = b"ok\n" + get_engine(plan.engine).precompile(plan)
    except errors.ShimError as exc:
        out = f"{type(exc).__name__}\n{exc.message}".encode()
    except Exception as exc:  # noqa: BLE001 - the worker turns it into the Create error
        out = f"Internal\n{type(exc).__name__}: {exc}".encode()
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
