"""The server and client against each other (and against raw frames) on a real unix socket."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from pywasmd.api.ttrpc import request_pb2
from pywasmd.ttrpc import Client, Code, Metadata, RpcError
from pywasmd.ttrpc.frame import (
    MAX_DATA,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    Frame,
    FrameDecoder,
    encode_frame,
)
from pywasmd.ttrpc.server import Handler

T = TypeVar("T")
SVC = "test.v1.Echo"


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class Handlers:
    """A small service whose handlers let a test hold a call open or make it fail."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.finished: list[str] = []
        self.metadata: list[Metadata] = []

    async def echo(self, payload: bytes, md: Metadata) -> bytes:
        self.metadata.append(md)
        return payload

    async def block(self, payload: bytes, md: Metadata) -> bytes:
        self.entered.set()
        await self.release.wait()
        self.finished.append("block")
        return b"released"

    async def sleep(self, payload: bytes, md: Metadata) -> bytes:
        await asyncio.sleep(3600)
        return b""

    async def not_found(self, payload: bytes, md: Metadata) -> bytes:
        raise RpcError(Code.NOT_FOUND, "container x: not found")

    async def boom(self, payload: bytes, md: Metadata) -> bytes:
        raise ValueError("boom")

    async def own_timeout(self, payload: bytes, md: Metadata) -> bytes:
        raise TimeoutError("engine timed out")

    def services(self) -> dict[str, dict[str, Handler]]:
        return {
            SVC: {
                "Echo": self.echo,
                "Block": self.block,
                "Sleep": self.sleep,
                "NotFound": self.not_found,
                "Boom": self.boom,
                "OwnTimeout": self.own_timeout,
            }
        }


