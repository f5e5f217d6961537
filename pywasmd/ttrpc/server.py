"""An asyncio ttrpc server for unary calls: what containerd uses to talk to a shim.

Behaviour follows Go ttrpc's server (services.go, server.go) where containerd can observe it:
status codes and messages for unknown services/methods, bad requests and oversized frames,
odd and increasing stream ids, deadlines from ``timeout_nano``, and concurrent dispatch with
frame writes serialized per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from google.protobuf.message import DecodeError

from pywasmd.api.ttrpc import request_pb2
from pywasmd.ttrpc.frame import (
    MAX_DATA,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    Frame,
    FrameDecoder,
    OversizedFrame,
    encode_frame,
)
from pywasmd.ttrpc.status import Code, RpcError

__all__ = ["Handler", "Metadata", "Server", "metadata_from_request"]

log = logging.getLogger("pywasmd.ttrpc")

Metadata = dict[str, list[str]]
Handler = Callable[[bytes, Metadata], Awaitable[bytes]]

_READ_SIZE = 64 * 1024


def metadata_from_request(request: request_pb2.Request) -> Metadata:
    """Keys lower-cased and repeated keys accumulated, as ttrpc's metadata.go does."""
    md: Metadata = {}
    for kv in request.metadata:
        md.setdefault(kv.key.lower(), []).append(kv.value)
    return md


