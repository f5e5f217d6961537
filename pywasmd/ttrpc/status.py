"""Status codes carried in ttrpc responses and the exception that carries them."""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """gRPC status code numbers: ttrpc reuses them, and containerd maps them back to errdefs."""

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


class RpcError(Exception):
    """A non-OK status: raised by handlers to answer with it, and by the client on receiving one.

    ``code`` stays a plain int because a peer may send a number this enum does not know.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = int(code)
        self.message = message

    def __str__(self) -> str:
        try:
            name = Code(self.code).name
        except ValueError:
            name = f"code {self.code}"
        return f"{name}: {self.message}"
