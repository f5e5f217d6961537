import pytest

from pywasmd.errors import FailedPrecondition, NotFound
from pywasmd.shim.state import TRANSITIONS, Op, Status, next_state


@pytest.mark.parametrize(("state", "op"), list(TRANSITIONS))
def test_every_listed_move_is_allowed(state, op):
    assert next_state(state, op, "c") == TRANSITIONS[(state, op)]


@pytest.mark.parametrize(
    ("state", "op"),
    [(s, o) for s in Status for o in Op if (s, o) not in TRANSITIONS],
)
def test_every_other_move_is_refused(state, op):
    expected = NotFound if (state, op) == (Status.STOPPED, Op.KILL) else FailedPrecondition
    with pytest.raises(expected):
        next_state(state, op, "c")


def test_start_twice_is_a_failed_precondition_with_a_readable_message():
    with pytest.raises(FailedPrecondition, match="cannot start a running container"):
        next_state(Status.RUNNING, Op.START, "c")
