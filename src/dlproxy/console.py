"""Console helpers shared by the tools and the model exports: one progress display, a free port.

``Bar`` wraps rich's Progress on stderr (stdout stays for results and ``--json``). Disabled, it
does nothing, so callers never check; rich is imported only when a bar is shown.
"""

from __future__ import annotations

import socket
import time
from types import TracebackType
from typing import Any


class Bar:
    """A progress display with one task or more; ``total=None`` shows a spinner, no bar.

    ``step(text)`` is for work made of blocking stages: it closes the stage before (advancing one)
    and names the next. ``fields`` are extra columns (``"{task.fields[rate]}"`` style text)."""

    def __init__(
        self,
        title: str,
        total: float | None = None,
        *,
        enabled: bool = True,
        transient: bool = False,
        columns: tuple[str, ...] = ("bar", "elapsed"),
        **fields: Any,
    ) -> None:
        self.title = title
        self._progress: Any = None
        self._tasks: list[Any] = []
        self._stages = 0
        self._started = time.perf_counter()
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        made: dict[str, Any] = {
            "bar": BarColumn,
            "count": MofNCompleteColumn,
            "elapsed": TimeElapsedColumn,
            "remaining": TimeRemainingColumn,
        }
        shown: list[Any] = [SpinnerColumn()] if total is None else []
        shown.append(TextColumn("{task.description}"))
        for column in columns:
            if column in made:
                if not (column == "bar" and total is None):
                    shown.append(made[column]())
            else:
                shown.append(TextColumn(column))
        self._progress = Progress(*shown, console=Console(stderr=True), transient=transient)
        self._tasks.append(self._progress.add_task(title, total=total, **fields))

    def __enter__(self) -> Bar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def add(self, description: str, total: float | None) -> int:
        """Another task below the first; returns its index for ``update`` and ``advance``."""
        if self._progress is not None:
            self._tasks.append(self._progress.add_task(description, total=total))
        return len(self._tasks) - 1

    def advance(self, amount: float = 1.0, task: int = 0) -> None:
        if self._progress is not None:
            self._progress.advance(self._tasks[task], amount)

    def update(self, task: int = 0, *, description: str | None = None, **changes: Any) -> None:
        """Set a task's description, ``completed``, ``total`` or fields."""
        if self._progress is not None:
            if description is not None:
                changes["description"] = description
            self._progress.update(self._tasks[task], **changes)

    def reset(self, task: int, description: str) -> None:
        if self._progress is not None:
            self._progress.reset(self._tasks[task], description=description)

    def step(self, text: str | None) -> None:
        """Close the current stage and start the next (``None``: only advance)."""
        if self._stages:
            self.advance()
        self._stages += 1
        if text is not None:
            self.update(description=f"{self.title}: {text}")

    def done(self, text: str = "ready") -> None:
        """Fill the bar and say how long it all took."""
        elapsed = time.perf_counter() - self._started
        if self._progress is not None:
            task = self._progress.tasks[0]
            completed = task.total if task.total is not None else task.completed
            self.update(completed=completed, description=f"{self.title}: {text} in {elapsed:.1f} s")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now (for a server or store we start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
