"""Publishing task events to containerd over ttrpc (``Events/Forward`` on TTRPC_ADDRESS).

Events leave through one FIFO queue and one forwarder task, like the runc shim's, because
clients depend on order (a process's TaskStart before its TaskExit, exec exits before the
init's) and because RPC handlers must never wait on containerd to publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import Message

from pywasmd.api.containerd.services.events.ttrpc.v1 import events_pb2
from pywasmd.ttrpc.client import Client
from pywasmd.ttrpc.status import Code, RpcError

__all__ = ["EventPublisher", "TtrpcEventPublisher", "envelope_for"]

log = logging.getLogger("pywasmd.shim.events")

EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events"
NAMESPACE_HEADER = "containerd-namespace-ttrpc"


class EventPublisher(Protocol):
    def publish(self, topic: str, event: Message) -> None:
        """Queue ``event`` under ``topic``; returns at once and never raises."""
        ...


def envelope_for(namespace: str, topic: str, event: Message) -> events_pb2.Envelope:
    """The Envelope containerd expects: stamped now (it rejects a zero timestamp) and with the
    event's full proto name as type URL (1.6 looks URLs up verbatim, so no googleapis prefix)."""
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromNanoseconds(time.time_ns())
    return events_pb2.Envelope(
        timestamp=timestamp,
        namespace=namespace,
        topic=topic,
        event=any_pb2.Any(type_url=event.DESCRIPTOR.full_name, value=event.SerializeToString()),
    )


@dataclass
class _Item:
    topic: str
    request: bytes


#: Retry interval while closing: containerd (2.x) may shut a shim down before its own
#: events socket serves again after a restart, and those exits must still get through.
_CLOSING_RETRY = 0.2


class TtrpcEventPublisher:
    """Forwards events to containerd's ttrpc socket ``address`` (a plain path) in order.

    A failed Forward is retried, reconnecting in between, with exponential back-off; the
    events behind it wait, so order holds. One event is given up after ``max_attempts``
    (about a minute with the defaults), so a containerd that is gone for good cannot stall
    the queue forever.
    """

    def __init__(
        self,
        address: str,
        namespace: str,
        *,
        call_timeout: float = 5.0,
        max_attempts: int = 10,
        initial_backoff: float = 0.25,
        max_backoff: float = 10.0,
    ) -> None:
        self._address = address
        self._namespace = namespace
        self._call_timeout = call_timeout
        self._max_attempts = max_attempts
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._client: Client | None = None
        self._forwarder: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._closing = False
        # Set by close(): retries stop backing off, so the drain window is used to the full.
        self._hurry = asyncio.Event()

    def start(self) -> None:
        """Start the forwarder; call from inside the running loop that will own it."""
        if self._forwarder is not None:
            raise RuntimeError("publisher already started")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if not self._address:
            # No TTRPC_ADDRESS (a shim run by hand): nobody to tell, and retrying every event
            # for a minute would only delay shutdown.
            log.warning("no containerd ttrpc address: task events will be dropped")
            self._closing = True
            return
        self._forwarder = asyncio.create_task(self._forward(), name="event-forwarder")

    def publish(self, topic: str, event: Message) -> None:
        try:
            if self._closing:
                log.debug("event %s dropped: publisher is closed or has no address", topic)
                return
            # Serialized now, so the caller may reuse or change the message afterwards and
            # the timestamp is when the event happened, not when it got through.
            request = events_pb2.ForwardRequest(
                envelope=envelope_for(self._namespace, topic, event)
            ).SerializeToString()
            item = _Item(topic, request)
            if self._loop is not None and threading.get_ident() != self._loop_thread:
                # asyncio.Queue is not thread-safe; a process reaper thread may publish exits.
                self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
            else:
                self._queue.put_nowait(item)
        except Exception:
            log.exception("event %s dropped: could not queue it", topic)

    async def close(self, timeout: float) -> None:
        """Send what is queued within ``timeout`` seconds, then stop; the rest is dropped."""
        self._closing = True
        self._hurry.set()
        if self._forwarder is not None:
            try:
                await asyncio.wait_for(self._queue.join(), timeout)
            except asyncio.TimeoutError:
                log.warning("event publisher closed with %d event(s) unsent", self._queue.qsize())
            self._forwarder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._forwarder
        await self._disconnect()

    async def _forward(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._deliver(item)
            finally:
                self._queue.task_done()

    async def _deliver(self, item: _Item) -> None:
        delay = self._initial_backoff
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._send(item)
                return
            except RpcError as exc:
                if exc.code == Code.INVALID_ARGUMENT:
                    # containerd validated the envelope and refused it: the same bytes will
                    # be refused again, and retrying would only hold up the events behind.
                    log.error("event %s rejected by containerd: %s", item.topic, exc)
                    return
                error: Exception = exc
                if exc.code == Code.DEADLINE_EXCEEDED:
                    await self._disconnect()
            except (ConnectionError, OSError) as exc:
                error = exc
                await self._disconnect()
                if self._hurry.is_set():
                    # containerd is not serving (yet): the drain window bounds these retries.
                    attempt -= 1
            if attempt >= self._max_attempts:
                log.error("event %s dropped after %d attempts: %s", item.topic, attempt, error)
                return
            log.warning(
                "event %s: forward attempt %d failed (%s); retrying in %.2fs",
                item.topic,
                attempt,
                error,
                delay,
            )
            if self._hurry.is_set():
                await asyncio.sleep(_CLOSING_RETRY)
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), delay)
            delay = min(delay * 2, self._max_backoff)

    async def _send(self, item: _Item) -> None:
        if self._client is None or self._client.closed:
            self._client = await asyncio.wait_for(Client.connect(self._address), self._call_timeout)
        await self._client.call(
            EVENTS_SERVICE,
            "Forward",
            item.request,
            timeout=self._call_timeout,
            metadata={NAMESPACE_HEADER: self._namespace},
        )

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