class Server:
    """Serves ``services[service][method]`` handlers on an already-listening unix socket."""

    def __init__(self, services: Mapping[str, Mapping[str, Handler]]) -> None:
        self._services = services
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        # Calls whose connection is gone; close() still has to cancel them.
        self._orphans: set[asyncio.Task[None]] = set()
        self._closing = False
        self._closed = asyncio.Event()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def serve(self, sock: socket.socket) -> None:
        """Accept connections on ``sock`` until close() has finished.

        The socket is bound and listening before this runs (the shim binds it before it
        detaches, so containerd can connect as soon as ``start`` prints the address).
        """
        if self._closing:
            raise RuntimeError("server is closed")
        server = await asyncio.start_unix_server(self._accept, sock=sock)
        self._server = server
        if self._closing:
            # close() ran while the listener was being set up and could not reach it.
            server.close()
        await self._closed.wait()

    async def close(self) -> None:
        """Stop accepting, drop every connection and cancel the calls still running.

        Do not await this from inside a handler: it cancels that handler too. A Shutdown
        handler should schedule it after its own response has gone out.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        connections = list(self._connections)
        for conn in connections:
            conn.abort()
        orphans = list(self._orphans)
        for task in orphans:
            task.cancel()
        await asyncio.gather(*(conn.finished() for conn in connections))
        await asyncio.gather(*orphans, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self._closed.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.close()
            return
        conn = _Connection(self._services, reader, writer)
        self._connections.add(conn)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)
            for task in conn.calls():
                self._orphans.add(task)
                task.add_done_callback(self._orphans.discard)


class _Connection:
    def __init__(
        self,
        services: Mapping[str, Mapping[str, Handler]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._services = services
        self._reader = reader
        self._writer = writer
        self._write_lock = asyncio.Lock()
        self._calls: set[asyncio.Task[None]] = set()
        self._decoder = FrameDecoder()
        self._last_stream_id = 0
        self._lost = False
        self._done = asyncio.Event()

    async def run(self) -> None:
        try:
            await self._read_loop()
        except (ConnectionError, OSError) as exc:
            log.debug("ttrpc connection failed: %s", exc)
        finally:
            self._lost = True
            # A call still running when the peer left keeps running: cancelling Create or
            # Start half way would leave the task table inconsistent (Go handlers mostly
            # ignore their context too). Only its response is dropped.
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
            self._done.set()

    def abort(self) -> None:
        """Server shutdown: cancel every call in flight and drop the connection.

        The reader is stopped by aborting the transport (it then sees EOF), not by
        cancelling it: on Python 3.11 asyncio logs a cancelled connection callback as an
        error.
        """
        for task in self._calls:
            task.cancel()
        self._lost = True
        self._writer.transport.abort()

    def calls(self) -> list[asyncio.Task[None]]:
        return [task for task in self._calls if not task.done()]

    async def finished(self) -> None:
        await self._done.wait()
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)

    async def _read_loop(self) -> None:
        while True:
            data = await self._reader.read(_READ_SIZE)
            if not data:
                if self._decoder.pending:
                    log.debug("ttrpc peer closed mid-frame (%d bytes)", self._decoder.pending)
                return
            for item in self._decoder.feed(data):
                self._on_frame(item)

    def _on_frame(self, item: Frame | OversizedFrame) -> None:
        if isinstance(item, OversizedFrame):
            self._spawn(
                self._send_status(
                    item.stream_id,
                    Code.RESOURCE_EXHAUSTED,
                    f"message length {item.length} exceed maximum message size of {MAX_DATA}",
                )
            )
            return
        if item.stream_id % 2 != 1:
            self._spawn(
                self._send_status(
                    item.stream_id,
                    Code.INVALID_ARGUMENT,
                    "StreamID must be odd for client initiated streams",
                )
            )
            return
        if item.type != TYPE_REQUEST:
            # Data frames belong to streaming calls, which nothing here serves; Go ignores
            # frames for streams it does not know the same way.
            log.debug("ttrpc: ignoring frame type %d on stream %d", item.type, item.stream_id)
            return
        if item.stream_id <= self._last_stream_id:
            self._spawn(
                self._send_status(
                    item.stream_id,
                    Code.INVALID_ARGUMENT,
                    "StreamID cannot be re-used and must increment",
                )
            )
            return
        self._last_stream_id = item.stream_id
        self._spawn(self._dispatch(item))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _dispatch(self, frame: Frame) -> None:
        try:
            payload = await self._call(frame.data)
        except RpcError as exc:
            await self._send_status(frame.stream_id, exc.code, exc.message)
            return
        response = request_pb2.Response(status=request_pb2.Status(code=Code.OK), payload=payload)
        await self._send(frame.stream_id, response)

    async def _call(self, data: bytes) -> bytes:
        request = request_pb2.Request()
        try:
            request.ParseFromString(data)
        except DecodeError as exc:
            raise RpcError(Code.INVALID_ARGUMENT, f"unmarshal request error: {exc}") from exc
        methods = self._services.get(request.service)
        if methods is None:
            raise RpcError(Code.UNIMPLEMENTED, f"service {request.service}")
        handler = methods.get(request.method)
        if handler is None:
            raise RpcError(Code.UNIMPLEMENTED, f"method {request.method}")
        md = metadata_from_request(request)
        try:
            if request.timeout_nano > 0:
                return await _with_deadline(handler(request.payload, md), request.timeout_nano)
            return await handler(request.payload, md)
        except RpcError:
            raise
        except Exception as exc:
            log.error("ttrpc %s/%s failed", request.service, request.method, exc_info=True)
            raise RpcError(Code.UNKNOWN, str(exc)) from exc

    async def _send_status(self, stream_id: int, code: int, message: str) -> None:
        status = request_pb2.Status(code=code, message=message)
        await self._send(stream_id, request_pb2.Response(status=status))

    async def _send(self, stream_id: int, response: request_pb2.Response) -> None:
        data = response.SerializeToString()
        if len(data) > MAX_DATA:
            status = request_pb2.Status(
                code=Code.RESOURCE_EXHAUSTED,
                message=f"response length {len(data)} exceeds maximum message size of {MAX_DATA}",
            )
            data = request_pb2.Response(status=status).SerializeToString()
        frame = encode_frame(Frame(stream_id, TYPE_RESPONSE, 0, data))
        async with self._write_lock:
            if self._lost or self._writer.is_closing():
                return
            self._writer.write(frame)
            try:
                await self._writer.drain()
            except (ConnectionError, OSError) as exc:
                # The reader sees the same failure and ends the connection.
                log.debug("ttrpc write failed: %s", exc)


async def _with_deadline(call: Awaitable[bytes], timeout_nano: int) -> bytes:
    """Run ``call`` under a deadline, telling a missed deadline apart from a handler's own
    TimeoutError (asyncio.wait_for conflates them)."""
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_nano / 1e9)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        # Retrieve the outcome whenever it comes so asyncio never reports it as lost.
        task.add_done_callback(_discard_result)
        raise RpcError(Code.DEADLINE_EXCEEDED, "context deadline exceeded")
    return task.result()


def _discard_result(task: asyncio.Future[bytes]) -> None:
    if not task.cancelled():
        task.exception()
