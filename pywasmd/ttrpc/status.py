"""Status codes carried in ttrpc responses and the exception that carries them."""

from __future__ import annotations

# One table of code names for the whole package: the error classes carry them too.
from pywasmd.errors import Code

__all__ = ["Code", "RpcError"]


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
