"""An asyncio ttrpc client for unary calls: how the shim publishes events to containerd.

containerd's ttrpc ≥ 1.2 server rejects a stream id that is even or not larger than the last
one on the connection, so ids are 1, 3, 5, … and are taken under the write lock: the order
they reach the wire is the order they were handed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from google.protobuf.message import DecodeError

from pywasmd.api.ttrpc import request_pb2
from pywasmd.ttrpc.frame import (
    MAX_STREAM_ID,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    Frame,
    FrameDecoder,
    FrameTooLarge,
    OversizedFrame,
    encode_frame,
)
from pywasmd.ttrpc.status import Code, RpcError

__all__ = ["Client"]

log = logging.getLogger("pywasmd.ttrpc")

_READ_SIZE = 64 * 1024


class Client:
    """One ttrpc connection carrying any number of concurrent unary calls."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._write_lock = asyncio.Lock()
        self._next_stream_id = 1
        self._pending: dict[int, asyncio.Future[request_pb2.Response]] = {}
        self._closed = False
        self._close_reason = "connection closed"
        self._read_task = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(cls, path: str) -> Client:
        """Connect to the unix socket at ``path`` (a ``unix://`` prefix is tolerated)."""
        path = path.removeprefix("unix://")
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(reader, writer)

    @property
    def closed(self) -> bool:
        return self._closed

    async def call(
        self,
        service: str,
        method: str,
        payload: bytes,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> bytes:
        """Send one request and return the response payload.

        Raises RpcError for a non-OK status (DeadlineExceeded when ``timeout`` passes first)
        and ConnectionError when the connection is or becomes unusable.
        """
        request = request_pb2.Request(service=service, method=method, payload=payload)
        if timeout is not None:
            # The server enforces the same deadline, so a handler stops working on our behalf.
            request.timeout_nano = max(1, int(timeout * 1e9))
        for key, value in (metadata or {}).items():
            request.metadata.add(key=key, value=value)
        data = request.SerializeToString()

        future: asyncio.Future[request_pb2.Response] = asyncio.get_running_loop().create_future()
        stream_id = await self._send(data, future)
        try:
            if timeout is None:
                response = await future
            else:
                try:
                    response = await asyncio.wait_for(future, timeout)
                except asyncio.TimeoutError:
                    raise RpcError(Code.DEADLINE_EXCEEDED, "context deadline exceeded") from None
        finally:
            self._pending.pop(stream_id, None)
        if response.HasField("status") and response.status.code != Code.OK:
            raise RpcError(response.status.code, response.status.message)
        return response.payload

    async def close(self) -> None:
        """Close the connection; calls still waiting fail with ConnectionError."""
        self._shut("client closed")
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
        if self._read_task is not asyncio.current_task():
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._read_task

    async def _send(self, data: bytes, future: asyncio.Future[request_pb2.Response]) -> int:
        async with self._write_lock:
            if self._closed:
                raise ConnectionError(self._close_reason)
            stream_id = self._next_stream_id
            if stream_id > MAX_STREAM_ID:
                self._shut("stream ids exhausted")
                self._writer.close()
                raise ConnectionError(self._close_reason)
            try:
                frame = encode_frame(Frame(stream_id, TYPE_REQUEST, 0, data))
            except FrameTooLarge as exc:
                raise RpcError(Code.RESOURCE_EXHAUSTED, str(exc)) from exc
            self._next_stream_id += 2
            self._pending[stream_id] = future
            self._writer.write(frame)
            try:
                await self._writer.drain()
            except (ConnectionError, OSError) as exc:
                self._pending.pop(stream_id, None)
                self._shut(f"connection lost: {exc}")
                raise ConnectionError(self._close_reason) from exc
        return stream_id

    async def _read_loop(self) -> None:
        decoder = FrameDecoder()
        reason = "connection closed by peer"
        try:
            while True:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    break
                for item in decoder.feed(data):
                    self._on_frame(item)
        except (ConnectionError, OSError) as exc:
            reason = f"connection lost: {exc}"
        finally:
            self._shut(reason)
            self._writer.close()

    def _on_frame(self, item: Frame | OversizedFrame) -> None:
        future = self._pending.get(item.stream_id)
        if future is None or future.done():
            log.debug("ttrpc client: frame for unknown stream %d", item.stream_id)
            return
        if isinstance(item, OversizedFrame):
            future.set_exception(
                RpcError(Code.RESOURCE_EXHAUSTED, f"response length {item.length} too large")
            )
            return
        if item.type != TYPE_RESPONSE:
            log.debug("ttrpc client: ignoring frame type %d", item.type)
            return
        response = request_pb2.Response()
        try:
            response.ParseFromString(item.data)
        except DecodeError as exc:
            future.set_exception(RpcError(Code.INTERNAL, f"unmarshal response error: {exc}"))
            return
        future.set_result(response)

    def _shut(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionError(reason))
