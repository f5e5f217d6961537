"""ttrpc, containerd's lightweight RPC framing, for asyncio (unary calls only)."""

from pywasmd.ttrpc.client import Client
from pywasmd.ttrpc.server import Handler, Metadata, Server
from pywasmd.ttrpc.status import Code, RpcError

__all__ = ["Client", "Code", "Handler", "Metadata", "RpcError", "Server"]
