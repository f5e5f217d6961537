"""The error classes every layer of pywasmd raises.

Code inside the shim raises these by meaning; only the transport edge
(``pywasmd.shim.status``) turns them into wire status codes::

    ShimError
    ├── InvalidArgument      bad config.json, module, image, flag or request field
    ├── NotFound             unknown container/exec, or the process already finished
    ├── AlreadyExists        a second Create with the same id
    ├── FailedPrecondition   a lifecycle move the state table forbids
    ├── Unimplemented        an RPC or feature pywasmd does not offer (yet)
    ├── Unavailable          an engine or host facility that is missing on this node
    └── Internal             a bug or an unexpected host failure

Messages are read by people (ctr and docker print them): say what is wrong and how
to fix it.
"""

from __future__ import annotations


class ShimError(Exception):
    """Base of every error pywasmd raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ShimError):
    pass


class NotFound(ShimError):
    pass


class AlreadyExists(ShimError):
    pass


class FailedPrecondition(ShimError):
    pass


class Unimplemented(ShimError):
    pass


class Unavailable(ShimError):
    pass


class Internal(ShimError):
    pass
