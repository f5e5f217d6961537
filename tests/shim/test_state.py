import pytest

from pywasmd.errors import FailedPrecondition, NotFound
from pywasmd.shim.state import TRANSITIONS, Op, Status, next_state

# The lifecycle as containerd's clients expect it, written out rather than read from
# TRANSITIONS: a cell changed in the code must be changed here too, on purpose.
# FP: FailedPrecondition, NF: NotFound; anything else is the state after the operation.
EXPECTED = """
          start     exit      kill      delete    close-io  pause     resume
unknown   FP        FP        FP        FP        FP        FP        FP
created   STARTING  STOPPED   CREATED   DELETING  CREATED   FP        FP
starting  FP        STOPPED   STARTING  FP        STARTING  FP        FP
running   FP        STOPPED   RUNNING   FP        RUNNING   PAUSING   FP
pausing   FP        STOPPED   PAUSING   FP        PAUSING   FP        FP
paused    FP        STOPPED   PAUSED    FP        PAUSED    FP        RESUMING
resuming  FP        STOPPED   RESUMING  FP        RESUMING  FP        FP
stopped   FP        FP        NF        DELETING  STOPPED   FP        FP
deleting  NF        DELETING  NF        NF        NF        NF        NF
"""

# The second half of an operation that awaits, and the operations that only ask.
EXPECTED_MORE = """
          settle    roll-back exec      update    stats
unknown   FP        FP        FP        FP        FP
created   FP        FP        CREATED   CREATED   CREATED
starting  RUNNING   CREATED   STARTING  STARTING  STARTING
running   FP        FP        RUNNING   RUNNING   RUNNING
pausing   PAUSED    RUNNING   PAUSING   PAUSING   PAUSING
paused    FP        FP        PAUSED    PAUSED    PAUSED
resuming  RUNNING   PAUSED    RESUMING  RESUMING  RESUMING
stopped   STOPPED   STOPPED   FP        FP        NF
deleting  DELETING  DELETING  NF        NF        NF
"""


def _cells() -> list[tuple[Status, Op, str]]:
    cells = []
    for table in (EXPECTED, EXPECTED_MORE):
        header, *rows = table.strip("\n").splitlines()
        ops = [Op(name) for name in header.split()]
        for row in rows:
            state, *outcomes = row.split()
            pairs = zip(ops, outcomes, strict=True)
            cells += [(Status[state.upper()], op, out) for op, out in pairs]
    return cells


def test_the_expected_table_names_every_state_and_operation():
    assert {(state, op) for state, op, _ in _cells()} == {(s, o) for s in Status for o in Op}


@pytest.mark.parametrize(
    ("state", "op", "outcome"),
    _cells(),
    ids=[f"{state.name.lower()}-{op.value}" for state, op, _ in _cells()],
)
def test_every_move(state, op, outcome):
    if outcome in ("FP", "NF"):
        with pytest.raises((FailedPrecondition, NotFound)) as raised:
            next_state(state, op, "c")
        assert type(raised.value) is {"FP": FailedPrecondition, "NF": NotFound}[outcome]
        assert (state, op) not in TRANSITIONS
    else:
        assert next_state(state, op, "c") is Status[outcome]


def test_start_twice_is_a_failed_precondition_with_a_readable_message():
    with pytest.raises(FailedPrecondition, match="cannot start a running container"):
        next_state(Status.RUNNING, Op.START, "c")


def test_deleting_is_reported_as_stopped_and_refuses_a_second_delete():
    assert next_state(Status.CREATED, Op.DELETE, "c") is Status.DELETING
    assert Status.DELETING.wire == Status.STOPPED
    with pytest.raises(NotFound, match="already being deleted"):
        next_state(Status.DELETING, Op.DELETE, "c")


def test_the_in_between_states_are_reported_as_containerd_knows_them():
    assert Status.STARTING.wire == Status.RUNNING
    assert Status.PAUSING.wire == Status.PAUSING
    assert Status.RESUMING.wire == Status.PAUSED


def test_exec_and_update_in_a_stopped_container_say_so():
    with pytest.raises(FailedPrecondition, match="'c' has stopped: cannot exec in it"):
        next_state(Status.STOPPED, Op.EXEC, "c")
    with pytest.raises(FailedPrecondition, match="'c' has stopped: nothing to update"):
        next_state(Status.STOPPED, Op.UPDATE, "c")
