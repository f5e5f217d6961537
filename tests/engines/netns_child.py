"""Run one plan with the real WasmtimeEngine inside a network namespace (a test helper).

    python netns_child.py new|<pid> <plan.json> <precompiled>

``new``: the process makes a fresh network namespace of its own (unshare) with ``lo`` up;
``<pid>``: it joins that process's network namespace.  Then it loads the precompiled guest and
runs it with stdio on its own fds 0-2, and exits with the engine's status.  Signals keep their
default actions, as in the shim's worker: SIGTERM ends a guest blocked in accept() at once.
"""

from __future__ import annotations

import json
import os
import sys

from netns import enter_netns, new_netns

from pywasmd.engines.wasmtime import WasmtimeEngine
from pywasmd.oci.plan import WasiPlan


def main() -> None:
    where, plan_file, precompiled = sys.argv[1:4]
    if where == "new":
        new_netns()
    else:
        enter_netns(int(where))
    with open(plan_file) as f:
        plan = WasiPlan.from_json(json.load(f))
    engine = WasmtimeEngine()
    status = engine.run(engine.load_precompiled_file(precompiled, plan), plan)
    sys.stdout.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
