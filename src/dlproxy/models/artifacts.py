"""Making a model's files once, safely, with several processes asking at the same time.

The built-in models (``minilm``, ``digits``) export or train at first use into the cache
directory: ``locked`` makes the first process do it while the others wait, ``atomic_path`` makes a
reader never see half a file, and ``preparing`` shows the stages on stderr.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dlproxy.console import Bar

Step = Callable[[str], None]
"""Names the stage that starts now (each one is a blocking call)."""


@contextmanager
def locked(path: Path, on_wait: Callable[[], None]) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if missing) for the block; ``on_wait`` is called
    once if another process holds it."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        on_wait()
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temp path beside ``target``, renamed onto it when the block ends without an error."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=".tmp-", suffix=target.suffix, dir=target.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared like any file
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def preparing(label: str, quiet: bool, stages: int | None = None) -> Iterator[Step]:
    """A stderr display of a preparation's stages (a bar over ``stages``, else a spinner)."""
    with Bar(label, stages, enabled=not quiet) as bar:
        bar.update(description=f"{label}: preparing")
        yield bar.step
        bar.done()
