"""Fakes for tests of code built on pywasmd; they ship with the package so tests can share them."""

from __future__ import annotations

from google.protobuf.message import Message

__all__ = ["RecordingPublisher"]


class RecordingPublisher:
    """An EventPublisher that remembers what was published, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Message]] = []

    def publish(self, topic: str, event: Message) -> None:
        # A copy, because the real publisher serializes at publish time: a later change to
        # the caller's message must not show up here either.
        copy = type(event)()
        copy.CopyFrom(event)
        self.events.append((topic, copy))

    @property
    def topics(self) -> list[str]:
        return [topic for topic, _ in self.events]
