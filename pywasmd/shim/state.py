"""A container's lifecycle as data: which operation may run in which state."""

from __future__ import annotations

import enum

from pywasmd.errors import FailedPrecondition, NotFound


class Status(enum.IntEnum):
    """Numbers as in containerd.v1.types.Status."""

    UNKNOWN = 0
    CREATED = 1
    RUNNING = 2
    STOPPED = 3
    PAUSED = 4
    PAUSING = 5
    #: Ours, never on the wire (reported as STOPPED): Delete has begun, so a second Delete
    #: that overlaps it (ttrpc dispatches concurrently) finds nothing to delete.
    DELETING = 6

    @property
    def wire(self) -> int:
        return int(Status.STOPPED if self is Status.DELETING else self)

    @property
    def finished(self) -> bool:
        return self in (Status.STOPPED, Status.DELETING)


class Op(enum.Enum):
    START = "start"
    EXIT = "exit"
    KILL = "kill"
    DELETE = "delete"
    CLOSE_IO = "close-io"
    PAUSE = "pause"
    RESUME = "resume"


# (state, op) -> state after op.  Anything missing is refused.
TRANSITIONS: dict[tuple[Status, Op], Status] = {
    (Status.CREATED, Op.START): Status.RUNNING,
    (Status.CREATED, Op.EXIT): Status.STOPPED,
    (Status.RUNNING, Op.EXIT): Status.STOPPED,
    (Status.PAUSED, Op.EXIT): Status.STOPPED,
    (Status.CREATED, Op.KILL): Status.CREATED,
    (Status.RUNNING, Op.KILL): Status.RUNNING,
    (Status.PAUSED, Op.KILL): Status.PAUSED,
    (Status.CREATED, Op.DELETE): Status.DELETING,
    (Status.STOPPED, Op.DELETE): Status.DELETING,
    (Status.DELETING, Op.EXIT): Status.DELETING,
    (Status.CREATED, Op.CLOSE_IO): Status.CREATED,
    (Status.RUNNING, Op.CLOSE_IO): Status.RUNNING,
    (Status.PAUSED, Op.CLOSE_IO): Status.PAUSED,
    (Status.STOPPED, Op.CLOSE_IO): Status.STOPPED,
    (Status.RUNNING, Op.PAUSE): Status.PAUSED,
    (Status.PAUSED, Op.RESUME): Status.RUNNING,
}


def next_state(current: Status, op: Op, what: str) -> Status:
    """The state after ``op``, or the error containerd's clients expect."""
    try:
        return TRANSITIONS[(current, op)]
    except KeyError:
        if op is Op.KILL and current.finished:
            raise NotFound(f"{what}: process already finished") from None
        if current is Status.DELETING:
            raise NotFound(f"{what}: already being deleted") from None
        raise FailedPrecondition(
            f"{what}: cannot {op.value} a {current.name.lower()} container"
        ) from None
