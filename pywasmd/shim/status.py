"""pywasmd errors -> gRPC status codes (what ttrpc and gRPC put on the wire)."""

from __future__ import annotations

from pywasmd import errors

# Numbers from grpc/codes; containerd maps them back to its errdefs classes.
CODES: dict[type[errors.ShimError], int] = {
    errors.InvalidArgument: 3,
    errors.NotFound: 5,
    errors.AlreadyExists: 6,
    errors.FailedPrecondition: 9,
    errors.Unimplemented: 12,
    errors.Internal: 13,
    errors.Unavailable: 14,
}
UNKNOWN = 2


def code_of(exc: errors.ShimError) -> int:
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]
    return UNKNOWN
