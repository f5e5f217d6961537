"""The error classes every layer of pywasmd raises, and the status code each one carries.

Code inside the shim raises these by meaning; the transport edge (``pywasmd.shim.server``)
puts ``exc.code`` on the wire, where containerd maps it back to its errdefs classes::

    ShimError                 UNKNOWN
    ├── InvalidArgument       INVALID_ARGUMENT     bad config.json, module, image, flag or field
    ├── NotFound              NOT_FOUND            unknown container/exec, or the process is gone
    ├── AlreadyExists         ALREADY_EXISTS       a second Create with the same id
    ├── FailedPrecondition    FAILED_PRECONDITION  a lifecycle move the state table forbids
    ├── Unimplemented         UNIMPLEMENTED        an RPC or feature pywasmd does not offer
    ├── Unavailable           UNAVAILABLE          an engine or host facility missing on this node
    └── Internal              INTERNAL             a bug, or a host failure (mount, runc, cgroup,
                                                   a worker that died): says what failed

Only ``InvalidArgument`` tells the user that *their input* is wrong; a failure of the host
is ``Internal`` or ``Unavailable`` even when the user's request was what triggered it.
Messages are read by people (ctr and docker print them): say what is wrong and how to fix it.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """gRPC status code numbers: ttrpc reuses them, and containerd maps them to errdefs."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class ShimError(Exception):
    """Base of every error pywasmd raises on purpose."""

    code = Code.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ShimError):
    code = Code.INVALID_ARGUMENT


class NotFound(ShimError):
    code = Code.NOT_FOUND


class AlreadyExists(ShimError):
    code = Code.ALREADY_EXISTS


class FailedPrecondition(ShimError):
    code = Code.FAILED_PRECONDITION


class Unimplemented(ShimError):
    code = Code.UNIMPLEMENTED


class Unavailable(ShimError):
    code = Code.UNAVAILABLE


class Internal(ShimError):
    code = Code.INTERNAL
