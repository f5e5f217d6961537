"""An exit kept for a pid that nobody watched must not reach a later process given that pid."""

from pywasmd.testing import FakeReaper


def test_a_stale_exit_is_forgotten_for_a_live_pid() -> None:
    reaper = FakeReaper()
    seen: list[int] = []
    reaper.exit(4242, 0)  # an earlier process with this pid, nobody watched it
    reaper.forget(4242)  # the pid now names a new, live process
    reaper.watch(4242, seen.append)
    assert seen == []
    reaper.exit(4242, 143)
    assert seen == [143]


def test_an_exit_before_the_watch_still_reaches_it() -> None:
    reaper = FakeReaper()
    seen: list[int] = []
    reaper.exit(4243, 7)
    reaper.watch(4243, seen.append)
    assert seen == [7]