async def raw_exchange(path: str, frames: list[Frame], expect: int) -> list[Frame]:
    """Send frames as they are and collect ``expect`` response frames."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(b"".join(encode_frame(f) for f in frames))
        await writer.drain()
        decoder = FrameDecoder()
        got: list[Frame] = []
        while len(got) < expect:
            data = await reader.read(65536)
            assert data, "server closed the connection"
            for item in decoder.feed(data):
                assert isinstance(item, Frame)
                got.append(item)
        return got
    finally:
        writer.close()
        await writer.wait_closed()


def request(method: str, payload: bytes = b"", **kw: Any) -> bytes:
    return request_pb2.Request(
        service=SVC, method=method, payload=payload, **kw
    ).SerializeToString()


def status_of(frame: Frame) -> tuple[int, str]:
    assert frame.type == TYPE_RESPONSE
    assert frame.flags == 0
    response = request_pb2.Response.FromString(frame.data)
    return response.status.code, response.status.message


def test_echo_round_trip(serving: Any, sock_path: str) -> None:
    async def main() -> None:
        h = Handlers()
        async with serving(h.services()) as server:
            client = await Client.connect(sock_path)
            assert await client.call(SVC, "Echo", b"hi") == b"hi"
            assert await client.call(SVC, "Echo", b"") == b""
            assert server.connection_count == 1
            await client.close()
            assert client.closed

    run(main())


def test_success_response_carries_status_ok(serving: Any, sock_path: str) -> None:
    async def main() -> None:
        async with serving(Handlers().services()):
            [frame] = await raw_exchange(
                sock_path, [Frame(1, TYPE_REQUEST, 0, request("Echo", b"x"))], 1
            )
            response = request_pb2.Response.FromString(frame.data)
            assert frame.stream_id == 1
            assert response.HasField("status")
            assert response.status.code == 0
            assert response.payload == b"x"

    run(main())


def test_blocked_call_does_not_block_others_on_the_same_connection(
    serving: Any, sock_path: str
) -> None:
    async def main() -> None:
        h = Handlers()
        async with serving(h.services()):
            client = await Client.connect(sock_path)
            blocked = asyncio.create_task(client.call(SVC, "Block", b""))
            await h.entered.wait()
            results = await asyncio.gather(
                *(client.call(SVC, "Echo", b"%d" % i) for i in range(50))
            )
            assert results == [b"%d" % i for i in range(50)]
            assert not blocked.done()
            h.release.set()
            assert await blocked == b"released"
            await client.close()

    run(main())


@pytest.mark.parametrize(
    ("service", "method", "code", "message"),
    [
        ("no.such.Service", "Echo", Code.UNIMPLEMENTED, "service no.such.Service"),
        (SVC, "Nope", Code.UNIMPLEMENTED, "method Nope"),
        (SVC, "NotFound", Code.NOT_FOUND, "container x: not found"),
        (SVC, "Boom", Code.UNKNOWN, "boom"),
        (SVC, "OwnTimeout", Code.UNKNOWN, "engine timed out"),
    ],
)
def test_error_codes(
    serving: Any, sock_path: str, service: str, method: str, code: int, message: str
) -> None:
    async def main() -> None:
        async with serving(Handlers().services()):
            client = await Client.connect(sock_path)
            with pytest.raises(RpcError) as err:
                await client.call(service, method, b"")
            assert (err.value.code, err.value.message) == (code, message)
            # The connection survives an error status.
            assert await client.call(SVC, "Echo", b"ok") == b"ok"
            await client.close()

    run(main())


def test_unexpected_exception_is_logged(
    serving: Any, sock_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with serving(Handlers().services()):
            client = await Client.connect(sock_path)
            with pytest.raises(RpcError):
                await client.call(SVC, "Boom", b"")
            await client.close()

    with caplog.at_level(logging.ERROR, logger="pywasmd.ttrpc"):
        run(main())
    assert any("Boom" in r.getMessage() and r.exc_info for r in caplog.records)


def test_client_timeout_is_deadline_exceeded(serving: Any, sock_path: str) -> None:
    async def main() -> None:
        async with serving(Handlers().services()):
            client = await Client.connect(sock_path)
            with pytest.raises(RpcError) as err:
                await client.call(SVC, "Sleep", b"", timeout=0.2)
            assert err.value.code == Code.DEADLINE_EXCEEDED
            await client.close()

    run(main())


def test_server_enforces_timeout_nano(serving: Any, sock_path: str) -> None:
    async def main() -> None:
        async with serving(Handlers().services()):
            req = request("Sleep", timeout_nano=100_000_000)
            [frame] = await raw_exchange(sock_path, [Frame(1, TYPE_REQUEST, 0, req)], 1)
            assert status_of(frame)[0] == Code.DEADLINE_EXCEEDED

    run(main())


def test_metadata_keys_are_lowercased_and_accumulate(serving: Any, sock_path: str) -> None:
    async def main() -> None:
        h = Handlers()
        async with serving(h.services()):
            md = [
                request_pb2.KeyValue(key="Containerd-Namespace-TTRPC", value="k8s.io"),
                request_pb2.KeyValue(key="x-trace", value="a"),
                request_pb2.KeyValue(key="X-Trace", value="b"),
            ]
            req = request("Echo", metadata=md)
            await raw_exchange(sock_path, [Frame(1, TYPE_REQUEST, 0, req)], 1)
            assert h.metadata == [{"containerd-namespace-ttrpc": ["k8s.io"], "x-trace": ["a", "b"]}]

    run(main())


def test_protocol_violations(serving: Any, sock_path: str) -> None:
    async def main() -> None:
        async with serving(Handlers().services()):
            frames = [
                Frame(2, TYPE_REQUEST, 0, request("Echo")),  # even id
                Frame(1, TYPE_REQUEST, 0, b"\xff\xff\xff"),  # not a Request
                Frame(1, TYPE_REQUEST, 0, request("Echo")),  # re-used id
                Frame(5, TYPE_REQUEST, 0, request("Echo", b"fine")),
            ]
            by_id: dict[int, list[tuple[int, str]]] = {}
            for frame in await raw_exchange(sock_path, frames, 4):
                by_id.setdefault(frame.stream_id, []).append(status_of(frame))
            assert by_id[2] == [
                (Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams")
            ]
            # Stream 1 answers twice: once for the bad payload, once for the re-use.
            codes, messages = zip(*sorted(by_id[1], key=lambda s: s[1]), strict=True)
            assert codes == (Code.INVALID_ARGUMENT, Code.INVALID_ARGUMENT)
            assert messages[0] == "StreamID cannot be re-used and must increment"
            assert messages[1].startswith("unmarshal request error: ")
            assert by_id[5] == [(Code.OK, "")]

    run(main())


def test_oversized_frame_answers_resource_exhausted_and_keeps_the_connection(
    serving: Any, sock_path: str
) -> None:
    async def main() -> None:
        async with serving(Handlers().services()):
            reader, writer = await asyncio.open_unix_connection(sock_path)
            length = MAX_DATA + 1
            writer.write(length.to_bytes(4, "big") + (3).to_bytes(4, "big") + b"\x01\x00")
            writer.write(b"\x00" * length)
            writer.write(encode_frame(Frame(5, TYPE_REQUEST, 0, request("Echo", b"after"))))
            await writer.drain()
            decoder = FrameDecoder()
            got: list[Frame] = []
            while len(got) < 2:
                for item in decoder.feed(await reader.read(65536)):
                    assert isinstance(item, Frame)
                    got.append(item)
            by_id = {f.stream_id: f for f in got}
            assert status_of(by_id[3])[0] == Code.RESOURCE_EXHAUSTED
            assert request_pb2.Response.FromString(by_id[5].data).payload == b"after"
            writer.close()
            await writer.wait_closed()

    run(main())


def test_client_disconnect_mid_call_leaves_the_server_serving(serving: Any, sock_path: str) -> None:
    async def main() -> None:
        h = Handlers()
        async with serving(h.services()) as server:
            client = await Client.connect(sock_path)
            pending = asyncio.create_task(client.call(SVC, "Block", b""))
            await h.entered.wait()
            await client.close()
            with pytest.raises(ConnectionError):
                await pending
            for _ in range(100):
                if server.connection_count == 0:
                    break
                await asyncio.sleep(0.01)
            assert server.connection_count == 0
            # The orphaned handler still runs to completion; its response goes nowhere.
            h.release.set()
            for _ in range(100):
                if h.finished:
                    break
                await asyncio.sleep(0.01)
            assert h.finished == ["block"]
            other = await Client.connect(sock_path)
            assert await other.call(SVC, "Echo", b"still here") == b"still here"
            await other.close()

    run(main())


def test_server_close_cancels_calls_whose_client_left(serving: Any, sock_path: str) -> None:
    async def main() -> None:
        h = Handlers()
        cancelled = asyncio.Event()

        async def wait_forever(payload: bytes, md: Metadata) -> bytes:
            h.entered.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return b""

        services = {SVC: {"Wait": wait_forever}}
        async with serving(services) as server:
            client = await Client.connect(sock_path)
            pending = asyncio.create_task(client.call(SVC, "Wait", b""))
            await h.entered.wait()
            await client.close()
            with pytest.raises(ConnectionError):
                await pending
            await server.close()
            assert cancelled.is_set()

    run(main())


def test_server_close_fails_pending_calls_with_connection_error(
    serving: Any, sock_path: str
) -> None:
    async def main() -> None:
        h = Handlers()
        async with serving(h.services()) as server:
            client = await Client.connect(sock_path)
            pending = asyncio.create_task(client.call(SVC, "Block", b""))
            await h.entered.wait()
            await server.close()
            with pytest.raises(ConnectionError):
                await pending
            assert client.closed
            with pytest.raises(ConnectionError):
                await client.call(SVC, "Echo", b"")
            await client.close()

    run(main())


def test_many_connections(serving: Any, sock_path: str) -> None:
    async def main() -> None:
        async with serving(Handlers().services()) as server:
            clients = [await Client.connect(sock_path) for _ in range(10)]
            assert (
                await asyncio.gather(*(c.call(SVC, "Echo", b"x") for c in clients)) == [b"x"] * 10
            )
            assert server.connection_count == 10
            for c in clients:
                await c.close()

    run(main())


def test_client_stream_ids_are_odd_and_increasing(sock_path: str) -> None:
    seen: list[int] = []

    async def fake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for item in decoder.feed(data):
                assert isinstance(item, Frame)
                seen.append(item.stream_id)
                req = request_pb2.Request.FromString(item.data)
                assert dict((kv.key, kv.value) for kv in req.metadata) == {"k": "v"}
                assert req.timeout_nano == 2_000_000_000
                resp = request_pb2.Response(payload=req.payload)
                writer.write(
                    encode_frame(Frame(item.stream_id, TYPE_RESPONSE, 0, resp.SerializeToString()))
                )
        writer.close()

    async def main() -> None:
        server = await asyncio.start_unix_server(fake, path=sock_path)
        client = await Client.connect("unix://" + sock_path)
        out = await asyncio.gather(
            *(
                client.call(SVC, "Echo", b"%d" % i, timeout=2, metadata={"k": "v"})
                for i in range(20)
            )
        )
        assert out == [b"%d" % i for i in range(20)]
        await client.close()
        server.close()
        await server.wait_closed()

    run(main())
    assert seen == list(range(1, 40, 2))


def test_client_oversized_request_is_resource_exhausted(serving: Any, sock_path: str) -> None:
    async def main() -> None:
        async with serving(Handlers().services()):
            client = await Client.connect(sock_path)
            with pytest.raises(RpcError) as err:
                await client.call(SVC, "Echo", b"x" * MAX_DATA)
            assert err.value.code == Code.RESOURCE_EXHAUSTED
            assert await client.call(SVC, "Echo", b"ok") == b"ok"
            await client.close()

    run(main())


def test_connect_to_missing_socket_raises_oserror(sock_path: str) -> None:
    with pytest.raises(FileNotFoundError):
        run(Client.connect(sock_path))
