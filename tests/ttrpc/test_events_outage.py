"""containerd's events socket gone for a while (issue 8, fault 7), at unit level.

A fake containerd events service (our ttrpc Server on a unix socket) goes away and comes back
while the shim's TtrpcEventPublisher runs with its production back-off (0.25 s doubling, at
most 10 s). The real-containerd version of this is
integration/test_faults.py::test_events_queued_while_containerd_is_down.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from pywasmd.api.containerd.events import task_pb2
from pywasmd.api.containerd.services.events.ttrpc.v1 import events_pb2
from pywasmd.shim.events import TtrpcEventPublisher
from pywasmd.ttrpc import Metadata
from pywasmd.ttrpc.server import Handler

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class FakeEvents:
    """containerd's events service: records every Forward."""

    def __init__(self) -> None:
        self.received: list[events_pb2.Envelope] = []
        self._grew = asyncio.Event()

    async def forward(self, payload: bytes, md: Metadata) -> bytes:
        self.received.append(events_pb2.ForwardRequest.FromString(payload).envelope)
        self._grew.set()
        return b""

    async def until(self, count: int, timeout: float) -> None:
        """Wait until `count` events arrived, or `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            self._grew.clear()
            try:
                await asyncio.wait_for(self._grew.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return

    def services(self) -> dict[str, dict[str, Handler]]:
        return {"containerd.services.events.ttrpc.v1.Events": {"Forward": self.forward}}


def _ids(fake: FakeEvents) -> list[str]:
    return [task_pb2.TaskExit.FromString(env.event.value).id for env in fake.received]


def _exit(i: int) -> task_pb2.TaskExit:
    return task_pb2.TaskExit(container_id="c", id=f"e{i}", exit_status=i)


def test_outage_queues_in_order_and_never_blocks_the_loop(serving: Any, sock_path: str) -> None:
    fake = FakeEvents()
    ticks: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        # Stands for the RPC handlers: they share the loop with the publisher.
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main() -> float:
        pub = TtrpcEventPublisher(sock_path, "default")
        pub.start()
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        async with serving(fake.services()):
            for i in range(3):
                pub.publish("/tasks/exit", _exit(i))
            await fake.until(3, 5)
        os.unlink(sock_path)  # containerd is gone: connections fail until it comes back
        t0 = time.monotonic()
        for i in range(3, 103):
            pub.publish("/tasks/exit", _exit(i))
        publish_seconds = time.monotonic() - t0
        await asyncio.sleep(2.5)
        async with serving(fake.services()):
            await fake.until(103, 15)
            await pub.close(5)
        stop.set()
        await tick
        return publish_seconds

    publish_seconds = run(main(), timeout=40)
    assert publish_seconds < 0.5, f"publishing 100 events took {publish_seconds:.2f}s"
    assert _ids(fake) == [f"e{i}" for i in range(103)], "events lost, repeated or reordered"
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert max(gaps) < 0.5, f"the loop was blocked for {max(gaps):.2f}s"


def test_events_queued_in_an_outage_reach_containerd_within_the_shutdown_drain(
    serving: Any, sock_path: str
) -> None:
    """containerd 2.x, on restart, cleans up stopped containers at once (Pids is empty: the
    "leaked shim" path), so the shim gets Shutdown moments after containerd is back and
    serve.py then gives its queue _EVENT_DRAIN = 2 s. Events queued during the outage must go
    out in that window while containerd listens, not wait out a back-off sleep that ends later
    (after ~4 s down, the next attempt is due at 7.75 s)."""
    fake = FakeEvents()

    async def main() -> None:
        pub = TtrpcEventPublisher(sock_path, "default")
        pub.start()
        pub.publish("/tasks/exit", _exit(1))
        pub.publish("/tasks/exit", _exit(2))
        await asyncio.sleep(4.0)  # containerd is down (no socket yet)
        async with serving(fake.services()):
            await pub.close(2.0)  # Shutdown right after containerd came back

    run(main(), timeout=30)
    assert _ids(fake) == ["e1", "e2"], (
        "events queued during the outage were dropped although containerd listened during the "
        "whole 2 s drain"
    )
