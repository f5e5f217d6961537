"""Progress bars for pushes, pulls and builds: on a terminal only, silent in scripts and logs.

`rich` is imported only when a bar is actually drawn, so non-interactive runs pay nothing.
Small transfers (under a second's worth on any link) get no bar at all: a bar that flashes
for a few milliseconds is noise.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

_MIN_BYTES = 4 << 20


class Progress(Protocol):
    def task(self, label: str, total: int) -> AbstractContextManager[Callable[[int], None]]: ...

    def close(self) -> None: ...


class _Null:
    @contextmanager
    def task(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        yield _ignore

    def close(self) -> None:
        pass


def _ignore(_n: int) -> None:
    pass


class _Rich:
    def __init__(self) -> None:
        self._bars: Any = None

    def _start(self) -> Any:
        if self._bars is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as Bars

            self._bars = Bars(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bars.start()
        return self._bars

    @contextmanager
    def task(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        if total < _MIN_BYTES:
            yield _ignore
            return
        bars = self._start()
        task_id = bars.add_task(label, total=total)

        def advance(n: int) -> None:
            bars.update(task_id, advance=n)

        try:
            yield advance
        finally:
            bars.remove_task(task_id)

    def close(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None


def null_progress() -> Progress:
    return _Null()


def for_terminal() -> Progress:
    """Bars when stderr is a terminal, nothing otherwise."""
    return _Rich() if sys.stderr.isatty() else _Null()
