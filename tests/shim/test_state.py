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
    finished_kill = state.finished and op is Op.KILL
    expected = NotFound if finished_kill or state is Status.DELETING else FailedPrecondition
    with pytest.raises(expected):
        next_state(state, op, "c")


def test_start_twice_is_a_failed_precondition_with_a_readable_message():
    with pytest.raises(FailedPrecondition, match="cannot start a running container"):
        next_state(Status.RUNNING, Op.START, "c")


def test_deleting_is_reported_as_stopped_and_refuses_a_second_delete():
    assert next_state(Status.CREATED, Op.DELETE, "c") is Status.DELETING
    assert Status.DELETING.wire == Status.STOPPED
    with pytest.raises(NotFound, match="already being deleted"):
        next_state(Status.DELETING, Op.DELETE, "c")
