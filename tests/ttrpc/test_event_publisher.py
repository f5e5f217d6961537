"""TtrpcEventPublisher against a fake containerd events service built on our ttrpc Server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from pywasmd.api.containerd.events import task_pb2
from pywasmd.api.containerd.services.events.ttrpc.v1 import events_pb2
from pywasmd.shim.events import EventPublisher, TtrpcEventPublisher
from pywasmd.testing import RecordingPublisher
from pywasmd.ttrpc import Code, Metadata, RpcError
from pywasmd.ttrpc.server import Handler

T = TypeVar("T")
EVENTS = "containerd.services.events.ttrpc.v1.Events"


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class FakeEvents:
    """Records Forward calls; ``fail`` lets a test refuse the next calls with a given code."""

    def __init__(self) -> None:
        self.received: list[tuple[Metadata, events_pb2.Envelope]] = []
        self.attempts = 0
        self.fail: list[int] = []

    async def forward(self, payload: bytes, md: Metadata) -> bytes:
        self.attempts += 1
        if self.fail:
            raise RpcError(self.fail.pop(0), "refused")
        self.received.append((md, events_pb2.ForwardRequest.FromString(payload).envelope))
        return b""

    def services(self) -> dict[str, dict[str, Handler]]:
        return {EVENTS: {"Forward": self.forward}}

    @property
    def topics(self) -> list[str]:
        return [env.topic for _, env in self.received]


def publisher(path: str, **kw: Any) -> TtrpcEventPublisher:
    kw.setdefault("initial_backoff", 0.02)
    kw.setdefault("max_backoff", 0.1)
    return TtrpcEventPublisher(path, "k8s.io", **kw)


def events(n: int) -> list[task_pb2.TaskStart]:
    return [task_pb2.TaskStart(container_id=f"c{i}", pid=100 + i) for i in range(n)]


def test_envelopes_keep_order_and_carry_what_containerd_checks(
    serving: Any, sock_path: str
) -> None:
    fake = FakeEvents()

    async def main() -> None:
        async with serving(fake.services()):
            pub = publisher(sock_path)
            pub.start()
            for ev in events(30):
                pub.publish("/tasks/start", ev)
            pub.publish("/tasks/exit", task_pb2.TaskExit(container_id="c0", id="c0", exit_status=3))
            await pub.close(timeout=10)

    run(main())
    assert len(fake.received) == 31
    assert [env.event.type_url for _, env in fake.received[:30]] == [
        "containerd.events.TaskStart"
    ] * 30
    assert [
        task_pb2.TaskStart.FromString(env.event.value).pid for _, env in fake.received[:30]
    ] == list(range(100, 130))
    md, last = fake.received[-1]
    assert last.topic == "/tasks/exit"
    assert last.event.type_url == "containerd.events.TaskExit"
    assert task_pb2.TaskExit.FromString(last.event.value).exit_status == 3
    for md, env in fake.received:
        assert md["containerd-namespace-ttrpc"] == ["k8s.io"]
        assert env.namespace == "k8s.io"
        assert env.timestamp.seconds > 0
    stamps = [env.timestamp.ToNanoseconds() for _, env in fake.received]
    assert stamps == sorted(stamps)


def test_retries_until_the_server_appears(serving: Any, sock_path: str) -> None:
    fake = FakeEvents()

    async def main() -> None:
        pub = publisher(sock_path)
        pub.start()
        for ev in events(3):
            pub.publish("/tasks/start", ev)
        await asyncio.sleep(0.2)  # several failed connects
        async with serving(fake.services()):
            await pub.close(timeout=10)

    run(main())
    assert [
        task_pb2.TaskStart.FromString(env.event.value).container_id for _, env in fake.received
    ] == [
        "c0",
        "c1",
        "c2",
    ]


def test_failed_event_is_retried_before_later_ones(serving: Any, sock_path: str) -> None:
    fake = FakeEvents()
    fake.fail = [Code.UNAVAILABLE, Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED]

    async def main() -> None:
        async with serving(fake.services()):
            pub = publisher(sock_path)
            pub.start()
            pub.publish("/tasks/create", task_pb2.TaskCreate(container_id="c"))
            pub.publish("/tasks/start", task_pb2.TaskStart(container_id="c"))
            pub.publish("/tasks/exit", task_pb2.TaskExit(container_id="c"))
            await pub.close(timeout=10)

    run(main())
    assert fake.topics == ["/tasks/create", "/tasks/start", "/tasks/exit"]
    assert fake.attempts == 6


def test_gives_up_on_one_event_after_max_attempts(
    serving: Any, sock_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeEvents()
    fake.fail = [Code.UNAVAILABLE] * 3

    async def main() -> None:
        async with serving(fake.services()):
            pub = publisher(sock_path, max_attempts=3)
            pub.start()
            pub.publish("/tasks/oom", task_pb2.TaskOOM(container_id="c"))
            pub.publish("/tasks/exit", task_pb2.TaskExit(container_id="c"))
            await pub.close(timeout=10)

    run(main())
    assert fake.topics == ["/tasks/exit"]
    assert any("dropped after 3 attempts" in r.getMessage() for r in caplog.records)


def test_invalid_argument_is_not_retried(serving: Any, sock_path: str) -> None:
    fake = FakeEvents()
    fake.fail = [Code.INVALID_ARGUMENT]

    async def main() -> None:
        async with serving(fake.services()):
            pub = publisher(sock_path)
            pub.start()
            pub.publish("bad-topic", task_pb2.TaskOOM(container_id="c"))
            pub.publish("/tasks/oom", task_pb2.TaskOOM(container_id="c"))
            await pub.close(timeout=10)

    run(main())
    assert fake.topics == ["/tasks/oom"]
    assert fake.attempts == 2


def test_publish_from_another_thread(serving: Any, sock_path: str) -> None:
    fake = FakeEvents()

    async def main() -> None:
        async with serving(fake.services()):
            pub = publisher(sock_path)
            pub.start()
            thread = threading.Thread(
                target=pub.publish, args=("/tasks/exit", task_pb2.TaskExit(container_id="t"))
            )
            thread.start()
            await asyncio.to_thread(thread.join)
            await pub.close(timeout=10)

    run(main())
    assert fake.topics == ["/tasks/exit"]


def test_close_gives_up_within_its_timeout(serving: Any, sock_path: str) -> None:
    async def main() -> float:
        pub = publisher(sock_path, initial_backoff=1.0)
        pub.start()
        pub.publish("/tasks/start", task_pb2.TaskStart(container_id="c"))
        loop = asyncio.get_running_loop()
        began = loop.time()
        await pub.close(timeout=0.3)
        pub.publish("/tasks/exit", task_pb2.TaskExit(container_id="c"))  # dropped, no raise
        return loop.time() - began

    assert run(main()) < 2


def test_close_without_start_sends_nothing_and_does_not_wait(serving: Any, sock_path: str) -> None:
    fake = FakeEvents()

    async def main() -> float:
        async with serving(fake.services()):
            pub = publisher(sock_path)
            pub.publish("/tasks/start", task_pb2.TaskStart())
            loop = asyncio.get_running_loop()
            began = loop.time()
            await pub.close(timeout=5)
            return loop.time() - began

    assert run(main()) < 1
    assert fake.attempts == 0


def test_event_is_serialized_when_published(serving: Any, sock_path: str) -> None:
    fake = FakeEvents()

    async def main() -> None:
        async with serving(fake.services()):
            pub = publisher(sock_path)
            ev = task_pb2.TaskStart(container_id="before")
            pub.publish("/tasks/start", ev)
            ev.container_id = "after"
            pub.start()
            await pub.close(timeout=10)

    run(main())
    [(_, env)] = fake.received
    assert task_pb2.TaskStart.FromString(env.event.value).container_id == "before"


def test_recording_publisher_is_an_event_publisher() -> None:
    rec = RecordingPublisher()
    sink: EventPublisher = rec
    ev = task_pb2.TaskExit(container_id="c", exit_status=1)
    sink.publish("/tasks/exit", ev)
    ev.exit_status = 2
    assert rec.topics == ["/tasks/exit"]
    assert rec.events == [("/tasks/exit", task_pb2.TaskExit(container_id="c", exit_status=1))]


def test_no_address_drops_events_at_once() -> None:
    async def main() -> tuple[list[str], float]:
        pub = TtrpcEventPublisher("", "default")
        pub.start()
        tasks = [task.get_name() for task in asyncio.all_tasks()]
        pub.publish("/tasks/start", task_pb2.TaskStart())
        loop = asyncio.get_running_loop()
        began = loop.time()
        await pub.close(timeout=5)
        return tasks, loop.time() - began

    tasks, closing = run(main())
    # No forwarder to retry for a minute, and close does not wait out its timeout.
    assert "event-forwarder" not in tasks
    assert closing < 1
