import os

from pywasmd.shim import reaper as reaper_module
from pywasmd.shim.reaper import Reaper


def _exited_child(code: int) -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(code)
    return pid


def test_exit_before_watch_is_kept_for_its_owner():
    r = Reaper()
    pid = _exited_child(5)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    r.reap()
    seen: list[int] = []
    r.watch(pid, seen.append)
    assert seen == [5]


def test_unclaimed_exits_are_bounded(monkeypatch):
    monkeypatch.setattr(reaper_module, "_MAX_UNCLAIMED", 3)
    r = Reaper()
    pids = []
    for code in range(5):
        pid = _exited_child(code)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        r.reap()
        pids.append(pid)
    assert len(r._unclaimed) == 3
    # The newest are kept: a late watch for a recent pid still gets its status.
    seen: list[int] = []
    r.watch(pids[-1], seen.append)
    assert seen == [4]
