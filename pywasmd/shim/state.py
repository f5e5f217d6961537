"""A container's lifecycle as data: which operation may run in which state.

An operation that awaits (Start, Pause, Resume, Delete) takes its in-between state before
its first await, so an RPC that overlaps it (ttrpc dispatches concurrently) meets that
state here; the operation then ends with SETTLE (it worked) or ROLL_BACK (it failed), which
leave a container that exited or is being deleted meanwhile as it is.
"""

from __future__ import annotations

import enum

from pywasmd.errors import FailedPrecondition, NotFound


class Status(enum.IntEnum):
    """Numbers as in containerd.v1.types.Status; the ones above PAUSING are ours."""

    UNKNOWN = 0
    CREATED = 1
    RUNNING = 2
    STOPPED = 3
    PAUSED = 4
    PAUSING = 5
    #: Delete has begun, so a second Delete that overlaps it finds nothing to delete.
    DELETING = 6
    #: Start has begun (reported as RUNNING: the process may already run).
    STARTING = 7
    #: Resume has begun (reported as PAUSED until the thaw is done).
    RESUMING = 8

    @property
    def wire(self) -> int:
        return int(_WIRE.get(self, self))

    @property
    def finished(self) -> bool:
        return self in (Status.STOPPED, Status.DELETING)


_WIRE = {
    Status.DELETING: Status.STOPPED,
    Status.STARTING: Status.RUNNING,
    Status.RESUMING: Status.PAUSED,
}


class Op(enum.Enum):
    START = "start"
    EXIT = "exit"
    KILL = "kill"
    DELETE = "delete"
    CLOSE_IO = "close-io"
    PAUSE = "pause"
    RESUME = "resume"
    #: The awaited part of START, PAUSE or RESUME worked.
    SETTLE = "settle"
    #: It failed: back to the state before.
    ROLL_BACK = "roll-back"
    EXEC = "exec"
    UPDATE = "update"
    STATS = "stats"


#: Every state in which the container's init process may still run.
LIVE = (
    Status.CREATED,
    Status.STARTING,
    Status.RUNNING,
    Status.PAUSING,
    Status.PAUSED,
    Status.RESUMING,
)

# (state, op) -> state after op.  Anything missing is refused.
TRANSITIONS: dict[tuple[Status, Op], Status] = {
    **{(s, op): s for s in LIVE for op in (Op.KILL, Op.CLOSE_IO, Op.EXEC, Op.UPDATE, Op.STATS)},
    **{(s, Op.EXIT): Status.STOPPED for s in LIVE},
    (Status.CREATED, Op.START): Status.STARTING,
    (Status.STARTING, Op.SETTLE): Status.RUNNING,
    (Status.STARTING, Op.ROLL_BACK): Status.CREATED,
    (Status.RUNNING, Op.PAUSE): Status.PAUSING,
    (Status.PAUSING, Op.SETTLE): Status.PAUSED,
    (Status.PAUSING, Op.ROLL_BACK): Status.RUNNING,
    (Status.PAUSED, Op.RESUME): Status.RESUMING,
    (Status.RESUMING, Op.SETTLE): Status.RUNNING,
    (Status.RESUMING, Op.ROLL_BACK): Status.PAUSED,
    (Status.CREATED, Op.DELETE): Status.DELETING,
    (Status.STOPPED, Op.DELETE): Status.DELETING,
    (Status.STOPPED, Op.CLOSE_IO): Status.STOPPED,
    (Status.STOPPED, Op.SETTLE): Status.STOPPED,
    (Status.STOPPED, Op.ROLL_BACK): Status.STOPPED,
    (Status.DELETING, Op.EXIT): Status.DELETING,
    (Status.DELETING, Op.SETTLE): Status.DELETING,
    (Status.DELETING, Op.ROLL_BACK): Status.DELETING,
}

#: Refused in a stopped container with these words (docs/troubleshooting.md quotes them).
_STOPPED = {Op.EXEC: "cannot exec in it", Op.UPDATE: "nothing to update"}


def next_state(current: Status, op: Op, what: str) -> Status:
    """The state after ``op``, or the error containerd's clients expect."""
    try:
        return TRANSITIONS[(current, op)]
    except KeyError:
        if op in (Op.KILL, Op.STATS) and current.finished:
            raise NotFound(f"{what}: process already finished") from None
        if current is Status.DELETING:
            raise NotFound(f"{what}: already being deleted") from None
        if op in _STOPPED and current is Status.STOPPED:
            raise FailedPrecondition(f"container {what!r} has stopped: {_STOPPED[op]}") from None
        raise FailedPrecondition(
            f"{what}: cannot {op.value} a {current.name.lower()} container"
        ) from None
