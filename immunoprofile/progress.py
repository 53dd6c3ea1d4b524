"""Progress and logging for long work: one look for every stage (rich, on stderr).

Every long stage shows itself: a bar with a count when the work is a list of files
(gating, reading files for clustering), a spinner with the elapsed time otherwise (SOM
training, metaclustering, comparison, the report). Each finished stage is also logged on
the ``immunoprofile`` logger at INFO with its duration, so a script or a cluster job that
shows no bars still has a record (`configure_logging`, or the command line's
``--verbose``).

Nothing is shown unless asked (``progress=True`` in the API, the default on the command
line unless ``--quiet``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("immunoprofile")


def configure_logging(verbosity: int = 0, quiet: bool = False) -> None:
    """Send the ``immunoprofile`` logger to stderr through rich: warnings only when
    ``quiet`` (or by default), INFO with ``verbosity`` 1, DEBUG with 2 or more."""
    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.WARNING
    if not quiet and verbosity >= 2:
        level = logging.DEBUG
    elif not quiet and verbosity == 1:
        level = logging.INFO
    for h in list(log.handlers):
        if getattr(h, "_immunoprofile", False):
            log.removeHandler(h)
    handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
    handler._immunoprofile = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(level)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def stage(label: str, enabled: bool = True) -> Iterator[None]:
    """A spinner with elapsed time while the block runs; logs ``label: N s`` at INFO."""
    t0 = time.perf_counter()
    if enabled:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        bar = Progress(
            SpinnerColumn(),
            TextColumn(label),
            TimeElapsedColumn(),
            console=_console(),
            transient=False,
        )
        bar.add_task(label, total=None)
        with bar:
            yield
    else:
        yield
    log.info("%s: %.1f s", label, time.perf_counter() - t0)


def file_bar(label: str, total: int) -> tuple[Any, Any]:
    """A rich bar over ``total`` items on stderr, not yet started, and its task id; the
    last item's text shows after the count."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
        console=_console(),
    )
    return bar, bar.add_task(label, total=total, last="")


@contextlib.contextmanager
def counter(label: str, total: int, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A bar over ``total`` items; yields ``advance(text)`` to call once per item done."""
    t0 = time.perf_counter()
    if not enabled:
        yield lambda text="": None
        log.info("%s: %d in %.1f s", label, total, time.perf_counter() - t0)
        return
    bar, task = file_bar(label, total)
    with bar:
        yield lambda text="": bar.update(task, advance=1, last=text)
    log.info("%s: %d in %.1f s", label, total, time.perf_counter() - t0)


__all__ = ["configure_logging", "counter", "file_bar", "log", "stage"]
