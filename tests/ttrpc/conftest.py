"""Shared helpers for the ttrpc tests: a real unix socket server in tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest

from pywasmd.ttrpc.server import Handler, Server

Serving = Callable[
    [Mapping[str, Mapping[str, Handler]]], contextlib.AbstractAsyncContextManager[Server]
]


def listen(path: str) -> socket.socket:
    """Bind and listen first, as the shim does before it forks."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen()
    return sock


@contextlib.asynccontextmanager
async def serve_at(
    path: str, services: Mapping[str, Mapping[str, Handler]]
) -> AsyncIterator[Server]:
    server = Server(services)
    task = asyncio.create_task(server.serve(listen(path)))
    await asyncio.sleep(0)
    try:
        yield server
    finally:
        await server.close()
        await task


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    return str(tmp_path / "ttrpc.sock")


@pytest.fixture
def serving(sock_path: str) -> Serving:
    def start(
        services: Mapping[str, Mapping[str, Handler]],
    ) -> contextlib.AbstractAsyncContextManager[Server]:
        return serve_at(sock_path, services)

    return start
